//! `GET /api/v1/events`: the activity events as Server-Sent Events (the WHATWG HTML standard,
//! section 9.2), fed by the event pipeline's [`Dispatcher`](crate::events::Dispatcher).
//!
//! Each event is `id:` its sequence number, `event:` its kind's name and `data:` the JSON
//! published on the system topic.
//!
//! # What it costs: the kinds the streams hold
//!
//! An open stream holds the kinds it sends (its `?kinds=`, every kind without one), and keeps
//! holding them for `http.replay_grace_ms` after it closes (a grace window for its reconnect).
//! Only held kinds cost anything: the event pipeline encodes an event that no other sink wants
//! only while its kind is held (one atomic load per event, [`KindHolds`]), and the [`EventHub`]
//! keeps and broadcasts only held kinds; for another kind the dispatcher pays one atomic load.
//! The holds are counts per kind; the grace is one timer task per hub (not one per stream).
//!
//! # Replay
//!
//! The ring keeps the last `http.event_ring` events of held kinds. For each kind it knows the
//! first `event_seq` from which it kept every event of that kind without a break
//! ([`Ring::since`]): a kind's run of keeping breaks when no stream held it (its holds, grace
//! included, dropped to none). A reconnect with `Last-Event-ID: N` gets the ring's events after
//! `N` of its kinds, then the live ones, with no gap and no repeat, when each of its kinds was
//! kept without a break since before `N + 1` and the ring evicted none of them after `N`: in
//! short, when it reconnects within `http.replay_grace_ms` with the same or fewer kinds and
//! less than `http.event_ring` events went by. Otherwise it still gets what the ring holds, and
//! a comment line first says what is missing: the events the ring evicted, the kinds kept only
//! from some later event on, the kinds not kept at all (then from its first live event on).
//!
//! The dispatcher hands the hub each event without waiting ([`SinkQueue::take`]): a stream that
//! falls `http.watcher_buffer` events behind skips the oldest, says so in a comment and counts
//! them; MQTT never waits for a stream.

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
use tokio::time::Instant;

use super::{Api, error};
use crate::config::HttpConfig;
use crate::events::{EventRecord, KindHolds, SinkQueue};

/// How often an idle stream gets a comment line, so that proxies and clients see it alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The number of event kinds.
const KINDS: usize = EventKind::ALL.len();

/// One event as the streams send it.
#[derive(Debug)]
pub struct Stamped {
    /// Its `event_seq` (numbered by the dispatcher), the `id:` line.
    pub seq: u64,
    /// Its kind, the `event:` line.
    pub kind: EventKind,
    /// Its event block as every stream sends it (`id:`, `event:`, `data:` its JSON, the blank
    /// line), formatted once for all streams and replays.
    pub block: Bytes,
}

impl Stamped {
    /// The event of `record`, its block formatted (the `data:` JSON is one line: JSON strings
    /// escape line breaks).
    fn new(record: &EventRecord) -> Stamped {
        let name = record.kind.name();
        let mut block = Vec::with_capacity(record.json.len() + name.len() + 40);
        block.extend_from_slice(b"id: ");
        block.extend_from_slice(record.event_seq.to_string().as_bytes());
        block.extend_from_slice(b"\nevent: ");
        block.extend_from_slice(name.as_bytes());
        block.extend_from_slice(b"\ndata: ");
        block.extend_from_slice(&record.json);
        block.extend_from_slice(b"\n\n");
        Stamped {
            seq: record.event_seq,
            kind: record.kind,
            block: Bytes::from(block),
        }
    }
}

/// The recent events and the live feed of the event streams.
pub struct EventHub {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Stamped>>,
    /// The kinds the streams hold (open ones, and closed ones in their grace window).
    holds: Arc<KindHolds>,
    /// The `event_seq` of the last event the dispatcher handed the hub, kept or not.
    dispatched: AtomicU64,
    /// How long a closed stream still holds its kinds.
    grace: Duration,
    /// The grace holds of closed streams.
    graces: Mutex<Graces>,
    /// Streams open now.
    watchers: AtomicUsize,
    /// Streams refused: `http.max_watchers` were open.
    pub watchers_refused: AtomicU64,
    /// Events streams skipped because they fell behind.
    pub watcher_lagged: AtomicU64,
    /// Streams opened since start.
    pub watchers_total: AtomicU64,
}

/// The last events of held kinds, oldest first.
struct Ring {
    events: VecDeque<Arc<Stamped>>,
    capacity: usize,
    /// Per kind: the ring has kept every event of that kind numbered from this one on, and
    /// events of it before this one may have gone unkept (or unmade: an event no sink wanted
    /// is not numbered); set when a stream holds the kind after none did. `None`: never held.
    since: [Option<u64>; KINDS],
    /// The `event_seq` of the newest event the ring evicted (0: none yet).
    evicted: u64,
}

