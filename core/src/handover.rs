//! The hand-over grace of selective consumption: a consumer keeps taking a
//! key's messages for a while after the key stopped being its own, so that
//! a sandbox change never leaves a message to nobody.
//!
//! Each consumer syncs the route table on its own, so after a change two
//! consumers decide from different tables for a moment. With the bare rule
//! ([`crate::consumption::decide`]):
//!
//! - **delete**: if the fork sees the deletion first, both skip the
//!   sandbox's messages until the baseline sees it too (the baseline still
//!   leaves them to the fork): processed by **nobody**;
//! - **create**: if the baseline sees the creation first (the fork holds a
//!   cached "no such key"), both skip until the fork sees it.
//!
//! The opposite orders give "processed twice", which at-least-once
//! processing tolerates and a lost message is not. So the consumer that
//! loses a key (the fork on delete, the baseline on create) keeps
//! processing its messages for a grace after it saw the change: at least as
//! long as the other consumer can stay on the old table. A message of that
//! gap is then processed twice, never by nobody. Outside the grace the rule
//! is unchanged: exactly one consumer per message.
//!
//! The grace starts when *this* consumer sees the change, at `seen`. It
//! covers two things:
//!
//! - messages decided before `seen + grace`: the other consumer, deciding
//!   them at about the same time, may still hold the old table;
//! - messages **produced** before `seen + grace`, whenever they are decided,
//!   if the broker stamps its messages: the other consumer may have decided
//!   them long ago, from the old table, while this one lags behind (a
//!   backlog). The other one decided such a message after it was produced,
//!   and it holds the old table only until `seen + grace` at the latest, so
//!   a message produced later than that cannot have been left by it.
//!
//! Entries are kept [`KEEP_MS`] after their grace for the second case.

use std::collections::{BTreeSet, HashMap};

use crate::consumption::{self, Consumer, MessageKey, Reason, Verdict};
use crate::route_knowledge::RouteKnowledge;
use crate::route_table::{RouteTable, SandboxTarget};
use crate::routes_api::RoutesAnswer;

/// How long a key's entry outlives its grace, for messages produced during
/// the grace that a lagging consumer decides only later.
pub const KEEP_MS: u64 = 3_600_000;

/// At most this many keys are remembered; the oldest go first.
pub const MAX_KEYS: usize = 10_000;

/// Which keys stopped being this consumer's a moment ago, and until when it
/// keeps their messages. Time is milliseconds from any fixed origin, passed
/// in by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    grace_ms: u64,
    /// Keys that changed owner, and when their grace ends. Only keys whose
    /// owner changed within the last [`KEEP_MS`], so it stays small; older
    /// entries are dropped at every change.
    until: HashMap<String, u64>,
}

/// The sandbox a view names for a key (`None`: baseline's), or nothing
/// known (`None` outside).
type Owner = Option<Option<String>>;

impl Handover {
    /// A grace of `grace_ms`; 0 turns it off (the bare rule).
    pub fn new(grace_ms: u64) -> Self {
        Handover {
            grace_ms,
            until: HashMap::new(),
        }
    }

    pub fn grace_ms(&self) -> u64 {
        self.grace_ms
    }

    /// Adopts a synced table into `knowledge`, starting the grace of every
    /// key the new table takes away from `consumer`. The first table (no
    /// version held yet) starts none: nothing was known before it, and a
    /// restarted consumer must not take other consumers' messages.
    pub fn adopt(
        &mut self,
        knowledge: &mut RouteKnowledge,
        consumer: &Consumer,
        version: u64,
        table: RouteTable,
        now_ms: u64,
    ) {
        let workload = consumer.workload.as_str();
        let keys: BTreeSet<String> = knowledge
            .keys()
            .chain(table.keys())
            .chain(self.until.keys().map(String::as_str))
            .map(str::to_owned)
            .collect();
        let before: Vec<(String, Owner)> = keys
            .into_iter()
            .map(|key| {
                let owner = owner(knowledge.last_known(&key, workload));
                (key, owner)
            })
            .collect();
        knowledge.adopt(version, table);
        self.prune(now_ms);
        for (key, before) in before {
            let after = owner(knowledge.last_known(&key, workload));
            self.observe(consumer, &key, before, after, now_ms);
        }
    }

