use super::*;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::codec::{Context, Property, RetainHandling, encode_properties};

fn to_string(event: &Event<'_>, options: &EncodeOptions<'_>) -> String {
    let mut buf = vec![0u8; encoded_len_bound(event, options)];
    let len = encode(event, options, &mut buf).expect("bound-sized buffer is enough");
    buf.truncate(len);
    String::from_utf8(buf).expect("encoder writes UTF-8")
}

fn json<'a>(event: impl Into<Event<'a>>) -> String {
    to_string(&event.into(), &EncodeOptions::default())
}

fn connected() -> Connected<'static> {
    Connected {
        session_seq: 1,
        session_expiry: None,
        user_properties: crate::event::UserProperties::NONE,
        ts: 1_700_000_000_000,
        client_id: "dev-1",
        username: Some("alice"),
        proto_ver: 4,
        keepalive: 60,
        clean_session: true,
        peer: Some("192.0.2.7:50312"),
        transport: None,
    }
}

fn message(payload: &'static [u8]) -> Message<'static> {
    Message {
        ts: 7,
        pub_client_id: "dev-1",
        topic: "a/b",
        payload,
        qos: QoS::AtLeastOnce,
        retain: false,
    }
}

fn msgack() -> MsgAck<'static> {
    MsgAck {
        reason_code: None,
        ts: 9,
        pub_client_id: None,
        ack_client_id: "dev-2",
        product_id: Id::Str("p1"),
        message_id: Id::Int(42),
        topic: "SYSTEM/msgack",
        qos: QoS::AtMostOnce,
    }
}

fn all_kinds() -> [Event<'static>; 9] {
    [
        connected().into(),
        Disconnected {
            session_seq: 1,
            reason_code: None,
            ts: 5,
            client_id: "dev-1",
            reason: DisconnectReason::KeepaliveTimeout,
            connected_at: 1,
        }
        .into(),
        Subscribed {
            options: None,
            ts: 2,
            client_id: "dev-1",
            topic: "a/+",
            qos: QoS::ExactlyOnce,
        }
        .into(),
        Unsubscribed {
            ts: 3,
            client_id: "dev-1",
            topic: "a/#",
        }
        .into(),
        message(b"hello").into(),
        msgack().into(),
        refused().into(),
        denied().into(),
        dropped().into(),
    ]
}

fn refused() -> Refused<'static> {
    Refused {
        ts: 11,
        client_id: "broker",
        username: Some("mallory"),
        peer: Some("192.0.2.9:40000"),
        reason_code: 2,
        reason: "client_identifier_not_valid",
    }
}

fn denied() -> Denied<'static> {
    Denied {
        ts: 12,
        client_id: "dev-3",
        topic: "SYSTEM/message",
        action: Action::Publish,
        suppressed: 0,
    }
}

fn dropped() -> Dropped<'static> {
    Dropped {
        ts: 13,
        client_id: "dev-4",
        topic: None,
        filter: Some("devices/#"),
        reason: DropReason::RouterLogOverrun,
        count: 1234,
        suppressed: 0,
    }
}

#[test]
fn kind_names_and_topics() {
    let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(
        names,
        [
            "connected",
            "disconnected",
            "subscribed",
            "unsubscribed",
            "message",
            "msgack",
            "refused",
            "denied",
            "dropped"
        ]
    );
    let topics: Vec<_> = EventKind::ALL.iter().map(|k| k.topic_suffix()).collect();
    assert_eq!(
        topics,
        [
            "presence/connected",
            "presence/disconnected",
            "subscription/subscribed",
            "subscription/unsubscribed",
            "message",
            "msgack",
            "presence/refused",
            "access/denied",
            "message/dropped"
        ]
    );
    for (event, kind) in all_kinds().iter().zip(EventKind::ALL) {
        assert_eq!(event.kind(), kind);
    }
}

#[test]
fn accessors() {
    let ts: Vec<_> = all_kinds().iter().map(Event::ts).collect();
    assert_eq!(ts, [1_700_000_000_000, 5, 2, 3, 7, 9, 11, 12, 13]);
    let subjects: Vec<_> = all_kinds().iter().map(Event::subject).collect();
    assert_eq!(
        subjects,
        [
            "dev-1", "dev-1", "dev-1", "dev-1", "dev-1", "dev-2", "broker", "dev-3", "dev-4"
        ]
    );
}

#[test]
fn disconnect_reasons() {
    use DisconnectReason::*;
    let all = [
        Normal,
        TcpClosed,
        KeepaliveTimeout,
        Takenover,
        ProtocolError,
        PacketTooLarge,
        NotAuthorized,
        ServerShutdown,
        UpstreamClosed,
        DisconnectWithWill,
        ClientError,
        SessionExpired,
    ];
    let strs: Vec<_> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        strs,
        [
            "normal",
            "tcp_closed",
            "keepalive_timeout",
            "takenover",
            "protocol_error",
            "packet_too_large",
            "not_authorized",
            "server_shutdown",
            "upstream_closed",
            "disconnect_with_will",
            "client_error",
            "session_expired"
        ]
    );
}

#[test]
fn connected_json() {
    assert_eq!(
        json(connected()),
        r#"{"client_id":"dev-1","username":"alice","proto_ver":4,"keepalive":60,"clean_session":true,"peer":"192.0.2.7:50312","session_seq":1,"ts":1700000000000}"#
    );
    let bare = Connected {
        username: None,
        peer: None,
        transport: None,
        clean_session: false,
        ..connected()
    };
    assert_eq!(
        json(bare),
        r#"{"client_id":"dev-1","proto_ver":4,"keepalive":60,"clean_session":false,"session_seq":1,"ts":1700000000000}"#
    );
}

#[test]
fn connected_transport_follows_peer() {
    for (transport, text) in [
        (Transport::Tcp, "tcp"),
        (Transport::Tls, "tls"),
        (Transport::Ws, "ws"),
        (Transport::Wss, "wss"),
    ] {
        let event = Connected {
            transport: Some(transport),
            ..connected()
        };
        assert_eq!(
            json(event),
            format!(
                r#"{{"client_id":"dev-1","username":"alice","proto_ver":4,"keepalive":60,"clean_session":true,"peer":"192.0.2.7:50312","transport":"{text}","session_seq":1,"ts":1700000000000}}"#
            )
        );
        assert_eq!(transport.as_str(), text);
    }
}

