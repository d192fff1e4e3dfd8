//! MQTT 5 sessions with a fake clock: session expiry after the connection (kept sessions), the
//! delayed will, the Server Keep Alive, the Receive Maximum, the Maximum Packet Size and
//! reason strings (5.0 sections 3.1.2.11, 3.1.3.2, 3.2.2.3, 3.14.2.2 and 4.9).

use super::v5::disconnect5;
use super::*;

/// A property block that lives for the test.
fn props(list: &[Property<'static>], context: Context) -> Properties<'static> {
    let mut raw = vec![0u8; 256];
    let n = codec::encode_properties(list, &mut raw).expect("fits");
    raw.truncate(n);
    Properties::parse(Box::leak(raw.into_boxed_slice()), context).expect("valid")
}

fn v5_with(client_id: &'static str, list: &[Property<'static>]) -> Connect<'static> {
    Connect {
        protocol_level: 5,
        properties: props(list, Context::Connect),
        ..connect(client_id)
    }
}

/// A will on `status/w` with `list` as its properties.
fn will(list: &[Property<'static>]) -> Option<LastWill<'static>> {
    Some(LastWill {
        topic: "status/w",
        message: b"gone",
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: props(list, Context::Will),
    })
}

/// A client connected with `connect` under `config`; routes, events and counts cleared.
fn session(config: ServerConfig, connect: Connect<'static>) -> (Client, Vec<u8>) {
    let mut client = Client::with_config(config, REMOTE);
    assert_eq!(client.send(&encoded(connect)), NOTHING);
    let connack = client.answer(ConnectAnswer::accept(false));
    assert!(client.conn.is_connected(), "{connack:02x?}");
    client.out.routes.clear();
    client.out.events.clear();
    client.out.counts.clear();
    (client, connack)
}

fn connack_properties(connack: &[u8]) -> Vec<Property<'_>> {
    match codec::decode_with(connack, 1 << 20, Version::V5) {
        Ok(Some((Packet::ConnAck(ack), _))) => ack.properties.iter().collect(),
        other => panic!("not a CONNACK: {other:?}"),
    }
}

fn timeout(client: &mut Client, at: u64) {
    let mut tx = [0u8; 64];
    let n = client.conn.handle_timeout(at, &mut tx, &mut client.out);
    assert_eq!(n, 0, "a kept session writes nothing");
}

const WILL_ROUTE: fn() -> R =
    || R::Publish("status/w".into(), b"gone".to_vec(), QoS::AtLeastOnce, true);

#[test]
fn a_session_with_an_expiry_is_kept_until_it_expires() {
    let (mut client, _) = session(
        ServerConfig::default(),
        v5_with("keeper", &[Property::SessionExpiryInterval(2)]),
    );
    client.close(CloseCause::TransportClosed);
    assert_eq!(client.out.routes, [R::End(2, CloseCause::TransportClosed)]);
    assert!(client.conn.is_kept() && !client.conn.is_closed());
    assert_eq!(client.out.kinds(), [EventKind::Disconnected]);
    // A kept session reads nothing (the transport is gone; bytes left over are ignored).
    assert_eq!(
        client.send(&subscribe(1, &[("late", QoS::AtMostOnce)])),
        NOTHING
    );
    assert_eq!(client.out.routes.len(), 1);
    assert_eq!(client.conn.poll_timeout(), Some(T0 + 2_000));
    timeout(&mut client, T0 + 1_999);
    assert!(client.conn.is_kept());
    timeout(&mut client, T0 + 2_000);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.routes.last(), Some(&R::SessionExpired));
    assert_eq!(client.out.counts, [Counter::SessionExpired]);
    assert_eq!(client.conn.poll_timeout(), None);
    // The connection's own `disconnected` ended the presence; the second one ends the session:
    // reason session_expired, no reason code, the same connected_at.
    assert_eq!(
        client.out.kinds(),
        [EventKind::Disconnected, EventKind::Disconnected]
    );
    assert_eq!(
        client.out.events[1].1,
        json!({"client_id": "keeper", "reason": "session_expired", "connected_at": T0})
    );
    // All three events of the connection carry its session_seq (the one the driver gave).
    assert_eq!(client.out.session_seqs, [T0 * 100 + 1; 3]);
    timeout(&mut client, T0 + 9_000);
    assert_eq!(client.out.events.len(), 2, "once");
}

