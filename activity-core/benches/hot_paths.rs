//! Criterion benchmarks of the core's hot paths (issue 7): what a broker runs per message.
//!
//! `cargo bench -p activity-core --bench hot_paths` prints the time per operation of:
//! encoding each of the six event kinds to JSON ([`event::encode`]), parsing an envelope that is
//! one and a payload that is not ([`envelope::parse_envelope`]), decoding and encoding a QoS 1
//! PUBLISH with a 100-byte payload ([`codec::decode`], [`Packet::encode`]), and one tracker step
//! ([`Tracker::handle_publish`], and a delivery followed by its PUBACK).

use std::hint::black_box;
use std::time::Duration;

use activity_core::QoS;
use activity_core::acks::FixedAckStore;
use activity_core::codec::{self, Packet, Publish};
use activity_core::envelope;
use activity_core::event::{
    self, Connected, DisconnectReason, Disconnected, EncodeOptions, Event, Id, Message, MsgAck,
    Subscribed, Transport, Unsubscribed,
};
use activity_core::tracker::{
    ConnectInfo, DeliveryInfo, PublishInfo, PublishOutcome, Tracker, TrackerConfig,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_main};

/// A typical timestamp, ms since the Unix epoch (13 digits, as the real ones).
const TS: u64 = 1_795_671_886_321;

/// A 100-byte envelope payload, the size the throughput benchmarks use.
const ENVELOPE: &[u8] =
    br#"{"product_id":"p1","message_id":"m42","payload":"0123456789012345678901234567890123456789012345678"}"#;

/// A 100-byte payload that is JSON but not an envelope (no ids).
const NOT_ENVELOPE: &[u8] =
    br#"{"temperature":21.5,"humidity":40,"unit":"C","sensor":"kitchen-7","battery":3.71,"rssi":-67,"ok":1}"#;

/// The tracker the tokio adapter's connections use: 128 deliveries of up to 256 bytes of text.
type BenchTracker = Tracker<FixedAckStore<128, 256>>;

/// One example of each event kind, as the README shows them.
fn events() -> [(&'static str, Event<'static>); 6] {
    [
        (
            "connected",
            Event::Connected(Connected {
                session_seq: 1,
                session_expiry: None,
                user_properties: activity_core::event::UserProperties::NONE,
                ts: TS,
                client_id: "dashboard",
                username: None,
                proto_ver: 4,
                keepalive: 60,
                clean_session: true,
                peer: Some("127.0.0.1:48072"),
                transport: Some(Transport::Tcp),
            }),
        ),
        (
            "disconnected",
            Event::Disconnected(Disconnected {
                session_seq: 1,
                reason_code: None,
                ts: TS,
                client_id: "dashboard",
                reason: DisconnectReason::Normal,
                connected_at: TS - 312,
            }),
        ),
        (
            "subscribed",
            Event::Subscribed(Subscribed {
                options: None,
                ts: TS,
                client_id: "dashboard",
                topic: "devices/#",
                qos: QoS::AtLeastOnce,
            }),
        ),
        (
            "unsubscribed",
            Event::Unsubscribed(Unsubscribed {
                ts: TS,
                client_id: "tidy",
                topic: "c",
            }),
        ),
        (
            "message",
            Event::Message(Message {
                ts: TS,
                pub_client_id: "controller",
                topic: "devices/7/cmd",
                payload: ENVELOPE,
                qos: QoS::AtLeastOnce,
                retain: false,
            }),
        ),
        (
            "msgack",
            Event::MsgAck(MsgAck {
                reason_code: None,
                ts: TS,
                pub_client_id: Some("controller"),
                ack_client_id: "dashboard",
                product_id: Id::Str("p1"),
                message_id: Id::Str("m42"),
                topic: "devices/7/cmd",
                qos: QoS::AtLeastOnce,
            }),
        ),
    ]
}

fn bench_event_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_encode");
    let options = EncodeOptions::default();
    let mut buf = [0u8; 1024];
    for (name, ev) in events() {
        group.bench_function(name, |b| {
            b.iter(|| event::encode(black_box(&ev), &options, &mut buf).map(black_box))
        });
    }
    group.finish();
}

