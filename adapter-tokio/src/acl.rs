//! Topic access control lists: the ordered `[[acl]]` rules of the configuration and
//! `access.acl_default`, indexed, answering the engine's
//! [`Output::is_allowed`](activity_core::server::Output::is_allowed) for the broker and the tap
//! alike (the engine turns a refusal into the protocol's answer; see
//! [`activity_core::server::Access`]).
//!
//! # The rules
//!
//! The first rule that matches decides; none matching, `acl_default` does. A rule matches when
//!
//! - its `username` (if set) is the client's user name and its `client_id` (if set) the
//!   client's id;
//! - its action is the one asked (`all` matches both);
//! - its `topic`, with `%u` replaced by the user name and `%c` by the client id, matches: for a
//!   publish, as a filter matches the topic name; for a subscribe, an `allow` rule matches when
//!   its filter covers the requested one (every topic the requested filter matches, the rule's
//!   matches too: `devices/%c/#` covers `devices/7/cmd` and `devices/7/+`, not `#` nor
//!   `devices/+/cmd`), a `deny` rule when the two filters overlap (some topic matches both: a
//!   `deny subscribe devices/secret/#` refuses `devices/#` and `#`). A shared subscription is
//!   judged by the filter it shares (`$share/<group>/` taken off).
//!
//! A rule with `%u` does not match a client without a user name, and a substitute that holds
//! `/`, `+` or `#` matches nothing (a client id cannot widen its own rule).
//!
//! # The index
//!
//! Rules are indexed per action by whom they name (everyone, a user name, a client id) and
//! then by the first level of their topic (a literal, exactly `%c`, exactly `%u`, or anything
//! else: a wildcard or a partly substituted level). A check looks at the at most three groups
//! that apply to the client and, in each, at the rules whose first level can match the topic's;
//! it walks them in rule order and stops at the first match, or at a rule later than a match
//! found in another group. With no rules at all, a check is one comparison.

use std::collections::HashMap;

use activity_core::server::Action;
use activity_core::topic;

/// What a rule does with what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Allowed.
    Allow,
    /// Refused.
    Deny,
}

/// What a rule is about: `publish`, `subscribe` or `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Publishes (and last wills).
    Publish,
    /// Subscriptions.
    Subscribe,
    /// Both.
    All,
}

impl RuleAction {
    fn covers(self, action: Action) -> bool {
        matches!(
            (self, action),
            (RuleAction::All, _)
                | (RuleAction::Publish, Action::Publish)
                | (RuleAction::Subscribe, Action::Subscribe)
        )
    }
}

/// One rule, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Allow or deny.
    pub permission: Permission,
    /// Publish, subscribe or both.
    pub action: RuleAction,
    /// A topic filter, with `%u` (user name) and `%c` (client id) substituted.
    pub topic: String,
    /// The rule applies to this user only.
    pub username: Option<String>,
    /// The rule applies to this client id only.
    pub client_id: Option<String>,
}

/// Why a rule's topic was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not a valid MQTT topic filter.
    #[error("not a valid topic filter ({0})")]
    Filter(topic::TopicError),
    /// A `%` that starts neither `%u` nor `%c`.
    #[error("a `%` must start `%u` (user name) or `%c` (client id)")]
    Percent,
    /// A `$share/` filter: rules name the filter a shared subscription shares.
    #[error("rules name the shared filter without its `$share/<group>/` prefix")]
    Shared,
}

/// Checks a rule's topic filter.
pub fn check_rule_topic(filter: &str) -> Result<(), RuleError> {
    topic::validate_topic_filter(filter).map_err(RuleError::Filter)?;
    if filter.starts_with(topic::SHARED_PREFIX) {
        return Err(RuleError::Shared);
    }
    let mut rest = filter;
    while let Some(at) = rest.find('%') {
        rest = &rest[at + 1..];
        if !(rest.starts_with('u') || rest.starts_with('c')) {
            return Err(RuleError::Percent);
        }
    }
    Ok(())
}

