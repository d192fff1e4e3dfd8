//! End-to-end: the live page of the HTTP API (`GET /`, docs/live-page.md) in real headless
//! Chromium, driven over WebDriver by Debian's chromedriver (`tests::webdriver`).
//!
//! The page must show a rumqttc client connecting and disconnecting as it happens (it reads the
//! list once, then the event stream), filter the event list by kind, find a real `msgack` of
//! mosquitto_sub with its lookup (`/api/v1/acks`), and show the counters (`/api/v1/stats`).
//! Nothing of this can pass unless the page ran in the browser against the broker. Without
//! chromium or chromium-driver the test fails and says what to install.
//!
//! `LIVE_PAGE_SCREENSHOT=docs/img/live-page.png` (a path relative to the workspace) makes the
//! first test save its screenshot there: `scripts/live-page-screenshot.sh` does.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::{Value, json};
use tests::tap::{Mosquitto, start_tap, tap_config, wait_publisher};
use tests::webdriver::Browser;
use tests::*;

/// How long the page may take to show something that already happened on the broker: one
/// event through the stream and a repaint, on a busy machine with Chromium running.
const SHOWN: Duration = Duration::from_secs(15);

/// The client ids listed on the page, in its order.
const ONLINE: &str =
    "return [...document.querySelectorAll('#online tr')].map(r => r.dataset.client);";

/// The rows of the event list: `[kind, client, hidden]`, newest first.
const EVENT_ROWS: &str = "return [...document.querySelectorAll('#events tr')]
    .map(r => [r.dataset.kind, r.dataset.client, r.hidden]);";

