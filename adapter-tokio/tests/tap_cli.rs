//! End-to-end: `activity-broker --upstream HOST:PORT` runs the tap in front of a real
//! `mosquitto`, and a bad `--upstream` is a usage error.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tests::ports::free_port;
use tokio::time::timeout;

/// Kills the child process if the test fails before it exits.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects `id` to `addr`, retrying for 10 s (the process may still be starting).
async fn connect(addr: SocketAddr, id: &str) -> (AsyncClient, EventLoop) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        if let Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) =
            timeout(Duration::from_secs(2), eventloop.poll()).await
        {
            return (client, eventloop);
        }
        assert!(
            Instant::now() < deadline,
            "{id} could not connect to {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_bad_upstream_address_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_activity-broker"))
        .args(["--upstream", "no-port-here", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upstream.address"), "{stderr}");
}

#[tokio::test]
async fn the_binary_relays_to_mosquitto_and_publishes_events_there() {
    let dir = std::env::temp_dir().join(format!("tap-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let upstream_port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {upstream_port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .expect("write mosquitto.conf");
    let _mosquitto = Killed(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (installed by scripts/test.sh)"),
    );
    let upstream: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
    // Subscribed directly on mosquitto before the tap starts: it sees every event published.
    let (monitor, mut monitor_loop) = connect(upstream, "monitor").await;
    monitor
        .subscribe("SYSTEM/presence/connected", QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    loop {
        match timeout(Duration::from_secs(5), monitor_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK from mosquitto: {other:?}"),
        }
    }

    let tap_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _tap = Killed(
        Command::new(env!("CARGO_BIN_EXE_activity-broker"))
            .arg("--listen")
            .arg(tap_addr.to_string())
            .arg("--upstream")
            .arg(upstream.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts"),
    );
    let (_client, mut client_loop) = connect(tap_addr, "via-tap").await;
    tokio::spawn(async move { while client_loop.poll().await.is_ok() {} });

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, monitor_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let json: serde_json::Value =
                    serde_json::from_slice(&p.payload).expect("event JSON");
                if json["client_id"] == "via-tap" {
                    break;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("monitor connection failed: {e}"),
            Err(_) => panic!("no connected event of via-tap on mosquitto within 10 s"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
