//! The analysis of a run, from its ledger alone (see `docs/async.md`,
//! "Measured"):
//!
//! - every message reached every consumer group exactly once (broker level:
//!   none lost, none duplicated);
//! - each message's outcome: processed once by the owner the producer
//!   expected ([`Outcome::Exact`]), once by the other ([`Outcome::Stale`]),
//!   by both ([`Outcome::Twice`]) or by neither ([`Outcome::Never`]);
//! - per sandbox change, the window from its API call until the last
//!   observer (consumer client, or Envoy's filter) settled on the new
//!   table ([`windows`]);
//! - every message whose life overlaps no window must be exact: outcomes
//!   may differ only inside a measured window.
//!
//! [`pull::check`] and [`push::check`] do the flow-specific checks and call
//! [`summarise`].

pub mod pull;
pub mod push;
pub mod report;
pub mod windows;

use std::collections::BTreeMap;

use crate::clock::ms;
use crate::ledger::{Change, Sent};
use report::{Latency, Outcome, Report, Tally, Window};

/// How many differing messages a problem line lists.
const LIST: usize = 10;

/// One observer's views of the sandbox's key: `(time, forked)`.
///
/// For a pull consumer, "forked" is what its table says; a consumer in its
/// hand-over grace may still act on the old view, so a window lasts until
/// its last decision under the grace, too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observer {
    pub name: String,
    pub views: Vec<(u64, bool)>,
    /// When it decided under its hand-over grace (pull consumers).
    pub handover: std::collections::BTreeSet<u64>,
    /// Several independent caches behind one observer (Envoy's workers)
    /// may disagree for a while; one client must not.
    pub may_flap: bool,
}

/// What became of a message, and when it was last decided or delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    pub outcome: Outcome,
    pub last_us: u64,
}

/// Limits the windows must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The longest a window may be.
    pub window_ms: u64,
}

/// Windows, tallies and the "exact outside every window" check. Problems
/// found before (flow-specific) come in `report.problems`.
pub fn summarise(
    mut report: Report,
    sent: &[Sent],
    changes: &[Change],
    fates: &BTreeMap<u64, Fate>,
    observers: &[Observer],
    bounds: Bounds,
) -> Report {
    report.windows = changes
        .iter()
        .enumerate()
        .map(|(k, change)| {
            let found = (&mut report.problems, &mut report.notes);
            window(k, change, changes, observers, found)
        })
        .collect();
    for window in &report.windows {
        let duration_us = window.end_us.saturating_sub(window.start_us);
        if duration_us > bounds.window_ms.saturating_mul(1000) {
            report.problems.push(format!(
                "window {:?} v{} lasted {:.0} ms, over the bound of {} ms",
                window.action,
                window.version,
                window.duration_ms(),
                bounds.window_ms
            ));
        }
    }
    for change in changes {
        report.notes.push(format!(
            "{:?} v{}: API call {:.1} ms, production paused {:.1} ms",
            change.action,
            change.version,
            ms(change.done_us.saturating_sub(change.started_us)),
            ms(change.resumed_us.saturating_sub(change.started_us))
        ));
    }
    tally(&mut report, sent, fates);
    let outside_differing: Vec<u64> = sent
        .iter()
        .filter(|s| !in_any_window(s, fates, &report.windows))
        .filter(|s| {
            fates
                .get(&s.tags.seq)
                .is_some_and(|f| f.outcome != Outcome::Exact)
        })
        .map(|s| s.tags.seq)
        .collect();
    if !outside_differing.is_empty() {
        report.problems.push(format!(
            "{} messages outside every window are not exact, e.g. {:?}",
            outside_differing.len(),
            first(&outside_differing)
        ));
    }
    report
}

fn window(
    k: usize,
    change: &Change,
    changes: &[Change],
    observers: &[Observer],
    (problems, notes): (&mut Vec<String>, &mut Vec<String>),
) -> Window {
    let mut end_us = change.started_us;
    let mut latencies = Vec::new();
    for observer in observers {
        let Some(switch) = windows::switches(&observer.views, changes).get(k).cloned() else {
            continue;
        };
        let until = changes.get(k + 1).map_or(u64::MAX, |next| next.started_us);
        let last_kept_us = observer
            .handover
            .range(change.started_us..until)
            .next_back()
            .copied();
        let Some(settled_us) = switch.settled_us else {
            problems.push(format!(
                "{} never settled on change {k} ({:?} v{})",
                observer.name, change.action, change.version
            ));
            continue;
        };
        if switch.flaps > 0 && !observer.may_flap {
            problems.push(format!(
                "{} flipped its view {} times after change {k}",
                observer.name, switch.flaps
            ));
        }
        end_us = end_us.max(settled_us).max(last_kept_us.unwrap_or(0));
        let since = |at: u64| ms(at.saturating_sub(change.started_us));
        if settled_us >= until {
            notes.push(format!(
                "{} decided no message of the sandbox's key with the new view before change {} started: it settled on change {k} ({:?} v{}) at its first decision after that, {:.0} ms after change {k}",
                observer.name,
                k + 1,
                change.action,
                change.version,
                since(settled_us)
            ));
        }
        if let Some(kept) = last_kept_us {
            notes.push(format!(
                "{} kept the sandbox's messages in its hand-over grace until {:.0} ms after change {k} ({:?} v{})",
                observer.name,
                since(kept),
                change.action,
                change.version
            ));
        }
        latencies.push(Latency {
            observer: observer.name.clone(),
            last_old_ms: switch.last_old_us.map(since),
            settled_ms: since(settled_us),
            flaps: switch.flaps,
        });
    }
    Window {
        action: change.action,
        version: change.version,
        start_us: change.started_us,
        end_us,
        latencies,
        produced: Tally::default(),
        touching: Tally::default(),
    }
}

fn tally(report: &mut Report, sent: &[Sent], fates: &BTreeMap<u64, Fate>) {
    for s in sent {
        let Some(fate) = fates.get(&s.tags.seq) else {
            continue;
        };
        let kind = s.tags.kind;
        report.all.add(kind, fate.outcome);
        if report.phases.len() <= s.tags.phase {
            report.phases.resize(s.tags.phase + 1, Tally::default());
        }
        if let Some(phase) = report.phases.get_mut(s.tags.phase) {
            phase.add(kind, fate.outcome);
        }
        let mut inside = false;
        for window in &mut report.windows {
            if (window.start_us..=window.end_us).contains(&s.start_us) {
                window.produced.add(kind, fate.outcome);
            }
            if touches(s, fate, window) {
                window.touching.add(kind, fate.outcome);
                inside = true;
            }
        }
        if !inside {
            report.outside.add(kind, fate.outcome);
        }
    }
}

/// Whether the message's life, from produced to last decided, overlaps the window.
fn touches(sent: &Sent, fate: &Fate, window: &Window) -> bool {
    sent.start_us <= window.end_us && fate.last_us >= window.start_us
}

fn in_any_window(sent: &Sent, fates: &BTreeMap<u64, Fate>, windows: &[Window]) -> bool {
    fates
        .get(&sent.tags.seq)
        .is_some_and(|fate| windows.iter().any(|w| touches(sent, fate, w)))
}

/// The first few of a list, for a problem line.
pub fn first(seqs: &[u64]) -> &[u64] {
    seqs.get(..LIST.min(seqs.len())).unwrap_or_default()
}
