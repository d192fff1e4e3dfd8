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
//! Every refusal passes through [`refused`], the one place where an event about it would go.

use super::{Counter, Output};

/// What a client asks to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Action {
    /// Publish on a topic name (the client's publishes and its last will).
    Publish,
    /// Subscribe to a topic filter (a shared subscription's as sent, `$share/<group>/...`).
    Subscribe,
}

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

/// A refusal of the access rules: counted, and the one place where an event about it (the
/// `access/denied` event) would be emitted.
pub(super) fn refused(access: Access<'_>, out: &mut impl Output) {
    debug!("server: access refused");
    out.count(match access.action {
        Action::Publish => Counter::PublishNotAllowed,
        Action::Subscribe => Counter::SubscriptionNotAllowed,
    });
}

/// Asks the rules about `access`; a refusal is [`refused`]. True when allowed.
pub(super) fn check(access: Access<'_>, out: &mut impl Output) -> bool {
    let allowed = out.is_allowed(access);
    if !allowed {
        refused(access, out);
    }
    allowed
}
