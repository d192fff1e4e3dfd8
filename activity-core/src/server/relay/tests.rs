//! Scenario tests of relay mode: drive one relayed connection with the client's and the
//! upstream's bytes and a fake clock, and check what goes each way, the events (field by
//! field) and the counters.

use serde_json::{Value, json};

mod access;
mod aliases;

use super::*;
use crate::acks::FixedAckStore;
use crate::codec::{Connect, LastWill, SubAck, SubAckCodes, SubscribeFilters, UnsubscribeFilters};
use crate::event::{EncodeOptions, Event, EventKind, Transport, encode, encoded_len_bound};
use crate::server::{Delivery, FixedSessionStore, Limits, Peer, Routed, ServerConfig, StoreFull};

type Under =
    Relay<FixedAckStore<4, 128>, FixedSessionStore<4, 32, 2, 64>, FixedRequestStore<3, 128>>;

const T0: u64 = 1_700_000_000_000;
const ENVELOPE: &[u8] = br#"{"product_id":"p1","message_id":"m42","payload":"on"}"#;
/// No bytes.
const NOTHING: [u8; 0] = [];
const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];

/// Records everything a relay hands its driver.
#[derive(Default)]
struct Rec {
    upstream: Vec<u8>,
    accepted: Vec<String>,
    connects: usize,
    published: Vec<String>,
    ends: Vec<CloseCause>,
    events: Vec<(EventKind, Value)>,
    counts: Vec<Counter>,
    /// Topics and filters the access rules refuse.
    deny: Vec<&'static str>,
    /// Whether the client may subscribe to the system topics.
    listed: bool,
}

impl Output for Rec {
    fn route(&mut self, route: Route<'_>) -> Routed {
        match route {
            Route::Connect(_) => self.connects += 1,
            Route::Publish(p) => self.published.push(p.topic.to_owned()),
            Route::End { cause, .. } => self.ends.push(cause),
            other => panic!("no {other:?} in relay mode"),
        }
        Routed::Accepted
    }

    fn event(&mut self, event: &Event<'_>) -> Option<Delivery<'_>> {
        let options = EncodeOptions::default();
        let mut buf = vec![0u8; encoded_len_bound(event, &options)];
        let n = encode(event, &options, &mut buf).expect("fits its bound");
        let mut value: Value = serde_json::from_slice(&buf[..n]).expect("valid JSON");
        let object = value.as_object_mut().expect("an object");
        object.remove("ts");
        object.remove("session_seq");
        self.events.push((event.kind(), value));
        None
    }

    fn count(&mut self, counter: Counter) {
        if !matches!(counter, Counter::PacketIn | Counter::PacketOut) {
            self.counts.push(counter);
        }
    }

    fn is_system_subscriber(&self, _client_id: &str, _username: Option<&str>) -> bool {
        self.listed
    }

    fn is_allowed(&self, access: crate::server::Access<'_>) -> bool {
        !self.deny.contains(&access.topic)
    }
}

impl RelayOutput for Rec {
    fn forward(&mut self, packet: &[u8]) {
        self.upstream.extend_from_slice(packet);
    }

    fn upstream_accepted(&mut self, client_id: &str) {
        self.accepted.push(client_id.to_owned());
    }
}

impl Rec {
    fn kinds(&self) -> Vec<EventKind> {
        self.events.iter().map(|(kind, _)| *kind).collect()
    }

    /// What went upstream since the last call.
    fn take_upstream(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.upstream)
    }
}

/// A relayed connection under test, with the client's unconsumed bytes.
struct Client {
    relay: Under,
    out: Rec,
    rx: Vec<u8>,
    now: u64,
}

impl Client {
    fn new(config: ServerConfig) -> Self {
        let peer = Peer {
            addr: Some("192.0.2.7:50312"),
            is_loopback: false,
            transport: Transport::Tcp,
        };
        let conn = Connection::new(
            config,
            FixedAckStore::new(),
            FixedSessionStore::new(),
            peer,
            T0,
            0x2a,
        );
        Client {
            relay: Relay::new(conn, FixedRequestStore::new(), 5_000),
            out: Rec::default(),
            rx: Vec::new(),
            now: T0,
        }
    }

