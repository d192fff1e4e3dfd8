//! Counters of what the gateway refused, dropped or could not keep.

use core::cell::Cell;

/// A snapshot of the gateway's counters (see [`GatewayHandle::stats`](crate::GatewayHandle::stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct GatewayStats {
    /// TCP connections taken by a client slot.
    pub connections_accepted: u32,
    /// CONNECTs accepted (CONNACK 0).
    pub clients_connected: u32,
    /// Connections refused with CONNACK 3 because every client slot was busy.
    pub refused_no_slot: u32,
    /// CONNECTs refused with CONNACK 3 because a last will did not fit its buffer.
    pub refused_no_buffer: u32,
    /// CONNECTs refused by the credential check (CONNACK 4 or 5, see [`Auth`](crate::Auth)).
    pub refused_auth: u32,
    /// CONNECTs refused for another reason (protocol level, client id, will on a system topic).
    pub refused_other: u32,
    /// Connections closed because a packet was larger than the receive buffer.
    pub packets_too_large: u32,
    /// Connections closed for a protocol violation.
    pub protocol_errors: u32,
    /// Topic filters refused (SUBACK 0x80): too long, no subscription slot left, or a system
    /// topic for a client that is not on the allow list.
    pub subscriptions_refused: u32,
    /// PUBLISHes on a system topic by an ordinary client, dropped.
    pub publishes_denied: u32,
    /// Deliveries (messages, events, wills) dropped because a client's queue was full.
    pub deliveries_dropped: u32,
    /// Deliveries whose `msgack` correlation was forgotten: the client's store of pending
    /// acknowledgements (`SlotStores`' `ACKS` entries of `ACK_TEXT` bytes) was full, so the
    /// oldest pending one was forgotten, or this one's text did not fit. The message itself was
    /// delivered; its acknowledgement gives no `msgack` event.
    pub deliveries_evicted: u32,
    /// Events that did not fit the event buffer, dropped.
    pub events_dropped: u32,
    /// Retained messages not kept: a new topic while every entry of the retained table was
    /// taken, or topic and payload larger than an entry (see [`RETAINED_ENTRIES`](crate::RETAINED_ENTRIES)).
    /// They still reach the subscribers of the moment. Also retained messages removed because
    /// their MQTT 5 Message Expiry Interval had passed when a subscriber would have got them.
    pub retained_dropped: u32,
    /// Messages for the uplink dropped because its queue was full (the one the
    /// [`UplinkConfig::drop_policy`](crate::UplinkConfig::drop_policy) picks), or, at QoS 0,
    /// because a broken uplink connection cut one off.
    pub uplink_dropped: u32,
    /// QoS 1 messages sent upstream again (with DUP) after a reconnect, because their PUBACK
    /// had not come: the upstream broker may have had them already.
    pub uplink_resent: u32,
    /// Successful uplink connections (CONNACK 0 from the upstream broker).
    pub uplink_connects: u32,
    /// Failed uplink connection attempts.
    pub uplink_failures: u32,
    /// Events numbered since boot: the last `event_seq` handed out (each event gets the next
    /// one, also one then dropped).
    pub events_numbered: u32,
}

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        /// The live counters, one `Cell` each: only the gateway's own futures touch them.
        #[derive(Default)]
        pub(crate) struct Counters {
            $(pub(crate) $field: Cell<u32>,)*
        }

        impl Counters {
            pub(crate) const fn new() -> Self {
                Counters { $($field: Cell::new(0),)* }
            }

            pub(crate) fn snapshot(&self) -> GatewayStats {
                GatewayStats { $($field: self.$field.get(),)* }
            }
        }
    };
}

counters!(
    connections_accepted,
    clients_connected,
    refused_no_slot,
    refused_no_buffer,
    refused_auth,
    refused_other,
    packets_too_large,
    protocol_errors,
    subscriptions_refused,
    publishes_denied,
    deliveries_dropped,
    deliveries_evicted,
    events_dropped,
    retained_dropped,
    uplink_dropped,
    uplink_resent,
    uplink_connects,
    uplink_failures,
    events_numbered,
);

/// Adds `n` to a counter, saturating.
pub(crate) fn add(counter: &Cell<u32>, n: usize) {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    counter.set(counter.get().saturating_add(n));
}

/// Adds one to a counter, saturating.
///
/// Not inlined: a call at each of its 17 call sites is shorter than the saturating increment
/// (100 B of flash in the firmware example, docs/gateway.md).
#[inline(never)]
pub(crate) fn bump(counter: &Cell<u32>) {
    counter.set(counter.get().saturating_add(1));
}
