//! A real multi-node MQTT broker cluster for the end-to-end tests: Debian's `redis-server` and
//! aedes 1.x nodes (npm `aedes`, `mqemitter-redis`, `aedes-persistence-redis`, installed in
//! `tests/cluster` by `scripts/test.sh` with `npm ci`) sharing it, each node a `node` process on
//! its own port running `tests/cluster/node.mjs`.
//!
//! mqemitter-redis carries every publish from node to node through redis pub/sub (also aedes's
//! own announcement of a new connection, on which the other nodes close their connection of the
//! same client id), and aedes-persistence-redis keeps the sessions in redis, so a client id
//! that connects to another node takes its session over there. [`AedesCluster::start`] returns
//! only once every node receives what any node publishes. Everything is killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rumqttc::QoS;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout_at};

use crate::Client;
use crate::ports::free_port;

/// How long a redis or aedes process may take to serve, and the cluster to join up, on a busy
/// machine.
const START_WAIT: Duration = Duration::from_secs(30);

/// The npm package with the node script: `tests/cluster`.
fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster")
}

/// A log file's text, for failure messages.
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Debian's `redis-server` on a free loopback port, without disk persistence, killed when
/// dropped.
pub struct Redis {
    /// Its address.
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Redis {
    /// Starts redis-server in `dir` and waits until it answers `PING`.
    pub async fn start(dir: &Path) -> Redis {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            // No snapshots, no append-only file: the cluster's state lives and dies with it.
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (Debian's redis-server, installed by scripts/test.sh)");
        let mut redis = Redis { addr, child, log };
        let deadline = Instant::now() + START_WAIT;
        while !redis.answers_ping().await {
            if let Some(status) = redis.child.try_wait().expect("redis-server's status") {
                panic!(
                    "redis-server exited with {status}:\n{}",
                    read_log(&redis.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {addr} within {START_WAIT:?}:\n{}",
                read_log(&redis.log)
            );
            sleep(Duration::from_millis(20)).await;
        }
        redis
    }

    /// Whether redis answers `PING` with `+PONG`.
    async fn answers_ping(&self) -> bool {
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr).await.ok()?;
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut answer = [0u8; 7];
            stream.read_exact(&mut answer).await.ok()?;
            Some(&answer == b"+PONG\r\n")
        };
        timeout_at(Instant::now() + Duration::from_secs(2), exchange)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}

/// One aedes node (`node tests/cluster/node.mjs ID PORT REDIS_PORT`) on a free loopback port,
/// killed when dropped (and ending by itself when its stdin, held here, closes).
pub struct AedesNode {
    /// Its broker id in the cluster.
    pub id: String,
    /// Its MQTT listener.
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl AedesNode {
    /// Starts node `id` of the cluster whose redis is at `redis`, its stderr in `dir`, and waits
    /// until it says it listens.
    pub async fn start(id: &str, redis: SocketAddr, dir: &Path) -> AedesNode {
        let package = package_dir();
        assert!(
            package.join("node_modules/aedes").is_dir(),
            "aedes is missing in {}: run `npm ci` there (scripts/test.sh does)",
            package.display()
        );
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = dir.join(format!("aedes-{id}.log"));
        let stderr = std::fs::File::create(&log).expect("the node's log file");
        let mut child = Command::new("node")
            .arg(package.join("node.mjs"))
            .args([id, &port.to_string(), &redis.port().to_string()])
            .current_dir(&package)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (Debian's nodejs, installed by scripts/test.sh)");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + START_WAIT;
        let want = format!("listening {id} {port}");
        loop {
            match timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) if line == want => break,
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = child.wait().await.expect("the node's status");
                    panic!("aedes node {id} exited with {status}:\n{}", read_log(&log));
                }
                Err(_) => panic!(
                    "aedes node {id} did not listen on {addr} within {START_WAIT:?}:\n{}",
                    read_log(&log)
                ),
            }
        }
        AedesNode {
            id: id.to_owned(),
            addr,
            child,
            log,
        }
    }

    /// What the node wrote to stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Kills the node (SIGKILL) and waits for it to exit.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A redis and aedes nodes `a`, `b`, ... sharing it: one MQTT cluster.
pub struct AedesCluster {
    /// The nodes, in the order started (dropped before the redis they use).
    pub nodes: Vec<AedesNode>,
    /// The redis they share.
    pub redis: Redis,
    _dir: TempDir,
}

impl AedesCluster {
    /// Starts redis and `count` nodes (ids `a`, `b`, ...), and waits until each node receives
    /// a publish sent to any node.
    pub async fn start(count: usize) -> AedesCluster {
        assert!((1..=26).contains(&count), "1 to 26 nodes");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let redis = Redis::start(dir.path()).await;
        let mut nodes = Vec::with_capacity(count);
        for id in (b'a'..).take(count) {
            let id = char::from(id).to_string();
            nodes.push(AedesNode::start(&id, redis.addr, dir.path()).await);
        }
        let cluster = AedesCluster {
            nodes,
            redis,
            _dir: dir,
        };
        cluster.wait_joined().await;
        cluster
    }

    /// The MQTT address of node `index`.
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.nodes[index].addr
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- aedes {} ---\n{}", node.id, node.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until a subscriber on every node receives a probe published on every node: then
    /// each node's connection to redis pub/sub carries publishes both ways.
    async fn wait_joined(&self) {
        let mut subscribers = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let mut subscriber =
                Client::connect(node.addr, &format!("cluster-probe-sub-{i}")).await;
            subscriber
                .subscribe("cluster-probe/#", QoS::AtMostOnce)
                .await;
            subscribers.push((subscriber, vec![false; self.nodes.len()]));
        }
        let mut publishers = Vec::new();
        for (j, node) in self.nodes.iter().enumerate() {
            publishers.push(Client::connect(node.addr, &format!("cluster-probe-pub-{j}")).await);
        }
        let deadline = Instant::now() + START_WAIT;
        while subscribers.iter().any(|(_, seen)| seen.contains(&false)) {
            assert!(
                Instant::now() < deadline,
                "the aedes nodes did not pass publishes to each other within {START_WAIT:?}:\n{}",
                self.logs()
            );
            for (j, publisher) in publishers.iter_mut().enumerate() {
                publisher
                    .publish(&format!("cluster-probe/{j}"), QoS::AtMostOnce, false, b"")
                    .await;
            }
            for (subscriber, seen) in &mut subscribers {
                while let Some(probe) = subscriber
                    .try_next_publish(Duration::from_millis(100))
                    .await
                {
                    let from = probe.topic.strip_prefix("cluster-probe/");
                    if let Some(j) = from.and_then(|j| j.parse::<usize>().ok()) {
                        seen[j] = true;
                    }
                }
            }
        }
        for (subscriber, _) in subscribers {
            subscriber.disconnect().await;
        }
        for publisher in publishers {
            publisher.disconnect().await;
        }
    }
}
