//! The client side of publishing upstream at QoS 0 or 1: a bounded queue of encoded PUBLISH
//! packets that keeps each QoS 1 packet until its PUBACK and sends it again, with DUP, after a
//! reconnect (MQTT 3.1.1 sections 3.3.1.1, 4.3.1, 4.3.2 and 4.4; the same in MQTT 5, 4.4).
//!
//! A client that forwards messages to another server (the gateway's uplink) owns one
//! [`Outbox`] for the life of the client, across its connections:
//!
//! 1. [`Outbox::push`] encodes a PUBLISH at the end of the queue, with a packet id of the
//!    outbox's for QoS 1; when it does not fit, the [`DropPolicy`] says which message goes.
//! 2. While connected, [`Outbox::drain_into`] hands the bytes not sent yet in this connection
//!    to the transport, in order, in any amount. A QoS 0 packet leaves the queue once all of
//!    it was handed over; a QoS 1 packet stays.
//! 3. [`Outbox::handle_puback`] removes the QoS 1 packet the server acknowledged.
//! 4. When the connection breaks, [`Outbox::handle_disconnect`] rewinds: every QoS 1 packet
//!    still queued is sent again from the start of the next connection, in the order it was
//!    pushed, the ones sent before with DUP set (section 4.4: a client resends unacknowledged
//!    PUBLISH packets when it reconnects); a QoS 0 packet that was cut off in the middle is
//!    dropped (its rest cannot follow on a new connection) and reported.
//!
//! A QoS 1 message is delivered at least once: the server may have received one whose PUBACK
//! was lost with the connection, and then receives it again (with DUP).
//!
//! Memory: the `N` bytes of encoded packets and 12 bytes of bookkeeping on 32-bit targets (24
//! on 64-bit);
//! no per-packet index: packet boundaries are read from the fixed headers.

use crate::QoS;
use crate::codec::{Packet, Publish, fixed_header};

/// Which message goes when a new one does not fit the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DropPolicy {
    /// The new message is dropped; the queued ones stay (the oldest are delivered).
    #[default]
    DropNewest,
    /// The oldest queued messages are dropped until the new one fits (the newest are
    /// delivered). A packet the transport has taken part of stays, since its rest must follow.
    DropOldest,
}

/// The new message did not fit and was dropped ([`Outbox::push`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rejected;

impl core::fmt::Display for Rejected {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the outbox has no room for the message")
    }
}

impl core::error::Error for Rejected {}

/// What [`Outbox::handle_disconnect`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rewound {
    /// QoS 1 packets that had been sent and will be sent again, with DUP.
    pub resent: usize,
    /// A QoS 0 packet was cut off in the middle and dropped.
    pub cut_off: bool,
}

/// The PUBLISH flag bits in byte 1 (section 3.3.1): DUP.
const DUP: u8 = 0b1000;

/// Encoded PUBLISH packets waiting for the server, in at most `N` bytes (see the module docs).
pub struct Outbox<const N: usize> {
    buf: [u8; N],
    /// Queued bytes: whole packets, oldest first.
    len: usize,
    /// Bytes at the front handed to the transport in this connection. The packets wholly
    /// before it are QoS 1 ones awaiting PUBACK; at most one packet straddles it.
    sent: usize,
    /// The last packet id given out (0: none yet).
    last_pkid: u16,
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A queued packet: where it starts, its length, and what its fixed header says.
#[derive(Clone, Copy)]
struct Queued {
    start: usize,
    len: usize,
    qos1: bool,
}

impl Queued {
    fn end(&self) -> usize {
        self.start + self.len
    }
}

impl<const N: usize> Outbox<N> {
    /// An empty outbox (all zero bits: fit for a `static` in `.bss`).
    pub const fn new() -> Self {
        Outbox {
            buf: [0; N],
            len: 0,
            sent: 0,
            last_pkid: 0,
        }
    }

    /// The capacity in bytes.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The queued bytes (sent and awaiting PUBACK, or not sent yet).
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether some bytes wait for [`Outbox::drain_into`] in this connection.
    pub const fn has_unsent(&self) -> bool {
        self.sent < self.len
    }

    /// The packet that starts at `start` (every queued packet is complete).
    fn at(&self, start: usize) -> Queued {
        let rest = self.buf.get(start..self.len).unwrap_or_default();
        let (len, flags) = match fixed_header(rest) {
            Ok(Some(header)) => (header.packet_len().min(rest.len()), header.flags()),
            // Cannot happen: only the codec's own packets are queued. Treat the rest as one
            // packet rather than panic.
            _ => (rest.len(), 0),
        };
        Queued {
            start,
            len: len.max(1),
            qos1: (flags >> 1) & 0b11 != 0,
        }
    }

    /// The packet id of a QoS 1 packet (after the topic, section 3.3.2.2).
    fn pkid(&self, packet: Queued) -> Option<u16> {
        let bytes = self.buf.get(packet.start..packet.end())?;
        let header = fixed_header(bytes).ok()??;
        let at = header.header_len();
        let topic_len = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
        let id = at + 2 + topic_len;
        Some(u16::from_be_bytes([*bytes.get(id)?, *bytes.get(id + 1)?]))
    }

    /// The first queued packet for which `pick` holds.
    fn find(&self, mut pick: impl FnMut(&Self, Queued) -> bool) -> Option<Queued> {
        let mut start = 0;
        while start < self.len {
            let packet = self.at(start);
            if pick(self, packet) {
                return Some(packet);
            }
            start = packet.end();
        }
        None
    }

