//! Scenario tests: drive one connection with MQTT bytes and a fake clock, and check the bytes it
//! answers, the routes it asks for, the events (field by field) and the counters.

use serde_json::{Value, json};

mod access;
mod reports;
mod v5;
mod v5_declined;
mod v5_delivery;
mod v5_events;
mod v5_session;

use super::*;
use crate::acks::FixedAckStore;
use crate::codec::{LastWill, SubAck, SubAckCodes};
use crate::event::{EncodeOptions, EventKind, Transport, encode, encoded_len_bound};

type Conn = Connection<FixedAckStore<4, 128>, FixedSessionStore<4, 32, 2, 64>>;

const T0: u64 = 1_700_000_000_000;
/// No bytes.
const NOTHING: [u8; 0] = [];
const ENVELOPE: &[u8] = br#"{"product_id":"p1","message_id":"m42","payload":"on"}"#;

/// A route, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum R {
    Connect(String, Option<String>, bool),
    Publish(String, Vec<u8>, QoS, bool),
    Subscribe(String, QoS),
    Unsubscribe(String),
    Acked(u16, Ack),
    End(u32, CloseCause),
    SessionExpired,
}

/// Records everything; refuses subscriptions to filters in `refuse`, and answers
/// [`Routed::Full`] for those in `full`.
#[derive(Default)]
struct Rec {
    routes: Vec<R>,
    events: Vec<(EventKind, Value)>,
    counts: Vec<Counter>,
    refuse: Vec<&'static str>,
    full: Vec<&'static str>,
    listed: Vec<&'static str>,
    /// Topics and filters the access rules refuse (to any client).
    deny: Vec<&'static str>,
    /// Whether the router cannot reach the sender (the engine delivers its copies).
    except_sender: bool,
    /// The last event's topic and JSON, as published (kept when `except_sender`).
    own_event: Option<(String, Vec<u8>)>,
    /// The packets the engine said it wrote.
    packets_out: usize,
    /// The property block of the last routed publish.
    publish_properties: Vec<u8>,
    /// `RoutedPublish::for_no_local` of each routed publish.
    for_no_local: Vec<bool>,
    /// The `session_seq` of each event that has one, in event order (the field is taken out of
    /// `events`).
    session_seqs: Vec<u64>,
    /// The `session_seq`s handed out so far.
    seqs_given: u64,
}

impl Output for Rec {
    fn route(&mut self, route: Route<'_>) -> Routed {
        let r = match route {
            Route::Connect(c) => R::Connect(
                c.client_id.to_owned(),
                c.username.map(str::to_owned),
                c.assigned_id,
            ),
            Route::Publish(p) => {
                self.publish_properties = p.properties.as_bytes().to_vec();
                self.for_no_local.push(p.for_no_local);
                self.routes.push(R::Publish(
                    p.topic.to_owned(),
                    p.payload.to_vec(),
                    p.qos,
                    p.is_will,
                ));
                return if self.except_sender {
                    Routed::ExceptSender
                } else {
                    Routed::Accepted
                };
            }
            Route::Subscribe {
                filter, options, ..
            } => {
                if self.refuse.contains(&filter) {
                    return Routed::Refused;
                }
                if self.full.contains(&filter) {
                    return Routed::Full;
                }
                R::Subscribe(filter.to_owned(), options.qos)
            }
            Route::Unsubscribe { filter } => R::Unsubscribe(filter.to_owned()),
            Route::Acked { pkid, ack } => R::Acked(pkid, ack),
            Route::End {
                session_expiry,
                cause,
            } => R::End(session_expiry, cause),
            Route::SessionExpired => R::SessionExpired,
        };
        self.routes.push(r);
        Routed::Accepted
    }

    fn event(&mut self, event: &Event<'_>) -> Option<Delivery<'_>> {
        let options = EncodeOptions::default();
        let mut buf = vec![0u8; encoded_len_bound(event, &options)];
        let n = encode(event, &options, &mut buf).expect("fits its bound");
        buf.truncate(n);
        let mut value: Value = serde_json::from_slice(&buf).expect("valid JSON");
        let object = value.as_object_mut().expect("an object");
        object.remove("ts");
        if let Some(seq) = object.remove("session_seq") {
            self.session_seqs.push(seq.as_u64().expect("a number"));
        }
        self.events.push((event.kind(), value));
        if !self.except_sender {
            return None;
        }
        let topic = crate::system::SystemTopics::default().topic(event.kind());
        let (topic, json) = self.own_event.insert((topic.as_str().to_owned(), buf));
        Some(Delivery::new(topic, json, QoS::AtLeastOnce))
    }

    fn session_seq(&mut self, now: u64) -> u64 {
        self.seqs_given += 1;
        now * 100 + self.seqs_given
    }

    fn count(&mut self, counter: Counter) {
        match counter {
            Counter::PacketIn => {}
            Counter::PacketOut => self.packets_out += 1,
            _ => self.counts.push(counter),
        }
    }

    fn is_system_subscriber(&self, client_id: &str, _username: Option<&str>) -> bool {
        self.listed.contains(&client_id)
    }

    fn is_allowed(&self, access: Access<'_>) -> bool {
        !self.deny.contains(&access.topic)
    }
}

impl Rec {
    fn kinds(&self) -> Vec<EventKind> {
        self.events.iter().map(|(kind, _)| *kind).collect()
    }
}

/// A connection under test, with its input buffer and everything it sent.
struct Client {
    conn: Conn,
    out: Rec,
    rx: Vec<u8>,
    sent: Vec<u8>,
    now: u64,
}

impl Client {
    fn new(peer: Peer<'_>) -> Self {
        Self::with_config(ServerConfig::default(), peer)
    }

    fn with_config(config: ServerConfig, peer: Peer<'_>) -> Self {
        Client {
            conn: Connection::new(
                config,
                FixedAckStore::new(),
                FixedSessionStore::new(),
                peer,
                T0,
                0x2a,
            ),
            out: Rec::default(),
            rx: Vec::new(),
            sent: Vec::new(),
            now: T0,
        }
    }

