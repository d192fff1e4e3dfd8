//! Retained messages in a fixed table (MQTT 3.1.1 section 3.3.1.3; MQTT 5.0 sections 3.3.1.3
//! and 3.8.3.1), for a server that keeps them itself (the embassy gateway; `activity-broker`
//! leaves them to rumqttd's router, the tap to its upstream).
//!
//! The rules, in one place:
//!
//! - A PUBLISH with RETAIN 1 and a non-empty payload replaces the retained message of its topic
//!   (or adds one); with an empty payload it removes it (section 3.3.1.3). Its QoS is kept
//!   with it. A PUBLISH with RETAIN 0 leaves the table alone.
//! - A new subscription gets the retained message of every topic its filter matches, with
//!   RETAIN 1 ([`Retained::matching`]); [`sends_retained`] says when, by MQTT 5's Retain
//!   Handling (before MQTT 5: at every SUBSCRIBE, a repeated filter too, section 3.8.4).
//! - The table holds at most `N` topics, each topic and payload together in at most `BYTES`
//!   bytes. A message for a new topic when every entry is taken, or one too large for an entry,
//!   is not kept ([`Retain::Full`], [`Retain::TooLarge`]: the server counts it); the message is
//!   still delivered to the subscribers of the moment. What is kept is never pushed out: a
//!   device's state stays until the device clears it.
//! - MQTT 5's Message Expiry Interval (section 3.3.2.3.3) is kept with the message and the
//!   time it was stored, in whole seconds of the server's clock (`now_s`, a `u32`: it wraps
//!   after 136 years, and the waiting time is taken with `wrapping_sub`, so a clock that wraps
//!   once still counts right). [`RetainedMessage::waited_s`] is what the server passes on as
//!   [`Delivery::waited_ms`](crate::server::Delivery::waited_ms) (the engine counts the
//!   interval down); once [`RetainedMessage::is_expired`], the message is not sent and the
//!   server removes it ([`Retained::remove`]); a new topic also takes the entry of an expired
//!   message when no entry is free. An interval of 0 has passed at once: that PUBLISH clears
//!   the topic like an empty payload.
//!
//! Memory: `N * (BYTES + 13)` bytes, each entry rounded up to the alignment of 4.

use core::num::NonZeroU32;

use crate::QoS;
use crate::codec::{RetainHandling, SubscriptionOptions};
use crate::topic::matches;

/// What [`Retained::handle_publish`] did with a PUBLISH that had RETAIN 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Retain {
    /// Kept in entry `.0` (for [`Retained::get`]), as the first retained message of its topic.
    Stored(usize),
    /// Kept in entry `.0`, in place of the topic's earlier one.
    Replaced(usize),
    /// An empty payload (or a Message Expiry Interval of 0) removed the topic's retained
    /// message.
    Cleared,
    /// An empty payload (or an interval of 0) for a topic that had none: nothing to do.
    NothingToClear,
    /// Not kept: topic and payload are larger than an entry (the topic's earlier message, if
    /// any, is removed, since it is no longer the last one).
    TooLarge,
    /// Not kept: every entry holds another topic.
    Full,
}

impl Retain {
    /// Whether the message could not be kept (the server counts these).
    pub const fn is_dropped(self) -> bool {
        matches!(self, Retain::TooLarge | Retain::Full)
    }

    /// The entry the message was kept in, if it was.
    pub const fn entry(self) -> Option<usize> {
        match self {
            Retain::Stored(entry) | Retain::Replaced(entry) => Some(entry),
            _ => None,
        }
    }
}

/// One retained message, borrowed from the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RetainedMessage<'a> {
    /// Its topic name.
    pub topic: &'a str,
    /// Its payload (never empty).
    pub payload: &'a [u8],
    /// The QoS it was published with.
    pub qos: QoS,
    /// Its MQTT 5 Message Expiry Interval as published, in seconds (`None`: it never expires).
    pub expiry: Option<u32>,
    /// When it was stored: the `now_s` given to [`Retained::handle_publish`].
    pub stored_s: u32,
}

impl RetainedMessage<'_> {
    /// The whole seconds it has waited in the table at `now_s` (the clock of
    /// [`Retained::handle_publish`]; correct across one wrap of the `u32`).
    pub const fn waited_s(&self, now_s: u32) -> u32 {
        now_s.wrapping_sub(self.stored_s)
    }

    /// Whether its Message Expiry Interval has passed at `now_s`: it waited at least that
    /// many whole seconds (the engine's rule for any delivery, so the two agree).
    pub const fn is_expired(&self, now_s: u32) -> bool {
        match self.expiry {
            Some(expiry) => self.waited_s(now_s) >= expiry,
            None => false,
        }
    }
}

/// Whether a subscription made with `options` gets the retained messages now: Retain Handling
/// 0 always, 1 only when the client had no subscription of this filter before (`is_new`), 2
/// never (MQTT 5.0 section 3.8.3.1; before MQTT 5 the options say 0).
pub const fn sends_retained(options: SubscriptionOptions, is_new: bool) -> bool {
    match options.retain_handling {
        RetainHandling::OnSubscribe => true,
        RetainHandling::OnNewSubscribe => is_new,
        RetainHandling::Never => false,
    }
}