    /// Removes a whole packet from the queue.
    fn remove(&mut self, packet: Queued) {
        if let Some(queued) = self.buf.get_mut(packet.start..self.len) {
            queued.copy_within(packet.len.min(queued.len()).., 0);
        }
        self.len = self.len.saturating_sub(packet.len);
        if self.sent >= packet.end() {
            self.sent -= packet.len;
        } else if self.sent > packet.start {
            // The packet in transit went (a cut-off QoS 0 one): the next starts unsent.
            self.sent = packet.start;
        }
    }

    /// A packet id no queued packet has (section 2.3.1: one in use must not be reused).
    fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            let id = self.last_pkid;
            if self.find(|q, p| p.qos1 && q.pkid(p) == Some(id)).is_none() {
                return id;
            }
        }
    }

    /// Queues a PUBLISH of `payload` on `topic` at `qos` (QoS 2 goes as QoS 1) with `retain`.
    /// When it does not fit, `policy` decides: the new message is rejected, or the oldest go
    /// until it fits; returns how many queued messages were dropped for it. A message larger
    /// than the whole queue, or one that does not fit with every droppable message gone, is
    /// rejected and drops nothing.
    pub fn push(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        policy: DropPolicy,
    ) -> Result<usize, Rejected> {
        let qos1 = qos != QoS::AtMostOnce;
        let mut publish = Publish {
            properties: crate::codec::Properties::EMPTY,
            dup: false,
            qos: if qos1 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            retain,
            topic,
            pkid: qos1.then_some(1),
            payload,
        };
        let needed = Packet::Publish(publish)
            .encoded_len()
            .map_err(|_| Rejected)?;
        if needed > N {
            return Err(Rejected);
        }
        let mut dropped = 0;
        while N - self.len < needed {
            // The oldest packet the transport has not taken part of.
            let sent = self.sent;
            let victim = match policy {
                DropPolicy::DropNewest => None,
                DropPolicy::DropOldest => self.find(|_, p| p.end() <= sent || p.start >= sent),
            };
            let Some(victim) = victim else {
                return Err(Rejected);
            };
            self.remove(victim);
            dropped += 1;
        }
        if qos1 {
            publish.pkid = Some(self.next_pkid());
        }
        let spare = self.buf.get_mut(self.len..).unwrap_or_default();
        match Packet::Publish(publish).encode(spare) {
            Ok(written) => {
                self.len += written;
                Ok(dropped)
            }
            Err(_) => Err(Rejected),
        }
    }

    /// Moves the next bytes not sent in this connection into `out`, as many as fit; returns
    /// how many. QoS 0 packets handed over whole leave the queue.
    pub fn drain_into(&mut self, out: &mut [u8]) -> usize {
        let unsent = self.buf.get(self.sent..self.len).unwrap_or_default();
        let n = unsent.len().min(out.len());
        if let (Some(out), Some(bytes)) = (out.get_mut(..n), unsent.get(..n)) {
            out.copy_from_slice(bytes);
        }
        self.sent += n;
        // QoS 0 packets need no acknowledgement: gone once sent whole.
        loop {
            let sent = self.sent;
            let Some(done) = self.find(|_, p| !p.qos1 && p.end() <= sent) else {
                break;
            };
            self.remove(done);
        }
        n
    }

    /// The bytes not handed over yet of the packet [`Outbox::drain_into`] handed over in part:
    /// 0 when what was handed over ends at a packet boundary. A client that writes packets of
    /// its own into the same connection (a PINGREQ) does so only at a boundary, never into a
    /// packet sent in part, and drains at most this many bytes until it is at one.
    pub fn rest_in_transit(&self) -> usize {
        let sent = self.sent;
        self.find(|_, p| p.start < sent && p.end() > sent)
            .map_or(0, |p| p.end() - sent)
    }

    /// The server acknowledged the QoS 1 packet with `pkid` (PUBACK, section 3.4): it leaves
    /// the queue. Returns whether one was queued (a PUBACK for an unknown id is ignored).
    pub fn handle_puback(&mut self, pkid: u16) -> bool {
        let sent = self.sent;
        match self.find(|q, p| p.qos1 && p.end() <= sent && q.pkid(p) == Some(pkid)) {
            Some(packet) => {
                self.remove(packet);
                true
            }
            None => false,
        }
    }

    /// The connection broke: the next [`Outbox::drain_into`] starts again at the front, with
    /// DUP set on the QoS 1 packets sent before; a QoS 0 packet sent in part is dropped.
    pub fn handle_disconnect(&mut self) -> Rewound {
        let mut rewound = Rewound::default();
        let sent = self.sent;
        if let Some(cut) = self.find(|_, p| !p.qos1 && p.start < sent && p.end() > sent) {
            self.remove(cut);
            rewound.cut_off = true;
        }
        let mut start = 0;
        while start < self.sent.min(self.len) {
            let packet = self.at(start);
            if packet.qos1 && packet.end() <= self.sent {
                if let Some(first) = self.buf.get_mut(packet.start) {
                    *first |= DUP;
                }
                rewound.resent += 1;
            }
            start = packet.end();
        }
        self.sent = 0;
        rewound
    }
}

#[cfg(test)]
mod tests;
