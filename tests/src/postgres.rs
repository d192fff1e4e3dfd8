//! PostgreSQL for the end-to-end tests: Debian's `postgresql` server, started per test in a
//! temporary directory on its own port and stopped when dropped, queried with its own `psql`;
//! and the presence example (`examples/presence-postgres/presence.py`) as a child process.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI does), the server runs as
//! the `postgres` user that Debian's package creates (else `nobody`): the temporary directory
//! is handed to that user, and the server and `initdb` drop to it before they start. Clients
//! (`psql`, the example) connect over TCP on 127.0.0.1 with `trust` authentication, so they
//! may run as anyone; the server opens no Unix socket.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::time::{Instant, sleep};

use crate::ports::free_port;

/// How long `initdb` plus the server's start may take on a busy machine.
const START_WAIT: Duration = Duration::from_secs(60);

/// How long a fast shutdown (SIGINT) may take before the server is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The directory of the newest PostgreSQL server binaries: `$PG_BIN`, else the highest
/// version under Debian's `/usr/lib/postgresql/VERSION/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max();
    newest.map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server under {}: install Debian's `postgresql` (scripts/test.sh \
             does), or set PG_BIN",
            root.display()
        )
    })
}

/// The output of `id ARGS` as a number.
fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The user and group the server runs as: `None` (this process's) unless this process is
/// root; then `postgres`'s, else `nobody`'s.
fn server_user() -> Option<(u32, u32)> {
    if id(&["-u"]) != Some(0) {
        return None;
    }
    ["postgres", "nobody"]
        .into_iter()
        .find_map(|name| Some((id(&["-u", name])?, id(&["-g", name])?)))
        .or_else(|| panic!("running as root, and neither `postgres` nor `nobody` exists"))
}

/// Where the temporary directory goes: the usual temporary directory, unless another user
/// must reach it and cannot (a `TMPDIR` under a private home); then `/tmp`.
fn temp_parent(other_user: bool) -> PathBuf {
    let usual = std::env::temp_dir();
    let reachable = usual
        .ancestors()
        .all(|dir| std::fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0));
    if other_user && !reachable {
        PathBuf::from("/tmp")
    } else {
        usual
    }
}

/// A command for one of the server's binaries, dropped to `user` when set, run in `dir` (the
/// test's working directory may be closed to that user).
fn server_command(bin: &Path, name: &str, user: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut command = Command::new(bin.join(name));
    command.current_dir(dir);
    if let Some((uid, gid)) = user {
        // std clears the supplementary groups too when root drops to another uid.
        command.uid(uid).gid(gid);
    }
    command.env_remove("PGDATA").stdin(Stdio::null());
    command
}

/// A PostgreSQL server of its own, with `trust` authentication on 127.0.0.1, stopped (fast
/// shutdown) and its files removed when dropped.
pub struct Postgres {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    /// The running server (`None` between [`Postgres::stop_server`] and
    /// [`Postgres::start_server`]).
    child: Option<Child>,
    log: PathBuf,
    // Last: removed after the server stopped.
    dir: TempDir,
}

