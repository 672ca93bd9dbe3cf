//! The pull flow's checks: both consumer groups got every message once, the
//! reasons of the keys whose owner never changes are fixed, and whenever
//! both consumers decided from the same view exactly one processed it.

use std::collections::{BTreeMap, HashMap};

use sandbox_router_consumer::Source;

use super::report::{HandBack, Outcome, Report};
use super::{first, summarise, Bounds, Fate, Observer};
use crate::ledger::{Action, Change, Decided, Sent};
use crate::message::{Kind, Owner, SANDBOX};

/// One consumer's decisions by message.
type ByMessage<'a> = HashMap<u64, &'a Decided>;

/// Checks the pull flow's ledger: `decisions` of both consumers.
pub fn check(
    flow: &str,
    sent: &[Sent],
    changes: &[Change],
    decisions: &[Decided],
    bounds: Bounds,
) -> Report {
    let mut report = Report {
        flow: flow.to_owned(),
        ..Report::default()
    };
    let consumers = [Owner::Baseline, Owner::Sandbox];
    let by_consumer: Vec<ByMessage<'_>> = consumers
        .iter()
        .map(|owner| index(*owner, sent, decisions, &mut report.problems))
        .collect();
    let (Some(base), Some(fork)) = (by_consumer.first(), by_consumer.get(1)) else {
        return report;
    };
    let mut fates = BTreeMap::new();
    for s in sent {
        let (Some(b), Some(f)) = (base.get(&s.tags.seq), fork.get(&s.tags.seq)) else {
            continue;
        };
        check_reasons(s, b, f, &mut report.problems);
        fates.insert(s.tags.seq, fate(s, b, f));
    }
    report.hand_back = changes
        .iter()
        .find(|c| c.action == Action::Delete)
        .map(|delete| hand_back(delete, sent, base, fork));
    report.processed_by = consumers
        .iter()
        .map(|owner| {
            let count = decisions
                .iter()
                .filter(|d| d.consumer == *owner && d.process)
                .count();
            (
                owner.name().to_owned(),
                u64::try_from(count).unwrap_or(u64::MAX),
            )
        })
        .collect();
    report.notes = consumers
        .iter()
        .map(|owner| sources(*owner, decisions))
        .chain(consumers.iter().map(|owner| handovers(*owner, base, fork)))
        .collect();
    let observers: Vec<Observer> = consumers
        .iter()
        .map(|o| observer(*o, sent, decisions))
        .collect();
    summarise(report, sent, changes, &fates, &observers, bounds)
}

/// The consumer's decisions by message; each sent message exactly once.
fn index<'a>(
    owner: Owner,
    sent: &[Sent],
    decisions: &'a [Decided],
    problems: &mut Vec<String>,
) -> ByMessage<'a> {
    let mut by_seq: ByMessage<'a> = HashMap::new();
    let mut twice = Vec::new();
    for d in decisions.iter().filter(|d| d.consumer == owner) {
        if by_seq.insert(d.seq, d).is_some() {
            twice.push(d.seq);
        }
    }
    let missing: Vec<u64> = sent
        .iter()
        .map(|s| s.tags.seq)
        .filter(|seq| !by_seq.contains_key(seq))
        .collect();
    let unknown = by_seq.len().saturating_sub(sent.len() - missing.len());
    let name = owner.name();
    if !twice.is_empty() {
        problems.push(format!(
            "{name} got {} messages twice, e.g. {:?}",
            twice.len(),
            first(&twice)
        ));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{name} never got {} messages, e.g. {:?}",
            missing.len(),
            first(&missing)
        ));
    }
    if unknown > 0 {
        problems.push(format!("{name} got {unknown} messages nobody sent"));
    }
    by_seq
}

/// Fixed reasons for the keys no change touches; one processor whenever
/// both consumers gave the same reason (the rule's promise).
fn check_reasons(sent: &Sent, base: &Decided, fork: &Decided, problems: &mut Vec<String>) {
    let seq = sent.tags.seq;
    if let Some(reason) = sent.tags.kind.fixed_reason() {
        for d in [base, fork] {
            if d.reason != reason {
                problems.push(format!(
                    "message {seq} ({}): {} said {}, not {reason}",
                    sent.tags.kind.name(),
                    d.consumer.name(),
                    d.reason
                ));
            }
        }
    }
    if base.reason == fork.reason && base.process == fork.process {
        problems.push(format!(
            "message {seq}: same reason {} but process = {} for both",
            base.reason, base.process
        ));
    }
}

