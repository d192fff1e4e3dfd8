//! The bound on the total memory of rumqttd's logs (`[router] max_log_memory`).
//!
//! rumqttd 0.20 keeps one log per filter ever subscribed (a shared subscription
//! `$share/G/F` uses the log of `F`) and never frees one; each log is bounded on its own
//! ([`RouterLogConfig::filter_log_bound`](crate::config::RouterLogConfig::filter_log_bound)).
//! So the bound on all of them is a number of filters. [`LogBudget`] remembers the filters the
//! router has a log for; a subscription to a new filter past the number is answered
//! [`Routed::Full`](activity_core::server::Routed::Full), which the engine turns into SUBACK
//! 0x80 (MQTT 5: 0x97 quota exceeded). The set holds at most that many filters.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use tracing::warn;

use crate::metrics::Metrics;

/// The filters the router keeps a log for, up to a number.
#[derive(Debug)]
pub struct LogBudget {
    /// The most filters with a log.
    max_filters: usize,
    /// The filters with a log (`$share/G/` stripped).
    filters: Mutex<HashSet<String>>,
}

impl LogBudget {
    /// A budget of `max_filters` logs.
    pub fn new(max_filters: usize) -> LogBudget {
        LogBudget {
            max_filters,
            filters: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the router may serve a subscription of `client_id` to `filter`: it has a log
    /// for it already, or there is room for one more (which is then taken). A refusal is
    /// counted in `metrics` and logged (the 1st, 2nd, 4th, 8th ... refusal).
    pub fn admit(&self, filter: &str, client_id: &str, metrics: &Metrics) -> bool {
        let log = activity_core::topic::shared_filter(filter).1;
        let mut filters = self.filters.lock().unwrap_or_else(|e| e.into_inner());
        if filters.contains(log) {
            return true;
        }
        if filters.len() < self.max_filters {
            filters.insert(log.to_owned());
            metrics
                .router_logs
                .store(filters.len() as u64, Ordering::Relaxed);
            return true;
        }
        drop(filters);
        let refused = metrics
            .router_filters_refused
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if refused.is_power_of_two() {
            warn!(
                client_id,
                filter,
                logs = self.max_filters,
                refused,
                "subscription refused: the router's logs are at router.max_log_memory"
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_filters_pass_new_ones_until_the_number_and_shared_ones_use_their_filters_log() {
        let metrics = Metrics::default();
        let budget = LogBudget::new(2);
        assert!(budget.admit("a/#", "c", &metrics));
        assert!(budget.admit("$share/g/b", "c", &metrics));
        assert!(!budget.admit("c", "c", &metrics));
        // The router has logs for `a/#` and `b`: more subscriptions to them cost nothing.
        assert!(budget.admit("a/#", "d", &metrics));
        assert!(budget.admit("b", "d", &metrics));
        assert!(budget.admit("$share/h/a/#", "d", &metrics));
        assert!(!budget.admit("$share/g/c", "d", &metrics));
        assert_eq!(metrics.router_filters_refused.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.router_logs.load(Ordering::Relaxed), 2);
    }
}
