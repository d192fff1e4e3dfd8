//! Topic access rules ([`Output::is_allowed`]) and the rule that keeps activity events out of
//! filters whose first level is a wildcard.

use super::*;

/// A raw MQTT 5 SUBSCRIBE of `filters` at QoS 0, without properties.
fn subscribe5(pkid: u8, filters: &[&str]) -> Vec<u8> {
    let mut body = vec![0, pkid, 0];
    for filter in filters {
        body.extend_from_slice(&[0, u8::try_from(filter.len()).unwrap()]);
        body.extend_from_slice(filter.as_bytes());
        body.push(0);
    }
    let mut packet = vec![0x82, u8::try_from(body.len()).unwrap()];
    packet.extend_from_slice(&body);
    packet
}

#[test]
fn a_publish_the_rules_refuse_is_dropped_counted_and_the_client_stays() {
    let mut client = Client::connected(REMOTE, &connect("sensor-7"));
    client.out.deny = vec!["devices/8/state"];
    assert_eq!(
        client.send(&publish("devices/8/state", QoS::AtLeastOnce, Some(3), b"x")),
        [0x40, 2, 0, 3],
        "the QoS 1 flow is answered as usual"
    );
    assert!(client.out.routes.is_empty(), "not routed");
    assert_eq!(
        client.out.events,
        [(
            EventKind::Denied,
            json!({"client_id":"sensor-7","topic":"devices/8/state","action":"publish"})
        )],
        "the denied event, no message event"
    );
    assert_eq!(client.out.counts, [Counter::PublishNotAllowed]);
    assert!(client.conn.is_connected());
    client.send(&publish("devices/7/state", QoS::AtMostOnce, None, b"y"));
    assert_eq!(client.out.routes.len(), 1);
    assert_eq!(client.out.kinds(), [EventKind::Denied, EventKind::Message]);
}

#[test]
fn the_system_topic_rule_comes_before_the_rules() {
    let mut client = Client::connected(REMOTE, &connect("sensor-7"));
    client.out.deny = vec!["SYSTEM/message"];
    client.send(&publish("SYSTEM/message", QoS::AtMostOnce, None, b"x"));
    assert_eq!(client.out.counts, [Counter::PublishDenied]);
    client.out.counts.clear();
    client.send(&subscribe(1, &[("SYSTEM/#", QoS::AtMostOnce)]));
    assert_eq!(client.out.counts, [Counter::SubscriptionDenied]);
}

#[test]
fn a_will_the_rules_refuse_is_not_published() {
    let mut c = connect("w");
    c.will = Some(crate::codec::LastWill {
        properties: crate::codec::Properties::EMPTY,
        topic: "wills/w",
        message: b"gone",
        qos: QoS::AtMostOnce,
        retain: false,
    });
    let mut client = Client::connected(REMOTE, &c);
    client.out.deny = vec!["wills/w"];
    client.close(CloseCause::TransportClosed);
    assert!(
        !client
            .out
            .routes
            .iter()
            .any(|r| matches!(r, R::Publish(..))),
        "{:?}",
        client.out.routes
    );
    assert!(client.out.counts.contains(&Counter::PublishNotAllowed));
}

#[test]
fn a_filter_the_rules_refuse_gets_0x80_alone() {
    let mut client = Client::connected(REMOTE, &connect("c"));
    client.out.deny = vec!["b/#"];
    let filters: &[(&str, QoS)] = &[("a/#", QoS::AtLeastOnce), ("b/#", QoS::AtLeastOnce)];
    assert_eq!(
        client.send(&subscribe(1, filters)),
        suback(
            1,
            &[SubAckCode::Success(QoS::AtLeastOnce), SubAckCode::Failure]
        )
    );
    assert_eq!(
        client.out.routes,
        [R::Subscribe("a/#".into(), QoS::AtLeastOnce)]
    );
    assert_eq!(client.out.counts, [Counter::SubscriptionNotAllowed]);
    assert_eq!(
        client.out.kinds(),
        [EventKind::Denied, EventKind::Subscribed]
    );
    assert_eq!(
        client.out.events[0].1,
        json!({"client_id":"c","topic":"b/#","action":"subscribe"})
    );
}

#[test]
fn mqtt_5_a_filter_the_rules_refuse_gets_0x87() {
    let mut c = connect("c5");
    c.protocol_level = 5;
    let mut client = Client::new(REMOTE);
    client.send(&encoded(c));
    client.answer(ConnectAnswer::accept(false));
    client.out.deny = vec!["b/#"];
    assert_eq!(
        client.send(&subscribe5(1, &["a/#", "b/#"])),
        [0x90, 5, 0, 1, 0, 0x00, 0x87]
    );
    assert_eq!(client.out.counts, [Counter::SubscriptionNotAllowed]);
}

