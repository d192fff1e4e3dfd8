//! CONNACK, the server's answer to CONNECT (MQTT 3.1.1 section 3.2).
//!
//! Fixed header `0x20`, remaining length 2; variable header: acknowledge flags (bit 0 is
//! Session Present, bits 7-1 reserved, 3.2.2.1) and the return code (3.2.2.3); no payload.

use super::{DecodeError, EncodeError, Reader, Writer};

/// The CONNACK return code (section 3.2.2.3, table 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum ConnectReturnCode {
    /// 0x00: connection accepted.
    Accepted = 0,
    /// 0x01: the server does not support the protocol level the client asked for.
    UnacceptableProtocolVersion = 1,
    /// 0x02: the client identifier is well-formed UTF-8 but not allowed by the server.
    IdentifierRejected = 2,
    /// 0x03: the network connection is up but the MQTT service is unavailable.
    ServerUnavailable = 3,
    /// 0x04: the user name or password is malformed.
    BadUserNameOrPassword = 4,
    /// 0x05: the client is not authorized to connect.
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The return code for a wire value, or `None` for the reserved values 6 to 255.
    pub const fn from_u8(value: u8) -> Option<ConnectReturnCode> {
        Some(match value {
            0 => ConnectReturnCode::Accepted,
            1 => ConnectReturnCode::UnacceptableProtocolVersion,
            2 => ConnectReturnCode::IdentifierRejected,
            3 => ConnectReturnCode::ServerUnavailable,
            4 => ConnectReturnCode::BadUserNameOrPassword,
            5 => ConnectReturnCode::NotAuthorized,
            _ => return None,
        })
    }

    /// The wire value, 0 to 5.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A CONNACK packet (section 3.2).
///
/// Decoding does not enforce that a refusal has `session_present == false` (3.2.2.2, a rule
/// for the server that sends it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnAck {
    /// Whether the server resumes a stored session (section 3.2.2.2).
    pub session_present: bool,
    /// Whether the connection is accepted, and why not (section 3.2.2.3).
    pub code: ConnectReturnCode,
}

impl ConnAck {
    /// Decodes the body: acknowledge flags and return code.
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ReservedBitsSet);
        }
        let code = r.u8()?;
        let code =
            ConnectReturnCode::from_u8(code).ok_or(DecodeError::InvalidConnectReturnCode(code))?;
        r.finish()?;
        Ok(ConnAck {
            session_present: flags & 0x01 != 0,
            code,
        })
    }

    pub(super) fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(u8::from(self.session_present))?;
        w.u8(self.code.as_u8())
    }
}
