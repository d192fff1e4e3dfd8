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
    assert_eq!(table.handle_publish("a/b", b"1", Q0), Retain::Stored);
    assert_eq!(table.handle_publish("a/b", b"22", Q1), Retain::Replaced);
    assert_eq!(table.len(), 1);
    let (i, message) = table.matching("a/#").next().unwrap();
    assert_eq!(
        message,
        RetainedMessage {
            topic: "a/b",
            payload: b"22",
            qos: Q1
        }
    );
    assert_eq!(table.get(i), Some(message));
    assert_eq!(table.handle_publish("a/b", b"", Q0), Retain::Cleared);
    assert!(table.is_empty());
    assert_eq!(table.get(i), None);
    assert_eq!(table.handle_publish("a/b", b"", Q0), Retain::NothingToClear);
}

#[test]
fn filters_match_with_wildcards_and_not_dollar_topics() {
    let mut table = Retained::<4, 32>::new();
    for topic in ["home/kitchen/temp", "home/hall/temp", "home/hall", "$SYS/x"] {
        assert_eq!(table.handle_publish(topic, b"v", Q0), Retain::Stored);
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
    assert_eq!(table.handle_publish("a", b"1", Q0), Retain::Stored);
    assert_eq!(table.handle_publish("b", b"2", Q0), Retain::Stored);
    assert!(table.is_full());
    assert_eq!(table.handle_publish("c", b"3", Q0), Retain::Full);
    assert!(Retain::Full.is_dropped());
    // A known topic may still change, and a cleared entry takes a new topic.
    assert_eq!(table.handle_publish("a", b"9", Q0), Retain::Replaced);
    assert_eq!(table.handle_publish("b", b"", Q0), Retain::Cleared);
    assert_eq!(table.handle_publish("c", b"3", Q0), Retain::Stored);
    assert_eq!(topics(&table, "#"), ["a", "c"]);
}

#[test]
fn a_message_too_large_is_not_kept_and_removes_the_older_one() {
    let mut table = Retained::<2, 8>::new();
    assert_eq!(table.handle_publish("t", b"1234567", Q0), Retain::Stored); // 8 bytes: fits
    assert_eq!(table.handle_publish("t", b"12345678", Q0), Retain::TooLarge);
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
fn the_memory_is_entries_times_bytes_plus_six() {
    assert_eq!(size_of::<Retained<4, 128>>(), 4 * (128 + 6));
}
