//! Sessions that outlive their connection (MQTT 5.0 sections 3.1.2.11.2, 3.1.3.2.2 and
//! 4.1): the session expiry the server grants, the kept state of a connection whose client has
//! gone, the delayed will, and what the router does with a session at CONNECT and at the end.
//!
//! When a connection ends and its session expiry is not 0 (MQTT 3.1 and 3.1.1: not
//! [`SESSION_NEVER_EXPIRES`] either, which their clean session 0 means), or its will waits for
//! a Will Delay Interval, the
//! [`Connection`] becomes *kept* ([`Connection::is_kept`]) instead of closed: the transport is
//! gone, but the driver holds the engine (and the client id) until
//!
//! - [`Connection::poll_timeout`] passes: [`Connection::handle_timeout`] publishes the delayed
//!   will when its delay is over, and at the session's expiry ends it with
//!   [`Route::SessionExpired`] (the will goes first if it still waits: the session ended
//!   earlier than the delay, 5.0 section 3.1.3.2.2) and a second `disconnected` event, reason
//!   `session_expired` (the first one, of the connection, ended the client's presence; this
//!   one ends its session);
//! - the client id connects again: [`Connection::handle_resume`] with the new CONNECT's clean
//!   start. The will is dropped when the session resumes, and published when a clean start
//!   ends it; the new connection's driver deals with the router's session as the
//!   [`ConnectRequest`] says;
//! - the driver has no room to keep it: [`Connection::handle_discard`] ends it at once, as if
//!   it had expired (counted as [`Counter::SessionNotKept`]; the event says
//!   `session_expired` too: the session is gone).
//!
//! A relay never keeps a session: its upstream broker keeps sessions and publishes wills.

use crate::codec::{Connect, Properties, Property, RetainHandling, SubscriptionOptions, Version};
use crate::tracker::PublishInfo;

use super::io::session_expiry_of;
use super::{
    ConnectRequest, Connection, Counter, LimitSource, Output, Own, Route, SESSION_NEVER_EXPIRES,
    SessionStore, State, is_plain, route_publish,
};
use crate::acks::AckStore;

impl ConnectRequest<'_> {
    /// Whether the router discards a session it kept for the client id before this connection
    /// starts (clean start).
    pub const fn discards_session(&self) -> bool {
        self.clean_start
    }

    /// Whether the router must keep the session when the connection ends (the session expiry
    /// is not 0). [`Route::End`] says the final expiry: a DISCONNECT may lower it to 0, and
    /// then the router discards the session at the end.
    pub const fn keeps_session(&self) -> bool {
        self.session_expiry > 0
    }
}

/// Copies the subscriptions of `from` into `into`, with their options and identifiers, up to
/// `max` filters (both stores serve the same limits, so a session fits again).
fn copy_subscriptions(from: &impl SessionStore, into: &mut impl SessionStore, max: usize) {
    from.for_each_subscription(&mut |filter, options, id| {
        let held = into.subscription(filter).is_some();
        if (held || into.subscription_count() < max)
            && into.insert_subscription(filter, options.qos).is_ok()
        {
            // A store that keeps no options serves the filter with the defaults.
            let _ = into.set_subscription_extras(filter, options, id);
        }
    });
}

/// Milliseconds after `now` that `seconds` last, saturating.
fn after(now: u64, seconds: u32) -> u64 {
    now.saturating_add(u64::from(seconds) * 1_000)
}

impl<A: AckStore, S: SessionStore, const KEEP: bool, L: LimitSource> Connection<A, S, KEEP, L> {
    /// The session expiry the server grants `connect`: what it asks for (MQTT 3.1.1: 0 or
    /// never), capped at [`Limits::max_session_expiry`](super::Limits::max_session_expiry).
    pub(super) fn granted_expiry(&self, connect: &Connect<'_>) -> u32 {
        session_expiry_of(connect).min(self.max_session_expiry())
    }

    /// The longest session expiry granted: none without `KEEP`.
    fn max_session_expiry(&self) -> u32 {
        if KEEP {
            self.limits().max_session_expiry
        } else {
            0
        }
    }

    /// The CONNACK properties of the session (5.0 section 3.2.2.3): the granted session expiry
    /// when it is not what the client asked for, the Server Keep Alive when configured, the
    /// Receive Maximum when below the default 65,535.
    pub(super) fn push_session_properties<const N: usize>(
        &self,
        connect: &Connect<'_>,
        list: &mut heapless::Vec<Property<'_>, N>,
    ) {
        let granted = self.granted_expiry(connect);
        if granted != session_expiry_of(connect) {
            let _ = list.push(Property::SessionExpiryInterval(granted));
        }
        if let Some(seconds) = self.limits().server_keep_alive {
            let _ = list.push(Property::ServerKeepAlive(seconds));
        }
        let receive_maximum = u16::try_from(self.limits().max_inbound_qos2).unwrap_or(u16::MAX);
        if receive_maximum < u16::MAX {
            // 0 is a protocol error on the wire (5.0 section 3.2.2.3.3): at least 1 is said.
            let _ = list.push(Property::ReceiveMaximum(receive_maximum.max(1)));
        }
    }

