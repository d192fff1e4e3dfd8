//! Assertions on the JSON of activity events.

use std::net::SocketAddr;

use serde_json::Value;

use crate::{Ev, now_ms};

/// The sequence numbers (docs/presence.md) that [`assert_fields`] accepts in every event
/// without being told: `event_seq` in any event, `session_seq` in `connected` and
/// `disconnected`. It checks that each is a JSON integer (a `u64`) where it is.
pub const SEQ_FIELDS: [&str; 2] = ["event_seq", "session_seq"];

/// Asserts that `ev` has exactly the fields of `expected` (an object) plus the names in
/// `unchecked` (and the sequence numbers, `SEQ_FIELDS`), and that every field of `expected`
/// has exactly that value (type included: `1` is not `"1"`).
pub fn assert_fields(ev: &Ev, expected: Value, unchecked: &[&str]) {
    let expected = expected.as_object().expect("expected fields are an object");
    let actual = ev
        .json
        .as_object()
        .unwrap_or_else(|| panic!("event is not a JSON object: {}", ev.json));
    for (key, want) in expected {
        match actual.get(key) {
            Some(got) => assert_eq!(got, want, "field {key:?} of {} event {}", ev.topic, ev.json),
            None => panic!("field {key:?} missing from {} event {}", ev.topic, ev.json),
        }
    }
    for key in unchecked {
        assert!(
            actual.contains_key(*key),
            "field {key:?} missing from {} event {}",
            ev.topic,
            ev.json
        );
    }
    for key in SEQ_FIELDS {
        if let Some(value) = actual.get(key) {
            assert!(
                value.is_u64(),
                "{key} is not an unsigned integer in {} event {}",
                ev.topic,
                ev.json
            );
        }
    }
    for key in actual.keys() {
        assert!(
            expected.contains_key(key)
                || unchecked.contains(&key.as_str())
                || SEQ_FIELDS.contains(&key.as_str()),
            "unexpected field {key:?} in {} event {}",
            ev.topic,
            ev.json
        );
    }
}

/// Asserts that `ev`'s `ts` is a number of milliseconds within a minute of now.
pub fn assert_ts_recent(ev: &Ev) {
    let ts = ev.ts();
    let now = now_ms();
    assert!(
        ts <= now + 1_000 && ts + 60_000 >= now,
        "ts {ts} is not close to now ({now}) in {}",
        ev.json
    );
}

/// The `peer` field of `ev` as an address with a non-zero port; panics otherwise.
pub fn peer_addr(ev: &Ev) -> SocketAddr {
    let peer = ev.json["peer"]
        .as_str()
        .unwrap_or_else(|| panic!("peer is not a string in {}", ev.json));
    let addr: SocketAddr = peer
        .parse()
        .unwrap_or_else(|e| panic!("peer {peer:?} is not an address ({e})"));
    assert_ne!(addr.port(), 0, "peer {peer} has port 0");
    addr
}

/// Asserts that `peer` is `127.0.0.1:PORT` with a non-zero port.
pub fn assert_loopback_peer(ev: &Ev) {
    let addr = peer_addr(ev);
    assert!(addr.ip().is_loopback(), "peer {addr} is not loopback");
}

/// `expected`, the fields of a `disconnected` event, with the `reason_code` that goes with its
/// `reason` (MQTT 5 reason codes, for MQTT 3.1.1 clients too): 0 `normal`, 4
/// `disconnect_with_will`, 0x8D `keepalive_timeout`, 0x8E `takenover`, 0x8B
/// `server_shutdown`, 0x95 `packet_too_large`, 0x88 `upstream_closed`, none for `tcp_closed`;
/// `protocol_error` and `client_error` have several codes, so `ev`'s own is taken when it is
/// one of them (0x81, 0x82, 0x93, 0x94, 0x97; any error for `client_error`).
pub fn with_reason_code(mut expected: Value, ev: &Ev) -> Value {
    let reason = expected["reason"].as_str().unwrap_or_default().to_owned();
    let actual = ev.json["reason_code"].as_u64();
    let code = match reason.as_str() {
        "normal" => Some(0),
        "disconnect_with_will" => Some(4),
        "keepalive_timeout" => Some(0x8D),
        "takenover" => Some(0x8E),
        "server_shutdown" => Some(0x8B),
        "packet_too_large" => Some(0x95),
        "upstream_closed" => Some(0x88),
        "protocol_error" => actual.filter(|c| [0x81, 0x82, 0x93, 0x94, 0x97, 0xA1].contains(c)),
        "client_error" => actual.filter(|c| *c >= 0x80),
        _ => None,
    };
    if let (Some(code), Some(fields)) = (code, expected.as_object_mut()) {
        fields.insert("reason_code".to_owned(), code.into());
    }
    expected
}
