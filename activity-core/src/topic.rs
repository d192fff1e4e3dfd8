//! MQTT 3.1.1 topic names, topic filters and filter matching (section 4.7).
//!
//! A *topic name* is what a PUBLISH carries: no wildcards. A *topic filter* is what a
//! SUBSCRIBE or UNSUBSCRIBE carries: `+` matches exactly one level, `#` matches the parent
//! level and every level below it. Levels are separated by `/`; empty levels are real levels
//! (`/finance` has two levels, the first one empty), and names are case sensitive (4.7.3).

use core::fmt;

/// The longest topic name or filter the wire can carry, in bytes (section 1.5.3).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a string is not a valid topic name or topic filter (section 4.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TopicError {
    /// The name or filter is empty; it must be at least one character long (4.7.3).
    Empty,
    /// The name or filter is longer than 65535 bytes (4.7.3, 1.5.3).
    TooLong,
    /// The name or filter contains U+0000 (4.7.3).
    NullCharacter,
    /// A topic name contains `+` or `#`; wildcards are only allowed in filters (4.7.1).
    WildcardInName,
    /// A filter has `#` that is not the whole last level, or `+` that is not a whole level
    /// (4.7.1.2, 4.7.1.3).
    MisplacedWildcard,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "topic is empty",
            TopicError::TooLong => "topic is longer than 65535 bytes",
            TopicError::NullCharacter => "topic contains U+0000",
            TopicError::WildcardInName => "topic name contains a wildcard",
            TopicError::MisplacedWildcard => {
                "topic filter has a wildcard that is not a whole level"
            }
        })
    }
}

impl core::error::Error for TopicError {}

