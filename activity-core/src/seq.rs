//! The sequence numbers of the events: `session_seq` (per connection) and the layout behind it.
//!
//! Every `connected` event and the `disconnected` events of the same connection (its own end,
//! and for a kept MQTT 5 session the later `session_expired`) carry the same `session_seq`. A
//! later connection of the same client id, on this node or on another node in front of the same
//! broker, gets a larger one, so a consumer orders a takeover by `session_seq` alone and drops a
//! `disconnected` whose `session_seq` is below the one of the client's last `connected`.
//!
//! # Layout
//!
//! No state file: the number comes from the clock. `session_seq` is
//! `ms << 11 | counter << 6 | node`, below 2^53 (exact in a JSON parser that reads numbers as
//! IEEE doubles, such as JavaScript's or jq 1.6's) until the year 2109:
//!
//! | bits | what |
//! |---|---|
//! | 52..11 | the wall clock at the connect, ms since the Unix epoch ([`session_seq_ms`]) |
//! | 10..6 | a counter for more than one connection in the same millisecond (32 per ms) |
//! | 5..0 | the node's [`NodeBits`]: two nodes with different bits never hand out the same number |
//!
//! [`next_session_seq`] is the whole rule: the clock's value, or, when that is not above the
//! last number this node handed out, the last number plus one count (a busy millisecond, or a
//! clock that went back). So within one process the numbers only grow.
//!
//! # What the clock may do
//!
//! - **Across a restart** the numbers grow as long as the clock at the restart is past the
//!   millisecond of the last number handed out before it. A node runs ahead of its clock only
//!   while it accepts more than 32 connections in one millisecond (32,000 per second), by
//!   1/32 ms per connection above that, and falls back on the clock as soon as the load drops.
//! - **A clock step back** by `D` (a manual set, a VM restored from a snapshot; NTP slews small
//!   errors without stepping) does not make the numbers of a running node go down: they
//!   continue from the last one, one count per connection. If the node restarts within `D`, a
//!   client may get a smaller number than its last connection's: nothing but the clock
//!   remembers the last number across a restart.
//! - **Across nodes** the clocks order the connections: a connect on node B gets a larger
//!   number than an earlier connect of the same client id on node A when B's clock at that
//!   moment is past A's clock at the earlier connect. With clocks within `S` ms of each other
//!   (NTP keeps servers within a few ms), any two connects of one client id more than `S` ms
//!   apart are ordered right; a takeover across two taps takes at least a round trip to the
//!   broker behind them. Connects closer together than that are ordered by the clocks, and the
//!   node bits still keep their numbers apart.

/// How far the millisecond is shifted left in a `session_seq`.
pub const SESSION_SEQ_MS_SHIFT: u32 = 11;

/// How many low bits of a `session_seq` name the node.
pub const NODE_BITS: u32 = 6;

/// The most milliseconds a `session_seq` holds below 2^53 (the year 2109); a later clock counts
/// as this one.
const MAX_MS: u64 = (1 << (53 - SESSION_SEQ_MS_SHIFT)) - 1;

/// The low bits of every `session_seq` a node hands out (0 to 63), which keep the numbers of two
/// nodes in front of the same broker apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeBits(u8);

impl NodeBits {
    /// Bits given explicitly: `index` modulo 64.
    pub const fn new(index: u8) -> Self {
        NodeBits(index & ((1 << NODE_BITS) - 1))
    }

    /// Bits derived from the node's name (`events.node`): FNV-1a of its bytes, modulo 64. Two
    /// different names may share bits (one pair in 64): nodes that must never collide set
    /// their index instead ([`NodeBits::new`]).
    pub const fn of_name(name: &str) -> Self {
        let bytes = name.as_bytes();
        let mut hash: u32 = 0x811c_9dc5;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u32;
            hash = hash.wrapping_mul(0x0100_0193);
            i += 1;
        }
        // Folding the high bits in keeps more of the hash than the low six bits alone.
        NodeBits::new((hash ^ (hash >> 16) ^ (hash >> 8)).to_le_bytes()[0])
    }

    /// The bits, 0 to 63.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// The `session_seq` for a connection accepted at `now_ms` (ms since the Unix epoch) by the node
/// with bits `node`, after `last`, the last one that node handed out (0 for none): the clock's
/// number when it is above `last`, else `last` plus one count. See the [module docs](self).
pub const fn next_session_seq(last: u64, now_ms: u64, node: NodeBits) -> u64 {
    let ms = if now_ms > MAX_MS { MAX_MS } else { now_ms };
    let from_clock = (ms << SESSION_SEQ_MS_SHIFT) | node.0 as u64;
    if from_clock > last {
        from_clock
    } else {
        // `last` carries the same node bits: adding whole counts keeps them.
        last.saturating_add(1 << NODE_BITS)
    }
}