/// One entry: topic then payload in `text`; an empty topic marks a free entry (a topic name
/// is never empty, section 4.7.3).
struct Entry<const BYTES: usize> {
    text: [u8; BYTES],
    stored_s: u32,
    /// Never 0: a message with interval 0 is not kept (see the module docs).
    expiry: Option<NonZeroU32>,
    topic_len: u16,
    payload_len: u16,
    qos: QoS,
}

impl<const BYTES: usize> Entry<BYTES> {
    const fn new() -> Self {
        Entry {
            text: [0; BYTES],
            stored_s: 0,
            expiry: None,
            topic_len: 0,
            payload_len: 0,
            qos: QoS::AtMostOnce,
        }
    }

    fn is_free(&self) -> bool {
        self.topic_len == 0
    }

    fn topic(&self) -> &str {
        let bytes = self
            .text
            .get(..usize::from(self.topic_len))
            .unwrap_or_default();
        // Only a `&str` is ever stored; an empty topic for anything else.
        core::str::from_utf8(bytes).unwrap_or_default()
    }

    fn message(&self) -> Option<RetainedMessage<'_>> {
        if self.is_free() {
            return None;
        }
        let start = usize::from(self.topic_len);
        let end = start + usize::from(self.payload_len);
        Some(RetainedMessage {
            topic: self.topic(),
            payload: self.text.get(start..end).unwrap_or_default(),
            qos: self.qos,
            expiry: self.expiry.map(NonZeroU32::get),
            stored_s: self.stored_s,
        })
    }
}

/// The retained messages of up to `N` topics, `BYTES` bytes of topic and payload each (see
/// the module docs).
pub struct Retained<const N: usize, const BYTES: usize> {
    entries: [Entry<BYTES>; N],
}

impl<const N: usize, const BYTES: usize> Default for Retained<N, BYTES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const BYTES: usize> Retained<N, BYTES> {
    /// An empty table (all zero bits: fit for a `static` in `.bss`).
    pub const fn new() -> Self {
        Retained {
            entries: [const { Entry::new() }; N],
        }
    }

    /// How many topics it can hold.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// How many topics have a retained message.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| !e.is_free()).count()
    }

    /// Whether no topic has a retained message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every entry is taken.
    pub fn is_full(&self) -> bool {
        self.entries.iter().all(|e| !e.is_free())
    }

    /// Applies a PUBLISH with RETAIN 1 and Message Expiry Interval `expiry` (MQTT 5; `None`
    /// without one), received at `now_s` (see the module docs). The topic is a valid topic
    /// name: the engine routes no other.
    pub fn handle_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        expiry: Option<u32>,
        now_s: u32,
    ) -> Retain {
        let held = self
            .entries
            .iter()
            .position(|e| e.topic() == topic && !e.is_free());
        if payload.is_empty() || expiry == Some(0) {
            return match held.and_then(|i| self.entries.get_mut(i)) {
                Some(entry) => {
                    entry.topic_len = 0;
                    Retain::Cleared
                }
                None => Retain::NothingToClear,
            };
        }
        let fits = topic.len() + payload.len() <= BYTES
            && u16::try_from(topic.len()).is_ok()
            && u16::try_from(payload.len()).is_ok();
        if !fits {
            if let Some(entry) = held.and_then(|i| self.entries.get_mut(i)) {
                entry.topic_len = 0;
            }
            return Retain::TooLarge;
        }
        let (slot, verdict) = match held {
            Some(i) => (i, Retain::Replaced(i)),
            // An expired message makes room like a free entry.
            None => match self
                .entries
                .iter()
                .position(|e| e.message().is_none_or(|m| m.is_expired(now_s)))
            {
                Some(i) => (i, Retain::Stored(i)),
                None => return Retain::Full,
            },
        };
        let Some(entry) = self.entries.get_mut(slot) else {
            return Retain::Full;
        };
        let (topic_room, payload_room) = entry.text.split_at_mut(topic.len());
        topic_room.copy_from_slice(topic.as_bytes());
        if let Some(room) = payload_room.get_mut(..payload.len()) {
            room.copy_from_slice(payload);
        }
        // Both fit in u16: checked above.
        entry.topic_len = u16::try_from(topic.len()).unwrap_or(0);
        entry.payload_len = u16::try_from(payload.len()).unwrap_or(0);
        entry.qos = qos;
        entry.expiry = expiry.and_then(NonZeroU32::new);
        entry.stored_s = now_s;
        verdict
    }

    /// The retained message in entry `index` (`0..capacity()`), if it holds one.
    pub fn get(&self, index: usize) -> Option<RetainedMessage<'_>> {
        self.entries.get(index)?.message()
    }

    /// Removes the retained message in entry `index` (an expired one, see the module docs).
    pub fn remove(&mut self, index: usize) {
        if let Some(entry) = self.entries.get_mut(index) {
            entry.topic_len = 0;
        }
    }

    /// The entries whose topic `filter` matches, with their index (for [`Retained::get`]).
    pub fn matching<'a>(
        &'a self,
        filter: &'a str,
    ) -> impl Iterator<Item = (usize, RetainedMessage<'a>)> + 'a {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((i, e.message()?)))
            .filter(move |(_, m)| matches(filter, m.topic))
    }
}

#[cfg(test)]
mod tests;