/// Checks the rules every topic name and filter share: non-empty, at most 65535 bytes, no NUL.
fn validate_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if has_nul(s) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks that `name` is a valid topic name: what a PUBLISH may carry (section 4.7).
///
/// A topic name is non-empty, at most 65535 bytes, and contains neither a wildcard (`+`, `#`)
/// nor U+0000.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    // One pass over the bytes (every delivery is checked): the three bytes are ASCII, so they
    // never occur inside a multi-byte UTF-8 character. NUL is reported before a wildcard, as
    // `validate_common` would.
    let mut wildcard = false;
    for &b in name.as_bytes() {
        match b {
            0 => return Err(TopicError::NullCharacter),
            b'+' | b'#' => wildcard = true,
            _ => {}
        }
    }
    if wildcard {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks that `filter` is a valid topic filter: what a SUBSCRIBE may carry (section 4.7).
///
/// A topic filter is non-empty, at most 65535 bytes, contains no U+0000, has `#` only as the
/// whole last level (4.7.1.2) and `+` only as a whole level (4.7.1.3).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    validate_common(filter)?;
    let mut levels = levels(filter).peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        let wildcard_ok = match level {
            b"#" => is_last,
            b"+" => true,
            _ => !level.iter().any(|&b| is_wildcard(b)),
        };
        if !wildcard_ok {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// Whether `s` holds U+0000 (which MQTT strings may not, section 1.5.3).
///
/// A byte loop, not `str::contains('\0')`: that links `core`'s `memchr` (about 190 B of flash on
/// a Cortex-M) for strings that are mostly a few dozen bytes.
pub(crate) fn has_nul(s: &str) -> bool {
    s.bytes().any(|b| b == 0)
}

/// The levels of a topic name or filter (split at `/`), as bytes.
///
/// Bytes, not `str::split('/')`: a level is compared or scanned for the ASCII wildcards only,
/// and the byte split needs none of `core`'s character searchers (about 400 B of flash on a
/// Cortex-M with the two-character search the wildcard check took).
fn levels(s: &str) -> impl Iterator<Item = &[u8]> {
    s.as_bytes().split(|&b| b == b'/')
}

/// Whether `b` is one of the wildcards `+` and `#`.
fn is_wildcard(b: u8) -> bool {
    b == b'+' || b == b'#'
}

/// Whether `s` starts with a wildcard, `+` or `#` (for a valid filter: its first level is one).
pub(crate) fn starts_with_wildcard(s: &str) -> bool {
    s.as_bytes().first().is_some_and(|&b| is_wildcard(b))
}

/// The prefix of shared subscriptions (`$share/<group>/<filter>`, MQTT 5.0 section 4.8.2),
/// which a router serves although it starts with `$`.
pub const SHARED_PREFIX: &str = "$share/";

/// A shared subscription's group and the filter it shares (`$share/<group>/<filter>`, MQTT 5.0
/// section 4.8.2), or no group and `filter` itself for any other filter. A `$share/` filter
/// without a second `/` comes back whole (no valid shared subscription).
pub fn shared_filter(filter: &str) -> (Option<&str>, &str) {
    // At the first `/` byte (ASCII: never inside a multi-byte character), without `core`'s
    // character searcher.
    let split = filter.strip_prefix(SHARED_PREFIX).and_then(|rest| {
        let at = rest.bytes().position(|b| b == b'/')?;
        Some((rest.get(..at)?, rest.get(at + 1..)?))
    });
    match split {
        Some((group, shared)) => (Some(group), shared),
        None => (None, filter),
    }
}

/// Whether topic name `topic` belongs to the server: it starts with `$` (section 4.7.2), so
/// clients do not publish there.
pub fn is_server_topic(topic: &str) -> bool {
    topic.starts_with('$')
}

/// Whether topic filter `filter` names server topics (it starts with `$`, section 4.7.2), other
/// than a shared subscription ([`SHARED_PREFIX`]).
pub fn is_server_filter(filter: &str) -> bool {
    filter.starts_with('$') && !filter.starts_with(SHARED_PREFIX)
}

/// Tells whether the topic filter `filter` matches the topic name `topic` (section 4.7).
///
/// `+` matches exactly one level (possibly empty), `#` matches its parent level and every level
/// below it, so `a/#` matches `a`. A topic starting with `$` is not matched by a filter whose
/// first level is a wildcard (4.7.2). Returns `false` when `filter` is not a valid topic filter
/// or `topic` is not a valid topic name.
pub fn matches(filter: &str, topic: &str) -> bool {
    if validate_topic_filter(filter).is_err() || validate_topic_name(topic).is_err() {
        return false;
    }
    // A valid filter whose first character is a wildcard has that wildcard as its whole first
    // level.
    if topic.starts_with('$') && starts_with_wildcard(filter) {
        return false;
    }
    let mut filter_levels = levels(filter);
    let mut topic_levels = levels(topic);
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some(b"#"), _) => return true,
            (Some(b"+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "/",
            "a/b",
            "/finance",
            "finance/",
            "Accounts payable",
            "$SYS/x",
            "a//b",
        ] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a+b"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        // NUL wins over a wildcard wherever each is.
        assert_eq!(validate_topic_name("a+b\0"), Err(TopicError::NullCharacter));
        assert_eq!(validate_topic_name("\0#"), Err(TopicError::NullCharacter));
        let long = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&long), Ok(()));
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic_name(&too_long), Err(TopicError::TooLong));
    }

    #[test]
    fn topic_filters_spec_examples() {
        // Section 4.7.1.2: multi-level wildcard.
        for ok in ["#", "sport/tennis/#", "sport/#", "sport/tennis/player1/#"] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "#/a",
            "##",
            "a/#b",
        ] {
            assert_eq!(
                validate_topic_filter(bad),
                Err(TopicError::MisplacedWildcard),
                "{bad:?}"
            );
        }
        // Section 4.7.1.3: single-level wildcard.
        for ok in [
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "+/+",
            "/+",
            "a//+",
            "/",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok:?}");
        }
        for bad in ["sport+", "+a", "a/b+/c", "++"] {
            assert_eq!(
                validate_topic_filter(bad),
                Err(TopicError::MisplacedWildcard),
                "{bad:?}"
            );
        }
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_filter("a/\0"),
            Err(TopicError::NullCharacter)
        );
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic_filter(&too_long), Err(TopicError::TooLong));
    }

    #[test]
    fn matching_multi_level_spec_examples() {
        // Section 4.7.1.2.
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("#", "/"));
    }

    #[test]
    fn matching_single_level_spec_examples() {
        // Section 4.7.1.3.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/tennis/#", "sport/tennis"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
    }

    #[test]
    fn matching_dollar_topics() {
        // Section 4.7.2.
        assert!(!matches("#", "$SYS/monitor/Clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$SYS"));
        // Only a leading `$` is special.
        assert!(matches("+/+", "a/$b"));
    }

    #[test]
    fn matching_is_exact_and_case_sensitive() {
        // Section 4.7.3.
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(!matches("/finance", "finance"));
        assert!(!matches("finance", "finance/"));
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn matching_invalid_inputs_is_false() {
        assert!(!matches("a/#/b", "a/x/b"));
        assert!(!matches("a+", "a+"));
        assert!(!matches("#", ""));
        assert!(!matches("", ""));
        assert!(!matches("a/+", "a/+"));
    }

    /// A valid topic name: up to 5 levels of short, possibly empty, wildcard-free text.
    fn topic_name() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-zA-Z0-9 $é_-]{0,4}", 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("non-empty", |s| !s.is_empty())
    }

    proptest! {
        #![proptest_config(crate::proptest_cases::config(ProptestConfig::default()))]

        #[test]
        fn a_name_matches_itself(topic in topic_name()) {
            prop_assert_eq!(validate_topic_name(&topic), Ok(()));
            prop_assert_eq!(validate_topic_filter(&topic), Ok(()));
            prop_assert!(matches(&topic, &topic));
        }

        #[test]
        fn hash_matches_every_non_dollar_topic(topic in topic_name()) {
            prop_assert_eq!(matches("#", &topic), !topic.starts_with('$'));
        }

        #[test]
        fn plus_per_level_matches(topic in topic_name()) {
            let levels = topic.split('/').count();
            let filter = vec!["+"; levels].join("/");
            prop_assert_eq!(matches(&filter, &topic), !topic.starts_with('$'));
            let parent = format!("{filter}/+");
            prop_assert!(!matches(&parent, &topic));
        }

        #[test]
        fn prefix_with_hash_matches(topic in topic_name(), cut in 0usize..5) {
            let levels: Vec<&str> = topic.split('/').collect();
            let keep = cut.min(levels.len());
            if keep > 0 {
                let filter = format!("{}/#", levels[..keep].join("/"));
                prop_assert!(matches(&filter, &topic));
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(filter in "[a+#/$\\x00]{0,8}", topic in "[a+#/$\\x00]{0,8}") {
            let m = matches(&filter, &topic);
            if m {
                prop_assert!(validate_topic_filter(&filter).is_ok());
                prop_assert!(validate_topic_name(&topic).is_ok());
            }
        }
    }
}
