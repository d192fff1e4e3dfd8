//! `GET /api/v1/events`: the activity events as Server-Sent Events (the WHATWG HTML standard,
//! section 9.2), fed by the event pipeline's [`Dispatcher`](crate::events::Dispatcher).
//!
//! Each event is `id:` its sequence number, `event:` its kind's name and `data:` the JSON
//! published on the system topic. The [`EventHub`] keeps the last `http.event_ring` events for
//! a reconnect's `Last-Event-ID`; what the ring no longer holds is said in a comment line. The
//! dispatcher hands the hub every event without waiting ([`SinkQueue::offer`]: a short lock and
//! a broadcast send): a stream that falls `http.watcher_buffer` events behind skips the oldest,
//! says so in a comment and counts them; MQTT never waits for a stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use activity_core::event::EventKind;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{Api, error};
use crate::config::HttpConfig;
use crate::events::{EventRecord, SinkQueue};

/// How often an idle stream gets a comment line, so that proxies and clients see it alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event as the streams send it.
#[derive(Debug)]
pub struct Stamped {
    /// Its `event_seq` (numbered by the dispatcher), the `id:` line.
    pub seq: u64,
    /// Its kind, the `event:` line.
    pub kind: EventKind,
    /// Its JSON, the `data:` line.
    pub json: Bytes,
}

/// The recent events and the live feed of the event streams.
pub struct EventHub {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Stamped>>,
    /// Streams open now.
    watchers: AtomicUsize,
    /// Streams refused: `http.max_watchers` were open.
    pub watchers_refused: AtomicU64,
    /// Events streams skipped because they fell behind.
    pub watcher_lagged: AtomicU64,
    /// Streams opened since start.
    pub watchers_total: AtomicU64,
}

/// The last events, oldest first.
struct Ring {
    events: VecDeque<Arc<Stamped>>,
    capacity: usize,
}

impl EventHub {
    /// A hub with the ring and stream buffer sizes of `config`.
    pub fn new(config: &HttpConfig) -> EventHub {
        let (live, _) = broadcast::channel(config.watcher_buffer.max(1));
        EventHub {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(config.event_ring.min(4096)),
                capacity: config.event_ring.max(1),
            }),
            live,
            watchers: AtomicUsize::new(0),
            watchers_refused: AtomicU64::new(0),
            watcher_lagged: AtomicU64::new(0),
            watchers_total: AtomicU64::new(0),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Streams open now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Keeps `record` in the ring and sends it to every stream; never waits.
    pub fn publish(&self, record: &EventRecord) {
        let mut ring = self.ring();
        let stamped = Arc::new(Stamped {
            seq: record.event_seq,
            kind: record.kind,
            json: record.json.clone(),
        });
        if ring.events.len() == ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(stamped.clone());
        // Sent under the lock, so that a new stream's replay and its live feed meet exactly.
        // No receiver is not an error here.
        let _ = self.live.send(stamped);
    }

    /// A new stream's start: what it missed after `last_seen` (the ring's events after it,
    /// and whether the ring no longer holds some), and its live feed.
    fn subscribe(
        &self,
        last_seen: Option<u64>,
    ) -> (
        VecDeque<Arc<Stamped>>,
        Option<String>,
        broadcast::Receiver<Arc<Stamped>>,
    ) {
        let ring = self.ring();
        let live = self.live.subscribe();
        let Some(last) = last_seen else {
            return (VecDeque::new(), None, live);
        };
        let newest = ring.events.back().map_or(0, |e| e.seq);
        if last > newest {
            let note = format!("Last-Event-ID {last} is newer than the last event ({newest})");
            return (VecDeque::new(), Some(note), live);
        }
        let oldest = ring.events.front().map_or(newest + 1, |e| e.seq);
        let note = (last + 1 < oldest).then(|| {
            format!(
                "events {} to {} are no longer held (the ring keeps {}): replaying from {oldest}",
                last + 1,
                oldest - 1,
                ring.capacity
            )
        });
        let missed = ring
            .events
            .iter()
            .filter(|e| e.seq > last)
            .cloned()
            .collect();
        (missed, note, live)
    }
}

impl SinkQueue for Arc<EventHub> {
    fn offer(&self, record: EventRecord) {
        self.publish(&record);
    }
}

/// The query of `/api/v1/events`.
#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    /// Comma-separated kind names; none: every kind.
    kinds: Option<String>,
}

/// Which kinds a stream sends, a bit per `EventKind as usize`.
#[derive(Clone, Copy, Debug)]
struct KindFilter(u64);

impl KindFilter {
    fn parse(list: Option<&str>) -> Result<KindFilter, String> {
        let Some(list) = list else {
            return Ok(KindFilter(u64::MAX));
        };
        let mut bits = 0u64;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = EventKind::ALL
                .iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| format!("unknown event kind {name:?}"))?;
            bits |= 1 << (*kind as usize);
        }
        if bits == 0 {
            return Err("kinds: name at least one kind".to_owned());
        }
        Ok(KindFilter(bits))
    }

    fn wants(self, kind: EventKind) -> bool {
        self.0 & (1 << (kind as usize)) != 0
    }
}

/// Counts a stream while it is open.
struct WatcherSlot(Arc<Api>);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.hub.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream's state between two events.
struct Watch {
    missed: VecDeque<Arc<Stamped>>,
    note: Option<String>,
    live: broadcast::Receiver<Arc<Stamped>>,
    kinds: KindFilter,
    slot: WatcherSlot,
}

/// Most events written in one chunk: a stream that is behind catches up in few writes.
const CHUNK_EVENTS: usize = 64;