#[test]
fn a_filter_past_the_routers_memory_bound_gets_0x80_and_is_not_held() {
    let mut client = Client::new(REMOTE);
    client.send(&encoded(connect("c")));
    client.answer(ConnectAnswer::accept(false));
    client.out.full = vec!["b/#"];
    assert_eq!(
        client.send(&subscribe(
            1,
            &[("a/#", QoS::AtMostOnce), ("b/#", QoS::AtMostOnce)]
        )),
        [0x90, 4, 0, 1, 0x00, 0x80]
    );
    assert_eq!(client.out.counts, [Counter::SubscriptionRefused]);
    // Not held: the engine keeps only the filter the router took.
    assert!(client.conn.store().subscription("b/#").is_none());
    assert!(client.conn.store().subscription("a/#").is_some());
}

#[test]
fn mqtt_5_a_filter_past_the_routers_memory_bound_gets_0x97() {
    let mut c = connect("c5");
    c.protocol_level = 5;
    let mut client = Client::new(REMOTE);
    client.send(&encoded(c));
    client.answer(ConnectAnswer::accept(false));
    client.out.full = vec!["b/#"];
    assert_eq!(
        client.send(&subscribe5(1, &["a/#", "b/#"])),
        [0x90, 5, 0, 1, 0, 0x00, 0x97]
    );
    assert_eq!(client.out.counts, [Counter::SubscriptionRefused]);
}

/// The router's deliveries of an event and an ordinary message to a client subscribed to
/// `filters`: which ones reach it.
fn delivered(config: ServerConfig, filters: &'static [(&'static str, QoS)]) -> [bool; 2] {
    let mut client = Client::with_config(config, LOCAL);
    client.send(&encoded(connect("reader")));
    client.answer(ConnectAnswer::accept(false));
    client.send(&subscribe(1, filters));
    let mut tx = [0u8; 256];
    let event = client.conn.handle_delivery(
        Delivery::new("SYSTEM/message", b"{}", QoS::AtMostOnce),
        &mut tx,
        |_| None,
    );
    let plain = client.conn.handle_delivery(
        Delivery::new("devices/7", b"x", QoS::AtMostOnce),
        &mut tx,
        |_| None,
    );
    if let Err(e) = event {
        assert_eq!(e, DeliveryError::Dropped(Counter::EventNotWanted));
    }
    [event.is_ok(), plain.is_ok()]
}

#[test]
fn wildcard_filters_receive_no_events() {
    let config = ServerConfig::default;
    assert_eq!(
        delivered(config(), &[("#", QoS::AtMostOnce)]),
        [false, true]
    );
    assert_eq!(
        delivered(config(), &[("+/+", QoS::AtMostOnce)]),
        [false, true]
    );
    assert_eq!(
        delivered(
            config(),
            &[("#", QoS::AtMostOnce), ("SYSTEM/#", QoS::AtMostOnce)]
        ),
        [true, true]
    );
    // (The engine sends what the router delivers of ordinary topics.)
    assert_eq!(
        delivered(config(), &[("SYSTEM/+", QoS::AtMostOnce)]),
        [true, true]
    );
    let old = ServerConfig {
        tracker: crate::tracker::TrackerConfig {
            topics: crate::system::SystemTopics::default().with_wildcards_receive_events(true),
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    assert_eq!(delivered(old, &[("#", QoS::AtMostOnce)]), [true, true]);
}

#[test]
fn a_delivery_for_a_named_wildcard_filter_is_not_sent() {
    let mut client = Client::connected(LOCAL, &connect("reader"));
    client.send(&subscribe(
        1,
        &[("#", QoS::AtMostOnce), ("SYSTEM/#", QoS::AtMostOnce)],
    ));
    let mut tx = [0u8; 256];
    let by = |filter| Delivery {
        subscription: DeliveredFor::Filter(filter),
        ..Delivery::new("SYSTEM/message", b"{}", QoS::AtMostOnce)
    };
    assert_eq!(
        client.conn.handle_delivery(by("#"), &mut tx, |_| None),
        Err(DeliveryError::Dropped(Counter::EventNotWanted))
    );
    assert!(
        client
            .conn
            .handle_delivery(by("SYSTEM/#"), &mut tx, |_| None)
            .is_ok()
    );
}

#[test]
fn the_engines_own_copy_of_an_event_follows_the_rule() {
    let mut client = Client::connected(LOCAL, &connect("me"));
    client.out.except_sender = true;
    client.send(&subscribe(1, &[("#", QoS::AtMostOnce)]));
    let answer = client.send(&publish("a", QoS::AtMostOnce, None, b"x"));
    // SUBACK came before; now only the own publish comes back, not its `message` event.
    assert_eq!(answer, publish("a", QoS::AtMostOnce, None, b"x"));
}