    /// Feeds the client's `bytes`; what the engine answered the client itself.
    fn send(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.rx.extend_from_slice(bytes);
        let mut tx = [0u8; 1024];
        let p = self
            .relay
            .handle_input(self.now, &self.rx, &mut tx, &mut self.out);
        self.rx.drain(..p.consumed);
        tx[..p.written].to_vec()
    }

    fn answer(&mut self, answer: ConnectAnswer) -> Vec<u8> {
        let mut tx = [0u8; 1024];
        let p =
            self.relay
                .handle_connect_answer(self.now, answer, &self.rx, &mut tx, &mut self.out);
        self.rx.drain(..p.consumed);
        tx[..p.written].to_vec()
    }

    /// Feeds the upstream's `bytes`: what reaches the client, forwarded then written, and how
    /// many bytes were forwarded.
    fn upstream(&mut self, bytes: &[u8]) -> (Vec<u8>, usize) {
        let mut tx = [0u8; 1024];
        let lookup = |e: &Envelope| {
            (e.message_id.as_id() == crate::event::Id::Str("m42"))
                .then(|| heapless::String::try_from("pub-1").unwrap())
        };
        let r = self
            .relay
            .handle_upstream_input(self.now, bytes, &mut tx, &mut self.out, lookup);
        assert_eq!(r.consumed, bytes.len(), "whole packets are consumed");
        let mut to_client = bytes[..r.forward].to_vec();
        to_client.extend_from_slice(&tx[..r.written]);
        (to_client, r.forward)
    }

    /// Connected as `c`: CONNECT forwarded, the upstream's CONNACK relayed; the records so
    /// far cleared.
    fn connected_as(config: ServerConfig, c: Connect<'static>) -> Self {
        let mut client = Client::new(config);
        assert_eq!(client.send(&encoded(c)), NOTHING);
        assert!(client.relay.is_authorizing());
        assert_eq!(client.answer(ConnectAnswer::accept(false)), NOTHING);
        assert_eq!(
            client.out.take_upstream(),
            encoded(c),
            "the CONNECT, unchanged"
        );
        assert!(client.relay.is_awaiting_upstream());
        assert_eq!(client.upstream(&CONNACK_OK), (CONNACK_OK.to_vec(), 4));
        assert!(client.relay.is_connected());
        client.out = Rec::default();
        client
    }

    fn connected(id: &'static str) -> Self {
        Self::connected_as(ServerConfig::default(), connect(id))
    }
}

fn encoded(packet: impl Into<Packet<'static>> + Copy) -> Vec<u8> {
    let packet: Packet<'_> = packet.into();
    let mut buf = vec![0u8; packet.encoded_len().expect("encodable")];
    packet.encode(&mut buf).expect("encodes");
    buf
}

fn connect(client_id: &'static str) -> Connect<'static> {
    Connect {
        protocol_name: crate::codec::ProtocolName::Mqtt,
        properties: crate::codec::Properties::EMPTY,
        protocol_level: 4,
        client_id,
        clean_session: true,
        keep_alive: 30,
        username: None,
        password: None,
        will: None,
    }
}

fn publish(topic: &'static str, qos: QoS, pkid: Option<u16>, payload: &'static [u8]) -> Vec<u8> {
    encoded(Publish {
        properties: crate::codec::Properties::EMPTY,
        dup: false,
        qos,
        retain: false,
        topic,
        pkid,
        payload,
    })
}

fn subscribe(pkid: u16, filters: &'static [(&'static str, QoS)]) -> Vec<u8> {
    encoded(Subscribe {
        properties: crate::codec::Properties::EMPTY,
        pkid,
        filters: SubscribeFilters::from_slice(filters),
    })
}

fn unsubscribe(pkid: u16, filters: &'static [&'static str]) -> Vec<u8> {
    encoded(Unsubscribe {
        properties: crate::codec::Properties::EMPTY,
        pkid,
        filters: UnsubscribeFilters::from_slice(filters),
    })
}

fn suback(pkid: u16, codes: &'static [SubAckCode]) -> Vec<u8> {
    encoded(SubAck {
        properties: crate::codec::Properties::EMPTY,
        pkid,
        codes: SubAckCodes::from_slice(codes),
    })
}

