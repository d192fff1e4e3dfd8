//! What an MQTT 5 client's CONNECT says about the deliveries it accepts (MQTT 5.0 section
//! 3.1.2.11): its Receive Maximum (QoS 1 and 2 deliveries in flight, section 4.9), its
//! Maximum Packet Size (section 3.1.2.11.4) and its Topic Alias Maximum (section 3.1.2.11.5),
//! and the engine's state for each: deliveries in flight, the next topic alias to assign.
//!
//! Before MQTT 5 a client says none of this: no limit on packets in flight or their size
//! besides the router's own, and no topic aliases.

use crate::codec::Connect;

use super::Limits;

/// The delivery side of one connection (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ClientFlow {
    /// The client's Receive Maximum: QoS 1 and 2 deliveries it accepts unacknowledged.
    pub(super) receive_maximum: u16,
    /// QoS 1 and 2 deliveries written and not yet acknowledged (PUBACK, PUBCOMP, or a PUBREC
    /// with a failure).
    pub(super) in_flight: u16,
    /// The largest packet the client accepts, fixed header included.
    pub(super) max_packet_size: u32,
    /// How many topic aliases the engine may assign on deliveries: the client's Topic Alias
    /// Maximum, capped by [`Limits::outbound_topic_aliases`] and the store.
    pub(super) outbound_aliases: u16,
    /// The alias the engine assigns next once every alias is taken (round robin: the alias
    /// assigned longest ago is the one reused).
    pub(super) next_alias: u16,
}

impl ClientFlow {
    /// No limits (a client before its CONNECT, or before MQTT 5).
    pub(super) const UNLIMITED: ClientFlow = ClientFlow {
        receive_maximum: u16::MAX,
        in_flight: 0,
        max_packet_size: u32::MAX,
        outbound_aliases: 0,
        next_alias: 0,
    };

    /// What an accepted `connect` says, within `limits` and a store that keeps
    /// `alias_capacity` aliases per direction.
    pub(super) fn of(connect: &Connect<'_>, limits: &Limits, alias_capacity: usize) -> ClientFlow {
        let properties = &connect.properties;
        let capacity = u16::try_from(alias_capacity).unwrap_or(u16::MAX);
        ClientFlow {
            // The codec refuses 0 (a protocol error); absent means 65,535.
            receive_maximum: properties.receive_maximum().unwrap_or(u16::MAX),
            in_flight: 0,
            max_packet_size: properties.maximum_packet_size().unwrap_or(u32::MAX),
            outbound_aliases: properties
                .topic_alias_maximum()
                .unwrap_or(0)
                .min(limits.outbound_topic_aliases)
                .min(capacity),
            next_alias: 0,
        }
    }

    /// Whether another QoS 1 or 2 delivery may be written now.
    pub(super) const fn may_send(&self) -> bool {
        self.in_flight < self.receive_maximum
    }

    /// A QoS 1 or 2 delivery was written.
    pub(super) fn sent(&mut self) {
        self.in_flight = self.in_flight.saturating_add(1);
    }

    /// A QoS 1 or 2 delivery was acknowledged.
    pub(super) fn acknowledged(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The alias to assign to a topic that has none: the next unused one, then round robin.
    pub(super) fn take_alias(&mut self) -> Option<u16> {
        if self.outbound_aliases == 0 {
            return None;
        }
        self.next_alias = if self.next_alias >= self.outbound_aliases {
            1
        } else {
            self.next_alias + 1
        };
        Some(self.next_alias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_assigned_in_turn_and_reused_round_robin() {
        let mut flow = ClientFlow {
            outbound_aliases: 3,
            ..ClientFlow::UNLIMITED
        };
        let taken: [Option<u16>; 5] = core::array::from_fn(|_| flow.take_alias());
        assert_eq!(taken, [Some(1), Some(2), Some(3), Some(1), Some(2)]);
        assert_eq!(ClientFlow::UNLIMITED.clone().take_alias(), None);
    }

    #[test]
    fn in_flight_stops_at_the_receive_maximum() {
        let mut flow = ClientFlow {
            receive_maximum: 2,
            ..ClientFlow::UNLIMITED
        };
        flow.sent();
        assert!(flow.may_send());
        flow.sent();
        assert!(!flow.may_send());
        flow.acknowledged();
        assert!(flow.may_send());
        flow.acknowledged();
        flow.acknowledged();
        assert_eq!(flow.in_flight, 0);
    }
}
