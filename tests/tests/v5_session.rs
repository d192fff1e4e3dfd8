//! End-to-end, MQTT 5 sessions (issue 16): session expiry enforced by the broker's front (rumqttd
//! 0.20 keeps every persistent session forever), the delayed will, Server Keep Alive, Receive
//! Maximum, Maximum Packet Size and reason strings, with raw MQTT 5 sockets where a client tool
//! cannot show it; request/response and user properties passed through the broker and the tap
//! (in front of Debian's mosquitto), with Debian's `mosquitto_pub` / `mosquitto_sub -V mqttv5`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use adapter_tokio::metrics::Metrics;
use tests::raw5::{
    Raw5, Will, connect5, disconnect5, publish5, session_expiry, subscribe5, will_delay,
};
use tests::tap::{Mosquitto, start_default_tap, wait_publisher};
use tests::{
    Monitor, MosquittoSub, WAIT, mosquitto_pub, start_broker, start_default_broker, test_config,
};
use tokio::time::{Instant, sleep};

/// Waits until `condition` holds on the metrics, polling every 20 ms, at most [`WAIT`].
async fn wait_until(metrics: &Metrics, what: &str, condition: impl Fn(&Metrics) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition(metrics) {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_session_is_resumed_within_its_expiry_and_gone_after_it() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let metrics = broker.metrics();

    // A session of 2 s with a QoS 1 subscription; the client goes away.
    let props = session_expiry(2);
    let (mut raw, connack) = Raw5::connect(addr, &connect5("sx", true, 60, &props, None)).await;
    assert!(!connack.session_present());
    raw.send(&subscribe5(1, "sx/t", 1)).await;
    raw.expect(0x90).await;
    drop(raw);
    wait_until(metrics, "the session kept", |m| {
        m.sessions_kept.load(Ordering::Relaxed) == 1
    })
    .await;

    // A message for it while it is away, then a reconnect within the 2 s: the session is
    // there (session present 1) with the message.
    let out = mosquitto_pub(addr, &["-q", "1", "-t", "sx/t", "-m", "queued"]).await;
    assert!(out.status.success(), "{out:?}");
    let (mut raw, connack) = Raw5::connect(addr, &connect5("sx", false, 60, &props, None)).await;
    assert!(connack.session_present(), "resumed within the expiry");
    let publish = raw.expect(0x32).await;
    assert!(publish.body.ends_with(b"queued"), "{publish:?}");
    drop(raw);

    // After the expiry the engine ends it and the router discards it: a fresh session.
    wait_until(metrics, "the session expired", |m| {
        m.sessions_expired.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(metrics.sessions_kept.load(Ordering::Relaxed), 0);
    let (_raw, connack) = Raw5::connect(addr, &connect5("sx", false, 60, &props, None)).await;
    assert!(!connack.session_present(), "a new session after the expiry");
}

#[tokio::test]
async fn clean_start_with_an_expiry_discards_the_old_session_and_keeps_the_new_one() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let props = session_expiry(60);
    let (raw, _) = Raw5::connect(addr, &connect5("cs", true, 60, &props, None)).await;
    drop(raw);
    let (raw, connack) = Raw5::connect(addr, &connect5("cs", true, 60, &props, None)).await;
    assert!(!connack.session_present(), "clean start discards");
    drop(raw);
    // Resumed without a session expiry: the session ends with that connection (whether its
    // end or the next CONNECT's takeover reaches the broker first).
    let (raw, connack) = Raw5::connect(addr, &connect5("cs", false, 60, &[], None)).await;
    assert!(
        connack.session_present(),
        "the clean session was kept for its expiry"
    );
    drop(raw);
    let (_raw, connack) = Raw5::connect(addr, &connect5("cs", false, 60, &[], None)).await;
    assert!(!connack.session_present(), "it ended with the connection");
}

#[tokio::test]
async fn a_disconnect_may_end_the_session_but_not_grow_it_from_0() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    // Expiry 60 s at CONNECT, 0 at DISCONNECT: the session ends with the connection.
    let (mut raw, _) =
        Raw5::connect(addr, &connect5("dx", true, 60, &session_expiry(60), None)).await;
    raw.send(&disconnect5(0, &session_expiry(0))).await;
    raw.until_closed().await;
    let (_raw, connack) =
        Raw5::connect(addr, &connect5("dx", false, 60, &session_expiry(60), None)).await;
    assert!(!connack.session_present(), "DISCONNECT set the expiry to 0");
    // Expiry 0 at CONNECT, 60 at DISCONNECT: protocol error 0x82, with a reason string.
    let (mut raw, _) = Raw5::connect(addr, &connect5("grow", true, 60, &[], None)).await;
    raw.send(&disconnect5(0, &session_expiry(60))).await;
    let packets = raw.until_closed().await;
    let disconnect = packets.last().expect("a DISCONNECT");
    assert_eq!((disconnect.first, disconnect.reason()), (0xE0, 0x82));
    assert_eq!(
        disconnect.reason_string().as_deref(),
        Some("protocol error")
    );
}

#[tokio::test]
async fn the_will_waits_its_delay_unless_the_client_comes_back() {
    let broker = start_default_broker().await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    let mut sub = MosquittoSub::spawn(
        addr,
        &[
            "-i", "will-sub", "-V", "mqttv5", "-t", "will/#", "-F", "%t %p %E",
        ],
    );
    monitor.next_event("subscribed", "will-sub").await;

    // Will delay 1 s, message expiry 60 s, session 10 s: the will comes 1 s after the drop.
    let mut will_props = will_delay(1);
    will_props.extend_from_slice(&[0x02, 0, 0, 0, 60]);
    let will = Will {
        topic: "will/late",
        message: b"bye",
        properties: will_props.clone(),
    };
    let props = session_expiry(10);
    let (raw, _) = Raw5::connect(addr, &connect5("late", true, 60, &props, Some(&will))).await;
    let dropped = Instant::now();
    drop(raw);
    let line = sub.next_line().await;
    let waited = dropped.elapsed();
    assert!(line.starts_with("will/late bye "), "{line}");
    let expiry: u32 = line.rsplit(' ').next().unwrap().parse().expect("%E");
    assert!(
        (58..=60).contains(&expiry),
        "the will's message expiry: {line}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "the will waited {waited:?}, not its 1 s delay"
    );
    assert_eq!(broker.metrics().wills_delayed.load(Ordering::Relaxed), 1);

    // The same client comes back within the delay: no will. A later will of another client
    // (no delay) proves the subscriber would have seen it.
    let will = Will {
        topic: "will/back",
        message: b"never",
        properties: will_delay(2),
    };
    let (raw, _) = Raw5::connect(addr, &connect5("back", true, 60, &props, Some(&will))).await;
    drop(raw);
    let (_raw, connack) = Raw5::connect(addr, &connect5("back", false, 60, &props, None)).await;
    assert!(connack.session_present());
    // The kept session resumed before the CONNACK: its engine (and with it the will) is gone;
    // only `late` is still kept (for its 10 s).
    let metrics = broker.metrics();
    assert_eq!(metrics.sessions_kept.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.wills_delayed.load(Ordering::Relaxed), 1);
    let marker = Will {
        topic: "will/marker",
        message: b"now",
        properties: Vec::new(),
    };
    let (raw, _) = Raw5::connect(addr, &connect5("marker", true, 60, &[], Some(&marker))).await;
    drop(raw);
    assert!(sub.next_line().await.starts_with("will/marker now"));
    sub.kill().await;
}

#[tokio::test]
async fn the_server_keep_alive_is_announced_and_enforced() {
    let mut config = test_config();
    config.server_keep_alive = Some(1);
    let broker = start_broker(config).await;
    let (mut raw, connack) = Raw5::connect(
        broker.local_addr(),
        &connect5("sleepy", true, 600, &[], None),
    )
    .await;
    assert!(connack.has_property(&[0x13, 0, 1]), "{connack:?}");
    let started = Instant::now();
    let packets = raw.until_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(1_400));
    let disconnect = packets.last().expect("a DISCONNECT");
    assert_eq!((disconnect.first, disconnect.reason()), (0xE0, 0x8D));
    assert_eq!(
        disconnect.reason_string().as_deref(),
        Some("keep alive timeout")
    );
}

