//! End-to-end, the setup of `docs/cluster.md`: a real two-node MQTT broker cluster (aedes 1.x
//! nodes sharing Debian's redis-server, `tests::cluster`), a tap in front of each node with the
//! tap configurations shown in `docs/cluster.md` (only the addresses changed), both taps sinking
//! their events into one Kafka (a real tansu), and clients that move from one tap to the other
//! by connecting again with the same client id: the cluster takes the session over from the
//! node the client left.
//!
//! The consumer's view of who is online at the end is computed from the Kafka records alone,
//! as a user's consumer would.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use adapter_tokio::config::{Config, Sink};
use rumqttc::QoS;
use tests::cluster::AedesCluster;
use tests::kafka::{Reader, Record, Tansu};
use tests::tap::start_tap;
use tests::{Client, WAIT, options};
use tokio::time::Instant;

/// The page whose tap configurations the test runs.
const PAGE: &str = include_str!("../../docs/cluster.md");

/// The ```toml block of `docs/cluster.md` that names `events.node = "<node>"`, parsed.
fn page_tap_config(node: &str) -> Config {
    let marker = format!("node = \"{node}\"");
    let blocks: Vec<&str> = PAGE
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .filter(|block| block.contains(&marker))
        .collect();
    assert_eq!(
        blocks.len(),
        1,
        "docs/cluster.md has one toml block with {marker}"
    );
    Config::from_toml_str(blocks[0])
        .unwrap_or_else(|e| panic!("docs/cluster.md's config of {node} is valid: {e}"))
}

/// The page's configuration of tap `node` with this machine's addresses: the tap listens on a
/// free loopback port, in front of `upstream`, and sinks into the Kafka at `kafka`.
fn tap_config(node: &str, upstream: SocketAddr, kafka: SocketAddr) -> Config {
    let mut config = page_tap_config(node);
    assert_eq!(config.events.node.as_deref(), Some(node));
    assert_eq!(
        config.sinks,
        [Sink::Kafka],
        "the page's taps sink into Kafka only"
    );
    config.listen = "127.0.0.1:0".parse().expect("a literal socket address");
    config.metrics_listen = None;
    config.shutdown_grace_ms = 200;
    config.upstream.address = Some(upstream.to_string());
    config.kafka.brokers = vec![kafka.to_string()];
    // One tansu is no replicated Kafka cluster.
    config.kafka.replication = 1;
    config
}

#[tokio::test]
async fn the_aedes_nodes_are_one_cluster_publishes_cross_and_a_session_moves() {
    let cluster = AedesCluster::start(2).await;
    let (a, b) = (cluster.addr(0), cluster.addr(1));

    // A persistent QoS 1 subscriber on node A gets what is published on node B.
    let mut on_a = options(a, "roamer");
    on_a.set_clean_session(false);
    let (mut roamer, connack) = Client::connect_with(on_a).await.expect("roamer on A");
    assert!(!connack.session_present, "a new session");
    roamer.subscribe("cluster/inbox", QoS::AtLeastOnce).await;
    let mut sender = Client::connect(b, "sender").await;
    for n in 0..5 {
        let payload = format!("to-a-{n}");
        sender
            .publish("cluster/inbox", QoS::AtLeastOnce, false, payload.as_bytes())
            .await;
        let got = roamer.next_publish().await;
        assert_eq!(got.payload, payload.as_bytes(), "from node B to node A");
    }

    // The same client id on node B: node A closes its connection, node B has the session
    // (the subscription, without subscribing again).
    let mut on_b = options(b, "roamer");
    on_b.set_clean_session(false);
    let (mut moved, connack) = Client::connect_with(on_b).await.expect("roamer on B");
    assert!(
        connack.session_present,
        "node B found the session of node A"
    );
    assert!(
        roamer.wait_closed(WAIT).await.is_some(),
        "node A closed the connection that node B took over:\n{}",
        cluster.logs()
    );
    // Published on node A now, delivered on node B.
    let mut sender_a = Client::connect(a, "sender-a").await;
    sender_a
        .publish("cluster/inbox", QoS::AtLeastOnce, false, b"to-b")
        .await;
    // Before it, node B may hand on a message the client already acknowledged on node A (QoS 1
    // is at least once): B queued it for the session while node A delivered it, and the PUBACK
    // on node A did not always clear B's copy in time.
    let mut again = Vec::new();
    loop {
        let got = moved.next_publish().await;
        if got.payload == b"to-b"[..] {
            break;
        }
        let payload = String::from_utf8_lossy(&got.payload).into_owned();
        assert!(
            payload.starts_with("to-a-"),
            "only a delivery again: {payload}"
        );
        again.push(payload);
    }
    println!("delivered again on node B after the move: {again:?}");
    moved.disconnect().await;
    sender.disconnect().await;
    sender_a.disconnect().await;
}