/// A checked CONNECT property block with these user properties (and a session expiry, which
/// the event takes from its own field, not from here).
fn connect_properties(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut list = vec![Property::SessionExpiryInterval(60)];
    list.extend(pairs.iter().map(|(k, v)| Property::UserProperty(k, v)));
    let mut raw = vec![0u8; 4096];
    let n = encode_properties(&list, &mut raw).unwrap();
    raw.truncate(n);
    Properties::parse(&raw, Context::Connect).unwrap();
    raw
}

#[test]
fn connected_v5_json() {
    let raw = connect_properties(&[("region", "eu-\"1\""), ("fw", "1.2"), ("fw", "1.3")]);
    let v5 = Connected {
        proto_ver: 5,
        session_expiry: Some(3600),
        user_properties: UserProperties::new(Properties::parse(&raw, Context::Connect).unwrap()),
        ..connected()
    };
    assert_eq!(
        json(v5),
        r#"{"client_id":"dev-1","username":"alice","proto_ver":5,"keepalive":60,"clean_session":true,"peer":"192.0.2.7:50312","session_expiry":3600,"user_properties":[["region","eu-\"1\""],["fw","1.2"],["fw","1.3"]],"session_seq":1,"ts":1700000000000}"#
    );
    // No user properties: no field; a session expiry of 0 is still written for MQTT 5.
    let bare = Connected {
        proto_ver: 5,
        session_expiry: Some(0),
        peer: None,
        transport: None,
        username: None,
        user_properties: UserProperties::new(Properties::EMPTY),
        ..connected()
    };
    assert_eq!(
        to_string(&bare.into(), &EncodeOptions::default()),
        r#"{"client_id":"dev-1","proto_ver":5,"keepalive":60,"clean_session":true,"session_expiry":0,"session_seq":1,"ts":1700000000000}"#
    );
}

#[test]
fn connected_user_properties_are_bounded() {
    // One more than the count limit: the ninth is cut.
    let names: Vec<String> = (0..=USER_PROPERTIES_MAX_COUNT)
        .map(|i| format!("k{i}"))
        .collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let raw = connect_properties(&pairs);
    let props = UserProperties::new(Properties::parse(&raw, Context::Connect).unwrap());
    assert_eq!(props.iter().count(), USER_PROPERTIES_MAX_COUNT);
    assert!(props.is_truncated());
    let text = json(Connected {
        user_properties: props,
        session_expiry: Some(0),
        ..connected()
    });
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["user_properties"].as_array().unwrap().len(), 8);
    assert_eq!(v["user_properties"][7], json!(["k7", "v"]));
    assert_eq!(v["user_properties_truncated"], true);
    assert!(text.ends_with(
        r#"["k7","v"]],"user_properties_truncated":true,"session_seq":1,"ts":1700000000000}"#
    ));

    // The byte limit: names and values together; the pair that crosses it and all after it go.
    let big = "x".repeat(USER_PROPERTIES_MAX_BYTES - 8);
    let huge = "x".repeat(USER_PROPERTIES_MAX_BYTES);
    let raw = connect_properties(&[("a", "12345678"), ("b", &big), ("c", "")]);
    let props = UserProperties::new(Properties::parse(&raw, Context::Connect).unwrap());
    let kept: Vec<_> = props.iter().collect();
    assert_eq!(kept, [("a", "12345678")]);
    assert!(props.is_truncated());
    // Exactly at the limit fits.
    let exact = "y".repeat(USER_PROPERTIES_MAX_BYTES - 1);
    let raw = connect_properties(&[("a", &exact)]);
    let props = UserProperties::new(Properties::parse(&raw, Context::Connect).unwrap());
    assert_eq!(props.iter().count(), 1);
    assert!(!props.is_truncated());
    // A first pair over the limit alone: nothing kept, no field, but still truncated.
    let raw = connect_properties(&[("a", &huge), ("b", "c")]);
    let props = UserProperties::new(Properties::parse(&raw, Context::Connect).unwrap());
    let connected_json = json(Connected {
        user_properties: props,
        ..connected()
    });
    assert!(props.is_truncated() && props.is_empty());
    assert!(
        !connected_json.contains("user_properties"),
        "{connected_json}"
    );
    // Every bounded event is small: the worst case of the bounds with the worst escaping.
    let worst = "\u{1}".repeat(USER_PROPERTIES_MAX_BYTES / (2 * USER_PROPERTIES_MAX_COUNT));
    let pairs: Vec<(&str, &str)> = (0..20).map(|_| (worst.as_str(), worst.as_str())).collect();
    let raw = connect_properties(&pairs);
    let props = UserProperties::new(Properties::parse(&raw, Context::Connect).unwrap());
    assert_eq!(props.iter().count(), USER_PROPERTIES_MAX_COUNT);
    let event: Event<'_> = Connected {
        user_properties: props,
        ..connected()
    }
    .into();
    let bound = encoded_len_bound(&event, &EncodeOptions::default());
    let without = encoded_len_bound(&connected().into(), &EncodeOptions::default());
    assert!(
        // Each byte escaped to at most 6; per pair `[`, 4 quotes, `,`, `]` and a comma; the
        // two keys with their punctuation and `true`.
        bound - without <= 6 * USER_PROPERTIES_MAX_BYTES + 8 * USER_PROPERTIES_MAX_COUNT + 60,
        "user properties add {} bytes",
        bound - without
    );
}

