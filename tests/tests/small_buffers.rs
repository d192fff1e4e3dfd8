//! End-to-end: a connection of `activity-broker` starts with small buffers (a 256-byte read
//! buffer, a transmit buffer the size of its CONNACK; issue 19, docs/scale.md "Memory per idle
//! connection"), which grow for what does not fit: a CONNECT larger than the read buffer with a
//! burst behind it in the same write, many answers to one read, and large packets in both
//! directions after the connection was idle. A connection that had a burst gives its grown
//! buffers back once it idles (`IDLE_RELEASE`), and grows them again for the next burst. An
//! idle connection holds no read buffer: it reads its first bytes in its wait, and keeps the
//! buffer of a partial packet.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tests::hostile::{packet, publish_packet, push_str, read_n, subscribe_packet};
use tests::{RawClient, WAIT, connect_packet, start_broker, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// A clean-session MQTT 3.1.1 CONNECT of `client_id` with a QoS 0 will of `will_len` bytes.
fn connect_with_will(client_id: &str, will_len: usize) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, b"MQTT");
    body.push(4);
    body.push(0x02 | 0x04); // clean session, will flag (QoS 0, not retained)
    body.extend_from_slice(&60u16.to_be_bytes());
    push_str(&mut body, client_id.as_bytes());
    push_str(&mut body, b"wills/small-buffers");
    push_str(&mut body, &vec![b'w'; will_len]);
    packet(0x10, &body)
}

/// Reads whole packets from `stream` until `done` says the counts by packet type (the high
/// nibble of the first byte) are complete, within [`WAIT`]; returns the counts.
async fn read_packets(stream: &mut TcpStream, done: impl Fn(&[u64; 16]) -> bool) -> [u64; 16] {
    let deadline = Instant::now() + WAIT;
    let mut counts = [0u64; 16];
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while !done(&counts) {
        let n = timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("packets missing after {WAIT:?}: {counts:?}"))
            .expect("read");
        assert!(n > 0, "the broker closed the connection: {counts:?}");
        buf.extend_from_slice(&chunk[..n]);
        tests::hostile::take_packets(&mut buf, |first| counts[usize::from(first >> 4)] += 1);
    }
    counts
}

const PUBACK: usize = 4;
const PUBLISH: usize = 3;
const SUBACK: usize = 9;

#[tokio::test]
async fn a_large_connect_with_a_burst_behind_it_is_read_and_answered_whole() {
    let broker = start_broker(test_config()).await;
    let addr: SocketAddr = broker.local_addr();
    // One write: a CONNECT of about 3 KB (larger than the first read buffer), a SUBSCRIBE and
    // 300 QoS 1 PUBLISHes (about 20 KB: reads that fill the buffer, and 300 PUBACKs to one
    // read's worth of input, more than the CONNACK-sized transmit buffer holds).
    let mut burst = connect_with_will("big-connect", 3000);
    burst.extend(subscribe_packet(1, b"small/#", 0));
    const MESSAGES: u64 = 300;
    for i in 0..MESSAGES {
        let pkid = u16::try_from(i + 2).expect("small");
        let topic = format!("small/{i}");
        burst.extend(publish_packet(topic.as_bytes(), 1, pkid, &[b'p'; 50]));
    }
    let mut raw = RawClient::open(addr).await;
    raw.stream.write_all(&burst).await.expect("write the burst");
    assert_eq!(read_n(&mut raw.stream, 4).await, [0x20, 0x02, 0x00, 0x00]);
    let counts = read_packets(&mut raw.stream, |c| {
        c[SUBACK] == 1 && c[PUBACK] == MESSAGES && c[PUBLISH] == MESSAGES
    })
    .await;
    assert_eq!(
        (counts[SUBACK], counts[PUBACK], counts[PUBLISH]),
        (1, MESSAGES, MESSAGES)
    );
}

#[tokio::test]
async fn an_idle_connection_sends_and_receives_large_packets() {
    let broker = start_broker(test_config()).await;
    let addr: SocketAddr = broker.local_addr();
    let (mut idle, connack) = RawClient::connect(addr, &connect_packet("idle", 60, 4)).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    // Small packets keep the small buffers.
    idle.stream
        .write_all(&subscribe_packet(1, b"large/#", 0))
        .await
        .expect("write SUBSCRIBE");
    assert_eq!(
        read_n(&mut idle.stream, 5).await,
        [0x90, 0x03, 0x00, 0x01, 0x00]
    );
    idle.stream
        .write_all(&[0xC0, 0x00])
        .await
        .expect("write PINGREQ");
    assert_eq!(read_n(&mut idle.stream, 2).await, [0xD0, 0x00]);
    // Then a 20 KB PUBLISH from it (the read buffer grows) and one to it (the transmit buffer
    // grows), each whole.
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let big = publish_packet(b"large/1", 1, 7, &payload);
    idle.stream.write_all(&big).await.expect("write PUBLISH");
    // The PUBACK and the delivery (QoS 0: the subscription's), in either order.
    let delivery = publish_packet(b"large/1", 0, 0, &payload);
    let got = read_n(&mut idle.stream, 4 + delivery.len()).await;
    let (ack, rest) = if got.starts_with(&[0x40, 0x02]) {
        (&got[..4], &got[4..])
    } else {
        (&got[delivery.len()..], &got[..delivery.len()])
    };
    assert_eq!(ack, [0x40, 0x02, 0x00, 0x07]);
    assert!(
        rest == delivery.as_slice(),
        "the delivery is the message, whole"
    );
}

