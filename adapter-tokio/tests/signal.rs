//! End-to-end: the real `activity-broker` binary shuts down on SIGTERM, reports
//! `server_shutdown` for its clients first, and exits with status 0.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::Value;
use tests::ports::free_port;
use tests::process::thread_priorities;
use tokio::time::timeout;

/// Kills the broker if the test fails before it exits.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects `id` and returns the client and its event loop, once CONNACK arrived.
async fn connect(addr: SocketAddr, id: &str) -> Option<(AsyncClient, EventLoop)> {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    match timeout(Duration::from_secs(2), eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Some((client, eventloop)),
        _ => None,
    }
}

/// The next incoming packet, stopping at the first error; `None` when the connection ended.
async fn next_packet(eventloop: &mut EventLoop) -> Option<Packet> {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(packet)) => return Some(packet),
            Ok(Event::Outgoing(_)) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn sigterm_reports_server_shutdown_and_exits_0() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(env!("CARGO_BIN_EXE_activity-broker"))
        .arg("--listen")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the broker binary starts");
    let mut broker = Broker(child);

    // The broker is ready when a client gets its CONNACK.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (monitor, mut monitor_loop) = loop {
        if let Some(connected) = connect(addr, "monitor").await {
            break connected;
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not accept within 10 s"
        );
        assert!(
            broker.0.try_wait().expect("child status").is_none(),
            "the broker exited early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Without the Kafka sink every thread keeps the process's priority.
    let threads = thread_priorities(broker.0.id());
    assert!(
        threads.iter().any(|(name, _)| name == "tokio-rt-worker"),
        "{threads:?}"
    );
    assert!(
        threads.iter().all(|(_, nice)| *nice == threads[0].1),
        "{threads:?}"
    );
    monitor
        .subscribe("SYSTEM/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    let suback = timeout(Duration::from_secs(5), next_packet(&mut monitor_loop))
        .await
        .expect("SUBACK within 5 s");
    match suback {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }

    let (_worker, mut worker_loop) = connect(addr, "worker").await.expect("worker connects");
    let worker_task =
        tokio::spawn(async move { while next_packet(&mut worker_loop).await.is_some() {} });

    // Wait for the worker's connected event, so the broker surely knows it.
    let mut events: Vec<(String, Value)> = Vec::new();
    let wait_event = |events: &Vec<(String, Value)>, topic: &str, reason: Option<&str>| {
        events.iter().any(|(t, json)| {
            t == topic
                && json["client_id"] == "worker"
                && reason.is_none_or(|r| json["reason"] == r)
        })
    };
    let connected_deadline = Instant::now() + Duration::from_secs(5);
    while !wait_event(&events, "SYSTEM/presence/connected", None) {
        let left = connected_deadline.saturating_duration_since(Instant::now());
        match timeout(left, next_packet(&mut monitor_loop)).await {
            Ok(Some(Packet::Publish(p))) => events.push((
                p.topic.clone(),
                serde_json::from_slice(&p.payload).expect("event JSON"),
            )),
            Ok(Some(_)) => {}
            Ok(None) => panic!("monitor connection ended"),
            Err(_) => panic!("no connected event for worker: {events:?}"),
        }
    }

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(broker.0.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM failed");

    // The server_shutdown event arrives before the monitor's socket closes.
    let shutdown_deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    while !wait_event(
        &events,
        "SYSTEM/presence/disconnected",
        Some("server_shutdown"),
    ) {
        let left = shutdown_deadline.saturating_duration_since(Instant::now());
        match timeout(left, next_packet(&mut monitor_loop)).await {
            Ok(Some(Packet::Publish(p))) => events.push((
                p.topic.clone(),
                serde_json::from_slice(&p.payload).expect("event JSON"),
            )),
            Ok(Some(_)) => {}
            Ok(None) => {
                closed = true;
                break;
            }
            Err(_) => break,
        }
    }
    assert!(
        wait_event(
            &events,
            "SYSTEM/presence/disconnected",
            Some("server_shutdown")
        ),
        "no server_shutdown event for worker (monitor closed: {closed}); events: {events:?}"
    );

    // The process exits with status 0 within 10 s of the signal.
    let exit_deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = broker.0.try_wait().expect("child status") {
            break status;
        }
        assert!(
            Instant::now() < exit_deadline,
            "the broker did not exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let _ = timeout(Duration::from_secs(2), worker_task).await;
}
