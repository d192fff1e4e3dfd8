//! The real `activity-broker` binary as a child process, for tests that need what only a
//! process has: command-line flags, a SIGKILL, its log. The binary's path comes from the
//! caller (`env!("CARGO_BIN_EXE_activity-broker")` in adapter-tokio's integration tests).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::ports::free_port;

/// How long the broker may take to accept its first client, or to exit after SIGTERM.
const START_WAIT: Duration = Duration::from_secs(20);

/// A running `activity-broker`, killed (SIGKILL) when dropped.
pub struct BrokerProcess {
    child: Child,
    /// Its MQTT listener.
    pub addr: SocketAddr,
    /// Its metrics endpoint.
    pub metrics_addr: SocketAddr,
    log: PathBuf,
}

impl BrokerProcess {
    /// Starts `binary` with `--listen` and `--metrics-listen` on free ports plus `args`, its
    /// stderr (the log, `RUST_LOG=info`) appended to `log`, and waits until its metrics endpoint
    /// answers.
    pub async fn start(binary: &Path, args: &[&str], log: &Path) -> BrokerProcess {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let metrics_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("the log file opens");
        let child = Command::new(binary)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--metrics-listen")
            .arg(metrics_addr.to_string())
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut broker = BrokerProcess {
            child,
            addr,
            metrics_addr,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + START_WAIT;
        while try_scrape(metrics_addr).await.is_none() {
            if let Some(status) = broker.child.try_wait().expect("the child's status") {
                panic!("the broker exited with {status}:\n{}", broker.log());
            }
            assert!(
                Instant::now() < deadline,
                "the broker's metrics did not answer within {START_WAIT:?}:\n{}",
                broker.log()
            );
            sleep(Duration::from_millis(50)).await;
        }
        broker
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far, without its terminal colours.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The metrics now: each sample line's name (with labels) and value.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let text = try_scrape(self.metrics_addr)
            .await
            .unwrap_or_else(|| panic!("the metrics endpoint did not answer:\n{}", self.log()));
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// The value of metric `name` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics().await.get(name).copied().unwrap_or(0.0)
    }

    /// Waits until `check` holds on the metrics, or panics with `what`, the metrics and the log.
    pub async fn wait_metrics(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&BTreeMap<String, f64>) -> bool,
    ) -> BTreeMap<String, f64> {
        let deadline = Instant::now() + within;
        loop {
            let metrics = self.metrics().await;
            if check(&metrics) {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "metrics never showed {what} within {within:?}: {metrics:#?}\nlog:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process with SIGKILL (nothing runs after it) and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the child is reaped");
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited with status 0, and the
    /// whole log.
    pub async fn terminate(mut self) -> (bool, String) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return (status.success(), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not exit within {START_WAIT:?} of SIGTERM:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip up to and including the sequence's final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `GET /metrics` at `addr`: the body, or `None` if it does not answer.
async fn try_scrape(addr: SocketAddr) -> Option<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    };
    timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// The name and nice value of every thread of process `pid` (from `/proc/PID/task/*/stat`).
pub fn thread_priorities(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    for task in tasks {
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(task.expect("a thread").path().join("stat")) else {
            continue;
        };
        // "TID (COMM) STATE ...": the name may hold spaces and parentheses, so split at the last
        // ')'; the nice value is field 19, the 17th after the name.
        let (head, rest) = stat.rsplit_once(')').expect("a stat line");
        let name = head.split_once('(').expect("a stat line").1.to_owned();
        let nice = rest
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .expect("a nice value");
        threads.push((name, nice));
    }
    threads
}