#[test]
fn v5_fields_of_the_other_kinds_json() {
    let opts = EncodeOptions::default();
    let disconnected: Event<'_> = Disconnected {
        session_seq: 1,
        ts: 5,
        client_id: "dev-1",
        reason: DisconnectReason::ClientError,
        reason_code: Some(0x83),
        connected_at: 1,
    }
    .into();
    assert_eq!(
        to_string(&disconnected, &opts),
        r#"{"client_id":"dev-1","reason":"client_error","reason_code":131,"connected_at":1,"session_seq":1,"ts":5}"#
    );
    let subscribed: Event<'_> = Subscribed {
        ts: 2,
        client_id: "dev-1",
        topic: "$share/workers/jobs/+",
        qos: QoS::AtLeastOnce,
        options: Some(SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: false,
            retain_as_published: true,
            retain_handling: RetainHandling::Never,
        }),
    }
    .into();
    assert_eq!(
        to_string(&subscribed, &opts),
        r#"{"client_id":"dev-1","topic":"$share/workers/jobs/+","qos":1,"no_local":false,"retain_as_published":true,"retain_handling":2,"share_group":"workers","ts":2}"#
    );
    // MQTT 3.1.1: no options, but a shared filter still names its group.
    let v3: Event<'_> = Subscribed {
        ts: 2,
        client_id: "dev-1",
        topic: "$share/g/a",
        qos: QoS::AtMostOnce,
        options: None,
    }
    .into();
    assert_eq!(
        to_string(&v3, &opts),
        r#"{"client_id":"dev-1","topic":"$share/g/a","qos":0,"share_group":"g","ts":2}"#
    );
    let nack = MsgAck {
        reason_code: Some(0x87),
        ..msgack()
    };
    assert_eq!(
        json(nack),
        r#"{"pub_client_id":null,"ack_client_id":"dev-2","product_id":"p1","message_id":42,"topic":"SYSTEM/msgack","qos":0,"reason_code":135,"ts":9}"#
    );
}

#[test]
fn share_groups() {
    assert_eq!(share_group("$share/g/a/b"), Some("g"));
    assert_eq!(share_group("$share/g/#"), Some("g"));
    assert_eq!(share_group("$share/g"), None);
    assert_eq!(share_group("$shared/g/a"), None);
    assert_eq!(share_group("a/$share/g/b"), None);
    assert_eq!(share_group("$SYS/a"), None);
}

#[test]
fn other_kinds_json() {
    let [_, disconnected, subscribed, unsubscribed, _, _, _, _, _] = all_kinds();
    let opts = EncodeOptions::default();
    assert_eq!(
        to_string(&disconnected, &opts),
        r#"{"client_id":"dev-1","reason":"keepalive_timeout","connected_at":1,"session_seq":1,"ts":5}"#
    );
    assert_eq!(
        to_string(&subscribed, &opts),
        r#"{"client_id":"dev-1","topic":"a/+","qos":2,"ts":2}"#
    );
    assert_eq!(
        to_string(&unsubscribed, &opts),
        r#"{"client_id":"dev-1","topic":"a/#","ts":3}"#
    );
}

#[test]
fn refused_denied_dropped_json() {
    assert_eq!(
        json(refused()),
        r#"{"client_id":"broker","username":"mallory","peer":"192.0.2.9:40000","reason_code":2,"reason":"client_identifier_not_valid","ts":11}"#
    );
    // An empty client id stays a field; no user name, no peer: no fields.
    let anonymous = Refused {
        client_id: "",
        username: None,
        peer: None,
        reason_code: 0x89,
        reason: "server_busy",
        ..refused()
    };
    assert_eq!(
        json(anonymous),
        r#"{"client_id":"","reason_code":137,"reason":"server_busy","ts":11}"#
    );
    assert_eq!(
        json(denied()),
        r#"{"client_id":"dev-3","topic":"SYSTEM/message","action":"publish","ts":12}"#
    );
    let held_back = Denied {
        action: Action::Subscribe,
        topic: "secret/#",
        suppressed: 41,
        ..denied()
    };
    assert_eq!(
        json(held_back),
        r#"{"client_id":"dev-3","topic":"secret/#","action":"subscribe","suppressed":41,"ts":12}"#
    );
    assert_eq!(
        json(dropped()),
        r#"{"client_id":"dev-4","filter":"devices/#","reason":"router_log_overrun","count":1234,"ts":13}"#
    );
    for (reason, name) in [
        (DropReason::QueueFull, "queue_full"),
        (DropReason::Expired, "expired"),
        (DropReason::TooLarge, "too_large"),
    ] {
        let one = Dropped {
            topic: Some("a/b"),
            filter: None,
            reason,
            count: 1,
            suppressed: 3,
            ..dropped()
        };
        assert_eq!(
            json(one),
            format!(
                r#"{{"client_id":"dev-4","topic":"a/b","reason":"{name}","count":1,"suppressed":3,"ts":13}}"#
            )
        );
    }
}

#[test]
fn message_json() {
    assert_eq!(
        json(message(b"hello")),
        r#"{"pub_client_id":"dev-1","topic":"a/b","payload":"hello","payload_len":5,"qos":1,"retain":false,"ts":7}"#
    );
    assert_eq!(
        json(message(b"\xff\x00ab")),
        r#"{"pub_client_id":"dev-1","topic":"a/b","payload":"/wBhYg==","payload_encoding":"base64","payload_len":4,"qos":1,"retain":false,"ts":7}"#
    );
    assert_eq!(
        json(Message {
            retain: true,
            ..message(b"")
        }),
        r#"{"pub_client_id":"dev-1","topic":"a/b","payload":"","payload_len":0,"qos":1,"retain":true,"ts":7}"#
    );
}