#[test]
fn the_connect_goes_upstream_and_the_upstreams_connack_connects() {
    let mut client = Client::new(ServerConfig::default());
    let mut c = connect("sensor-7");
    c.username = Some("alice");
    c.password = Some(b"secret");
    c.will = Some(LastWill {
        properties: crate::codec::Properties::EMPTY,
        topic: "w/t",
        message: b"gone",
        qos: QoS::AtLeastOnce,
        retain: false,
    });
    // A PINGREQ pipelined behind the CONNECT waits for the upstream's answer.
    let mut bytes = encoded(c);
    bytes.extend_from_slice(&[0xC0, 0]);
    assert_eq!(client.send(&bytes), NOTHING);
    assert_eq!(client.out.connects, 1);
    assert!(
        client.out.upstream.is_empty(),
        "nothing upstream before the verdict"
    );
    assert_eq!(client.answer(ConnectAnswer::accept(false)), NOTHING);
    assert_eq!(client.out.take_upstream(), encoded(c));
    assert_eq!(
        client.send(&[]),
        NOTHING,
        "nothing is read while the upstream decides"
    );
    assert_eq!(client.rx, [0xC0, 0]);
    assert!(
        client.out.events.is_empty(),
        "no event before the upstream accepted"
    );
    assert_eq!(
        client.relay.poll_timeout(),
        Some(T0 + 5_000),
        "the upstream's answer timeout"
    );

    // The upstream's CONNACK, with session present, goes to the client unchanged.
    let connack = [0x20, 2, 1, 0];
    assert_eq!(client.upstream(&connack), (connack.to_vec(), 4));
    assert_eq!(client.out.accepted, ["sensor-7"]);
    assert_eq!(
        client.out.events,
        [(
            EventKind::Connected,
            json!({"client_id":"sensor-7","username":"alice","proto_ver":4,"keepalive":30,
                   "clean_session":true,"peer":"192.0.2.7:50312","transport":"tcp"})
        )]
    );
    assert_eq!(client.relay.poll_timeout(), Some(T0 + 45_000));
    // Now the PINGREQ goes upstream; the upstream answers it.
    assert_eq!(client.send(&[]), NOTHING);
    assert_eq!(client.out.take_upstream(), [0xC0, 0]);
    assert_eq!(client.upstream(&[0xD0, 0]), (vec![0xD0, 0], 2));

    // The will is the upstream's: the engine publishes none when the client vanishes.
    let mut tx = [0u8; 64];
    client.relay.handle_close(
        T0 + 1,
        CloseCause::TransportClosed,
        &mut tx,
        &mut client.out,
    );
    assert!(client.out.published.is_empty(), "no will from the relay");
    assert_eq!(
        client.out.kinds(),
        [EventKind::Connected, EventKind::Disconnected]
    );
    assert_eq!(client.out.ends, [CloseCause::TransportClosed]);
}

#[test]
fn refusals_of_the_engine_the_driver_and_the_upstream() {
    // The engine's own rule: the CONNACK is written here, nothing goes upstream.
    let mut client = Client::new(ServerConfig::default());
    assert_eq!(client.send(&encoded(connect("broker"))), [0x20, 2, 0, 2]);
    assert!(client.relay.is_closed() && client.out.upstream.is_empty());
    assert_eq!(client.out.kinds(), [EventKind::Refused]);
    assert_eq!(client.out.events[0].1["client_id"], "broker");
    assert_eq!(
        client.out.events[0].1["reason"],
        "client_identifier_not_valid"
    );

    // The driver's verdict (credentials, the limit, an upstream it cannot reach).
    let mut client = Client::new(ServerConfig::default());
    client.send(&encoded(connect("c")));
    assert_eq!(
        client.answer(ConnectAnswer::Refuse(ReasonCode::BadUserNameOrPassword)),
        [0x20, 2, 0, 4]
    );
    assert!(client.relay.is_closed() && client.out.upstream.is_empty());
    assert_eq!(client.out.kinds(), [EventKind::Refused]);
    assert_eq!(client.out.events[0].1["reason_code"], 4);

    // The upstream's refusal: relayed, counted, reported like the relay's own.
    let mut client = Client::new(ServerConfig::default());
    client.send(&encoded(connect("c")));
    client.answer(ConnectAnswer::accept(false));
    let refusal = [0x20, 2, 0, 5];
    assert_eq!(client.upstream(&refusal), (refusal.to_vec(), 4));
    assert!(client.relay.is_closed());
    assert!(client.out.accepted.is_empty());
    assert_eq!(client.out.kinds(), [EventKind::Refused]);
    assert_eq!(client.out.events[0].1["client_id"], "c");
    assert_eq!(client.out.events[0].1["reason_code"], 5);
    assert_eq!(client.out.events[0].1["reason"], "not_authorized");
    assert_eq!(
        client.out.counts,
        [Counter::ConnectRefused(ReasonCode::NotAuthorized)]
    );
}