fn bench_envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_envelope");
    group.bench_function("hit", |b| {
        b.iter(|| envelope::parse_envelope(black_box(ENVELOPE)))
    });
    group.bench_function("miss", |b| {
        b.iter(|| envelope::parse_envelope(black_box(NOT_ENVELOPE)))
    });
    group.finish();
}

fn bench_codec(c: &mut Criterion) {
    let payload = [0x5au8; 100];
    let publish = Packet::Publish(Publish {
        properties: activity_core::codec::Properties::EMPTY,
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "bench/0/data",
        pkid: Some(7),
        payload: &payload,
    });
    let mut wire = [0u8; 256];
    // The packet is valid and 256 bytes are enough for its 118 bytes.
    let len = publish.encode(&mut wire).expect("a valid publish fits");
    let wire = &wire[..len];
    let mut group = c.benchmark_group("codec_publish_100B");
    group.bench_function("decode", |b| {
        b.iter(|| codec::decode(black_box(wire), 1 << 20))
    });
    let mut out = [0u8; 256];
    group.bench_function("encode", |b| {
        b.iter(|| black_box(&publish).encode(&mut out).map(black_box))
    });
    group.finish();
}

/// A tracker after an accepted CONNECT.
fn connected_tracker(client_id: &str) -> BenchTracker {
    let mut tracker = Tracker::new(TrackerConfig::default(), FixedAckStore::new());
    let info = ConnectInfo {
        session_seq: 1,
        session_expiry: None,
        user_properties: activity_core::event::UserProperties::NONE,
        client_id,
        username: None,
        proto_ver: 4,
        keepalive: 60,
        clean_session: true,
        peer: Some("127.0.0.1:40000"),
        transport: Some(Transport::Tcp),
    };
    // An ordinary client id on a fresh tracker: the connect is accepted.
    tracker
        .handle_connect(TS, info)
        .expect("an ordinary id is accepted");
    tracker
}

fn bench_tracker(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker");
    let mut publisher = connected_tracker("controller");
    let publish = PublishInfo {
        topic: "devices/7/cmd",
        payload: ENVELOPE,
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    bench_with_encode(
        &mut group,
        "handle_publish",
        &mut publisher,
        |tracker| match tracker.handle_publish(TS, black_box(publish)) {
            PublishOutcome::Accepted(event) => event,
            PublishOutcome::Denied => None,
        },
    );
    let mut subscriber = connected_tracker("dashboard");
    let mut pkid: u16 = 0;
    bench_with_encode(&mut group, "delivery+puback", &mut subscriber, |tracker| {
        pkid = pkid % 100 + 1;
        let delivery = DeliveryInfo {
            properties: activity_core::codec::Properties::EMPTY,
            pkid,
            qos: QoS::AtLeastOnce,
            topic: "devices/7/cmd",
            payload: black_box(ENVELOPE),
            pub_client_id: Some("controller"),
        };
        tracker.handle_delivery(delivery, |_| None);
        tracker.handle_puback(TS, pkid, None)
    });
    group.finish();
}

/// Benchmarks one tracker step twice: as `name`, the step alone; as `name+encode`, the step
/// and the encoding of the event it returns, as the adapters do per message.
fn bench_with_encode(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    tracker: &mut BenchTracker,
    mut step: impl for<'t> FnMut(&'t mut BenchTracker) -> Option<Event<'t>>,
) {
    group.bench_function(name, |b| {
        b.iter(|| black_box(step(&mut *tracker)).is_some())
    });
    let options = EncodeOptions::default();
    let mut buf = [0u8; 1024];
    group.bench_function(format!("{name}+encode"), |b| {
        b.iter(|| {
            step(&mut *tracker).and_then(|event| event::encode(&event, &options, &mut buf).ok())
        })
    });
}

/// Short runs: the machine is shared, and ns/op settles within a second.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

/// The group, in a private module: the function the macro makes needs no docs there.
mod group {
    use super::{bench_codec, bench_envelope, bench_event_encode, bench_tracker, config};

    criterion::criterion_group! {
        name = benches;
        config = config();
        targets = bench_event_encode, bench_envelope, bench_codec, bench_tracker
    }
}
criterion_main!(group::benches);
