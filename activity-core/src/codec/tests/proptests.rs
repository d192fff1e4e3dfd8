//! Property tests: encode/decode round trips; decoding corrupted or arbitrary bytes never panics.

use super::*;

// ---- Property tests ----

/// An owned packet, so that proptest can generate it; `with_packet` borrows it.
#[derive(Clone, Debug)]
enum Owned {
    Connect {
        client_id: String,
        clean_session: bool,
        keep_alive: u16,
        username: Option<String>,
        password: Option<Vec<u8>>,
        will: Option<(String, Vec<u8>, QoS, bool)>,
    },
    ConnAck(bool, u8),
    Publish {
        dup: bool,
        qos: QoS,
        retain: bool,
        topic: String,
        pkid: u16,
        payload: Vec<u8>,
    },
    Id(u8, u16),
    Subscribe(u16, Vec<(String, QoS)>),
    SubAck(u16, Vec<SubAckCode>),
    Unsubscribe(u16, Vec<String>),
    Empty(u8),
}

fn with_packet<R>(owned: &Owned, f: impl FnOnce(Packet<'_>) -> R) -> R {
    match owned {
        Owned::Connect {
            client_id,
            clean_session,
            keep_alive,
            username,
            password,
            will,
        } => f(Packet::Connect(Connect {
            protocol_name: crate::codec::ProtocolName::Mqtt,
            properties: crate::codec::Properties::EMPTY,
            protocol_level: 4,
            client_id,
            clean_session: *clean_session,
            keep_alive: *keep_alive,
            username: username.as_deref(),
            password: if username.is_some() {
                password.as_deref()
            } else {
                None
            },
            will: will.as_ref().map(|(topic, message, qos, retain)| LastWill {
                properties: crate::codec::Properties::EMPTY,
                topic,
                message,
                qos: *qos,
                retain: *retain,
            }),
        })),
        Owned::ConnAck(session_present, code) => f(Packet::ConnAck(ConnAck {
            properties: crate::codec::Properties::EMPTY,
            session_present: *session_present,
            code: *code,
        })),
        Owned::Publish {
            dup,
            qos,
            retain,
            topic,
            pkid,
            payload,
        } => {
            let at_least_once = *qos != QoS::AtMostOnce;
            f(Packet::Publish(Publish {
                properties: crate::codec::Properties::EMPTY,
                dup: *dup && at_least_once,
                qos: *qos,
                retain: *retain,
                topic,
                pkid: at_least_once.then_some(*pkid),
                payload,
            }))
        }
        Owned::Id(kind, id) => f(match kind % 5 {
            0 => Packet::PubAck(crate::codec::Ack::new(*id)),
            1 => Packet::PubRec(crate::codec::Ack::new(*id)),
            2 => Packet::PubRel(crate::codec::Ack::new(*id)),
            3 => Packet::PubComp(crate::codec::Ack::new(*id)),
            _ => Packet::UnsubAck(crate::codec::UnsubAck::new(*id)),
        }),
        Owned::Subscribe(pkid, filters) => {
            let pairs: Vec<(&str, QoS)> = filters.iter().map(|(s, q)| (s.as_str(), *q)).collect();
            f(Packet::Subscribe(Subscribe {
                properties: crate::codec::Properties::EMPTY,
                pkid: *pkid,
                filters: SubscribeFilters::from_slice(&pairs),
            }))
        }
        Owned::SubAck(pkid, codes) => f(Packet::SubAck(SubAck {
            properties: crate::codec::Properties::EMPTY,
            pkid: *pkid,
            codes: SubAckCodes::from_slice(codes),
        })),
        Owned::Unsubscribe(pkid, filters) => {
            let names: Vec<&str> = filters.iter().map(String::as_str).collect();
            f(Packet::Unsubscribe(Unsubscribe {
                properties: crate::codec::Properties::EMPTY,
                pkid: *pkid,
                filters: UnsubscribeFilters::from_slice(&names),
            }))
        }
        Owned::Empty(kind) => f(match kind % 3 {
            0 => Packet::PingReq,
            1 => Packet::PingResp,
            _ => Packet::Disconnect(Disconnect::NORMAL),
        }),
    }
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-z/$ é\u{2A6D4}]{1,12}"
}

