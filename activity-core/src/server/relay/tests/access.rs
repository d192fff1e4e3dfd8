//! Relay mode: the topic access rules ([`Output::is_allowed`]) and activity events kept out of
//! filters whose first level is a wildcard.

use super::*;

#[test]
fn a_publish_the_rules_refuse_is_answered_here_and_not_forwarded() {
    let mut client = Client::connected("sensor-7");
    client.out.deny = vec!["devices/8"];
    assert_eq!(
        client.send(&publish("devices/8", QoS::AtLeastOnce, Some(4), b"x")),
        [0x40, 2, 0, 4]
    );
    assert!(client.out.upstream.is_empty());
    assert!(client.out.published.is_empty());
    assert_eq!(client.out.kinds(), [EventKind::Denied]);
    assert_eq!(client.out.events[0].1["topic"], "devices/8");
    assert_eq!(client.out.counts, [Counter::PublishNotAllowed]);
    // QoS 2: PUBREC here, and PUBCOMP here at its PUBREL.
    assert_eq!(
        client.send(&publish("devices/8", QoS::ExactlyOnce, Some(5), b"x")),
        [0x50, 2, 0, 5]
    );
    assert_eq!(client.send(&[0x62, 2, 0, 5]), [0x70, 2, 0, 5]);
    assert!(client.out.upstream.is_empty());
    assert!(client.relay.is_connected());
    let allowed = publish("devices/7", QoS::AtMostOnce, None, b"y");
    client.send(&allowed);
    assert_eq!(client.out.take_upstream(), allowed);
}

#[test]
fn a_subscribe_with_a_filter_the_rules_refuse_is_answered_here() {
    let mut client = Client::connected("c");
    client.out.deny = vec!["b/#"];
    let bytes = subscribe(3, &[("a/#", QoS::AtMostOnce), ("b/#", QoS::AtMostOnce)]);
    assert_eq!(client.send(&bytes), [0x90, 4, 0, 3, 0x80, 0x80]);
    assert!(client.out.upstream.is_empty());
    assert_eq!(
        client.out.counts,
        [
            Counter::SubscriptionNotAllowed,
            Counter::SubscriptionRefused
        ]
    );
    let alone = subscribe(4, &[("a/#", QoS::AtMostOnce)]);
    assert_eq!(client.send(&alone), NOTHING);
    assert_eq!(client.out.take_upstream(), alone);
}

#[test]
fn mqtt_5_the_refused_filter_gets_0x87() {
    let mut client = Client::new(ServerConfig::default());
    client.send(&encoded(Connect {
        protocol_level: 5,
        ..connect("c5")
    }));
    client.answer(ConnectAnswer::accept(false));
    client.upstream(&[0x20, 3, 0, 0, 0]);
    assert!(client.relay.is_connected());
    client.out.take_upstream();
    client.out.deny = vec!["b/#"];
    // SUBSCRIBE a/# and b/#, QoS 0, no properties.
    let bytes = [
        0x82, 15, 0, 3, 0, 0, 3, b'a', b'/', b'#', 0, 0, 3, b'b', b'/', b'#', 0,
    ];
    assert_eq!(client.send(&bytes), [0x90, 5, 0, 3, 0, 0x80, 0x87]);
}

#[test]
fn a_qos_0_event_for_a_wildcard_filter_is_not_relayed() {
    let mut client = Client::new(ServerConfig::default());
    client.out.listed = true;
    client.send(&encoded(connect("reader")));
    client.answer(ConnectAnswer::accept(false));
    client.upstream(&CONNACK_OK);
    client.out = Rec::default();
    let bytes = subscribe(5, &[("#", QoS::AtMostOnce)]);
    client.send(&bytes);
    client.upstream(&suback(5, &[SubAckCode::Success(QoS::AtMostOnce)]));
    let event = publish("SYSTEM/message", QoS::AtMostOnce, None, b"{}");
    let plain = publish("devices/7", QoS::AtMostOnce, None, b"x");
    assert_eq!(client.upstream(&event), (Vec::new(), 0));
    assert_eq!(client.out.counts, [Counter::EventNotWanted]);
    assert_eq!(client.upstream(&plain), (plain.clone(), plain.len()));
    // Behind an ordinary message: the engine stops before it, then drops it alone.
    let mut both = plain.clone();
    both.extend_from_slice(&event);
    both.extend_from_slice(&plain);
    let mut tx = [0u8; 1024];
    let lookup = |_: &Envelope| None;
    let first = client
        .relay
        .handle_upstream_input(T0, &both, &mut tx, &mut client.out, lookup);
    assert_eq!((first.consumed, first.forward), (plain.len(), plain.len()));
    let rest = &both[first.consumed..];
    let second = client
        .relay
        .handle_upstream_input(T0, rest, &mut tx, &mut client.out, lookup);
    assert_eq!((second.consumed, second.forward), (event.len(), 0));
    // A QoS 1 event is relayed all the same: the upstream awaits its acknowledgement.
    let acked = publish("SYSTEM/message", QoS::AtLeastOnce, Some(9), b"{}");
    assert_eq!(client.upstream(&acked).1, acked.len());
    // A subscription that names the prefix receives them.
    let named = subscribe(6, &[("SYSTEM/#", QoS::AtMostOnce)]);
    client.send(&named);
    client.upstream(&suback(6, &[SubAckCode::Success(QoS::AtMostOnce)]));
    assert_eq!(client.upstream(&event).1, event.len());
}