fn fate(sent: &Sent, base: &Decided, fork: &Decided) -> Fate {
    let outcome = match (base.process, fork.process) {
        (true, true) => Outcome::Twice,
        (false, false) => Outcome::Never,
        (true, false) if sent.tags.expected == Owner::Baseline => Outcome::Exact,
        (false, true) if sent.tags.expected == Owner::Sandbox => Outcome::Exact,
        _ => Outcome::Stale,
    };
    Fate {
        outcome,
        last_us: base.at_us.max(fork.at_us),
    }
}

/// What became of the sandbox's messages its fork had not decided when
/// the sandbox was deleted.
fn hand_back(
    delete: &Change,
    sent: &[Sent],
    base: &ByMessage<'_>,
    fork: &ByMessage<'_>,
) -> HandBack {
    let mut counts = HandBack::default();
    for s in sent {
        if s.tags.kind != Kind::Sandbox || s.tags.expected != Owner::Sandbox {
            continue;
        }
        let (Some(b), Some(f)) = (base.get(&s.tags.seq), fork.get(&s.tags.seq)) else {
            continue;
        };
        if f.at_us < delete.started_us {
            continue;
        }
        counts.in_flight += 1;
        match (b.process, f.process) {
            (false, true) => counts.by_fork += 1,
            (true, false) => counts.by_baseline += 1,
            (true, true) => counts.twice += 1,
            (false, false) => counts.lost += 1,
        }
    }
    counts
}

fn observer(owner: Owner, sent: &[Sent], decisions: &[Decided]) -> Observer {
    let sandbox_key: std::collections::HashSet<u64> = sent
        .iter()
        .filter(|s| s.tags.kind == Kind::Sandbox)
        .map(|s| s.tags.seq)
        .collect();
    let forked = format!("forked-by:{SANDBOX}");
    let mine: Vec<&Decided> = decisions
        .iter()
        .filter(|d| d.consumer == owner && sandbox_key.contains(&d.seq))
        .collect();
    Observer {
        name: owner.name().to_owned(),
        // Its table's view: `handover:forked-by:pr-42` is a baseline that
        // knows the sandbox, keeping the message all the same.
        views: mine
            .iter()
            .map(|d| {
                let table = d.reason.strip_prefix("handover:").unwrap_or(&d.reason);
                (d.at_us, table == forked)
            })
            .collect(),
        handover: mine
            .iter()
            .filter(|d| is_handover(d))
            .map(|d| d.at_us)
            .collect(),
        may_flap: false,
    }
}

/// Decided under the hand-over grace (`Reason::Handover`).
fn is_handover(decided: &Decided) -> bool {
    decided.reason.starts_with("handover:")
}

/// How many messages a consumer processed only because of its grace, and
/// of those how many the other consumer processed too, as a note.
fn handovers(owner: Owner, base: &ByMessage<'_>, fork: &ByMessage<'_>) -> String {
    let (mine, other) = match owner {
        Owner::Baseline => (base, fork),
        Owner::Sandbox => (fork, base),
    };
    let kept: Vec<u64> = mine
        .values()
        .filter(|d| is_handover(d))
        .map(|d| d.seq)
        .collect();
    let twice = kept
        .iter()
        .filter(|seq| other.get(seq).is_some_and(|d| d.process))
        .count();
    format!(
        "{} kept {} messages in its hand-over grace, {twice} of them processed by the other consumer too",
        owner.name(),
        kept.len()
    )
}

/// Where a consumer's answers came from, as a note.
fn sources(owner: Owner, decisions: &[Decided]) -> String {
    let all = [
        Source::Headers,
        Source::Table,
        Source::Cache,
        Source::Lookup,
        Source::FailOpen,
    ];
    let counts: Vec<String> = all
        .iter()
        .map(|source| {
            let n = decisions
                .iter()
                .filter(|d| d.consumer == owner && d.source == *source)
                .count();
            format!("{source:?} {n}")
        })
        .collect();
    format!("{} decided from: {}", owner.name(), counts.join(", "))
}
