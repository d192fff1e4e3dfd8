//! The outbox's rules: order, PUBACK, DUP after a reconnect, the drop policies.

use super::*;
use crate::codec::decode;

/// One decoded PUBLISH: (topic, payload, qos, dup, pkid).
type Sent = (String, Vec<u8>, QoS, bool, Option<u16>);

/// The packets in `bytes`.
fn packets(mut bytes: &[u8]) -> Vec<Sent> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (packet, used) = decode(bytes, 4096).unwrap().unwrap();
        let Packet::Publish(p) = packet else {
            panic!("not a PUBLISH: {packet:?}");
        };
        out.push((p.topic.to_owned(), p.payload.to_vec(), p.qos, p.dup, p.pkid));
        bytes = &bytes[used..];
    }
    out
}

fn drain_all<const N: usize>(outbox: &mut Outbox<N>, chunk: usize) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = outbox.drain_into(&mut buf);
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&buf[..n]);
    }
}

const Q1: QoS = QoS::AtLeastOnce;
const Q0: QoS = QoS::AtMostOnce;
const NEWEST: DropPolicy = DropPolicy::DropNewest;

#[test]
fn qos1_packets_stay_until_their_puback() {
    let mut outbox = Outbox::<256>::new();
    outbox.push("a/1", b"one", Q1, false, NEWEST).unwrap();
    outbox.push("a/2", b"two", Q1, true, NEWEST).unwrap();
    let sent = packets(&drain_all(&mut outbox, 5));
    assert_eq!(
        sent.iter()
            .map(|p| (p.0.as_str(), p.2, p.3, p.4))
            .collect::<Vec<_>>(),
        [("a/1", Q1, false, Some(1)), ("a/2", Q1, false, Some(2))]
    );
    assert!(!outbox.has_unsent());
    assert!(!outbox.is_empty());
    assert!(!outbox.handle_puback(7), "an unknown id is ignored");
    assert!(outbox.handle_puback(2), "out of order is fine");
    assert!(outbox.handle_puback(1));
    assert!(outbox.is_empty());
    assert!(!outbox.handle_puback(1), "acknowledged once");
}

#[test]
fn unacknowledged_packets_go_again_with_dup_in_order() {
    let mut outbox = Outbox::<256>::new();
    for i in 0..3 {
        outbox
            .push(&format!("t/{i}"), b"x", Q1, false, NEWEST)
            .unwrap();
    }
    let first = drain_all(&mut outbox, 64);
    assert_eq!(packets(&first).len(), 3);
    assert!(outbox.handle_puback(2));
    // A fourth is queued but never sent before the connection breaks.
    outbox.push("t/3", b"x", Q1, false, NEWEST).unwrap();
    let rewound = outbox.handle_disconnect();
    assert_eq!(
        rewound,
        Rewound {
            resent: 2,
            cut_off: false
        }
    );
    let again = packets(&drain_all(&mut outbox, 7));
    assert_eq!(
        again
            .iter()
            .map(|p| (p.0.as_str(), p.3, p.4))
            .collect::<Vec<_>>(),
        [
            ("t/0", true, Some(1)),
            ("t/2", true, Some(3)),
            ("t/3", false, Some(4))
        ]
    );
    for id in [1, 3, 4] {
        assert!(outbox.handle_puback(id));
    }
    assert!(outbox.is_empty());
}

#[test]
fn a_half_sent_qos1_packet_is_sent_whole_again() {
    let mut outbox = Outbox::<256>::new();
    outbox.push("a", b"0123456789", Q1, false, NEWEST).unwrap();
    let mut part = [0u8; 6];
    assert_eq!(outbox.drain_into(&mut part), 6);
    assert_eq!(outbox.handle_disconnect(), Rewound::default());
    let again = packets(&drain_all(&mut outbox, 64));
    // Never received whole: not a re-delivery, no DUP.
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].1.as_slice(), again[0].3),
        (&b"0123456789"[..], false)
    );
}

#[test]
fn qos0_packets_leave_once_sent_and_a_cut_one_is_dropped() {
    let mut outbox = Outbox::<256>::new();
    outbox.push("a", b"first", Q0, false, NEWEST).unwrap();
    outbox.push("b", b"second", Q0, false, NEWEST).unwrap();
    let len_first = outbox.len() / 2; // both are 2 + 2 + 1 + 5/6 bytes
    let mut out = [0u8; 12];
    assert_eq!(outbox.drain_into(&mut out), 12);
    assert!(outbox.len() < 2 * len_first + 2, "the first left");
    assert_eq!(
        outbox.handle_disconnect(),
        Rewound {
            resent: 0,
            cut_off: true
        }
    );
    assert!(outbox.is_empty());
    assert_eq!(packets(&out[..10]).len(), 1);
}

#[test]
fn drop_newest_keeps_the_queue() {
    let mut outbox = Outbox::<32>::new();
    outbox.push("t", &[1; 20], Q1, false, NEWEST).unwrap(); // 2 + 2 + 1 + 2 + 20 = 27
    assert_eq!(outbox.push("t", &[2; 2], Q1, false, NEWEST), Err(Rejected));
    assert_eq!(
        outbox.push("t", &[3; 40], Q1, false, DropPolicy::DropOldest),
        Err(Rejected)
    );
    assert_eq!(
        outbox.len(),
        27,
        "a message too large for the queue drops nothing"
    );
    let sent = packets(&drain_all(&mut outbox, 64));
    assert_eq!(sent[0].1, [1; 20]);
}

