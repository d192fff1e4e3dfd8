use super::*;

fn rule(permission: Permission, action: RuleAction, topic: &str) -> Rule {
    Rule {
        permission,
        action,
        topic: topic.to_owned(),
        username: None,
        client_id: None,
    }
}

fn allow(action: RuleAction, topic: &str) -> Rule {
    rule(Permission::Allow, action, topic)
}

fn deny(action: RuleAction, topic: &str) -> Rule {
    rule(Permission::Deny, action, topic)
}

fn publish(acl: &Acl, client: &str, user: Option<&str>, topic: &str) -> bool {
    acl.is_allowed(Action::Publish, client, user, topic)
}

fn subscribe(acl: &Acl, client: &str, user: Option<&str>, filter: &str) -> bool {
    acl.is_allowed(Action::Subscribe, client, user, filter)
}

#[test]
fn no_rules_answer_the_default() {
    let acl = Acl::default();
    assert!(acl.is_empty());
    assert!(publish(&acl, "c", None, "a/b"));
    let acl = Acl::new(Vec::new(), Permission::Deny);
    assert!(!publish(&acl, "c", None, "a/b"));
    assert!(!subscribe(&acl, "c", None, "#"));
}

#[test]
fn client_id_and_username_substitute() {
    let acl = Acl::new(
        vec![
            allow(RuleAction::All, "devices/%c/#"),
            allow(RuleAction::Publish, "users/%u/out"),
            allow(RuleAction::Subscribe, "%c/inbox"),
        ],
        Permission::Deny,
    );
    assert!(publish(&acl, "7", None, "devices/7/state"));
    assert!(publish(&acl, "7", None, "devices/7"));
    assert!(!publish(&acl, "7", None, "devices/8/state"));
    assert!(publish(&acl, "x", Some("ann"), "users/ann/out"));
    assert!(!publish(&acl, "x", Some("bob"), "users/ann/out"));
    assert!(
        !publish(&acl, "x", None, "users/ann/out"),
        "no user name, no %u"
    );
    assert!(subscribe(&acl, "7", None, "7/inbox"));
    assert!(!subscribe(&acl, "8", None, "7/inbox"));
    // A client id with a wildcard or a `/` cannot widen its rule.
    assert!(!publish(&acl, "a/b", None, "devices/a/b/x"));
    assert!(!subscribe(&acl, "+", None, "devices/+/#"));
}

#[test]
fn a_partly_substituted_level_matches_exactly() {
    let acl = Acl::new(
        vec![allow(RuleAction::Publish, "dev-%c-%u/x")],
        Permission::Deny,
    );
    assert!(publish(&acl, "7", Some("ann"), "dev-7-ann/x"));
    assert!(!publish(&acl, "7", Some("ann"), "dev-7-annx/x"));
    assert!(!publish(&acl, "7", Some("ann"), "dev-8-ann/x"));
}

#[test]
fn username_and_client_id_restrict_a_rule() {
    let mut by_user = allow(RuleAction::Publish, "devices/7/#");
    by_user.username = Some("sensor-7".into());
    let mut by_client = allow(RuleAction::Publish, "gateways/#");
    by_client.client_id = Some("gw-1".into());
    let mut both = allow(RuleAction::Publish, "both");
    both.client_id = Some("c".into());
    both.username = Some("u".into());
    let acl = Acl::new(vec![by_user, by_client, both], Permission::Deny);
    assert!(publish(&acl, "any", Some("sensor-7"), "devices/7/t"));
    assert!(!publish(&acl, "any", Some("sensor-8"), "devices/7/t"));
    assert!(publish(&acl, "gw-1", None, "gateways/a"));
    assert!(!publish(&acl, "gw-2", None, "gateways/a"));
    assert!(publish(&acl, "c", Some("u"), "both"));
    assert!(!publish(&acl, "c", Some("v"), "both"));
    assert!(!publish(&acl, "d", Some("u"), "both"));
}

#[test]
fn the_first_match_wins() {
    let acl = Acl::new(
        vec![
            deny(RuleAction::Publish, "devices/secret/#"),
            allow(RuleAction::Publish, "devices/#"),
            deny(RuleAction::Publish, "devices/late"),
        ],
        Permission::Deny,
    );
    assert!(!publish(&acl, "c", None, "devices/secret/x"));
    assert!(publish(&acl, "c", None, "devices/open"));
    assert!(
        publish(&acl, "c", None, "devices/late"),
        "the allow came first"
    );
    assert!(!publish(&acl, "c", None, "other"));
}

#[test]
fn an_earlier_rule_in_another_group_wins() {
    let mut late = allow(RuleAction::Publish, "a/b");
    late.client_id = Some("c".into());
    let acl = Acl::new(
        vec![deny(RuleAction::Publish, "+/b"), late],
        Permission::Allow,
    );
    assert!(!publish(&acl, "c", None, "a/b"));
}

