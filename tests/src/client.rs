//! rumqttc clients whose event loop runs in a background task, with bounded waits for the
//! packets a test expects.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use crate::WAIT;

/// What the client's background task saw.
#[derive(Debug)]
enum Seen {
    In(Packet),
    Out,
    Error(String),
}

/// rumqttc options for `client_id` on the broker at `addr`: keep-alive 30 s, clean session.
pub fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// A rumqttc client whose event loop runs in a task that stops at the first error (so a
/// dropped client never reconnects behind the test's back).
pub struct Client {
    /// The client id it connected with.
    pub id: String,
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
    backlog: VecDeque<Packet>,
    task: JoinHandle<()>,
    closed: Option<String>,
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Seen>) {
    loop {
        let seen = match eventloop.poll().await {
            Ok(Event::Incoming(packet)) => Seen::In(packet),
            Ok(Event::Outgoing(_)) => Seen::Out,
            Err(e) => {
                let _ = tx.send(Seen::Error(e.to_string()));
                return;
            }
        };
        if tx.send(seen).is_err() {
            return;
        }
    }
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The broker answered with a refusing CONNACK; rumqttc's return code.
    Refused(rumqttc::ConnectReturnCode),
    /// Anything else (I/O, timeout).
    Other(String),
}

impl Client {
    /// Connects `client_id` with [`options`] and waits for a successful CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Client {
        Client::connect_with(options(addr, client_id))
            .await
            .map(|(client, _)| client)
            .unwrap_or_else(|e| panic!("{client_id} could not connect: {e:?}"))
    }

    /// Connects with `options` and waits for the CONNACK; `Err` when refused or failed.
    pub async fn connect_with(options: MqttOptions) -> Result<(Client, ConnAck), ConnectFailure> {
        let id = options.client_id();
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        // The first poll connects; a refusal comes back as its error with the return code.
        let first = timeout(WAIT, eventloop.poll()).await;
        let connack = match first {
            Err(_) => return Err(ConnectFailure::Other("no CONNACK within 5 s".into())),
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                return Err(ConnectFailure::Refused(code));
            }
            Ok(Err(e)) => return Err(ConnectFailure::Other(e.to_string())),
            Ok(Ok(Event::Incoming(Packet::ConnAck(connack)))) => connack,
            Ok(Ok(other)) => return Err(ConnectFailure::Other(format!("first event {other:?}"))),
        };
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx));
        Ok((
            Client {
                id,
                client,
                seen,
                backlog: VecDeque::new(),
                task,
                closed: None,
            },
            connack,
        ))
    }

    /// The rumqttc handle, for requests the helpers do not cover.
    pub fn handle(&self) -> &AsyncClient {
        &self.client
    }

    /// Waits for the next incoming packet matching `want`; other packets stay queued.
    pub async fn wait_packet(&mut self, what: &str, want: impl Fn(&Packet) -> bool) -> Packet {
        self.try_wait_packet(WAIT, &want)
            .await
            .unwrap_or_else(|| panic!("{}: no {what} within {WAIT:?}", self.id))
    }

    /// Like [`Client::wait_packet`] with a timeout; `None` when nothing matched in time.
    pub async fn try_wait_packet(
        &mut self,
        within: Duration,
        want: &impl Fn(&Packet) -> bool,
    ) -> Option<Packet> {
        if let Some(i) = self.backlog.iter().position(want) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + within;
        loop {
            let seen = match timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(seen)) => seen,
                Ok(None) => {
                    // The task ended; nothing more will come. Wait out the time like a silent
                    // socket would, so callers see the same result either way.
                    tokio::time::sleep_until(deadline).await;
                    return None;
                }
                Err(_) => return None,
            };
            match seen {
                Seen::In(packet) if want(&packet) => return Some(packet),
                Seen::In(packet) => self.backlog.push_back(packet),
                Seen::Out => {}
                Seen::Error(e) => self.closed = Some(e),
            }
        }
    }

    /// Waits until the connection ends (the event loop reports an error); the error text.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<String> {
        if let Some(e) = &self.closed {
            return Some(e.clone());
        }
        let deadline = Instant::now() + within;
        loop {
            match timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(Seen::Error(e))) => {
                    self.closed = Some(e.clone());
                    return Some(e);
                }
                Ok(Some(Seen::In(packet))) => self.backlog.push_back(packet),
                Ok(Some(Seen::Out)) => {}
                Ok(None) => return Some("event loop ended".into()),
                Err(_) => return None,
            }
        }
    }

    /// Whether the connection has ended (without waiting).
    pub fn is_closed(&mut self) -> bool {
        while let Ok(seen) = self.seen.try_recv() {
            match seen {
                Seen::In(packet) => self.backlog.push_back(packet),
                Seen::Out => {}
                Seen::Error(e) => self.closed = Some(e),
            }
        }
        self.closed.is_some() || (self.task.is_finished() && self.seen.is_empty())
    }

    /// Subscribes to the filters and returns the SUBACK's return codes.
    pub async fn subscribe_many(&mut self, filters: &[(&str, QoS)]) -> Vec<SubscribeReasonCode> {
        let filters: Vec<SubscribeFilter> = filters
            .iter()
            .map(|(f, q)| SubscribeFilter::new((*f).to_owned(), *q))
            .collect();
        self.client
            .subscribe_many(filters)
            .await
            .expect("subscribe request queued");
        match self
            .wait_packet("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Packet::SubAck(ack) => ack.return_codes,
            _ => unreachable!("wait_packet matched a SUBACK"),
        }
    }

    /// Subscribes to one filter and returns its SUBACK return code.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        let codes = self.subscribe_many(&[(filter, qos)]).await;
        assert_eq!(codes.len(), 1, "one code per filter: {codes:?}");
        codes[0]
    }

    /// Unsubscribes from `filter` and waits for the UNSUBACK.
    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client
            .unsubscribe(filter)
            .await
            .expect("unsubscribe request queued");
        self.wait_packet("UNSUBACK", |p| matches!(p, Packet::UnsubAck(_)))
            .await;
    }

    /// Publishes and waits for the flow to complete: PUBACK at QoS 1, PUBCOMP at QoS 2.
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish request queued");
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_packet("PUBACK", |p| matches!(p, Packet::PubAck(_)))
                    .await;
            }
            QoS::ExactlyOnce => {
                self.wait_packet("PUBREC", |p| matches!(p, Packet::PubRec(_)))
                    .await;
                self.wait_packet("PUBCOMP", |p| matches!(p, Packet::PubComp(_)))
                    .await;
            }
        }
    }

    /// Waits for the next incoming PUBLISH.
    pub async fn next_publish(&mut self) -> Publish {
        match self
            .wait_packet("PUBLISH", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Packet::Publish(publish) => publish,
            _ => unreachable!("wait_packet matched a PUBLISH"),
        }
    }

    /// The next incoming PUBLISH within `within`, if any.
    pub async fn try_next_publish(&mut self, within: Duration) -> Option<Publish> {
        match self
            .try_wait_packet(within, &|p| matches!(p, Packet::Publish(_)))
            .await
        {
            Some(Packet::Publish(publish)) => Some(publish),
            _ => None,
        }
    }

    /// Sends DISCONNECT and waits for the connection to end.
    pub async fn disconnect(mut self) {
        self.client
            .disconnect()
            .await
            .expect("disconnect request queued");
        if self.wait_closed(WAIT).await.is_none() {
            panic!("{}: connection still open after DISCONNECT", self.id);
        }
    }

    /// Drops the connection without DISCONNECT (the socket closes when the task ends).
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}
