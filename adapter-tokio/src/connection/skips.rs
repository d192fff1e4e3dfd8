//! Deliveries rumqttd's router skipped for a slow subscriber, seen from the front.
//!
//! rumqttd keeps one log per filter, bounded by `max_segment_count` segments of
//! `max_segment_size` bytes; when a subscriber reads slower than publishers write, the oldest
//! segment goes and the subscriber's cursor "jumps to head" (rumqttd 0.20
//! `segments/mod.rs`, `CommitLog::readv`): the messages in between are never delivered. The
//! router says so only in its own log line and in an alert whose `lost` is always 0
//! (`router/routing.rs`, `forward_device_data`), pushed to alert links only on
//! `Event::SendAlerts`, a type the crate does not export (`lib.rs` re-exports `Alert` but not
//! `Event`; only its private metrics timer, started by `rumqttd::Server`, sends it).
//!
//! What the front does see: every delivery (`Notification::Forward`) carries its position in
//! the filter's log, `(segment, absolute offset)`, and the absolute offset grows by one per
//! message in that log. So a connection remembers the last offset delivered per filter, and a
//! delivery whose offset is further than the next one had messages skipped before it.
//!
//! Which filter's log a delivery comes from: the router's subscription identifier when it set
//! one (MQTT 5), else the one filter of the connection that matches the topic. A topic several
//! of a connection's filters match (an MQTT 3.1.1 client), a filter the connection did not
//! subscribe itself (a resumed session's) and shared subscriptions (whose members each get a
//! part of the log) are not tracked.

use activity_core::topic::matches;

/// The last log offset delivered per filter of one connection. One entry per filter the
/// connection subscribed (bounded by the engine's subscription limit); nothing allocated until
/// the first SUBSCRIBE.
#[derive(Debug, Default)]
pub(crate) struct LogPositions {
    filters: Vec<(String, Option<u64>)>,
    /// Shared subscriptions held (not tracked: each member gets a part of the log).
    shared: Vec<String>,
    /// Whether the connection resumed a session: the router may then deliver from filters
    /// this connection did not subscribe itself, so only deliveries it names are tracked.
    resumed: bool,
    /// Gaps seen on this connection.
    jumps: u64,
    /// Messages skipped on this connection.
    total: u64,
}

/// Messages skipped before a delivery ([`LogPositions::observe`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Skip<'a> {
    /// The filter whose log wrapped.
    pub(crate) filter: &'a str,
    /// Messages skipped right before this delivery.
    pub(crate) skipped: u64,
    /// Gaps on this connection so far, this one included.
    pub(crate) jumps: u64,
    /// Messages skipped on this connection so far, these included.
    pub(crate) total: u64,
}

impl LogPositions {
    /// The connection subscribed `filter` (again: its position is kept).
    pub(crate) fn subscribe(&mut self, filter: &str) {
        if filter.starts_with("$share/") {
            if !self.shared.iter().any(|f| f == filter) {
                self.shared.push(filter.to_owned());
            }
            return;
        }
        if self.filters.iter().any(|(f, _)| f == filter) {
            return;
        }
        self.filters.push((filter.to_owned(), None));
    }

    /// The connection unsubscribed `filter`.
    pub(crate) fn unsubscribe(&mut self, filter: &str) {
        self.filters.retain(|(f, _)| f != filter);
        self.shared.retain(|f| f != filter);
    }

    /// The connection resumed a session the router kept: its deliveries may come from filters
    /// this connection never subscribed, so an unnamed delivery is no longer tracked.
    pub(crate) fn resumed_session(&mut self) {
        self.resumed = true;
    }

