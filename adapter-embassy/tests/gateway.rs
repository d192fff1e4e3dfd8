//! The gateway on one embassy-net stack, raw MQTT clients on another, in one process: what
//! is the gateway's own, its client slots. The MQTT behaviour it shares with the broker and the
//! tap (events, refusals, system topics, QoS flows, keep-alive, wills, takeover, limits) is
//! held to it by the conformance suite, `tests/tests/conformance.rs`, over a TAP device.

mod common;

use adapter_embassy::Config;
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