#[test]
fn message_payload_modes() {
    let event: Event<'_> = message("hé!".as_bytes()).into(); // 4 bytes, `é` is bytes 1..3
    let with = |payload| EncodeOptions {
        event_seq: None,
        payload,
        node: None,
    };
    let head = r#"{"pub_client_id":"dev-1","topic":"a/b","#;
    let tail = r#""qos":1,"retain":false,"ts":7}"#;
    assert_eq!(
        to_string(&event, &with(PayloadMode::Truncate(2))),
        format!(r#"{head}"payload":"h","truncated":true,"payload_len":4,{tail}"#)
    );
    assert_eq!(
        to_string(&event, &with(PayloadMode::Truncate(3))),
        format!(r#"{head}"payload":"hé","truncated":true,"payload_len":4,{tail}"#)
    );
    assert_eq!(
        to_string(&event, &with(PayloadMode::Truncate(4))),
        format!(r#"{head}"payload":"hé!","payload_len":4,{tail}"#)
    );
    assert_eq!(
        to_string(&event, &with(PayloadMode::Truncate(0))),
        format!(r#"{head}"payload":"","truncated":true,"payload_len":4,{tail}"#)
    );
    assert_eq!(
        to_string(&event, &with(PayloadMode::Omit)),
        format!(r#"{head}"payload_len":4,{tail}"#)
    );

    let binary: Event<'_> = message(b"\xff\xfe\xfd\xfc").into();
    assert_eq!(
        to_string(&binary, &with(PayloadMode::Truncate(2))),
        format!(
            r#"{head}"payload":"//4=","payload_encoding":"base64","truncated":true,"payload_len":4,{tail}"#
        )
    );
    assert_eq!(
        to_string(&binary, &with(PayloadMode::Omit)),
        format!(r#"{head}"payload_len":4,{tail}"#)
    );
}

#[test]
fn msgack_json() {
    assert_eq!(
        json(msgack()),
        r#"{"pub_client_id":null,"ack_client_id":"dev-2","product_id":"p1","message_id":42,"topic":"SYSTEM/msgack","qos":0,"ts":9}"#
    );
    let other = MsgAck {
        pub_client_id: Some("dev-1"),
        product_id: Id::Int(i64::MIN),
        message_id: Id::Str("m\"1"),
        ..msgack()
    };
    assert_eq!(
        json(other),
        r#"{"pub_client_id":"dev-1","ack_client_id":"dev-2","product_id":-9223372036854775808,"message_id":"m\"1","topic":"SYSTEM/msgack","qos":0,"ts":9}"#
    );
}

#[test]
fn node_goes_last_in_every_kind() {
    let options = EncodeOptions {
        event_seq: None,
        payload: PayloadMode::Full,
        node: Some("gw-\"7\""),
    };
    for event in all_kinds() {
        let text = to_string(&event, &options);
        assert!(text.ends_with(r#","node":"gw-\"7\""}"#), "{text}");
    }
    assert_eq!(
        to_string(&all_kinds()[3], &options),
        r#"{"client_id":"dev-1","topic":"a/#","ts":3,"node":"gw-\"7\""}"#
    );
}

#[test]
fn event_seq_goes_after_node_and_append_writes_the_same_bytes() {
    let numbered = EncodeOptions {
        node: Some("n1"),
        event_seq: Some(18_446_744_073_709_551_615),
        ..EncodeOptions::default()
    };
    let plain = EncodeOptions {
        event_seq: None,
        ..numbered
    };
    assert_eq!(
        to_string(&all_kinds()[3], &numbered),
        r#"{"client_id":"dev-1","topic":"a/#","ts":3,"node":"n1","event_seq":18446744073709551615}"#
    );
    for seq in [0, 7, 10, 99_999, u64::MAX] {
        for event in all_kinds() {
            let with = EncodeOptions {
                event_seq: Some(seq),
                ..numbered
            };
            let want = to_string(&event, &with);
            let document = to_string(&event, &plain);
            let mut out = vec![0u8; document.len() + EVENT_SEQ_MAX_LEN];
            let len = append_event_seq(document.as_bytes(), seq, &mut out).expect("room");
            assert_eq!(core::str::from_utf8(&out[..len]), Ok(want.as_str()));
            // Exactly the room it needs, and one byte less.
            assert_eq!(
                append_event_seq(document.as_bytes(), seq, &mut out[..len]),
                Ok(len)
            );
            assert_eq!(
                append_event_seq(document.as_bytes(), seq, &mut out[..len - 1]),
                Err(EncodeError::BufferTooSmall {
                    needed: len,
                    available: len - 1
                })
            );
        }
    }
    // Not a document with a field: refused, never a panic.
    let mut out = [0u8; 64];
    for bad in [&b""[..], b"}", b"{}", b"[1]", b"{\"a\":1"] {
        assert!(append_event_seq(bad, 1, &mut out).is_err(), "{bad:?}");
    }
}

#[test]
fn strings_are_escaped() {
    let event = Unsubscribed {
        ts: u64::MAX,
        client_id: "q\"b\\s/\u{0}\u{1f}\u{8}\t\n\u{c}\r\u{7f}\u{2028}é",
        topic: "",
    };
    assert_eq!(
        json(event),
        "{\"client_id\":\"q\\\"b\\\\s/\\u0000\\u001F\\b\\t\\n\\f\\r\u{7f}\u{2028}é\",\
         \"topic\":\"\",\"ts\":18446744073709551615}"
    );
}

#[test]
fn strings_of_any_length_are_escaped_as_serde_json_core_does() {
    let patterns: [fn(usize) -> String; 5] = [
        |n| "a".repeat(n.saturating_sub(1)) + "\"",
        |n| "\"".repeat(n),
        |n| "\u{1}".repeat(n / 6 + 1),
        |n| "ab\ncd\"\\é".repeat(n / 10 + 1),
        |n| "\u{7f}x\u{1f}".repeat(n / 4 + 1),
    ];
    for n in 0..300 {
        for pattern in patterns {
            let text = pattern(n);
            let mut fast = vec![0u8; 6 * text.len() + 2];
            let mut reference = vec![0u8; 6 * text.len() + 2];
            let a = json_str_into(&text, &mut fast).unwrap();
            let b = serde_json_core::ser::to_slice(text.as_str(), &mut reference).unwrap();
            assert_eq!(&fast[..a], &reference[..b], "{text:?}");
        }
    }
}

/// `text` as a JSON value the way the encoder writes it: through [`JsonStr`], then
/// [`expand_escapes`]; `None` when `out` is too small.
fn json_str_into(text: &str, out: &mut [u8]) -> Option<usize> {
    let escapes = Escapes::new();
    let n = serde_json_core::ser::to_slice(&JsonStr(text, &escapes), out).ok()?;
    expand_escapes(out, n, &escapes)
}

#[test]
fn more_strings_to_escape_than_escapes_holds_is_reported_as_too_large() {
    // Not reachable with the events (see ESCAPES); the encoder says "too large", never
    // writes a wrong document.
    let texts: Vec<String> = (0..=ESCAPES).map(|i| format!("\"{i}")).collect();
    let escapes = Escapes::new();
    for text in &texts {
        escapes.push(text);
    }
    assert!(escapes.overflow.get());
    assert_eq!(escapes.count.get(), ESCAPES);
}

#[test]
fn integers_are_written_as_serde_json_core_writes_them() {
    let unsigned = [
        0,
        1,
        9,
        10,
        99,
        100,
        4_294_967_295,
        4_294_967_296,
        1_733_574_000_123,
        u64::MAX,
    ];
    let signed = [
        0,
        1,
        -1,
        -9,
        -10,
        42,
        i64::MAX,
        i64::MIN,
        i64::MIN + 1,
        -1_733_574_000_123,
    ];
    let mut ours = [0u8; 32];
    let mut reference = [0u8; 32];
    for v in unsigned {
        let a = serde_json_core::ser::to_slice(&Decimal(false, v), &mut ours).unwrap();
        let b = serde_json_core::ser::to_slice(&v, &mut reference).unwrap();
        assert_eq!(&ours[..a], &reference[..b], "{v}");
    }
    for v in signed {
        let a =
            serde_json_core::ser::to_slice(&Decimal(v < 0, v.unsigned_abs()), &mut ours).unwrap();
        let b = serde_json_core::ser::to_slice(&v, &mut reference).unwrap();
        assert_eq!(&ours[..a], &reference[..b], "{v}");
    }
}

#[test]
fn base64_rfc4648_vectors() {
    let cases: [(&[u8], &str); 7] = [
        (b"", ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (b"fooba", "Zm9vYmE="),
        (b"foobar", "Zm9vYmFy"),
    ];
    for (input, expected) in cases {
        assert_eq!(Base64(input).to_string(), expected);
        assert_eq!(base64_len(input.len()), expected.len());
    }
    // Longer than one 48-byte chunk.
    let long: Vec<u8> = (0..=255).collect();
    assert_eq!(Base64(&long).to_string(), reference_base64(&long));
}

#[test]
fn buffer_too_small_for_every_kind() {
    let options = EncodeOptions {
        event_seq: None,
        payload: PayloadMode::Full,
        node: Some("n1"),
    };
    for event in all_kinds() {
        let needed = encoded_len_bound(&event, &options);
        let mut buf = vec![0u8; needed];
        assert_eq!(encode(&event, &options, &mut buf), Ok(needed));
        for short in [0, 1, needed / 2, needed - 1] {
            assert_eq!(
                encode(&event, &options, &mut buf[..short]),
                Err(EncodeError::BufferTooSmall {
                    needed,
                    available: short
                })
            );
        }
    }
    let error = EncodeError::BufferTooSmall {
        needed: 10,
        available: 3,
    };
    assert_eq!(
        error.to_string(),
        "event JSON needs 10 bytes but the buffer holds 3"
    );
}

// ---- property tests -------------------------------------------------------------------------

/// An independent base64 encoder (bit accumulator instead of 3-byte groups).
fn reference_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 0x3F) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 0x3F) as usize] as char);
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// A tiny base64 decoder that rejects anything non-canonical.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for (i, quad) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut acc = 0u32;
        for &c in &quad[..4 - pad] {
            acc = (acc << 6) | u32::from(value(c)?);
        }
        acc <<= 6 * u32::try_from(pad).unwrap();
        let [_, b0, b1, b2] = acc.to_be_bytes();
        let decoded = [b0, b1, b2];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

fn nasty_string() -> impl Strategy<Value = String> {
    nasty_string_up_to(24)
}

fn nasty_string_up_to(max_chars: usize) -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '"', '\\', '/', '\u{0}', '\u{1}', '\u{8}', '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1f}',
        '\u{7f}', '\u{2028}', '\u{2029}', '\u{feff}', 'é', '€', '😀',
    ]);
    prop::collection::vec(prop_oneof![any::<char>(), special], 0..max_chars)
        .prop_map(|chars| chars.into_iter().collect())
}

fn payload_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        nasty_string().prop_map(String::into_bytes),
        "[a-z ]{0,100}".prop_map(String::into_bytes),
    ]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn payload_mode() -> impl Strategy<Value = PayloadMode> {
    prop_oneof![
        Just(PayloadMode::Full),
        Just(PayloadMode::Omit),
        (0usize..64).prop_map(PayloadMode::Truncate),
    ]
}

#[derive(Debug, Clone)]
struct Inputs {
    a: String,
    b: String,
    c: Option<String>,
    d: Option<String>,
    node: Option<String>,
    payload: Vec<u8>,
    mode: PayloadMode,
    ts: u64,
    ts2: u64,
    int: i64,
    small: u8,
    keepalive: u16,
    flag: bool,
    qos: QoS,
    int_ids: (bool, bool),
    /// A user-property block (MQTT 5 CONNECT), possibly empty.
    user_props: Vec<u8>,
    /// `$share/<a>/<b>`.
    shared: String,
}

/// The property block of `pairs`, empty when MQTT cannot carry them.
fn user_property_block(pairs: &[(String, String)]) -> Vec<u8> {
    let list: Vec<Property<'_>> = pairs
        .iter()
        .map(|(k, v)| Property::UserProperty(k, v))
        .collect();
    let mut raw = vec![0u8; 4096];
    match encode_properties(&list, &mut raw) {
        Ok(n) if Properties::parse(&raw[..n], Context::Connect).is_ok() => {
            raw.truncate(n);
            raw
        }
        _ => Vec::new(),
    }
}

fn inputs() -> impl Strategy<Value = Inputs> {
    (
        (
            nasty_string(),
            nasty_string(),
            prop::option::of(nasty_string()),
            prop::option::of(nasty_string()),
            prop::option::of(nasty_string()),
        ),
        (payload_bytes(), payload_mode()),
        (
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<u8>(),
            any::<u16>(),
            any::<bool>(),
            qos(),
            any::<(bool, bool)>(),
        ),
        prop::collection::vec(
            (nasty_string(), nasty_string())
                .prop_map(|(k, v)| (k.replace('\0', ""), v.replace('\0', ""))),
            0..12,
        ),
    )
        .prop_map(
            |(
                (a, b, c, d, node),
                (payload, mode),
                (ts, ts2, int, small, keepalive, flag, qos, int_ids),
                pairs,
            )| {
                let user_props = user_property_block(&pairs);
                let shared = format!("$share/{a}/{b}");
                Inputs {
                    a,
                    b,
                    c,
                    d,
                    node,
                    payload,
                    mode,
                    ts,
                    ts2,
                    int,
                    small,
                    keepalive,
                    flag,
                    qos,
                    int_ids,
                    user_props,
                    shared,
                }
            },
        )
}

fn events(i: &Inputs) -> Vec<Event<'_>> {
    fn id(as_int: bool, int: i64, text: &str) -> Id<'_> {
        if as_int { Id::Int(int) } else { Id::Str(text) }
    }
    vec![
        Connected {
            session_seq: 1,
            session_expiry: None,
            user_properties: crate::event::UserProperties::NONE,
            ts: i.ts,
            client_id: &i.a,
            username: i.c.as_deref(),
            proto_ver: i.small,
            keepalive: i.keepalive,
            clean_session: i.flag,
            peer: i.d.as_deref(),
            transport: None,
        }
        .into(),
        Disconnected {
            session_seq: 1,
            reason_code: None,
            ts: i.ts,
            client_id: &i.a,
            reason: DisconnectReason::TcpClosed,
            connected_at: i.ts2,
        }
        .into(),
        Subscribed {
            options: None,
            ts: i.ts,
            client_id: &i.a,
            topic: &i.b,
            qos: i.qos,
        }
        .into(),
        Unsubscribed {
            ts: i.ts,
            client_id: &i.a,
            topic: &i.b,
        }
        .into(),
        Message {
            ts: i.ts,
            pub_client_id: &i.a,
            topic: &i.b,
            payload: &i.payload,
            qos: i.qos,
            retain: i.flag,
        }
        .into(),
        MsgAck {
            reason_code: None,
            ts: i.ts,
            pub_client_id: i.c.as_deref(),
            ack_client_id: &i.a,
            product_id: id(i.int_ids.0, i.int, &i.b),
            message_id: id(i.int_ids.1, i.int, i.d.as_deref().unwrap_or("")),
            topic: &i.b,
            qos: i.qos,
        }
        .into(),
        // The MQTT 5 fields.
        Connected {
            session_seq: 1,
            session_expiry: Some(u32::try_from(i.ts2 >> 32).unwrap()),
            user_properties: UserProperties::new(
                Properties::parse(&i.user_props, Context::Connect).unwrap(),
            ),
            ts: i.ts,
            client_id: &i.a,
            username: i.c.as_deref(),
            proto_ver: 5,
            keepalive: i.keepalive,
            clean_session: i.flag,
            peer: i.d.as_deref(),
            transport: None,
        }
        .into(),
        Disconnected {
            session_seq: 1,
            reason_code: Some(i.small),
            ts: i.ts,
            client_id: &i.a,
            reason: DisconnectReason::ClientError,
            connected_at: i.ts2,
        }
        .into(),
        Subscribed {
            options: Some(SubscriptionOptions {
                no_local: i.flag,
                retain_as_published: i.int_ids.0,
                retain_handling: [
                    RetainHandling::OnSubscribe,
                    RetainHandling::OnNewSubscribe,
                    RetainHandling::Never,
                ][usize::from(i.small % 3)],
                qos: i.qos,
            }),
            ts: i.ts,
            client_id: &i.a,
            topic: &i.shared,
            qos: i.qos,
        }
        .into(),
        MsgAck {
            reason_code: Some(i.small),
            ts: i.ts,
            pub_client_id: i.c.as_deref(),
            ack_client_id: &i.a,
            product_id: id(i.int_ids.0, i.int, &i.b),
            message_id: id(i.int_ids.1, i.int, i.d.as_deref().unwrap_or("")),
            topic: &i.b,
            qos: i.qos,
        }
        .into(),
        // The events of refusals, denials and drops.
        Refused {
            ts: i.ts,
            client_id: &i.a,
            username: i.c.as_deref(),
            peer: i.d.as_deref(),
            reason_code: i.small,
            reason: &i.b,
        }
        .into(),
        Denied {
            ts: i.ts,
            client_id: &i.a,
            topic: &i.b,
            action: if i.flag {
                Action::Publish
            } else {
                Action::Subscribe
            },
            suppressed: u32::from(i.small),
        }
        .into(),
        Dropped {
            ts: i.ts,
            client_id: &i.a,
            topic: i.c.as_deref(),
            filter: i.d.as_deref(),
            reason: [
                DropReason::QueueFull,
                DropReason::RouterLogOverrun,
                DropReason::Expired,
                DropReason::TooLarge,
            ][usize::from(i.small % 4)],
            count: i.ts2,
            suppressed: u32::from(i.keepalive),
        }
        .into(),
    ]
}

