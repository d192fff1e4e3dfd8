//! A broker started as a child process for one run, and stopped at its end.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a broker may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A broker child process; killed when dropped.
#[derive(Debug)]
pub struct BrokerChild {
    child: Child,
}

impl BrokerChild {
    /// Starts `argv` (program and arguments) with its output sent to `log` (or discarded), and
    /// waits until `addr` accepts TCP connections.
    pub fn start(argv: &[String], addr: &str, log: Option<&str>) -> anyhow::Result<Self> {
        let (program, args) = argv.split_first().context("no broker command given")?;
        // Something else on the port would be measured instead of the child: refuse.
        drop(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("{addr} is already in use: pick another port"))?,
        );
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {path}"))?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let mut broker = BrokerChild { child };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = broker.child.try_wait()? {
                bail!("{program} exited at startup: {status}");
            }
            if TcpStream::connect(addr).is_ok() {
                // Still ours: the child is alive after the connect succeeded.
                if let Some(status) = broker.child.try_wait()? {
                    bail!("{program} exited at startup: {status}");
                }
                return Ok(broker);
            }
            if Instant::now() > deadline {
                bail!("{program} did not listen on {addr} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BrokerChild {
    fn drop(&mut self) {
        // SIGKILL: a benchmark does not need the broker's graceful shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
