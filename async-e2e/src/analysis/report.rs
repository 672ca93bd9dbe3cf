//! What a run's analysis found: outcome counts overall, per phase, inside
//! each sandbox change's window and outside every window; the windows'
//! lengths; and the problems (any problem fails the test).

use std::fmt;

use crate::clock::ms;
use crate::ledger::Action;
use crate::message::Kind;

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed (delivered) once, by the owner the producer expected.
    Exact,
    /// Processed once, by the other consumer than the producer expected.
    Stale,
    /// Processed by both consumers.
    Twice,
    /// Processed by neither.
    Never,
}

/// Message counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub messages: u64,
    /// Of which carry the changing sandbox's key.
    pub sandbox_key: u64,
    pub exact: u64,
    pub stale: u64,
    pub twice: u64,
    pub never: u64,
}

impl Tally {
    pub fn add(&mut self, kind: Kind, outcome: Outcome) {
        self.messages += 1;
        self.sandbox_key += u64::from(kind == Kind::Sandbox);
        match outcome {
            Outcome::Exact => self.exact += 1,
            Outcome::Stale => self.stale += 1,
            Outcome::Twice => self.twice += 1,
            Outcome::Never => self.never += 1,
        }
    }

    /// Messages not processed exactly once by the expected owner.
    pub fn differing(&self) -> u64 {
        self.stale + self.twice + self.never
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>6} messages ({:>5} sandbox-key): exact {:>6}, stale {:>3}, twice {:>3}, never {:>3}",
            self.messages, self.sandbox_key, self.exact, self.stale, self.twice, self.never
        )
    }
}

/// One observer's time to see a change.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    pub observer: String,
    /// From the change's API call to its last decision with the old view
    /// (none: it never decided with the old view after the change).
    pub last_old_ms: Option<f64>,
    /// From the change's API call to the first decision of its settled new view.
    pub settled_ms: f64,
    pub flaps: usize,
}

/// The window of one sandbox change: from its API call until the last
/// observer settled on the new table.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub action: Action,
    pub version: u64,
    pub start_us: u64,
    pub end_us: u64,
    pub latencies: Vec<Latency>,
    /// Messages produced while it was open (all kinds).
    pub produced: Tally,
    /// Messages whose life (produced to last decided) overlaps it.
    pub touching: Tally,
}

impl Window {
    pub fn duration_ms(&self) -> f64 {
        ms(self.end_us.saturating_sub(self.start_us))
    }
}

/// Hand back on delete: the sandbox's messages produced before its
/// deletion that its consumer had not yet decided when the DELETE was
/// made. Baseline's own copy of each is still to be decided, or decided
/// again by nobody: what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandBack {
    /// Sandbox-key messages produced while the sandbox existed whose
    /// fork decision came after the DELETE call started.
    pub in_flight: u64,
    /// Still processed by the fork (it had not seen the deletion yet).
    pub by_fork: u64,
    /// Handed back: processed by baseline only.
    pub by_baseline: u64,
    pub twice: u64,
    /// Processed by neither.
    pub lost: u64,
}

impl fmt::Display for HandBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sandbox messages not yet decided by the fork at the DELETE: \
             {} processed by the fork, {} handed back to baseline, {} twice, {} lost",
            self.in_flight, self.by_fork, self.by_baseline, self.twice, self.lost
        )
    }
}

/// The whole analysis of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub flow: String,
    pub all: Tally,
    pub phases: Vec<Tally>,
    pub windows: Vec<Window>,
    /// Messages whose life overlaps no window: must all be exact.
    pub outside: Tally,
    /// Per consumer or upstream: `(name, messages processed)`.
    pub processed_by: Vec<(String, u64)>,
    /// Pull flows with a deletion.
    pub hand_back: Option<HandBack>,
    pub notes: Vec<String>,
    pub problems: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== {} ==", self.flow)?;
        writeln!(f, "all            {}", self.all)?;
        for (index, phase) in self.phases.iter().enumerate() {
            writeln!(f, "phase {index}        {phase}")?;
        }
        writeln!(f, "outside windows {}", self.outside)?;
        for (name, count) in &self.processed_by {
            writeln!(f, "processed by {name}: {count}")?;
        }
        for window in &self.windows {
            write_window(f, window)?;
        }
        if let Some(hand_back) = &self.hand_back {
            writeln!(f, "hand back on delete: {hand_back}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        for problem in &self.problems {
            writeln!(f, "PROBLEM: {problem}")?;
        }
        Ok(())
    }
}

fn write_window(f: &mut fmt::Formatter<'_>, window: &Window) -> fmt::Result {
    writeln!(
        f,
        "window {:?} (v{}): {:.0} ms",
        window.action,
        window.version,
        window.duration_ms()
    )?;
    for l in &window.latencies {
        let old = l
            .last_old_ms
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"));
        writeln!(
            f,
            "  {:<10} last old view {old:>8}, settled {:>6.0} ms, flaps {}",
            l.observer, l.settled_ms, l.flaps
        )?;
    }
    writeln!(f, "  produced in it  {}", window.produced)?;
    writeln!(f, "  touching it     {}", window.touching)
}