fn id_value(id: Id<'_>) -> Value {
    match id {
        Id::Str(s) => Value::from(s),
        Id::Int(n) => Value::from(n),
    }
}

fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, Value::from)
}

/// The JSON object the event must decode to, built independently of the encoder.
fn expected(event: &Event<'_>, options: &EncodeOptions<'_>) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        assert!(map.insert(k.to_owned(), v).is_none(), "duplicate key {k}");
    };
    match event {
        Event::Connected(e) => {
            put("client_id", e.client_id.into());
            if let Some(u) = e.username {
                put("username", u.into());
            }
            put("proto_ver", e.proto_ver.into());
            put("keepalive", e.keepalive.into());
            put("clean_session", e.clean_session.into());
            if let Some(p) = e.peer {
                put("peer", p.into());
            }
            if let Some(expiry) = e.session_expiry {
                put("session_expiry", expiry.into());
            }
            let all: Vec<(&str, &str)> = e.user_properties.properties().user_properties().collect();
            let mut kept = Vec::new();
            let mut bytes = 0;
            for (k, v) in &all {
                bytes += k.len() + v.len();
                if kept.len() == USER_PROPERTIES_MAX_COUNT || bytes > USER_PROPERTIES_MAX_BYTES {
                    break;
                }
                kept.push(json!([k, v]));
            }
            if !kept.is_empty() {
                if kept.len() < all.len() {
                    put("user_properties_truncated", true.into());
                }
                put("user_properties", Value::Array(kept));
            }
            put("session_seq", e.session_seq.into());
        }
        Event::Disconnected(e) => {
            put("client_id", e.client_id.into());
            put("reason", e.reason.as_str().into());
            if let Some(code) = e.reason_code {
                put("reason_code", code.into());
            }
            put("connected_at", e.connected_at.into());
            put("session_seq", e.session_seq.into());
        }
        Event::Subscribed(e) => {
            put("client_id", e.client_id.into());
            put("topic", e.topic.into());
            put("qos", e.qos.as_u8().into());
            if let Some(o) = e.options {
                put("no_local", o.no_local.into());
                put("retain_as_published", o.retain_as_published.into());
                put("retain_handling", (o.retain_handling as u8).into());
            }
            if let Some(rest) = e.topic.strip_prefix("$share/")
                && let Some((group, _)) = rest.split_once('/')
            {
                put("share_group", group.into());
            }
        }
        Event::Unsubscribed(e) => {
            put("client_id", e.client_id.into());
            put("topic", e.topic.into());
        }
        Event::Message(e) => {
            put("pub_client_id", e.pub_client_id.into());
            put("topic", e.topic.into());
            put("payload_len", e.payload.len().into());
            put("qos", e.qos.as_u8().into());
            put("retain", e.retain.into());
            let (limit, omit) = match options.payload {
                PayloadMode::Full => (usize::MAX, false),
                PayloadMode::Truncate(n) => (n, false),
                PayloadMode::Omit => (0, true),
            };
            if !omit {
                if e.payload.len() > limit {
                    put("truncated", true.into());
                }
                match core::str::from_utf8(e.payload) {
                    Ok(text) => {
                        let mut kept = String::new();
                        for c in text.chars() {
                            if kept.len() + c.len_utf8() > limit {
                                break;
                            }
                            kept.push(c);
                        }
                        put("payload", kept.into());
                    }
                    Err(_) => {
                        let kept = &e.payload[..e.payload.len().min(limit)];
                        put("payload", reference_base64(kept).into());
                        put("payload_encoding", "base64".into());
                    }
                }
            }
        }
        Event::MsgAck(e) => {
            put("pub_client_id", opt_str(e.pub_client_id));
            put("ack_client_id", e.ack_client_id.into());
            put("product_id", id_value(e.product_id));
            put("message_id", id_value(e.message_id));
            put("topic", e.topic.into());
            put("qos", e.qos.as_u8().into());
            if let Some(code) = e.reason_code {
                put("reason_code", code.into());
            }
        }
        Event::Refused(e) => {
            put("client_id", e.client_id.into());
            if let Some(u) = e.username {
                put("username", u.into());
            }
            if let Some(p) = e.peer {
                put("peer", p.into());
            }
            put("reason_code", e.reason_code.into());
            put("reason", e.reason.into());
        }
        Event::Denied(e) => {
            put("client_id", e.client_id.into());
            put("topic", e.topic.into());
            put("action", e.action.as_str().into());
            if e.suppressed > 0 {
                put("suppressed", e.suppressed.into());
            }
        }
        Event::Dropped(e) => {
            put("client_id", e.client_id.into());
            if let Some(t) = e.topic {
                put("topic", t.into());
            }
            if let Some(f) = e.filter {
                put("filter", f.into());
            }
            put("reason", e.reason.as_str().into());
            put("count", e.count.into());
            if e.suppressed > 0 {
                put("suppressed", e.suppressed.into());
            }
        }
    }
    put("ts", event.ts().into());
    if let Some(node) = options.node {
        put("node", node.into());
    }
    map
}

