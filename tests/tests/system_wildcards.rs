//! End-to-end, wildcards leave the system topics alone (issue 18): a subscription whose first
//! level is a wildcard (`#`, `+/...`) receives exactly the ordinary messages while the events
//! flow to a `SYSTEM/#` subscriber, on the broker (rumqttc MQTT 3.1.1 and Debian's
//! `mosquitto_sub -V mqttv5`) and through the tap in front of Debian's mosquitto; a `#`
//! subscriber alone makes no events be published; `events.wildcards_receive_events` restores
//! the behaviour before.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use rumqttc::QoS;
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::{Client, Monitor, MosquittoSub, start_broker, test_config};

/// Publishes `n` ordinary messages and an `end` marker from `publisher`.
async fn publish_n(publisher: &mut Client, n: usize) {
    for i in 0..n {
        publisher
            .publish(&format!("data/{i}"), QoS::AtLeastOnce, false, b"x")
            .await;
    }
    publisher
        .publish("data/end", QoS::AtLeastOnce, false, b"end")
        .await;
}

/// What `client` receives up to the `data/end` marker, by topic.
async fn topics_until_end(client: &mut Client) -> Vec<String> {
    let mut topics = Vec::new();
    loop {
        let p = client.next_publish().await;
        let end = p.topic == "data/end";
        topics.push(p.topic);
        if end {
            return topics;
        }
    }
}

fn ordinary(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("data/{i}"))
        .chain(["data/end".to_owned()])
        .collect()
}

/// A `#` and a `+/+` subscriber at `addr` get exactly the ordinary messages while `monitor`
/// (on `SYSTEM/#`) gets their `message` events.
async fn wildcards_get_only_messages(addr: SocketAddr, monitor: &mut Monitor, qos: QoS) {
    let mut all = Client::connect(addr, "all").await;
    all.subscribe("#", qos).await;
    let mut two = Client::connect(addr, "two").await;
    two.subscribe("+/+", qos).await;
    let mut publisher = Client::connect(addr, "publisher").await;
    publish_n(&mut publisher, 5).await;
    assert_eq!(topics_until_end(&mut all).await, ordinary(5));
    assert_eq!(topics_until_end(&mut two).await, ordinary(5));
    for i in 0..5 {
        let topic = format!("data/{i}");
        monitor
            .wait_for(&format!("the message event of {topic}"), |e| {
                e.kind() == "message" && e.json["topic"] == topic.as_str()
            })
            .await;
    }
}

#[tokio::test]
async fn on_the_broker_wildcards_get_the_messages_and_system_filters_the_events() {
    let broker = start_broker(test_config()).await;
    let addr = broker.local_addr();
    let metrics = broker.metrics();

    // A `#` subscriber alone: no event is published for MQTT.
    let mut alone = Client::connect(addr, "alone").await;
    alone.subscribe("#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(addr, "p0").await;
    publish_n(&mut publisher, 3).await;
    assert_eq!(topics_until_end(&mut alone).await, ordinary(3));
    assert_eq!(metrics.events_sink_mqtt.load(Ordering::Relaxed), 0);

    // With a SYSTEM/# subscriber the events flow, and wildcards still get none of them.
    let mut monitor = Monitor::start(addr).await;
    wildcards_get_only_messages(addr, &mut monitor, QoS::AtLeastOnce).await;
    assert!(metrics.events_sink_mqtt.load(Ordering::Relaxed) > 0);
    assert!(metrics.events_not_wanted.load(Ordering::Relaxed) > 0);

    // An MQTT 5 client (the router names the filter of each delivery) alike.
    let mut sub = MosquittoSub::spawn(addr, &["-V", "mqttv5", "-i", "v5-all", "-t", "#", "-v"]);
    monitor
        .wait_for("v5-all subscribed", |e| e.is("subscribed", "v5-all"))
        .await;
    publish_n(&mut publisher, 2).await;
    let mut lines = Vec::new();
    loop {
        let line = sub.next_line().await;
        let end = line.starts_with("data/end ");
        lines.push(line);
        if end {
            break;
        }
    }
    assert_eq!(lines, ["data/0 x", "data/1 x", "data/end end"]);
    sub.kill().await;
}

#[tokio::test]
async fn the_restore_key_gives_wildcards_the_events_again() {
    let mut config = test_config();
    config.events.wildcards_receive_events = true;
    let broker = start_broker(config).await;
    let addr = broker.local_addr();
    let mut all = Client::connect(addr, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let mut publisher = Client::connect(addr, "publisher").await;
    publish_n(&mut publisher, 1).await;
    let topics = topics_until_end(&mut all).await;
    assert!(
        topics.iter().any(|t| t == "SYSTEM/message"),
        "events reach `#` again: {topics:?}"
    );
    assert!(topics.contains(&"data/0".to_owned()), "{topics:?}");
}

#[tokio::test]
async fn through_the_tap_wildcards_get_the_messages_and_the_upstreams_own_do_not_follow_the_rule() {
    let mosquitto = Mosquitto::start().await;
    let mut config = tap_config(mosquitto.addr);
    // Events at QoS 0 reach every subscription at QoS 0: the tap drops those only a wildcard
    // filter of its own clients matches (a QoS 1 delivery awaits the client's PUBACK: forwarded).
    config.events.qos = 0;
    let tap = start_tap(config).await;
    wait_publisher(&tap).await;
    // The events are read from mosquitto, where the tap publishes them.
    let mut monitor = Monitor::start(mosquitto.addr).await;
    wildcards_get_only_messages(tap.local_addr(), &mut monitor, QoS::AtMostOnce).await;
    assert!(tap.metrics().events_not_wanted.load(Ordering::Relaxed) > 0);

    // mosquitto's own `#` subscribers are mosquitto's: they receive the events (docs/acl.md).
    let mut upstream_all = Client::connect(mosquitto.addr, "upstream-all").await;
    upstream_all.subscribe("#", QoS::AtMostOnce).await;
    let mut publisher = Client::connect(tap.local_addr(), "p1").await;
    publish_n(&mut publisher, 1).await;
    let topics = topics_until_end(&mut upstream_all).await;
    assert!(
        topics.iter().any(|t| t.starts_with("SYSTEM/")),
        "the upstream's own `#` gets events: {topics:?}"
    );
}
