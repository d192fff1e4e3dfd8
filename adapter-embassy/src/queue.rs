//! A fixed-capacity byte queue of whole, encoded MQTT packets (MQTT 3.1.1 section 2).
//!
//! Packets go in whole or not at all ([`PacketQueue::push`]); bytes come out in any amount
//! ([`PacketQueue::drain_into`]), since a TCP transmit buffer takes what fits. The queue
//! remembers how much of the front packet is still unsent, so that after a broken connection
//! [`PacketQueue::discard_partial`] can drop the rest of a half-sent packet and the next
//! connection starts on a packet boundary.

use activity_core::codec::{EncodeError, Packet, fixed_header};

/// Encoded packets waiting for a socket, in at most `N` bytes.
pub(crate) struct PacketQueue<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// Bytes of the front packet not yet drained, when a drain stopped inside it; 0 otherwise.
    partial: usize,
}

impl<const N: usize> PacketQueue<N> {
    /// An empty queue.
    pub(crate) const fn new() -> Self {
        PacketQueue {
            buf: [0; N],
            len: 0,
            partial: 0,
        }
    }

    /// Whether no byte is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The free bytes.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        N - self.len
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.partial = 0;
    }

    /// Encodes `packet` at the end of the queue, or leaves the queue as it was.
    pub(crate) fn push(&mut self, packet: &Packet<'_>) -> Result<(), EncodeError> {
        let written = packet.encode(self.spare())?;
        self.len += written;
        Ok(())
    }

    /// The length of the packet that starts at `pos` (every queued packet is complete).
    fn packet_len_at(&self, pos: usize) -> usize {
        match fixed_header(self.buf.get(pos..self.len).unwrap_or_default()) {
            Ok(Some(header)) => header.packet_len().min(self.len - pos),
            // Cannot happen: `push` only stores packets the codec encoded. Treat the rest of
            // the queue as one packet rather than panic.
            _ => self.len - pos,
        }
    }

    /// The free space after the queued bytes, for a writer of whole packets; then
    /// [`PacketQueue::commit`] what it wrote.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.len..).unwrap_or_default()
    }

    /// Adds `n` bytes written into [`PacketQueue::spare`] (whole packets) to the queue.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(N);
    }

    /// Moves as many bytes as fit from the front of the queue into `out`; returns how many.
    pub(crate) fn drain_into(&mut self, out: &mut [u8]) -> usize {
        let n = self.len.min(out.len());
        if n == 0 {
            return 0;
        }
        // Walk the packet boundaries inside the drained bytes.
        let mut consumed = 0;
        let mut front = if self.partial > 0 {
            self.partial
        } else {
            self.packet_len_at(0)
        };
        while consumed + front <= n {
            consumed += front;
            if consumed == self.len {
                front = 0;
                break;
            }
            front = self.packet_len_at(consumed);
        }
        self.partial = if consumed == n {
            0
        } else {
            front - (n - consumed)
        };
        if let (Some(out), Some(queued)) = (out.get_mut(..n), self.buf.get_mut(..self.len)) {
            out.copy_from_slice(queued.get(..n).unwrap_or_default());
            queued.copy_within(n.., 0);
        }
        self.len -= n;
        n
    }

    /// Drops the unsent rest of a half-sent front packet; returns whether there was one.
    pub(crate) fn discard_partial(&mut self) -> bool {
        if self.partial == 0 {
            return false;
        }
        let rest = self.partial.min(self.len);
        if let Some(queued) = self.buf.get_mut(..self.len) {
            queued.copy_within(rest.., 0);
        }
        self.len -= rest;
        self.partial = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use activity_core::QoS;
    use activity_core::codec::{Publish, decode};

    fn publish(topic: &str) -> Packet<'_> {
        Packet::Publish(Publish {
            properties: activity_core::codec::Properties::EMPTY,
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            pkid: None,
            payload: b"0123456789",
        })
    }

    #[test]
    fn packets_go_in_whole_or_not_at_all() {
        let mut q = PacketQueue::<40>::new();
        q.push(&publish("a/b")).unwrap(); // 2 + 2 + 3 + 10 = 17 bytes
        q.push(&publish("a/c")).unwrap();
        assert_eq!(q.free(), 6);
        assert!(q.push(&publish("a/d")).is_err());
        assert_eq!(q.free(), 6);
    }

    #[test]
    fn drains_in_pieces_and_keeps_order() {
        let mut q = PacketQueue::<64>::new();
        q.push(&publish("a/b")).unwrap();
        q.push(&publish("a/c")).unwrap();
        let mut out = [0u8; 64];
        let mut got = 0;
        while !q.is_empty() {
            got += q.drain_into(&mut out[got..(got + 5).min(64)]);
        }
        let (first, n) = decode(&out[..got], 64).unwrap().unwrap();
        assert_eq!(first, publish("a/b"));
        let (second, _) = decode(&out[n..got], 64).unwrap().unwrap();
        assert_eq!(second, publish("a/c"));
    }

    #[test]
    fn a_half_sent_packet_is_discarded_whole() {
        let mut q = PacketQueue::<64>::new();
        q.push(&publish("a/b")).unwrap();
        q.push(&publish("a/c")).unwrap();
        let mut out = [0u8; 20];
        assert_eq!(q.drain_into(&mut out), 20); // the first packet and 3 bytes of the second
        assert!(q.discard_partial());
        assert!(q.is_empty());

        q.push(&publish("a/b")).unwrap();
        q.push(&publish("a/c")).unwrap();
        assert_eq!(q.drain_into(&mut out[..17]), 17); // exactly the first packet
        assert!(!q.discard_partial());
        assert_eq!(q.free(), 64 - 17);
        let mut rest = [0u8; 17];
        q.drain_into(&mut rest);
        assert_eq!(decode(&rest, 64).unwrap().unwrap().0, publish("a/c"));
    }
}