    /// Feeds `bytes` and returns what the connection sent in answer.
    fn send(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.rx.extend_from_slice(bytes);
        let mut tx = [0u8; 1024];
        let p = self
            .conn
            .handle_input(self.now, &self.rx, &mut tx, &mut self.out);
        self.rx.drain(..p.consumed);
        self.sent.extend_from_slice(&tx[..p.written]);
        tx[..p.written].to_vec()
    }

    fn answer(&mut self, answer: ConnectAnswer) -> Vec<u8> {
        let mut tx = [0u8; 1024];
        let p = self
            .conn
            .handle_connect_answer(self.now, answer, &self.rx, &mut tx, &mut self.out);
        self.rx.drain(..p.consumed);
        self.sent.extend_from_slice(&tx[..p.written]);
        tx[..p.written].to_vec()
    }

    fn deliver(&mut self, delivery: Delivery<'_>) -> Vec<u8> {
        let mut tx = [0u8; 1024];
        let d = self
            .conn
            .handle_delivery(delivery, &mut tx, |_| None)
            .expect("delivered");
        tx[..d.written].to_vec()
    }

    fn close(&mut self, cause: CloseCause) {
        let mut tx = [0u8; 64];
        self.conn
            .handle_close(self.now, cause, &mut tx, &mut self.out);
    }