#[test]
fn an_upstream_that_does_not_answer_the_connect_gets_the_client_connack_3() {
    let awaiting = || {
        let mut client = Client::new(ServerConfig::default());
        client.send(&encoded(connect("c")));
        client.answer(ConnectAnswer::accept(false));
        client
    };
    let mut tx = [0u8; 64];
    // Silent past the answer timeout.
    let mut silent = awaiting();
    assert_eq!(
        silent
            .relay
            .handle_timeout(T0 + 4_999, &mut tx, &mut silent.out),
        0
    );
    let n = silent
        .relay
        .handle_timeout(T0 + 5_000, &mut tx, &mut silent.out);
    assert_eq!(tx[..n], [0x20, 2, 0, 3]);
    // Gone before its CONNACK.
    let mut gone = awaiting();
    let n = gone
        .relay
        .handle_close(T0, CloseCause::RouterClosed, &mut tx, &mut gone.out);
    assert_eq!(tx[..n], [0x20, 2, 0, 3]);
    // Something else than a CONNACK: not relayed.
    let mut confused = awaiting();
    assert_eq!(confused.upstream(&[0xD0, 0]), (vec![0x20, 2, 0, 3], 0));
    for client in [silent, gone, confused] {
        assert!(client.relay.is_closed());
        assert!(client.out.ends.is_empty());
        assert_eq!(client.out.kinds(), [EventKind::Refused]);
        assert_eq!(client.out.events[0].1["client_id"], "c");
        assert_eq!(client.out.events[0].1["reason"], "server_unavailable");
        assert_eq!(
            client.out.counts,
            [Counter::ConnectRefused(ReasonCode::ServerUnavailable)]
        );
    }
}

#[test]
fn publishes_go_upstream_with_their_message_event() {
    let mut client = Client::connected("pub-1");
    let bytes = publish("devices/7", QoS::AtLeastOnce, Some(3), ENVELOPE);
    assert_eq!(
        client.send(&bytes),
        NOTHING,
        "the upstream answers the PUBACK"
    );
    assert_eq!(client.out.take_upstream(), bytes);
    assert_eq!(client.out.published, ["devices/7"]);
    assert_eq!(client.out.kinds(), [EventKind::Message]);
    assert_eq!(client.upstream(&[0x40, 2, 0, 3]).1, 4);

    // QoS 2: forwarded with its PUBREL; a resend before the PUBREL is no second message.
    let bytes = publish("t", QoS::ExactlyOnce, Some(4), b"x");
    client.send(&bytes);
    client.send(&bytes);
    assert_eq!(client.out.take_upstream(), [bytes.clone(), bytes].concat());
    assert_eq!(client.out.kinds(), [EventKind::Message, EventKind::Message]);
    assert_eq!(client.relay.connection().store().inbound_qos2_count(), 1);
    assert_eq!(client.send(&[0x62, 2, 0, 4]), NOTHING);
    assert_eq!(client.out.take_upstream(), [0x62, 2, 0, 4]);
    assert_eq!(client.relay.connection().store().inbound_qos2_count(), 0);
}

#[test]
fn a_publish_on_a_system_topic_is_dropped_answered_here_and_the_client_stays() {
    let mut client = Client::connected("forger");
    assert_eq!(
        client.send(&publish("SYSTEM/message", QoS::AtMostOnce, None, b"{}")),
        NOTHING
    );
    assert_eq!(
        client.send(&publish("SYSTEM/msgack", QoS::AtLeastOnce, Some(7), b"{}")),
        [0x40, 2, 0, 7]
    );
    assert_eq!(
        client.send(&publish("$SYS/x", QoS::ExactlyOnce, Some(8), b"{}")),
        [0x50, 2, 0, 8]
    );
    // Its resend gets the same answer, and its PUBREL the engine's PUBCOMP.
    assert_eq!(
        client.send(&publish("$SYS/x", QoS::ExactlyOnce, Some(8), b"{}")),
        [0x50, 2, 0, 8]
    );
    assert_eq!(client.send(&[0x62, 2, 0, 8]), [0x70, 2, 0, 8]);
    assert!(
        client.out.upstream.is_empty(),
        "nothing reached the upstream"
    );
    assert!(client.out.published.is_empty());
    // One `denied` per publish, none for the resend.
    assert_eq!(client.out.kinds(), [EventKind::Denied; 3]);
    assert_eq!(
        client.out.events[2].1,
        json!({"client_id":"forger","topic":"$SYS/x","action":"publish"})
    );
    assert_eq!(client.out.counts, [Counter::PublishDenied; 3]);
    assert!(client.relay.is_connected());
    // The id is free again: the next QoS 2 publish with it goes upstream.
    let bytes = publish("ok", QoS::ExactlyOnce, Some(8), b"x");
    client.send(&bytes);
    assert_eq!(client.out.take_upstream(), bytes);
}

