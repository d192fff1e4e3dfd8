//! Debian's `mosquitto_pub` and `mosquitto_sub` as subprocesses, bounded by [`WAIT`].

use std::net::SocketAddr;
use std::process::{Output, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

use crate::WAIT;

fn mosquitto(program: &str, addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .arg("-h")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `mosquitto_pub -h HOST -p PORT ARGS...` and returns its output; panics if it does not
/// exit within [`WAIT`].
pub async fn mosquitto_pub(addr: SocketAddr, args: &[&str]) -> Output {
    let child = mosquitto("mosquitto_pub", addr, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs (installed by scripts/test.sh)");
    timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("mosquitto_pub {args:?} did not exit within {WAIT:?}"))
        .expect("mosquitto_pub output")
}

/// A running `mosquitto_sub`, read line by line.
pub struct MosquittoSub {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl MosquittoSub {
    /// Starts `mosquitto_sub -h HOST -p PORT ARGS...`.
    pub fn spawn(addr: SocketAddr, args: &[&str]) -> MosquittoSub {
        let mut child = mosquitto("mosquitto_sub", addr, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs (installed by scripts/test.sh)");
        let stdout = child.stdout.take().expect("stdout is piped");
        MosquittoSub {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line of output; panics after [`WAIT`] or at end of output.
    pub async fn next_line(&mut self) -> String {
        match timeout(WAIT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("mosquitto_sub ended its output"),
            Ok(Err(e)) => panic!("mosquitto_sub output: {e}"),
            Err(_) => panic!("no line from mosquitto_sub within {WAIT:?}"),
        }
    }

    /// Waits for the process to exit; its exit code and stderr.
    pub async fn wait_exit(mut self) -> (Option<i32>, String) {
        let status = timeout(WAIT, self.child.wait())
            .await
            .expect("mosquitto_sub exits within 5 s")
            .expect("mosquitto_sub status");
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr).await;
        }
        (status.code(), stderr)
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL mosquitto_sub");
    }
}

/// Debian's `mosquitto_sub -V mqttv5` subscribes to `PREFIX/#` on `addr`, then `mosquitto_pub`
/// publishes one message as MQTT 5 (with a user property) and one as MQTT 3.1; checks that the
/// subscriber receives both, the MQTT 5 one with its user property, and that `monitor` (which receives the events of `addr`) reports each client with its
/// `proto_ver`, its `message` and a normal `disconnected`. Client ids start with `prefix`.
pub async fn mosquitto_speaks_mqtt5_and_mqtt31(
    addr: SocketAddr,
    monitor: &mut crate::Monitor,
    prefix: &str,
) {
    let sub_id = format!("{prefix}-sub-v5");
    let filter = format!("{prefix}/#");
    let topic = format!("{prefix}/x");
    let mut sub = MosquittoSub::spawn(
        addr,
        &[
            "-i",
            &sub_id,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            &filter,
            "-F",
            "%t [%P] %p",
        ],
    );
    let connected = monitor.next_event("connected", &sub_id).await;
    assert_eq!(connected.json["proto_ver"], 5);
    let subscribed = monitor.next_event("subscribed", &sub_id).await;
    assert_eq!(subscribed.json["topic"], filter.as_str());

    for (version, level, message, extra, shown) in [
        (
            "mqttv5",
            5,
            "five",
            &["-D", "publish", "user-property", "origin", "mqtt5"][..],
            "origin:mqtt5",
        ),
        ("mqttv31", 3, "three-one", &[][..], ""),
    ] {
        let id = format!("{prefix}-pub-{version}");
        let mut args = vec![
            "-i", &id, "-V", version, "-q", "1", "-t", &topic, "-m", message,
        ];
        args.extend_from_slice(extra);
        let out = mosquitto_pub(addr, &args).await;
        assert!(out.status.success(), "mosquitto_pub -V {version}: {out:?}");
        assert_eq!(
            sub.next_line().await,
            format!("{topic} [{shown}] {message}"),
            "{version}: the user property passes through"
        );
        let connected = monitor.next_event("connected", &id).await;
        assert_eq!(connected.json["proto_ver"], level, "{version}");
        let message_event = monitor.next_event("message", &id).await;
        assert_eq!(message_event.json["payload"], message);
        let gone = monitor.next_event("disconnected", &id).await;
        assert_eq!(gone.json["reason"], "normal", "{version}");
    }
    sub.kill().await;
}
