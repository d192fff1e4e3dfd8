//! The fuzz bodies of the protocol engine: [`crate::server::Connection`], and in relay mode
//! [`crate::server::Relay`].

use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use arbitrary::{Arbitrary, Unstructured};

use crate::QoS;
use crate::acks::FixedAckStore;
use crate::codec::{self, Context, Packet, Property};
use crate::event::{EncodeOptions, Event, EventKind, Transport, encode, encoded_len_bound};
use crate::server::{
    CloseCause, ConnectAnswer, Connection, DeliveredFor, Delivery, DeliveryError,
    FixedRequestStore, FixedSessionStore, Limits, Output, Peer, ReasonCode, Relay, RelayOutput,
    Route, Routed, ServerConfig, SessionStore,
};

type FuzzConnection = Connection<FixedAckStore<4, 128>, FixedSessionStore<4, 32, 4, 64>>;

/// What the fuzzer does next to the connection.
#[derive(Arbitrary, Debug)]
enum Step {
    /// Bytes from the client (appended to the unconsumed ones).
    Input(Vec<u8>),
    /// A well-formed packet from the client, to get past the decoder more often.
    Packet(ClientPacket),
    /// The driver's verdict on a CONNECT.
    Answer(Verdict),
    /// A delivery from the router.
    Deliver {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        subscription_qos: u8,
        pkid: Option<u16>,
        envelope: bool,
    },
    /// Time passes, then the deadline is checked.
    Advance(u32),
    /// The driver ends the connection.
    Close(u8),
    /// The driver's transmit buffer shrinks or grows.
    TxSize(u16),
    /// The server shuts down: the session ends, deliveries still go out.
    Shutdown,
    /// The driver turns `msgack` tracking on or off.
    Tracking(bool),
    /// The client id of a kept session connects again (with clean start or not).
    Resume(bool),
    /// The driver has no room to keep the session.
    Discard,
}

#[derive(Arbitrary, Debug)]
enum Verdict {
    Accept(bool),
    Refuse(u8),
}

#[derive(Arbitrary, Debug)]
enum ClientPacket {
    Connect {
        client_id: String,
        clean: bool,
        keep_alive: u16,
        will: Option<(String, Vec<u8>, u8)>,
        level: bool,
        /// MQTT 5 Session Expiry Interval and Will Delay Interval, in seconds.
        expiry: Option<u8>,
        will_delay: Option<u8>,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        pkid: u16,
    },
    Subscribe {
        pkid: u16,
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    Ack {
        kind: u8,
        pkid: u16,
    },
    Ping,
    Disconnect,
    /// An MQTT 5 DISCONNECT that changes the session expiry (seconds).
    DisconnectExpiry(u8),
}

/// A property block of one seconds property, or none (MQTT 3.1.1 drops it when encoding).
fn seconds_property<'r>(
    property: Option<Property<'static>>,
    context: Context,
    raw: &'r mut [u8; 5],
) -> crate::codec::Properties<'r> {
    property
        .and_then(|p| crate::codec::encode_properties(&[p], raw).ok())
        .and_then(|n| crate::codec::Properties::parse(&raw[..n], context).ok())
        .unwrap_or_default()
}

fn qos(byte: u8) -> QoS {
    QoS::from_u8(byte % 3).unwrap_or(QoS::AtMostOnce)
}

