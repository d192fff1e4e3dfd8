//! MQTT 5 topic aliases through a relay: the client's on its publishes and the upstream's on
//! its deliveries are followed, so that `message` and `msgack` name the real topic.

use super::*;

type AliasRelay =
    Relay<FixedAckStore<4, 128>, FixedSessionStore<4, 32, 2, 64, 4>, FixedRequestStore<3, 128>>;

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u16::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first, u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(body);
    out
}

/// An MQTT 5 PUBLISH (QoS 0, or QoS 1 with `pkid`) with a topic alias.
fn publish5(topic: &str, alias: u16, pkid: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, topic);
    if let Some(pkid) = pkid {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(&[3, 0x23]);
    body.extend_from_slice(&alias.to_be_bytes());
    body.extend_from_slice(payload);
    frame(if pkid.is_some() { 0x32 } else { 0x30 }, &body)
}

#[test]
fn aliased_publishes_and_deliveries_are_reported_with_their_topic() {
    let conn = Connection::new(
        ServerConfig::default(),
        FixedAckStore::new(),
        FixedSessionStore::new(),
        Peer {
            addr: None,
            is_loopback: false,
            transport: Transport::Tcp,
        },
        T0,
        1,
    );
    let mut relay: AliasRelay = Relay::new(conn, FixedRequestStore::new(), 5_000);
    let mut out = Rec::default();
    let mut tx = [0u8; 512];
    let mut body = Vec::new();
    push_str(&mut body, "MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 30, 0]);
    push_str(&mut body, "aliaser");
    let connect = frame(0x10, &body);
    relay.handle_input(T0, &connect, &mut tx, &mut out);
    relay.handle_connect_answer(
        T0,
        ConnectAnswer::accept(false),
        &connect,
        &mut tx,
        &mut out,
    );
    // The upstream's CONNACK (MQTT 5, no properties).
    let relayed = relay.handle_upstream_input(T0, &[0x20, 3, 0, 0, 0], &mut tx, &mut out, |_| None);
    assert_eq!(relayed.forward, 5);
    assert!(relay.is_connected());
    out = Rec::default();

    // The client sets alias 1 and uses it: both go upstream unchanged, both are reported on
    // "a/b".
    let set = publish5("a/b", 1, None, b"one");
    let used = publish5("", 1, None, b"two");
    relay.handle_input(T0, &set, &mut tx, &mut out);
    relay.handle_input(T0, &used, &mut tx, &mut out);
    assert_eq!(out.take_upstream(), [set, used].concat());
    assert_eq!(out.published, ["a/b", "a/b"]);
    let topics: Vec<_> = out.events.iter().map(|(_, v)| v["topic"].clone()).collect();
    assert_eq!(topics, [json!("a/b"), json!("a/b")]);
    // A system topic behind an alias is still refused.
    relay.handle_input(
        T0,
        &publish5("SYSTEM/message", 2, None, b"x"),
        &mut tx,
        &mut out,
    );
    relay.handle_input(T0, &publish5("", 2, None, b"x"), &mut tx, &mut out);
    assert!(out.take_upstream().is_empty());
    assert_eq!(out.counts, [Counter::PublishDenied, Counter::PublishDenied]);

    // The upstream's deliveries with its own alias 1 for "cmd/x": the second, topic-less one
    // is remembered for `msgack` under its topic.
    let first = publish5("cmd/x", 1, Some(7), b"x");
    let second = publish5("", 1, Some(8), ENVELOPE);
    relay.handle_upstream_input(T0, &first, &mut tx, &mut out, |_| None);
    relay.handle_upstream_input(T0, &second, &mut tx, &mut out, |_| {
        Some(heapless::String::try_from("pub-1").unwrap())
    });
    out.events.clear();
    // PUBACK (MQTT 5 short form) for the envelope delivery.
    relay.handle_input(T0, &[0x40, 2, 0, 8], &mut tx, &mut out);
    let (kind, msgack) = out.events.first().expect("a msgack");
    assert_eq!(*kind, EventKind::MsgAck);
    assert_eq!(msgack["topic"], "cmd/x");

    // An alias past the engine's own maximum (the store keeps 4): closed, 0x94.
    let n = relay.handle_input(T0, &publish5("z", 5, None, b""), &mut tx, &mut out);
    // DISCONNECT 0x94 with its reason string.
    assert_eq!(&tx[..3], [0xE0, 24, 0x94]);
    assert!(tx[..n.written].ends_with(b"topic alias invalid"));
}
