//! `storm-clients ADDR COUNT`: the client side of the connect storm (`tests/tests/storm.rs`),
//! in a process of its own so that the broker's and the clients' file descriptors each have a
//! whole open-file limit.
//!
//! It opens COUNT raw MQTT 3.1.1 connections to ADDR, at most 256 handshakes at a time, each
//! a CONNECT as `storm-I` with keep-alive 0 answered by an accepting CONNACK, and prints
//! `connected COUNT`. Then it waits for a line `close` on its standard input and closes every
//! connection at once: even `I` send DISCONNECT and wait for the broker to close the socket,
//! odd `I` drop the socket without a word. It prints `closed COUNT` and exits 0. Any failure
//! panics, which exits non-zero with the reason on standard error.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tests::connect_packet;
use tests::hostile::{CONNACK_ACCEPTED, DISCONNECT, read_n, read_to_close, run_bounded};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long one connection's handshake or close may take: it only bounds a hang.
const STEP: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, count] = &args[..] else {
        panic!("usage: storm-clients ADDR COUNT, got {args:?}");
    };
    let addr: SocketAddr = addr.parse().expect("ADDR is a socket address");
    let count: usize = count.parse().expect("COUNT is a number");
    let limit = adapter_tokio::limits::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    let needed = u64::try_from(count).expect("COUNT fits in u64") + 64;
    assert!(
        limit >= needed,
        "the open-file limit {limit} does not allow {count} connections"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(storm(addr, count));
}

async fn storm(addr: SocketAddr, count: usize) {
    let streams = run_bounded(count, 256, |i| async move {
        let mut stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("storm-{i}: no TCP connection within {STEP:?}"))
            .unwrap_or_else(|e| panic!("storm-{i}: TCP connect: {e}"));
        // Keep-alive 0: however slow the storm, nobody times out.
        let connect = connect_packet(&format!("storm-{i}"), 0, 4);
        stream.write_all(&connect).await.expect("write CONNECT");
        let connack = timeout(STEP, read_n(&mut stream, 4))
            .await
            .unwrap_or_else(|_| panic!("storm-{i}: no CONNACK within {STEP:?}"));
        assert_eq!(connack, CONNACK_ACCEPTED, "storm-{i}");
        stream
    })
    .await;
    say(&format!("connected {}", streams.len()));

    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("read the command");
    assert_eq!(line.trim(), "close", "the only command is `close`");

    let mut closing: Vec<Option<TcpStream>> = streams.into_iter().map(Some).collect();
    let closed = run_bounded(count, count, |i| {
        let mut stream = closing[i].take().expect("each stream is closed once");
        async move {
            if i % 2 == 0 {
                stream
                    .write_all(&DISCONNECT)
                    .await
                    .expect("write DISCONNECT");
                assert!(
                    read_to_close(&mut stream, STEP).await.is_some(),
                    "storm-{i}: still open {STEP:?} after DISCONNECT"
                );
            }
            drop(stream);
        }
    })
    .await;
    say(&format!("closed {}", closed.len()));
}

/// Prints one line on standard output, at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("write to stdout");
    out.flush().expect("flush stdout");
}
