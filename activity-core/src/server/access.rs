//! Topic access control: what the engine asks the driver's rules about each publish and
//! subscribe of a client, and what it does with a refusal.
//!
//! The rules themselves (an ordered list with `%u` / `%c`, for instance) belong to the driver,
//! which owns memory for them: the engine asks [`Output::is_allowed`] once per publish (after
//! the system-topic rules, which stay the engine's and come first) and once per SUBSCRIBE
//! filter, and turns a refusal into the protocol's answer in every mode alike:
//!
//! - a refused publish is dropped, counted as [`Counter::PublishNotAllowed`], gets no `message`
//!   event, and the client stays (its QoS 1 / 2 flow is answered as usual: MQTT 3.1.1 has no
//!   negative acknowledgement);
//! - a refused filter gets SUBACK 0x80 (MQTT 3.1.1) or 0x87 not authorized (MQTT 5), counted as
//!   [`Counter::SubscriptionNotAllowed`].
//!
//! The system-topic rules refuse in the same way (counted as [`Counter::PublishDenied`] and
//! [`Counter::SubscriptionDenied`]). Every refusal passes through [`refused`], which counts
//! it and emits the `denied` event (within the connection's rate bound).

use crate::acks::AckStore;
use crate::event::EventKind;
use crate::tracker::{Reported, Tracker};

use super::{Counter, Output};

/// What a client asks to do with a topic (also the `action` of a `denied` event).
pub use crate::event::Action;

/// One question of the engine to the access rules (see [`Output::is_allowed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Access<'a> {
    /// Publish or subscribe.
    pub action: Action,
    /// The client's id (the assigned one for an empty id).
    pub client_id: &'a str,
    /// The topic name of a publish, or the filter of a subscription.
    pub topic: &'a str,
}

/// A refusal of `action` on `topic` (the access rules, or the system-topic rules), counted as
/// `counter`: the one place where the `denied` event is emitted (held back and counted past the
/// connection's rate bound).
pub(super) fn refused<A: AckStore>(
    tracker: &mut Tracker<A>,
    now: u64,
    action: Action,
    topic: &str,
    counter: Counter,
    out: &mut impl Output,
) {
    debug!("server: access refused");
    out.count(counter);
    report(
        tracker.handle_denied(now, action, topic),
        EventKind::Denied,
        out,
    );
}

/// Emits what the tracker `reported` about a refusal or a drop, or counts it as held back.
pub(super) fn report(reported: Reported<'_>, kind: EventKind, out: &mut impl Output) {
    match reported {
        Reported::Event(event) => {
            // Not delivered to the client itself on a router that leaves that to the engine
            // (the gateway): the client may be in the middle of an answer.
            let _ = out.event(&event);
        }
        Reported::Suppressed => out.count(Counter::EventSuppressed(kind)),
        Reported::Nothing => {}
    }
}

/// Asks the topic access rules about the client's `action` on `topic`; a refusal is
/// [`refused`]. True when allowed.
pub(super) fn check<A: AckStore>(
    tracker: &mut Tracker<A>,
    now: u64,
    action: Action,
    topic: &str,
    out: &mut impl Output,
) -> bool {
    let access = Access {
        action,
        client_id: tracker.client_id(),
        topic,
    };
    let allowed = out.is_allowed(access);
    if !allowed {
        let counter = match action {
            Action::Publish => Counter::PublishNotAllowed,
            Action::Subscribe => Counter::SubscriptionNotAllowed,
        };
        refused(tracker, now, action, topic, counter, out);
    }
    allowed
}
