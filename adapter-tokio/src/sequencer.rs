//! Keeps the acknowledgements the router receives in the order it expects them.
//!
//! rumqttd's router accepts a subscriber's PUBACK / PUBREC only for the oldest delivery still in
//! flight, and PUBCOMP only for the oldest PUBREL, and drops the client without a reason
//! otherwise. Two things make that order differ from what the client sends:
//!
//! - the front delivers at `min(publish QoS, subscription QoS)` (MQTT 3.1.1 section 3.8.4) while
//!   the router delivers at the subscription's QoS, so the front completes the router's flow
//!   itself for deliveries it downgraded (a QoS 0 delivery is acknowledged at once, a QoS 2
//!   delivery sent as QoS 1 turns the client's PUBACK into PUBREC + PUBCOMP);
//! - a hostile or buggy client may acknowledge out of order or acknowledge ids never sent.
//!
//! [`AckSequencer`] queues deliveries in router order and releases acknowledgements to the
//! router only from the head of the queue. Acks for ids not in flight are refused (the caller
//! counts them), never passed to the router.

use std::collections::VecDeque;

use activity_core::QoS;

/// An acknowledgement for the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterAck {
    /// PUBACK for a QoS 1 delivery.
    PubAck(u16),
    /// PUBREC for a QoS 2 delivery.
    PubRec(u16),
    /// PUBCOMP after the router's PUBREL.
    PubComp(u16),
}

#[derive(Clone, Copy, Debug)]
struct Delivery {
    pkid: u16,
    router_qos: QoS,
    client_qos: QoS,
    acked: bool,
}

#[derive(Clone, Copy, Debug)]
struct Release {
    pkid: u16,
    /// The client completes this QoS 2 flow itself (it got the delivery at QoS 2).
    by_client: bool,
    done: bool,
}

/// Why a client acknowledgement was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No delivery with this packet id is waiting for this kind of acknowledgement.
    #[error("acknowledgement for packet id {0}, which is not in flight")]
    Unknown(u16),
}

/// The router-order queue of one connection's outgoing QoS 1 and 2 deliveries.
#[derive(Debug, Default)]
pub struct AckSequencer {
    deliveries: VecDeque<Delivery>,
    releases: VecDeque<Release>,
    /// Router PUBRELs the client must not see: their flow was downgraded.
    swallow_pubrel: VecDeque<u16>,
}

