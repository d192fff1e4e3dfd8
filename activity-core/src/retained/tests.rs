//! The retained-message rules: store, replace, clear, match, and the two limits.

use super::*;

const Q0: QoS = QoS::AtMostOnce;
const Q1: QoS = QoS::AtLeastOnce;

fn topics<const N: usize, const B: usize>(table: &Retained<N, B>, filter: &str) -> Vec<String> {
    table
        .matching(filter)
        .map(|(_, m)| m.topic.to_owned())
        .collect()
}

#[test]
fn a_retained_publish_stores_replaces_and_an_empty_one_clears() {
    let mut table = Retained::<4, 32>::new();
    assert!(table.is_empty());
    assert_eq!(
        table.handle_publish("a/b", b"1", Q0, None, 0),
        Retain::Stored(0)
    );
    assert_eq!(
        table.handle_publish("a/b", b"22", Q1, None, 0),
        Retain::Replaced(0)
    );
    assert_eq!(table.len(), 1);
    let (i, message) = table.matching("a/#").next().unwrap();
    assert_eq!(
        message,
        RetainedMessage {
            topic: "a/b",
            payload: b"22",
            qos: Q1,
            expiry: None,
            stored_s: 0,
        }
    );
    assert_eq!(table.get(i), Some(message));
    assert_eq!(
        table.handle_publish("a/b", b"", Q0, None, 0),
        Retain::Cleared
    );
    assert!(table.is_empty());
    assert_eq!(table.get(i), None);
    assert_eq!(
        table.handle_publish("a/b", b"", Q0, None, 0),
        Retain::NothingToClear
    );
}

#[test]
fn filters_match_with_wildcards_and_not_dollar_topics() {
    let mut table = Retained::<4, 32>::new();
    let names = ["home/kitchen/temp", "home/hall/temp", "home/hall", "$SYS/x"];
    for (entry, topic) in names.into_iter().enumerate() {
        assert_eq!(
            table.handle_publish(topic, b"v", Q0, None, 0),
            Retain::Stored(entry)
        );
    }
    assert_eq!(
        topics(&table, "home/+/temp"),
        ["home/kitchen/temp", "home/hall/temp"]
    );
    assert_eq!(
        topics(&table, "home/hall/#"),
        ["home/hall/temp", "home/hall"]
    );
    assert_eq!(
        topics(&table, "#"),
        ["home/kitchen/temp", "home/hall/temp", "home/hall"]
    );
    assert_eq!(topics(&table, "$SYS/#"), ["$SYS/x"]);
    assert!(topics(&table, "nothing").is_empty());
}

#[test]
fn a_full_table_keeps_what_it_has() {
    let mut table = Retained::<2, 16>::new();
    assert_eq!(
        table.handle_publish("a", b"1", Q0, None, 0),
        Retain::Stored(0)
    );
    assert_eq!(
        table.handle_publish("b", b"2", Q0, None, 0),
        Retain::Stored(1)
    );
    assert!(table.is_full());
    assert_eq!(table.handle_publish("c", b"3", Q0, None, 0), Retain::Full);
    assert!(Retain::Full.is_dropped());
    // A known topic may still change, and a cleared entry takes a new topic.
    assert_eq!(
        table.handle_publish("a", b"9", Q0, None, 0),
        Retain::Replaced(0)
    );
    assert_eq!(table.handle_publish("b", b"", Q0, None, 0), Retain::Cleared);
    assert_eq!(
        table.handle_publish("c", b"3", Q0, None, 0),
        Retain::Stored(1)
    );
    assert_eq!(topics(&table, "#"), ["a", "c"]);
}

#[test]
fn a_message_too_large_is_not_kept_and_removes_the_older_one() {
    let mut table = Retained::<2, 8>::new();
    assert_eq!(
        table.handle_publish("t", b"1234567", Q0, None, 0),
        Retain::Stored(0)
    ); // 8 bytes: fits
    assert_eq!(
        table.handle_publish("t", b"12345678", Q0, None, 0),
        Retain::TooLarge
    );
    assert!(Retain::TooLarge.is_dropped());
    assert!(
        table.is_empty(),
        "the older message is no longer the last one"
    );
}

#[test]
fn retain_handling_decides_when_retained_messages_go() {
    let with = |retain_handling| SubscriptionOptions {
        retain_handling,
        ..SubscriptionOptions::new(Q1)
    };
    assert!(sends_retained(SubscriptionOptions::new(Q0), false));
    assert!(sends_retained(with(RetainHandling::OnSubscribe), false));
    assert!(sends_retained(with(RetainHandling::OnNewSubscribe), true));
    assert!(!sends_retained(with(RetainHandling::OnNewSubscribe), false));
    assert!(!sends_retained(with(RetainHandling::Never), true));
}

#[test]
fn the_memory_is_entries_times_bytes_plus_thirteen_rounded_to_four() {
    assert_eq!(size_of::<Retained<4, 128>>(), 4 * (128 + 16));
    assert_eq!(size_of::<Retained<4, 127>>(), 4 * (127 + 13));
}

#[test]
fn the_expiry_interval_counts_from_the_store_and_an_interval_of_0_clears() {
    let mut table = Retained::<2, 32>::new();
    assert_eq!(
        table.handle_publish("a", b"1", Q0, Some(3), 100),
        Retain::Stored(0)
    );
    let message = table.get(0).unwrap();
    assert_eq!((message.expiry, message.stored_s), (Some(3), 100));
    assert_eq!(message.waited_s(102), 2);
    assert!(!message.is_expired(102));
    assert!(message.is_expired(103));
    table.remove(0);
    assert!(table.is_empty());
    // Replacing restamps; without an interval it never expires.
    assert_eq!(
        table.handle_publish("a", b"1", Q0, Some(3), 100),
        Retain::Stored(0)
    );
    assert_eq!(
        table.handle_publish("a", b"2", Q0, None, 200),
        Retain::Replaced(0)
    );
    let message = table.get(0).unwrap();
    assert_eq!((message.expiry, message.stored_s), (None, 200));
    assert!(!message.is_expired(u32::MAX));
    // Stored just before the u32 clock wraps: the wait is still counted right.
    assert_eq!(
        table.handle_publish("b", b"1", Q0, Some(10), u32::MAX - 1),
        Retain::Stored(1)
    );
    let message = table.get(1).unwrap();
    assert_eq!(message.waited_s(5), 7);
    assert!(!message.is_expired(5));
    assert!(message.is_expired(8));
    // An interval of 0 has passed at once: it clears the topic like an empty payload.
    assert_eq!(
        table.handle_publish("b", b"1", Q0, Some(0), 9),
        Retain::Cleared
    );
    assert_eq!(
        table.handle_publish("b", b"1", Q0, Some(0), 9),
        Retain::NothingToClear
    );
    assert_eq!(table.len(), 1);
    // A full table: a new topic takes the entry of an expired message, not of a live one.
    assert_eq!(
        table.handle_publish("c", b"1", Q0, Some(5), 10),
        Retain::Stored(1)
    );
    assert_eq!(table.handle_publish("d", b"1", Q0, None, 14), Retain::Full);
    assert_eq!(
        table.handle_publish("d", b"1", Q0, None, 15),
        Retain::Stored(1)
    );
    assert_eq!(topics(&table, "#"), ["a", "d"]);
}
