//! The sandbox changes of a run, made through the RouteService API while
//! no message is being produced: create [`SANDBOX`] (forking the workload),
//! then delete it, in turn.
//!
//! Two ways to hand over:
//! - [`Handoff::Live`]: change and go on at once. Each consumer (and the
//!   filter) sees the change at its next sync or lookup; until the last
//!   one has, their views differ: the measured window.
//! - [`Handoff::WaitForConsumers`]: first let every consumer finish the
//!   messages already produced, change, then wait until every consumer's
//!   client holds the new table version, and its hand-over grace is over,
//!   before producing again. No message is decided from two different
//!   tables, and none under a grace: no window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_router_consumer::RouteClient;

use crate::clock::now_us;
use crate::error::{Error, Result};
use crate::ledger::{Action, Change};
use crate::message::{SANDBOX, WORKLOAD};
use crate::route_service::RouteServiceHandle;

const WAIT: Duration = Duration::from_secs(30);

/// How a change is handed over to the consumers.
#[derive(Debug, Clone)]
pub enum Handoff {
    Live,
    WaitForConsumers {
        /// Each consumer's client.
        clients: Vec<Arc<RouteClient>>,
        /// Each consumer's count of decided (and acked) messages.
        decided: Vec<Arc<AtomicU64>>,
    },
}

/// The change of step `step` (create on even steps, delete on odd ones),
/// with `sent` messages produced so far.
pub fn apply(
    route_service: &RouteServiceHandle,
    handoff: &Handoff,
    step: usize,
    sent: u64,
) -> Result<Change> {
    if let Handoff::WaitForConsumers { decided, .. } = handoff {
        drain(decided, sent)?;
    }
    let action = if step.is_multiple_of(2) {
        Action::Create
    } else {
        Action::Delete
    };
    let started_us = now_us();
    let version = match action {
        Action::Create => {
            let fork = format!("{WORKLOAD}-{SANDBOX}");
            route_service.put(SANDBOX, &[(WORKLOAD, fork.as_str())])?
        }
        Action::Delete => route_service.delete(SANDBOX)?,
    };
    let done_us = now_us();
    if let Handoff::WaitForConsumers { clients, .. } = handoff {
        for client in clients {
            client
                .wait_for_version(version, WAIT)
                .map_err(Error::harness)?;
        }
        // Every client holds the new table, so the grace of the one that
        // lost the key covers nobody: wait it out, or the next messages
        // of the key would be processed twice.
        wait_for_handovers(clients)?;
    }
    Ok(Change {
        action,
        version,
        started_us,
        done_us,
        resumed_us: now_us(),
        phase_after: step + 1,
    })
}

/// Waits until no client has a key in its hand-over grace.
fn wait_for_handovers(clients: &[Arc<RouteClient>]) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while clients.iter().any(|c| c.handover_pending() > 0) {
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "hand-over graces still running after {WAIT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Waits until every consumer has decided `sent` messages.
fn drain(decided: &[Arc<AtomicU64>], sent: u64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while decided.iter().any(|d| d.load(Ordering::SeqCst) < sent) {
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "consumers did not finish {sent} messages in {WAIT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
