//! The embassy gateway on a real embassy-net stack behind a TAP device, inside a private
//! network namespace, so that kernel-side programs (Debian's mosquitto clients,
//! `activity-broker`) talk to it over Linux TCP and nothing leaves the namespace.
//!
//! [`in_private_netns`] re-runs the calling test in a child process started by
//! `unshare --net` (a fresh namespace with only `lo`), creates `tap0` there with the kernel
//! side at [`KERNEL_IP`], and runs the test's body. It needs root and `/dev/net/tun`; without
//! them the test is skipped with a message, unless `REQUIRE_NETNS=1` (set by
//! `scripts/test.sh`) turns the skip into a failure.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use adapter_embassy::{GatewayResources, GatewayStats};
use embassy_futures::join::join3;
use embassy_futures::select::select;
use embassy_net::{Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use tokio::sync::oneshot;

use crate::{Ev, now_ms, peer_addr};

/// The kernel's address on `tap0` (TEST-NET-1, RFC 5737: never routed anywhere).
pub const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The gateway's address on its embassy-net stack.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The gateway's MQTT endpoint, as the kernel side reaches it.
pub const GATEWAY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(GATEWAY_IP), 1883);

/// The TAP interface's name inside the namespace.
const TAP: &str = "tap0";
/// Set in the child process: the name of the test it runs inside the namespace.
const CHILD_ENV: &str = "MQTT_ACTIVITY_NETNS_TEST";
/// How long the child process may take in all (a bound on hangs, not a performance target).
const CHILD_LIMIT: Duration = Duration::from_secs(120);
/// `REQUIRE_NETNS=1` makes a missing precondition a failure instead of a skip.
const REQUIRE_ENV: &str = "REQUIRE_NETNS";

/// Runs `body` inside a private network namespace with `tap0` up.
///
/// `test_name` must be the test function's name (its path in the test binary): the test
/// binary is run again under `unshare --net` with `--exact test_name`, and this function
/// checks that the child ran exactly that one test and that it passed.
pub fn in_private_netns(test_name: &str, body: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(test_name) {
        set_up_interfaces();
        body();
        return;
    }
    if let Err(why) = preconditions() {
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            panic!("{test_name} cannot run: {why} (and {REQUIRE_ENV}=1 forbids skipping)");
        }
        eprintln!("SKIPPED {test_name}: {why}; set {REQUIRE_ENV}=1 to make this a failure");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new("unshare")
        .arg("--net")
        .arg(&exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test_name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs");
    // Read both pipes on threads so that a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = out.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = err.read_to_end(&mut text);
        text
    });
    // Every wait inside is bounded; this only bounds a hang of the whole child.
    let deadline = Instant::now() + CHILD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = (
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    );
    let stdout = String::from_utf8_lossy(&output.0);
    let stderr = String::from_utf8_lossy(&output.1);
    print!("{stdout}");
    eprint!("{stderr}");
    let Some(status) = status else {
        panic!("{test_name} did not finish within {CHILD_LIMIT:?} in its network namespace");
    };
    assert!(
        status.success(),
        "{test_name} failed in its network namespace: {status}"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test_name} did not run in its network namespace"
    );
}

/// Why the namespace test cannot run here, if it cannot.
fn preconditions() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return Err("not root (creating a network namespace and a TAP device needs root)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun".into());
    }
    for tool in [["unshare", "--version"], ["ip", "-V"]] {
        let ok = Command::new(tool[0])
            .arg(tool[1])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(format!("`{}` is missing", tool[0]));
        }
    }
    Ok(())
}

/// Runs `ip ARGS`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// In the fresh namespace: `lo` up, `tap0` created with the kernel's address, up.
fn set_up_interfaces() {
    ip(&["link", "set", "lo", "up"]);
    ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
    let kernel = format!("{KERNEL_IP}/24");
    ip(&["addr", "add", &kernel, "dev", TAP]);
    ip(&["link", "set", TAP, "up"]);
}

/// The gateway and its embassy-net stack on `tap0`, driven by a thread of their own.
pub struct TapGateway {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<GatewayStats>>,
}

/// How often the gateway's thread copies its counters for [`TapGateway::stats`] (the counters
/// are `Cell`s: only that thread may read them).
const STATS_EVERY: Duration = Duration::from_millis(5);

impl TapGateway {
    /// Starts a gateway of 8 client slots with `config` on [`GATEWAY_IP`], its event clock set
    /// to the Unix time, and waits until its port accepts TCP connections.
    pub fn start(config: adapter_embassy::Config<'static>) -> TapGateway {
        let (stop, stopped) = oneshot::channel::<()>();
        let stats = Arc::new(Mutex::new(GatewayStats::default()));
        let copy = Arc::clone(&stats);
        let thread = std::thread::spawn(move || {
            let device = TunTapDevice::new(TAP).expect("open tap0");
            let net_config = embassy_net::Config::ipv4_static(StaticConfigV4 {
                address: Ipv4Cidr::new(GATEWAY_IP, 24),
                gateway: None,
                dns_servers: Default::default(),
            });
            // Room for the 8 client slots, the refuser and the uplink (`CLIENTS + 2`).
            let stack_resources = Box::leak(Box::new(StackResources::<12>::new()));
            let (stack, mut net) = embassy_net::new(device, net_config, stack_resources, 0x5eed);
            let resources = Box::leak(Box::new(GatewayResources::<8, 1024, 1024, 4, 2048>::new()));
            let (handle, mut gateway) = adapter_embassy::new(stack, resources, config);
            handle.set_unix_time_ms(now_ms());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime");
            let copy_stats = async {
                loop {
                    *copy.lock().expect("the stats lock") = handle.stats();
                    tokio::time::sleep(STATS_EVERY).await;
                }
            };
            // Stopping drops the sockets without FIN or RST, like a board losing power.
            runtime.block_on(select(join3(net.run(), gateway.run(), copy_stats), stopped));
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The first connect waits for ARP and the kernel's SYN retry (about 1 s).
            if TcpStream::connect_timeout(&GATEWAY_ADDR, Duration::from_secs(3)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway on {GATEWAY_ADDR} did not accept a TCP connection within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        TapGateway {
            stop: Some(stop),
            thread: Some(thread),
            stats,
        }
    }

    /// The gateway's counters as its thread last copied them (at most a few milliseconds old).
    pub fn stats(&self) -> GatewayStats {
        *self.stats.lock().expect("the stats lock")
    }

    /// Waits until the gateway's counters satisfy `done`, at most `within`; panics naming
    /// `what` and the counters after that.
    pub async fn stats_until(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&GatewayStats) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let stats = self.stats();
            if done(&stats) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the gateway at once (its connections are not closed: their peers find out by
    /// keep-alive), and joins its thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the gateway thread ends cleanly");
        }
    }
}

impl Drop for TapGateway {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One line of `mosquitto_sub -v -q 1` (`TOPIC PAYLOAD`) as an event, numbered `index`
/// (`qos` is the subscription's QoS 1, at which the gateway delivers events).
pub fn event_line(index: usize, line: &str) -> Ev {
    let (topic, payload) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("not a `topic payload` line: {line:?}"));
    Ev::parse(
        index,
        topic.to_owned(),
        payload.as_bytes(),
        rumqttc::QoS::AtLeastOnce,
    )
}

/// Asserts that `peer` is the kernel side of `tap0` with a non-zero port.
pub fn assert_kernel_peer(ev: &Ev) {
    let addr = peer_addr(ev);
    assert_eq!(addr.ip(), IpAddr::V4(KERNEL_IP), "peer {addr}");
}