#[test]
fn one_qos2_publish_past_the_limit_closes_the_connection() {
    let config = ServerConfig {
        limits: Limits {
            max_inbound_qos2: 2,
            ..Limits::HOST
        },
        ..ServerConfig::default()
    };
    let mut client = Client::connected_as(config, connect("hoarder"));
    client.send(&publish("t", QoS::ExactlyOnce, Some(1), b"x"));
    client.send(&publish("SYSTEM/message", QoS::ExactlyOnce, Some(2), b"x"));
    assert!(client.relay.is_connected());
    let third = publish("t", QoS::ExactlyOnce, Some(3), b"x");
    assert_eq!(client.send(&third), NOTHING);
    assert!(
        !client.out.upstream.ends_with(&third),
        "the publish past the limit did not go upstream"
    );
    assert_eq!(client.out.ends, [CloseCause::QuotaExceeded]);
    let (_, disconnected) = client.out.events.last().expect("disconnected");
    assert_eq!(disconnected["reason"], "protocol_error");
    assert!(client.out.counts.contains(&Counter::QuotaExceeded));
    // The session is over, but the upstream still owes the PUBREC of the first publish, as the
    // engine answers what came before a fault in every mode: relayed, then the connection
    // closes. The client is no longer read.
    assert!(client.relay.is_draining());
    assert_eq!(client.relay.poll_timeout(), Some(T0 + 5_000));
    client.rx.clear();
    client.out.upstream.clear();
    client.send(&publish("t", QoS::AtLeastOnce, Some(4), b"x"));
    assert!(client.out.upstream.is_empty(), "nothing more goes upstream");
    assert_eq!(client.upstream(&[0x50, 2, 0, 1]), (vec![0x50, 2, 0, 1], 4));
    assert!(client.relay.is_closed());
}

#[test]
fn subscribed_events_come_with_the_upstreams_suback() {
    let mut client = Client::connected("sub");
    let bytes = subscribe(5, &[("a/#", QoS::AtLeastOnce), ("b", QoS::ExactlyOnce)]);
    assert_eq!(client.send(&bytes), NOTHING);
    assert_eq!(client.out.take_upstream(), bytes);
    assert!(
        client.out.events.is_empty(),
        "no event before the upstream's SUBACK"
    );
    let answer = suback(
        5,
        &[SubAckCode::Success(QoS::AtLeastOnce), SubAckCode::Failure],
    );
    assert_eq!(client.upstream(&answer), (answer.clone(), answer.len()));
    assert_eq!(
        client.out.events,
        [(
            EventKind::Subscribed,
            json!({"client_id":"sub","topic":"a/#","qos":1})
        )]
    );
    assert_eq!(
        client.relay.connection().store().subscription("a/#"),
        Some(QoS::AtLeastOnce)
    );
    assert_eq!(client.relay.connection().store().subscription("b"), None);

    // UNSUBSCRIBE: an event at the UNSUBACK for the filter held, none for the other.
    client.out.events.clear();
    let bytes = unsubscribe(6, &["a/#", "never"]);
    assert_eq!(client.send(&bytes), NOTHING);
    assert_eq!(client.out.take_upstream(), bytes);
    assert!(client.out.events.is_empty());
    assert_eq!(client.upstream(&[0xB0, 2, 0, 6]).1, 4);
    assert_eq!(
        client.out.events,
        [(
            EventKind::Unsubscribed,
            json!({"client_id":"sub","topic":"a/#"})
        )]
    );
}