#[tokio::test]
async fn more_unreleased_qos2_publishes_than_the_receive_maximum_get_0x93() {
    let broker = start_default_broker().await;
    let (mut raw, connack) =
        Raw5::connect(broker.local_addr(), &connect5("eager", true, 60, &[], None)).await;
    // Receive Maximum 1024: the broker's limit of QoS 2 publishes awaiting PUBREL.
    assert!(connack.has_property(&[0x21, 0x04, 0x00]), "{connack:?}");
    let mut burst = Vec::new();
    for pkid in 1..=1025 {
        burst.extend_from_slice(&publish5("rm/t", 2, pkid, b"x"));
    }
    raw.send(&burst).await;
    let packets = raw.until_closed().await;
    let pubrecs = packets.iter().filter(|p| p.first == 0x50).count();
    assert_eq!(pubrecs, 1024);
    let disconnect = packets.last().expect("a DISCONNECT");
    assert_eq!((disconnect.first, disconnect.reason()), (0xE0, 0x93));
    assert_eq!(
        disconnect.reason_string().as_deref(),
        Some("receive maximum exceeded")
    );
}

#[tokio::test]
async fn a_packet_over_the_maximum_packet_size_gets_0x95_unless_no_problems_are_wanted() {
    let mut config = test_config();
    config.max_packet_size = 1024;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let (mut raw, connack) = Raw5::connect(addr, &connect5("big", true, 60, &[], None)).await;
    assert!(connack.has_property(&[0x27, 0, 0, 4, 0]), "{connack:?}");
    raw.send(&publish5("big/t", 0, 0, &[b'x'; 2000])).await;
    let packets = raw.until_closed().await;
    let disconnect = packets.last().expect("a DISCONNECT");
    assert_eq!((disconnect.first, disconnect.reason()), (0xE0, 0x95));
    assert_eq!(
        disconnect.reason_string().as_deref(),
        Some("packet too large")
    );
    // Request Problem Information 0: the code without a reason string.
    let quiet = [0x17, 0];
    let (mut raw, _) = Raw5::connect(addr, &connect5("quiet", true, 60, &quiet, None)).await;
    raw.send(&publish5("big/t", 0, 0, &[b'x'; 2000])).await;
    let packets = raw.until_closed().await;
    let disconnect = packets.last().expect("a DISCONNECT");
    assert_eq!(disconnect.reason(), 0x95);
    assert_eq!(disconnect.reason_string(), None);
}

