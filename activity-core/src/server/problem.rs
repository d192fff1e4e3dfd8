//! Reason strings (MQTT 5.0 section 3.2.2.3.9 and 3.14.2.2.3): a short human-readable text
//! beside the reason code of a refusing CONNACK or a server DISCONNECT, for a client that did
//! not set Request Problem Information to 0 (5.0 section 3.1.2.11.7). The texts are static and
//! short (they live in the gateway's flash).

use crate::codec::{Context, Properties, Property, encode_properties};

use super::ReasonCode;

/// The longest reason string, plus its property header (identifier and length).
pub(super) const REASON_STRING_ROOM: usize = 32;

/// The reason string for `code`, or `None` where the code says it all.
pub(super) const fn reason_string(code: ReasonCode) -> Option<&'static str> {
    Some(match code {
        ReasonCode::UnspecifiedError => "unspecified error",
        ReasonCode::MalformedPacket => "malformed packet",
        ReasonCode::ProtocolError => "protocol error",
        ReasonCode::UnsupportedProtocolVersion => "unsupported version",
        ReasonCode::ClientIdentifierNotValid => "client id not valid",
        ReasonCode::BadUserNameOrPassword => "bad user name or password",
        ReasonCode::NotAuthorized => "not authorized",
        ReasonCode::ServerUnavailable => "server unavailable",
        ReasonCode::ServerBusy => "connection limit reached",
        ReasonCode::ServerShuttingDown => "server shutting down",
        ReasonCode::BadAuthenticationMethod => "no authentication method",
        ReasonCode::KeepAliveTimeout => "keep alive timeout",
        ReasonCode::SessionTakenOver => "session taken over",
        ReasonCode::ReceiveMaximumExceeded => "receive maximum exceeded",
        ReasonCode::TopicAliasInvalid => "topic alias invalid",
        ReasonCode::PacketTooLarge => "packet too large",
        ReasonCode::QuotaExceeded => "quota exceeded",
        ReasonCode::SharedSubscriptionsNotSupported => "no shared subscriptions",
        ReasonCode::SubscriptionIdentifiersNotSupported => "no subscription identifiers",
        ReasonCode::Success => return None,
    })
}

/// The property block of a refusing CONNACK or a server DISCONNECT with `code` (`context`),
/// written into `raw`: the reason string when `wanted`, else empty.
pub(super) fn reason_properties(
    code: ReasonCode,
    wanted: bool,
    context: Context,
    raw: &mut [u8; REASON_STRING_ROOM],
) -> Properties<'_> {
    let Some(text) = reason_string(code).filter(|_| wanted) else {
        return Properties::EMPTY;
    };
    // Every text fits REASON_STRING_ROOM (a unit test checks), and a reason string is allowed
    // in both contexts.
    match encode_properties(&[Property::ReasonString(text)], raw) {
        Ok(n) => raw
            .get(..n)
            .and_then(|bytes| Properties::parse(bytes, context).ok())
            .unwrap_or_default(),
        Err(_) => Properties::EMPTY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_string_fits_its_room_and_both_packets() {
        use ReasonCode as C;
        for code in [
            C::UnspecifiedError,
            C::MalformedPacket,
            C::ProtocolError,
            C::UnsupportedProtocolVersion,
            C::ClientIdentifierNotValid,
            C::BadUserNameOrPassword,
            C::NotAuthorized,
            C::ServerUnavailable,
            C::ServerBusy,
            C::ServerShuttingDown,
            C::BadAuthenticationMethod,
            C::KeepAliveTimeout,
            C::SessionTakenOver,
            C::ReceiveMaximumExceeded,
            C::TopicAliasInvalid,
            C::PacketTooLarge,
            C::QuotaExceeded,
            C::SharedSubscriptionsNotSupported,
            C::SubscriptionIdentifiersNotSupported,
        ] {
            let text = reason_string(code).expect("every error has a text");
            assert!(3 + text.len() <= REASON_STRING_ROOM, "{text}");
            for context in [Context::ConnAck, Context::Disconnect] {
                let mut raw = [0u8; REASON_STRING_ROOM];
                let block = reason_properties(code, true, context, &mut raw);
                assert_eq!(
                    block.iter().collect::<Vec<_>>(),
                    [Property::ReasonString(text)]
                );
                let mut raw = [0u8; REASON_STRING_ROOM];
                assert!(reason_properties(code, false, context, &mut raw).is_empty());
            }
        }
    }
}