#[test]
fn a_subscribe_the_rules_refuse_is_answered_here_whole() {
    let mut client = Client::connected("anon");
    let bytes = subscribe(
        9,
        &[
            ("SYSTEM/#", QoS::AtLeastOnce),
            ("plain/#", QoS::AtLeastOnce),
            ("$SYS/#", QoS::AtMostOnce),
        ],
    );
    assert_eq!(client.send(&bytes), [0x90, 5, 0, 9, 0x80, 0x80, 0x80]);
    assert!(client.out.upstream.is_empty());
    assert_eq!(client.out.kinds(), [EventKind::Denied; 2]);
    assert_eq!(
        client.out.counts,
        [
            Counter::SubscriptionDenied,
            Counter::SubscriptionDenied,
            Counter::SubscriptionRefused
        ]
    );
}

#[test]
fn limits_on_filters_and_requests_close_the_connection() {
    let config = ServerConfig {
        limits: Limits {
            max_filters_per_packet: 1,
            ..Limits::HOST
        },
        ..ServerConfig::default()
    };
    let mut client = Client::connected_as(config.clone(), connect("greedy"));
    client.send(&subscribe(
        1,
        &[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce)],
    ));
    assert!(client.relay.is_closed() && client.out.upstream.is_empty());
    assert_eq!(client.out.ends, [CloseCause::QuotaExceeded]);

    let mut client = Client::connected_as(config.clone(), connect("greedy"));
    client.send(&unsubscribe(1, &["a", "b"]));
    assert!(client.relay.is_closed() && client.out.upstream.is_empty());

    // The request store holds 3: a fourth request awaiting its answer closes.
    let mut client = Client::connected_as(config, connect("flood"));
    for pkid in 1..=3 {
        client.send(&subscribe(pkid, &[("a", QoS::AtMostOnce)]));
    }
    assert!(client.relay.is_connected());
    client.send(&unsubscribe(4, &["a"]));
    assert_eq!(client.out.ends, [CloseCause::QuotaExceeded]);
    // The three SUBSCRIBEs before it still get the upstream's SUBACKs; one is enough here,
    // the answer timeout ends the wait for the others.
    assert!(client.relay.is_draining());
    let answer = suback(1, &[SubAckCode::Success(QoS::AtMostOnce)]);
    assert_eq!(client.upstream(&answer).1, answer.len());
    assert!(client.relay.is_draining());
    let mut tx = [0u8; 16];
    client
        .relay
        .handle_timeout(T0 + 4_999, &mut tx, &mut client.out);
    assert!(client.relay.is_draining());
    client
        .relay
        .handle_timeout(T0 + 5_000, &mut tx, &mut client.out);
    assert!(client.relay.is_closed());
    assert!(
        client
            .out
            .kinds()
            .iter()
            .all(|k| *k != EventKind::Subscribed),
        "the session is over"
    );
}

#[test]
fn deliveries_are_relayed_and_their_acknowledgements_give_msgack() {
    let mut client = Client::connected("reader");
    let delivery = publish("devices/7", QoS::AtLeastOnce, Some(300), ENVELOPE);
    assert_eq!(
        client.upstream(&delivery),
        (delivery.clone(), delivery.len())
    );
    assert_eq!(client.relay.connection().tracker().pending_acks(), 1);
    assert_eq!(client.send(&[0x40, 2, 1, 44]), NOTHING);
    assert_eq!(client.out.take_upstream(), [0x40, 2, 1, 44]);
    assert_eq!(
        client.out.events,
        [(
            EventKind::MsgAck,
            json!({"pub_client_id":"pub-1","ack_client_id":"reader","product_id":"p1",
                   "message_id":"m42","topic":"devices/7","qos":1})
        )]
    );
    // QoS 2: msgack at PUBREC; the upstream's PUBREL and the client's PUBCOMP pass.
    let delivery = publish("devices/7", QoS::ExactlyOnce, Some(301), ENVELOPE);
    client.upstream(&delivery);
    client.send(&[0x50, 2, 1, 45]);
    assert_eq!(client.out.events.len(), 2);
    assert_eq!(client.upstream(&[0x62, 2, 1, 45]).1, 4);
    client.send(&[0x70, 2, 1, 45]);
    assert_eq!(client.out.take_upstream(), [0x50, 2, 1, 45, 0x70, 2, 1, 45]);

    // Without msgack tracking nothing is remembered.
    client.relay.set_msgack_tracking(false);
    client.upstream(&publish("devices/7", QoS::AtLeastOnce, Some(302), ENVELOPE));
    assert_eq!(client.relay.connection().tracker().pending_acks(), 0);
}