    /// Records a single-key answer in `knowledge` (`None`: the call
    /// failed), starting the key's grace if the answer takes it away from
    /// `consumer`: the baseline learning that a new sandbox forks it.
    pub fn key_answered(
        &mut self,
        knowledge: &mut RouteKnowledge,
        consumer: &Consumer,
        key: &str,
        answer: Option<RoutesAnswer>,
        now_ms: u64,
    ) {
        let workload = consumer.workload.as_str();
        let before = owner(knowledge.last_known(key, workload));
        // From the answer itself: a cache of capacity 0 keeps nothing.
        let after = answer
            .as_ref()
            .map(|a| a.table.lookup(key, workload).map(|t| t.sandbox.clone()));
        knowledge.key_answered(key, answer, now_ms);
        self.prune(now_ms);
        self.observe(consumer, key, before, after, now_ms);
    }

    /// Whether a message of `key` decided at `now_ms`, produced at
    /// `produced_ms` if known (same clock), is kept.
    pub fn holds(&self, key: &str, now_ms: u64, produced_ms: Option<u64>) -> bool {
        self.until.get(key).is_some_and(|until| {
            *until > now_ms || produced_ms.is_some_and(|produced| produced < *until)
        })
    }

    /// Keys in their grace at `now_ms`.
    pub fn pending(&self, now_ms: u64) -> usize {
        self.until.values().filter(|until| **until > now_ms).count()
    }

    /// The rule with the grace: [`consumption::decide`], except that a
    /// message it leaves to another consumer is kept if its key is in its
    /// grace ([`Reason::Handover`], naming what the table says).
    /// `produced_ms`: when the broker stored the message, on the clock of
    /// `now_ms`, if it says.
    pub fn decide(
        &self,
        consumer: &Consumer,
        key: MessageKey<'_>,
        fork: Option<&SandboxTarget>,
        now_ms: u64,
        produced_ms: Option<u64>,
    ) -> Verdict {
        let verdict = consumption::decide(consumer, key, fork);
        let kept = |valid: &str| self.holds(valid, now_ms, produced_ms);
        match key {
            MessageKey::Valid(valid) if !verdict.process && kept(valid) => Verdict {
                process: true,
                reason: Reason::Handover(Box::new(verdict.reason)),
            },
            _ => verdict,
        }
    }

    /// This consumer's view of `key` went from `before` to `after`.
    fn observe(&mut self, consumer: &Consumer, key: &str, before: Owner, after: Owner, now: u64) {
        // A view that knew nothing (before the first table) is no change.
        let (Some(before), Some(after)) = (before, after) else {
            return;
        };
        let mine = consumer.sandbox.as_deref();
        if after.as_deref() == mine {
            // Its own again (a sandbox created anew): nothing to cover.
            self.until.remove(key);
        } else if before.as_deref() == mine && self.grace_ms > 0 {
            if self.until.len() >= MAX_KEYS {
                let oldest = self
                    .until
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.until.remove(&oldest);
                }
            }
            self.until
                .insert(key.to_owned(), now.saturating_add(self.grace_ms));
        }
    }

    fn prune(&mut self, now_ms: u64) {
        self.until
            .retain(|_, until| until.saturating_add(KEEP_MS) > now_ms);
    }
}