impl Postgres {
    /// Creates a database cluster in a new temporary directory (`initdb`), starts the server on
    /// a free port and waits until it answers queries.
    pub async fn start() -> Postgres {
        let bin = bin_dir();
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("postgres-")
            .tempdir_in(temp_parent(user.is_some()))
            .expect("a temporary directory");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("the temporary directory is handed to the server's user");
        }
        let initdb = server_command(&bin, "initdb", user, dir.path())
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/initdb: {e}", bin.display()));
        assert!(
            initdb.status.success(),
            "initdb failed ({}):\n{}{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        let mut server = Postgres {
            port: free_port(),
            bin,
            user,
            child: None,
            log: dir.path().join("postgres.log"),
            dir,
        };
        server.start_server().await;
        server
    }

    /// Starts the server (again, after [`Postgres::stop_server`]) on the same port and data,
    /// and waits until it answers queries.
    pub async fn start_server(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the log file");
        let child = server_command(&self.bin, "postgres", self.user, self.dir.path())
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=20",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "dynamic_shared_memory_type=mmap",
                // A test database: speed over durability.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}/postgres: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().expect("the server's status"));
            if let Some(status) = exited {
                self.child = None;
                panic!("postgres exited with {status}:\n{}", self.log());
            }
            if self.try_rows("SELECT 1 AS one").await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not answer within {START_WAIT:?}:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (fast shutdown: open sessions end, nothing committed is lost) and waits
    /// until it exited; [`Postgres::start_server`] starts it again.
    pub fn stop_server(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGINT: PostgreSQL's fast shutdown (ends the sessions, checkpoints, exits).
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while std::time::Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The connection string of database `postgres` as user `postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `psql` with `args` against [`Postgres::url`], stopping at the first error.
    async fn psql(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(self.bin.join("psql"))
            .arg("--no-psqlrc")
            .arg("--quiet")
            .args(["--set", "ON_ERROR_STOP=1", "--dbname", &self.url()])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("psql runs")
    }

    /// Runs the SQL file at `path` (as `psql -f`), or panics with psql's error.
    pub async fn run_file(&self, path: &Path) {
        let path = path.to_str().expect("a UTF-8 path");
        let out = self.psql(&["--file", path]).await;
        assert!(
            out.status.success(),
            "psql -f {path} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `sql` (one or more statements), or panics with psql's error.
    pub async fn execute(&self, sql: &str) {
        let out = self.psql(&["--command", sql]).await;
        assert!(
            out.status.success(),
            "{sql} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The rows of `query`, each a JSON object (as PostgreSQL's `to_json` writes them), or
    /// psql's error.
    pub async fn try_rows(&self, query: &str) -> Result<Vec<Value>, String> {
        let wrapped = format!("SELECT coalesce(json_agg(q), '[]') FROM ({query}) AS q");
        let out = self
            .psql(&["--tuples-only", "--no-align", "--command", &wrapped])
            .await;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        match serde_json::from_slice(&out.stdout) {
            Ok(Value::Array(rows)) => Ok(rows),
            _ => Err(format!(
                "not a JSON array: {}",
                String::from_utf8_lossy(&out.stdout)
            )),
        }
    }

    /// The rows of `query` (see [`Postgres::try_rows`]), or a panic with psql's error.
    pub async fn rows(&self, query: &str) -> Vec<Value> {
        self.try_rows(query)
            .await
            .unwrap_or_else(|e| panic!("{query} failed: {e}"))
    }

    /// Polls `query` until `check` holds on its rows (returned), or panics after `within` with
    /// `what`, the last rows and `context()` (e.g. a consumer's log).
    pub async fn wait_rows(
        &self,
        query: &str,
        what: &str,
        within: Duration,
        check: impl Fn(&[Value]) -> bool,
        context: impl Fn() -> String,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let rows = self.rows(query).await;
            if check(&rows) {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not seen within {within:?}; {query} gave:\n{}\n{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default(),
                context()
            );
            sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// The presence example's directory (`examples/presence-postgres`).
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("presence-postgres")
}

/// The presence example (`presence.py`) running as a child process, its log in a file; sent
/// SIGTERM (then SIGKILL) when dropped.
pub struct PresenceConsumer {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl PresenceConsumer {
    /// Starts `python3 presence.py --verbose --database DB ARGS`.
    pub fn start(database: &str, args: &[&str]) -> PresenceConsumer {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let stderr = log.reopen().expect("the log file reopens");
        let child = Command::new("python3")
            .arg(example_dir().join("presence.py"))
            .args(["--verbose", "--database", database])
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 presence.py: {e}"));
        PresenceConsumer { child, log }
    }

    /// Its log so far (what it read, wrote, skipped and committed), for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        format!("presence.py log:\n{text}")
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until its log contains `text`, or panics after `within` with the log.
    pub async fn wait_log(&mut self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(text) {
            assert!(
                self.is_running(),
                "presence.py exited before logging {text:?}:\n{}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "presence.py did not log {text:?} within {within:?}:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits until it exits; returns whether it exited with status 0 and its
    /// log.
    pub async fn stop(mut self) -> (bool, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("the consumer's status") {
                return (status.success(), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "presence.py did not exit within {STOP_WAIT:?} of SIGTERM:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PresenceConsumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