#[test]
fn disconnect_goes_upstream_and_ends_normally() {
    let mut client = Client::connected("polite");
    client.send(&[0xE0, 0]);
    assert_eq!(client.out.take_upstream(), [0xE0, 0]);
    assert!(client.relay.is_closed());
    assert_eq!(client.out.ends, [CloseCause::ClientDisconnect]);
    let (_, ev) = client.out.events.last().expect("disconnected");
    assert_eq!(ev["reason"], "normal");
}

#[test]
fn a_v5_disconnect_asking_for_the_will_goes_upstream_as_sent_and_is_reported() {
    let mut c = connect("leaving");
    c.protocol_level = 5;
    let mut client = Client::new(ServerConfig::default());
    assert_eq!(client.send(&encoded(c)), NOTHING);
    assert_eq!(client.answer(ConnectAnswer::accept(false)), NOTHING);
    assert_eq!(client.out.take_upstream(), encoded(c));
    // An MQTT 5 CONNACK: flags, reason 0x00, no properties.
    let connack = [0x20, 3, 0, 0, 0];
    assert_eq!(client.upstream(&connack), (connack.to_vec(), 5));
    assert!(client.relay.is_connected());
    client.out = Rec::default();

    client.send(&[0xE0, 1, 0x04]);
    assert_eq!(
        client.out.take_upstream(),
        [0xE0, 1, 0x04],
        "the upstream gets reason 0x04 and publishes the will"
    );
    assert!(client.relay.is_closed());
    assert_eq!(client.out.ends, [CloseCause::ClientDisconnectWithWill]);
    let (_, ev) = client.out.events.last().expect("disconnected");
    assert_eq!(ev["reason"], "disconnect_with_will");
}

#[test]
fn a_broken_upstream_or_client_closes_and_nothing_more_is_relayed() {
    // The upstream sends what only a client sends: what came before it is still relayed.
    let mut client = Client::connected("c");
    let bytes = [&[0xD0, 0][..], &subscribe(1, &[("a", QoS::AtMostOnce)])].concat();
    assert_eq!(client.upstream(&bytes), (vec![0xD0, 0], 2));
    assert!(client.relay.is_closed());
    assert_eq!(client.out.ends, [CloseCause::RouterClosed]);
    let (_, ev) = client.out.events.last().expect("disconnected");
    assert_eq!(ev["reason"], "upstream_closed");

    // A delivery over the packet limit.
    let config = ServerConfig {
        limits: Limits {
            max_packet_size: 64,
            ..Limits::HOST
        },
        ..ServerConfig::default()
    };
    let mut client = Client::connected_as(config, connect("c"));
    assert_eq!(
        client.upstream(&publish("t", QoS::AtMostOnce, None, &[0; 100])),
        (vec![], 0)
    );
    assert_eq!(client.out.ends, [CloseCause::PacketTooLarge]);

    // A client packet only a server sends: not forwarded.
    let mut client = Client::connected("c");
    client.send(&[0x20, 2, 0, 0]);
    assert!(client.relay.is_closed() && client.out.upstream.is_empty());
    assert_eq!(client.out.ends, [CloseCause::ProtocolError]);
}

#[test]
fn keep_alive_is_the_engines() {
    let mut client = Client::connected("sleepy");
    let deadline = client.relay.poll_timeout().expect("a deadline");
    assert_eq!(deadline, T0 + 45_000);
    // The upstream's bytes do not keep the client alive.
    client.now = T0 + 40_000;
    client.upstream(&[0xD0, 0]);
    assert_eq!(client.relay.poll_timeout(), Some(deadline));
    let mut tx = [0u8; 64];
    client
        .relay
        .handle_timeout(deadline, &mut tx, &mut client.out);
    assert!(client.relay.is_closed());
    assert_eq!(client.out.ends, [CloseCause::KeepAliveTimeout]);
}

#[test]
fn the_request_store_replaces_forgets_and_hands_back_what_does_not_fit() {
    let mut store = FixedRequestStore::<2, 4>::new();
    store.keep(1, b"ab").unwrap();
    store.keep(1, b"cd").unwrap();
    store.keep(2, b"").unwrap();
    assert_eq!(store.request(1), Some(&b"cd"[..]));
    assert_eq!(store.request(2), Some(&b""[..]));
    assert_eq!(store.keep(3, b"x"), Err(StoreFull));
    assert_eq!(store.keep(2, b"too long"), Err(StoreFull));
    assert!(store.remove(1));
    assert!(!store.remove(1));
    store.clear();
    assert_eq!(store.request(2), None);
}

