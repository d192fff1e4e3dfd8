//! Retained messages on the embassy gateway, over a TAP device in a private network namespace
//! (see `tests::netns`): Debian's `mosquitto_pub -r` stores, replaces and clears them, rumqttc
//! clients subscribe and get them with RETAIN set, and the table's limit is counted.
//!
//! Needs root and `/dev/net/tun`; skipped otherwise unless `REQUIRE_NETNS=1`.

use std::time::Duration;

use adapter_embassy::{Config, RETAINED_BYTES, RETAINED_ENTRIES};
use rumqttc::QoS;
use tests::netns::{GATEWAY_ADDR, TapGateway, in_private_netns};
use tests::{Client, mosquitto_pub};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a tokio runtime")
}

/// `mosquitto_pub -h gateway ARGS`, which must succeed.
async fn publish(args: &[&str]) {
    let out = mosquitto_pub(GATEWAY_ADDR, args).await;
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a new subscriber of `filter` gets at the subscribe: (topic, payload, retain, qos),
/// in order. The retained messages come right after the SUBACK; a plain message published
/// after that marks their end.
async fn retained_for(filter: &str, id: &str) -> Vec<(String, String, bool, QoS)> {
    let mut sub = Client::connect(GATEWAY_ADDR, id).await;
    sub.subscribe_many(&[(filter, QoS::AtLeastOnce), ("marker/end", QoS::AtMostOnce)])
        .await;
    publish(&["-i", "marker", "-t", "marker/end", "-m", "end"]).await;
    let mut got = Vec::new();
    loop {
        let p = sub.next_publish().await;
        let payload = String::from_utf8(p.payload.to_vec()).expect("UTF-8");
        if p.topic == "marker/end" {
            break;
        }
        got.push((p.topic, payload, p.retain, p.qos));
    }
    sub.disconnect().await;
    got
}

#[test]
fn retained_messages_on_the_gateway() {
    in_private_netns("retained_messages_on_the_gateway", || {
        runtime().block_on(async {
            let gateway =
                tokio::task::spawn_blocking(move || TapGateway::start(Config::new("gw-retained")))
                    .await
                    .expect("the gateway starts");
            // A subscriber that is there all along gets the publishes with RETAIN 0
            // (section 3.3.1.3: it is not a retained message to it).
            let mut early = Client::connect(GATEWAY_ADDR, "early").await;
            early.subscribe("state/#", QoS::AtLeastOnce).await;

            publish(&[
                "-i",
                "lamp",
                "-t",
                "state/lamp",
                "-q",
                "1",
                "-r",
                "-m",
                "on",
            ])
            .await;
            publish(&[
                "-i",
                "door",
                "-t",
                "state/door",
                "-q",
                "0",
                "-r",
                "-m",
                "closed",
            ])
            .await;
            publish(&["-i", "noise", "-t", "state/noise", "-m", "not kept"]).await;
            for _ in 0..3 {
                let p = early.next_publish().await;
                assert!(!p.retain, "a live delivery has RETAIN 0: {p:?}");
            }

            // A new subscription gets each matching retained message, with RETAIN 1, at
            // min(the QoS it was published with, the subscription's).
            assert_eq!(
                retained_for("state/#", "late-1").await,
                [
                    ("state/lamp".into(), "on".into(), true, QoS::AtLeastOnce),
                    ("state/door".into(), "closed".into(), true, QoS::AtMostOnce),
                ]
            );
            assert_eq!(
                retained_for("state/+", "late-2")
                    .await
                    .iter()
                    .map(|m| m.0.as_str())
                    .collect::<Vec<_>>(),
                ["state/lamp", "state/door"]
            );
            assert!(retained_for("other/#", "late-3").await.is_empty());

            // A retained publish replaces; an empty one clears.
            publish(&["-i", "lamp", "-t", "state/lamp", "-r", "-m", "off"]).await;
            publish(&["-i", "door", "-t", "state/door", "-r", "-n"]).await;
            assert_eq!(
                retained_for("state/#", "late-4").await,
                [("state/lamp".into(), "off".into(), true, QoS::AtMostOnce)]
            );

            // The table holds RETAINED_ENTRIES topics: the next new topic is not kept, and
            // counted; what was kept stays.
            assert_eq!(RETAINED_ENTRIES, 4);
            for n in 1..RETAINED_ENTRIES {
                publish(&["-i", "fill", "-t", &format!("state/{n}"), "-r", "-m", "v"]).await;
            }
            assert_eq!(gateway.stats().retained_dropped, 0);
            publish(&["-i", "fill", "-t", "state/one-too-many", "-r", "-m", "v"]).await;
            // Topic and payload larger than RETAINED_BYTES: not kept either.
            let large = "x".repeat(RETAINED_BYTES);
            publish(&["-i", "fill", "-t", "state/lamp", "-r", "-m", &large]).await;
            gateway
                .stats_until(
                    "two retained messages not kept",
                    Duration::from_secs(10),
                    |s| s.retained_dropped == 2,
                )
                .await;
            let kept = retained_for("state/#", "late-5").await;
            assert_eq!(
                kept.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
                ["state/1", "state/2", "state/3"],
                "the too-large message removed state/lamp's older one, since it is no longer \
                 the last"
            );
            // An entry freed by that takes the next new topic.
            publish(&["-i", "fill", "-t", "state/one-too-many", "-r", "-m", "now"]).await;
            assert_eq!(retained_for("state/one-too-many", "late-6").await.len(), 1);
            println!("{:?}", gateway.stats());

            early.disconnect().await;
            tokio::task::spawn_blocking(move || gateway.stop())
                .await
                .expect("the gateway stops");
        });
    });
}
