//! The event monitor: a client subscribed to `SYSTEM/#` that records every activity event.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{MqttOptions, Publish, QoS, SubscribeReasonCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::{Client, WAIT, options};

/// One activity event as received on `SYSTEM/#`.
#[derive(Clone, Debug)]
pub struct Ev {
    /// Its position in the order of arrival, from 0.
    pub index: usize,
    /// The topic it arrived on.
    pub topic: String,
    /// The JSON document.
    pub json: Value,
    /// The QoS it was delivered with.
    pub qos: QoS,
}

impl Ev {
    /// The event numbered `index` that arrived on `topic` with `payload`; panics with the
    /// topic and payload when the payload is not JSON.
    pub fn parse(index: usize, topic: String, payload: &[u8], qos: QoS) -> Ev {
        let json: Value = serde_json::from_slice(payload).unwrap_or_else(|e| {
            panic!(
                "event on {topic} is not JSON ({e}): {:?}",
                String::from_utf8_lossy(payload)
            )
        });
        Ev {
            index,
            topic,
            json,
            qos,
        }
    }

    /// The kind, from the topic: `connected`, `disconnected`, `subscribed`, `unsubscribed`,
    /// `message`, `msgack`, `refused`, `denied` or `dropped`.
    pub fn kind(&self) -> &str {
        match self.topic.as_str() {
            "SYSTEM/presence/connected" => "connected",
            "SYSTEM/presence/disconnected" => "disconnected",
            "SYSTEM/subscription/subscribed" => "subscribed",
            "SYSTEM/subscription/unsubscribed" => "unsubscribed",
            "SYSTEM/message" => "message",
            "SYSTEM/msgack" => "msgack",
            "SYSTEM/presence/refused" => "refused",
            "SYSTEM/access/denied" => "denied",
            "SYSTEM/message/dropped" => "dropped",
            _ => "other",
        }
    }

    /// The client the event is about: `client_id`, else `pub_client_id` (message), else
    /// `ack_client_id` (msgack).
    pub fn subject(&self) -> Option<&str> {
        let field = match self.kind() {
            "message" => "pub_client_id",
            "msgack" => "ack_client_id",
            _ => "client_id",
        };
        self.json.get(field).and_then(Value::as_str)
    }

    /// The `ts` field.
    pub fn ts(&self) -> u64 {
        self.json["ts"]
            .as_u64()
            .unwrap_or_else(|| panic!("ts is not an unsigned number: {}", self.json))
    }

    /// Whether this is a `kind` event about `client`.
    pub fn is(&self, kind: &str, client: &str) -> bool {
        self.kind() == kind && self.subject() == Some(client)
    }
}

/// A client subscribed to `SYSTEM/#` that records every event in order of arrival.
pub struct Monitor {
    client: Client,
    history: Vec<Ev>,
    consumed: Vec<bool>,
}

impl Monitor {
    /// Connects as `monitor` and subscribes to `SYSTEM/#` at QoS 1.
    pub async fn start(addr: SocketAddr) -> Monitor {
        Monitor::start_as(options(addr, "monitor")).await
    }

    /// Connects with `options` and subscribes to `SYSTEM/#` at QoS 1.
    pub async fn start_as(options: MqttOptions) -> Monitor {
        let (mut client, _) = Client::connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("monitor could not connect: {e:?}"));
        let code = client.subscribe("SYSTEM/#", QoS::AtLeastOnce).await;
        assert_eq!(
            code,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            "monitor may subscribe to SYSTEM/#"
        );
        Monitor {
            client,
            history: Vec::new(),
            consumed: Vec::new(),
        }
    }

    fn record(&mut self, publish: Publish) {
        let index = self.history.len();
        let ev = Ev::parse(index, publish.topic, &publish.payload, publish.qos);
        self.history.push(ev);
        self.consumed.push(false);
    }

    fn find(&self, want: &impl Fn(&Ev) -> bool) -> Option<usize> {
        (0..self.history.len()).find(|&i| !self.consumed[i] && want(&self.history[i]))
    }

    /// Waits for the first not yet returned event matching `want`, marks it returned and
    /// returns it. Panics after [`WAIT`] with `what` and every event seen.
    pub async fn wait_for(&mut self, what: &str, want: impl Fn(&Ev) -> bool) -> Ev {
        match self.try_wait_for(WAIT, &want).await {
            Some(ev) => ev,
            None => panic!(
                "no event {what} within {WAIT:?}; events seen:\n{}",
                self.describe()
            ),
        }
    }

    /// Like [`Monitor::wait_for`] with a timeout; `None` when nothing matched in time.
    pub async fn try_wait_for(
        &mut self,
        within: Duration,
        want: &impl Fn(&Ev) -> bool,
    ) -> Option<Ev> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.find(want) {
                self.consumed[i] = true;
                return Some(self.history[i].clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.client.try_next_publish(left).await {
                Some(publish) => self.record(publish),
                None => return None,
            }
        }
    }

    /// Waits for the next `kind` event about `client` (see [`Ev::is`]).
    pub async fn next_event(&mut self, kind: &str, client: &str) -> Ev {
        self.wait_for(&format!("{kind} of {client}"), |e| e.is(kind, client))
            .await
    }

    /// Records events for `window` and panics if one matching `unwanted` is (or was) seen and
    /// not yet returned.
    pub async fn assert_none(
        &mut self,
        what: &str,
        window: Duration,
        unwanted: impl Fn(&Ev) -> bool,
    ) {
        if let Some(ev) = self.try_wait_for(window, &unwanted).await {
            panic!(
                "unexpected event {what}: {} {}; events seen:\n{}",
                ev.topic,
                ev.json,
                self.describe()
            );
        }
    }

    /// Every event received so far, in order.
    pub fn history(&self) -> &[Ev] {
        &self.history
    }

    /// Waits until the monitor's own connection ends; the events received before the end are
    /// recorded. `None` if it is still open after `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .client
                .try_next_publish(left.min(Duration::from_millis(50)))
                .await
            {
                Some(publish) => self.record(publish),
                None if self.client.is_closed() => {
                    return self.client.wait_closed(Duration::ZERO).await;
                }
                None if left.is_zero() => return None,
                None => {}
            }
        }
    }

    /// The event history, one line each, for failure messages.
    pub fn describe(&self) -> String {
        self.history
            .iter()
            .map(|e| format!("  #{} {} {}", e.index, e.topic, e.json))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
