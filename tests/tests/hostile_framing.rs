//! End-to-end: bytes that can never be a valid packet, and acknowledgements that match
//! nothing, from clients that had connected to a real `activity-broker` (issue 6).
//!
//! A fatal one ends in a clean close with the right `disconnected` reason; a harmless one is
//! counted and the client is still served. After each, the bystander of the [`Scene`] keeps
//! publishing and receiving.

use std::sync::atomic::Ordering;

use serde_json::json;
use tests::QUIET;
use tests::hostile::{
    DISCONNECT, MAX_PACKET, PINGREQ, PINGRESP, Scene, ack_packet, hostile_config,
    malformed_headers, publish_packet, read_n, subscribe_packet,
};
use tokio::io::AsyncWriteExt;

// ---------------------------------------------------------------------------------------------
// Malformed bytes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_fixed_headers_close_with_protocol_error() {
    let mut scene = Scene::start(hostile_config()).await;
    scene
        .connected_attacks("bad-", &malformed_headers(), "protocol_error")
        .await;
}

#[tokio::test]
async fn declared_length_over_max_packet_size_closes_with_packet_too_large() {
    let mut scene = Scene::start(hostile_config()).await;
    // Only the fixed header of a 2,048-byte PUBLISH: the broker must not wait for the body.
    scene
        .connected_attack("big-header", &[0x30, 0x80, 0x10], "packet_too_large")
        .await;
    // The whole of a PUBLISH one byte over the limit.
    let empty = publish_packet(b"a/b", 0, 0, &[]).len();
    let over = publish_packet(b"a/b", 0, 0, &vec![b'x'; MAX_PACKET + 1 - empty]);
    assert_eq!(over.len(), MAX_PACKET + 2, "two length bytes once over 127");
    scene
        .connected_attack("big-body", &over, "packet_too_large")
        .await;
    // The largest length the encoding allows (256 MiB - 1).
    scene
        .connected_attack(
            "huge-header",
            &[0x30, 0xFF, 0xFF, 0xFF, 0x7F],
            "packet_too_large",
        )
        .await;
    // A packet of exactly the limit still passes.
    let (mut raw, _) = scene.connect_raw("just-fits").await;
    // 1 type byte, 2 length bytes, 13 of topic, 2 of packet id: 18 bytes before the payload.
    let fits = publish_packet(b"health/fits", 1, 9, &vec![b'y'; MAX_PACKET - 18]);
    assert_eq!(fits.len(), MAX_PACKET);
    raw.stream.write_all(&fits).await.expect("write PUBLISH");
    assert_eq!(read_n(&mut raw.stream, 4).await, ack_packet(0x40, 9));
    let got = scene.bystander.next_publish().await;
    assert_eq!(got.topic, "health/fits");
}

#[tokio::test]
async fn bad_strings_in_packets_close_with_protocol_error() {
    let mut scene = Scene::start(hostile_config()).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // 0xC3 0x28: a two-byte sequence with a bad continuation byte (section 1.5.3).
        ("topic-utf8", publish_packet(b"a/\xC3\x28", 0, 0, b"x")),
        // A lone surrogate, U+D800, encoded as UTF-8 bytes: not well-formed.
        (
            "topic-surrogate",
            publish_packet(b"a/\xED\xA0\x80", 1, 3, b"x"),
        ),
        // U+0000 is forbidden in strings (section 1.5.3).
        ("topic-nul", publish_packet(b"a/\x00/b", 0, 0, b"x")),
        // Wildcards are for filters only (section 3.3.2.1).
        ("topic-plus", publish_packet(b"a/+/b", 0, 0, b"x")),
        ("topic-hash", publish_packet(b"a/#", 1, 4, b"x")),
        ("topic-empty", publish_packet(b"", 0, 0, b"x")),
        ("filter-utf8", subscribe_packet(5, b"a/\xFF", 0)),
        ("filter-nul", subscribe_packet(6, b"a/\x00", 0)),
        // `#` must be last and alone in its level (section 4.7.1.2).
        ("filter-hash", subscribe_packet(7, b"a/#/b", 0)),
        // SUBSCRIBE requested-QoS byte with reserved bits (section 3.8.3.1).
        ("filter-qos-bits", subscribe_packet(8, b"a/b", 0x04)),
    ];
    scene
        .connected_attacks("str-", &cases, "protocol_error")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Protocol abuse that is not fatal
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn acks_for_unknown_packet_ids_are_ignored_and_counted() {
    let mut scene = Scene::start(hostile_config()).await;
    let (mut raw, _) = scene.connect_raw("acker").await;
    let mut bytes = Vec::new();
    for pkid in [1u16, 77, 0xFFFF] {
        bytes.extend(ack_packet(0x40, pkid)); // PUBACK
        bytes.extend(ack_packet(0x50, pkid)); // PUBREC
        bytes.extend(ack_packet(0x70, pkid)); // PUBCOMP
    }
    // PUBREL for a QoS 2 publish never received: answered with PUBCOMP (section 4.3.3).
    bytes.extend(ack_packet(0x62, 42));
    bytes.extend(PINGREQ);
    raw.stream.write_all(&bytes).await.expect("write acks");
    // Every PUBREC gets its PUBREL, known id or not (the engine's rule; MQTT 5 answers an
    // unknown one the same way, with reason 0x92), and nothing reaches the router.
    let mut expected = Vec::new();
    for pkid in [1u16, 77, 0xFFFF] {
        expected.extend(ack_packet(0x62, pkid));
    }
    expected.extend(ack_packet(0x70, 42));
    expected.extend(PINGRESP);
    assert_eq!(
        read_n(&mut raw.stream, expected.len()).await,
        expected,
        "PUBRELs, PUBCOMP, then PINGRESP: the client is still served"
    );
    assert_eq!(
        scene
            .broker
            .metrics()
            .acks_unmatched
            .load(Ordering::Relaxed),
        9,
        "three PUBACKs, three PUBRECs, three PUBCOMPs unmatched"
    );
    // Still connected, and can still publish.
    raw.stream
        .write_all(&publish_packet(b"health/acker", 1, 5, b"still here"))
        .await
        .expect("write PUBLISH");
    assert_eq!(read_n(&mut raw.stream, 4).await, ack_packet(0x40, 5));
    assert_eq!(
        scene.bystander.next_publish().await.topic,
        "health/acker",
        "the acker's publish is routed"
    );
    scene
        .monitor
        .assert_none("disconnected of the acker", QUIET, |e| {
            e.is("disconnected", "acker")
        })
        .await;
    scene.assert_healthy("unknown acks").await;
    raw.stream.write_all(&DISCONNECT).await.expect("DISCONNECT");
    let ev = scene.monitor.next_event("disconnected", "acker").await;
    assert_eq!(ev.json["reason"], json!("normal"));
}
