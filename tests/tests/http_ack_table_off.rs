//! The HTTP API's ack table is off by default (`http.ack_table = 0`, docs/live-page.md): an acknowledged
//! envelope is recorded nowhere, and a lookup answers 404 with a JSON error. (With no other
//! taker of `msgack`, the engine then does not correlate acknowledgements at all.)

use rumqttc::QoS;
use tests::http::{http_get, http_metric};
use tests::*;

#[tokio::test]
async fn the_default_ack_table_is_off_takes_no_msgack_and_refuses_lookups() {
    let mut config = test_config();
    config.http_listen = Some("127.0.0.1:0".parse().expect("address"));
    assert_eq!(config.http.ack_table, 0, "the default");
    let broker = start_broker(config).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    let addr = broker.local_addr();

    let mut device = Client::connect(addr, "off-device").await;
    device.subscribe("devices/off/cmd", QoS::AtLeastOnce).await;
    let mut shop = Client::connect(addr, "off-shop").await;
    let envelope = br#"{"product_id":"p0","message_id":"m0","payload":"on"}"#;
    shop.publish("devices/off/cmd", QoS::AtLeastOnce, false, envelope)
        .await;
    assert_eq!(&device.next_publish().await.payload[..], envelope);
    // rumqttc acknowledges it; a publish after it is delivered after that PUBACK was read.
    shop.publish("devices/off/cmd", QoS::AtLeastOnce, false, b"later")
        .await;
    assert_eq!(&device.next_publish().await.payload[..], b"later");
    assert_eq!(
        http_metric(http, "activity_http_acks_recorded_total").await,
        0
    );

    let answer = http_get(http, "/api/v1/acks?product_id=p0&message_id=m0").await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(answer.body.contains("ack table is off"), "{}", answer.body);

    device.disconnect().await;
    shop.disconnect().await;
    broker.shutdown().await;
}