/// Which of the two taps a connection went through.
type TapIndex = usize;

/// A client that connects through tap `start`, then moves `moves` times to the other tap (a
/// new connection with the same client id; the cluster closes the old one, and the test waits
/// for that before the next move). Returns the taps in connection order, and the last
/// connection when `stay` (else it disconnects normally).
async fn roam(
    taps: [SocketAddr; 2],
    id: String,
    start: TapIndex,
    moves: usize,
    stay: bool,
) -> (Vec<TapIndex>, Option<Client>) {
    let mut at = start;
    let mut path = vec![at];
    let mut client = Client::connect(taps[at], &id).await;
    for _ in 0..moves {
        at = 1 - at;
        let next = Client::connect(taps[at], &id).await;
        assert!(
            client.wait_closed(WAIT).await.is_some(),
            "{id}: the connection through tap {} stayed open after the move",
            1 - at + 1
        );
        client = next;
        path.push(at);
    }
    if stay {
        (path, Some(client))
    } else {
        client.disconnect().await;
        (path, None)
    }
}

/// A presence record: its kind, client id, node and the record itself.
fn presence(record: &Record) -> Option<(&str, &str, &str)> {
    let kind = record.header("kind")?;
    if kind != "connected" && kind != "disconnected" {
        return None;
    }
    Some((
        kind,
        record.json["client_id"].as_str()?,
        record.json["node"].as_str()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_moving_between_two_taps_of_a_cluster_are_online_where_they_moved_to() {
    let tansu = Tansu::start().await;
    let cluster = AedesCluster::start(2).await;
    let tap_1 = start_tap(tap_config("tap-1", cluster.addr(0), tansu.addr)).await;
    let tap_2 = start_tap(tap_config("tap-2", cluster.addr(1), tansu.addr)).await;
    let taps = [tap_1.local_addr(), tap_2.local_addr()];
    let nodes = ["tap-1", "tap-2"];

    // "mover": a persistent session with a subscription, through tap 1, moves to tap 2.
    let mut first = options(taps[0], "mover");
    first.set_clean_session(false);
    let (mut mover, _) = Client::connect_with(first).await.expect("mover via tap 1");
    mover.subscribe("mover/inbox", QoS::AtLeastOnce).await;
    let mut second = options(taps[1], "mover");
    second.set_clean_session(false);
    let (mut moved, connack) = Client::connect_with(second).await.expect("mover via tap 2");
    assert!(
        connack.session_present,
        "node B's CONNACK, relayed by tap 2: the session came along"
    );
    assert!(
        mover.wait_closed(WAIT).await.is_some(),
        "tap 1 closed mover's old connection when node A did:\n{}",
        cluster.logs()
    );
    // Its subscription lives on: published directly on node A (no tap, no event), delivered
    // through node B and tap 2.
    let mut sender = Client::connect(cluster.addr(0), "sender").await;
    sender
        .publish("mover/inbox", QoS::AtLeastOnce, false, b"after the move")
        .await;
    assert_eq!(moved.next_publish().await.payload, &b"after the move"[..]);
    sender.disconnect().await;

    // "stayer" never moves; "m0".."m5" move 2 to 7 times at once, each starting on the other
    // tap than the one before; the odd ones disconnect at the end.
    let stayer = Client::connect(taps[0], "stayer").await;
    let roams: Vec<_> = (0..6)
        .map(|i| tokio::spawn(roam(taps, format!("m{i}"), i % 2, i + 2, i % 2 == 0)))
        .collect();
    let mut paths: BTreeMap<String, Vec<TapIndex>> = BTreeMap::new();
    paths.insert("mover".into(), vec![0, 1]);
    paths.insert("stayer".into(), vec![0]);
    let mut online: BTreeMap<String, &str> = BTreeMap::new();
    online.insert("mover".into(), "tap-2");
    online.insert("stayer".into(), "tap-1");
    let mut kept = Vec::new();
    for (i, roam) in roams.into_iter().enumerate() {
        let (path, client) = roam.await.expect("a roaming client completes");
        if let Some(client) = client {
            online.insert(format!("m{i}"), nodes[*path.last().expect("a connection")]);
            kept.push(client);
        }
        paths.insert(format!("m{i}"), path);
    }

    // Every connection gives a `connected`, every one that ended a `disconnected`.
    let connections: usize = paths.values().map(Vec::len).sum();
    let ended = connections - online.len();
    let mut reader = Reader::with_partitions(
        tansu.addr,
        &[page_topic().as_str()],
        page_tap_config("tap-1").kafka.partitions,
    );
    let deadline = Instant::now() + 6 * WAIT;
    loop {
        let count = |kind: &str| {
            reader
                .records
                .iter()
                .filter(|r| presence(r).is_some_and(|(k, _, _)| k == kind))
                .count()
        };
        if count("connected") >= connections && count("disconnected") >= ended {
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "{} of {connections} connected and {} of {ended} disconnected in Kafka:\n{}",
            count("connected"),
            count("disconnected"),
            reader.describe()
        );
        reader
            .read(reader.records.len() + 1, remaining.min(WAIT))
            .await;
    }
    let records: Vec<Record> = reader.records.clone();

    // Each client's presence events as the consumer got them (in arrival order).
    let mut by_client: BTreeMap<&str, Vec<(&str, &str, &Record)>> = BTreeMap::new();
    for record in &records {
        if let Some((kind, id, node)) = presence(record) {
            by_client.entry(id).or_default().push((kind, node, record));
        }
    }
    assert_eq!(
        by_client.keys().copied().collect::<Vec<_>>(),
        paths.keys().map(String::as_str).collect::<Vec<_>>(),
        "presence events of exactly the clients that went through a tap"
    );

    // Through each tap, a client's connections come and go in order: one producer per tap, and
    // a client's records share a partition (keyed by client id).
    let mut out_of_order = 0;
    let mut moves = 0;
    for (id, path) in &paths {
        let events = &by_client[id.as_str()];
        for (tap, node) in nodes.iter().enumerate() {
            let through = path.iter().filter(|&&t| t == tap).count();
            let ends_here = online.get(id) == Some(node);
            let kinds: Vec<&str> = events
                .iter()
                .filter(|(_, n, _)| n == node)
                .map(|(kind, _, _)| *kind)
                .collect();
            let want: Vec<&str> = (0..through)
                .flat_map(|i| {
                    if i + 1 == through && ends_here {
                        vec!["connected"]
                    } else {
                        vec!["connected", "disconnected"]
                    }
                })
                .collect();
            assert_eq!(kinds, want, "{id} through {node} (path {path:?})");
        }
        // A move: the new tap's `connected` and the old tap's `disconnected`, with the reason
        // a tap gives when its upstream closed the connection.
        for (j, pair) in path.windows(2).enumerate() {
            moves += 1;
            let (from, to) = (nodes[pair[0]], nodes[pair[1]]);
            // The connection's index among those through the same tap.
            let nth = |k: usize, tap: TapIndex| path[..k].iter().filter(|&&t| t == tap).count();
            let position = |kind: &str, node: &str, n: usize| {
                events
                    .iter()
                    .enumerate()
                    .filter(|(_, (k, nd, _))| *k == kind && *nd == node)
                    .nth(n)
                    .map(|(i, (_, _, record))| (i, *record))
                    .expect("counted above")
            };
            let (gone_at, gone) = position("disconnected", from, nth(j, pair[0]));
            assert_eq!(
                gone.json["reason"], "upstream_closed",
                "{id}: {}",
                gone.json
            );
            let (came_at, _) = position("connected", to, nth(j + 1, pair[1]));
            if came_at < gone_at {
                out_of_order += 1;
            }
        }
    }
    println!(
        "{moves} moves across the cluster; the new connection's `connected` arrived before the \
         old one's `disconnected` in {out_of_order}"
    );

    // session_seq: a `connected` and its `disconnected` share one (the i-th of each through
    // the same tap, in order as checked above), each tap's numbers carry its node_index in
    // their low bits, and a client's later connection has a larger number, also when it went
    // through the other tap.
    for (id, path) in &paths {
        let events = &by_client[id.as_str()];
        let seq_of = |record: &Record| {
            record.json["session_seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("{id}: a session_seq in {}", record.json))
        };
        let mut by_connection = Vec::new();
        for (tap, node) in nodes.iter().enumerate() {
            let index = page_tap_config(node)
                .events
                .node_index
                .expect("the page's taps set node_index");
            let of = |kind: &str| -> Vec<u64> {
                events
                    .iter()
                    .filter(|(k, n, _)| *k == kind && n == node)
                    .map(|(_, _, record)| seq_of(record))
                    .collect()
            };
            let (connected, disconnected) = (of("connected"), of("disconnected"));
            assert_eq!(
                connected[..disconnected.len()],
                disconnected[..],
                "{id} through {node}: each disconnected has its connected's session_seq"
            );
            assert!(
                connected.iter().all(|seq| seq % 64 == u64::from(index)),
                "{id} through {node}: node_index {index} in the low bits of {connected:?}"
            );
            // Which connection of the path each number belongs to.
            let mut numbers = connected.into_iter();
            for (k, &t) in path.iter().enumerate() {
                if t == tap {
                    by_connection.push((k, numbers.next().expect("counted above")));
                }
            }
        }
        by_connection.sort_unstable();
        let seqs: Vec<u64> = by_connection.into_iter().map(|(_, seq)| seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{id}: session_seq grows from connection to connection along {path:?}: {seqs:?}"
        );
    }

    // The consumer's view, by session_seq alone: the same whichever order the records come in
    // (as they arrived, reversed, every `disconnected` first, every `connected` first).
    let want: BTreeMap<&str, Option<&str>> = paths
        .keys()
        .map(|id| (id.as_str(), online.get(id).copied()))
        .collect();
    let arrived: Vec<&Record> = records.iter().collect();
    let mut reversed = arrived.clone();
    reversed.reverse();
    let mut disconnected_first = arrived.clone();
    disconnected_first.sort_by_key(|r| r.header("kind") != Some("disconnected"));
    let mut connected_first = arrived.clone();
    connected_first.sort_by_key(|r| r.header("kind") != Some("connected"));
    for (order, records) in [
        ("as arrived", &arrived),
        ("reversed", &reversed),
        ("disconnected first", &disconnected_first),
        ("connected first", &connected_first),
    ] {
        assert_eq!(
            who_is_online(records),
            want,
            "who is online, records {order}"
        );
    }

    // What a consumer that trusts the order of arrival would show instead.
    let mut last: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for (kind, id, node) in records.iter().filter_map(presence) {
        last.insert(id, (kind == "connected").then_some(node));
    }
    let wrong = want.iter().filter(|(id, at)| last[*id] != **at).count();
    println!(
        "the last event read of each client gives the wrong presence for {wrong} of {} clients",
        want.len()
    );

    // event_seq: each tap numbers its events one by one; the topic holds them all, no gaps.
    for node in nodes {
        let mut numbers: Vec<u64> = records
            .iter()
            .filter(|r| r.json["node"] == node)
            .map(|r| r.json["event_seq"].as_u64().expect("an event_seq"))
            .collect();
        numbers.sort_unstable();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "{node}'s event_seq without gaps or repeats: {numbers:?}"
        );
    }

    drop(kept);
    drop(stayer);
    drop(moved);
    tap_1.shutdown().await;
    tap_2.shutdown().await;
    tansu.stop().await;
}

/// Who is online after `records`, by `session_seq` alone (the rule of `docs/cluster.md`):
/// each client id's tap (its `node`) when online, `None` when not.
fn who_is_online<'a>(records: &[&'a Record]) -> BTreeMap<&'a str, Option<&'a str>> {
    // client id -> (session_seq, the tap while online)
    let mut state: BTreeMap<&str, (u64, Option<&str>)> = BTreeMap::new();
    for record in records {
        let Some((kind, id, node)) = presence(record) else {
            continue;
        };
        let seq = record.json["session_seq"].as_u64().expect("a session_seq");
        let known = state.get(id).map(|(known, _)| *known);
        match kind {
            // A newer session, unless its `disconnected` came first.
            "connected" if known.is_none_or(|known| seq > known) => {
                state.insert(id, (seq, Some(node)));
            }
            // Ends its own session, or one newer than any seen (its `connected` is late).
            "disconnected" if known.is_none_or(|known| seq >= known) => {
                state.insert(id, (seq, None));
            }
            _ => {}
        }
    }
    state
        .into_iter()
        .map(|(id, (_, node))| (id, node))
        .collect()
}

/// The one Kafka topic the page's taps write every event to.
fn page_topic() -> String {
    let topic = page_tap_config("tap-1").kafka.topic;
    assert_eq!(topic, page_tap_config("tap-2").kafka.topic, "one topic");
    topic.expect("the page's taps write every kind to one topic")
}