#[test]
fn a_never_ending_mqtt5_session_is_kept_without_a_deadline() {
    let (mut client, _) = session(
        ServerConfig::default(),
        v5_with(
            "forever",
            &[Property::SessionExpiryInterval(SESSION_NEVER_EXPIRES)],
        ),
    );
    client.close(CloseCause::TransportClosed);
    assert_eq!(
        client.out.routes,
        [R::End(SESSION_NEVER_EXPIRES, CloseCause::TransportClosed)]
    );
    assert!(client.conn.is_kept() && !client.conn.is_closed());
    assert_eq!(client.conn.poll_timeout(), None);
    timeout(&mut client, T0 + 1_000_000_000);
    assert!(client.conn.is_kept(), "it never expires");
    assert_eq!(client.out.kinds(), [EventKind::Disconnected]);
}

/// An MQTT 5 SUBSCRIBE (packet id 1) of `n/#` at QoS 1 with No Local, subscription
/// identifier 7.
const SUBSCRIBE_NO_LOCAL_7: [u8; 13] = [0x82, 11, 0, 1, 2, 0x0B, 7, 0, 3, b'n', b'/', b'#', 0x05];

/// A kept session of `resume` with the subscription of [`SUBSCRIBE_NO_LOCAL_7`], resumed (or
/// ended, with a clean start) at T0 + 1 s: what it hands over.
fn resumed_store(clean_start: bool) -> FixedSessionStore<4, 32, 2, 64> {
    let (mut old, _) = session(
        ServerConfig::default(),
        v5_with("resume", &[Property::SessionExpiryInterval(60)]),
    );
    old.send(&SUBSCRIBE_NO_LOCAL_7);
    old.close(CloseCause::TransportClosed);
    assert!(old.conn.is_kept());
    let mut resumed = FixedSessionStore::new();
    old.conn
        .handle_resume(T0 + 1_000, clean_start, &mut resumed, &mut old.out);
    assert!(old.conn.is_closed());
    assert_eq!(
        old.out.kinds(),
        [EventKind::Subscribed, EventKind::Disconnected]
    );
    resumed
}

/// A new connection of `resume` (clean start 0) that resumes `kept`, answered with
/// `session_present`.
fn resume(kept: &FixedSessionStore<4, 32, 2, 64>, session_present: bool) -> Client {
    let mut client = Client::new(REMOTE);
    let connect = Connect {
        clean_session: false,
        ..v5_with("resume", &[Property::SessionExpiryInterval(60)])
    };
    assert_eq!(client.send(&encoded(connect)), NOTHING);
    client.conn.handle_session_resumed(kept);
    let connack = client.answer(ConnectAnswer::accept(session_present));
    assert_eq!(connack[2], u8::from(session_present), "{connack:02x?}");
    client
}

#[test]
fn a_resumed_session_keeps_its_subscription_options_and_identifiers() {
    let kept = resumed_store(false);
    assert_eq!(kept.subscription("n/#"), Some(QoS::AtLeastOnce));
    let mut client = resume(&kept, true);
    // The router learns the filter again (no retained messages); nothing is reported.
    assert_eq!(
        client.out.routes[1..],
        [R::Subscribe("n/#".into(), QoS::AtLeastOnce)]
    );
    assert_eq!(client.out.kinds(), [EventKind::Connected]);
    // No Local still holds, and the identifier goes with the deliveries.
    let mine = Delivery {
        publisher: Some("resume"),
        ..Delivery::new("n/x", b"x", QoS::AtLeastOnce)
    };
    let mut tx = [0u8; 64];
    assert_eq!(
        client.conn.handle_delivery(mine, &mut tx, |_| None),
        Err(DeliveryError::Dropped(Counter::DeliveryNotWanted))
    );
    let theirs = client.deliver(Delivery {
        publisher: Some("other"),
        ..mine
    });
    let Ok(Some((Packet::Publish(publish), _))) = codec::decode_with(&theirs, 1 << 20, Version::V5)
    else {
        panic!("not a PUBLISH: {theirs:02x?}")
    };
    assert_eq!(
        publish.properties.iter().collect::<Vec<_>>(),
        [Property::SubscriptionIdentifier(7)]
    );
}

#[test]
fn subscriptions_resume_only_with_the_session() {
    // A clean start ends the kept session: nothing is handed over.
    assert_eq!(resumed_store(true).subscription_count(), 0);
    // The router has no session after all: the subscriptions are forgotten, not routed.
    let kept = resumed_store(false);
    let mut client = resume(&kept, false);
    assert_eq!(client.conn.store().subscription_count(), 0);
    assert_eq!(client.out.routes.len(), 1, "only the CONNECT");
    let mine = Delivery {
        publisher: Some("resume"),
        ..Delivery::new("n/x", b"x", QoS::AtMostOnce)
    };
    assert!(!client.deliver(mine).is_empty(), "no No Local any more");
}