#[test]
fn the_relays_memory_figures_in_the_crate_docs_hold() {
    type Bare = Relay<FixedAckStore<0, 0>, FixedSessionStore<0, 0, 0, 0>, FixedRequestStore<0, 0>>;
    type BareConnection = Connection<FixedAckStore<0, 0>, FixedSessionStore<0, 0, 0, 0>>;
    let extra = core::mem::size_of::<Bare>() - core::mem::size_of::<BareConnection>();
    let per_request = core::mem::size_of::<FixedRequestStore<2, 128>>()
        - core::mem::size_of::<FixedRequestStore<1, 128>>();
    println!("relay: {extra} B over its connection, a request of 128 B: {per_request} B");
    assert!(extra <= 32, "a relay adds {extra} bytes to its connection");
    assert!(
        per_request <= 128 + 16,
        "a request entry is {per_request} bytes"
    );
}

#[test]
fn a_shutdown_reports_the_end_and_relays_the_upstream_until_closed() {
    let mut client = Client::connected("stayer");
    client.send(&subscribe(1, &[("SYSTEM/#", QoS::AtMostOnce)]));
    let mut tx = [0u8; 64];
    let written = client
        .relay
        .handle_shutdown(client.now, &mut tx, &mut client.out);
    assert_eq!(written, 0, "MQTT 3.1.1 has no server DISCONNECT");
    assert!(client.relay.is_draining());
    // The SUBSCRIBE of the events from a remote client was refused, and reported.
    assert_eq!(
        client.out.kinds(),
        [EventKind::Denied, EventKind::Disconnected]
    );
    assert_eq!(client.out.ends, [CloseCause::ServerShutdown]);
    assert_eq!(
        client.relay.poll_timeout(),
        None,
        "the driver decides how long"
    );
    // The client is no longer read; the upstream's packets (the SUBACK owed, then the others'
    // shutdown events) still reach it, with no event of their own.
    client.out.upstream.clear();
    client.send(&[0xC0, 0]);
    assert!(client.out.upstream.is_empty());
    let answer = suback(1, &[SubAckCode::Success(QoS::AtMostOnce)]);
    assert_eq!(client.upstream(&answer).1, answer.len());
    let event = publish("SYSTEM/presence/disconnected", QoS::AtMostOnce, None, b"{}");
    assert_eq!(client.upstream(&event).1, event.len());
    assert!(client.relay.is_draining());
    assert_eq!(
        client.out.kinds(),
        [EventKind::Denied, EventKind::Disconnected]
    );
    client.relay.handle_close(
        client.now,
        CloseCause::ServerShutdown,
        &mut tx,
        &mut client.out,
    );
    assert!(client.relay.is_closed());
    assert_eq!(client.out.ends.len(), 1, "one end");
}

#[test]
fn mqtt_5_the_upstreams_keep_alive_holds_and_disconnect_may_not_grow_the_expiry() {
    let v5 = Connect {
        protocol_level: 5,
        ..connect("five")
    };
    let mut client = Client::new(ServerConfig {
        // The upstream answers the client: a relay announces nothing of its own.
        limits: Limits {
            server_keep_alive: Some(600),
            ..Limits::HOST
        },
        ..ServerConfig::default()
    });
    client.send(&encoded(v5));
    client.answer(ConnectAnswer::accept(false));
    client.out.take_upstream();
    // CONNACK 0 with Server Keep Alive 2 s.
    let connack = [0x20, 6, 0, 0, 3, 0x13, 0, 2];
    assert_eq!(client.upstream(&connack), (connack.to_vec(), 8));
    assert_eq!(client.relay.poll_timeout(), Some(T0 + 3_000));
    // Session expiry 0 at CONNECT, 60 at DISCONNECT: a protocol error, not forwarded.
    let bytes = client.send(&[0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 60]);
    assert_eq!(bytes[..3], [0xE0, 19, 0x82]);
    assert!(client.out.upstream.is_empty());
    assert_eq!(client.out.ends, [CloseCause::ProtocolError]);
}
