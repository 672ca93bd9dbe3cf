//! A pull consumer of the workload: reads the stream in its own consumer
//! group, asks the client library whether to process each entry (its
//! fields are the message's headers), processes it or not, and acks it
//! either way: the other groups have their own copies.
//!
//! "Processing" here is recording the decision; the analysis checks that
//! every message was processed exactly once over all consumers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sandbox_router_consumer::RouteClient;

use crate::clock::now_us;
use crate::error::{Error, Result};
use crate::ledger::Decided;
use crate::message::{Owner, Tags, WORKLOAD};
use crate::stream::{self, Entry};

/// Entries read per `XREADGROUP`, and how long it blocks when idle.
const BATCH: usize = 100;
const BLOCK_MS: u64 = 50;

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
    /// Creates its group (reading from the stream's first entry) and starts
    /// consuming. `client` says which consumer it is.
    pub fn spawn(redis: &redis::Client, stream: &str, client: Arc<RouteClient>) -> Result<Self> {
        let owner = match client.consumer().sandbox {
            None => Owner::Baseline,
            Some(_) => Owner::Sandbox,
        };
        let mut conn = redis.get_connection()?;
        stream::create_group(&mut conn, stream, &group_name(owner))?;
        let decided = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            owner,
            stream: stream.to_owned(),
            client,
            decided: Arc::clone(&decided),
            stop: Arc::clone(&stop),
        };
        let handle = std::thread::Builder::new()
            .name(format!("pull:{}", owner.name()))
            .spawn(move || worker.run(&mut conn))?;
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

struct Worker {
    owner: Owner,
    stream: String,
    client: Arc<RouteClient>,
    decided: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(&self, conn: &mut redis::Connection) -> Result<Vec<Decided>> {
        let group = group_name(self.owner);
        let name = format!("{}-1", group);
        let mut decisions = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            let entries = stream::read_group(conn, &self.stream, &group, &name, BATCH, BLOCK_MS)?;
            let mut ids = Vec::with_capacity(entries.len());
            for entry in entries {
                decisions.push(self.decide(&entry)?);
                ids.push(entry.id);
            }
            stream::ack(conn, &self.stream, &group, &ids)?;
            let count = u64::try_from(ids.len()).unwrap_or(0);
            self.decided.fetch_add(count, Ordering::SeqCst);
        }
        Ok(decisions)
    }

    fn decide(&self, entry: &Entry) -> Result<Decided> {
        let tags = Tags::parse(&entry.fields).map_err(Error::Malformed)?;
        let decision = self.client.decide(&entry.fields);
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