/// Rules indexed by the first level of their topic, in rule order.
#[derive(Debug, Default)]
struct Levels {
    /// Rules whose first level is this literal.
    literal: HashMap<String, Vec<u32>>,
    /// Rules whose first level is exactly `%c`.
    client: Vec<u32>,
    /// Rules whose first level is exactly `%u`.
    user: Vec<u32>,
    /// Rules whose first level is a wildcard or partly substituted.
    other: Vec<u32>,
    /// The deny rules of `literal`, `client` and `user`, for a requested filter whose first
    /// level is a wildcard (which may overlap any of them).
    denies: Vec<u32>,
}

impl Levels {
    fn add(&mut self, index: u32, rule: &Rule) {
        let first = rule.topic.split('/').next().unwrap_or_default();
        let literal = match first {
            "%c" => {
                self.client.push(index);
                true
            }
            "%u" => {
                self.user.push(index);
                true
            }
            _ if first.contains(['%', '+', '#']) => {
                self.other.push(index);
                false
            }
            _ => {
                self.literal
                    .entry(first.to_owned())
                    .or_default()
                    .push(index);
                true
            }
        };
        if literal && rule.permission == Permission::Deny {
            self.denies.push(index);
        }
    }
}

/// The rules of one action, by whom they name.
#[derive(Debug, Default)]
struct Index {
    everyone: Levels,
    users: HashMap<String, Levels>,
    clients: HashMap<String, Levels>,
}

/// The ordered rules, indexed, and the default.
#[derive(Debug)]
pub struct Acl {
    rules: Vec<Rule>,
    default: Permission,
    publish: Index,
    subscribe: Index,
}

impl Default for Acl {
    /// No rules, everything allowed.
    fn default() -> Self {
        Acl::new(Vec::new(), Permission::Allow)
    }
}

/// One client's question, with what substitution needs.
struct Question<'a> {
    action: Action,
    client_id: &'a str,
    username: Option<&'a str>,
    /// The topic name, or the requested filter (without `$share/<group>/`).
    topic: &'a str,
    /// Whether `%c` / `%u` may be substituted (a value without `/`, `+`, `#`).
    client_ok: bool,
    user: Option<&'a str>,
}

impl Acl {
    /// The rules in their order, `default` when none matches.
    pub fn new(rules: Vec<Rule>, default: Permission) -> Self {
        let mut publish = Index::default();
        let mut subscribe = Index::default();
        for (index, rule) in (0u32..).zip(&rules) {
            for (index_of, action) in [
                (&mut publish, Action::Publish),
                (&mut subscribe, Action::Subscribe),
            ] {
                if !rule.action.covers(action) {
                    continue;
                }
                let levels = match (&rule.client_id, &rule.username) {
                    (Some(id), _) => index_of.clients.entry(id.clone()).or_default(),
                    (None, Some(user)) => index_of.users.entry(user.clone()).or_default(),
                    (None, None) => &mut index_of.everyone,
                };
                levels.add(index, rule);
            }
        }
        Acl {
            rules,
            default,
            publish,
            subscribe,
        }
    }

    /// Whether there are no rules (every check answers the default).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `client_id`, logged in as `username`, may `action` on `topic` (a topic name to
    /// publish on, or a filter to subscribe to).
    pub fn is_allowed(
        &self,
        action: Action,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
    ) -> bool {
        if self.rules.is_empty() {
            return self.default == Permission::Allow;
        }
        let topic = match action {
            Action::Publish => topic,
            Action::Subscribe => topic::shared_filter(topic).1,
        };
        let question = Question {
            action,
            client_id,
            username,
            topic,
            client_ok: is_substitutable(client_id),
            user: username.filter(|u| is_substitutable(u)),
        };
        let index = match action {
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
        };
        let first = topic.split('/').next().unwrap_or_default();
        let mut best: Option<u32> = None;
        let groups = [
            Some(&index.everyone),
            username.and_then(|u| index.users.get(u)),
            index.clients.get(client_id),
        ];
        for levels in groups.into_iter().flatten() {
            if action == Action::Subscribe && first.starts_with(['+', '#']) {
                self.scan(&levels.other, &question, &mut best);
                self.scan(&levels.denies, &question, &mut best);
                continue;
            }
            if let Some(list) = levels.literal.get(first) {
                self.scan(list, &question, &mut best);
            }
            if question.client_ok && first == client_id {
                self.scan(&levels.client, &question, &mut best);
            }
            if question.user == Some(first) {
                self.scan(&levels.user, &question, &mut best);
            }
            self.scan(&levels.other, &question, &mut best);
        }
        let decided = best
            .and_then(|i| self.rules.get(i as usize))
            .map_or(self.default, |rule| rule.permission);
        decided == Permission::Allow
    }