#[test]
fn an_engine_that_keeps_no_session_resumes_none() {
    // KEEP = false (the embassy gateway's engine): the driver's store of a kept session is
    // ignored, even if the driver answers that the session is present.
    let kept = resumed_store(false);
    assert_eq!(kept.subscription_count(), 1);
    let mut conn: Connection<FixedAckStore<4, 128>, FixedSessionStore<4, 32, 2, 64>, false> =
        Connection::new(
            ServerConfig::default(),
            FixedAckStore::new(),
            FixedSessionStore::new(),
            REMOTE,
            T0,
            0x2a,
        );
    let mut out = Rec::default();
    let connect = encoded(Connect {
        clean_session: false,
        ..v5_with("resume", &[Property::SessionExpiryInterval(60)])
    });
    let mut tx = [0u8; 256];
    let p = conn.handle_input(T0, &connect, &mut tx, &mut out);
    assert_eq!(p.written, 0);
    assert!(conn.is_authorizing());
    conn.handle_session_resumed(&kept);
    assert_eq!(conn.store().subscription_count(), 0, "nothing copied");
    let p =
        conn.handle_connect_answer(T0, ConnectAnswer::accept(true), &connect, &mut tx, &mut out);
    assert!(conn.is_connected(), "{:02x?}", &tx[..p.written]);
    assert_eq!(conn.store().subscription_count(), 0);
    assert_eq!(
        out.routes.len(),
        1,
        "only the CONNECT, no resumed subscription"
    );
    assert_eq!(out.kinds(), [EventKind::Connected]);
}

#[test]
fn a_reconnect_within_the_expiry_resumes_and_drops_the_delayed_will() {
    let connect = Connect {
        will: will(&[Property::WillDelayInterval(5)]),
        ..v5_with("back", &[Property::SessionExpiryInterval(60)])
    };
    let (mut client, _) = session(ServerConfig::default(), connect);
    client.close(CloseCause::TransportClosed);
    assert_eq!(
        client.conn.poll_timeout(),
        Some(T0 + 5_000),
        "the will first"
    );
    let mut resumed = FixedSessionStore::<4, 32, 2, 64>::new();
    client
        .conn
        .handle_resume(T0 + 1_000, false, &mut resumed, &mut client.out);
    assert!(client.conn.is_closed());
    assert_eq!(
        client.out.routes,
        [R::End(60, CloseCause::TransportClosed)],
        "no will, no expiry: the session goes on in the new connection"
    );
}

#[test]
fn a_clean_start_reconnect_ends_the_session_and_sends_the_will() {
    let connect = Connect {
        will: will(&[Property::WillDelayInterval(5)]),
        ..v5_with("fresh", &[Property::SessionExpiryInterval(60)])
    };
    let (mut client, _) = session(ServerConfig::default(), connect);
    client.close(CloseCause::TransportClosed);
    let mut resumed = FixedSessionStore::<4, 32, 2, 64>::new();
    client
        .conn
        .handle_resume(T0 + 1_000, true, &mut resumed, &mut client.out);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.routes.last(), Some(&WILL_ROUTE()));
}

#[test]
fn the_will_waits_its_delay_and_carries_its_properties() {
    let connect = Connect {
        will: will(&[
            Property::WillDelayInterval(1),
            Property::MessageExpiryInterval(30),
            Property::UserProperty("k", "v"),
        ]),
        ..v5_with("late", &[Property::SessionExpiryInterval(10)])
    };
    let (mut client, _) = session(ServerConfig::default(), connect);
    client.close(CloseCause::KeepAliveTimeout);
    assert_eq!(client.out.routes.len(), 1, "no will yet");
    timeout(&mut client, T0 + 1_000);
    assert_eq!(client.out.routes.last(), Some(&WILL_ROUTE()));
    let routed = Properties::parse(&client.out.publish_properties, Context::Publish)
        .expect("PUBLISH properties");
    assert_eq!(
        routed.iter().collect::<Vec<_>>(),
        [
            Property::MessageExpiryInterval(30),
            Property::UserProperty("k", "v")
        ],
        "everything but the will delay goes out with the will"
    );
    assert_eq!(client.out.counts, [Counter::WillDelayed]);
    // The session is still kept, until its expiry.
    assert!(client.conn.is_kept());
    assert_eq!(client.conn.poll_timeout(), Some(T0 + 10_000));
    timeout(&mut client, T0 + 10_000);
    assert_eq!(client.out.routes.last(), Some(&R::SessionExpired));
    assert!(client.conn.is_closed());
}

