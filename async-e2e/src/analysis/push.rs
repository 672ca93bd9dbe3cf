//! The push flow's checks: every message delivered exactly once over both
//! upstreams, the route header present exactly on the fork's deliveries,
//! and the keys whose owner never changes always at the baseline.

use std::collections::{BTreeMap, HashMap};

use super::report::{Outcome, Report};
use super::{first, summarise, Bounds, Fate, Observer};
use crate::ledger::{Change, Delivered, Sent};
use crate::message::{Kind, Owner, SANDBOX};

/// Checks the push flow's ledger.
pub fn check(
    flow: &str,
    sent: &[Sent],
    changes: &[Change],
    deliveries: &[Delivered],
    bounds: Bounds,
) -> Report {
    let mut report = Report {
        flow: flow.to_owned(),
        ..Report::default()
    };
    let by_seq = index(sent, deliveries, &mut report.problems);
    let mut fates = BTreeMap::new();
    for s in sent {
        let Some(d) = by_seq.get(&s.tags.seq) else {
            continue;
        };
        check_delivery(s, d, &mut report.problems);
        let outcome = if d.to == s.tags.expected {
            Outcome::Exact
        } else {
            Outcome::Stale
        };
        fates.insert(
            s.tags.seq,
            Fate {
                outcome,
                last_us: d.at_us,
            },
        );
    }
    report.processed_by = [Owner::Baseline, Owner::Sandbox]
        .iter()
        .map(|owner| {
            let count = deliveries.iter().filter(|d| d.to == *owner).count();
            (
                format!("{} upstream", owner.name()),
                u64::try_from(count).unwrap_or(u64::MAX),
            )
        })
        .collect();
    let observers = [envoy_observer(sent, deliveries)];
    summarise(report, sent, changes, &fates, &observers, bounds)
}

/// Deliveries by message; each sent message exactly once.
fn index<'a>(
    sent: &[Sent],
    deliveries: &'a [Delivered],
    problems: &mut Vec<String>,
) -> HashMap<u64, &'a Delivered> {
    let mut by_seq = HashMap::new();
    let mut twice = Vec::new();
    for d in deliveries {
        if by_seq.insert(d.seq, d).is_some() {
            twice.push(d.seq);
        }
    }
    let missing: Vec<u64> = sent
        .iter()
        .map(|s| s.tags.seq)
        .filter(|seq| !by_seq.contains_key(seq))
        .collect();
    if !twice.is_empty() {
        problems.push(format!(
            "{} messages delivered twice, e.g. {:?}",
            twice.len(),
            first(&twice)
        ));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{} messages never delivered, e.g. {:?}",
            missing.len(),
            first(&missing)
        ));
    }
    if by_seq.len() > sent.len() - missing.len() {
        problems.push("deliveries of messages nobody sent".to_owned());
    }
    by_seq
}

fn check_delivery(sent: &Sent, delivered: &Delivered, problems: &mut Vec<String>) {
    let seq = sent.tags.seq;
    let expected_header = (delivered.to == Owner::Sandbox).then(|| SANDBOX.to_owned());
    if delivered.route_header != expected_header {
        problems.push(format!(
            "message {seq} reached {} with route header {:?}",
            delivered.to.name(),
            delivered.route_header
        ));
    }
    if sent.tags.kind != Kind::Sandbox && delivered.to != Owner::Baseline {
        problems.push(format!(
            "message {seq} ({}) reached {}",
            sent.tags.kind.name(),
            delivered.to.name()
        ));
    }
}

fn envoy_observer(sent: &[Sent], deliveries: &[Delivered]) -> Observer {
    let sandbox_key: std::collections::HashSet<u64> = sent
        .iter()
        .filter(|s| s.tags.kind == Kind::Sandbox)
        .map(|s| s.tags.seq)
        .collect();
    Observer {
        name: "envoy".to_owned(),
        views: deliveries
            .iter()
            .filter(|d| sandbox_key.contains(&d.seq))
            .map(|d| (d.at_us, d.to == Owner::Sandbox))
            .collect(),
        handover: std::collections::BTreeSet::new(),
        may_flap: true,
    }
}