impl ClientPacket {
    /// The packet's bytes, or nothing when the codec refuses to encode it (an invalid topic,
    /// say): the engine is fuzzed with raw bytes too.
    fn bytes(&self, version: codec::Version) -> Vec<u8> {
        let filters_owned: Vec<(&str, QoS)>;
        let unsub_owned: Vec<&str>;
        let mut connect_raw = [0u8; 5];
        let mut will_raw = [0u8; 5];
        let mut disconnect_raw = [0u8; 5];
        let packet = match self {
            ClientPacket::Connect {
                client_id,
                clean,
                keep_alive,
                will,
                level,
                expiry,
                will_delay,
            } => Packet::Connect(codec::Connect {
                protocol_name: crate::codec::ProtocolName::Mqtt,
                properties: seconds_property(
                    expiry.map(|s| Property::SessionExpiryInterval(u32::from(s))),
                    Context::Connect,
                    &mut connect_raw,
                ),
                protocol_level: if *level { 4 } else { 5 },
                // (Level 5 makes the connection MQTT 5: later packets are encoded for it.)
                client_id,
                clean_session: *clean,
                keep_alive: *keep_alive,
                username: None,
                password: None,
                will: will.as_ref().map(|(topic, message, q)| codec::LastWill {
                    properties: seconds_property(
                        will_delay.map(|s| Property::WillDelayInterval(u32::from(s))),
                        Context::Will,
                        &mut will_raw,
                    ),
                    topic,
                    message,
                    qos: qos(*q),
                    retain: false,
                }),
            }),
            ClientPacket::Publish {
                topic,
                payload,
                qos: q,
                pkid,
            } => {
                let q = qos(*q);
                Packet::Publish(codec::Publish {
                    properties: crate::codec::Properties::EMPTY,
                    dup: false,
                    qos: q,
                    retain: false,
                    topic,
                    pkid: (q != QoS::AtMostOnce).then_some((*pkid).max(1)),
                    payload,
                })
            }
            ClientPacket::Subscribe { pkid, filters } => {
                filters_owned = filters.iter().map(|(f, q)| (f.as_str(), qos(*q))).collect();
                Packet::Subscribe(codec::Subscribe {
                    properties: crate::codec::Properties::EMPTY,
                    pkid: (*pkid).max(1),
                    filters: codec::SubscribeFilters::from_slice(&filters_owned),
                })
            }
            ClientPacket::Unsubscribe { pkid, filters } => {
                unsub_owned = filters.iter().map(String::as_str).collect();
                Packet::Unsubscribe(codec::Unsubscribe {
                    properties: crate::codec::Properties::EMPTY,
                    pkid: (*pkid).max(1),
                    filters: codec::UnsubscribeFilters::from_slice(&unsub_owned),
                })
            }
            ClientPacket::Ack { kind, pkid } => {
                let pkid = (*pkid).max(1);
                match kind % 4 {
                    0 => Packet::PubAck(crate::codec::Ack::new(pkid)),
                    1 => Packet::PubRec(crate::codec::Ack::new(pkid)),
                    2 => Packet::PubRel(crate::codec::Ack::new(pkid)),
                    _ => Packet::PubComp(crate::codec::Ack::new(pkid)),
                }
            }
            ClientPacket::Ping => Packet::PingReq,
            ClientPacket::Disconnect => Packet::Disconnect(crate::codec::Disconnect::NORMAL),
            ClientPacket::DisconnectExpiry(seconds) => Packet::Disconnect(codec::Disconnect {
                properties: seconds_property(
                    Some(Property::SessionExpiryInterval(u32::from(*seconds))),
                    Context::Disconnect,
                    &mut disconnect_raw,
                ),
                ..crate::codec::Disconnect::NORMAL
            }),
        };
        let Ok(len) = packet.encoded_len_with(version) else {
            return Vec::new();
        };
        let mut bytes = vec![0u8; len];
        match packet.encode_with(&mut bytes, version) {
            Ok(_) => bytes,
            Err(_) => Vec::new(),
        }
    }
}

/// Records what the engine hands out and checks the order of it.
#[derive(Default)]
struct Recorder {
    connect_routes: usize,
    connected: usize,
    disconnected: usize,
    ends: usize,
    after_end: usize,
    expired: usize,
    /// `disconnected` events with reason `session_expired`.
    session_expired: usize,
    except_sender: bool,
    event_copy: Option<(String, Vec<u8>)>,
}