#[test]
fn a_session_that_ends_before_the_will_delay_sends_the_will_then() {
    let connect = Connect {
        will: will(&[Property::WillDelayInterval(100)]),
        ..v5_with("short", &[Property::SessionExpiryInterval(2)])
    };
    let (mut client, _) = session(ServerConfig::default(), connect);
    client.close(CloseCause::TransportClosed);
    assert_eq!(client.conn.poll_timeout(), Some(T0 + 2_000));
    timeout(&mut client, T0 + 2_000);
    let tail: Vec<_> = client.out.routes[1..].to_vec();
    assert_eq!(tail, [WILL_ROUTE(), R::SessionExpired]);
    // Without a session expiry, a delayed will goes with the connection (5.0 3.1.3.2.2).
    let connect = Connect {
        will: will(&[Property::WillDelayInterval(100)]),
        ..v5_with("none", &[])
    };
    let (mut client, _) = session(ServerConfig::default(), connect);
    client.close(CloseCause::TransportClosed);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.routes[0], WILL_ROUTE());
}

#[test]
fn a_normal_disconnect_keeps_the_session_without_a_will() {
    let connect = Connect {
        will: will(&[Property::WillDelayInterval(1)]),
        ..v5_with("polite", &[Property::SessionExpiryInterval(3)])
    };
    let (mut client, _) = session(ServerConfig::default(), connect);
    assert_eq!(client.send(&[0xE0, 0]), NOTHING);
    assert!(client.conn.is_kept());
    assert_eq!(
        client.conn.poll_timeout(),
        Some(T0 + 3_000),
        "no will to wait for"
    );
    timeout(&mut client, T0 + 3_000);
    assert_eq!(
        client.out.routes,
        [R::End(3, CloseCause::ClientDisconnect), R::SessionExpired]
    );
}

#[test]
fn disconnect_may_change_the_expiry_but_not_from_0() {
    // 60 s, then 0 at DISCONNECT: the session ends with the connection.
    let (mut client, _) = session(
        ServerConfig::default(),
        v5_with("shorter", &[Property::SessionExpiryInterval(60)]),
    );
    client.send(&[0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 0]);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.routes, [R::End(0, CloseCause::ClientDisconnect)]);
    // 1 s, then 5 s at DISCONNECT.
    let (mut client, _) = session(
        ServerConfig::default(),
        v5_with("longer", &[Property::SessionExpiryInterval(1)]),
    );
    client.send(&[0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 5]);
    assert_eq!(client.conn.poll_timeout(), Some(T0 + 5_000));
    // 0, then 60 s: protocol error 0x82 (and the session still ends with the connection).
    let (mut client, _) = session(ServerConfig::default(), v5_with("grow", &[]));
    let bytes = client.send(&[0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 60]);
    assert_eq!(bytes, disconnect5(0x82));
    assert!(client.conn.is_closed());
    assert_eq!(client.out.routes, [R::End(0, CloseCause::ProtocolError)]);
}

#[test]
fn a_full_driver_discards_the_kept_session_at_once() {
    let connect = Connect {
        will: will(&[Property::WillDelayInterval(30)]),
        ..v5_with("crowded", &[Property::SessionExpiryInterval(60)])
    };
    let (mut client, _) = session(ServerConfig::default(), connect);
    client.close(CloseCause::TransportClosed);
    client.conn.handle_discard(T0, &mut client.out);
    assert!(client.conn.is_closed());
    assert_eq!(client.out.routes[1..], [WILL_ROUTE(), R::SessionExpired]);
    assert_eq!(client.out.counts, [Counter::SessionNotKept]);
    // The session is gone at once: said like an expiry.
    assert_eq!(client.out.events[1].1["reason"], "session_expired");
}

#[test]
fn mqtt_3_1_1_sessions_are_never_kept_by_the_engine() {
    // A persistent 3.1.1 session never expires: the router keeps it, the engine closes.
    let persistent = Connect {
        clean_session: false,
        will: will(&[]),
        ..connect("old-school")
    };
    let (mut client, _) = session(ServerConfig::default(), persistent);
    client.close(CloseCause::TransportClosed);
    assert!(client.conn.is_closed());
    assert_eq!(
        client.out.routes,
        [
            WILL_ROUTE(),
            R::End(SESSION_NEVER_EXPIRES, CloseCause::TransportClosed)
        ]
    );
}