    /// The first rule of `list` (in rule order) that matches, if earlier than `best`.
    fn scan(&self, list: &[u32], question: &Question<'_>, best: &mut Option<u32>) {
        for &index in list {
            if best.is_some_and(|b| index >= b) {
                return;
            }
            if self
                .rules
                .get(index as usize)
                .is_some_and(|rule| rule_matches(rule, question))
            {
                *best = Some(index);
                return;
            }
        }
    }
}

/// Whether a `%c` / `%u` substitute keeps a filter's levels: no `/`, `+` or `#`.
fn is_substitutable(value: &str) -> bool {
    !value.contains(['/', '+', '#'])
}

fn rule_matches(rule: &Rule, q: &Question<'_>) -> bool {
    if rule
        .username
        .as_deref()
        .is_some_and(|u| Some(u) != q.username)
        || rule.client_id.as_deref().is_some_and(|c| c != q.client_id)
    {
        return false;
    }
    let pattern = rule.topic.as_str();
    match (q.action, rule.permission) {
        (Action::Publish, _) => filter_matches(pattern, q.topic, q),
        (Action::Subscribe, Permission::Allow) => covers(pattern, q.topic, q),
        (Action::Subscribe, Permission::Deny) => overlaps(pattern, q.topic, q),
    }
}

/// Whether the rule's literal level `pattern` (with `%c`, `%u`) equals `level`.
fn level_eq(pattern: &str, level: &str, q: &Question<'_>) -> bool {
    if !pattern.contains('%') {
        return pattern == level;
    }
    let mut rest = level;
    let mut parts = pattern.split('%');
    let Some(head) = parts.next() else {
        return false;
    };
    let Some(after) = rest.strip_prefix(head) else {
        return false;
    };
    rest = after;
    for part in parts {
        // `check_rule_topic` refused any `%` not followed by `u` or `c`.
        let (value, tail) = match part.split_at_checked(1) {
            Some(("c", tail)) if q.client_ok => (q.client_id, tail),
            Some(("u", tail)) => match q.user {
                Some(user) => (user, tail),
                None => return false,
            },
            _ => return false,
        };
        let Some(after) = rest.strip_prefix(value).and_then(|r| r.strip_prefix(tail)) else {
            return false;
        };
        rest = after;
    }
    rest.is_empty()
}

/// Whether the rule's filter `pattern` matches topic name `topic` (section 4.7).
fn filter_matches(pattern: &str, topic: &str, q: &Question<'_>) -> bool {
    let mut pattern = pattern.split('/');
    let mut topic = topic.split('/');
    loop {
        match (pattern.next(), topic.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(p), Some(t)) if level_eq(p, t, q) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether the rule's filter `pattern` covers the requested filter `filter`: every topic name
/// `filter` matches, `pattern` matches.
fn covers(pattern: &str, filter: &str, q: &Question<'_>) -> bool {
    let mut pattern = pattern.split('/');
    let mut filter = filter.split('/');
    loop {
        match (pattern.next(), filter.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(f)) if f != "#" => {}
            (Some(_), Some("+" | "#")) => return false,
            (Some(p), Some(f)) if level_eq(p, f, q) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic name matches both the rule's filter `pattern` and `filter`.
fn overlaps(pattern: &str, filter: &str, q: &Question<'_>) -> bool {
    let mut pattern = pattern.split('/');
    let mut filter = filter.split('/');
    loop {
        match (pattern.next(), filter.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(f)) if level_eq(p, f, q) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