fn topic_filter() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(prop_oneof!["[a-z$]{0,3}", Just("+".to_string())], 1..4),
        any::<bool>(),
    )
        .prop_map(|(levels, hash)| {
            let mut filter = levels.join("/");
            if hash {
                filter.push_str("/#");
            }
            filter
        })
        .prop_filter("non-empty", |f| !f.is_empty())
}

fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,10}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn suback_code() -> impl Strategy<Value = SubAckCode> {
    prop_oneof![
        qos().prop_map(SubAckCode::Success),
        Just(SubAckCode::Failure)
    ]
}

fn owned_packet() -> impl Strategy<Value = Owned> {
    let id = 1..=u16::MAX;
    prop_oneof![
        (
            text(),
            any::<bool>(),
            any::<u16>(),
            proptest::option::of(text()),
            proptest::option::of(bytes(10)),
            proptest::option::of((topic_name(), bytes(10), qos(), any::<bool>())),
        )
            .prop_map(
                |(client_id, clean_session, keep_alive, username, password, will)| {
                    Owned::Connect {
                        client_id,
                        clean_session,
                        keep_alive,
                        username,
                        password,
                        will,
                    }
                }
            ),
        (any::<bool>(), 0u8..=5).prop_map(|(s, c)| Owned::ConnAck(s, c)),
        (
            any::<bool>(),
            qos(),
            any::<bool>(),
            topic_name(),
            id.clone(),
            bytes(300)
        )
            .prop_map(|(dup, qos, retain, topic, pkid, payload)| Owned::Publish {
                dup,
                qos,
                retain,
                topic,
                pkid,
                payload
            }),
        (any::<u8>(), id.clone()).prop_map(|(k, i)| Owned::Id(k, i)),
        (
            id.clone(),
            proptest::collection::vec((topic_filter(), qos()), 1..5)
        )
            .prop_map(|(i, f)| Owned::Subscribe(i, f)),
        (id.clone(), proptest::collection::vec(suback_code(), 1..5))
            .prop_map(|(i, c)| Owned::SubAck(i, c)),
        (id, proptest::collection::vec(topic_filter(), 1..5))
            .prop_map(|(i, f)| Owned::Unsubscribe(i, f)),
        any::<u8>().prop_map(Owned::Empty),
    ]
}

/// When `bytes` decode, re-encoding the packet gives bytes that decode to the same packet.
fn check_reencode(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Some((packet, len))) = decode(bytes, usize::MAX) {
        prop_assert!(len <= bytes.len());
        let again = encode_vec(&packet).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(decode(&again, usize::MAX), Ok(Some((packet, again.len()))));
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::proptest_cases::config(ProptestConfig::default()))]

    #[test]
    fn encode_then_decode_round_trips(owned in owned_packet()) {
        with_packet(&owned, |packet| -> Result<(), TestCaseError> {
            let wire = encode_vec(&packet).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(decode(&wire, usize::MAX), Ok(Some((packet, wire.len()))));
            prop_assert_eq!(decode(&wire, wire.len()), Ok(Some((packet, wire.len()))));
            for end in 0..wire.len() {
                prop_assert_eq!(decode(&wire[..end], usize::MAX), Ok(None));
            }
            let header = fixed_header(&wire).unwrap().unwrap();
            prop_assert_eq!(header.packet_type(), packet.packet_type());
            prop_assert_eq!(header.packet_len(), wire.len());
            Ok(())
        })?;
    }

    #[test]
    fn corrupted_packets_never_panic(owned in owned_packet(), index in any::<usize>(), byte in any::<u8>()) {
        let wire = with_packet(&owned, |packet| encode_vec(&packet).unwrap());
        let mut corrupted = wire.clone();
        let index = index % corrupted.len();
        corrupted[index] = byte;
        check_reencode(&corrupted)?;
        // Cut short after the header: the declared length no longer matches.
        check_reencode(&corrupted[..index])?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in bytes(64)) {
        check_reencode(&bytes)?;
        let _ = fixed_header(&bytes);
        let _ = decode(&bytes, 8);
    }

    #[test]
    fn framed_arbitrary_bodies_never_panic(first in any::<u8>(), body in bytes(48)) {
        check_reencode(&frame(first, &body))?;
    }
}
