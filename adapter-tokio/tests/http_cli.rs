//! `--http-listen` turns the HTTP API on in the binary; the API's thread runs nicer than the
//! threads serving MQTT clients.

use std::net::SocketAddr;

use tests::http::{http_get, wait_json};
use tests::ports::free_port;
use tests::process::{BrokerProcess, thread_priorities};

/// The binary under test.
const BINARY: &str = env!("CARGO_BIN_EXE_activity-broker");

#[tokio::test]
async fn http_listen_flag_serves_health_and_clients_from_a_nicer_thread() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let broker = BrokerProcess::start(
        BINARY.as_ref(),
        &["--http-listen", &http.to_string()],
        &dir.path().join("broker.log"),
    )
    .await;
    assert_eq!(
        http_get(http, "/health").await.status,
        200,
        "{}",
        broker.log()
    );
    let _client = tests::Client::connect(broker.addr, "via-flag").await;
    wait_json(http, "/api/v1/clients", "the client listed", |page| {
        page["clients"][0]["client_id"] == "via-flag"
    })
    .await;
    let threads = thread_priorities(broker.pid());
    let nice_of = |name: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, nice)| *nice)
            .collect()
    };
    let base = nice_of("activity-broker");
    assert_eq!(base.len(), 1, "{threads:?}");
    assert_eq!(
        nice_of("http-api"),
        [(base[0] + adapter_tokio::http::HTTP_THREAD_NICE).min(19)],
        "{threads:?}"
    );
    let (clean, log) = broker.terminate().await;
    assert!(clean, "{log}");
}