#[test]
fn drop_oldest_spares_a_packet_in_transit() {
    let mut outbox = Outbox::<40>::new();
    outbox.push("t", &[1; 8], Q1, false, NEWEST).unwrap(); // 15 bytes
    outbox.push("t", &[2; 8], Q1, false, NEWEST).unwrap();
    let mut part = [0u8; 4];
    assert_eq!(outbox.drain_into(&mut part), 4); // the first is in transit
    assert_eq!(
        outbox.push("t", &[3; 8], Q1, false, DropPolicy::DropOldest),
        Ok(1)
    );
    let rest = drain_all(&mut outbox, 64);
    let mut stream = part.to_vec();
    stream.extend_from_slice(&rest);
    let sent = packets(&stream);
    assert_eq!(
        sent.iter().map(|p| p.1[0]).collect::<Vec<_>>(),
        [1, 3],
        "the second went, the first went on whole"
    );
    // With everything in transit nothing can go.
    let mut outbox = Outbox::<16>::new();
    outbox.push("t", &[1; 8], Q1, false, NEWEST).unwrap();
    assert_eq!(outbox.drain_into(&mut part), 4);
    assert_eq!(
        outbox.push("t", &[2; 8], Q1, false, DropPolicy::DropOldest),
        Err(Rejected)
    );
}

#[test]
fn packet_ids_in_use_are_skipped_after_a_wrap() {
    let mut outbox = Outbox::<64>::new();
    outbox.push("t", b"", Q1, false, NEWEST).unwrap(); // id 1, never acknowledged
    outbox.last_pkid = u16::MAX - 1;
    outbox.push("t", b"", Q1, false, NEWEST).unwrap(); // 65535
    outbox.push("t", b"", Q1, false, NEWEST).unwrap(); // wraps past 0 and 1: 2
    let ids: Vec<_> = packets(&drain_all(&mut outbox, 64))
        .iter()
        .map(|p| p.4)
        .collect();
    assert_eq!(ids, [Some(1), Some(u16::MAX), Some(2)]);
}

#[test]
fn a_cut_qos0_packet_between_qos1_ones_leaves_the_next_unsent() {
    let mut outbox = Outbox::<256>::new();
    outbox.push("a", b"1", Q1, false, NEWEST).unwrap();
    outbox.push("b", b"2", Q0, false, NEWEST).unwrap();
    outbox.push("c", b"3", Q1, false, NEWEST).unwrap();
    let mut out = [0u8; 9]; // "a" (8 bytes) and one byte of "b"
    assert_eq!(outbox.drain_into(&mut out), 9);
    assert_eq!(
        outbox.handle_disconnect(),
        Rewound {
            resent: 1,
            cut_off: true
        }
    );
    let again = packets(&drain_all(&mut outbox, 64));
    assert_eq!(
        again
            .iter()
            .map(|p| (p.0.as_str(), p.3))
            .collect::<Vec<_>>(),
        [("a", true), ("c", false)]
    );
}

#[test]
fn the_memory_is_the_buffer_and_three_words() {
    // The module docs: N bytes and 12 of bookkeeping on 32-bit targets (24 on 64-bit).
    assert!(size_of::<Outbox<512>>() <= 512 + 3 * size_of::<usize>());
}

#[test]
fn the_rest_in_transit_is_what_is_left_of_a_packet_sent_in_part() {
    let mut outbox = Outbox::<256>::new();
    assert_eq!(outbox.rest_in_transit(), 0, "nothing queued");
    outbox.push("a/1", b"one", Q1, false, NEWEST).unwrap();
    outbox.push("a/2", b"two", Q0, false, NEWEST).unwrap();
    let first = outbox.len() - 10; // a/2 at QoS 0: 2 + 2 + 3 + 3 bytes
    assert_eq!(outbox.rest_in_transit(), 0, "nothing handed over");
    let mut buf = [0u8; 256];
    assert_eq!(outbox.drain_into(&mut buf[..3]), 3);
    assert_eq!(outbox.rest_in_transit(), first - 3);
    // Drained up to the rest: at the boundary, the QoS 1 packet kept for its PUBACK.
    let rest = outbox.rest_in_transit();
    assert_eq!(outbox.drain_into(&mut buf[..rest]), rest);
    assert_eq!(outbox.rest_in_transit(), 0);
    assert!(outbox.has_unsent());
    // Into the QoS 0 packet, then past it (it leaves the queue).
    assert_eq!(outbox.drain_into(&mut buf[..4]), 4);
    assert_eq!(outbox.rest_in_transit(), 6);
    assert_eq!(outbox.drain_into(&mut buf), 6);
    assert_eq!(outbox.rest_in_transit(), 0);
    assert!(!outbox.has_unsent());
    // A reconnect starts again at a boundary.
    outbox.handle_disconnect();
    assert_eq!(outbox.drain_into(&mut buf[..1]), 1);
    assert_eq!(outbox.rest_in_transit(), first - 1);
}