impl Output for Recorder {
    fn route(&mut self, route: Route<'_>) -> Routed {
        // After the end, only a kept session's delayed will and its expiry.
        let kept = matches!(route, Route::SessionExpired)
            || matches!(route, Route::Publish(p) if p.is_will);
        if self.ends > 0 && !kept {
            self.after_end += 1;
        }
        if matches!(route, Route::SessionExpired) {
            self.expired += 1;
            assert_eq!(
                self.ends, 1,
                "a session expires only after its connection ended"
            );
        }
        match route {
            Route::Connect(request) => {
                self.connect_routes += 1;
                assert!(!request.client_id.is_empty(), "an empty id is assigned one");
            }
            Route::End { .. } => self.ends += 1,
            Route::Publish(publish) => {
                assert!(
                    !crate::system::SystemTopics::default().is_system_topic(publish.topic)
                        && !publish.topic.starts_with('$'),
                    "a publish on a system or `$` topic is never routed: {:?}",
                    publish.topic
                );
                if self.except_sender {
                    return Routed::ExceptSender;
                }
            }
            _ => {}
        }
        Routed::Accepted
    }

    fn event(&mut self, event: &Event<'_>) -> Option<Delivery<'_>> {
        match event.kind() {
            EventKind::Connected => self.connected += 1,
            EventKind::Disconnected
                if matches!(event, Event::Disconnected(d)
                    if d.reason == crate::event::DisconnectReason::SessionExpired) =>
            {
                assert_eq!(
                    (self.disconnected, self.ends, self.session_expired),
                    (1, 1, 0),
                    "session_expired once, after the connection's own disconnected"
                );
                self.session_expired += 1;
            }
            EventKind::Disconnected => {
                assert_eq!(self.connected, 1, "disconnected only after connected");
                self.disconnected += 1;
            }
            EventKind::Refused => {
                assert_eq!(
                    self.connected, 0,
                    "refused only for a connection never connected"
                );
            }
            // A denied will can come after the end (a delayed will of a kept session), and a
            // drop whenever the driver sees it.
            EventKind::Denied | EventKind::Dropped => {}
            _ => assert!(
                self.connected == 1 && self.disconnected == 0,
                "{:?} outside the session",
                event.kind()
            ),
        }
        let options = EncodeOptions::default();
        let mut json = vec![0u8; encoded_len_bound(event, &options)];
        let n = encode(event, &options, &mut json).expect("an event encodes within its bound");
        json.truncate(n);
        if !self.except_sender {
            return None;
        }
        let topic = crate::system::SystemTopics::default()
            .topic(event.kind())
            .to_string();
        let (topic, json) = self.event_copy.insert((topic, json));
        Some(Delivery::new(topic, json, QoS::AtLeastOnce))
    }
}

/// Checks that `bytes` are whole, valid packets a server speaking `version` may send.
fn check_sent(bytes: &[u8], version: codec::Version) {
    let mut rest = bytes;
    while !rest.is_empty() {
        match codec::decode_with(rest, usize::MAX, version) {
            Ok(Some((packet, len))) => {
                assert!(
                    matches!(
                        packet,
                        Packet::ConnAck(_)
                            | Packet::Publish(_)
                            | Packet::PubAck(_)
                            | Packet::PubRec(_)
                            | Packet::PubRel(_)
                            | Packet::PubComp(_)
                            | Packet::SubAck(_)
                            | Packet::UnsubAck(_)
                            | Packet::PingResp
                    ) || (version.is_v5() && matches!(packet, Packet::Disconnect(_))),
                    "a server sent {packet:?}"
                );
                rest = &rest[len..];
            }
            other => panic!("the engine wrote {other:?} in {bytes:?}"),
        }
    }
}

/// Drives a [`Connection`] with arbitrary client bytes (raw and well-formed), driver verdicts,
/// deliveries, clock steps, closes and transmit buffer sizes.
///
/// It must never panic; consume no more than it was given; write only whole, valid
/// server-to-client packets within the transmit buffer it got; ask for a verdict at most once;
/// emit `connected` at most once and only after an accepting verdict, session events only
/// between `connected` and `disconnected`, at most one `disconnected` and one [`Route::End`],
/// nothing after that; never route a publish on a system topic; and write no delivery once
/// closed. Every event it emits must encode within its bound.
pub fn server(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(except_sender), Ok(loopback), Ok(small_limits)) = (
        bool::arbitrary(&mut u),
        bool::arbitrary(&mut u),
        bool::arbitrary(&mut u),
    ) else {
        return;
    };
    let mut config = ServerConfig::default();
    if small_limits {
        config.limits = Limits {
            max_packet_size: 96,
            max_inbound_qos2: 2,
            max_subscriptions: 2,
            max_filters_per_packet: 3,
            max_qos: QoS::AtLeastOnce,
            max_session_expiry: 30,
            ..Limits::HOST
        };
        config.limits.server_keep_alive = Some(5);
    }
    let peer = Peer {
        addr: Some("192.0.2.1:1883"),
        is_loopback: loopback,
        transport: Transport::Tcp,
    };
    let mut now = 1_700_000_000_000u64;
    let mut conn = FuzzConnection::new(
        config,
        FixedAckStore::new(),
        FixedSessionStore::new(),
        peer,
        now,
        7,
    );
    let mut out = Recorder {
        except_sender,
        ..Recorder::default()
    };
    let mut rx: Vec<u8> = Vec::new();
    let mut tx = vec![0u8; 512];
    let mut accepted = false;
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        let before = (out.connected, out.disconnected, out.ends);
        let was_closed = conn.is_closed();
        let was_draining = conn.is_draining();
        let written = match step {
            Step::Input(bytes) => {
                rx.extend_from_slice(&bytes);
                let p = conn.handle_input(now, &rx, &mut tx, &mut out);
                assert!(p.consumed <= rx.len());
                if was_draining {
                    assert_eq!(
                        (p.consumed, p.written),
                        (0, 0),
                        "a draining connection reads nothing"
                    );
                }
                rx.drain(..p.consumed);
                p.written
            }
            Step::Packet(packet) => {
                rx.extend_from_slice(&packet.bytes(conn.version()));
                let p = conn.handle_input(now, &rx, &mut tx, &mut out);
                assert!(p.consumed <= rx.len());
                rx.drain(..p.consumed);
                p.written
            }
            Step::Answer(verdict) => {
                let authorizing = conn.is_authorizing();
                let answer = match verdict {
                    Verdict::Accept(present) => ConnectAnswer::accept(present),
                    Verdict::Refuse(code) => ConnectAnswer::Refuse(match code % 4 {
                        0 => ReasonCode::BadUserNameOrPassword,
                        1 => ReasonCode::NotAuthorized,
                        2 => ReasonCode::ServerBusy,
                        _ => ReasonCode::ServerUnavailable,
                    }),
                };
                let p = conn.handle_connect_answer(now, answer, &rx, &mut tx, &mut out);
                assert!(p.consumed <= rx.len());
                if !authorizing {
                    assert_eq!(
                        (p.consumed, p.written),
                        (0, 0),
                        "an answer nobody asked for"
                    );
                }
                if authorizing && p.consumed > 0 && matches!(answer, ConnectAnswer::Accept { .. }) {
                    accepted = true;
                }
                rx.drain(..p.consumed);
                p.written
            }
            Step::Deliver {
                topic,
                payload,
                qos: q,
                subscription_qos,
                pkid,
                envelope,
            } => {
                let payload = if envelope {
                    br#"{"product_id":"p","message_id":7}"#.to_vec()
                } else {
                    payload
                };
                let delivery = Delivery {
                    properties: crate::codec::Properties::EMPTY,
                    topic: &topic,
                    payload: &payload,
                    qos: qos(q),
                    subscription_qos: qos(subscription_qos),
                    retain: false,
                    dup: false,
                    pkid,
                    publisher: Some("pub"),
                    published_retain: false,
                    subscription: DeliveredFor::AllMatching,
                    waited_ms: 0,
                };
                match conn.handle_delivery(delivery, &mut tx, |_| None) {
                    Ok(delivered) => {
                        assert!(
                            conn.is_connected() || conn.is_draining(),
                            "a delivery while not connected"
                        );
                        assert!(delivered.qos <= qos(q).min(qos(subscription_qos)));
                        delivered.written
                    }
                    Err(DeliveryError::NotConnected) => {
                        assert!(!conn.is_connected() && !conn.is_draining());
                        0
                    }
                    Err(_) => 0,
                }
            }
            Step::Advance(ms) => {
                now = now.saturating_add(u64::from(ms));
                conn.handle_timeout(now, &mut tx, &mut out)
            }
            Step::Close(cause) => {
                let cause = match cause % 4 {
                    0 => CloseCause::TransportClosed,
                    1 => CloseCause::TakenOver,
                    2 => CloseCause::ServerShutdown,
                    _ => CloseCause::RouterClosed,
                };
                conn.handle_close(now, cause, &mut tx, &mut out)
            }
            Step::TxSize(size) => {
                tx = vec![0u8; usize::from(size)];
                0
            }
            Step::Shutdown => {
                let connected = conn.is_connected();
                let written = conn.handle_shutdown(now, &mut tx, &mut out);
                assert_eq!(conn.is_draining(), connected, "only a session drains");
                assert!(conn.is_draining() || conn.is_closed());
                written
            }
            Step::Tracking(on) => {
                conn.set_msgack_tracking(on);
                0
            }
            Step::Resume(clean_start) => {
                let kept = conn.is_kept();
                let mut resumed = FixedSessionStore::<4, 32, 4, 64>::new();
                conn.handle_resume(now, clean_start, &mut resumed, &mut out);
                assert!(
                    !kept || conn.is_closed(),
                    "a resumed session closes the old engine"
                );
                assert!(
                    (kept && !clean_start) || resumed.subscription_count() == 0,
                    "only a resumed session hands its subscriptions over"
                );
                assert_eq!(resumed.will(), None, "the will stays with the old engine");
                0
            }
            Step::Discard => {
                let kept = conn.is_kept();
                let expired = out.expired;
                conn.handle_discard(now, &mut out);
                if kept {
                    assert!(conn.is_closed() && out.expired == expired + 1);
                }
                assert!(
                    out.session_expired <= out.expired,
                    "reported with the expiry"
                );
                0
            }
        };
        assert!(out.expired <= 1, "a session expires once");
        if conn.is_kept() {
            assert_eq!(out.ends, 1, "kept only after the connection ended");
        }
        if was_draining && !conn.is_closed() {
            assert!(conn.is_draining(), "a draining connection only closes");
            assert_eq!(
                (out.connected, out.disconnected, out.ends),
                before,
                "a draining connection reports nothing more"
            );
        }
        assert!(written <= tx.len());
        check_sent(&tx[..written], conn.version());
        if was_closed {
            assert_eq!(
                (out.connected, out.disconnected, out.ends),
                before,
                "nothing happens after the close"
            );
            assert_eq!(written, 0, "nothing is written after the close");
        }
        assert!(out.connect_routes <= 1);
        assert!(out.connected <= 1 && out.disconnected <= 1 && out.ends <= 1);
        assert_eq!(out.after_end, 0, "no route after the session's end");
        if out.connected == 1 {
            assert!(accepted, "connected only after an accepting verdict");
        }
        assert_eq!(
            out.disconnected, out.ends,
            "a disconnected event with every end"
        );
    }
}