/// `mosquitto_pub -V mqttv5` with a response topic, correlation data, a content type and a user
/// property reaches `mosquitto_sub -V mqttv5` at `addr` with all four unchanged.
async fn request_response_properties_pass(addr: std::net::SocketAddr, prefix: &str) {
    let topic = format!("{prefix}/req");
    let mut sub = MosquittoSub::spawn(
        addr,
        &[
            "-i",
            &format!("{prefix}-sub"),
            "-V",
            "mqttv5",
            "-t",
            &topic,
            "-F",
            "%t|%R|%D|%C|%P|%p",
        ],
    );
    // Retry until the subscription is in place (its SUBACK is not visible from here).
    let deadline = Instant::now() + WAIT;
    let line = loop {
        let out = mosquitto_pub(
            addr,
            &[
                "-V",
                "mqttv5",
                "-t",
                &topic,
                "-m",
                "ping",
                "-D",
                "publish",
                "response-topic",
                "replies/here",
                "-D",
                "publish",
                "correlation-data",
                "req-42",
                "-D",
                "publish",
                "content-type",
                "text/plain",
                "-D",
                "publish",
                "user-property",
                "trace",
                "abc",
            ],
        )
        .await;
        assert!(out.status.success(), "{out:?}");
        match tokio::time::timeout(Duration::from_millis(300), sub.next_line()).await {
            Ok(line) => break line,
            Err(_) => assert!(Instant::now() < deadline, "no delivery within {WAIT:?}"),
        }
    };
    assert_eq!(
        line,
        format!("{topic}|replies/here|req-42|text/plain|trace:abc|ping")
    );
    sub.kill().await;
}

#[tokio::test]
async fn request_response_and_user_properties_pass_through_the_broker() {
    let broker = start_default_broker().await;
    request_response_properties_pass(broker.local_addr(), "rr-broker").await;
}

#[tokio::test]
async fn request_response_and_user_properties_pass_through_the_tap() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    request_response_properties_pass(tap.local_addr(), "rr-tap").await;
}