/// Per kind, until when closed streams hold it (one hold per kind, however many closed), and
/// whether the task that lets the holds go runs.
#[derive(Default)]
struct Graces {
    until: [Option<Instant>; KINDS],
    reaper: bool,
}

/// What a new stream starts with: the events it missed, the comment lines about what the ring
/// does not hold, and its live feed.
struct Start {
    missed: VecDeque<Arc<Stamped>>,
    notes: Vec<String>,
    live: broadcast::Receiver<Arc<Stamped>>,
}

impl EventHub {
    /// A hub with the ring, stream buffer and grace of `config`.
    pub fn new(config: &HttpConfig) -> EventHub {
        let (live, _) = broadcast::channel(config.watcher_buffer.max(1));
        EventHub {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(config.event_ring.min(4096)),
                capacity: config.event_ring.max(1),
                since: [None; KINDS],
                evicted: 0,
            }),
            live,
            holds: Arc::new(KindHolds::default()),
            dispatched: AtomicU64::new(0),
            grace: config.replay_grace(),
            graces: Mutex::new(Graces::default()),
            watchers: AtomicUsize::new(0),
            watchers_refused: AtomicU64::new(0),
            watcher_lagged: AtomicU64::new(0),
            watchers_total: AtomicU64::new(0),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn graces(&self) -> MutexGuard<'_, Graces> {
        self.graces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Streams open now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// The kinds the streams hold, for the event pipeline (see [`crate::events::Watched`]).
    pub fn holds(&self) -> Arc<KindHolds> {
        self.holds.clone()
    }

    /// How many kinds the ring keeps now (held by a stream or a grace window).
    pub fn kinds_held(&self) -> usize {
        self.holds.kinds_held()
    }

    /// Keeps `record` in the ring and sends it to every stream when a stream holds its kind;
    /// otherwise an atomic store and load, no lock. Never waits.
    pub fn publish(&self, record: &EventRecord) {
        // Stored before the holds are read, and read by `subscribe` after it holds a kind (both
        // in the one total order of SeqCst): an event this misses is one `subscribe` counts
        // among those before `since`.
        self.dispatched.store(record.event_seq, Ordering::SeqCst);
        if !self.holds.held(record.kind) {
            return;
        }
        let stamped = Arc::new(Stamped::new(record));
        let mut ring = self.ring();
        if ring.events.len() == ring.capacity
            && let Some(old) = ring.events.pop_front()
        {
            ring.evicted = old.seq;
        }
        ring.events.push_back(stamped.clone());
        // Sent under the lock, so that a new stream's replay and its live feed meet exactly.
        // No receiver is not an error here.
        let _ = self.live.send(stamped);
    }

    /// A new stream of `kinds` starts: it holds them, and gets what it missed after
    /// `last_seen` (see [Replay](self#replay)) and its live feed.
    fn subscribe(&self, last_seen: Option<u64>, kinds: KindFilter) -> Start {
        let mut ring = self.ring();
        for kind in kinds.kinds() {
            if self.holds.hold(kind) {
                // Held by none until now: kept from the next event on.
                let next = self.dispatched.load(Ordering::SeqCst) + 1;
                ring.since[kind as usize] = Some(next);
            }
        }
        let live = self.live.subscribe();
        let mut start = Start {
            missed: VecDeque::new(),
            notes: Vec::new(),
            live,
        };
        let Some(last) = last_seen else {
            return start;
        };
        let newest = ring.events.back().map_or(0, |e| e.seq);
        if last > newest {
            let note = format!("Last-Event-ID {last} is newer than the last event kept ({newest})");
            start.notes.push(note);
            return start;
        }
        let oldest = ring.events.front().map_or(newest + 1, |e| e.seq);
        if ring.evicted > last {
            start.notes.push(format!(
                "events {} to {} are no longer held (the ring keeps {}): replaying from {oldest}",
                last + 1,
                ring.evicted,
                ring.capacity
            ));
        }
        for kind in kinds.kinds() {
            let since = ring.since[kind as usize].unwrap_or(u64::MAX);
            if since > last {
                start.notes.push(format!(
                    "{} events after {last} and before {since} may be missing: no stream held the kind for a while",
                    kind.name()
                ));
            }
        }
        start.missed = ring
            .events
            .iter()
            .filter(|e| e.seq > last && kinds.wants(e.kind))
            .cloned()
            .collect();
        start
    }