// ---- relay mode -------------------------------------------------------------------------------

type FuzzRelay =
    Relay<FixedAckStore<4, 128>, FixedSessionStore<4, 32, 4, 64>, FixedRequestStore<4, 128>>;

/// What the fuzzer does next to a relayed connection.
#[derive(Arbitrary, Debug)]
enum RelayStep {
    /// Bytes from the client.
    Input(Vec<u8>),
    /// A well-formed packet from the client.
    Packet(ClientPacket),
    /// The driver's verdict on a CONNECT.
    Answer(Verdict),
    /// Bytes from the upstream broker.
    UpstreamInput(Vec<u8>),
    /// A well-formed packet from the upstream broker.
    Upstream(UpstreamPacket),
    /// Time passes, then the deadline is checked.
    Advance(u32),
    /// The driver ends the connection.
    Close(u8),
    /// The server shuts down (the upstream is still relayed until a close).
    Shutdown,
    /// The driver's transmit buffer shrinks or grows.
    TxSize(u16),
}

#[derive(Arbitrary, Debug)]
enum UpstreamPacket {
    ConnAck(u8),
    SubAck {
        pkid: u16,
        codes: Vec<u8>,
    },
    UnsubAck(u16),
    Publish {
        topic: String,
        qos: u8,
        pkid: u16,
        envelope: bool,
    },
    Ack {
        kind: u8,
        pkid: u16,
    },
    PingResp,
}