    /// CONNECT with `id` accepted, CONNACK checked; the routes and events so far cleared.
    fn connected(peer: Peer<'_>, connect: &Connect<'static>) -> Self {
        let mut client = Client::new(peer);
        assert_eq!(client.send(&encoded(*connect)), NOTHING);
        assert!(client.conn.is_authorizing());
        assert_eq!(client.answer(ConnectAnswer::accept(false)), [0x20, 2, 0, 0]);
        assert!(client.conn.is_connected());
        client.out.routes.clear();
        client.out.events.clear();
        client
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

const REMOTE: Peer<'static> = Peer {
    addr: Some("192.0.2.7:50312"),
    is_loopback: false,
    transport: Transport::Tcp,
};

const LOCAL: Peer<'static> = Peer {
    addr: Some("127.0.0.1:40000"),
    is_loopback: true,
    transport: Transport::Tcp,
};

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
        filters: crate::codec::SubscribeFilters::from_slice(filters),
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
fn a_long_peer_address_is_cut_at_a_character_boundary() {
    // PEER_CAPACITY bytes fit; the character that would cross the end is left out whole.
    let fits = "a".repeat(PEER_CAPACITY - 1);
    for (addr, kept) in [
        (format!("{fits}b"), format!("{fits}b")),
        (format!("{fits}bc"), format!("{fits}b")),
        // 'é' is two bytes: it would end one byte past the capacity.
        (format!("{fits}é"), fits.clone()),
        (
            format!("{}é", "a".repeat(PEER_CAPACITY - 2)),
            format!("{}é", "a".repeat(PEER_CAPACITY - 2)),
        ),
        // A four-byte character from the third-to-last byte on.
        (
            format!("{}😀", "a".repeat(PEER_CAPACITY - 3)),
            "a".repeat(PEER_CAPACITY - 3),
        ),
    ] {
        let peer = Peer {
            addr: Some(&addr),
            ..REMOTE
        };
        let mut client = Client::new(peer);
        assert_eq!(client.send(&encoded(connect("p"))), NOTHING);
        client.answer(ConnectAnswer::accept(false));
        assert_eq!(client.out.events[0].1["peer"], json!(kept), "{addr}");
    }
}

#[test]
fn an_accepted_connect_gets_connack_and_its_connected_event() {
    let mut client = Client::new(REMOTE);
    let mut c = connect("sensor-7");
    c.username = Some("alice");
    c.password = Some(b"secret");
    assert_eq!(client.send(&encoded(c)), NOTHING);
    assert_eq!(
        client.out.routes,
        [R::Connect("sensor-7".into(), Some("alice".into()), false)]
    );
    assert!(client.out.events.is_empty(), "no event before the answer");
    assert_eq!(client.answer(ConnectAnswer::accept(false)), [0x20, 2, 0, 0]);
    assert_eq!(client.conn.client_id(), "sensor-7");
    assert_eq!(
        client.out.events,
        [(
            EventKind::Connected,
            json!({"client_id":"sensor-7","username":"alice","proto_ver":4,"keepalive":30,
                   "clean_session":true,"peer":"192.0.2.7:50312","transport":"tcp"})
        )]
    );
    // The driver's number for the connection, asked once, at the answer.
    assert_eq!(client.out.session_seqs, [T0 * 100 + 1]);
    client.close(CloseCause::TransportClosed);
    assert_eq!(client.out.kinds().last(), Some(&EventKind::Disconnected));
    assert_eq!(
        client.out.session_seqs,
        [T0 * 100 + 1; 2],
        "the same in its end"
    );
}

#[test]
fn session_present_only_for_a_persistent_session_the_router_kept() {
    for (clean, router_has, expected) in [(false, true, 1), (false, false, 0), (true, true, 0)] {
        let mut client = Client::new(REMOTE);
        let mut c = connect("p");
        c.clean_session = clean;
        client.send(&encoded(c));
        assert_eq!(
            client.answer(ConnectAnswer::accept(router_has)),
            [0x20, 2, expected, 0]
        );
    }
}

#[test]
fn engine_refusals_answer_connack_with_their_code_and_report_refused() {
    let will = |topic: &'static str, message: &'static [u8]| LastWill {
        properties: crate::codec::Properties::EMPTY,
        topic,
        message,
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let cases: [(Connect<'static>, u8, ReasonCode); 6] = [
        (
            Connect {
                protocol_level: 6,
                ..connect("v6")
            },
            0x01,
            ReasonCode::UnsupportedProtocolVersion,
        ),
        // Level 4 under MQTT 3.1's name is no version at all (its payload was not decoded).
        (
            Connect {
                protocol_name: crate::codec::ProtocolName::MqIsdp,
                ..connect("mixed")
            },
            0x01,
            ReasonCode::UnsupportedProtocolVersion,
        ),
        (
            connect("broker"),
            0x02,
            ReasonCode::ClientIdentifierNotValid,
        ),
        (
            Connect {
                clean_session: false,
                ..connect("")
            },
            0x02,
            ReasonCode::ClientIdentifierNotValid,
        ),
        (
            Connect {
                will: Some(will("SYSTEM/presence/connected", b"x")),
                ..connect("w")
            },
            0x05,
            ReasonCode::NotAuthorized,
        ),
        (
            Connect {
                will: Some(will("w", &[0; 100])),
                ..connect("big-will")
            },
            0x03,
            ReasonCode::ServerUnavailable,
        ),
    ];
    for (c, code, reason) in cases {
        let mut client = Client::new(REMOTE);
        assert_eq!(client.send(&encoded(c)), [0x20, 2, 0, code], "{c:?}");
        assert!(client.conn.is_closed());
        assert!(client.out.routes.is_empty(), "the driver is not asked");
        // The `refused` event, with what the CONNECT said and the code the CONNACK carried.
        assert_eq!(client.out.kinds(), [EventKind::Refused], "{c:?}");
        let event = &client.out.events[0].1;
        // A CONNECT of no known version has no payload decoded: no client id.
        let id = if reason == ReasonCode::UnsupportedProtocolVersion {
            ""
        } else {
            c.client_id
        };
        assert_eq!(event["client_id"], id);
        assert_eq!(event["reason_code"], code);
        assert_eq!(event["reason"], reason.name());
        assert_eq!(event["peer"], "192.0.2.7:50312");
        assert_eq!(client.out.counts, [Counter::ConnectRefused(reason)]);
    }
}

#[test]
fn driver_refusals_map_to_v3_return_codes() {
    for (reason, code) in [
        (ReasonCode::BadUserNameOrPassword, 0x04),
        (ReasonCode::NotAuthorized, 0x05),
        (ReasonCode::ServerBusy, 0x03),
    ] {
        let mut client = Client::new(REMOTE);
        let mut c = connect("w");
        c.will = Some(LastWill {
            properties: crate::codec::Properties::EMPTY,
            topic: "w",
            message: b"x",
            qos: QoS::AtMostOnce,
            retain: false,
        });
        client.send(&encoded(c));
        assert_eq!(
            client.answer(ConnectAnswer::Refuse(reason)),
            [0x20, 2, 0, code]
        );
        assert!(client.conn.is_closed());
        assert_eq!(
            client.out.events,
            [(
                EventKind::Refused,
                json!({"client_id":"w","peer":"192.0.2.7:50312","reason_code":code,
                    "reason":reason.name()})
            )]
        );
        assert_eq!(client.conn.store().will(), None, "the will is dropped");
    }
}

#[test]
fn an_empty_id_gets_the_assigned_one() {
    let mut client = Client::new(REMOTE);
    client.send(&encoded(connect("")));
    assert_eq!(
        client.out.routes,
        [R::Connect("auto-000000000000002a".into(), None, true)]
    );
    client.answer(ConnectAnswer::accept(false));
    assert_eq!(client.conn.client_id(), "auto-000000000000002a");
    assert_eq!(client.out.events[0].1["client_id"], "auto-000000000000002a");
}

#[test]
fn the_first_packet_must_be_connect() {
    let mut client = Client::new(REMOTE);
    assert_eq!(client.send(&[0xC0, 0]), NOTHING);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.counts, [Counter::ProtocolError]);
    assert!(client.out.events.is_empty());
}

#[test]
fn connect_timeout_closes_a_silent_connection() {
    let mut client = Client::new(REMOTE);
    let deadline = client.conn.poll_timeout().expect("a deadline");
    assert_eq!(deadline, T0 + 10_000);
    let mut tx = [0u8; 16];
    client
        .conn
        .handle_timeout(deadline - 1, &mut tx, &mut client.out);
    assert!(!client.conn.is_closed());
    client
        .conn
        .handle_timeout(deadline, &mut tx, &mut client.out);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.counts, [Counter::ConnectTimeout]);
}

#[test]
fn keep_alive_counts_from_the_last_input() {
    let mut client = Client::connected(REMOTE, &connect("k"));
    assert_eq!(client.conn.poll_timeout(), Some(T0 + 45_000));
    client.now = T0 + 40_000;
    assert_eq!(client.send(&[0xC0, 0]), [0xD0, 0]);
    let deadline = client.conn.poll_timeout().expect("a deadline");
    assert_eq!(deadline, T0 + 85_000);
    let mut tx = [0u8; 16];
    client
        .conn
        .handle_timeout(deadline, &mut tx, &mut client.out);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.counts, [Counter::KeepAliveTimeout]);
    assert_eq!(client.out.events[0].1["reason"], "keepalive_timeout");
    assert_eq!(client.out.routes, [R::End(0, CloseCause::KeepAliveTimeout)]);
    // Keep-alive 0 turns it off (section 3.1.2.10).
    let client = Client::connected(
        REMOTE,
        &Connect {
            keep_alive: 0,
            ..connect("k0")
        },
    );
    assert_eq!(client.conn.poll_timeout(), None);
}

#[test]
fn publishes_are_routed_acknowledged_and_reported() {
    let mut client = Client::connected(REMOTE, &connect("pub"));
    assert_eq!(
        client.send(&publish("a/b", QoS::AtMostOnce, None, b"0")),
        NOTHING
    );
    assert_eq!(
        client.send(&publish("a/b", QoS::AtLeastOnce, Some(7), b"1")),
        [0x40, 2, 0, 7]
    );
    assert_eq!(
        client.send(&publish("a/b", QoS::ExactlyOnce, Some(8), b"2")),
        [0x50, 2, 0, 8]
    );
    // A resent QoS 2 publish before PUBREL is acknowledged, not routed again (section 4.3.3).
    assert_eq!(
        client.send(&publish("a/b", QoS::ExactlyOnce, Some(8), b"2")),
        [0x50, 2, 0, 8]
    );
    assert_eq!(client.send(&[0x62, 2, 0, 8]), [0x70, 2, 0, 8]);
    assert_eq!(client.conn.store().inbound_qos2_count(), 0);
    assert_eq!(
        client.out.routes,
        [
            R::Publish("a/b".into(), b"0".to_vec(), QoS::AtMostOnce, false),
            R::Publish("a/b".into(), b"1".to_vec(), QoS::AtLeastOnce, false),
            R::Publish("a/b".into(), b"2".to_vec(), QoS::ExactlyOnce, false),
        ]
    );
    assert_eq!(client.out.kinds(), [EventKind::Message; 3]);
    assert_eq!(
        client.out.events[1].1,
        json!({"pub_client_id":"pub","topic":"a/b","payload":"1","payload_len":1,"qos":1,"retain":false})
    );
    // CONNACK, PUBACK, PUBREC twice, PUBCOMP: each counted once.
    assert_eq!(client.out.packets_out, 5);
}