    /// A delivery on `topic` at `offset` of the log of `filter` (when the router named it);
    /// returns the filter and how many messages of its log were skipped before this one.
    pub(crate) fn observe(
        &mut self,
        topic: &str,
        filter: Option<&str>,
        offset: u64,
    ) -> Option<Skip<'_>> {
        if self.filters.is_empty() {
            return None;
        }
        let index = match filter {
            Some(named) => self.filters.iter().position(|(f, _)| f == named)?,
            None if self.resumed => return None,
            // The one filter the connection holds: every delivery is from its log (the
            // common case, and a delivery's hot path: no topic matching).
            None if self.filters.len() == 1 && self.shared.is_empty() => 0,
            None => {
                let mut matching = self
                    .filters
                    .iter()
                    .enumerate()
                    .filter(|(_, (f, _))| matches(f, topic))
                    .map(|(i, _)| i);
                let first = matching.next()?;
                if matching.next().is_some() {
                    return None;
                }
                first
            }
        };
        let (name, last) = self.filters.get_mut(index)?;
        let skipped = last.map_or(0, |last| offset.saturating_sub(last).saturating_sub(1));
        // Offsets only grow within a log; an older one (a resent QoS 1 delivery) keeps the
        // position.
        if last.is_none_or(|last| offset > last) {
            *last = Some(offset);
        }
        if skipped == 0 {
            return None;
        }
        self.jumps += 1;
        self.total += skipped;
        Some(Skip {
            filter: name.as_str(),
            skipped,
            jumps: self.jumps,
            total: self.total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `observe` as (filter, skipped).
    fn seen(
        positions: &mut LogPositions,
        topic: &str,
        filter: Option<&str>,
        offset: u64,
    ) -> Option<(String, u64)> {
        positions
            .observe(topic, filter, offset)
            .map(|skip| (skip.filter.to_owned(), skip.skipped))
    }

    #[test]
    fn a_gap_in_a_filters_log_is_counted_once() {
        let mut positions = LogPositions::default();
        assert_eq!(seen(&mut positions, "a/1", None, 5), None);
        positions.subscribe("a/#");
        positions.subscribe("b");
        assert_eq!(seen(&mut positions, "a/1", None, 5), None);
        assert_eq!(seen(&mut positions, "a/2", None, 6), None);
        assert_eq!(
            seen(&mut positions, "a/1", None, 10),
            Some(("a/#".to_owned(), 3))
        );
        assert_eq!(seen(&mut positions, "a/1", None, 11), None);
        // Another filter's log has its own offsets.
        assert_eq!(seen(&mut positions, "b", None, 1), None);
        assert_eq!(
            seen(&mut positions, "b", None, 3),
            Some(("b".to_owned(), 1))
        );
        // A resent delivery does not move the position back.
        assert_eq!(seen(&mut positions, "a/1", None, 9), None);
        assert_eq!(seen(&mut positions, "a/1", None, 12), None);
    }

    #[test]
    fn a_resumed_session_tracks_only_named_deliveries() {
        let mut positions = LogPositions::default();
        positions.subscribe("a/#");
        positions.resumed_session();
        assert_eq!(seen(&mut positions, "a/1", None, 1), None);
        assert_eq!(seen(&mut positions, "a/1", None, 9), None);
        assert_eq!(seen(&mut positions, "a/1", Some("a/#"), 1), None);
        assert_eq!(
            seen(&mut positions, "a/1", Some("a/#"), 3),
            Some(("a/#".to_owned(), 1))
        );
    }

    #[test]
    fn ambiguous_shared_and_unknown_filters_are_not_tracked() {
        let mut positions = LogPositions::default();
        positions.subscribe("a/#");
        positions.subscribe("a/+");
        positions.subscribe("$share/g/c");
        assert_eq!(seen(&mut positions, "a/1", None, 1), None);
        assert_eq!(seen(&mut positions, "a/1", None, 9), None);
        // Named by the router: tracked.
        assert_eq!(seen(&mut positions, "a/1", Some("a/+"), 1), None);
        assert_eq!(
            seen(&mut positions, "a/1", Some("a/+"), 4),
            Some(("a/+".to_owned(), 2))
        );
        assert_eq!(seen(&mut positions, "c", None, 1), None);
        assert_eq!(seen(&mut positions, "c", None, 7), None);
        assert_eq!(positions.jumps, 1);
        assert_eq!(positions.total, 2);
        positions.unsubscribe("a/+");
        assert_eq!(seen(&mut positions, "a/1", Some("a/+"), 9), None);
    }
}