/// Appends `stamped` as one event block (the `data:` JSON is one line: JSON strings escape
/// line breaks).
fn push_event(out: &mut Vec<u8>, stamped: &Stamped) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(stamped.seq.to_string().as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(stamped.kind.name().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&stamped.json);
    out.extend_from_slice(b"\n\n");
}

/// Appends a comment line.
fn push_comment(out: &mut Vec<u8>, comment: &str) {
    out.extend_from_slice(b": ");
    out.extend_from_slice(comment.replace(['\n', '\r'], " ").as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl Watch {
    /// The next chunk to send: a note, then the missed events, then live ones, as many as are
    /// ready (up to [`CHUNK_EVENTS`]); a keep-alive comment after [`KEEP_ALIVE`] without any.
    /// `None` when the hub is gone.
    async fn next(&mut self) -> Option<Bytes> {
        let mut out = Vec::new();
        if let Some(note) = self.note.take() {
            push_comment(&mut out, &note);
        }
        let mut events = 0;
        while events < CHUNK_EVENTS {
            let Some(stamped) = self.missed.pop_front() else {
                break;
            };
            if self.kinds.wants(stamped.kind) {
                push_event(&mut out, &stamped);
                events += 1;
            }
        }
        if !out.is_empty() {
            return Some(Bytes::from(out));
        }
        loop {
            let received = match tokio::time::timeout(KEEP_ALIVE, self.live.recv()).await {
                Ok(received) => received,
                Err(_) => {
                    push_comment(&mut out, "keep-alive");
                    return Some(Bytes::from(out));
                }
            };
            match received {
                Ok(stamped) => {
                    if self.kinds.wants(stamped.kind) {
                        push_event(&mut out, &stamped);
                        events += 1;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    self.slot
                        .0
                        .hub
                        .watcher_lagged
                        .fetch_add(n, Ordering::Relaxed);
                    push_comment(
                        &mut out,
                        &format!("{n} events skipped: this stream fell behind"),
                    );
                }
                Err(RecvError::Closed) => return (!out.is_empty()).then(|| Bytes::from(out)),
            }
            // Whatever else is ready goes into the same chunk.
            while events < CHUNK_EVENTS {
                match self.live.try_recv() {
                    Ok(stamped) => {
                        if self.kinds.wants(stamped.kind) {
                            push_event(&mut out, &stamped);
                            events += 1;
                        }
                    }
                    Err(TryRecvError::Lagged(n)) => {
                        self.slot
                            .0
                            .hub
                            .watcher_lagged
                            .fetch_add(n, Ordering::Relaxed);
                        let note = format!("{n} events skipped: this stream fell behind");
                        push_comment(&mut out, &note);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if !out.is_empty() {
                return Some(Bytes::from(out));
            }
        }
    }
}

/// `GET /api/v1/events`.
pub(super) async fn events(
    State(api): State<Arc<Api>>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query string");
    };
    let kinds = match KindFilter::parse(query.kinds.as_deref()) {
        Ok(kinds) => kinds,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let last_seen = match headers.get("last-event-id") {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(id) => Some(id),
            None => {
                return error(StatusCode::BAD_REQUEST, "Last-Event-ID must be an event id");
            }
        },
    };
    let hub = &api.hub;
    if hub.watchers.fetch_add(1, Ordering::Relaxed) >= api.limits.max_watchers {
        hub.watchers.fetch_sub(1, Ordering::Relaxed);
        hub.watchers_refused.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams are open (http.max_watchers)",
        );
    }
    hub.watchers_total.fetch_add(1, Ordering::Relaxed);
    let slot = WatcherSlot(api.clone());
    let (missed, note, live) = hub.subscribe(last_seen);
    let watch = Watch {
        missed,
        note,
        live,
        kinds,
        slot,
    };
    let stream = stream::unfold(watch, |mut watch| async move {
        let chunk = watch.next().await?;
        Some((Ok::<_, Infallible>(chunk), watch))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: EventKind, event_seq: u64) -> EventRecord {
        EventRecord {
            kind,
            subject: "c".into(),
            ts: 1,
            json: Bytes::from_static(b"{}"),
            event_seq,
            session_seq: None,
            retained_topic: None,
        }
    }

    fn hub(ring: usize) -> EventHub {
        EventHub::new(&HttpConfig {
            event_ring: ring,
            ..HttpConfig::default()
        })
    }

    #[test]
    fn a_reconnect_gets_what_it_missed_from_the_ring() {
        let hub = hub(4);
        for seq in 1..=3 {
            hub.publish(&record(EventKind::Connected, seq));
        }
        let (missed, note, _) = hub.subscribe(Some(1));
        assert_eq!(missed.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(note.is_none());
        let (missed, note, _) = hub.subscribe(Some(3));
        assert!(missed.is_empty() && note.is_none());
    }

    #[test]
    fn events_the_ring_lost_are_said_in_a_note() {
        let hub = hub(2);
        for seq in 1..=5 {
            hub.publish(&record(EventKind::Message, seq));
        }
        let (missed, note, _) = hub.subscribe(Some(1));
        assert_eq!(missed.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        let note = note.expect("events 2 and 3 are gone");
        assert!(note.contains("events 2 to 3"), "{note}");
        let (_, note, _) = hub.subscribe(Some(9));
        assert!(note.is_some(), "an id from the future is said too");
    }

    #[test]
    fn kind_filters_parse_names_and_refuse_unknown_ones() {
        let filter = KindFilter::parse(Some("connected,disconnected")).unwrap();
        assert!(filter.wants(EventKind::Connected) && filter.wants(EventKind::Disconnected));
        assert!(!filter.wants(EventKind::Message));
        assert!(KindFilter::parse(Some("connected,bogus")).is_err());
        assert!(KindFilter::parse(Some(",")).is_err());
        assert!(KindFilter::parse(None).unwrap().wants(EventKind::MsgAck));
    }
}