#[test]
fn actions_are_apart() {
    let acl = Acl::new(
        vec![
            allow(RuleAction::Subscribe, "s/#"),
            allow(RuleAction::Publish, "p/#"),
        ],
        Permission::Deny,
    );
    assert!(subscribe(&acl, "c", None, "s/x"));
    assert!(!publish(&acl, "c", None, "s/x"));
    assert!(publish(&acl, "c", None, "p/x"));
    assert!(!subscribe(&acl, "c", None, "p/x"));
}

#[test]
fn an_allow_must_cover_the_filter() {
    let acl = Acl::new(
        vec![allow(RuleAction::Subscribe, "devices/%c/#")],
        Permission::Deny,
    );
    for filter in [
        "devices/7/#",
        "devices/7/cmd",
        "devices/7/+",
        "devices/7",
        "$share/g/devices/7/#",
    ] {
        assert!(subscribe(&acl, "7", None, filter), "{filter}");
    }
    for filter in ["#", "+/7/#", "devices/#", "devices/+/cmd", "devices/8/cmd"] {
        assert!(!subscribe(&acl, "7", None, filter), "{filter}");
    }
    let plus = Acl::new(vec![allow(RuleAction::Subscribe, "a/+")], Permission::Deny);
    assert!(subscribe(&plus, "c", None, "a/+"));
    assert!(subscribe(&plus, "c", None, "a/b"));
    assert!(!subscribe(&plus, "c", None, "a/#"));
    assert!(!subscribe(&plus, "c", None, "a/b/c"));
    let all = Acl::new(vec![allow(RuleAction::Subscribe, "#")], Permission::Deny);
    assert!(subscribe(&all, "c", None, "#"));
    assert!(subscribe(&all, "c", None, "+/x"));
}

#[test]
fn a_deny_refuses_every_filter_it_overlaps() {
    let acl = Acl::new(
        vec![
            deny(RuleAction::Subscribe, "devices/secret/#"),
            allow(RuleAction::Subscribe, "#"),
        ],
        Permission::Deny,
    );
    for filter in [
        "devices/#",
        "#",
        "+/secret/x",
        "devices/+/x",
        "devices/secret",
    ] {
        assert!(!subscribe(&acl, "c", None, filter), "{filter}");
    }
    for filter in ["devices/open/#", "other/#", "+/open"] {
        assert!(subscribe(&acl, "c", None, filter), "{filter}");
    }
}

#[test]
fn rule_topics_are_checked() {
    assert!(check_rule_topic("devices/%c/#").is_ok());
    assert!(check_rule_topic("a/%u").is_ok());
    assert_eq!(check_rule_topic("a/%x"), Err(RuleError::Percent));
    assert_eq!(check_rule_topic("a/%"), Err(RuleError::Percent));
    assert!(matches!(
        check_rule_topic("a/#/b"),
        Err(RuleError::Filter(_))
    ));
    assert!(matches!(check_rule_topic("a+"), Err(RuleError::Filter(_))));
    assert_eq!(check_rule_topic("$share/g/a"), Err(RuleError::Shared));
}

/// The index answers as a plain scan of the rules in order would, on many rules of every
/// form.
#[test]
fn the_index_agrees_with_a_linear_scan() {
    let mut rules = Vec::new();
    let topics = [
        "devices/%c/#",
        "%c/x",
        "%u/#",
        "+/7/#",
        "devices/7/cmd",
        "#",
        "a/+",
        "x-%c/y",
        "devices/+",
    ];
    for (i, topic) in topics.iter().cycle().take(60).enumerate() {
        let mut r = rule(
            if i % 3 == 0 {
                Permission::Deny
            } else {
                Permission::Allow
            },
            [RuleAction::Publish, RuleAction::Subscribe, RuleAction::All][i % 3],
            topic,
        );
        if i % 5 == 1 {
            r.client_id = Some(["7", "8"][i % 2].into());
        }
        if i % 7 == 2 {
            r.username = Some("ann".into());
        }
        rules.push(r);
    }
    let acl = Acl::new(rules.clone(), Permission::Deny);
    let asked = [
        "devices/7/cmd",
        "devices/7",
        "7/x",
        "ann/q",
        "a/b",
        "x-7/y",
        "devices/+",
        "#",
        "+/7/#",
        "devices/#",
        "z",
    ];
    for client in ["7", "8", "9"] {
        for user in [None, Some("ann"), Some("bob")] {
            for topic in asked {
                for action in [Action::Publish, Action::Subscribe] {
                    if action == Action::Publish && topic.contains(['+', '#']) {
                        continue;
                    }
                    let q = Question {
                        action,
                        client_id: client,
                        username: user,
                        topic,
                        client_ok: true,
                        user,
                    };
                    let linear = rules
                        .iter()
                        .find(|r| r.action.covers(action) && rule_matches(r, &q))
                        .map_or(Permission::Deny, |r| r.permission)
                        == Permission::Allow;
                    assert_eq!(
                        acl.is_allowed(action, client, user, topic),
                        linear,
                        "{action:?} {client} {user:?} {topic}"
                    );
                }
            }
        }
    }
}