#[tokio::test]
async fn through_the_tap_the_upstream_keeps_the_session_and_the_engine_checks_disconnect() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let addr = tap.local_addr();
    let mut monitor = Monitor::start(mosquitto.addr).await;
    let props = session_expiry(30);
    let (raw, connack) = Raw5::connect(addr, &connect5("tx", true, 60, &props, None)).await;
    assert!(!connack.session_present());
    drop(raw);
    monitor.next_event("disconnected", "tx").await;
    let (raw, connack) = Raw5::connect(addr, &connect5("tx", false, 60, &props, None)).await;
    assert!(connack.session_present(), "mosquitto kept the session");
    drop(raw);
    monitor.next_event("disconnected", "tx").await;
    // 0 at CONNECT, 60 at DISCONNECT: the tap's engine closes for a protocol error, tells
    // the client (DISCONNECT 0x82 with its reason string) and reports it.
    let (mut raw, _) = Raw5::connect(addr, &connect5("tgrow", true, 60, &[], None)).await;
    raw.send(&disconnect5(0, &session_expiry(60))).await;
    let packets = raw.until_closed().await;
    let disconnect = packets.last().expect("a DISCONNECT reaches the client");
    assert_eq!(
        (disconnect.first, disconnect.reason()),
        (0xE0, 0x82),
        "{packets:?}"
    );
    assert_eq!(
        disconnect.reason_string().as_deref(),
        Some("protocol error")
    );
    let ev = monitor.next_event("disconnected", "tgrow").await;
    assert_eq!(ev.json["reason"], "protocol_error");
}

#[tokio::test]
async fn through_the_tap_a_taken_over_v5_client_gets_disconnect_0x8e() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let addr = tap.local_addr();
    let mut monitor = Monitor::start(mosquitto.addr).await;
    let (mut old, _) = Raw5::connect(addr, &connect5("ttake", true, 60, &[], None)).await;
    monitor.next_event("connected", "ttake").await;
    let (_new, connack) = Raw5::connect(addr, &connect5("ttake", true, 60, &[], None)).await;
    assert_eq!(connack.reason(), 0x00);
    let packets = old.until_closed().await;
    let disconnect = packets.last().expect("a DISCONNECT reaches the old client");
    assert_eq!(
        (disconnect.first, disconnect.reason()),
        (0xE0, 0x8E),
        "{packets:?}"
    );
    let ev = monitor.next_event("disconnected", "ttake").await;
    assert_eq!(ev.json["reason"], "takenover");
}

#[tokio::test]
async fn past_max_kept_sessions_a_session_ends_with_its_connection_and_is_counted() {
    let mut config = test_config();
    config.max_kept_sessions = 1;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let metrics = broker.metrics();
    let props = session_expiry(60);
    let (raw, _) = Raw5::connect(addr, &connect5("first", true, 60, &props, None)).await;
    drop(raw);
    wait_until(metrics, "the first session kept", |m| {
        m.sessions_kept.load(Ordering::Relaxed) == 1
    })
    .await;
    // The table is full: the second session ends with its connection, its will goes at once.
    // The monitor first, so that it cannot miss the subscriber's `subscribed` event.
    let mut monitor = Monitor::start(addr).await;
    let mut sub = MosquittoSub::spawn(addr, &["-i", "full-sub", "-V", "mqttv5", "-t", "full/#"]);
    monitor.next_event("subscribed", "full-sub").await;
    let will = Will {
        topic: "full/will",
        message: b"now",
        properties: will_delay(30),
    };
    let (raw, _) = Raw5::connect(addr, &connect5("second", true, 60, &props, Some(&will))).await;
    drop(raw);
    assert_eq!(sub.next_line().await, "now");
    wait_until(metrics, "the second session not kept", |m| {
        m.sessions_not_kept.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(metrics.sessions_kept.load(Ordering::Relaxed), 1);
    let (_raw, connack) = Raw5::connect(addr, &connect5("second", false, 60, &props, None)).await;
    assert!(
        !connack.session_present(),
        "the router's session was discarded"
    );
    let (_raw, connack) = Raw5::connect(addr, &connect5("first", false, 60, &props, None)).await;
    assert!(connack.session_present(), "the first one is still kept");
    sub.kill().await;
}
