//! End-to-end: what the front keeps per client id is released when the client leaves. A
//! broker that sees a new client id per connection (the soak, docs/scale.md) must not grow in
//! its own tables; rumqttd's router keeps an entry per client id that ever disconnected, which
//! the soak states as its floor, but the front keeps none.

use std::time::Duration;

use adapter_tokio::broker::{Broker, ClientTables};
use rumqttc::QoS;
use tests::{Client, WAIT, start_broker, test_config};

/// The largest of each table's sizes.
fn max_tables(a: ClientTables, b: ClientTables) -> ClientTables {
    ClientTables {
        connected: a.connected.max(b.connected),
        presence: a.presence.max(b.presence),
        event_subscribers: a.event_subscribers.max(b.event_subscribers),
    }
}

/// Waits until every table of `broker` is empty; panics with the sizes after [`WAIT`].
async fn tables_empty(broker: &Broker) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let tables = broker.client_tables();
        if tables == ClientTables::default() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tables still hold clients that left: {tables:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn per_client_tables_are_empty_again_after_many_client_ids_came_and_went() {
    let mut config = test_config();
    // The HTTP API's presence list is one of the tables.
    config.http_listen = Some("127.0.0.1:0".parse().expect("address"));
    let broker = start_broker(config).await;
    let addr = broker.local_addr();

    let mut peak = ClientTables::default();
    for round in 0..3 {
        // 20 clients at once, each with a new client id, an event subscription (interest) and
        // an ordinary one, a QoS 1 publish; half leave with DISCONNECT, half by closing.
        let mut clients = Vec::new();
        for n in 0..20 {
            let mut client = Client::connect(addr, &format!("churn-{round}-{n}")).await;
            client
                .subscribe("SYSTEM/presence/#", QoS::AtLeastOnce)
                .await;
            let topic = format!("churn/{}", n % 5);
            client.subscribe(&topic, QoS::AtLeastOnce).await;
            client.publish(&topic, QoS::AtLeastOnce, false, b"x").await;
            clients.push(client);
        }
        peak = max_tables(peak, broker.client_tables());
        for (n, client) in clients.into_iter().enumerate() {
            if n % 2 == 0 {
                client.disconnect().await;
            } else {
                client.kill().await;
            }
        }
        tables_empty(&broker).await;
    }
    // The tables did hold the clients while they were there: the check above is not vacuous.
    assert_eq!(
        peak,
        ClientTables {
            connected: 20,
            presence: 20,
            event_subscribers: 20
        }
    );
    broker.shutdown().await;
}
