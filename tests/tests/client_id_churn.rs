//! Hostile, broker mode: clients that each come with a new client id cost no memory once they
//! are gone.
//!
//! rumqttd 0.20's router remembers every name a link ever left under (its graveyard keeps
//! the link's metrics until a link of the same name comes again). A fleet whose devices pick
//! a new id per connection, or a client that connects with random ids, made the broker grow
//! by about 500 bytes per id, without end. Clean links now enter the router under pooled
//! names (`adapter_tokio::connection::RouterNames`). The test connects and disconnects
//! [`CHURN`] clients, each under its own id, a few at a time, and checks that the process's
//! RSS (the broker runs in it) grew by less than [`PER_ID_BOUND`] bytes per id, and that the
//! broker still serves a client afterwards.

use std::net::SocketAddr;

use tests::hostile::{mib, read_n, rss_bytes};
use tests::{connect_packet, start_broker, test_config};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Client ids that come and go in the measured part.
const CHURN: usize = 12_000;

/// Client ids that come and go before the measurement, so that the allocator, the router's
/// tables and tokio's pools have settled.
const WARM_UP: usize = 2_000;

/// Connections at once.
const PARALLEL: usize = 8;

/// What the process may grow by per id: the test's own clients and the allocator (74-138
/// bytes measured with pooled names). When the router kept every id, each cost about 610
/// bytes here, never freed (about 550 in a broker process of its own).
const PER_ID_BOUND: u64 = 300;

/// Connects as `client_id` (clean session), reads an accepted CONNACK, and disconnects.
async fn come_and_go(addr: SocketAddr, client_id: &str) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&connect_packet(client_id, 60, 4))
        .await
        .expect("CONNECT");
    let connack = read_n(&mut stream, 4).await;
    assert_eq!(connack, [0x20, 2, 0, 0], "{client_id}: accepted");
    stream.write_all(&[0xe0, 0]).await.expect("DISCONNECT");
    // The broker closes after the DISCONNECT: wait for it, so that at most PARALLEL
    // connections are alive at once.
    let mut rest = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
}

/// `count` clients with the ids `prefix-0` .. `prefix-(count-1)`, [`PARALLEL`] at a time.
async fn churn(addr: SocketAddr, prefix: &str, count: usize) {
    let mut tasks = Vec::new();
    for lane in 0..PARALLEL {
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (lane..count).step_by(PARALLEL) {
                come_and_go(addr, &format!("{prefix}-{i}")).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a churn lane");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_new_ids_leave_no_memory_behind() {
    let broker = start_broker(test_config()).await;
    let addr = broker.local_addr();

    churn(addr, "warm", WARM_UP).await;
    let before = rss_bytes();
    churn(addr, "churn", CHURN).await;
    let growth = rss_bytes().saturating_sub(before);
    let per_id = growth / CHURN as u64;
    println!(
        "{CHURN} client ids came and went: RSS grew by {:.2} MiB, {per_id} B per id",
        mib(growth)
    );
    assert!(
        per_id < PER_ID_BOUND,
        "the broker kept {per_id} bytes per client id that left (bound {PER_ID_BOUND})"
    );

    // The same ids, and a new one, still connect.
    come_and_go(addr, "churn-0").await;
    come_and_go(addr, "after-the-churn").await;
    broker.shutdown().await;
}
