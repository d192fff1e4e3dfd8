//! `activity-broker`: an MQTT 3.1.1 broker that publishes every client's activity.
//!
//! `activity-broker [--config FILE] [--listen ADDR] [--ws-listen ADDR] [--metrics-listen ADDR]
//! [--http-listen ADDR] [--kafka-brokers HOST:PORT,...] [--upstream HOST:PORT]` runs the
//! broker (with `--upstream`, the tap in front of an existing broker, see `adapter_tokio::tap`)
//! until SIGINT or SIGTERM;
//! `activity-broker hash-password` reads a password from stdin and prints its argon2id hash for
//! a `[[users]]` table. Bad flags or configuration exit with code 2,
//! a broker that fails to run exits with code 1.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use adapter_tokio::broker::Broker;
use adapter_tokio::config::{Config, ConfigError, Sink};
use adapter_tokio::tap::Tap;
use adapter_tokio::{auth, limits, tls};
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

/// mimalloc instead of glibc's malloc: events are allocated on the connection tasks and freed on
/// the dispatcher, the Kafka feeder and librdkafka's threads, and glibc's per-thread arenas spent
/// most of the Kafka feeder's time consolidating such frees (see BENCHMARKS.md). The `mimalloc`
/// feature (on by default) selects it; without it the broker runs on the system allocator, for
/// heap profilers.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jemalloc instead (the `jemalloc` feature, without `mimalloc`): an idle connection costs less
/// resident memory (docs/scale.md, "Memory per idle connection").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!(
    "the features `mimalloc` and `jemalloc` exclude each other: build with `--no-default-features --features jemalloc`"
);

/// File descriptors kept for everything but client connections: listeners, logs, metrics.
const RESERVED_FDS: u64 = 64;

/// How long tasks left over after shutdown may take to stop.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The exit code of bad flags or configuration (as clap's usage errors).
const EXIT_USAGE: u8 = 2;

/// An MQTT 3.1.1 broker that publishes every client's activity as JSON events on SYSTEM/...
/// topics.
#[derive(Debug, Parser)]
#[command(name = "activity-broker", version, about)]
struct Cli {
    /// The TOML configuration file (default: built-in defaults, a broker on 127.0.0.1:1883).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address of the MQTT listener; overrides `listen` of the file.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The address of the MQTT-over-WebSocket listener; overrides `websocket.listen` of the
    /// file (the path stays the file's, default "/mqtt").
    #[arg(long, value_name = "ADDR")]
    ws_listen: Option<SocketAddr>,
    /// The address of the Prometheus metrics endpoint; overrides `metrics_listen` of the file.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// The address of the HTTP API (health, who is online, the event stream); overrides
    /// `http_listen` of the file.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Kafka bootstrap brokers, comma-separated; turns the Kafka sink on (adds "kafka" to
    /// `sinks`) and overrides `kafka.brokers` of the file.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    kafka_brokers: Option<Vec<String>>,
    /// Tap mode: relay every client to this existing MQTT broker instead of running the
    /// embedded router; overrides `upstream.address` of the file.
    #[arg(long, value_name = "HOST:PORT")]
    upstream: Option<String>,
    /// A command other than running the broker.
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Read a password from the first line of stdin and print its argon2id PHC hash, for the
    /// `password_hash` of a `[[users]]` table.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Some(Command::HashPassword) => hash_password(),
        None => run_broker(&cli),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), without rumqttd's per-packet spans
/// (see [`adapter_tokio::logging`]).
fn init_tracing() {
    adapter_tokio::logging::init("info");
}

/// The `hash-password` subcommand.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        eprintln!("activity-broker: cannot read the password from stdin: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("activity-broker: the password on stdin is empty");
        return ExitCode::from(EXIT_USAGE);
    }
    match auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("activity-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration of the file (or the defaults) with the flags applied, validated.
fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(ws_listen) = cli.ws_listen {
        config.set_websocket_listen(ws_listen);
    }
    if let Some(metrics_listen) = cli.metrics_listen {
        config.metrics_listen = Some(metrics_listen);
    }
    if let Some(http_listen) = cli.http_listen {
        config.http_listen = Some(http_listen);
    }
    if let Some(brokers) = &cli.kafka_brokers {
        config.kafka.brokers = brokers.iter().map(|b| b.trim().to_owned()).collect();
        if !config.sinks.contains(&Sink::Kafka) {
            config.sinks.push(Sink::Kafka);
        }
    }
    if let Some(upstream) = &cli.upstream {
        config.upstream.address = Some(upstream.trim().to_owned());
    }
    config.validate()?;
    Ok(config)
}

/// Runs the broker until SIGINT or SIGTERM.
fn run_broker(cli: &Cli) -> ExitCode {
    let config = match load_config(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("activity-broker: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Refuse a broken certificate or key before anything starts, as a configuration error.
    if let Some(tls_config) = &config.tls
        && let Err(e) = tls::acceptor(tls_config)
    {
        eprintln!("activity-broker: {e:#}");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(wss) = &config.websocket_tls
        && let Err(e) = tls::acceptor_of("websocket_tls", &wss.cert, &wss.key)
    {
        eprintln!("activity-broker: {e:#}");
        return ExitCode::from(EXIT_USAGE);
    }
    raise_fd_limit(&config);

    // With the Kafka sink on, the threads serving clients yield to the sink's (see
    // adapter_tokio::priority).
    let nice = if config.sinks.contains(&Sink::Kafka) {
        config.kafka.client_threads_nice
    } else {
        0
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            if nice > 0
                && let Err(e) = adapter_tokio::priority::lower_current_thread(nice)
            {
                let thread = std::thread::current();
                warn!(
                    thread = thread.name().unwrap_or("unnamed"),
                    error = %e,
                    "cannot lower a client-serving thread's priority: it competes with the Kafka sink"
                );
            }
        })
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(config));
    // Blocking tasks still running (a password check, say) must not hold the exit up.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-file limit and says how many connections it leaves room for.
fn raise_fd_limit(config: &Config) {
    match limits::raise_nofile_limit() {
        Ok(n) => {
            let room = n.saturating_sub(RESERVED_FDS);
            info!("open-file limit {n}: room for about {room} connections");
            let wanted = u64::try_from(config.max_connections).unwrap_or(u64::MAX);
            if room < wanted {
                warn!(
                    "max_connections is {wanted} but the open-file limit leaves room for about \
                     {room}; raise the hard limit (ulimit -Hn, LimitNOFILE=) to accept them all"
                );
            }
        }
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
}

/// Starts the broker, waits for a signal, and shuts it down; a second signal cuts the shutdown
/// short.
async fn serve(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    if config.upstream.address.is_some() {
        let tap = Tap::start(config).await?;
        let signal = signals.recv().await;
        info!("{signal}: shutting down");
        tokio::select! {
            () = tap.shutdown() => info!("shut down"),
            signal = signals.recv() => warn!("{signal} again: exiting without finishing the shutdown"),
        }
        return Ok(());
    }
    let broker = Broker::start(config).await?;
    let signal = signals.recv().await;
    info!("{signal}: shutting down");
    tokio::select! {
        () = broker.shutdown() => info!("shut down"),
        signal = signals.recv() => warn!("{signal} again: exiting without finishing the shutdown"),
    }
    Ok(())
}

/// SIGINT and SIGTERM.
struct Signals {
    /// SIGINT (Ctrl-C).
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    /// SIGTERM.
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening for the signals.
    #[cfg(unix)]
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Starts listening for Ctrl-C.
    #[cfg(not(unix))]
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    /// Waits for the next signal and names it.
    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// Waits for the next Ctrl-C.
    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}