#[test]
fn a_publish_on_a_system_topic_is_dropped_and_the_client_stays() {
    let mut client = Client::connected(LOCAL, &connect("intruder"));
    assert_eq!(
        client.send(&publish("SYSTEM/message", QoS::AtLeastOnce, Some(3), b"x")),
        [0x40, 2, 0, 3]
    );
    assert!(client.out.routes.is_empty());
    assert_eq!(
        client.out.events,
        [(
            EventKind::Denied,
            json!({"client_id":"intruder","topic":"SYSTEM/message","action":"publish"})
        )]
    );
    assert_eq!(client.out.counts, [Counter::PublishDenied]);
    assert!(client.conn.is_connected());
}

#[test]
fn too_many_unreleased_qos2_publishes_close_the_connection() {
    let mut client = Client::connected(REMOTE, &connect("q2"));
    client.send(&publish("t", QoS::ExactlyOnce, Some(1), b""));
    client.send(&publish("t", QoS::ExactlyOnce, Some(2), b""));
    // The store holds 2 (and the default limit is higher): the third closes.
    assert_eq!(
        client.send(&publish("t", QoS::ExactlyOnce, Some(3), b"")),
        NOTHING
    );
    assert!(client.conn.is_closed());
    assert_eq!(client.out.counts, [Counter::QuotaExceeded]);
    let (kind, last) = client.out.events.last().expect("disconnected").clone();
    assert_eq!(kind, EventKind::Disconnected);
    assert_eq!(last["reason"], "protocol_error");
}

#[test]
fn subscribe_grants_caps_and_refuses_per_filter() {
    let mut config = ServerConfig::default();
    config.limits.max_qos = QoS::AtLeastOnce;
    config.limits.max_subscriptions = 3;
    let mut client = Client::with_config(config, REMOTE);
    client.send(&encoded(connect("s")));
    client.answer(ConnectAnswer::accept(false));
    client.out.events.clear();
    client.out.routes.clear();
    client.out.refuse = vec!["refused/#"];
    let answer = client.send(&subscribe(
        9,
        &[
            ("a/#", QoS::ExactlyOnce),
            ("SYSTEM/#", QoS::AtMostOnce),
            ("refused/#", QoS::AtMostOnce),
            ("b", QoS::AtMostOnce),
            ("c", QoS::AtMostOnce),
            ("d", QoS::AtMostOnce),
        ],
    ));
    assert_eq!(
        answer,
        suback(
            9,
            &[
                SubAckCode::Success(QoS::AtLeastOnce),
                SubAckCode::Failure,
                SubAckCode::Failure,
                SubAckCode::Success(QoS::AtMostOnce),
                SubAckCode::Success(QoS::AtMostOnce),
                SubAckCode::Failure,
            ]
        )
    );
    assert_eq!(
        client.out.counts,
        [
            Counter::SubscriptionDenied,
            Counter::SubscriptionRefused,
            Counter::SubscriptionRefused
        ]
    );
    assert_eq!(
        client.out.routes,
        [
            R::Subscribe("a/#".into(), QoS::AtLeastOnce),
            R::Subscribe("b".into(), QoS::AtMostOnce),
            R::Subscribe("c".into(), QoS::AtMostOnce),
        ]
    );
    // The system-topic rule's refusal is reported (the others are limits, not rules).
    assert_eq!(
        client.out.kinds(),
        [
            EventKind::Denied,
            EventKind::Subscribed,
            EventKind::Subscribed,
            EventKind::Subscribed
        ]
    );
    assert_eq!(
        client.out.events[0].1,
        json!({"client_id":"s","topic":"SYSTEM/#","action":"subscribe"})
    );
    assert_eq!(
        client.out.events[1].1,
        json!({"client_id":"s","topic":"a/#","qos":1})
    );
    assert_eq!(client.conn.store().subscription_count(), 3);
    // A filter held already is updated, not counted again.
    assert_eq!(
        client.send(&subscribe(10, &[("b", QoS::AtLeastOnce)])),
        suback(10, &[SubAckCode::Success(QoS::AtLeastOnce)])
    );
}