fn owner(known: Option<Option<&SandboxTarget>>) -> Owner {
    known.map(|target| target.map(|t| t.sandbox.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_cache::CachePolicy;
    use crate::route_table::Route;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const ORDERS: &str = "orders.shop.svc.cluster.local";
    const GRACE: u64 = 1000;
    const POLICY: CachePolicy = CachePolicy {
        ttl_ms: 30_000,
        negative_ttl_ms: 500,
        max_entries: 100,
    };

    fn table(sandboxes: &[&str]) -> RouteTable {
        let routes: Vec<Route> = sandboxes
            .iter()
            .map(|s| Route {
                routing_key: (*s).into(),
                sandbox: (*s).into(),
                baseline: ORDERS.into(),
                target: format!("orders-{s}.shop.svc.cluster.local"),
            })
            .collect();
        RouteTable::new(&routes).unwrap()
    }

    fn consumer(sandbox: Option<&str>) -> Consumer {
        Consumer {
            workload: ORDERS.into(),
            sandbox: sandbox.map(str::to_owned),
        }
    }

    /// A consumer: its knowledge and its hand over.
    struct View {
        consumer: Consumer,
        knowledge: RouteKnowledge,
        handover: Handover,
    }

    impl View {
        fn new(sandbox: Option<&str>, first: &[&str]) -> Self {
            let mut view = View {
                consumer: consumer(sandbox),
                knowledge: RouteKnowledge::new(RouteTable::default(), POLICY),
                handover: Handover::new(GRACE),
            };
            view.adopt(1, first, 0);
            view
        }

        fn adopt(&mut self, version: u64, sandboxes: &[&str], now: u64) {
            self.handover.adopt(
                &mut self.knowledge,
                &self.consumer,
                version,
                table(sandboxes),
                now,
            );
        }

        fn answered(&mut self, key: &str, version: u64, sandboxes: &[&str], now: u64) {
            let answer = RoutesAnswer {
                version,
                table: table(sandboxes),
            };
            self.handover
                .key_answered(&mut self.knowledge, &self.consumer, key, Some(answer), now);
        }

        /// The verdict on a message with `key`, deciding from what is known
        /// (a key neither table nor cache knows counts as not forked).
        fn decide(&mut self, key: &str, now: u64) -> (bool, String) {
            let fork = self
                .knowledge
                .known(key, ORDERS, now)
                .answer()
                .flatten()
                .cloned();
            self.decide_produced(key, now, None, fork)
        }

        fn decide_produced(
            &mut self,
            key: &str,
            now: u64,
            produced: Option<u64>,
            fork: Option<SandboxTarget>,
        ) -> (bool, String) {
            let v = self.handover.decide(
                &self.consumer,
                MessageKey::Valid(key),
                fork.as_ref(),
                now,
                produced,
            );
            (v.process, v.reason.code())
        }
    }

    #[test]
    fn the_fork_keeps_its_deleted_sandboxs_messages_for_the_grace() {
        let mut fork = View::new(Some("pr-42"), &["pr-42"]);
        assert_eq!(fork.decide("pr-42", 10), (true, "forked-by:pr-42".into()));
        fork.adopt(2, &[], 100);
        assert_eq!(fork.handover.pending(100), 1);
        assert_eq!(
            fork.decide("pr-42", 100 + GRACE - 1),
            (true, "handover:not-forked".into())
        );
        assert_eq!(
            fork.decide("pr-42", 100 + GRACE),
            (false, "not-forked".into())
        );
        // Other keys are never kept.
        assert_eq!(fork.decide("pr-7", 200), (false, "not-forked".into()));
        assert_eq!(fork.handover.pending(100 + GRACE), 0);
    }

    #[test]
    fn a_lagging_consumer_keeps_what_was_produced_during_the_grace() {
        let mut fork = View::new(Some("pr-42"), &["pr-42"]);
        fork.adopt(2, &[], 100);
        let end = 100 + GRACE;
        // Decided long after the grace, produced before its end: the other
        // consumer may have left it, deciding from the old table.
        let late = end + 60_000;
        assert_eq!(
            fork.decide_produced("pr-42", late, Some(end - 1), None),
            (true, "handover:not-forked".into())
        );
        assert_eq!(
            fork.decide_produced("pr-42", late, Some(end), None),
            (false, "not-forked".into())
        );
        // Remembered for KEEP_MS after the grace, then forgotten.
        fork.adopt(3, &[], end + KEEP_MS);
        assert_eq!(
            fork.decide_produced("pr-42", end + KEEP_MS, Some(0), None),
            (false, "not-forked".into())
        );
    }

    #[test]
    fn the_baseline_keeps_a_new_sandboxs_messages_for_the_grace() {
        let mut base = View::new(None, &[]);
        assert_eq!(base.decide("pr-42", 10), (true, "not-forked".into()));
        // Lookup on miss: the creation, seen at once.
        base.answered("pr-42", 2, &["pr-42"], 100);
        assert_eq!(
            base.decide("pr-42", 150),
            (true, "handover:forked-by:pr-42".into())
        );
        // The next table agrees: the grace goes on, from the first sight.
        base.adopt(2, &["pr-42"], 600);
        assert_eq!(
            base.decide("pr-42", 100 + GRACE - 1),
            (true, "handover:forked-by:pr-42".into())
        );
        assert_eq!(
            base.decide("pr-42", 100 + GRACE),
            (false, "forked-by:pr-42".into())
        );
        // And seen through a table first, the same.
        let mut base = View::new(None, &[]);
        base.adopt(2, &["pr-42"], 100);
        assert_eq!(
            base.decide("pr-42", 200),
            (true, "handover:forked-by:pr-42".into())
        );
    }

    #[test]
    fn gaining_a_key_starts_no_grace_and_ends_one() {
        let mut fork = View::new(Some("pr-42"), &[]);
        fork.answered("pr-42", 2, &["pr-42"], 100);
        assert_eq!(fork.handover.pending(100), 0);
        let mut base = View::new(None, &["pr-42"]);
        base.adopt(2, &[], 100);
        assert_eq!(base.handover.pending(100), 0);
        assert_eq!(base.decide("pr-42", 100), (true, "not-forked".into()));
        // Deleted and created again within the grace: the fork's own again.
        let mut fork = View::new(Some("pr-42"), &["pr-42"]);
        fork.adopt(2, &[], 100);
        fork.answered("pr-42", 3, &["pr-42"], 200);
        assert_eq!(fork.handover.pending(200), 0);
    }

    #[test]
    fn a_first_table_starts_no_grace() {
        // A consumer that starts (or restarts) while pr-42 forks the
        // workload: the baseline must not take pr-42's messages.
        let mut base = View::new(None, &["pr-42"]);
        assert_eq!(base.handover.pending(0), 0);
        assert_eq!(base.decide("pr-42", 1), (false, "forked-by:pr-42".into()));
    }

    #[test]
    fn a_cached_answer_dropped_by_a_newer_table_starts_the_forks_grace() {
        let mut fork = View::new(Some("pr-42"), &[]);
        fork.answered("pr-42", 2, &["pr-42"], 100);
        fork.adopt(3, &[], 200);
        assert_eq!(
            fork.decide("pr-42", 300),
            (true, "handover:not-forked".into())
        );
    }

    #[test]
    fn no_grace_is_the_bare_rule() {
        let mut fork = View::new(Some("pr-42"), &["pr-42"]);
        fork.handover = Handover::new(0);
        fork.adopt(2, &[], 100);
        assert_eq!(fork.decide("pr-42", 101), (false, "not-forked".into()));
    }

    /// The property: whichever consumer sees a change first, a message
    /// decided while their views differ is processed at least once; with
    /// the same views, exactly once.
    #[test]
    fn never_by_nobody_whoever_sees_the_change_first() {
        for (old, new) in [(&["pr-42"][..], &[][..]), (&[][..], &["pr-42"][..])] {
            for first in [None, Some("pr-42")] {
                let mut base = View::new(None, old);
                let mut fork = View::new(Some("pr-42"), old);
                let (seen, _) = if first.is_none() {
                    (&mut base, &mut fork)
                } else {
                    (&mut fork, &mut base)
                };
                seen.adopt(2, new, 100);
                let takers = [base.decide("pr-42", 150).0, fork.decide("pr-42", 150).0];
                assert!(takers.contains(&true), "{old:?}->{new:?}, {first:?} first");
                base.adopt(2, new, 200);
                fork.adopt(2, new, 200);
                let later = 200 + GRACE;
                let after = [base.decide("pr-42", later).0, fork.decide("pr-42", later).0];
                assert_eq!(after.iter().filter(|p| **p).count(), 1);
            }
        }
    }
}