/// The encoder without any fast path: every value goes through serde-json-core's own methods
/// (`serialize_str`, `serialize_u64`, `serialize_i64`, `collect_str`, ...). [`encode`] must
/// write exactly these bytes.
fn reference_encode(event: &Event<'_>, options: &EncodeOptions<'_>) -> Vec<u8> {
    /// A `Display` value serialized with `collect_str`, as base64 always was.
    struct Collected<T>(T);

    impl<T: fmt::Display> Serialize for Collected<T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&self.0)
        }
    }

    struct PlainSink<S> {
        state: S,
    }

    impl<S: SerializeStruct> FieldSink<'_> for PlainSink<S> {
        type Error = S::Error;

        fn str(&mut self, key: &'static str, value: &str) -> Result<(), S::Error> {
            self.state.serialize_field(key, value)
        }

        fn uint(&mut self, key: &'static str, value: u64) -> Result<(), S::Error> {
            self.state.serialize_field(key, &value)
        }

        fn int(&mut self, key: &'static str, value: i64) -> Result<(), S::Error> {
            self.state.serialize_field(key, &value)
        }

        fn bool(&mut self, key: &'static str, value: bool) -> Result<(), S::Error> {
            self.state.serialize_field(key, &value)
        }

        fn null(&mut self, key: &'static str) -> Result<(), S::Error> {
            self.state.serialize_field(key, &())
        }

        fn base64(&mut self, key: &'static str, value: &[u8]) -> Result<(), S::Error> {
            self.state.serialize_field(key, &Collected(Base64(value)))
        }

        fn pairs(&mut self, key: &'static str, value: UserProperties<'_>) -> Result<(), S::Error> {
            let pairs: Vec<[&str; 2]> = value.iter().map(|(k, v)| [k, v]).collect();
            self.state.serialize_field(key, &pairs)
        }
    }

    struct PlainDocument<'e, 'a> {
        event: &'e Event<'a>,
        options: &'e EncodeOptions<'a>,
    }

    impl Serialize for PlainDocument<'_, '_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut sink = PlainSink {
                state: serializer.serialize_struct("Event", 12)?,
            };
            walk(self.event, self.options, &mut sink)?;
            sink.state.end()
        }
    }

    // Every escaped byte is at most 6 bytes, base64 at most 4 per 3 bytes.
    let mut buf = vec![0u8; 6 * encoded_len_bound(event, options) + 64];
    let len = serde_json_core::ser::to_slice(&PlainDocument { event, options }, &mut buf)
        .expect("the reference buffer is large enough");
    buf.truncate(len);
    buf
}

