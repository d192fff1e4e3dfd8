//! End-to-end: `events.retained_presence` (docs/presence.md): a subscriber that comes later
//! learns each client id's current state from the retained
//! `SYSTEM/presence/state/<client_id>`, in the broker and in a tap in front of mosquitto, also
//! after a takeover.

use std::net::SocketAddr;

use rumqttc::{Packet, QoS};
use serde_json::Value;
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::{Client, Monitor, start_broker, test_config};

/// Subscribes a new client to `client_id`'s state and returns the retained state it gets.
async fn state_of(addr: SocketAddr, reader: &str, client_id: &str) -> Value {
    let topic = format!("SYSTEM/presence/state/{client_id}");
    let mut late = Client::connect(addr, reader).await;
    late.subscribe(&topic, QoS::AtLeastOnce).await;
    let packet = late
        .wait_packet(
            "the retained state",
            |p| matches!(p, Packet::Publish(publish) if publish.topic == topic),
        )
        .await;
    let Packet::Publish(publish) = packet else {
        unreachable!("matched a PUBLISH")
    };
    assert!(publish.retain, "a retained message");
    late.disconnect().await;
    serde_json::from_slice(&publish.payload).expect("JSON")
}

/// Waits until the retained state of `client_id` says `state` with `session_seq`.
async fn wait_state(addr: SocketAddr, client_id: &str, state: &str, session_seq: u64) -> Value {
    for attempt in 0.. {
        let value = state_of(addr, &format!("late-{attempt}"), client_id).await;
        if value["state"] == state && value["session_seq"] == session_seq {
            return value;
        }
        assert!(
            attempt < 100,
            "state stays {value}, want {state} {session_seq}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    unreachable!()
}

/// Connect, a takeover, a disconnect: the late subscriber always sees the newest session.
async fn presence_follows_the_sessions(
    clients: SocketAddr,
    states: SocketAddr,
    monitor: &mut Monitor,
) {
    let first = Client::connect(clients, "dev-1").await;
    let connected = monitor.next_event("connected", "dev-1").await;
    let s1 = connected.json["session_seq"].as_u64().expect("session_seq");
    let online = wait_state(states, "dev-1", "online", s1).await;
    // The event's own fields follow the state.
    for field in [
        "client_id",
        "proto_ver",
        "keepalive",
        "clean_session",
        "ts",
        "event_seq",
    ] {
        assert_eq!(online[field], connected.json[field], "{field} of {online}");
    }

    // Taken over: the old session's offline never stays over the new online.
    let second = Client::connect(clients, "dev-1").await;
    let s2 = monitor.next_event("connected", "dev-1").await.json["session_seq"]
        .as_u64()
        .expect("session_seq");
    assert!(s2 > s1);
    let online = wait_state(states, "dev-1", "online", s2).await;
    assert_eq!(online["state"], "online");
    drop(first);

    second.disconnect().await;
    let offline = wait_state(states, "dev-1", "offline", s2).await;
    assert_eq!(offline["reason"], "normal");
}

#[tokio::test]
async fn broker_keeps_the_state_of_every_client_id_retained() {
    let mut config = test_config();
    config.events.retained_presence = true;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    // Nobody reads the presence events: the states are kept all the same.
    let mut monitor = Monitor::start(addr).await;
    presence_follows_the_sessions(addr, addr, &mut monitor).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn broker_without_the_option_keeps_no_state() {
    let broker = start_broker(test_config()).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let client = Client::connect(addr, "dev-2").await;
    monitor.next_event("connected", "dev-2").await;
    let mut late = Client::connect(addr, "late").await;
    late.subscribe("SYSTEM/presence/state/#", QoS::AtLeastOnce)
        .await;
    assert!(
        late.try_wait_packet(tests::QUIET, &|p| matches!(p, Packet::Publish(_)))
            .await
            .is_none(),
        "no retained state without events.retained_presence"
    );
    client.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn tap_keeps_the_state_retained_upstream() {
    let mosquitto = Mosquitto::start().await;
    let mut config = tap_config(mosquitto.addr);
    config.events.retained_presence = true;
    let tap = start_tap(config).await;
    wait_publisher(&tap).await;
    let mut monitor = Monitor::start(mosquitto.addr).await;
    presence_follows_the_sessions(tap.local_addr(), mosquitto.addr, &mut monitor).await;
}