    /// The Session Expiry Interval of the client's DISCONNECT (5.0 section 3.14.2.2.2)
    /// replaces the granted one, capped like it; false for a change from 0 to more, a protocol
    /// error. (Granted 0 means the CONNECT asked for 0, unless the server grants no more than 0
    /// anyway: then any value becomes 0.)
    pub(super) fn disconnect_expiry(&mut self, properties: &Properties<'_>) -> bool {
        if let Some(expiry) = properties.session_expiry_interval() {
            if self.session_expiry == 0 && expiry != 0 && self.max_session_expiry() != 0 {
                return false;
            }
            self.session_expiry = expiry.min(self.max_session_expiry());
        }
        true
    }

    /// The keep-alive the engine applies to `connect`: the configured Server Keep Alive for an
    /// MQTT 5 client (it was told in the CONNACK), the client's own otherwise.
    pub(super) fn granted_keep_alive(&self, connect: &Connect<'_>) -> u16 {
        match self.limits().server_keep_alive {
            Some(seconds) if self.version == Version::V5 => seconds,
            _ => connect.keep_alive,
        }
    }

    /// The will of a connection that just ended because of `cause` (with `will_due` saying
    /// whether the cause publishes it), and whether the session is kept: the will goes now
    /// unless it is delayed into a kept session. Called by `end` after the state left
    /// `Connected`, before the `disconnected` event.
    pub(super) fn will_at_end(
        &mut self,
        now: u64,
        will_due: bool,
        may_keep: bool,
        out: &mut impl Output,
    ) {
        let will_due = will_due && self.store.will().is_some();
        // The will waits the lesser of its delay and the session's life (5.0 3.1.3.2.2).
        let delay = self.will_delay.min(self.session_expiry);
        if KEEP && will_due && may_keep && self.keeps_sessions && delay > 0 {
            self.will_at = Some(after(now, delay));
        } else {
            self.will_at = None;
            if will_due {
                self.publish_will(now, out);
            }
        }
    }

    /// Makes an ended connection kept when its session outlives it or its will waits; called
    /// by `end` after [`Route::End`]. False: the connection is closed.
    pub(super) fn keep(&mut self, now: u64, may_keep: bool) -> bool {
        let expires = self.session_expiry > 0 && self.session_expiry != SESSION_NEVER_EXPIRES;
        if !(KEEP
            && may_keep
            && self.keeps_sessions
            && (expires || self.kept_forever() || self.will_at.is_some()))
        {
            return false;
        }
        self.kept_until = expires.then(|| after(now, self.session_expiry));
        self.state = State::Kept;
        debug!("server: session kept after its connection");
        true
    }

    /// Whether the connection has ended but its session is kept (MQTT 5: a session expiry
    /// that is not 0, or a delayed will): the transport is gone; keep the engine
    /// (and the client id) until [`Connection::poll_timeout`] passes and
    /// [`Connection::handle_timeout`], or [`Connection::handle_resume`] (the client id
    /// connects again) or [`Connection::handle_discard`] (no room to keep it) closes it.
    pub fn is_kept(&self) -> bool {
        KEEP && self.state == State::Kept
    }

    /// The deadline of a kept session: its will or its expiry, whichever is first.
    pub(super) fn kept_deadline(&self) -> Option<u64> {
        match (self.will_at, self.kept_until) {
            (Some(will), Some(expiry)) => Some(will.min(expiry)),
            (will, expiry) => will.or(expiry),
        }
    }

    /// Whether the session never expires and is kept here all the same: MQTT 5 only, for its
    /// subscription options and identifiers, which the router forgets (MQTT 3.1 and 3.1.1
    /// have none: the router alone keeps their sessions).
    fn kept_forever(&self) -> bool {
        self.session_expiry == SESSION_NEVER_EXPIRES && self.version.is_v5()
    }

    /// A kept session at `now`: the delayed will when due; the end at its expiry.
    pub(super) fn kept_timeout(&mut self, now: u64, out: &mut impl Output) {
        if self.will_at.is_some_and(|at| now >= at) {
            self.will_at = None;
            out.count(Counter::WillDelayed);
            self.publish_will(now, out);
        }
        if self.kept_until.is_some_and(|at| now >= at) {
            out.count(Counter::SessionExpired);
            self.expire(now, out);
        } else if self.kept_until.is_none() && self.will_at.is_none() && !self.kept_forever() {
            // An MQTT 3.1.1 session (the router keeps it) whose will has gone: nothing is left
            // to wait for.
            self.finish_kept();
        }
    }

