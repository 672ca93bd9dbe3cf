//! A pull consumer of the workload: reads its own copy of the messages (a
//! consumer group, queue or durable consumer: any broker's
//! [`Subscription`]), and runs the client library's consumer loop
//! ([`broker::consume`]): decide each message, process it or not, settle
//! it either way: the other consumers have their own copies.
//!
//! "Processing" here is recording the decision; the analysis checks that
//! every message was processed exactly once over all consumers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sandbox_router_consumer::broker::{self, Delivery, Subscription};
use sandbox_router_consumer::{Decision, RouteClient};

use crate::clock::now_us;
use crate::error::{Error, Result};
use crate::ledger::Decided;
use crate::message::{Owner, Tags, WORKLOAD};

/// Messages received per round, and how long a round waits when idle.
const BATCH: usize = 100;
const WAIT: Duration = Duration::from_millis(50);

/// The consumer group of a consumer: `orders-worker` for the baseline,
/// `orders-worker-pr-42` for the sandbox's fork.
pub fn group_name(owner: Owner) -> String {
    match owner {
        Owner::Baseline => WORKLOAD.to_owned(),
        Owner::Sandbox => format!("{WORKLOAD}-{}", owner.name()),
    }
}

/// A running consumer thread.
#[derive(Debug)]
pub struct PullConsumer {
    owner: Owner,
    decided: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Vec<Decided>>>,
}

impl PullConsumer {
    /// Starts consuming `subscription` (its own copy, made by the
    /// broker for [`group_name`] of `owner`). `client` says which consumer
    /// it is.
    pub fn spawn<S>(subscription: S, client: Arc<RouteClient>) -> Result<Self>
    where
        S: Subscription + Send + 'static,
    {
        let owner = owner_of(&client);
        let decided = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            owner,
            client,
            decided: Arc::clone(&decided),
            stop: Arc::clone(&stop),
        };
        let handle = std::thread::Builder::new()
            .name(format!("pull:{}", owner.name()))
            .spawn(move || worker.run(subscription))?;
        Ok(PullConsumer {
            owner,
            decided,
            stop,
            handle,
        })
    }

    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Entries decided (and acked) so far.
    pub fn decided(&self) -> u64 {
        self.decided.load(Ordering::SeqCst)
    }

    /// A counter of decided entries, to wait on from another thread.
    pub fn decided_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.decided)
    }

    /// Waits until `expected` entries are decided, stops, and returns the
    /// decisions.
    pub fn finish(self, expected: u64, timeout: Duration) -> Result<Vec<Decided>> {
        let deadline = Instant::now() + timeout;
        while self.decided() < expected && Instant::now() < deadline && !self.handle.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::SeqCst);
        let decisions = self
            .handle
            .join()
            .map_err(|_| Error::Harness(format!("consumer {} panicked", self.owner.name())))??;
        if u64::try_from(decisions.len()).unwrap_or(u64::MAX) < expected {
            return Err(Error::Timeout(format!(
                "consumer {} decided {} of {expected} messages in {timeout:?}",
                self.owner.name(),
                decisions.len()
            )));
        }
        Ok(decisions)
    }
}

/// The consumer a client decides for.
pub fn owner_of(client: &RouteClient) -> Owner {
    match client.consumer().sandbox {
        None => Owner::Baseline,
        Some(_) => Owner::Sandbox,
    }
}

struct Worker {
    owner: Owner,
    client: Arc<RouteClient>,
    decided: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run<S: Subscription>(&self, mut subscription: S) -> Result<Vec<Decided>> {
        let mut decisions = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            // "Processing" is recording the decision (the ledger).
            let settled = broker::consume(
                &self.client,
                &mut subscription,
                BATCH,
                WAIT,
                |delivery, decision| {
                    decisions.push(self.record(delivery, decision)?);
                    Ok::<(), Error>(())
                },
            )
            .map_err(Error::harness)?;
            let count = u64::try_from(settled).unwrap_or(0);
            self.decided.fetch_add(count, Ordering::SeqCst);
        }
        Ok(decisions)
    }

    fn record<T>(&self, delivery: &Delivery<T>, decision: &Decision) -> Result<Decided> {
        let fields: HashMap<String, Vec<u8>> = delivery.headers.iter().cloned().collect();
        let tags = Tags::parse(&fields).map_err(Error::Malformed)?;
        Ok(Decided {
            seq: tags.seq,
            consumer: self.owner,
            process: decision.verdict.process,
            reason: decision.verdict.reason.code(),
            source: decision.source,
            table_version: decision.table_version,
            at_us: now_us(),
        })
    }
}