/// Sends a 20 KB QoS 0 PUBLISH on `large/1` from `client` (subscribed to `large/#`) and reads
/// its delivery back, whole: both of the connection's buffers grow past 20 KB.
async fn twenty_kb_round_trip(client: &mut RawClient) {
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let message = publish_packet(b"large/1", 0, 0, &payload);
    client
        .stream
        .write_all(&message)
        .await
        .expect("write PUBLISH");
    let got = read_n(&mut client.stream, message.len()).await;
    assert!(got == message, "the delivery is the message, whole");
}

/// Waits until `done` holds for the broker's (buffers released, bytes released) counters.
async fn wait_released(
    broker: &adapter_tokio::broker::Broker,
    done: impl Fn(u64, u64) -> bool,
) -> (u64, u64) {
    let metrics = broker.metrics();
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = (
            metrics.buffers_released.load(Ordering::Relaxed),
            metrics.buffer_bytes_released.load(Ordering::Relaxed),
        );
        if done(counts.0, counts.1) {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "buffers not released within {WAIT:?}: {counts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_connection_gives_its_grown_buffers_back_once_it_idles_and_grows_them_again() {
    let broker = start_broker(test_config()).await;
    let addr: SocketAddr = broker.local_addr();
    let (mut client, connack) = RawClient::connect(addr, &connect_packet("bursty", 60, 4)).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    client
        .stream
        .write_all(&subscribe_packet(1, b"large/#", 0))
        .await
        .expect("write SUBSCRIBE");
    assert_eq!(
        read_n(&mut client.stream, 5).await,
        [0x90, 0x03, 0x00, 0x01, 0x00]
    );
    // Idle after its SUBSCRIBE: it gives back what it holds, a few hundred bytes.
    let (_, small) = wait_released(&broker, |times, _| times >= 1).await;
    assert!(small < 4096, "an idle connection held {small} bytes");
    // A burst: a 20 KB message each way. Its transmit buffer grows past 20 KB, its read buffer
    // past 1 KiB free (the room it keeps before a read), and the connection gives both back
    // once idle.
    const GROWN: u64 = 20_000 + 1024;
    twenty_kb_round_trip(&mut client).await;
    let (_, bytes) = wait_released(&broker, |_, bytes| bytes >= small + GROWN).await;
    // And it works as before: the buffers grow again for the next burst, and go again.
    twenty_kb_round_trip(&mut client).await;
    wait_released(&broker, |_, again| again >= bytes + GROWN).await;
    client
        .stream
        .write_all(&[0xC0, 0x00])
        .await
        .expect("write PINGREQ");
    assert_eq!(read_n(&mut client.stream, 2).await, [0xD0, 0x00]);
}

#[tokio::test]
async fn an_idle_connection_reads_more_than_its_idle_read_and_keeps_half_a_packet() {
    let broker = start_broker(test_config()).await;
    let addr: SocketAddr = broker.local_addr();
    let (mut client, connack) = RawClient::connect(addr, &connect_packet("split", 60, 4)).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    // Idle since its CONNACK, without a read buffer: one write of a SUBSCRIBE, a PINGREQ and a
    // 100-byte message (more than the 32 bytes the idle wait reads) wakes it, all answered.
    let message = publish_packet(b"split/1", 0, 0, &[b'm'; 100]);
    let mut burst = subscribe_packet(1, b"split/#", 0);
    burst.extend_from_slice(&[0xC0, 0x00]);
    burst.extend_from_slice(&message);
    client.stream.write_all(&burst).await.expect("write burst");
    let got = read_n(&mut client.stream, 5 + 2 + message.len()).await;
    assert_eq!(got[..7], [0x90, 0x03, 0x00, 0x01, 0x00, 0xD0, 0x00]);
    assert!(
        got[7..] == message[..],
        "the delivery is the message, whole"
    );
    // Idle again after the burst (its buffers given back once), then half a message wakes it,
    // and it idles again holding that half: the rest completes the message.
    wait_released(&broker, |times, _| times >= 1).await;
    client
        .stream
        .write_all(&message[..10])
        .await
        .expect("write half");
    wait_released(&broker, |times, _| times >= 2).await;
    client
        .stream
        .write_all(&message[10..])
        .await
        .expect("write the rest");
    let got = read_n(&mut client.stream, message.len()).await;
    assert!(got == message, "the delivery is the message, whole");
}
