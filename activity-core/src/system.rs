//! System topics and the loop guard.
//!
//! Events go to nine topics under a configurable prefix (default [`DEFAULT_PREFIX`], `SYSTEM`):
//! `<prefix>/presence/connected`, `<prefix>/presence/disconnected`,
//! `<prefix>/subscription/subscribed`, `<prefix>/subscription/unsubscribed`,
//! `<prefix>/message`, `<prefix>/msgack`, `<prefix>/presence/refused`, `<prefix>/access/denied`
//! and `<prefix>/message/dropped`.
//!
//! The rules that keep events from feeding on themselves:
//! - no `message` event for a publish on a system topic (only the broker publishes there);
//! - no `msgack` for the delivery of a system event;
//! - nothing at all for the reserved [`broker`](crate::client_id::RESERVED_CLIENT_ID) client;
//! - ordinary clients may not publish on system topics ([`SystemTopics::may_publish`]);
//! - no `dropped` event about a message on a system topic or a filter that receives events
//!   ([`Tracker::handle_dropped`](crate::tracker::Tracker::handle_dropped)).
//!
//! And the rule that keeps events out of everyday subscriptions: a filter whose first level is
//! a wildcard (`#`, `+/...`) receives no events, only one that names the prefix does
//! (`SYSTEM/#`), as MQTT keeps `$SYS` out of `#` (section 4.7.2) although the prefix does not
//! start with `$` ([`SystemTopics::filter_receives_event`]). One setting restores the older
//! behaviour ([`SystemTopics::with_wildcards_receive_events`]).
//!
//! Topic names and filters follow MQTT 3.1.1 section 4.7.

use core::fmt;

use crate::client_id::is_reserved;
use crate::event::EventKind;
use crate::topic;

/// The default topic prefix of activity events.
pub const DEFAULT_PREFIX: &str = "SYSTEM";

/// The longest prefix, in bytes, that [`SystemTopics`] accepts.
pub const PREFIX_CAPACITY: usize = 48;

/// The longest system topic: the prefix, a `/` and the longest suffix
/// (`subscription/unsubscribed`, 25 bytes).
pub const TOPIC_CAPACITY: usize = PREFIX_CAPACITY + 1 + 25;

/// Why a topic prefix was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PrefixError {
    /// The prefix is empty.
    Empty,
    /// The prefix is longer than [`PREFIX_CAPACITY`] bytes.
    TooLong,
    /// The prefix holds a wildcard (`+`, `#`), U+0000, or starts or ends with `/`.
    Invalid,
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrefixError::Empty => f.write_str("the system topic prefix is empty"),
            PrefixError::TooLong => {
                write!(
                    f,
                    "the system topic prefix is longer than {PREFIX_CAPACITY} bytes"
                )
            }
            PrefixError::Invalid => f.write_str(
                "the system topic prefix must be a topic name without wildcards that neither \
                 starts nor ends with `/`",
            ),
        }
    }
}

impl core::error::Error for PrefixError {}

/// The system topics under one prefix, and the rules about them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemTopics {
    /// At most 48 bytes: a one-byte length.
    prefix: heapless::String<PREFIX_CAPACITY, u8>,
    /// Whether a filter whose first level is a wildcard receives events too.
    wildcards_receive_events: bool,
}

impl Default for SystemTopics {
    fn default() -> Self {
        let mut prefix = heapless::String::new();
        // DEFAULT_PREFIX (6 bytes) fits PREFIX_CAPACITY (48 bytes).
        let _ = prefix.push_str(DEFAULT_PREFIX);
        SystemTopics {
            prefix,
            wildcards_receive_events: false,
        }
    }
}

