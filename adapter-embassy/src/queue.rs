//! A fixed-capacity byte queue of whole, encoded MQTT packets (MQTT 3.1.1 section 2): a client
//! slot's packets waiting for its socket.
//!
//! The engine writes whole packets into [`PacketQueue::spare`] and [`PacketQueue::commit`]s
//! them; bytes come out in any amount ([`PacketQueue::drain_into`]), since a TCP transmit
//! buffer takes what fits. A slot's queue is cleared when its connection ends, so a half-sent
//! packet never meets another connection. (The uplink's queue, which outlives connections, is
//! the core's [`Outbox`](activity_core::outbox::Outbox).)

/// Encoded packets waiting for a socket, in at most `N` bytes.
pub(crate) struct PacketQueue<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> PacketQueue<N> {
    /// An empty queue.
    pub(crate) const fn new() -> Self {
        PacketQueue {
            buf: [0; N],
            len: 0,
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
        if let (Some(out), Some(queued)) = (out.get_mut(..n), self.buf.get_mut(..self.len)) {
            out.copy_from_slice(queued.get(..n).unwrap_or_default());
            queued.copy_within(n.., 0);
        }
        self.len -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use activity_core::QoS;
    use activity_core::codec::{Packet, Publish, decode};

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

    fn push<const N: usize>(q: &mut PacketQueue<N>, packet: &Packet<'_>) -> bool {
        match packet.encode(q.spare()) {
            Ok(n) => {
                q.commit(n);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn packets_go_in_whole_or_not_at_all() {
        let mut q = PacketQueue::<40>::new();
        assert!(push(&mut q, &publish("a/b"))); // 2 + 2 + 3 + 10 = 17 bytes
        assert!(push(&mut q, &publish("a/c")));
        assert_eq!(q.free(), 6);
        assert!(!push(&mut q, &publish("a/d")));
        assert_eq!(q.free(), 6);
    }

    #[test]
    fn drains_in_pieces_and_keeps_order() {
        let mut q = PacketQueue::<64>::new();
        push(&mut q, &publish("a/b"));
        push(&mut q, &publish("a/c"));
        let mut out = [0u8; 64];
        let mut got = 0;
        while !q.is_empty() {
            got += q.drain_into(&mut out[got..(got + 5).min(64)]);
        }
        let (first, n) = decode(&out[..got], 64).unwrap().unwrap();
        assert_eq!(first, publish("a/b"));
        let (second, _) = decode(&out[n..got], 64).unwrap().unwrap();
        assert_eq!(second, publish("a/c"));
        q.clear();
        assert_eq!(q.free(), 64);
    }
}