/// A broker with the HTTP API on a free loopback port and its ack table on (it is off by
/// default; events to MQTT only: the page's msgack table must still see every event).
async fn broker_with_page(token: Option<&str>) -> (adapter_tokio::broker::Broker, SocketAddr) {
    let mut config = test_config();
    config.http_listen = Some("127.0.0.1:0".parse().expect("an address"));
    config.http.ack_table = 10_000;
    config.http_token = token.map(str::to_owned);
    let broker = start_broker(config).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    (broker, http)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the event list has a row of `kind` about `client`.
fn has_row(rows: &Value, kind: &str, client: &str) -> bool {
    rows.as_array()
        .is_some_and(|rows| rows.iter().any(|r| r[0] == kind && r[1] == client))
}

/// `(shown, hidden)`: the rows of `kind` in the event list.
fn rows_of(rows: &Value, kind: &str) -> (usize, usize) {
    let of_kind = || {
        rows.as_array()
            .into_iter()
            .flatten()
            .filter(move |r| r[0] == kind)
    };
    let hidden = of_kind().filter(|r| r[2] == true).count();
    (of_kind().count() - hidden, hidden)
}

#[tokio::test]
async fn the_live_page_follows_clients_filters_events_and_finds_acks() {
    let (broker, http) = broker_with_page(None).await;
    let addr = broker.local_addr();
    let mut monitor = Monitor::start(addr).await;
    // Online before the page opens: the page learns of it from /api/v1/clients.
    let early = Client::connect(addr, "sensor-early").await;
    monitor.next_event("connected", "sensor-early").await;

    let browser = Browser::start().await;
    browser.goto(&format!("http://{http}/")).await;
    browser
        .wait_for(
            "the event stream open",
            SHOWN,
            "return document.getElementById('stream').dataset.state;",
            |v| v == "live",
        )
        .await;
    browser
        .wait_for("sensor-early in the list", SHOWN, ONLINE, |v| {
            strings(v).contains(&"sensor-early".to_owned())
        })
        .await;

    // A client connects: the stream brings it onto the page.
    let live = Client::connect(addr, "sensor-live").await;
    browser
        .wait_for("sensor-live online", SHOWN, ONLINE, |v| {
            strings(v) == ["monitor", "sensor-early", "sensor-live"]
        })
        .await;
    browser
        .wait_for("its connected event", SHOWN, EVENT_ROWS, |rows| {
            has_row(rows, "connected", "sensor-live")
        })
        .await;

    // A real msgack: mosquitto_sub acknowledges an envelope at QoS 1.
    let mut acker = MosquittoSub::spawn(addr, &["-i", "dashboard", "-q", "1", "-t", "devices/#"]);
    monitor.next_event("subscribed", "dashboard").await;
    let mut shop = Client::connect(addr, "controller").await;
    let envelope = br#"{"product_id":"p7","message_id":"m99","payload":"on"}"#;
    shop.publish("devices/7/cmd", QoS::AtLeastOnce, false, envelope)
        .await;
    assert_eq!(acker.next_line().await.as_bytes(), envelope);
    monitor.next_event("msgack", "dashboard").await;
    browser
        .wait_for("the message and its msgack", SHOWN, EVENT_ROWS, |rows| {
            has_row(rows, "message", "controller") && has_row(rows, "msgack", "dashboard")
        })
        .await;

    // The kind filter: `message` off hides its rows, and the new ones; the rest stay.
    browser.click("#kind-message").await;
    let rows = browser.eval(EVENT_ROWS, json!([])).await;
    assert_eq!(rows_of(&rows, "message"), (0, 1), "{rows}");
    assert!(rows_of(&rows, "connected").0 >= 2, "{rows}");
    shop.publish("devices/7/state", QoS::AtMostOnce, false, b"idle")
        .await;
    // Through the dispatcher before marker connects: the stream carries it first.
    monitor.next_event("message", "controller").await;
    monitor.next_event("message", "controller").await;
    let marker = Client::connect(addr, "marker").await;
    let rows = browser
        .wait_for("marker's connected event", SHOWN, EVENT_ROWS, |rows| {
            has_row(rows, "connected", "marker")
        })
        .await;
    // The page has the second message too, hidden.
    assert_eq!(rows_of(&rows, "message"), (0, 2), "{rows}");
    assert_eq!(rows_of(&rows, "msgack"), (1, 0), "{rows}");
    browser.click("#kind-message").await;
    let rows = browser.eval(EVENT_ROWS, json!([])).await;
    assert_eq!(rows_of(&rows, "message"), (2, 0), "{rows}");

    // The lookup finds dashboard's acknowledgement of (p7, m99), and no one else's.
    browser.type_into("#ack-product", "p7").await;
    browser.type_into("#ack-message", "m99").await;
    browser.type_into("#ack-client", "dashboard").await;
    browser.click("#ack-submit").await;
    browser
        .wait_for(
            "the msgack found",
            SHOWN,
            "return document.getElementById('ack-result').dataset.state;",
            |v| v == "yes",
        )
        .await;
    let found = browser.text("#ack-result").await;
    assert!(
        found.contains("dashboard")
            && found.contains("devices/7/cmd")
            && found.contains("controller"),
        "{found}"
    );

    // The counters come from /api/v1/stats.
    browser
        .wait_for(
            "the counters",
            SHOWN,
            "const d = document.querySelector('#stats dd[data-metric=\"connections_current\"]');
             return d ? Number(d.textContent.replace(/,/g, '')) : null;",
            |v| v.as_u64().is_some_and(|n| n >= 4),
        )
        .await;

    if let Ok(path) = std::env::var("LIVE_PAGE_SCREENSHOT") {
        save_screenshot(&browser, &path).await;
    }

    browser.type_into("#ack-client", "sensor-live").await;
    browser.click("#ack-submit").await;
    browser
        .wait_for(
            "no msgack of sensor-live",
            SHOWN,
            "return document.getElementById('ack-result').dataset.state;",
            |v| v == "no",
        )
        .await;

    // sensor-live disconnects: the page drops it as it happens.
    live.disconnect().await;
    browser
        .wait_for("sensor-live gone", SHOWN, ONLINE, |v| {
            !strings(v).contains(&"sensor-live".to_owned())
        })
        .await;
    let rows = browser.eval(EVENT_ROWS, json!([])).await;
    assert!(has_row(&rows, "disconnected", "sensor-live"), "{rows}");
    let online = strings(&browser.eval(ONLINE, json!([])).await);
    assert_eq!(
        online,
        [
            "controller",
            "dashboard",
            "marker",
            "monitor",
            "sensor-early"
        ]
    );

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    browser.quit().await;
    acker.kill().await;
    drop((early, marker));
}

/// Writes the page's screenshot to `path` (relative to the workspace).
async fn save_screenshot(browser: &Browser, path: &str) {
    let png = browser.screenshot().await;
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).expect("the screenshot's directory");
    }
    std::fs::write(&target, &png).expect("the screenshot is written");
    eprintln!("screenshot: {} ({} bytes)", target.display(), png.len());
}