impl UpstreamPacket {
    /// The packet's bytes, or nothing when the codec refuses to encode it.
    fn bytes(&self, version: codec::Version) -> Vec<u8> {
        let codes_owned: Vec<codec::SubAckCode>;
        let packet = match self {
            UpstreamPacket::ConnAck(code) => Packet::ConnAck(codec::ConnAck {
                properties: crate::codec::Properties::EMPTY,
                session_present: false,
                code: code % 6,
            }),
            UpstreamPacket::SubAck { pkid, codes } => {
                codes_owned = codes
                    .iter()
                    .map(|c| match c % 4 {
                        3 => codec::SubAckCode::Failure,
                        q => codec::SubAckCode::Success(qos(q)),
                    })
                    .collect();
                Packet::SubAck(codec::SubAck {
                    properties: crate::codec::Properties::EMPTY,
                    pkid: (*pkid).max(1),
                    codes: codec::SubAckCodes::from_slice(&codes_owned),
                })
            }
            UpstreamPacket::UnsubAck(pkid) => {
                Packet::UnsubAck(crate::codec::UnsubAck::new((*pkid).max(1)))
            }
            UpstreamPacket::Publish {
                topic,
                qos: q,
                pkid,
                envelope,
            } => {
                let q = qos(*q);
                Packet::Publish(codec::Publish {
                    properties: crate::codec::Properties::EMPTY,
                    dup: false,
                    qos: q,
                    retain: false,
                    topic,
                    pkid: (q != QoS::AtMostOnce).then_some((*pkid).max(1)),
                    payload: if *envelope {
                        br#"{"product_id":"p","message_id":7}"#
                    } else {
                        b"x"
                    },
                })
            }
            UpstreamPacket::Ack { kind, pkid } => {
                let pkid = (*pkid).max(1);
                match kind % 4 {
                    0 => Packet::PubAck(crate::codec::Ack::new(pkid)),
                    1 => Packet::PubRec(crate::codec::Ack::new(pkid)),
                    2 => Packet::PubRel(crate::codec::Ack::new(pkid)),
                    _ => Packet::PubComp(crate::codec::Ack::new(pkid)),
                }
            }
            UpstreamPacket::PingResp => Packet::PingResp,
        };
        let Ok(len) = packet.encoded_len_with(version) else {
            return Vec::new();
        };
        let mut bytes = vec![0u8; len];
        match packet.encode_with(&mut bytes, version) {
            Ok(_) => bytes,
            Err(_) => Vec::new(),
        }
    }
}