    /// A stream of `kinds` closed: it holds them `http.replay_grace_ms` longer (the hub's one
    /// timer task lets them go), or lets them go now without a grace or a runtime.
    fn closed(self: &Arc<Self>, kinds: KindFilter) {
        let handle = match tokio::runtime::Handle::try_current() {
            Ok(handle) if !self.grace.is_zero() => handle,
            _ => {
                for kind in kinds.kinds() {
                    self.holds.release(kind);
                }
                return;
            }
        };
        let until = Instant::now() + self.grace;
        let mut graces = self.graces();
        for kind in kinds.kinds() {
            // One grace hold per kind: a kind already in its grace window keeps that hold.
            if graces.until[kind as usize].replace(until).is_some() {
                self.holds.release(kind);
            }
        }
        if !graces.reaper {
            graces.reaper = true;
            handle.spawn(self.clone().reap());
        }
    }

    /// Lets the grace holds go as their windows end; stops when none is left.
    async fn reap(self: Arc<Self>) {
        loop {
            let next = {
                let mut graces = self.graces();
                let now = Instant::now();
                for (i, until) in graces.until.iter_mut().enumerate() {
                    if until.is_some_and(|t| t <= now) {
                        *until = None;
                        self.holds.release(EventKind::ALL[i]);
                    }
                }
                match graces.until.iter().flatten().min() {
                    Some(next) => *next,
                    None => {
                        graces.reaper = false;
                        return;
                    }
                }
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

impl SinkQueue for Arc<EventHub> {
    fn offer(&self, record: EventRecord) {
        self.publish(&record);
    }

    fn take(&self, record: &EventRecord) {
        self.publish(record);
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

    /// The kinds it sends.
    fn kinds(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL.into_iter().filter(move |k| self.wants(*k))
    }
}

/// Counts a stream while it is open; when it closes, its kinds go into their grace window.
struct WatcherSlot {
    api: Arc<Api>,
    /// The kinds the stream holds, once it started.
    holds: Option<KindFilter>,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.api.hub.watchers.fetch_sub(1, Ordering::Relaxed);
        if let Some(kinds) = self.holds {
            self.api.hub.closed(kinds);
        }
    }
}

/// A stream's state between two events.
struct Watch {
    missed: VecDeque<Arc<Stamped>>,
    notes: Vec<String>,
    live: broadcast::Receiver<Arc<Stamped>>,
    kinds: KindFilter,
    slot: WatcherSlot,
}

/// Most events written in one chunk: a stream that is behind catches up in few writes.
const CHUNK_EVENTS: usize = 64;

/// Appends `stamped`'s event block.
fn push_event(out: &mut Vec<u8>, stamped: &Stamped) {
    out.extend_from_slice(&stamped.block);
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
        for note in self.notes.drain(..) {
            push_comment(&mut out, &note);
        }
        let mut events = 0;
        while events < CHUNK_EVENTS {
            let Some(stamped) = self.missed.pop_front() else {
                break;
            };
            push_event(&mut out, &stamped);
            events += 1;
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
                        .api
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
                            .api
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
    let mut slot = WatcherSlot {
        api: api.clone(),
        holds: None,
    };
    let start = hub.subscribe(last_seen, kinds);
    slot.holds = Some(kinds);
    let watch = Watch {
        missed: start.missed,
        notes: start.notes,
        live: start.live,
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
            ack_key: None,
        }
    }

    fn hub(ring: usize) -> Arc<EventHub> {
        Arc::new(EventHub::new(&HttpConfig {
            event_ring: ring,
            ..HttpConfig::default()
        }))
    }

    const ALL: KindFilter = KindFilter(u64::MAX);

    fn seqs(start: &Start) -> Vec<u64> {
        start.missed.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_reconnect_gets_what_it_missed_from_the_ring() {
        let hub = hub(4);
        let _watching = hub.subscribe(None, ALL);
        for seq in 1..=3 {
            hub.publish(&record(EventKind::Connected, seq));
        }
        let start = hub.subscribe(Some(1), ALL);
        assert_eq!(seqs(&start), [2, 3]);
        assert!(start.notes.is_empty(), "{:?}", start.notes);
        let start = hub.subscribe(Some(3), ALL);
        assert!(start.missed.is_empty() && start.notes.is_empty());
    }

    #[test]
    fn events_the_ring_lost_are_said_in_a_note() {
        let hub = hub(2);
        let _watching = hub.subscribe(None, ALL);
        for seq in 1..=5 {
            hub.publish(&record(EventKind::Message, seq));
        }
        let start = hub.subscribe(Some(1), ALL);
        assert_eq!(seqs(&start), [4, 5]);
        assert_eq!(start.notes.len(), 1, "{:?}", start.notes);
        assert!(
            start.notes[0].contains("events 2 to 3"),
            "{:?}",
            start.notes
        );
        let start = hub.subscribe(Some(9), ALL);
        assert!(!start.notes.is_empty(), "an id from the future is said too");
    }

    #[test]
    fn only_held_kinds_are_kept_and_a_break_is_said() {
        let hub = hub(16);
        // Nobody holds anything: nothing is kept.
        hub.publish(&record(EventKind::Connected, 1));
        assert!(hub.ring().events.is_empty());
        let presence = KindFilter::parse(Some("connected,disconnected")).unwrap();
        let _watching = hub.subscribe(None, presence);
        assert!(hub.holds.held(EventKind::Connected) && !hub.holds.held(EventKind::Message));
        hub.publish(&record(EventKind::Connected, 2));
        hub.publish(&record(EventKind::Message, 3));
        hub.publish(&record(EventKind::Disconnected, 4));
        let kept: Vec<u64> = hub.ring().events.iter().map(|e| e.seq).collect();
        assert_eq!(kept, [2, 4], "the message nobody holds is not kept");
        // A reconnect of the same kinds after 2: complete, no note.
        let start = hub.subscribe(Some(2), presence);
        assert_eq!(seqs(&start), [4]);
        assert!(start.notes.is_empty(), "{:?}", start.notes);
        // One that also wants messages: told that they were not kept before it held them.
        let start = hub.subscribe(Some(2), ALL);
        assert_eq!(seqs(&start), [4]);
        assert!(
            start
                .notes
                .iter()
                .any(|n| n.contains("message events after 2 and before 5 may be missing")),
            "{:?}",
            start.notes
        );
        // Messages are held from now on: kept from the next event on.
        hub.publish(&record(EventKind::Message, 5));
        let start = hub.subscribe(Some(4), ALL);
        assert_eq!(seqs(&start), [5]);
        let start = hub.subscribe(Some(5), ALL);
        assert!(
            start.missed.is_empty() && start.notes.is_empty(),
            "{:?}",
            start.notes
        );
    }

    #[test]
    fn a_kind_nobody_held_for_a_while_breaks_its_run() {
        let hub = hub(16);
        let connected = KindFilter::parse(Some("connected")).unwrap();
        hub.subscribe(None, connected);
        hub.publish(&record(EventKind::Connected, 1));
        // The stream goes without a grace window (no runtime here): the kind is let go, and
        // events of it pass unkept (here one that another sink wanted, numbered 2).
        hub.closed(connected);
        assert!(!hub.holds.held(EventKind::Connected));
        hub.publish(&record(EventKind::Connected, 2));
        let start = hub.subscribe(Some(1), connected);
        assert!(start.missed.is_empty());
        assert!(
            start.notes.iter().any(|n| n.contains("may be missing")),
            "{:?}",
            start.notes
        );
        // Kept again from 3 on, then let go with no event after it (those of the kind that
        // came were not even encoded): the next hold still knows of the break.
        hub.publish(&record(EventKind::Connected, 3));
        hub.closed(connected);
        let start = hub.subscribe(Some(3), connected);
        assert!(
            start.notes.iter().any(|n| n.contains("may be missing")),
            "{:?}",
            start.notes
        );
    }

    #[tokio::test]
    async fn a_closed_stream_holds_its_kinds_for_the_grace_window() {
        let grace = Duration::from_millis(200);
        let hub = Arc::new(EventHub::new(&HttpConfig {
            replay_grace_ms: 200,
            ..HttpConfig::default()
        }));
        let closed_at = Instant::now();
        let connected = KindFilter::parse(Some("connected")).unwrap();
        hub.subscribe(None, connected);
        hub.closed(connected);
        assert!(
            hub.holds.held(EventKind::Connected),
            "held in the grace window"
        );
        hub.publish(&record(EventKind::Connected, 1));
        // Two more streams close in the window: still one grace hold for the kind.
        for _ in 0..2 {
            hub.subscribe(None, connected);
            hub.closed(connected);
        }
        assert_eq!(hub.kinds_held(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.holds.held(EventKind::Connected) {
            assert!(Instant::now() < deadline, "never let go");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed_at.elapsed() >= grace, "not before the window ends");
        assert!(!hub.graces().reaper, "the timer task stopped");
        hub.publish(&record(EventKind::Connected, 2));
        assert_eq!(hub.ring().events.len(), 1, "not kept after the window");
    }

    #[test]
    fn kind_filters_parse_names_and_refuse_unknown_ones() {
        let filter = KindFilter::parse(Some("connected,disconnected")).unwrap();
        assert!(filter.wants(EventKind::Connected) && filter.wants(EventKind::Disconnected));
        assert!(!filter.wants(EventKind::Message));
        assert_eq!(filter.kinds().count(), 2);
        assert!(KindFilter::parse(Some("connected,bogus")).is_err());
        assert!(KindFilter::parse(Some(",")).is_err());
        assert!(KindFilter::parse(None).unwrap().wants(EventKind::MsgAck));
    }
}
