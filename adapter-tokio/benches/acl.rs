//! Criterion benchmark of the topic access check per packet (issue 18): what the broker and
//! the tap ask for every publish and every SUBSCRIBE filter.
//!
//! `cargo bench -p adapter-tokio --bench acl` prints the time of one check with no rules, and
//! with 100 and 10,000 rules in the form of the example configuration (each device its own
//! topics: a rule per client id plus `%c` rules for everyone), for a publish that matches near
//! the end of the list (the worst case a linear scan would have), a publish that no rule
//! matches, and a subscribe that must be covered.

use std::hint::black_box;
use std::time::Duration;

use activity_core::server::Action;
use adapter_tokio::acl::{Acl, Permission, Rule, RuleAction};
use criterion::{Criterion, criterion_main};

/// `n` rules: one per device (`device-i` may publish `devices/i/#`), then rules for everyone
/// with `%c`, and one per user.
fn rules(n: usize) -> Vec<Rule> {
    let mut rules = Vec::with_capacity(n);
    let devices = n.saturating_sub(4) / 2;
    for i in 0..devices {
        rules.push(Rule {
            permission: Permission::Allow,
            action: RuleAction::Publish,
            topic: format!("devices/{i}/#"),
            username: None,
            client_id: Some(format!("device-{i}")),
        });
        rules.push(Rule {
            permission: Permission::Deny,
            action: RuleAction::All,
            topic: format!("sites/{i}/secret/#"),
            username: Some(format!("user-{i}")),
            client_id: None,
        });
    }
    rules.push(Rule {
        permission: Permission::Deny,
        action: RuleAction::All,
        topic: "devices/+/secret/#".to_owned(),
        username: None,
        client_id: None,
    });
    rules.push(Rule {
        permission: Permission::Allow,
        action: RuleAction::Subscribe,
        topic: "devices/%c/cmd".to_owned(),
        username: None,
        client_id: None,
    });
    rules.push(Rule {
        permission: Permission::Allow,
        action: RuleAction::Publish,
        topic: "%c/status".to_owned(),
        username: None,
        client_id: None,
    });
    while rules.len() < n {
        rules.push(Rule {
            permission: Permission::Allow,
            action: RuleAction::All,
            topic: format!("public/{}/#", rules.len()),
            username: None,
            client_id: None,
        });
    }
    rules
}

fn bench_acl(c: &mut Criterion) {
    let mut group = c.benchmark_group("acl");
    let empty = Acl::default();
    group.bench_function("no rules/publish", |b| {
        b.iter(|| {
            empty.is_allowed(
                Action::Publish,
                black_box("device-7"),
                None,
                black_box("devices/7/temp"),
            )
        })
    });
    for n in [100, 10_000] {
        let acl = Acl::new(rules(n), Permission::Deny);
        let last = (n.saturating_sub(4) / 2).saturating_sub(1);
        let client = format!("device-{last}");
        let topic = format!("devices/{last}/temp");
        let user = format!("user-{last}");
        group.bench_function(format!("{n} rules/publish allowed"), |b| {
            b.iter(|| {
                acl.is_allowed(
                    Action::Publish,
                    black_box(&client),
                    Some(black_box(&user)),
                    black_box(&topic),
                )
            })
        });
        group.bench_function(format!("{n} rules/publish denied"), |b| {
            b.iter(|| {
                acl.is_allowed(
                    Action::Publish,
                    black_box(&client),
                    Some(black_box(&user)),
                    black_box("elsewhere/x"),
                )
            })
        });
        let filter = format!("devices/{last}/cmd");
        group.bench_function(format!("{n} rules/subscribe covered"), |b| {
            b.iter(|| {
                acl.is_allowed(
                    Action::Subscribe,
                    black_box(&client),
                    Some(black_box(&user)),
                    black_box(&filter),
                )
            })
        });
        group.bench_function(format!("{n} rules/subscribe #"), |b| {
            b.iter(|| {
                acl.is_allowed(
                    Action::Subscribe,
                    black_box(&client),
                    Some(black_box(&user)),
                    black_box("#"),
                )
            })
        });
    }
    group.finish();
}

/// Short runs: the machine is shared, and ns/op settles within a second.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

/// The group, in a private module: the function the macro makes needs no docs there.
mod group {
    use super::{bench_acl, config};

    criterion::criterion_group! {
        name = benches;
        config = config();
        targets = bench_acl
    }
}
criterion_main!(group::benches);
