//! End-to-end: hostile CONNECT handshakes against a real `activity-broker` (issue 6): a
//! second CONNECT, packets only a server sends, anything before CONNECT, bad client ids and
//! protocol levels, and a CONNECT that never completes (slowloris).
//!
//! A client that had connected is closed with the right `disconnected` reason; one that had
//! not is closed silently (or refused with a CONNACK code) and never appears in a presence
//! event. After each, the bystander of the [`Scene`] keeps publishing and receiving.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tests::hostile::{
    CONNACK_ACCEPTED, DISCONNECT, PINGREQ, PINGRESP, Scene, connect_with_raw_id, hostile_config,
    malformed_headers, publish_packet, read_to_close, subscribe_packet,
};
use tests::{RawClient, connect_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

// ---------------------------------------------------------------------------------------------
// CONNECT out of turn
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn second_connect_and_server_packets_close_with_protocol_error() {
    let mut scene = Scene::start(hostile_config()).await;
    // Section 3.1.0: a second CONNECT is a protocol violation.
    scene
        .connected_attack("twice", &connect_packet("twice", 60, 4), "protocol_error")
        .await;
    // A second CONNECT with another client id must not rename the connection either.
    scene
        .connected_attack(
            "rename",
            &connect_packet("renamed", 60, 4),
            "protocol_error",
        )
        .await;
    // Packets only a server sends.
    for (name, bytes) in [
        ("connack", CONNACK_ACCEPTED.to_vec()),
        ("pingresp", PINGRESP.to_vec()),
        ("suback", vec![0x90, 0x03, 0x00, 0x01, 0x00]),
    ] {
        scene
            .connected_attack(&format!("server-{name}"), &bytes, "protocol_error")
            .await;
    }
    scene.assert_no_unknown_presence("second CONNECT").await;
}

#[tokio::test]
async fn packets_before_connect_are_closed_without_events() {
    let mut scene = Scene::start(hostile_config()).await;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("PINGREQ before CONNECT", PINGREQ.to_vec()),
        ("DISCONNECT before CONNECT", DISCONNECT.to_vec()),
        (
            "PUBLISH before CONNECT",
            publish_packet(b"health/sneak", 1, 1, b"x"),
        ),
        (
            "SUBSCRIBE before CONNECT",
            subscribe_packet(1, b"SYSTEM/#", 1),
        ),
        ("CONNACK before CONNECT", CONNACK_ACCEPTED.to_vec()),
        (
            "declared length over max_packet_size",
            vec![0x10, 0xFF, 0xFF, 0x03],
        ),
        (
            "invalid UTF-8 client id",
            connect_with_raw_id(b"id-\xC3\x28"),
        ),
        ("U+0000 in the client id", connect_with_raw_id(b"id\x00x")),
        ("protocol name MQTX", {
            let mut p = connect_packet("mqtx", 60, 4);
            p[7] = b'X';
            p
        }),
        ("reserved CONNECT flag bit", {
            let mut p = connect_packet("flag0", 60, 4);
            p[9] |= 0x01;
            p
        }),
        ("CONNECT with flags 0x1", {
            let mut p = connect_packet("flags", 60, 4);
            p[0] = 0x11;
            p
        }),
        // Refused with a CONNACK: protocol level 3, and the reserved id `broker`.
        ("protocol level 3", connect_packet("level3", 60, 3)),
        ("reserved client id", connect_packet("broker", 60, 4)),
        // An empty id without clean session is refused (section 3.1.3.1).
        ("empty id, persistent session", {
            let mut p = connect_packet("", 60, 4);
            p[9] = 0x00;
            p
        }),
    ];
    for (name, bytes) in malformed_headers() {
        cases.push((name, bytes));
    }
    for (what, bytes) in &cases {
        scene.unconnected_attack(what, bytes).await;
    }
    // The refusing CONNACKs carry their codes (section 3.2.2.3).
    for (connect, code) in [
        (connect_packet("level3", 60, 3), 0x01),
        (connect_packet("broker", 60, 4), 0x02),
    ] {
        let (_raw, connack) = RawClient::connect(scene.addr, &connect).await;
        assert_eq!(connack, [0x20, 0x02, 0x00, code]);
    }
    assert!(
        scene
            .broker
            .metrics()
            .protocol_errors
            .load(Ordering::Relaxed)
            >= 10
    );
}

// ---------------------------------------------------------------------------------------------
// Time: slowloris
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn slowloris_is_closed_at_the_connect_timeout() {
    let mut scene = Scene::start(hostile_config()).await;
    // One byte every 100 ms: the CONNECT (over 100 bytes) would take more than 10 s, the
    // connect timeout is 0.5 s, and the bytes that do arrive must not extend the deadline.
    // The bound below is 10 times the timeout, so that a loaded machine's scheduling delays
    // cannot fail the test while a deadline that moved with each byte still would.
    let connect = connect_packet(&"slowloris-".repeat(10), 60, 4);
    let mut stream = TcpStream::connect(scene.addr).await.expect("TCP connect");
    let start = Instant::now();
    let mut closed_after = None;
    for byte in &connect[..connect.len() - 1] {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 16];
        match timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!("slowloris got {:02x?}", &buf[..n]),
            Err(_) => {}
        }
    }
    let elapsed = match closed_after {
        Some(elapsed) => elapsed,
        None => {
            assert!(
                read_to_close(&mut stream, Duration::from_secs(2))
                    .await
                    .is_some(),
                "slowloris still connected"
            );
            start.elapsed()
        }
    };
    assert!(
        elapsed <= Duration::from_secs(5),
        "slowloris closed after {elapsed:?}, expected about 0.5 s (at most 5 s)"
    );
    // A socket that sends nothing at all.
    let mut silent = TcpStream::connect(scene.addr).await.expect("TCP connect");
    let start = Instant::now();
    assert_eq!(
        read_to_close(&mut silent, Duration::from_secs(5)).await,
        Some(Vec::new()),
        "silent socket closed without a byte"
    );
    println!(
        "slowloris closed after {elapsed:?}, silent socket after {:?}",
        start.elapsed()
    );
    assert_eq!(
        scene
            .broker
            .metrics()
            .connect_timeouts
            .load(Ordering::Relaxed),
        2
    );
    scene.assert_no_unknown_presence("slowloris").await;
    scene.assert_healthy("slowloris").await;
}
