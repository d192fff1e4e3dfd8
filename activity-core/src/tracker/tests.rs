//! Scenario tests: drive trackers through whole sessions with a fake clock and check every
//! event's JSON field by field.

use serde_json::{Value, json};

use super::*;
use crate::acks::FixedAckStore;
use crate::event::{EncodeOptions, encode, encoded_len_bound};

type TestTracker = Tracker<FixedAckStore<8, 256>>;

fn tracker() -> TestTracker {
    Tracker::new(TrackerConfig::default(), FixedAckStore::new())
}

/// Encodes `event` with the default options, checks the size bound, and parses the JSON.
fn json_of(event: Option<Event<'_>>) -> (EventKind, Value) {
    let event = event.expect("an event");
    let options = EncodeOptions::default();
    let mut buf = vec![0u8; encoded_len_bound(&event, &options)];
    let n = encode(&event, &options, &mut buf).expect("fits its bound");
    (
        event.kind(),
        serde_json::from_slice(&buf[..n]).expect("valid JSON"),
    )
}

fn connect_info(client_id: &str) -> ConnectInfo<'_> {
    ConnectInfo {
        session_seq: 3_481_600_000_000_005,
        session_expiry: None,
        user_properties: crate::event::UserProperties::NONE,
        client_id,
        username: Some("alice"),
        proto_ver: 4,
        keepalive: 30,
        clean_session: false,
        peer: Some("127.0.0.1:50000"),
        transport: None,
    }
}

const ENVELOPE: &[u8] = br#"{"product_id":"p1","message_id":"m42","payload":"data"}"#;

