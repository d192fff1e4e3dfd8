//! Retained presence (`events.retained_presence`): the current state of every client id as a
//! retained message, for subscribers that come later.
//!
//! Each `connected` and `disconnected` event the [`Dispatcher`](crate::events::Dispatcher)
//! hands to the sinks also sets `<prefix>/presence/state/<client_id>` (retained, at the event
//! kind's QoS) to the event's own JSON with `"state":"online"` or `"state":"offline"` put first:
//! `{"state":"online","client_id":"dev-7",...,"session_seq":...,"ts":...,"event_seq":...}`. The
//! broker publishes it into its router as the reserved client `broker`, the tap publishes it
//! upstream with RETAIN (section 3.3.1.3).
//!
//! A takeover on this node never leaves the old session's `offline` over the new session's
//! `online`: the node remembers the `session_seq` of each client id that is online here, and a
//! `disconnected` of an older session (a `session_expired` that comes after a newer
//! connection's `connected`) does not touch the state. Across nodes (two taps in front of one
//! broker) nothing orders the two publishes: see docs/presence.md.
//!
//! Memory: the router (or the upstream broker) keeps one retained message per client id that
//! ever connected, until it is replaced; nothing deletes them. This module keeps one entry per
//! client id online here (an entry stays when the `disconnected` event was lost to a full
//! queue, until the client id connects again). A client id with `+` or `#` (valid in a client
//! id, not in a topic name) gets no state.

use std::collections::HashMap;

use activity_core::event::EventKind;
use bytes::Bytes;
use tracing::debug;

/// A retained presence state to publish.
#[derive(Clone, Debug)]
pub struct PresenceState {
    /// The event it comes from (`connected` or `disconnected`).
    pub kind: EventKind,
    /// `<prefix>/presence/state/<client_id>`.
    pub topic: String,
    /// The JSON: the event's with `"state"` first.
    pub json: Bytes,
}

/// What the dispatcher needs to keep the states.
#[derive(Debug)]
pub struct RetainedPresence {
    /// `<prefix>/presence/state/`.
    topic_prefix: String,
    /// The `session_seq` of each client id online on this node.
    online: HashMap<String, u64>,
}

impl RetainedPresence {
    /// Retained presence under the system topic prefix `prefix`.
    pub fn new(prefix: &str) -> Self {
        RetainedPresence {
            topic_prefix: format!("{prefix}/presence/state/"),
            online: HashMap::new(),
        }
    }

    /// The state an event sets: for `connected` and `disconnected` events (with the
    /// `session_seq` they carry and their final `json`), unless it is an older session's end.
    pub fn state_of(
        &mut self,
        kind: EventKind,
        client_id: &str,
        session_seq: Option<u64>,
        json: &[u8],
    ) -> Option<PresenceState> {
        let session_seq = session_seq?;
        let state: &[u8] = match kind {
            EventKind::Connected => b"online",
            EventKind::Disconnected => b"offline",
            _ => return None,
        };
        if client_id.contains(['+', '#']) {
            debug!(
                client_id,
                "no retained presence: the client id cannot be a topic level"
            );
            return None;
        }
        let current = self.online.get(client_id).copied();
        if current.is_some_and(|online| online > session_seq) {
            debug!(
                client_id,
                session_seq, "presence of an older session: state unchanged"
            );
            return None;
        }
        if kind == EventKind::Connected {
            self.online.insert(client_id.to_owned(), session_seq);
        } else if current.is_some() {
            self.online.remove(client_id);
        }
        let body = json.strip_prefix(b"{")?;
        let mut out = Vec::with_capacity(json.len() + 20);
        out.extend_from_slice(b"{\"state\":\"");
        out.extend_from_slice(state);
        out.extend_from_slice(b"\",");
        out.extend_from_slice(body);
        Some(PresenceState {
            kind,
            topic: format!("{}{client_id}", self.topic_prefix),
            json: Bytes::from(out),
        })
    }

    /// How many client ids are online here, as far as the states go.
    pub fn online(&self) -> usize {
        self.online.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(state: &PresenceState) -> serde_json::Value {
        serde_json::from_slice(&state.json).expect("JSON")
    }

    #[test]
    fn states_put_the_state_first_and_keep_the_event_fields() {
        let mut presence = RetainedPresence::new("SYSTEM");
        let on = presence
            .state_of(
                EventKind::Connected,
                "dev/7",
                Some(10),
                br#"{"client_id":"dev/7","session_seq":10,"ts":1,"event_seq":5}"#,
            )
            .expect("a state");
        assert_eq!(on.topic, "SYSTEM/presence/state/dev/7");
        assert!(on.json.starts_with(br#"{"state":"online","client_id""#));
        assert_eq!(json(&on)["event_seq"], 5);
        assert_eq!(presence.online(), 1);
        let off = presence
            .state_of(
                EventKind::Disconnected,
                "dev/7",
                Some(10),
                br#"{"client_id":"dev/7","reason":"normal","session_seq":10}"#,
            )
            .expect("a state");
        assert_eq!(json(&off)["state"], "offline");
        assert_eq!(json(&off)["reason"], "normal");
        assert_eq!(presence.online(), 0);
        // Other kinds, events without a session_seq, ids that are no topic level: nothing.
        assert!(
            presence
                .state_of(EventKind::Message, "a", Some(1), b"{\"a\":1}")
                .is_none()
        );
        assert!(
            presence
                .state_of(EventKind::Connected, "a", None, b"{\"a\":1}")
                .is_none()
        );
        assert!(
            presence
                .state_of(EventKind::Connected, "a+b", Some(1), b"{\"a\":1}")
                .is_none()
        );
    }

    #[test]
    fn an_older_sessions_end_leaves_the_newer_online() {
        let mut presence = RetainedPresence::new("SYSTEM");
        let doc = br#"{"client_id":"t"}"#;
        assert!(
            presence
                .state_of(EventKind::Connected, "t", Some(1), doc)
                .is_some()
        );
        // Taken over: the old end first (ordered by the engine), then the new connect.
        assert!(
            presence
                .state_of(EventKind::Disconnected, "t", Some(1), doc)
                .is_some()
        );
        assert!(
            presence
                .state_of(EventKind::Connected, "t", Some(2), doc)
                .is_some()
        );
        // The old session's session_expired, later: the state stays online.
        assert!(
            presence
                .state_of(EventKind::Disconnected, "t", Some(1), doc)
                .is_none()
        );
        assert_eq!(presence.online(), 1);
        // A session_expired of the connection that is gone (nothing online): offline again.
        assert!(
            presence
                .state_of(EventKind::Disconnected, "t", Some(2), doc)
                .is_some()
        );
        assert!(
            presence
                .state_of(EventKind::Disconnected, "t", Some(2), doc)
                .is_some()
        );
        assert_eq!(presence.online(), 0);
    }
}