impl SystemTopics {
    /// System topics under `prefix`, e.g. `"SYSTEM"` or `"acme/SYSTEM"`.
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        if prefix.is_empty() {
            return Err(PrefixError::Empty);
        }
        if prefix.len() > PREFIX_CAPACITY {
            return Err(PrefixError::TooLong);
        }
        if topic::validate_topic_name(prefix).is_err()
            || prefix.starts_with('/')
            || prefix.ends_with('/')
        {
            return Err(PrefixError::Invalid);
        }
        let mut stored = heapless::String::new();
        stored.push_str(prefix).map_err(|_| PrefixError::TooLong)?;
        Ok(SystemTopics {
            prefix: stored,
            wildcards_receive_events: false,
        })
    }

    /// The same topics, where a filter whose first level is a wildcard (`#`, `+/message`)
    /// receives events too when `on` (the behaviour before the rule of the [module
    /// docs](self)); off by default.
    #[must_use]
    pub fn with_wildcards_receive_events(mut self, on: bool) -> Self {
        self.wildcards_receive_events = on;
        self
    }

    /// Whether a filter whose first level is a wildcard receives events (see
    /// [`SystemTopics::with_wildcards_receive_events`]).
    pub fn wildcards_receive_events(&self) -> bool {
        self.wildcards_receive_events
    }

    /// Whether a subscription to `filter` receives the event published on `topic` (a system
    /// topic): the filter matches it, and unless
    /// [`wildcards_receive_events`](SystemTopics::wildcards_receive_events), its first level
    /// is no wildcard. A shared subscription is judged by the filter it shares.
    pub fn filter_receives_event(&self, filter: &str, topic: &str) -> bool {
        let filter = topic::shared_filter(filter).1;
        (self.wildcards_receive_events || !crate::topic::starts_with_wildcard(filter))
            && topic::matches(filter, topic)
    }

    /// The prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic that events of `kind` are published on.
    pub fn topic(&self, kind: EventKind) -> heapless::String<TOPIC_CAPACITY> {
        let mut out = heapless::String::new();
        // prefix <= PREFIX_CAPACITY and every suffix <= 25 bytes: TOPIC_CAPACITY holds them.
        let _ = out.push_str(&self.prefix);
        let _ = out.push('/');
        let _ = out.push_str(kind.topic_suffix());
        out
    }

    /// Whether `topic` is the prefix itself or lies below it: only the broker publishes there.
    pub fn is_system_topic(&self, topic: &str) -> bool {
        match topic.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// Whether a subscription to `filter` would receive any activity event.
    ///
    /// True for `SYSTEM/#`, `SYSTEM/+/connected` and `$share/g/SYSTEM/#`; for `#` or
    /// `+/message` only with [`SystemTopics::with_wildcards_receive_events`] (then access
    /// control for events applies to those too).
    pub fn filter_receives_events(&self, filter: &str) -> bool {
        EventKind::ALL
            .iter()
            .any(|kind| self.filter_receives_event(filter, &self.topic(*kind)))
    }

    /// Whether `client_id` may publish on `topic`: anyone may publish outside the system topics,
    /// and only the reserved `broker` client inside them.
    pub fn may_publish(&self, client_id: &str, topic: &str) -> bool {
        is_reserved(client_id) || !self.is_system_topic(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topics_are_the_documented_ones() {
        let topics = SystemTopics::default();
        let expected = [
            (EventKind::Connected, "SYSTEM/presence/connected"),
            (EventKind::Disconnected, "SYSTEM/presence/disconnected"),
            (EventKind::Subscribed, "SYSTEM/subscription/subscribed"),
            (EventKind::Unsubscribed, "SYSTEM/subscription/unsubscribed"),
            (EventKind::Message, "SYSTEM/message"),
            (EventKind::MsgAck, "SYSTEM/msgack"),
            (EventKind::Refused, "SYSTEM/presence/refused"),
            (EventKind::Denied, "SYSTEM/access/denied"),
            (EventKind::Dropped, "SYSTEM/message/dropped"),
        ];
        for (kind, topic) in expected {
            assert_eq!(topics.topic(kind).as_str(), topic);
            assert!(topics.is_system_topic(topic));
        }
    }

    #[test]
    fn custom_prefix_applies_to_every_topic() {
        let topics = SystemTopics::new("acme/events").unwrap();
        assert_eq!(
            topics.topic(EventKind::MsgAck).as_str(),
            "acme/events/msgack"
        );
        assert!(topics.is_system_topic("acme/events"));
        assert!(topics.is_system_topic("acme/events/anything/else"));
        assert!(!topics.is_system_topic("acme/eventsx/message"));
        assert!(!topics.is_system_topic("SYSTEM/message"));
    }

    #[test]
    fn longest_prefix_fits_every_topic() {
        let prefix = "p".repeat(PREFIX_CAPACITY);
        let topics = SystemTopics::new(&prefix).unwrap();
        for kind in EventKind::ALL {
            let topic = topics.topic(kind);
            assert_eq!(topic.len(), PREFIX_CAPACITY + 1 + kind.topic_suffix().len());
        }
        assert_eq!(
            SystemTopics::new(&"p".repeat(PREFIX_CAPACITY + 1)),
            Err(PrefixError::TooLong)
        );
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert_eq!(SystemTopics::new(""), Err(PrefixError::Empty));
        for bad in ["SYS/#", "SYS/+", "+", "/SYSTEM", "SYSTEM/", "a\0b"] {
            assert_eq!(SystemTopics::new(bad), Err(PrefixError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn topics_outside_the_prefix_are_not_system_topics() {
        let topics = SystemTopics::default();
        for topic in [
            "SYSTEMS",
            "SYSTEMx/a",
            "system/message",
            "a/SYSTEM/message",
            "$SYS/x",
        ] {
            assert!(!topics.is_system_topic(topic), "{topic}");
        }
        assert!(topics.is_system_topic("SYSTEM"));
    }

    #[test]
    fn only_the_broker_publishes_on_system_topics() {
        let topics = SystemTopics::default();
        assert!(topics.may_publish("broker", "SYSTEM/message"));
        assert!(!topics.may_publish("sensor-1", "SYSTEM/message"));
        assert!(!topics.may_publish("sensor-1", "SYSTEM/presence/connected"));
        assert!(!topics.may_publish("sensor-1", "SYSTEM"));
        assert!(topics.may_publish("sensor-1", "devices/1/state"));
    }

    #[test]
    fn filters_that_receive_events_are_recognised() {
        let old = SystemTopics::default().with_wildcards_receive_events(true);
        let topics = SystemTopics::default();
        for filter in ["#", "+/message", "+/+/+"] {
            assert!(old.filter_receives_events(filter), "{filter}");
            assert!(!topics.filter_receives_events(filter), "{filter}");
        }
        for filter in [
            "SYSTEM/#",
            "SYSTEM/+",
            "SYSTEM/+/connected",
            "SYSTEM/msgack",
            "$share/g/SYSTEM/#",
        ] {
            assert!(old.filter_receives_events(filter), "{filter}");
            assert!(topics.filter_receives_events(filter), "{filter}");
        }
        assert!(!topics.filter_receives_events("$share/g/#"));
        for filter in [
            "$SYS/#",
            "SYSTEM/other",
            "devices/#",
            "SYSTEM/presence",
            "+",
            "+/+/+/+",
        ] {
            assert!(!old.filter_receives_events(filter), "{filter}");
            assert!(!topics.filter_receives_events(filter), "{filter}");
        }
        let nested = SystemTopics::new("acme/SYSTEM").unwrap();
        assert!(nested.filter_receives_events("acme/#"));
        assert!(!nested.filter_receives_events("+/SYSTEM/#"));
        let dollar = SystemTopics::new("$ACTIVITY").unwrap();
        assert!(!dollar.filter_receives_events("#"));
        assert!(dollar.filter_receives_events("$ACTIVITY/#"));
    }
}