#[test]
fn whole_session_emits_every_event_with_its_fields() {
    let mut publisher = tracker();
    let mut subscriber = tracker();

    let (kind, v) = json_of(
        subscriber
            .handle_connect(1_000, connect_info("sub-1"))
            .unwrap(),
    );
    assert_eq!(kind, EventKind::Connected);
    assert_eq!(
        v,
        json!({"client_id":"sub-1","username":"alice","proto_ver":4,"keepalive":30,
               "clean_session":false,"peer":"127.0.0.1:50000",
               "session_seq":3_481_600_000_000_005_u64,"ts":1000})
    );
    assert_eq!(subscriber.session_seq(), Some(3_481_600_000_000_005));
    let info = ConnectInfo {
        username: None,
        peer: None,
        transport: None,
        clean_session: true,
        session_seq: 9,
        ..connect_info("pub-1")
    };
    let (_, v) = json_of(publisher.handle_connect(1_001, info).unwrap());
    assert_eq!(
        v,
        json!({"client_id":"pub-1","proto_ver":4,"keepalive":30,"clean_session":true,
               "session_seq":9,"ts":1001})
    );

    let (kind, v) =
        json_of(subscriber.handle_subscribe(1_002, "devices/+/cmd", Some(QoS::ExactlyOnce), None));
    assert_eq!(kind, EventKind::Subscribed);
    assert_eq!(
        v,
        json!({"client_id":"sub-1","topic":"devices/+/cmd","qos":2,"ts":1002})
    );
    assert_eq!(
        subscriber.handle_subscribe(1_002, "$SYS/#", None, None),
        None
    );

    let publish = PublishInfo {
        topic: "devices/7/cmd",
        payload: ENVELOPE,
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    let PublishOutcome::Accepted(event) = publisher.handle_publish(1_003, publish) else {
        panic!("an ordinary publish is accepted");
    };
    let (kind, v) = json_of(event);
    assert_eq!(kind, EventKind::Message);
    assert_eq!(v["pub_client_id"], "pub-1");
    assert_eq!(v["topic"], "devices/7/cmd");
    assert_eq!(v["payload"], core::str::from_utf8(ENVELOPE).unwrap());
    assert_eq!(v["qos"], 1);
    assert_eq!(v["ts"], 1003);

    // QoS 1 delivery, acknowledged by PUBACK.
    let delivery = DeliveryInfo {
        properties: crate::codec::Properties::EMPTY,
        pkid: 5,
        qos: QoS::AtLeastOnce,
        topic: "devices/7/cmd",
        payload: ENVELOPE,
        pub_client_id: Some("pub-1"),
    };
    subscriber.handle_delivery(delivery, |_| panic!("publisher was given"));
    assert_eq!(subscriber.pending_acks(), 1);
    assert_eq!(
        subscriber.handle_pubrec(1_004, 5, None),
        None,
        "QoS 1 is acked by PUBACK"
    );
    let (kind, v) = json_of(subscriber.handle_puback(1_004, 5, None));
    assert_eq!(kind, EventKind::MsgAck);
    assert_eq!(
        v,
        json!({"pub_client_id":"pub-1","ack_client_id":"sub-1","product_id":"p1",
               "message_id":"m42","topic":"devices/7/cmd","qos":1,"ts":1004})
    );
    assert_eq!(
        subscriber.handle_puback(1_004, 5, None),
        None,
        "a second ack matches nothing"
    );

    // QoS 2 delivery with integer ids, publisher from the lookup, acknowledged by PUBREC.
    let delivery = DeliveryInfo {
        pkid: 6,
        qos: QoS::ExactlyOnce,
        payload: br#"{"message_id":-7,"product_id":99}"#,
        pub_client_id: None,
        ..delivery
    };
    subscriber.handle_delivery(delivery, |env| {
        assert_eq!(env.product_id.as_id(), crate::event::Id::Int(99));
        let mut s = heapless::String::new();
        s.push_str("pub-9").unwrap();
        Some(s)
    });
    assert_eq!(
        subscriber.handle_puback(1_005, 6, None),
        None,
        "QoS 2 is acked by PUBREC"
    );
    let (_, v) = json_of(subscriber.handle_pubrec(1_005, 6, None));
    assert_eq!(
        v,
        json!({"pub_client_id":"pub-9","ack_client_id":"sub-1","product_id":99,
               "message_id":-7,"topic":"devices/7/cmd","qos":2,"ts":1005})
    );

    let (kind, v) = json_of(subscriber.handle_unsubscribe(1_006, "devices/+/cmd"));
    assert_eq!(kind, EventKind::Unsubscribed);
    assert_eq!(
        v,
        json!({"client_id":"sub-1","topic":"devices/+/cmd","ts":1006})
    );

    let (kind, v) = json_of(subscriber.handle_close(1_007, DisconnectReason::Normal, None));
    assert_eq!(kind, EventKind::Disconnected);
    assert_eq!(
        v,
        json!({"client_id":"sub-1","reason":"normal","connected_at":1000,
               "session_seq":3_481_600_000_000_005_u64,"ts":1007})
    );
    assert_eq!(subscriber.session_seq(), None, "closed");
    assert_eq!(
        subscriber.handle_close(1_008, DisconnectReason::TcpClosed, None),
        None
    );
    assert_eq!(subscriber.stats().acks_unmatched, 3);
}

#[test]
fn takeover_closes_the_old_session_before_the_new_one_connects() {
    // The adapter's registry sees the same client id twice: the old tracker gets `takenover`
    // first, then the new tracker connects. The events carry what a consumer needs to tell the
    // two sessions apart.
    let mut old = tracker();
    let mut new = tracker();
    old.handle_connect(10, connect_info("dev")).unwrap();
    let (_, gone) = json_of(old.handle_close(20, DisconnectReason::Takenover, None));
    let (_, came) = json_of(new.handle_connect(20, connect_info("dev")).unwrap());
    assert_eq!(gone["reason"], "takenover");
    assert_eq!(gone["connected_at"], 10);
    assert_eq!(came["client_id"], "dev");
    assert_eq!(came["ts"], 20);
    assert!(!old.is_connected());
    assert!(new.is_connected());
}

#[test]
fn reserved_id_is_refused_and_emits_nothing() {
    let mut t = tracker();
    let err = t.handle_connect(1, connect_info("broker")).unwrap_err();
    assert_eq!(err, ConnectError::Refused(ClientIdError::Reserved));
    assert!(!t.is_connected());
    assert_eq!(
        t.handle_subscribe(2, "a", Some(QoS::AtMostOnce), None),
        None
    );
    assert_eq!(t.handle_close(3, DisconnectReason::TcpClosed, None), None);
}

#[test]
fn second_connect_is_a_protocol_error() {
    let mut t = tracker();
    t.handle_connect(1, connect_info("c")).unwrap();
    assert_eq!(
        t.handle_connect(2, connect_info("c")).unwrap_err(),
        ConnectError::AlreadyConnected
    );
    t.handle_close(3, DisconnectReason::ProtocolError, None);
    assert_eq!(
        t.handle_connect(4, connect_info("c")).unwrap_err(),
        ConnectError::Closed
    );
}

#[test]
fn publish_on_a_system_topic_is_denied_and_counted() {
    let mut t = tracker();
    t.handle_connect(1, connect_info("c")).unwrap();
    for topic in ["SYSTEM/message", "SYSTEM/presence/connected", "SYSTEM"] {
        let publish = PublishInfo {
            topic,
            payload: b"spoof",
            qos: QoS::AtMostOnce,
            retain: false,
        };
        assert_eq!(t.handle_publish(2, publish), PublishOutcome::Denied);
    }
    assert_eq!(t.stats().publishes_denied, 3);
    assert!(t.is_connected(), "the client stays connected");
}

#[test]
fn deliveries_without_envelope_or_on_system_topics_are_not_tracked() {
    let mut t = tracker();
    t.handle_connect(1, connect_info("c")).unwrap();
    let base = DeliveryInfo {
        properties: crate::codec::Properties::EMPTY,
        pkid: 1,
        qos: QoS::AtLeastOnce,
        topic: "t",
        payload: ENVELOPE,
        pub_client_id: Some("p"),
    };
    for delivery in [
        DeliveryInfo {
            payload: b"plain text",
            ..base
        },
        DeliveryInfo {
            payload: br#"{"product_id":"p1"}"#,
            ..base
        },
        DeliveryInfo {
            qos: QoS::AtMostOnce,
            ..base
        },
        DeliveryInfo {
            topic: "SYSTEM/message",
            ..base
        },
    ] {
        t.handle_delivery(delivery, |_| None);
        assert_eq!(t.pending_acks(), 0, "{delivery:?}");
        assert_eq!(t.handle_puback(2, 1, None), None);
    }
}

#[test]
fn unknown_publisher_gives_null() {
    let mut t = tracker();
    t.handle_connect(1, connect_info("c")).unwrap();
    let delivery = DeliveryInfo {
        properties: crate::codec::Properties::EMPTY,
        pkid: 9,
        qos: QoS::AtLeastOnce,
        topic: "t",
        payload: ENVELOPE,
        pub_client_id: None,
    };
    t.handle_delivery(delivery, |_| None);
    let (_, v) = json_of(t.handle_puback(2, 9, None));
    assert_eq!(v["pub_client_id"], Value::Null);
}

#[test]
fn full_ack_store_evicts_oldest_and_counts() {
    let mut t: Tracker<FixedAckStore<2, 64>> =
        Tracker::new(TrackerConfig::default(), FixedAckStore::new());
    t.handle_connect(1, connect_info("c")).unwrap();
    for pkid in 1..=3 {
        let delivery = DeliveryInfo {
            properties: crate::codec::Properties::EMPTY,
            pkid,
            qos: QoS::AtLeastOnce,
            topic: "t",
            payload: ENVELOPE,
            pub_client_id: Some("p"),
        };
        t.handle_delivery(delivery, |_| None);
    }
    assert_eq!(t.pending_acks(), 2);
    assert_eq!(t.stats().deliveries_evicted, 1);
    assert_eq!(t.handle_puback(2, 1, None), None, "the oldest was evicted");
    assert!(t.handle_puback(2, 2, None).is_some());
    assert!(t.handle_puback(2, 3, None).is_some());

    let long_topic = "x".repeat(100);
    let delivery = DeliveryInfo {
        properties: crate::codec::Properties::EMPTY,
        pkid: 4,
        qos: QoS::AtLeastOnce,
        topic: &long_topic,
        payload: ENVELOPE,
        pub_client_id: Some("p"),
    };
    t.handle_delivery(delivery, |_| None);
    assert_eq!(t.stats().deliveries_too_large, 1);
    assert_eq!(t.handle_puback(3, 4, None), None);
}

#[test]
fn disabled_kinds_are_tracked_but_not_reported() {
    let config = TrackerConfig {
        enabled: EventKinds::ALL
            .without(EventKind::Connected)
            .without(EventKind::MsgAck),
        ..TrackerConfig::default()
    };
    let mut t: TestTracker = Tracker::new(config, FixedAckStore::new());
    assert_eq!(t.handle_connect(1, connect_info("c")).unwrap(), None);
    assert!(t.is_connected());
    let delivery = DeliveryInfo {
        properties: crate::codec::Properties::EMPTY,
        pkid: 1,
        qos: QoS::AtLeastOnce,
        topic: "t",
        payload: ENVELOPE,
        pub_client_id: Some("p"),
    };
    t.handle_delivery(delivery, |_| None);
    assert_eq!(t.handle_puback(2, 1, None), None);
    assert_eq!(t.pending_acks(), 0, "the ack still clears the entry");
    let (kind, _) = json_of(t.handle_close(3, DisconnectReason::KeepaliveTimeout, None));
    assert_eq!(kind, EventKind::Disconnected);
}

#[test]
fn custom_prefix_moves_the_system_topics() {
    let config = TrackerConfig {
        topics: SystemTopics::new("acme/activity").unwrap(),
        ..TrackerConfig::default()
    };
    let mut t: TestTracker = Tracker::new(config, FixedAckStore::new());
    t.handle_connect(1, connect_info("c")).unwrap();
    let on = |topic| PublishInfo {
        topic,
        payload: b"x",
        qos: QoS::AtMostOnce,
        retain: false,
    };
    assert_eq!(
        t.handle_publish(2, on("acme/activity/message")),
        PublishOutcome::Denied
    );
    assert!(matches!(
        t.handle_publish(2, on("SYSTEM/message")),
        PublishOutcome::Accepted(Some(_))
    ));
}

#[test]
fn happenings_before_connect_produce_nothing() {
    let mut t = tracker();
    assert_eq!(
        t.handle_subscribe(1, "a", Some(QoS::AtMostOnce), None),
        None
    );
    assert_eq!(t.handle_unsubscribe(1, "a"), None);
    let publish = PublishInfo {
        topic: "a",
        payload: b"x",
        qos: QoS::AtMostOnce,
        retain: false,
    };
    assert_eq!(t.handle_publish(1, publish), PublishOutcome::Accepted(None));
    assert_eq!(t.handle_puback(1, 1, None), None);
    assert_eq!(t.handle_close(1, DisconnectReason::TcpClosed, None), None);
}

#[test]
fn memory_figures_in_the_crate_docs_hold() {
    use crate::publishers::PublisherTable;
    let tracker = core::mem::size_of::<Tracker<FixedAckStore<0, 0>>>();
    let per_entry = core::mem::size_of::<FixedAckStore<17, 256>>()
        - core::mem::size_of::<FixedAckStore<16, 256>>();
    let per_publisher = core::mem::size_of::<PublisherTable<64>>() / 64;
    println!("tracker {tracker} B, ack entry {per_entry} B, publisher entry {per_publisher} B");
    assert!(tracker <= 296, "tracker is {tracker} bytes");
    assert!(per_entry <= 256 + 64, "ack entry is {per_entry} bytes");
    assert!(
        per_publisher <= 480,
        "publisher entry is {per_publisher} bytes"
    );
}

/// A PUBLISH property block of these user properties.
fn publish_properties(pairs: &[(&str, &str)]) -> Vec<u8> {
    let list: Vec<crate::codec::Property<'_>> = pairs
        .iter()
        .map(|(k, v)| crate::codec::Property::UserProperty(k, v))
        .collect();
    let mut raw = vec![0u8; 1024];
    let n = crate::codec::encode_properties(&list, &mut raw).unwrap();
    raw.truncate(n);
    raw
}

#[test]
fn user_properties_identify_a_delivery_like_an_envelope() {
    use crate::codec::{Context, Properties};
    use crate::envelope::{OwnedId, envelope_of_properties};
    use crate::event::Id;
    let parse =
        |raw: &[u8]| envelope_of_properties(&Properties::parse(raw, Context::Publish).unwrap());
    let ids = publish_properties(&[("a", "b"), ("message_id", "42"), ("product_id", "p")]);
    let envelope = parse(&ids).expect("both ids");
    assert_eq!(envelope.product_id.as_id(), Id::Str("p"));
    // A user property is a string, also when it looks like a number.
    assert_eq!(envelope.message_id, OwnedId::Str("42".try_into().unwrap()));
    let long = "x".repeat(crate::envelope::ID_CAPACITY + 1);
    for broken in [
        publish_properties(&[("product_id", "p")]),
        publish_properties(&[("product_id", "p"), ("message_id", "")]),
        publish_properties(&[
            ("product_id", "p"),
            ("message_id", "m"),
            ("message_id", "n"),
        ]),
        publish_properties(&[("product_id", &long), ("message_id", "m")]),
        publish_properties(&[("Product_id", "p"), ("message_id", "m")]),
    ] {
        assert_eq!(parse(&broken), None, "{broken:02x?}");
    }

    // The tracker: the publisher comes from the lookup, keyed by the property ids.
    let mut t = tracker();
    t.handle_connect(1, connect_info("sub")).unwrap();
    let raw = publish_properties(&[("product_id", "p9"), ("message_id", "m1")]);
    let delivery = DeliveryInfo {
        pkid: 3,
        qos: QoS::ExactlyOnce,
        topic: "a/b",
        payload: b"\xff binary",
        pub_client_id: None,
        properties: Properties::parse(&raw, Context::Publish).unwrap(),
    };
    t.handle_delivery(delivery, |seen| {
        assert_eq!(seen.product_id.as_id(), Id::Str("p9"));
        Some("pub-9".try_into().unwrap())
    });
    let (kind, v) = json_of(t.handle_pubrec(5, 3, Some(0x10)));
    assert_eq!(kind, EventKind::MsgAck);
    assert_eq!(
        v,
        json!({"pub_client_id":"pub-9","ack_client_id":"sub","product_id":"p9",
               "message_id":"m1","topic":"a/b","qos":2,"reason_code":16,"ts":5})
    );
}

#[test]
fn v5_connect_and_subscribe_fields_reach_the_events() {
    use crate::codec::{Context, Properties, RetainHandling, SubscriptionOptions};
    let raw = publish_properties(&[("k", "v")]);
    let mut t = tracker();
    let info = ConnectInfo {
        proto_ver: 5,
        session_expiry: Some(7),
        user_properties: crate::event::UserProperties::new(
            Properties::parse(&raw, Context::Connect).unwrap(),
        ),
        ..connect_info("v5")
    };
    let (_, v) = json_of(t.handle_connect(1, info).unwrap());
    assert_eq!(v["session_expiry"], 7);
    assert_eq!(v["user_properties"], json!([["k", "v"]]));
    assert_eq!(t.stats().user_properties_truncated, 0);
    let options = SubscriptionOptions {
        no_local: true,
        retain_handling: RetainHandling::OnNewSubscribe,
        ..SubscriptionOptions::new(QoS::ExactlyOnce)
    };
    let (_, v) =
        json_of(t.handle_subscribe(2, "$share/g/t", Some(QoS::AtLeastOnce), Some(options)));
    assert_eq!(
        v,
        json!({"client_id":"v5","topic":"$share/g/t","qos":1,"no_local":true,
               "retain_as_published":false,"retain_handling":1,"share_group":"g","ts":2})
    );
    let (_, v) = json_of(t.handle_close(3, DisconnectReason::ClientError, Some(0x83)));
    assert_eq!(v["reason"], "client_error");
    assert_eq!(v["reason_code"], 0x83);
}

/// The event of a [`Reported`], or a panic naming what came instead.
fn reported(reported: Reported<'_>) -> Option<Event<'_>> {
    match reported {
        Reported::Event(event) => Some(event),
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn refused_carries_the_connect_cut_to_its_bounds() {
    let t = tracker();
    let long = "x".repeat(200);
    let name = format!("{}é", "u".repeat(127));
    let info = RefusedInfo {
        client_id: &long,
        username: Some(&name),
        peer: Some("192.0.2.1:1"),
        reason_code: 0x86,
        reason: "bad_username_or_password",
    };
    let (kind, v) = json_of(t.handle_refused(5, info));
    assert_eq!(kind, EventKind::Refused);
    assert_eq!(
        v["client_id"].as_str().unwrap().len(),
        REFUSED_CLIENT_ID_MAX
    );
    // Cut at the character boundary below the limit: `é` is two bytes at 127..129.
    assert_eq!(v["username"].as_str().unwrap(), "u".repeat(127));
    assert_eq!(v["reason_code"], 0x86);
    assert_eq!(v["reason"], "bad_username_or_password");
    assert_eq!(v["ts"], 5);
    // Off: nothing.
    let off = Tracker::new(
        TrackerConfig {
            enabled: EventKinds::ALL.without(EventKind::Refused),
            ..TrackerConfig::default()
        },
        FixedAckStore::<8, 256>::new(),
    );
    assert_eq!(off.handle_refused(5, info), None);
}

#[test]
fn denied_events_are_bounded_per_second_and_say_what_was_held_back() {
    let mut t = tracker();
    t.handle_connect(0, connect_info("hammer")).unwrap();
    let limit = u32::from(crate::tracker::DEFAULT_CLIENT_RATE_LIMIT);
    let second = 1_700_000_000_000u64;
    let mut events = 0;
    let mut held = 0;
    for i in 0..100 {
        match t.handle_denied(second + i, Action::Publish, "SYSTEM/message") {
            Reported::Event(_) => events += 1,
            Reported::Suppressed => held += 1,
            Reported::Nothing => panic!("denied is on"),
        }
    }
    assert_eq!((events, held), (limit, 100 - limit));
    // The next second: let through again, and the first says how many were held back.
    let (_, v) = json_of(reported(t.handle_denied(
        second + 1_000,
        Action::Subscribe,
        "secret/#",
    )));
    assert_eq!(
        v,
        json!({"client_id":"hammer","topic":"secret/#","action":"subscribe",
            "suppressed":90,"ts":second + 1_000})
    );
    let (_, v) = json_of(reported(t.handle_denied(
        second + 1_001,
        Action::Publish,
        "a",
    )));
    assert!(v.get("suppressed").is_none(), "counted once");
    // 0: no bound.
    let mut free = Tracker::new(
        TrackerConfig {
            client_rate_limit: 0,
            ..TrackerConfig::default()
        },
        FixedAckStore::<8, 256>::new(),
    );
    for i in 0..1_000 {
        assert!(matches!(
            free.handle_denied(i, Action::Publish, "a"),
            Reported::Event(_)
        ));
    }
}

#[test]
fn dropped_events_are_bounded_and_never_about_the_events_themselves() {
    let mut t = tracker();
    t.handle_connect(0, connect_info("slow")).unwrap();
    let overrun = DropInfo {
        reason: DropReason::RouterLogOverrun,
        topic: None,
        filter: Some("devices/#"),
        count: 4_000,
    };
    let (kind, v) = json_of(reported(t.handle_dropped(7, overrun)));
    assert_eq!(kind, EventKind::Dropped);
    assert_eq!(
        v,
        json!({"client_id":"slow","filter":"devices/#","reason":"router_log_overrun",
            "count":4_000,"ts":7})
    );
    // About the events: a system topic, or a filter that receives events.
    for info in [
        DropInfo {
            reason: DropReason::TooLarge,
            topic: Some("SYSTEM/message/dropped"),
            filter: None,
            count: 1,
        },
        DropInfo {
            filter: Some("SYSTEM/#"),
            ..overrun
        },
        DropInfo {
            filter: Some("$share/g/SYSTEM/+/refused"),
            ..overrun
        },
    ] {
        assert_eq!(t.handle_dropped(8, info), Reported::Nothing, "{info:?}");
    }
    // `#` receives no events (by default): its drops are reported.
    assert!(matches!(
        t.handle_dropped(
            9,
            DropInfo {
                filter: Some("#"),
                ..overrun
            }
        ),
        Reported::Event(_)
    ));
    let expired = DropInfo {
        reason: DropReason::Expired,
        topic: Some("a/b"),
        filter: None,
        count: 1,
    };
    let mut results = Vec::new();
    for i in 0..20 {
        results.push(matches!(
            t.handle_dropped(10 + i, expired),
            Reported::Event(_)
        ));
    }
    // Two went in this second already: eight more, then held back.
    assert_eq!(results.iter().filter(|e| **e).count(), 8);
    // Off: nothing, and nothing counted.
    let mut off = Tracker::new(
        TrackerConfig {
            enabled: EventKinds::ALL.without(EventKind::Dropped),
            ..TrackerConfig::default()
        },
        FixedAckStore::<8, 256>::new(),
    );
    assert_eq!(off.handle_dropped(1, expired), Reported::Nothing);
}
