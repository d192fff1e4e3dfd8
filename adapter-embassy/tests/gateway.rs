//! The gateway on one embassy-net stack, raw MQTT clients on another, in one process: what
//! is the gateway's own, its client slots. The MQTT behaviour it shares with the broker and the
//! tap (events, refusals, system topics, QoS flows, keep-alive, wills, takeover, limits) is
//! held to it by the conformance suite, `tests/tests/conformance.rs`, over a TAP device.

mod common;

use activity_core::QoS;
use activity_core::codec::{LastWill, Properties};
use adapter_embassy::{Config, GatewayResources, SlotStores};
use embassy_time::{Duration, Timer};

use common::*;

fn config() -> Config<'static> {
    Config {
        system_subscribers: &["monitor"],
        ..Config::new("gw-test")
    }
}

#[test]
fn busy_slots_refuse_with_connack_3() {
    gateway_test::<2, _, _>(config(), |stack, handle| async move {
        let one = RawClient::connected(stack, GATEWAY, "one").await;
        let _two = RawClient::connected(stack, GATEWAY, "two").await;
        let mut three = RawClient::open(stack, GATEWAY).await;
        assert_eq!(three.connect_with(connect("three")).await, (false, 3));
        three.expect_closed().await;
        assert_eq!(handle.stats().refused_no_slot, 1);
        // A freed slot serves again, once it listens again: until then the refuser answers.
        one.close().await;
        let deadline = embassy_time::Instant::now() + Duration::from_secs(10);
        let _four = loop {
            let mut four = RawClient::open(stack, GATEWAY).await;
            if four.connect_with(connect("four")).await == (false, 0) {
                break four;
            }
            four.expect_closed().await;
            assert!(
                embassy_time::Instant::now() < deadline,
                "the freed slot did not serve again within 10 s"
            );
            Timer::after(Duration::from_millis(20)).await;
        };
    });
}

/// The engine stores the firmware chooses bound what a client keeps, and each refusal is
/// counted: here 2 subscriptions of filters up to 16 bytes and wills up to 32 bytes.
#[test]
fn chosen_store_limits_refuse_and_count() {
    type Small = SlotStores<2, 64, 16, 32>;
    let resources = Box::leak(Box::new(
        GatewayResources::<2, 1024, 1024, 2, 1024, Small>::new(),
    ));
    gateway_test_in(resources, config(), |stack, handle| async move {
        // A will of 33 bytes (topic 8, message 25): CONNACK 3.
        let will = LastWill {
            topic: "will/abc",
            message: b"0123456789012345678901234",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::EMPTY,
        };
        let mut big_will = RawClient::open(stack, GATEWAY).await;
        let answer = big_will
            .connect_with(connect_with_will("big-will", will, 60))
            .await;
        assert_eq!(answer, (false, 3));
        big_will.expect_closed().await;
        assert_eq!(handle.stats().refused_no_buffer, 1);
        // One byte less fits.
        let will = LastWill {
            message: b"012345678901234567890123",
            ..will
        };
        let mut client = RawClient::open(stack, GATEWAY).await;
        let answer = client
            .connect_with(connect_with_will("small-will", will, 60))
            .await;
        assert_eq!(answer, (false, 0));
        // A filter of 17 bytes is refused, one of 16 is kept; a third filter finds no room.
        assert_eq!(
            client
                .subscribe(1, "sensors/abcdefgh", QoS::AtLeastOnce)
                .await,
            1
        );
        assert_eq!(
            client
                .subscribe(2, "sensors/abcdefghi", QoS::AtLeastOnce)
                .await,
            0x80
        );
        assert_eq!(client.subscribe(3, "a/#", QoS::AtMostOnce).await, 0);
        assert_eq!(client.subscribe(4, "b/#", QoS::AtMostOnce).await, 0x80);
        assert_eq!(handle.stats().subscriptions_refused, 2);
        // Three QoS 1 envelopes delivered and not yet acknowledged: the third finds the two
        // `msgack` entries taken, the oldest is forgotten, and that is counted.
        let mut publisher = RawClient::connected(stack, GATEWAY, "publisher").await;
        for (pkid, message_id) in [(1, 1), (2, 2), (3, 3)] {
            let payload = format!(r#"{{"product_id":"p","message_id":{message_id}}}"#);
            publisher
                .publish(
                    "sensors/abcdefgh",
                    payload.as_bytes(),
                    QoS::AtLeastOnce,
                    Some(pkid),
                )
                .await;
        }
        for _ in 0..3 {
            match client.recv().await {
                Received::Publish { qos, .. } => assert_eq!(qos, QoS::AtLeastOnce),
                other => panic!("expected a delivery, got {other:?}"),
            }
        }
        assert_eq!(handle.stats().deliveries_evicted, 1);
        publisher.close().await;
        client.close().await;
    });
}