    /// The client id of a kept session connects again (the driver's registry saw it):
    /// a clean start ends the session, and its delayed will goes now; otherwise the session
    /// resumes on the new connection and the will is dropped (5.0 section 3.1.3.2.2), and its
    /// subscriptions, with their MQTT 5 options and identifiers, go into `resumed`, a store
    /// the driver hands to the new connection's [`Connection::handle_session_resumed`]. The
    /// new connection's [`ConnectRequest`] tells the router what to do with the session.
    /// Does nothing unless [`Connection::is_kept`].
    pub fn handle_resume(
        &mut self,
        now: u64,
        clean_start: bool,
        resumed: &mut impl SessionStore,
        out: &mut impl Output,
    ) {
        if !self.is_kept() {
            return;
        }
        if clean_start && self.will_at.take().is_some() {
            out.count(Counter::WillDelayed);
            self.publish_will(now, out);
        }
        if !clean_start {
            copy_subscriptions(&self.store, resumed, self.limits().max_subscriptions);
        }
        self.finish_kept();
    }

    /// The subscriptions of the kept session this connection resumes (from
    /// [`Connection::handle_resume`] of the kept one), before
    /// [`Connection::handle_connect_answer`]: when the answer says the session is present,
    /// they are this connection's, with their MQTT 5 options and identifiers (5.0 section
    /// 3.1.2.4: the session state includes the subscriptions), and each is routed again
    /// ([`Route::Subscribe`] with Retain Handling 2: a router that holds the filter already
    /// learns its options, and no retained message is sent, as for any resumed session);
    /// otherwise (no session, or a clean start) they are forgotten. No `subscribed` event:
    /// nothing new was subscribed. Does nothing unless [`Connection::is_authorizing`], nor
    /// without `KEEP` (a server that keeps no session resumes none: its engine links none of
    /// this).
    pub fn handle_session_resumed(&mut self, kept: &impl SessionStore) {
        if !KEEP || self.state != State::Authorizing {
            return;
        }
        let max_subscriptions = self.limits().max_subscriptions;
        copy_subscriptions(kept, &mut self.store, max_subscriptions);
        self.resumed = self.store.subscription_count() > 0;
    }

    /// At the CONNACK: the resumed subscriptions stay and are routed again when the session
    /// is present, and are forgotten otherwise (the will of `connect` is kept again).
    pub(super) fn settle_resumed(
        &mut self,
        session_present: bool,
        connect: &Connect<'_>,
        out: &mut impl Output,
    ) {
        // Without `KEEP` nothing is ever resumed (see `handle_session_resumed`).
        if !KEEP || !core::mem::take(&mut self.resumed) {
            return;
        }
        if !session_present {
            self.store.clear();
            if let Some(will) = &connect.will {
                // It was kept at the CONNECT: the store has room for it again.
                let _ = self.store.set_will(will);
            }
            return;
        }
        self.store
            .for_each_subscription(&mut |filter, options, id| {
                let plain = is_plain(options, id);
                let options = SubscriptionOptions {
                    retain_handling: RetainHandling::Never,
                    ..options
                };
                // rumqttd kept the session, so it holds the filter already.
                let _ = out.route(Route::Subscribe {
                    filter,
                    options,
                    plain,
                    is_new: false,
                });
            });
    }

    /// Ends a kept session at once because the driver has no room to keep it: the delayed will
    /// goes now, the router discards the session ([`Route::SessionExpired`]). Counted as
    /// [`Counter::SessionNotKept`]. Does nothing unless [`Connection::is_kept`].
    pub fn handle_discard(&mut self, now: u64, out: &mut impl Output) {
        if !self.is_kept() {
            return;
        }
        out.count(Counter::SessionNotKept);
        if self.will_at.take().is_some() {
            self.publish_will(now, out);
        }
        self.expire(now, out);
    }

    /// The kept session ends: its delayed will goes, the `disconnected` event with reason
    /// `session_expired` says so (the client's presence ended with its connection's own
    /// `disconnected`; this one ends the session), and the router discards it.
    fn expire(&mut self, now: u64, out: &mut impl Output) {
        if self.will_at.take().is_some() {
            out.count(Counter::WillDelayed);
            self.publish_will(now, out);
        }
        if let Some(event) = self.tracker.handle_session_expired(now) {
            // The client is gone: the event has no copy for it.
            let _ = out.event(&event);
        }
        let _ = out.route(Route::SessionExpired);
        debug!("server: kept session ended");
        self.finish_kept();
    }

    fn finish_kept(&mut self) {
        self.will_at = None;
        self.kept_until = None;
        self.state = State::Closed;
        self.store.clear();
    }

    /// Routes the kept will (the client is gone: no copy to it) and forgets it.
    pub(super) fn publish_will(&mut self, now: u64, out: &mut impl Output) {
        if let Some(will) = self.store.will() {
            let info = PublishInfo {
                topic: will.topic,
                payload: will.message,
                qos: will.qos,
                retain: will.retain,
            };
            // The store kept only the properties that go out with the will (see `will`).
            let properties = will.properties;
            let mut own = Own::of(&self.store, &mut self.next_pkid, self.wildcard_events);
            own.v5 = self.version.is_v5();
            route_publish(
                &mut self.tracker,
                &mut own,
                None,
                now,
                info,
                properties,
                out,
            );
        }
        self.store.clear_will();
    }
}