/// A [`Recorder`] that also records what goes upstream.
#[derive(Default)]
struct RelayRecorder {
    inner: Recorder,
    upstream: Vec<u8>,
    accepted: usize,
    /// The version of the forwarded CONNECT (what the forwarded packets after it speak).
    version: Option<codec::Version>,
}

impl Output for RelayRecorder {
    fn route(&mut self, route: Route<'_>) -> Routed {
        assert!(
            matches!(
                route,
                Route::Connect(_) | Route::Publish(_) | Route::End { .. }
            ),
            "no {route:?} in relay mode"
        );
        self.inner.route(route)
    }

    fn event(&mut self, event: &Event<'_>) -> Option<Delivery<'_>> {
        if event.kind() == EventKind::Connected {
            assert_eq!(
                self.accepted, 1,
                "connected only after the upstream accepted"
            );
        }
        self.inner.event(event)
    }
}

impl RelayOutput for RelayRecorder {
    fn forward(&mut self, packet: &[u8]) {
        assert_eq!(self.inner.ends, 0, "nothing goes upstream after the end");
        let version = self.version.unwrap_or(codec::Version::V3_1_1);
        match codec::decode_with(packet, usize::MAX, version) {
            Ok(Some((decoded, len))) => {
                assert_eq!(len, packet.len(), "one whole packet");
                if self.upstream.is_empty() {
                    let Packet::Connect(connect) = decoded else {
                        panic!("the CONNECT first, not {decoded:?}");
                    };
                    self.version = connect.version();
                } else {
                    assert!(
                        !matches!(
                            decoded,
                            Packet::Connect(_)
                                | Packet::ConnAck(_)
                                | Packet::SubAck(_)
                                | Packet::UnsubAck(_)
                                | Packet::PingResp
                        ),
                        "forwarded {decoded:?}"
                    );
                }
                if let Packet::Publish(publish) = decoded {
                    assert!(
                        !crate::system::SystemTopics::default().is_system_topic(publish.topic)
                            && !publish.topic.starts_with('$'),
                        "a publish on a system or `$` topic went upstream: {:?}",
                        publish.topic
                    );
                }
            }
            other => panic!("forwarded {other:?}"),
        }
        self.upstream.extend_from_slice(packet);
    }