/// The millisecond (since the Unix epoch) a `session_seq` was handed out in, as the node's clock
/// had it (later when the node ran ahead, see the [module docs](self)).
pub const fn session_seq_ms(session_seq: u64) -> u64 {
    session_seq >> SESSION_SEQ_MS_SHIFT
}

/// A node's `session_seq` generator, for a driver that owns it mutably (the gateway); a driver
/// with threads keeps the last number in an atomic and applies [`next_session_seq`] to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionSeqs {
    last: u64,
    node: NodeBits,
}

impl SessionSeqs {
    /// A generator for the node with bits `node` that has handed out nothing yet.
    pub const fn new(node: NodeBits) -> Self {
        SessionSeqs { last: 0, node }
    }

    /// The `session_seq` of a connection accepted at `now_ms`.
    pub fn next(&mut self, now_ms: u64) -> u64 {
        self.last = next_session_seq(self.last, now_ms, self.node);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_000_000_000;

    #[test]
    fn the_clock_gives_the_number_and_the_node_its_low_bits() {
        let node = NodeBits::new(5);
        let seq = next_session_seq(0, NOW, node);
        assert_eq!(seq, NOW << 11 | 5);
        assert_eq!(session_seq_ms(seq), NOW);
        assert_eq!(seq & 63, 5);
        assert!(seq < 1 << 53, "exact as an IEEE double");
    }

    #[test]
    fn numbers_grow_within_a_millisecond_and_when_the_clock_goes_back() {
        let node = NodeBits::new(9);
        let mut seqs = SessionSeqs::new(node);
        let mut last = 0;
        // 100 connections in one millisecond: 32 fit, the rest run ahead.
        for _ in 0..100 {
            let seq = seqs.next(NOW);
            assert!(seq > last);
            assert_eq!(seq & 63, 9, "the node bits stay");
            last = seq;
        }
        assert_eq!(session_seq_ms(last), NOW + 3);
        // The clock steps back ten seconds: still growing.
        let back = seqs.next(NOW - 10_000);
        assert!(back > last);
        // The clock catches up: the clock's number again.
        assert_eq!(seqs.next(NOW + 10), (NOW + 10) << 11 | 9);
    }

    #[test]
    fn a_restart_later_continues_above_the_last_number() {
        let node = NodeBits::of_name("tap-a");
        let mut before = SessionSeqs::new(node);
        let last = (0..10).map(|_| before.next(NOW)).last().unwrap_or(0);
        // A new process, no state, one millisecond later.
        let mut after = SessionSeqs::new(node);
        assert!(after.next(NOW + 1) > last);
    }

    #[test]
    fn two_nodes_in_the_same_millisecond_never_collide_and_later_is_larger() {
        let (a, b) = (NodeBits::new(1), NodeBits::new(2));
        let mut on_a = SessionSeqs::new(a);
        let mut on_b = SessionSeqs::new(b);
        let from_a: [u64; 40] = core::array::from_fn(|_| on_a.next(NOW));
        let from_b: [u64; 40] = core::array::from_fn(|_| on_b.next(NOW));
        assert!(from_a.iter().all(|x| !from_b.contains(x)));
        // A takeover one millisecond after a connect on the other node.
        let on_a = next_session_seq(0, NOW, a);
        assert!(next_session_seq(0, NOW + 1, b) > on_a);
        // In the same millisecond the node bits decide: apart, in no particular order.
        assert_ne!(next_session_seq(0, NOW, b), on_a);
    }

    #[test]
    fn node_bits_from_names() {
        assert_eq!(NodeBits::new(64 + 3).get(), 3);
        assert!(NodeBits::of_name("anything").get() < 64);
        assert_eq!(NodeBits::of_name("tap-a"), NodeBits::of_name("tap-a"));
        assert_ne!(NodeBits::of_name("tap-a"), NodeBits::of_name("tap-b"));
        assert_ne!(NodeBits::of_name("tap-1"), NodeBits::of_name("tap-2"));
    }

    #[test]
    fn a_clock_past_2109_stays_below_2_pow_53() {
        let seq = next_session_seq(0, u64::MAX, NodeBits::new(63));
        assert!(seq < 1 << 53);
        assert!(next_session_seq(u64::MAX, NOW, NodeBits::new(0)) == u64::MAX);
    }
}