impl AckSequencer {
    /// An empty sequencer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deliveries still waiting for their first acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.deliveries.len()
    }

    /// The router sent a delivery at `router_qos` (1 or 2) that the client gets at `client_qos`
    /// (at most `router_qos`). Acks released by this call go to `out`.
    pub fn on_delivery(
        &mut self,
        pkid: u16,
        router_qos: QoS,
        client_qos: QoS,
        out: &mut Vec<RouterAck>,
    ) {
        if router_qos == QoS::AtMostOnce {
            return;
        }
        self.deliveries.push_back(Delivery {
            pkid,
            router_qos,
            client_qos: client_qos.min(router_qos),
            acked: client_qos == QoS::AtMostOnce,
        });
        self.release(out);
    }

    /// The client sent PUBACK (`QoS 1`) or PUBREC (`QoS 2`) for `pkid`.
    pub fn on_client_ack(
        &mut self,
        pkid: u16,
        ack_qos: QoS,
        out: &mut Vec<RouterAck>,
    ) -> Result<(), AckError> {
        let delivery = self
            .deliveries
            .iter_mut()
            .find(|d| d.pkid == pkid && !d.acked && d.client_qos == ack_qos)
            .ok_or(AckError::Unknown(pkid))?;
        delivery.acked = true;
        self.release(out);
        Ok(())
    }

    /// The client sent PUBCOMP for `pkid`, ending a QoS 2 delivery.
    pub fn on_client_pubcomp(
        &mut self,
        pkid: u16,
        out: &mut Vec<RouterAck>,
    ) -> Result<(), AckError> {
        let release = self
            .releases
            .iter_mut()
            .find(|r| r.pkid == pkid && r.by_client && !r.done)
            .ok_or(AckError::Unknown(pkid))?;
        release.done = true;
        self.release(out);
        Ok(())
    }

    /// The router sent PUBREL for `pkid`: `true` when it goes to the client, `false` when the
    /// flow was downgraded and the front already completed it.
    pub fn on_router_pubrel(&mut self, pkid: u16) -> bool {
        if let Some(i) = self.swallow_pubrel.iter().position(|p| *p == pkid) {
            self.swallow_pubrel.remove(i);
            false
        } else {
            true
        }
    }

    fn release(&mut self, out: &mut Vec<RouterAck>) {
        while let Some(head) = self.deliveries.front().copied() {
            if !head.acked {
                break;
            }
            self.deliveries.pop_front();
            match head.router_qos {
                QoS::AtLeastOnce => out.push(RouterAck::PubAck(head.pkid)),
                QoS::ExactlyOnce => {
                    out.push(RouterAck::PubRec(head.pkid));
                    let by_client = head.client_qos == QoS::ExactlyOnce;
                    if !by_client {
                        self.swallow_pubrel.push_back(head.pkid);
                    }
                    self.releases.push_back(Release {
                        pkid: head.pkid,
                        by_client,
                        done: !by_client,
                    });
                }
                QoS::AtMostOnce => {}
            }
        }
        while let Some(head) = self.releases.front().copied() {
            if !head.done {
                break;
            }
            self.releases.pop_front();
            out.push(RouterAck::PubComp(head.pkid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use QoS::{AtLeastOnce as Q1, AtMostOnce as Q0, ExactlyOnce as Q2};

    #[test]
    fn in_order_acks_pass_straight_through() {
        let mut s = AckSequencer::new();
        let mut out = Vec::new();
        s.on_delivery(1, Q1, Q1, &mut out);
        s.on_delivery(2, Q1, Q1, &mut out);
        assert!(out.is_empty());
        s.on_client_ack(1, Q1, &mut out).unwrap();
        s.on_client_ack(2, Q1, &mut out).unwrap();
        assert_eq!(out, [RouterAck::PubAck(1), RouterAck::PubAck(2)]);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn out_of_order_client_acks_are_reordered() {
        let mut s = AckSequencer::new();
        let mut out = Vec::new();
        s.on_delivery(1, Q1, Q1, &mut out);
        s.on_delivery(2, Q1, Q1, &mut out);
        s.on_client_ack(2, Q1, &mut out).unwrap();
        assert!(out.is_empty(), "2 waits for 1");
        s.on_client_ack(1, Q1, &mut out).unwrap();
        assert_eq!(out, [RouterAck::PubAck(1), RouterAck::PubAck(2)]);
    }

    #[test]
    fn downgraded_to_qos0_is_acked_when_it_reaches_the_head() {
        let mut s = AckSequencer::new();
        let mut out = Vec::new();
        s.on_delivery(1, Q1, Q1, &mut out);
        s.on_delivery(2, Q1, Q0, &mut out);
        assert!(out.is_empty(), "2 is acked but must wait for 1");
        s.on_client_ack(1, Q1, &mut out).unwrap();
        assert_eq!(out, [RouterAck::PubAck(1), RouterAck::PubAck(2)]);
        out.clear();
        s.on_delivery(3, Q1, Q0, &mut out);
        assert_eq!(out, [RouterAck::PubAck(3)]);
    }

    #[test]
    fn unknown_or_wrong_kind_acks_are_refused() {
        let mut s = AckSequencer::new();
        let mut out = Vec::new();
        assert_eq!(s.on_client_ack(9, Q1, &mut out), Err(AckError::Unknown(9)));
        s.on_delivery(1, Q1, Q1, &mut out);
        assert_eq!(s.on_client_ack(1, Q2, &mut out), Err(AckError::Unknown(1)));
        s.on_client_ack(1, Q1, &mut out).unwrap();
        assert_eq!(s.on_client_ack(1, Q1, &mut out), Err(AckError::Unknown(1)));
        assert_eq!(s.on_client_pubcomp(1, &mut out), Err(AckError::Unknown(1)));
        assert_eq!(out, [RouterAck::PubAck(1)]);
    }

    #[test]
    fn full_qos2_flow_by_the_client() {
        let mut s = AckSequencer::new();
        let mut out = Vec::new();
        s.on_delivery(4, Q2, Q2, &mut out);
        s.on_client_ack(4, Q2, &mut out).unwrap();
        assert_eq!(out, [RouterAck::PubRec(4)]);
        assert!(s.on_router_pubrel(4), "the client completes its own flow");
        s.on_client_pubcomp(4, &mut out).unwrap();
        assert_eq!(out, [RouterAck::PubRec(4), RouterAck::PubComp(4)]);
    }

    #[test]
    fn qos2_downgraded_to_qos1_completes_the_router_flow() {
        let mut s = AckSequencer::new();
        let mut out = Vec::new();
        s.on_delivery(5, Q2, Q1, &mut out);
        s.on_client_ack(5, Q1, &mut out).unwrap();
        assert_eq!(out, [RouterAck::PubRec(5), RouterAck::PubComp(5)]);
        assert!(
            !s.on_router_pubrel(5),
            "the client must not see the router's PUBREL"
        );
    }

    #[test]
    fn qos2_downgraded_to_qos0_and_pubcomp_order_is_kept() {
        let mut s = AckSequencer::new();
        let mut out = Vec::new();
        s.on_delivery(1, Q2, Q2, &mut out);
        s.on_client_ack(1, Q2, &mut out).unwrap();
        s.on_delivery(2, Q2, Q0, &mut out);
        // PUBREC 2 may go, but PUBCOMP 2 must wait for the client's PUBCOMP 1.
        assert_eq!(out, [RouterAck::PubRec(1), RouterAck::PubRec(2)]);
        out.clear();
        s.on_client_pubcomp(1, &mut out).unwrap();
        assert_eq!(out, [RouterAck::PubComp(1), RouterAck::PubComp(2)]);
        assert!(s.on_router_pubrel(1));
        assert!(!s.on_router_pubrel(2));
    }

    #[test]
    fn qos0_router_deliveries_are_not_queued() {
        let mut s = AckSequencer::new();
        let mut out = Vec::new();
        s.on_delivery(0, Q0, Q0, &mut out);
        assert_eq!(s.in_flight(), 0);
        assert!(out.is_empty());
    }
}