#[tokio::test]
async fn with_a_token_the_page_loads_and_asks_for_it() {
    let (broker, http) = broker_with_page(Some("s3cret")).await;
    let addr = broker.local_addr();
    let _client = Client::connect(addr, "behind-token").await;

    let browser = Browser::start().await;
    browser.goto(&format!("http://{http}/")).await;
    browser
        .wait_for(
            "the token form",
            SHOWN,
            "return !document.getElementById('token-form').hidden;",
            |v| v == true,
        )
        .await;
    assert_eq!(
        strings(&browser.eval(ONLINE, json!([])).await),
        Vec::<String>::new()
    );
    browser.type_into("#token", "s3cret").await;
    browser.click("#token-form button").await;
    browser
        .wait_for("behind-token online", SHOWN, ONLINE, |v| {
            strings(v) == ["behind-token"]
        })
        .await;
    browser.quit().await;
}

#[tokio::test]
async fn the_page_of_a_tap_shows_its_clients_and_finds_their_acks() {
    let mosquitto = Mosquitto::start().await;
    let mut config = tap_config(mosquitto.addr);
    config.http_listen = Some("127.0.0.1:0".parse().expect("an address"));
    config.http.ack_table = 10_000;
    let tap = start_tap(config).await;
    wait_publisher(&tap).await;
    let http = tap.http_addr().expect("the tap's HTTP listener is up");
    let addr = tap.local_addr();
    // On mosquitto itself: the tap publishes its events there.
    let mut monitor = Monitor::start(mosquitto.addr).await;

    let browser = Browser::start().await;
    browser.goto(&format!("http://{http}/")).await;
    browser
        .wait_for(
            "the event stream open",
            SHOWN,
            "return document.getElementById('stream').dataset.state;",
            |v| v == "live",
        )
        .await;

    let mut acker = MosquittoSub::spawn(addr, &["-i", "tap-dashboard", "-q", "1", "-t", "t/#"]);
    monitor.next_event("subscribed", "tap-dashboard").await;
    let mut shop = Client::connect(addr, "tap-controller").await;
    browser
        .wait_for("both clients online", SHOWN, ONLINE, |v| {
            strings(v) == ["tap-controller", "tap-dashboard"]
        })
        .await;
    let envelope = br#"{"product_id":"p3","message_id":7,"payload":"x"}"#;
    shop.publish("t/1", QoS::AtLeastOnce, false, envelope).await;
    assert_eq!(acker.next_line().await.as_bytes(), envelope);
    monitor.next_event("msgack", "tap-dashboard").await;

    // An integer message id is looked up by its digits.
    browser.type_into("#ack-product", "p3").await;
    browser.type_into("#ack-message", "7").await;
    browser.click("#ack-submit").await;
    browser
        .wait_for(
            "the msgack found",
            SHOWN,
            "return document.getElementById('ack-result').dataset.state;",
            |v| v == "yes",
        )
        .await;
    let found = browser.text("#ack-result").await;
    assert!(found.contains("tap-dashboard"), "{found}");

    shop.disconnect().await;
    browser
        .wait_for("tap-controller gone", SHOWN, ONLINE, |v| {
            strings(v) == ["tap-dashboard"]
        })
        .await;
    browser.quit().await;
    acker.kill().await;
    drop(tap);
    mosquitto.kill().await;
}

#[tokio::test]
async fn a_stream_that_fell_behind_is_said_and_the_list_read_again() {
    let mut config = test_config();
    config.http_listen = Some("127.0.0.1:0".parse().expect("an address"));
    // One event of room per stream: a burst makes the page's stream skip some.
    config.http.watcher_buffer = 1;
    let broker = start_broker(config).await;
    let http = broker.http_addr().expect("the HTTP listener is up");
    let addr = broker.local_addr();

    let browser = Browser::start().await;
    browser.goto(&format!("http://{http}/")).await;
    let mut burster = Client::connect(addr, "burster").await;
    browser
        .wait_for("burster online", SHOWN, ONLINE, |v| {
            strings(v) == ["burster"]
        })
        .await;
    let note = "return document.getElementById('note').textContent;";
    let mut bursts = 0;
    while !browser
        .eval(note, json!([]))
        .await
        .as_str()
        .is_some_and(|n| n.contains("skipped"))
    {
        bursts += 1;
        assert!(
            bursts <= 20,
            "20 bursts of 100 events and no stream fell behind"
        );
        for i in 0..100 {
            burster
                .publish("burst", QoS::AtMostOnce, false, format!("{i}").as_bytes())
                .await;
        }
        // Acknowledged: the burst went through the broker before the page is asked again.
        burster
            .publish("burst", QoS::AtLeastOnce, false, b"end")
            .await;
    }
    // After the resync the list still follows the clients.
    let _late = Client::connect(addr, "late").await;
    burster.disconnect().await;
    browser
        .wait_for("late online, burster gone", SHOWN, ONLINE, |v| {
            strings(v) == ["late"]
        })
        .await;
    browser.quit().await;
}
