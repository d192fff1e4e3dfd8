//! Tap mode harness: Debian's real `mosquitto` on a free port, and taps in front of it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use adapter_tokio::config::Config;
use adapter_tokio::tap::Tap;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::ports::free_port;
use crate::test_config;

/// A `mosquitto` broker on loopback with a minimal configuration (anonymous clients allowed),
/// killed when dropped.
pub struct Mosquitto {
    /// Its address.
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Mosquitto {
    /// Starts mosquitto on a free port and waits until it accepts connections.
    pub async fn start() -> Mosquitto {
        Mosquitto::start_on(free_port()).await
    }

    /// Starts mosquitto on `port` and waits until it accepts connections.
    pub async fn start_on(port: u16) -> Mosquitto {
        Mosquitto::start_with(port, "").await
    }

    /// Starts mosquitto with a TLS listener (certificate and key PEM files) on a free port.
    pub async fn start_tls(cert: &Path, key: &Path) -> Mosquitto {
        let extra = format!("certfile {}\nkeyfile {}\n", cert.display(), key.display());
        Mosquitto::start_with(free_port(), &extra).await
    }

    /// Starts mosquitto on `port` with `extra` lines for its listener.
    async fn start_with(port: u16, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let conf = dir.path().join("mosquitto.conf");
        // mosquitto 2.x refuses anonymous clients unless a listener says otherwise.
        let mut text = format!("listener {port} 127.0.0.1\n{extra}allow_anonymous true\n");
        if !extra.contains("persistence true") {
            text.push_str("persistence false\n");
        }
        // mosquitto queues at most 1,000 QoS 1 messages per client by default and drops the
        // rest without a word: a test's `SYSTEM/#` monitor that a loaded machine delays behind
        // a burst of events (a case publishes 1,000 messages, and its `disconnected` comes
        // after their events) would miss what follows. The tests count every event. (Not 0,
        // "no maximum" in mosquitto's manual: Debian's mosquitto then sent no PUBREC to a
        // burst of QoS 2 publishes.)
        if !extra.contains("max_queued_messages") {
            text.push_str("max_queued_messages 1000000\n");
        }
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto runs (installed by scripts/test.sh)");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr} within 10 s"
            );
            sleep(Duration::from_millis(20)).await;
        }
        Mosquitto {
            addr,
            child,
            _dir: dir,
        }
    }

    /// Starts mosquitto on `port` with persistence on, its database in `dir` (which outlives
    /// it) saved every second, so that a restart with the same `dir` after a kill keeps the
    /// sessions of clean_session 0 clients as of the last save.
    pub async fn start_persistent(port: u16, dir: &Path) -> Mosquitto {
        // Started as root, mosquitto drops to its own user before it saves the database.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .expect("open the database directory to mosquitto's user");
        // Queued messages for offline clients: more than one restart's worth (default 1000).
        let extra = format!(
            "persistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\nmax_inflight_messages 0\n",
            dir.display()
        );
        Mosquitto::start_with(port, &extra).await
    }

    /// Sends `signal` (a `kill` name: `STOP`, `CONT`, `TERM`) to mosquitto.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("mosquitto still runs");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Kills mosquitto (SIGKILL) and waits for it to exit.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// [`test_config`] in tap mode in front of `upstream`, with quick publisher reconnects.
pub fn tap_config(upstream: SocketAddr) -> Config {
    let mut config = test_config();
    config.upstream.address = Some(upstream.to_string());
    config.upstream.reconnect_ms = 100;
    config
}

/// Starts a tap with `config`.
pub async fn start_tap(config: Config) -> Tap {
    Tap::start(config).await.expect("the tap starts")
}

/// Starts a tap with [`tap_config`] in front of `upstream`.
pub async fn start_default_tap(upstream: SocketAddr) -> Tap {
    start_tap(tap_config(upstream)).await
}

/// Waits until the tap's event publisher is connected to the upstream broker, so that events
/// are not dropped while it connects.
pub async fn wait_publisher(tap: &Tap) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tap
        .metrics()
        .upstream_publisher_connects
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the tap's event publisher did not connect within 10 s"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

/// Debian's mosquitto, a tap with [`tap_config`] in front of it whose event publisher is
/// connected, and a [`Monitor`](crate::Monitor) of the events (the tap publishes them to
/// mosquitto). Clients connect to `tap.local_addr()`; keep all three for the test.
pub async fn tap_with_monitor() -> (Mosquitto, Tap, crate::Monitor) {
    let mosquitto = Mosquitto::start().await;
    let tap = start_default_tap(mosquitto.addr).await;
    wait_publisher(&tap).await;
    let monitor = crate::Monitor::start(mosquitto.addr).await;
    (mosquitto, tap, monitor)
}
