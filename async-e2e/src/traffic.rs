//! The traffic driver: a few sender threads post messages to the producer
//! through Envoy at a steady rate, the five key kinds in turn, and the
//! sandbox changes happen between two phases of the run.
//!
//! Every send holds a read lock and every change the write lock, so each
//! message is produced entirely before or entirely after a change, and its
//! tag says which: `expected` is the owner by the table in force while it
//! was produced (the producer's view).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::clock::now_us;
use crate::error::{Error, Result};
use crate::ledger::{Action, Change, Sent};
use crate::message::{fqdn, Kind, Owner, Tags, PRODUCER};

/// How much traffic, how fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Messages per phase; a run has one phase more than changes.
    pub per_phase: u64,
    /// Messages per second, over all senders.
    pub rate_per_s: u64,
    pub senders: usize,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    pub sent: Vec<Sent>,
    pub changes: Vec<Change>,
}

/// Makes change number `step` given how many messages were sent so far
/// (all of them complete: no send is in progress while it runs).
pub type ChangeFn<'a> = dyn FnMut(usize, u64) -> Result<Change> + 'a;

#[derive(Debug)]
struct Phase {
    index: usize,
    sandbox_exists: bool,
}

struct Shared {
    plan: Plan,
    total: u64,
    target: SocketAddr,
    agent: ureq::Agent,
    phase: RwLock<Phase>,
    next: AtomicU64,
    completed: AtomicU64,
    failed: AtomicBool,
    started_us: u64,
}

/// Sends `plan.per_phase * (changes + 1)` messages to the producer through
/// `target` (Envoy's listener), calling `change` between phases.
pub fn run(
    plan: Plan,
    target: SocketAddr,
    changes: usize,
    change: &mut ChangeFn<'_>,
) -> Result<Traffic> {
    let shared = Shared {
        plan,
        total: plan
            .per_phase
            .saturating_mul(u64::try_from(changes).unwrap_or(0) + 1),
        target,
        agent: agent(),
        phase: RwLock::new(Phase {
            index: 0,
            sandbox_exists: false,
        }),
        next: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        started_us: now_us(),
    };
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..plan.senders.max(1))
            .map(|_| scope.spawn(|| send_loop(&shared)))
            .collect();
        let changed = change_loop(&shared, changes, change);
        if changed.is_err() {
            shared.failed.store(true, Ordering::SeqCst);
        }
        let mut sent = Vec::new();
        for sender in senders {
            let part = sender
                .join()
                .map_err(|_| Error::Harness("a sender thread panicked".into()))??;
            sent.extend(part);
        }
        sent.sort_by_key(|s| s.tags.seq);
        Ok(Traffic {
            sent,
            changes: changed?,
        })
    })
}

fn change_loop(shared: &Shared, changes: usize, change: &mut ChangeFn<'_>) -> Result<Vec<Change>> {
    let mut done = Vec::new();
    for step in 0..changes {
        let threshold = shared
            .plan
            .per_phase
            .saturating_mul(u64::try_from(step).unwrap_or(0) + 1);
        while shared.next.load(Ordering::SeqCst) < threshold {
            if shared.failed.load(Ordering::SeqCst) {
                return Err(Error::Harness("sending failed before the change".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut phase = shared.phase.write().unwrap_or_else(PoisonError::into_inner);
        let made = change(step, shared.completed.load(Ordering::SeqCst))?;
        phase.index = made.phase_after;
        phase.sandbox_exists = made.action == Action::Create;
        done.push(made);
    }
    Ok(done)
}

fn send_loop(shared: &Shared) -> Result<Vec<Sent>> {
    let mut sent = Vec::new();
    loop {
        let seq = shared.next.fetch_add(1, Ordering::SeqCst);
        if seq >= shared.total || shared.failed.load(Ordering::SeqCst) {
            return Ok(sent);
        }
        sleep_until(due_us(shared, seq));
        match send_one(shared, seq) {
            Ok(record) => sent.push(record),
            Err(error) => {
                shared.failed.store(true, Ordering::SeqCst);
                return Err(error);
            }
        }
    }
}

fn send_one(shared: &Shared, seq: u64) -> Result<Sent> {
    let phase = shared.phase.read().unwrap_or_else(PoisonError::into_inner);
    let kind = Kind::of(seq);
    let tags = Tags {
        seq,
        kind,
        expected: Owner::expected(kind, phase.sandbox_exists),
        phase: phase.index,
    };
    let start_us = now_us();
    post(shared, &tags)?;
    let end_us = now_us();
    shared.completed.fetch_add(1, Ordering::SeqCst);
    Ok(Sent {
        tags,
        start_us,
        end_us,
    })
}

/// `POST /orders` to the producer through Envoy; `201` expected.
fn post(shared: &Shared, tags: &Tags) -> Result<()> {
    let url = format!("http://{}/orders", shared.target);
    let mut request = shared.agent.post(&url).header("host", fqdn(PRODUCER));
    for (name, value) in tags.headers() {
        request = request.header(name, value);
    }
    if let Some(baggage) = tags.kind.baggage(tags.seq) {
        request = request.header("baggage", baggage);
    }
    let response = request
        .send_empty()
        .map_err(|e| Error::Harness(format!("message {}: POST /orders: {e}", tags.seq)))?;
    let status = response.status().as_u16();
    if status != 201 {
        return Err(Error::Harness(format!(
            "message {}: POST /orders answered {status}",
            tags.seq
        )));
    }
    Ok(())
}

fn due_us(shared: &Shared, seq: u64) -> u64 {
    let rate = shared.plan.rate_per_s.max(1);
    shared
        .started_us
        .saturating_add(seq.saturating_mul(1_000_000) / rate)
}

fn sleep_until(due_us: u64) {
    let now = now_us();
    if due_us > now {
        std::thread::sleep(Duration::from_micros(due_us - now));
    }
}

/// A keep-alive HTTP client for the senders and the relay.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .max_idle_connections_per_host(16)
        .build()
        .into()
}
