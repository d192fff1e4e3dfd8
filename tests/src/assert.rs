//! Assertions on the JSON of activity events.

use std::net::SocketAddr;

use serde_json::Value;

use crate::{Ev, now_ms};

/// Asserts that `ev` has exactly the fields of `expected` (an object) plus the names in
/// `unchecked`, and that every field of `expected` has exactly that value (type included:
/// `1` is not `"1"`).
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
    for key in actual.keys() {
        assert!(
            expected.contains_key(key) || unchecked.contains(&key.as_str()),
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