    fn upstream_accepted(&mut self, client_id: &str) {
        assert!(!client_id.is_empty());
        self.accepted += 1;
    }
}

/// Drives a [`Relay`] with arbitrary client and upstream bytes (raw and well-formed), driver
/// verdicts, clock steps, closes and transmit buffer sizes.
///
/// Besides what [`server()`] checks: only whole client packets go upstream, the CONNECT first
/// and only after an accepting verdict, never a packet only a server sends nor a publish on a
/// system or `$` topic; the upstream's bytes are forwarded as a prefix of what was consumed;
/// `connected` comes only after the upstream accepted, which happens at most once.
pub fn relay(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(loopback), Ok(small_limits)) = (bool::arbitrary(&mut u), bool::arbitrary(&mut u))
    else {
        return;
    };
    let mut config = ServerConfig::default();
    if small_limits {
        config.limits = Limits {
            max_packet_size: 96,
            max_inbound_qos2: 2,
            max_subscriptions: 2,
            max_filters_per_packet: 3,
            max_qos: QoS::AtLeastOnce,
            max_session_expiry: 30,
            ..Limits::HOST
        };
    }
    let peer = Peer {
        addr: Some("192.0.2.1:1883"),
        is_loopback: loopback,
        transport: Transport::Tcp,
    };
    let mut now = 1_700_000_000_000u64;
    let conn = Connection::new(
        config,
        FixedAckStore::new(),
        FixedSessionStore::new(),
        peer,
        now,
        7,
    );
    let mut relay: FuzzRelay = Relay::new(conn, FixedRequestStore::new(), 5_000);
    let mut out = RelayRecorder::default();
    let mut rx: Vec<u8> = Vec::new();
    let mut up: Vec<u8> = Vec::new();
    let mut tx = vec![0u8; 512];
    let mut accepted = false;
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        let Ok(step) = RelayStep::arbitrary(&mut u) else {
            break;
        };
        let before = (out.inner.connected, out.inner.disconnected, out.inner.ends);
        let forwarded_before = out.upstream.len();
        let was_closed = relay.is_closed();
        let mut upstream =
            |relay: &mut FuzzRelay, out: &mut RelayRecorder, tx: &mut [u8], bytes: &[u8]| {
                up.extend_from_slice(bytes);
                let r = relay.handle_upstream_input(now, &up, tx, out, |_| None);
                assert!(r.forward <= r.consumed && r.consumed <= up.len());
                check_sent(&up[..r.forward], relay.version());
                up.drain(..r.consumed);
                r.written
            };
        let written = match step {
            RelayStep::Input(bytes) => {
                rx.extend_from_slice(&bytes);
                let p = relay.handle_input(now, &rx, &mut tx, &mut out);
                assert!(p.consumed <= rx.len());
                rx.drain(..p.consumed);
                p.written
            }
            RelayStep::Packet(packet) => {
                rx.extend_from_slice(&packet.bytes(relay.version()));
                let p = relay.handle_input(now, &rx, &mut tx, &mut out);
                assert!(p.consumed <= rx.len());
                rx.drain(..p.consumed);
                p.written
            }
            RelayStep::Answer(verdict) => {
                let authorizing = relay.is_authorizing();
                let answer = match verdict {
                    Verdict::Accept(present) => ConnectAnswer::accept(present),
                    Verdict::Refuse(code) => ConnectAnswer::Refuse(match code % 4 {
                        0 => ReasonCode::BadUserNameOrPassword,
                        1 => ReasonCode::NotAuthorized,
                        2 => ReasonCode::ServerBusy,
                        _ => ReasonCode::ServerUnavailable,
                    }),
                };
                let p = relay.handle_connect_answer(now, answer, &rx, &mut tx, &mut out);
                assert!(p.consumed <= rx.len());
                if !authorizing {
                    assert_eq!((p.consumed, p.written), (0, 0), "an unasked answer");
                }
                if authorizing && p.consumed > 0 && matches!(answer, ConnectAnswer::Accept { .. }) {
                    accepted = true;
                }
                rx.drain(..p.consumed);
                p.written
            }
            RelayStep::UpstreamInput(bytes) => upstream(&mut relay, &mut out, &mut tx, &bytes),
            RelayStep::Upstream(packet) => {
                let version = relay.version();
                upstream(&mut relay, &mut out, &mut tx, &packet.bytes(version))
            }
            RelayStep::Advance(ms) => {
                now = now.saturating_add(u64::from(ms));
                relay.handle_timeout(now, &mut tx, &mut out)
            }
            RelayStep::Close(cause) => {
                let cause = match cause % 4 {
                    0 => CloseCause::TransportClosed,
                    1 => CloseCause::TakenOver,
                    2 => CloseCause::ServerShutdown,
                    _ => CloseCause::RouterClosed,
                };
                relay.handle_close(now, cause, &mut tx, &mut out)
            }
            RelayStep::Shutdown => relay.handle_shutdown(now, &mut tx, &mut out),
            RelayStep::TxSize(size) => {
                tx = vec![0u8; usize::from(size)];
                0
            }
        };
        assert!(written <= tx.len());
        check_sent(&tx[..written], relay.version());
        if was_closed {
            assert_eq!(
                (out.inner.connected, out.inner.disconnected, out.inner.ends),
                before,
                "nothing happens after the close"
            );
            assert_eq!(written, 0, "nothing is written after the close");
            assert_eq!(
                out.upstream.len(),
                forwarded_before,
                "nothing goes upstream"
            );
        }
        if !out.upstream.is_empty() {
            assert!(
                accepted,
                "nothing goes upstream before an accepting verdict"
            );
        }
        let inner = &out.inner;
        assert!(inner.connect_routes <= 1 && out.accepted <= 1);
        assert!(inner.connected <= 1 && inner.disconnected <= 1 && inner.ends <= 1);
        assert_eq!(inner.after_end, 0, "no route after the session's end");
        assert_eq!(
            inner.disconnected, inner.ends,
            "a disconnected event with every end"
        );
    }
}