#[test]
fn byte_identical_to_the_reference_on_the_examples() {
    let nodes = [None, Some("broker-1"), Some("gw-\"7\"")];
    for node in nodes {
        let options = EncodeOptions {
            event_seq: None,
            payload: PayloadMode::Full,
            node,
        };
        for event in all_kinds() {
            assert_eq!(
                to_string(&event, &options).as_bytes(),
                reference_encode(&event, &options),
                "{event:?}"
            );
        }
    }
    let envelope = br#"{"product_id":"p1","message_id":"m42","payload":"0123456789012345678901234567890123456789012345678"}"#;
    let event: Event<'_> = message(envelope).into();
    let options = EncodeOptions::default();
    assert_eq!(
        to_string(&event, &options).as_bytes(),
        reference_encode(&event, &options)
    );
    for ts in [
        0,
        9,
        10,
        99_999_999,
        100_000_000,
        1_795_671_886_321,
        u64::MAX,
    ] {
        let event: Event<'_> = MsgAck {
            ts,
            product_id: Id::Int(i64::MIN),
            message_id: Id::Int(i64::MAX),
            ..msgack()
        }
        .into();
        assert_eq!(
            to_string(&event, &options).as_bytes(),
            reference_encode(&event, &options)
        );
    }
}

proptest! {
    #![proptest_config(crate::proptest_cases::config(ProptestConfig::with_cases(512)))]

    #[test]
    fn encodes_valid_json_that_round_trips(i in inputs()) {
        let options = EncodeOptions { payload: i.mode, node: i.node.as_deref(), event_seq: None };
        for event in events(&i) {
            let bound = encoded_len_bound(&event, &options);
            let mut buf = vec![0u8; bound + 16];
            let len = encode(&event, &options, &mut buf).expect("bound is enough");
            prop_assert!(len <= bound);
            prop_assert_eq!(len, bound, "the bound is documented as exact");

            let value: Value = serde_json::from_slice(&buf[..len]).expect("valid JSON");
            let Value::Object(map) = value else { panic!("not an object") };
            prop_assert_eq!(&map, &expected(&event, &options));
            if let Event::Message(m) = event {
                // Decode the base64 payload and compare with the input bytes.
                if map.get("payload_encoding").is_some() {
                    let text = map["payload"].as_str().unwrap();
                    let decoded = decode_base64(text).expect("canonical base64");
                    prop_assert!(m.payload.starts_with(&decoded));
                    if map.get("truncated").is_none() {
                        prop_assert_eq!(&decoded[..], m.payload);
                    }
                } else if let Some(text) = map.get("payload").and_then(Value::as_str) {
                    prop_assert!(m.payload.starts_with(text.as_bytes()));
                }
            }

            // One byte short always fails cleanly.
            let short = &mut buf[..len - 1];
            prop_assert_eq!(
                encode(&event, &options, short),
                Err(EncodeError::BufferTooSmall { needed: bound, available: len - 1 })
            );
        }
    }

    /// Every kind, every option, byte for byte against the encoder without fast paths.
    #[test]
    fn byte_identical_to_the_reference(i in inputs()) {
        let options = EncodeOptions { payload: i.mode, node: i.node.as_deref(), event_seq: None };
        for event in events(&i) {
            let encoded = to_string(&event, &options);
            prop_assert_eq!(encoded.as_bytes(), &reference_encode(&event, &options)[..]);
        }
    }

    #[test]
    fn bound_is_not_wildly_above(i in inputs()) {
        let options = EncodeOptions { payload: i.mode, node: i.node.as_deref(), event_seq: None };
        for event in events(&i) {
            let input_bytes = i.a.len() + i.b.len()
                + i.c.as_ref().map_or(0, String::len)
                + i.d.as_ref().map_or(0, String::len)
                + i.node.as_ref().map_or(0, String::len)
                + i.payload.len()
                + i.user_props.len();
            prop_assert!(encoded_len_bound(&event, &options) <= 6 * input_bytes + 300);
        }
    }

    /// The fast string path (a marker, then the escaped text in its place) writes exactly what
    /// serde-json-core's own `serialize_str` writes (up to 300 characters of up to 6 escaped
    /// bytes each).
    #[test]
    fn json_str_is_byte_identical_to_serde_json_core(text in nasty_string_up_to(300)) {
        let mut fast = vec![0u8; 6 * text.len() + 2];
        let mut reference = vec![0u8; 6 * text.len() + 2];
        let n = json_str_into(&text, &mut fast).unwrap();
        let m = serde_json_core::ser::to_slice(text.as_str(), &mut reference).unwrap();
        prop_assert_eq!(&fast[..n], &reference[..m]);
        prop_assert_eq!(n, json_string_len(&text));
        // One byte short fails as the reference does.
        prop_assert!(json_str_into(&text, &mut fast[..n - 1]).is_none());
    }

    #[test]
    fn byte_escaping_is_the_word_escaping(text in ".{0,120}", cut in 0usize..200) {
        // Control characters, quotes and backslashes often enough.
        let text: String = text
            .chars()
            .enumerate()
            .map(|(i, c)| match i % 7 { 1 => '"', 3 => char::from(u8::try_from(i % 32).unwrap()), 5 => '\\', _ => c })
            .collect();
        let plain = crate::json_scan::find_special(text.as_bytes()).unwrap_or(text.len());
        let room = (6 * text.len() + 2).min(cut + plain + 1);
        let mut words = vec![0u8; room];
        let mut bytes = vec![0u8; room];
        let a = write_quoted_with(text.as_bytes(), plain, &mut words, true);
        let b = write_quoted_with(text.as_bytes(), plain, &mut bytes, false);
        prop_assert_eq!(a, b);
        if let Some(len) = a {
            prop_assert_eq!(&words[..len], &bytes[..len]);
            prop_assert_eq!(len, json_string_len(&text));
        }
    }

    #[test]
    fn base64_matches_reference(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = Base64(&bytes).to_string();
        prop_assert_eq!(&text, &reference_base64(&bytes));
        prop_assert_eq!(decode_base64(&text), Some(bytes));
    }
}
