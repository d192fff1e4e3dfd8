//! The events of refusals, denials and drops: `refused`, `denied` (bounded per connection) and
//! `dropped` ([`Connection::handle_dropped`]).

use super::*;
use crate::event::DropReason;
use crate::tracker::DropInfo;

#[test]
fn a_client_hammering_denied_publishes_gets_a_bounded_number_of_events() {
    let mut client = Client::connected(REMOTE, &connect("hammer"));
    client.out.deny = vec!["forbidden"];
    let mut flood = Vec::new();
    for _ in 0..500 {
        flood.extend_from_slice(&publish("forbidden", QoS::AtMostOnce, None, b"x"));
    }
    client.send(&flood);
    let limit = usize::from(crate::tracker::DEFAULT_CLIENT_RATE_LIMIT);
    assert_eq!(client.out.kinds(), vec![EventKind::Denied; limit]);
    let count = |counter: Counter| client.out.counts.iter().filter(|c| **c == counter).count();
    // Every publish is counted; what the bound held back is counted too.
    assert_eq!(count(Counter::PublishNotAllowed), 500);
    assert_eq!(
        count(Counter::EventSuppressed(EventKind::Denied)),
        500 - limit
    );
    assert!(
        client.conn.is_connected(),
        "a denied publish keeps the client"
    );
    // A second later the next one goes, saying how many were held back.
    client.now += 1_000;
    client.out.events.clear();
    client.send(&publish("forbidden", QoS::AtMostOnce, None, b"x"));
    assert_eq!(
        client.out.events,
        [(
            EventKind::Denied,
            json!({"client_id":"hammer","topic":"forbidden","action":"publish",
                "suppressed":500 - limit})
        )]
    );
}

#[test]
fn a_will_the_rules_refuse_is_reported_denied() {
    let mut c = connect("w");
    c.will = Some(crate::codec::LastWill {
        properties: crate::codec::Properties::EMPTY,
        topic: "SYSTEM/presence/connected",
        message: b"x",
        qos: QoS::AtMostOnce,
        retain: false,
    });
    // A will on a system topic refuses the CONNECT itself.
    let mut client = Client::new(REMOTE);
    assert_eq!(client.send(&encoded(c)), [0x20, 2, 0, 5]);
    assert_eq!(client.out.kinds(), [EventKind::Refused]);
    // A will the topic rules refuse is dropped at the end, and reported.
    c.will = Some(crate::codec::LastWill {
        topic: "wills/w",
        ..c.will.unwrap()
    });
    let mut client = Client::connected(REMOTE, &c);
    client.out.deny = vec!["wills/w"];
    client.close(CloseCause::TransportClosed);
    assert_eq!(
        client.out.kinds(),
        [EventKind::Denied, EventKind::Disconnected]
    );
    assert_eq!(client.out.events[0].1["topic"], "wills/w");
}

#[test]
fn a_refusal_is_reported_once_with_the_mqtt_5_code() {
    let mut c = connect("v5-client");
    c.protocol_level = 5;
    c.username = Some("eve");
    let mut client = Client::new(REMOTE);
    client.send(&encoded(c));
    let answer = client.answer(ConnectAnswer::Refuse(ReasonCode::ServerBusy));
    assert_eq!(&answer[..4], [0x20, answer[1], 0, 0x89]);
    assert_eq!(
        client.out.events,
        [(
            EventKind::Refused,
            json!({"client_id":"v5-client","username":"eve","peer":"192.0.2.7:50312",
                "reason_code":0x89,"reason":"server_busy"})
        )]
    );
}

#[test]
fn drops_the_driver_reports_give_bounded_dropped_events() {
    let mut client = Client::connected(REMOTE, &connect("slow"));
    let overrun = DropInfo {
        reason: DropReason::RouterLogOverrun,
        topic: None,
        filter: Some("devices/#"),
        count: 12_345,
    };
    client
        .conn
        .handle_dropped(client.now, overrun, &mut client.out);
    assert_eq!(
        client.out.events,
        [(
            EventKind::Dropped,
            json!({"client_id":"slow","filter":"devices/#","reason":"router_log_overrun",
                "count":12_345})
        )]
    );
    // Never about the events themselves.
    let events = DropInfo {
        filter: Some("SYSTEM/#"),
        ..overrun
    };
    client
        .conn
        .handle_dropped(client.now, events, &mut client.out);
    assert_eq!(client.out.events.len(), 1);
    for _ in 0..100 {
        client
            .conn
            .handle_dropped(client.now, overrun, &mut client.out);
    }
    let limit = usize::from(crate::tracker::DEFAULT_CLIENT_RATE_LIMIT);
    assert_eq!(client.out.events.len(), limit);
    assert_eq!(
        client
            .out
            .counts
            .iter()
            .filter(|c| **c == Counter::EventSuppressed(EventKind::Dropped))
            .count(),
        101 - limit
    );
}

#[test]
fn a_delivery_error_names_its_drop_reason() {
    assert_eq!(
        DeliveryError::Dropped(Counter::DeliveryTooLarge).drop_reason(),
        Some(DropReason::TooLarge)
    );
    assert_eq!(
        DeliveryError::Dropped(Counter::DeliveryExpired).drop_reason(),
        Some(DropReason::Expired)
    );
    for other in [
        DeliveryError::Dropped(Counter::DeliveryNotWanted),
        DeliveryError::Dropped(Counter::EventNotWanted),
        DeliveryError::NotConnected,
        DeliveryError::ReceiveMaximum,
    ] {
        assert_eq!(other.drop_reason(), None, "{other:?}");
    }
}

#[test]
fn the_engines_own_copy_that_finds_no_room_is_dropped_queue_full() {
    let mut client = Client::connected(LOCAL, &connect("self"));
    client.send(&subscribe(1, &[("loop/#", QoS::AtMostOnce)]));
    client.out.except_sender = true;
    client.out.events.clear();
    client.out.counts.clear();
    // The copy for the sender does not fit the 1,024 bytes of `tx` the test offers.
    let payload: &'static [u8] = &[b'x'; 2_000];
    client.send(&publish("loop/a", QoS::AtMostOnce, None, payload));
    assert!(client.out.counts.contains(&Counter::DeliveryDropped));
    let dropped: Vec<_> = client
        .out
        .events
        .iter()
        .filter(|(kind, _)| *kind == EventKind::Dropped)
        .map(|(_, json)| json.clone())
        .collect();
    assert_eq!(
        dropped,
        [json!({"client_id":"self","topic":"loop/a","reason":"queue_full","count":1})]
    );
}