#[test]
fn a_server_that_keeps_no_sessions_says_so_and_sends_the_will_at_once() {
    let config = ServerConfig {
        limits: Limits {
            max_session_expiry: 0,
            ..Limits::HOST
        },
        ..ServerConfig::default()
    };
    let connect = Connect {
        will: will(&[Property::WillDelayInterval(30)]),
        ..v5_with("gateway", &[Property::SessionExpiryInterval(3600)])
    };
    let (mut client, connack) = session(config, connect);
    assert!(connack_properties(&connack).contains(&Property::SessionExpiryInterval(0)));
    client.close(CloseCause::TransportClosed);
    assert!(client.conn.is_closed());
    assert_eq!(
        client.out.routes,
        [WILL_ROUTE(), R::End(0, CloseCause::TransportClosed)]
    );
}

#[test]
fn the_server_keep_alive_is_announced_and_applied() {
    let config = ServerConfig {
        limits: Limits {
            server_keep_alive: Some(4),
            ..Limits::HOST
        },
        ..ServerConfig::default()
    };
    let (client, connack) = session(config.clone(), v5_with("told", &[]));
    assert!(connack_properties(&connack).contains(&Property::ServerKeepAlive(4)));
    assert_eq!(client.conn.poll_timeout(), Some(T0 + 6_000));
    // MQTT 3.1.1 cannot be told: its own keep-alive (30 s) holds.
    let (client, connack) = session(config, connect("old"));
    assert_eq!(connack, [0x20, 2, 0, 0]);
    assert_eq!(client.conn.poll_timeout(), Some(T0 + 45_000));
}

#[test]
fn more_unreleased_qos2_publishes_than_the_receive_maximum_disconnect_with_0x93() {
    let config = ServerConfig {
        limits: Limits {
            max_inbound_qos2: 2,
            ..Limits::HOST
        },
        ..ServerConfig::default()
    };
    let (mut client, connack) = session(config, v5_with("eager", &[]));
    assert!(connack_properties(&connack).contains(&Property::ReceiveMaximum(2)));
    let qos2 = |pkid| {
        let mut bytes = publish("t", QoS::ExactlyOnce, Some(pkid), b"x");
        // An MQTT 5 PUBLISH: an empty property block after the packet id.
        bytes.insert(7, 0);
        bytes[1] += 1;
        bytes
    };
    assert_eq!(client.send(&qos2(1)), [0x50, 2, 0, 1]);
    assert_eq!(client.send(&qos2(2)), [0x50, 2, 0, 2]);
    assert_eq!(client.send(&qos2(3)), disconnect5(0x93));
    assert!(client.conn.is_closed());
    assert!(client.out.counts.contains(&Counter::QuotaExceeded));
}

#[test]
fn a_packet_over_the_announced_maximum_disconnects_with_0x95() {
    let config = ServerConfig {
        limits: Limits {
            max_packet_size: 64,
            ..Limits::HOST
        },
        ..ServerConfig::default()
    };
    let (mut client, connack) = session(config, v5_with("big", &[]));
    assert!(connack_properties(&connack).contains(&Property::MaximumPacketSize(64)));
    // A 65-byte PUBLISH (topic "t", empty properties, 59 bytes of payload).
    let mut big = vec![0x30, 63, 0, 1, b't', 0];
    big.extend_from_slice(&[b'x'; 59]);
    assert_eq!(big.len(), 65);
    assert_eq!(client.send(&big), disconnect5(0x95));
    assert_eq!(client.out.counts, [Counter::PacketTooLarge]);
}

#[test]
fn no_reason_strings_when_the_client_asks_for_none() {
    let quiet = &[Property::RequestProblemInformation(0)];
    let (mut client, _) = session(ServerConfig::default(), v5_with("quiet", quiet));
    let bytes = client.send(&[0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 60]);
    assert_eq!(bytes, [0xE0, 1, 0x82]);
    let mut client = Client::new(REMOTE);
    client.send(&encoded(v5_with("quiet", quiet)));
    assert_eq!(
        client.answer(ConnectAnswer::Refuse(ReasonCode::ServerBusy)),
        [0x20, 3, 0, 0x89, 0]
    );
}
