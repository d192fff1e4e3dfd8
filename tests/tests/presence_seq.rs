//! End-to-end: `session_seq` and `event_seq` (docs/presence.md) with rumqttc clients, in the
//! broker (a takeover, a restart) and in two taps in front of one mosquitto (a client that
//! moves from one tap to the other).

use rumqttc::QoS;
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::{Client, Ev, Monitor, start_broker, test_config};

fn session_seq(ev: &Ev) -> u64 {
    ev.json["session_seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no session_seq in {}", ev.json))
}

fn event_seq(ev: &Ev) -> u64 {
    ev.json["event_seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no event_seq in {}", ev.json))
}

/// Every event the monitor saw carries an `event_seq` one above the one before (no event was
/// lost), in the order they arrived.
fn assert_consecutive(monitor: &Monitor) {
    let seqs: Vec<u64> = monitor.history().iter().map(event_seq).collect();
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "event_seq not consecutive: {}",
            monitor.describe()
        );
    }
    assert!(seqs.len() >= 4, "{}", monitor.describe());
}

#[tokio::test]
async fn broker_session_seq_pairs_grow_across_a_takeover_and_a_restart() {
    let broker = start_broker(test_config()).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;

    // One connection: its connected and its disconnected carry the same number.
    let first = Client::connect(addr, "dev").await;
    let connected = monitor.next_event("connected", "dev").await;
    let s1 = session_seq(&connected);
    assert!(s1 < 1 << 53, "exact as a JSON double");
    assert!(
        (s1 >> 11).abs_diff(connected.ts()) < 1_000,
        "the clock's ms"
    );
    first.disconnect().await;
    let disconnected = monitor.next_event("disconnected", "dev").await;
    assert_eq!(session_seq(&disconnected), s1);

    // A takeover: the old session ends with its own number, the new one gets a larger one.
    let _old = Client::connect(addr, "dev").await;
    let s2 = session_seq(&monitor.next_event("connected", "dev").await);
    let new = Client::connect(addr, "dev").await;
    let taken = monitor.next_event("disconnected", "dev").await;
    assert_eq!(taken.json["reason"], "takenover");
    assert_eq!(session_seq(&taken), s2);
    let s3 = session_seq(&monitor.next_event("connected", "dev").await);
    assert!(s1 < s2 && s2 < s3, "{s1} {s2} {s3}");
    // Events of other kinds carry no session_seq.
    let mut subscriber = Client::connect(addr, "sub").await;
    subscriber.subscribe("a/b", QoS::AtMostOnce).await;
    let subscribed = monitor.next_event("subscribed", "sub").await;
    assert!(subscribed.json.get("session_seq").is_none());
    new.disconnect().await;
    assert_eq!(
        session_seq(&monitor.next_event("disconnected", "dev").await),
        s3
    );
    assert_consecutive(&monitor);
    drop(monitor);
    broker.shutdown().await;

    // A restart (no state kept): the next connection's number is larger still.
    let broker = start_broker(test_config()).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let again = Client::connect(addr, "dev").await;
    let s4 = session_seq(&monitor.next_event("connected", "dev").await);
    assert!(s4 > s3, "after a restart: {s3} then {s4}");
    again.disconnect().await;
    assert_eq!(
        session_seq(&monitor.next_event("disconnected", "dev").await),
        s4
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn two_taps_hand_out_apart_numbers_and_a_move_gets_a_larger_one() {
    let mosquitto = Mosquitto::start().await;
    let mut config_a = tap_config(mosquitto.addr);
    config_a.events.node = Some("tap-a".to_owned());
    config_a.events.node_index = Some(1);
    let mut config_b = tap_config(mosquitto.addr);
    config_b.events.node = Some("tap-b".to_owned());
    config_b.events.node_index = Some(2);
    let tap_a = start_tap(config_a).await;
    let tap_b = start_tap(config_b).await;
    wait_publisher(&tap_a).await;
    wait_publisher(&tap_b).await;
    let mut monitor = Monitor::start(mosquitto.addr).await;

    let on_a = Client::connect(tap_a.local_addr(), "mover").await;
    let connected_a = monitor.next_event("connected", "mover").await;
    assert_eq!(connected_a.json["node"], "tap-a");
    let sa = session_seq(&connected_a);
    assert_eq!(sa & 63, 1, "tap-a's node bits");
    on_a.disconnect().await;
    let gone = monitor.next_event("disconnected", "mover").await;
    assert_eq!(session_seq(&gone), sa);

    // The client moves to the other tap.
    let on_b = Client::connect(tap_b.local_addr(), "mover").await;
    let connected_b = monitor.next_event("connected", "mover").await;
    assert_eq!(connected_b.json["node"], "tap-b");
    let sb = session_seq(&connected_b);
    assert_eq!(sb & 63, 2, "tap-b's node bits");
    assert!(sb > sa, "a later connect on another tap: {sa} then {sb}");
    on_b.disconnect().await;
    assert_eq!(
        session_seq(&monitor.next_event("disconnected", "mover").await),
        sb
    );

    // Each tap numbers its own events: consecutive per node.
    for node in ["tap-a", "tap-b"] {
        let seqs: Vec<u64> = monitor
            .history()
            .iter()
            .filter(|ev| ev.json["node"] == node)
            .map(event_seq)
            .collect();
        assert!(seqs.len() >= 2, "{node}: {}", monitor.describe());
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "{node}: {}", monitor.describe());
        }
    }
}
