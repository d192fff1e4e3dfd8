//! The HTTP API (docs/http.md) with a real HTTP client (Debian's curl): who is online in the
//! broker and the tap, listed from real rumqttc and mosquitto clients, paged; 404 and 400 as
//! JSON; the bearer token; the loopback rule; HTTPS with the `[tls]` certificate.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use adapter_tokio::auth::hash_password;
use adapter_tokio::config::{Config, TlsConfig, UserConfig};
use rumqttc::QoS;
use serde_json::{Value, json};
use tests::certs::self_signed;
use tests::http::{curl, http_get, wait_json};
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::*;

fn with_http(mut config: Config) -> Config {
    config.http_listen = Some("127.0.0.1:0".parse().expect("address"));
    config
}

/// The ids on a page of `/api/v1/clients`.
fn ids(page: &Value) -> Vec<String> {
    page["clients"]
        .as_array()
        .expect("a clients array")
        .iter()
        .map(|c| c["client_id"].as_str().expect("an id").to_owned())
        .collect()
}

#[tokio::test]
async fn broker_lists_real_clients_pages_them_and_looks_one_up() {
    let mut config = with_http(test_config());
    config.users = vec![UserConfig {
        username: "carol".into(),
        password_hash: hash_password("pw").expect("a hash"),
    }];
    let broker = start_broker(config).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    assert_eq!(http_get(http, "/health").await.status, 200);

    let mut a = Client::connect(broker.local_addr(), "api-a").await;
    a.subscribe("plant/+/temp", QoS::AtLeastOnce).await;
    a.subscribe("plant/alarms", QoS::ExactlyOnce).await;
    let _b = Client::connect(broker.local_addr(), "api-b").await;
    let mut options = options(broker.local_addr(), "api-c");
    options.set_credentials("carol", "pw");
    let (_c, _) = Client::connect_with(options).await.expect("api-c connects");
    // Debian's mosquitto_sub, MQTT 5.
    let sub = MosquittoSub::spawn(
        broker.local_addr(),
        &["-i", "api-m", "-V", "mqttv5", "-t", "m/#", "-q", "1"],
    );

    let page = wait_json(http, "/api/v1/clients", "four clients online", |page| {
        ids(page) == ["api-a", "api-b", "api-c", "api-m"]
    })
    .await;
    assert_eq!(page["next"], Value::Null, "one page holds them all");
    let first = &page["clients"][0];
    let mut keys: Vec<&str> = first
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "client_id",
            "connected_at",
            "last_activity",
            "peer",
            "proto_ver",
            "session_seq",
            "subscriptions",
            "username"
        ]
    );
    assert_eq!(first["client_id"], "api-a");
    assert_eq!(first["username"], Value::Null);
    assert_eq!(first["proto_ver"], 4);
    assert_eq!(first["subscriptions"], 2);
    assert!(
        first["session_seq"].as_u64().is_some_and(|s| s > 0),
        "{first}"
    );
    let peer: SocketAddr = first["peer"]
        .as_str()
        .expect("a peer")
        .parse()
        .expect("ip:port");
    assert!(peer.ip().is_loopback(), "{peer}");
    let connected_at = first["connected_at"].as_u64().expect("a number");
    assert!(now_ms().abs_diff(connected_at) < 60_000, "{connected_at}");
    assert!(first["last_activity"].as_u64().expect("a number") >= connected_at);
    assert_eq!(page["clients"][2]["username"], "carol");
    let m = wait_json(http, "/api/v1/clients/api-m", "api-m's subscription", |c| {
        c["subscriptions"] == 1
    })
    .await;
    assert_eq!(m["proto_ver"], 5);
    assert_eq!(m["topics"], json!([{"topic": "m/#", "qos": 1}]));

    // One client with its topics, in filter order.
    let one = http_get(http, "/api/v1/clients/api-a").await;
    assert_eq!(one.status, 200);
    assert_eq!(
        one.json()["topics"],
        json!([{"topic": "plant/+/temp", "qos": 1}, {"topic": "plant/alarms", "qos": 2}])
    );
    a.unsubscribe("plant/alarms").await;
    wait_json(http, "/api/v1/clients/api-a", "the unsubscribe", |c| {
        c["subscriptions"] == 1 && c["topics"] == json!([{"topic": "plant/+/temp", "qos": 1}])
    })
    .await;

    // Paging: two, then two, then none left.
    let p1 = http_get(http, "/api/v1/clients?limit=2").await.json();
    assert_eq!(ids(&p1), ["api-a", "api-b"]);
    assert_eq!(p1["next"], "api-b");
    let p2 = http_get(http, "/api/v1/clients?limit=2&after=api-b")
        .await
        .json();
    assert_eq!(ids(&p2), ["api-c", "api-m"]);
    assert_eq!(p2["next"], Value::Null);

    // Unknown id, bad limits, unknown path: 4xx with a JSON error.
    for (path, status) in [
        ("/api/v1/clients/nobody", 404),
        ("/api/v1/clients?limit=0", 400),
        ("/api/v1/clients?limit=1001", 400),
        ("/api/v1/clients?limit=many", 400),
        ("/api/v1/nothing", 404),
    ] {
        let response = http_get(http, path).await;
        assert_eq!(response.status, status, "{path}: {response:?}");
        assert!(response.json()["error"].is_string(), "{path}: {response:?}");
    }
    let post = curl(&format!("http://{http}/api/v1/clients"), &["-X", "POST"]).await;
    assert_eq!(post.status, 405);
    assert!(post.json()["error"].is_string());

    // A client that leaves is no longer listed.
    a.disconnect().await;
    sub.kill().await;
    wait_json(http, "/api/v1/clients", "api-a and api-m gone", |page| {
        ids(page) == ["api-b", "api-c"]
    })
    .await;
    assert_eq!(http_get(http, "/api/v1/clients/api-a").await.status, 404);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_takeover_lists_the_newer_connection_once() {
    let broker = start_broker(with_http(test_config())).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    let mut old = Client::connect(broker.local_addr(), "twin").await;
    old.subscribe("old/t", QoS::AtMostOnce).await;
    let first = wait_json(http, "/api/v1/clients/twin", "the first twin", |c| {
        c["subscriptions"] == 1
    })
    .await;
    let mut new = Client::connect(broker.local_addr(), "twin").await;
    new.subscribe("new/t", QoS::AtLeastOnce).await;
    let second = wait_json(http, "/api/v1/clients/twin", "the second twin", |c| {
        c["topics"] == json!([{"topic": "new/t", "qos": 1}])
    })
    .await;
    assert_ne!(
        first["peer"], second["peer"],
        "the newer connection is listed"
    );
    let page = http_get(http, "/api/v1/clients").await.json();
    assert_eq!(ids(&page), ["twin"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn tap_lists_the_clients_it_relays() {
    let mosquitto = Mosquitto::start().await;
    let tap = start_tap(with_http(tap_config(mosquitto.addr))).await;
    wait_publisher(&tap).await;
    let http = tap.http_addr().expect("the tap's HTTP listener is up");
    assert_eq!(http_get(http, "/health").await.status, 200);
    let mut client = Client::connect(tap.local_addr(), "tapped").await;
    client.subscribe("tap/#", QoS::AtLeastOnce).await;
    let one = wait_json(http, "/api/v1/clients/tapped", "the tapped client", |c| {
        c["subscriptions"] == 1
    })
    .await;
    assert_eq!(one["topics"], json!([{"topic": "tap/#", "qos": 1}]));
    assert_eq!(one["proto_ver"], 4);
    client.disconnect().await;
    wait_json(http, "/api/v1/clients", "nobody left", |page| {
        ids(page).is_empty()
    })
    .await;
    tap.shutdown().await;
    drop(mosquitto);
}

#[tokio::test]
async fn every_request_needs_the_bearer_token_when_one_is_set() {
    let mut config = with_http(test_config());
    config.http_token = Some("s3cret-token".into());
    let broker = start_broker(config).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    let url = format!("http://{http}/api/v1/clients");
    let none = curl(&url, &[]).await;
    assert_eq!(none.status, 401);
    assert!(none.json()["error"].is_string());
    for wrong in [
        "Authorization: Bearer s3cret-toke",
        "Authorization: Bearer s3cret-token2",
        "Authorization: Basic s3cret-token",
        "Authorization: s3cret-token",
    ] {
        assert_eq!(curl(&url, &["-H", wrong]).await.status, 401, "{wrong}");
    }
    let ok = curl(&url, &["-H", "Authorization: Bearer s3cret-token"]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["clients"], json!([]));
    let health = curl(&format!("http://{http}/health"), &[]).await;
    assert_eq!(health.status, 401, "health too");
    broker.shutdown().await;
}

/// An address of this machine that is not loopback (the source of a route out).
fn non_loopback_ip() -> IpAddr {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    // Connecting a UDP socket sends nothing: it picks the route and its source address.
    socket
        .connect("192.0.2.1:9")
        .expect("a route to a non-loopback address: the test needs a network interface");
    let ip = socket.local_addr().expect("a local address").ip();
    assert!(!ip.is_loopback(), "{ip}");
    ip
}

#[tokio::test]
async fn without_a_token_only_loopback_peers_are_served() {
    let mut config = test_config();
    config.http_listen = Some("0.0.0.0:0".parse().expect("address"));
    let broker = start_broker(config).await;
    let port = broker.http_addr().expect("the HTTP listener is up").port();
    let outside = SocketAddr::new(non_loopback_ip(), port);
    let refused = http_get(outside, "/api/v1/clients").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.json()["error"].is_string());
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(http_get(local, "/api/v1/clients").await.status, 200);
    broker.shutdown().await;

    // With a token, the peer's address does not matter.
    let mut config = test_config();
    config.http_listen = Some("0.0.0.0:0".parse().expect("address"));
    config.http_token = Some("t".into());
    let broker = start_broker(config).await;
    let outside = SocketAddr::new(non_loopback_ip(), broker.http_addr().expect("up").port());
    let url = format!("http://{outside}/health");
    assert_eq!(
        curl(&url, &["-H", "Authorization: Bearer t"]).await.status,
        200
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn the_api_speaks_https_when_tls_is_configured() {
    let (cert, key) = self_signed("http-api");
    let mut config = with_http(test_config());
    config.tls = Some(TlsConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        cert: cert.clone(),
        key,
    });
    let broker = start_broker(config).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    let _client = Client::connect(broker.local_addr(), "over-https").await;
    let cafile = cert.to_str().expect("a UTF-8 path");
    let url = format!("https://localhost:{}/api/v1/clients", http.port());
    let page = curl(&url, &["--cacert", cafile]).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(ids(&page.json()), ["over-https"]);
    // Plain HTTP on the TLS listener gets no answer.
    let plain = curl(&format!("http://{http}/health"), &[]).await;
    assert_ne!(plain.status, 200, "{plain:?}");
    broker.shutdown().await;
}