#[test]
fn system_filters_need_loopback_or_a_listing() {
    let filters: &[(&str, QoS)] = &[("SYSTEM/#", QoS::AtMostOnce), ("#", QoS::AtMostOnce)];
    let granted = suback(
        1,
        &[
            SubAckCode::Success(QoS::AtMostOnce),
            SubAckCode::Success(QoS::AtMostOnce),
        ],
    );
    let mut local = Client::connected(LOCAL, &connect("mon"));
    assert_eq!(local.send(&subscribe(1, filters)), granted);

    let mut client = Client::new(REMOTE);
    client.out.listed = vec!["listed"];
    client.send(&encoded(connect("listed")));
    client.answer(ConnectAnswer::accept(false));
    assert_eq!(client.send(&subscribe(1, filters)), granted);

    let config = ServerConfig {
        loopback_may_subscribe_system: false,
        ..ServerConfig::default()
    };
    let mut client = Client::with_config(config, LOCAL);
    client.send(&encoded(connect("local")));
    client.answer(ConnectAnswer::accept(false));
    // `#` receives no events: anyone may have it.
    assert_eq!(
        client.send(&subscribe(1, filters)),
        suback(
            1,
            &[SubAckCode::Failure, SubAckCode::Success(QoS::AtMostOnce)]
        )
    );
    let config = ServerConfig {
        loopback_may_subscribe_system: false,
        tracker: crate::tracker::TrackerConfig {
            topics: crate::system::SystemTopics::default().with_wildcards_receive_events(true),
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    let mut client = Client::with_config(config, LOCAL);
    client.send(&encoded(connect("local")));
    client.answer(ConnectAnswer::accept(false));
    assert_eq!(
        client.send(&subscribe(1, filters)),
        suback(1, &[SubAckCode::Failure, SubAckCode::Failure]),
        "with wildcards receiving events, `#` needs the permission too"
    );
}

#[test]
fn unsubscribe_reports_only_filters_that_were_held() {
    let mut client = Client::connected(REMOTE, &connect("u"));
    client.send(&subscribe(1, &[("a", QoS::AtMostOnce)]));
    client.out.routes.clear();
    client.out.events.clear();
    let unsubscribe = encoded(Unsubscribe {
        properties: crate::codec::Properties::EMPTY,
        pkid: 2,
        filters: crate::codec::UnsubscribeFilters::from_slice(&["a", "never"]),
    });
    assert_eq!(client.send(&unsubscribe), [0xB0, 2, 0, 2]);
    assert_eq!(client.out.routes, [R::Unsubscribe("a".into())]);
    assert_eq!(
        client.out.events,
        [(
            EventKind::Unsubscribed,
            json!({"client_id":"u","topic":"a"})
        )]
    );
}

#[test]
fn deliveries_go_at_the_lower_qos_and_acks_become_msgack() {
    let mut client = Client::connected(REMOTE, &connect("dev"));
    let delivery = Delivery {
        properties: crate::codec::Properties::EMPTY,
        topic: "cmd/dev",
        payload: ENVELOPE,
        qos: QoS::ExactlyOnce,
        subscription_qos: QoS::AtLeastOnce,
        retain: false,
        dup: false,
        pkid: None,
        publisher: Some("ctl"),
        ..Delivery::new("", b"", QoS::AtMostOnce)
    };
    let bytes = client.deliver(delivery);
    assert_eq!(
        bytes,
        publish("cmd/dev", QoS::AtLeastOnce, Some(1), ENVELOPE),
        "QoS 1 with the engine's first packet id"
    );
    let bytes = client.deliver(Delivery {
        pkid: Some(77),
        subscription_qos: QoS::ExactlyOnce,
        ..delivery
    });
    assert_eq!(
        bytes,
        publish("cmd/dev", QoS::ExactlyOnce, Some(77), ENVELOPE)
    );
    assert_eq!(client.send(&[0x40, 2, 0, 1]), NOTHING);
    assert_eq!(client.send(&[0x50, 2, 0, 77]), [0x62, 2, 0, 77]);
    assert_eq!(client.send(&[0x70, 2, 0, 77]), NOTHING);
    assert_eq!(
        client.out.routes,
        [
            R::Acked(1, Ack::PubAck),
            R::Acked(77, Ack::PubRec),
            R::Acked(77, Ack::PubComp)
        ]
    );
    assert_eq!(client.out.kinds(), [EventKind::MsgAck; 2]);
    assert_eq!(
        client.out.events[0].1,
        json!({"pub_client_id":"ctl","ack_client_id":"dev","product_id":"p1",
               "message_id":"m42","topic":"cmd/dev","qos":1})
    );
    // QoS 0 needs no packet id; nothing is sent before CONNECT or after close.
    let bytes = client.deliver(Delivery {
        qos: QoS::AtMostOnce,
        ..delivery
    });
    assert_eq!(bytes, publish("cmd/dev", QoS::AtMostOnce, None, ENVELOPE));
    client.close(CloseCause::TransportClosed);
    let mut tx = [0u8; 256];
    assert_eq!(
        client.conn.handle_delivery(delivery, &mut tx, |_| None),
        Err(DeliveryError::NotConnected)
    );
}

#[test]
fn a_delivery_without_room_says_how_much_it_needs() {
    let mut client = Client::connected(REMOTE, &connect("small"));
    let mut tx = [0u8; 8];
    let result = client.conn.handle_delivery(
        Delivery {
            properties: crate::codec::Properties::EMPTY,
            topic: "t",
            payload: b"0123456789",
            qos: QoS::AtMostOnce,
            subscription_qos: QoS::AtMostOnce,
            retain: false,
            dup: false,
            pkid: None,
            publisher: None,
            ..Delivery::new("", b"", QoS::AtMostOnce)
        },
        &mut tx,
        |_| None,
    );
    assert_eq!(result, Err(DeliveryError::NoRoom { needed: 15 }));
}

#[test]
fn a_delivery_not_written_takes_no_packet_id() {
    let mut client = Client::connected(REMOTE, &connect("ids"));
    let delivery = Delivery {
        properties: crate::codec::Properties::EMPTY,
        topic: "t",
        payload: b"0123456789",
        qos: QoS::AtLeastOnce,
        subscription_qos: QoS::AtLeastOnce,
        retain: false,
        dup: true,
        pkid: None,
        publisher: None,
        ..Delivery::new("", b"", QoS::AtMostOnce)
    };
    // 2 + 1 + 2 + 2 + 10 bytes: the packet id counts in what it needs.
    let mut small = [0u8; 8];
    let result = client.conn.handle_delivery(delivery, &mut small, |_| None);
    assert_eq!(result, Err(DeliveryError::NoRoom { needed: 17 }));
    let mut tx = [0u8; 64];
    let first = client
        .conn
        .handle_delivery(delivery, &mut tx, |_| None)
        .expect("written");
    assert_eq!((first.written, first.pkid), (17, Some(1)));
    // The engine's own packet id, with the router's DUP flag: 0x3a = PUBLISH, DUP, QoS 1.
    assert_eq!(&tx[..2], &[0x3a, 15]);
    assert_eq!(&tx[5..7], &[0, 1]);
    let second = client
        .conn
        .handle_delivery(delivery, &mut tx, |_| None)
        .expect("written");
    assert_eq!(second.pkid, Some(2));
}

#[test]
fn the_will_is_published_unless_the_client_said_goodbye() {
    let will = Connect {
        will: Some(LastWill {
            properties: crate::codec::Properties::EMPTY,
            topic: "status/w",
            message: b"offline",
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
        clean_session: false,
        ..connect("w")
    };
    for (cause, published) in [
        (CloseCause::TransportClosed, true),
        (CloseCause::KeepAliveTimeout, true),
        (CloseCause::TakenOver, true),
        (CloseCause::ClientDisconnect, false),
        (CloseCause::ServerShutdown, false),
    ] {
        let mut client = Client::connected(REMOTE, &will);
        client.close(cause);
        let mut expected = Vec::new();
        if published {
            expected.push(R::Publish(
                "status/w".into(),
                b"offline".to_vec(),
                QoS::AtLeastOnce,
                true,
            ));
        }
        expected.push(R::End(SESSION_NEVER_EXPIRES, cause));
        assert_eq!(client.out.routes, expected, "{cause:?}");
        let mut kinds = Vec::new();
        if published {
            kinds.push(EventKind::Message);
        }
        kinds.push(EventKind::Disconnected);
        assert_eq!(client.out.kinds(), kinds, "{cause:?}");
        let (_, last) = client.out.events.last().expect("disconnected").clone();
        assert_eq!(last["reason"], cause.reason().as_str());
        // Closing again does nothing.
        client.close(CloseCause::TransportClosed);
        assert_eq!(client.out.kinds().len(), kinds.len());
    }
}

#[test]
fn disconnect_closes_normally() {
    let mut client = Client::connected(REMOTE, &connect("bye"));
    assert_eq!(client.send(&[0xE0, 0, 0xC0, 0]), NOTHING);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.events[0].1["reason"], "normal");
    assert_eq!(client.out.routes, [R::End(0, CloseCause::ClientDisconnect)]);
}

#[test]
fn bad_bytes_close_with_the_right_reason() {
    // A second CONNECT, a server-only packet, a malformed header, an oversized packet.
    let mut config = ServerConfig::default();
    config.limits.max_packet_size = 64;
    for (bytes, reason, counter, code) in [
        (
            encoded(connect("again")),
            "protocol_error",
            Counter::ProtocolError,
            0x82,
        ),
        (
            vec![0x20, 2, 0, 0],
            "protocol_error",
            Counter::ProtocolError,
            0x82,
        ),
        (
            vec![0xF0, 0],
            "protocol_error",
            Counter::ProtocolError,
            0x81,
        ),
        (
            vec![0x30, 0xFF, 0x01],
            "packet_too_large",
            Counter::PacketTooLarge,
            0x95,
        ),
    ] {
        let mut client = Client::with_config(config.clone(), REMOTE);
        client.send(&encoded(connect("bad")));
        client.answer(ConnectAnswer::accept(false));
        client.out.events.clear();
        client.send(&bytes);
        assert!(client.conn.is_closed(), "{bytes:?}");
        assert_eq!(client.out.counts, [counter]);
        assert_eq!(
            client.out.events,
            [(
                EventKind::Disconnected,
                json!({"client_id":"bad","reason":reason,"reason_code":code,"connected_at":T0})
            )]
        );
    }
}

#[test]
fn packets_may_arrive_in_pieces_and_together_with_the_connect() {
    let mut client = Client::new(REMOTE);
    let mut stream = encoded(connect("pieces"));
    stream.extend_from_slice(&publish("a", QoS::AtLeastOnce, Some(5), b"xyz"));
    stream.extend_from_slice(&[0xC0, 0]);
    for byte in &stream {
        client.send(&[*byte]);
    }
    assert!(client.conn.is_authorizing());
    assert_eq!(
        client.answer(ConnectAnswer::accept(false)),
        [0x20, 2, 0, 0, 0x40, 2, 0, 5, 0xD0, 0]
    );
    assert!(client.rx.is_empty());
}

#[test]
fn a_full_transmit_buffer_stops_decoding() {
    let mut client = Client::connected(REMOTE, &connect("slow"));
    let room = client.conn.answer_room();
    client.rx.extend_from_slice(&[0xC0, 0, 0xC0, 0]);
    let mut tx = vec![0u8; room + 1];
    let p = client
        .conn
        .handle_input(T0, &client.rx, &mut tx, &mut client.out);
    assert_eq!(
        p,
        Progress {
            consumed: 2,
            written: 2
        }
    );
    assert!(client.conn.is_blocked());
    client.rx.drain(..2);
    let p = client
        .conn
        .handle_input(T0, &client.rx, &mut tx, &mut client.out);
    assert_eq!(
        p,
        Progress {
            consumed: 2,
            written: 2
        }
    );
    assert!(!client.conn.is_blocked());
}

#[test]
fn suback_and_unsuback_frames_match_the_codec() {
    for version in [Version::V3_1_1, Version::V5] {
        for count in [1, 124, 125, 126, 127, 200] {
            let codes = vec![SubAckCode::Failure; count];
            let suback = Packet::SubAck(SubAck {
                properties: crate::codec::Properties::EMPTY,
                pkid: 0x1234,
                codes: SubAckCodes::from_slice(&codes),
            });
            let reasons = vec![0x11; count];
            let unsuback = Packet::UnsubAck(crate::codec::UnsubAck {
                pkid: 0x1234,
                reasons: &reasons,
                properties: crate::codec::Properties::EMPTY,
            });
            let mut frames = vec![(0x90, 0x80, suback)];
            if version.is_v5() {
                frames.push((0xB0, 0x11, unsuback));
            }
            for (first, code, packet) in frames {
                let len = packet.encoded_len_with(version).expect("encodable");
                let mut expected = vec![0u8; len];
                packet.encode_with(&mut expected, version).expect("encodes");
                assert_eq!(codes_len(count, version.is_v5()), len, "{count}");
                let mut buf = vec![0u8; 300];
                let mut tx = Tx::new(&mut buf, version);
                tx.put(&Packet::PingResp);
                let start = tx.codes_frame(first, 0x1234, count).expect("room");
                for at in start..start + count {
                    tx.set(at, code);
                }
                assert_eq!(tx.len, 2 + len);
                assert_eq!(
                    buf[2..2 + len],
                    expected[..],
                    "{version:?} {first:#x} {count}"
                );
            }
        }
    }
}

#[test]
fn a_router_that_cannot_reach_the_sender_gets_its_copies_delivered_by_the_engine() {
    let mut client = Client::connected(LOCAL, &connect("loop"));
    client.send(&subscribe(
        1,
        &[
            ("echo/#", QoS::AtLeastOnce),
            ("SYSTEM/message", QoS::AtMostOnce),
        ],
    ));
    client.out.except_sender = true;
    // QoS 1 publish: PUBACK, then the copy at QoS 1 with the engine's packet id, then the
    // `message` event's copy (QoS 0 subscription).
    let answer = client.send(&publish("echo/1", QoS::AtLeastOnce, Some(4), b"hi"));
    let mut expected = vec![0x40, 2, 0, 4];
    expected.extend(publish("echo/1", QoS::AtLeastOnce, Some(1), b"hi"));
    let (topic, json) = client.out.own_event.clone().expect("the event's copy");
    assert_eq!(topic, "SYSTEM/message");
    let topic: &'static str = Box::leak(topic.into_boxed_str());
    let json: &'static [u8] = Box::leak(json.into_boxed_slice());
    expected.extend(publish(topic, QoS::AtMostOnce, None, json));
    assert_eq!(answer, expected);
    // The SUBACK comes before the copy of the client's own `subscribed` event.
    let answer = client.send(&subscribe(2, &[("SYSTEM/#", QoS::AtMostOnce)]));
    let suback_bytes = suback(2, &[SubAckCode::Success(QoS::AtMostOnce)]);
    assert_eq!(answer[..suback_bytes.len()], suback_bytes[..]);
    assert_eq!(answer[suback_bytes.len()] & 0xF0, 0x30, "then a PUBLISH");
    // A topic the client does not subscribe to comes back only as its `message` event.
    let answer = client.send(&publish("other", QoS::AtMostOnce, None, b"-"));
    match codec::decode(&answer, 1024) {
        Ok(Some((Packet::Publish(copy), len))) => {
            assert_eq!((copy.topic, len), ("SYSTEM/message", answer.len()));
        }
        other => panic!("one PUBLISH of the event: {other:?}"),
    }
    // A copy without room is dropped and counted.
    client
        .rx
        .extend_from_slice(&publish("echo/2", QoS::AtMostOnce, None, &[7; 300]));
    let room = client.conn.answer_room();
    let mut tx = vec![0u8; room + 10];
    let p = client
        .conn
        .handle_input(T0, &client.rx, &mut tx, &mut client.out);
    assert_eq!(p.written, 0);
    assert!(client.out.counts.contains(&Counter::DeliveryDropped));
}

#[test]
fn dollar_topics_belong_to_the_server() {
    let mut client = Client::connected(LOCAL, &connect("dollar"));
    assert_eq!(
        client.send(&publish("$internal/x", QoS::AtLeastOnce, Some(2), b"x")),
        [0x40, 2, 0, 2]
    );
    assert!(client.out.routes.is_empty());
    assert_eq!(client.out.kinds(), [EventKind::Denied]);
    assert_eq!(client.out.events[0].1["topic"], "$internal/x");
    assert_eq!(client.out.counts, [Counter::PublishDenied]);
    assert_eq!(
        client.send(&subscribe(
            3,
            &[
                ("$internal/#", QoS::AtMostOnce),
                ("$share/g/a", QoS::AtMostOnce)
            ]
        )),
        suback(
            3,
            &[SubAckCode::Failure, SubAckCode::Success(QoS::AtMostOnce)]
        )
    );
    assert_eq!(
        client.out.routes,
        [R::Subscribe("$share/g/a".into(), QoS::AtMostOnce)]
    );
    assert!(client.conn.is_connected());
    // With a `$` prefix the system topics keep their own rule: loopback may subscribe.
    let config = ServerConfig {
        tracker: crate::tracker::TrackerConfig {
            topics: crate::system::SystemTopics::new("$SYS").expect("a valid prefix"),
            ..crate::tracker::TrackerConfig::default()
        },
        ..ServerConfig::default()
    };
    let mut client = Client::with_config(config, LOCAL);
    client.send(&encoded(connect("sys")));
    client.answer(ConnectAnswer::accept(false));
    assert_eq!(
        client.send(&subscribe(1, &[("$SYS/#", QoS::AtMostOnce)])),
        suback(1, &[SubAckCode::Success(QoS::AtMostOnce)])
    );
}

/// A whole session as one byte stream: CONNECT, SUBSCRIBE, publishes at every QoS (one on a
/// system topic, one resent), PUBREL, PINGREQ, UNSUBSCRIBE, DISCONNECT.
fn session_stream() -> Vec<u8> {
    let mut stream = encoded(Connect {
        will: Some(LastWill {
            properties: crate::codec::Properties::EMPTY,
            topic: "w",
            message: b"bye",
            qos: QoS::AtMostOnce,
            retain: false,
        }),
        ..connect("chunks")
    });
    stream.extend(subscribe(
        1,
        &[("a/#", QoS::AtLeastOnce), ("SYSTEM/#", QoS::AtMostOnce)],
    ));
    stream.extend(publish("a/0", QoS::AtMostOnce, None, b"zero"));
    stream.extend(publish("a/1", QoS::AtLeastOnce, Some(10), b"one"));
    stream.extend(publish("a/2", QoS::ExactlyOnce, Some(11), b"two"));
    stream.extend(publish("a/2", QoS::ExactlyOnce, Some(11), b"two"));
    stream.extend(publish("SYSTEM/message", QoS::AtLeastOnce, Some(12), b"no"));
    stream.extend([0x62, 2, 0, 11, 0xC0, 0]);
    stream.extend(encoded(Unsubscribe {
        properties: crate::codec::Properties::EMPTY,
        pkid: 2,
        filters: crate::codec::UnsubscribeFilters::from_slice(&["a/#"]),
    }));
    stream.extend([0xE0, 0]);
    stream
}

/// What a driver sees: the bytes sent, the routes, the events and the counters.
type Seen = (Vec<u8>, Vec<R>, Vec<(EventKind, Value)>, Vec<Counter>);

/// What a driver sees when `stream` arrives in pieces ending at `cuts` (sorted offsets).
fn run_in_pieces(stream: &[u8], cuts: &[usize]) -> Seen {
    let mut client = Client::new(LOCAL);
    let mut from = 0;
    for &to in cuts.iter().chain(core::iter::once(&stream.len())) {
        let to = to.clamp(from, stream.len());
        client.send(&stream[from..to]);
        if client.conn.is_authorizing() {
            client.answer(ConnectAnswer::accept(false));
        }
        from = to;
    }
    assert!(client.conn.is_closed(), "the DISCONNECT was read");
    (
        client.sent,
        client.out.routes,
        client.out.events,
        client.out.counts,
    )
}

proptest::proptest! {
    #![proptest_config(crate::proptest_cases::config(proptest::test_runner::Config::default()))]

    /// However TCP cuts the stream, the engine answers, routes, reports and counts the same.
    #[test]
    fn the_outputs_do_not_depend_on_how_the_bytes_arrive(
        mut cuts in proptest::collection::vec(0usize..200, 0..24),
    ) {
        let stream = session_stream();
        cuts.sort_unstable();
        let whole = run_in_pieces(&stream, &[]);
        let pieces = run_in_pieces(&stream, &cuts);
        proptest::prop_assert_eq!(&pieces, &whole);
        // And the whole run is what the rules say: a publish on a system topic is not routed,
        // the resent QoS 2 publish is routed once, the DISCONNECT publishes no will.
        let publishes = whole.1.iter().filter(|r| matches!(r, R::Publish(..))).count();
        proptest::prop_assert_eq!(publishes, 3);
        proptest::prop_assert_eq!(whole.3.clone(), vec![Counter::PublishDenied]);
    }
}

#[test]
fn memory_figures_in_the_crate_docs_hold() {
    type Bare = Connection<FixedAckStore<0, 0>, FixedSessionStore<0, 0, 0, 0>>;
    let engine = core::mem::size_of::<Bare>();
    let tracker = core::mem::size_of::<crate::tracker::Tracker<FixedAckStore<0, 0>>>();
    let per_subscription = core::mem::size_of::<FixedSessionStore<2, 64, 0, 0>>()
        - core::mem::size_of::<FixedSessionStore<1, 64, 0, 0>>();
    println!("engine {engine} B (tracker {tracker} B), subscription of 64 B: {per_subscription} B");
    // 12 of them the MQTT 5 delivery state (receive maximum, in flight, maximum packet size,
    // topic aliases), about 40 the kept session's (its deadlines, the will delay, the Server
    // Keep Alive, Request Problem Information).
    assert!(engine <= tracker + 264, "engine is {engine} bytes");
    assert!(
        per_subscription <= 64 + 16,
        "subscription entry is {per_subscription} bytes"
    );
}

#[test]
fn a_shutdown_reports_the_end_and_keeps_delivering_until_closed() {
    let mut client = Client::connected(REMOTE, &connect("stayer"));
    let mut tx = [0u8; 64];
    let written = client
        .conn
        .handle_shutdown(client.now, &mut tx, &mut client.out);
    assert_eq!(written, 0, "MQTT 3.1.1 has no server DISCONNECT");
    assert!(client.conn.is_draining() && !client.conn.is_connected());
    assert!(!client.conn.is_closed());
    assert_eq!(client.out.kinds(), [EventKind::Disconnected]);
    assert_eq!(
        client.out.events[0].1,
        json!({"client_id":"stayer","reason":"server_shutdown","reason_code":0x8B,"connected_at":T0})
    );
    assert_eq!(client.out.routes, [R::End(0, CloseCause::ServerShutdown)]);
    // Input is no longer read; deliveries (other clients' shutdown events) still go out.
    assert_eq!(client.send(&[0xC0, 0]), NOTHING);
    assert_eq!(client.rx, [0xC0, 0]);
    let other = Delivery::new("SYSTEM/presence/disconnected", b"{}", QoS::AtMostOnce);
    assert_eq!(
        client.deliver(other),
        publish("SYSTEM/presence/disconnected", QoS::AtMostOnce, None, b"{}")
    );
    assert_eq!(client.conn.poll_timeout(), None);
    client.close(CloseCause::ServerShutdown);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.events.len(), 1, "the end is reported once");
    assert_eq!(client.out.routes.len(), 1, "and routed once");
    let mut tx = [0u8; 64];
    assert_eq!(
        client.conn.handle_delivery(other, &mut tx, |_| None),
        Err(DeliveryError::NotConnected)
    );
}

#[test]
fn a_shutdown_before_the_connect_closes_at_once() {
    let mut client = Client::new(REMOTE);
    let mut tx = [0u8; 64];
    client
        .conn
        .handle_shutdown(client.now, &mut tx, &mut client.out);
    assert!(client.conn.is_closed());
    assert!(client.out.routes.is_empty() && client.out.events.is_empty());
}

#[test]
fn msgack_tracking_can_be_turned_off_and_a_full_store_says_what_it_forgot() {
    let mut client = Client::connected(REMOTE, &connect("dev"));
    let envelope = Delivery {
        publisher: Some("ctl"),
        ..Delivery::new("cmd/dev", ENVELOPE, QoS::AtLeastOnce)
    };
    let mut tx = [0u8; 256];
    // Off: delivered, not remembered, so its PUBACK gives no msgack.
    client.conn.set_msgack_tracking(false);
    let delivered = client
        .conn
        .handle_delivery(envelope, &mut tx, |_| None)
        .expect("delivered");
    assert_eq!(delivered.pkid, Some(1));
    assert!(!delivered.forgotten);
    assert_eq!(client.conn.tracker().pending_acks(), 0);
    client.send(&[0x40, 2, 0, 1]);
    assert!(client.out.events.is_empty());
    // On again: the store (4 entries) fills, and the fifth delivery forgets the oldest.
    client.conn.set_msgack_tracking(true);
    for expected_forgotten in [false, false, false, false, true] {
        let delivered = client
            .conn
            .handle_delivery(envelope, &mut tx, |_| None)
            .expect("delivered");
        assert_eq!(delivered.forgotten, expected_forgotten);
    }
    assert_eq!(client.conn.tracker().pending_acks(), 4);
}
