//! The push relay: reads the stream in its own consumer group and delivers
//! each entry as an HTTP `POST` to the workload's service through Envoy,
//! with the entry's `baggage` field as the `baggage` header. The filter in
//! that Envoy routes it: to the sandbox's fork when the sandbox forks the
//! workload for the message's key, else to the baseline. Consumers need no
//! change at all.
//!
//! An entry is acked only after a `2xx`; a delivery that fails is retried
//! a few times, then left pending (and the run fails on it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::message::{fqdn, TAG_HEADERS, WORKLOAD};
use crate::producer::BAGGAGE_FIELD;
use crate::traffic::agent;
use sandbox_router_consumer::broker::redis_streams::{self as stream, Entry};

/// The relay's consumer group.
pub const GROUP: &str = "push-relay";
const ATTEMPTS: u32 = 3;
/// Few entries per read, so that the workers share the load evenly.
const BATCH: usize = 10;
const BLOCK_MS: u64 = 50;

/// Running relay threads: `workers` consumers of one group share the
/// stream (each entry goes to one of them).
#[derive(Debug)]
pub struct Relay {
    relayed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Result<()>>>,
}

impl Relay {
    /// Creates the relay's group and starts `workers` threads delivering
    /// to `envoy`.
    pub fn spawn(
        redis: &redis::Client,
        stream: &str,
        envoy: SocketAddr,
        workers: usize,
    ) -> Result<Self> {
        stream::create_group(&mut redis.get_connection()?, stream, GROUP)?;
        let relayed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let agent = agent();
        let mut handles = Vec::new();
        for index in 0..workers.max(1) {
            let mut conn = redis.get_connection()?;
            let worker = Worker {
                name: format!("{GROUP}-{index}"),
                stream: stream.to_owned(),
                url: format!("http://{envoy}/messages"),
                agent: agent.clone(),
                relayed: Arc::clone(&relayed),
                stop: Arc::clone(&stop),
            };
            handles.push(
                std::thread::Builder::new()
                    .name(worker.name.clone())
                    .spawn(move || worker.run(&mut conn))?,
            );
        }
        Ok(Relay {
            relayed,
            stop,
            handles,
        })
    }

    /// Entries delivered and acked so far.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::SeqCst)
    }

    /// Waits until `expected` entries are relayed, stops; returns the count.
    pub fn finish(self, expected: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let running = |r: &Relay| r.handles.iter().all(|h| !h.is_finished());
        while self.relayed() < expected && Instant::now() < deadline && running(&self) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.handles {
            handle
                .join()
                .map_err(|_| Error::Harness("a relay thread panicked".into()))??;
        }
        let relayed = self.relayed.load(Ordering::SeqCst);
        if relayed < expected {
            return Err(Error::Timeout(format!(
                "relayed {relayed} of {expected} messages in {timeout:?}"
            )));
        }
        Ok(relayed)
    }
}

struct Worker {
    name: String,
    stream: String,
    url: String,
    agent: ureq::Agent,
    relayed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(&self, conn: &mut redis::Connection) -> Result<()> {
        while !self.stop.load(Ordering::SeqCst) {
            let entries =
                stream::read_group(conn, &self.stream, GROUP, &self.name, BATCH, BLOCK_MS)?;
            for entry in entries {
                self.deliver(&entry)?;
                stream::ack(conn, &self.stream, GROUP, std::slice::from_ref(&entry.id))?;
                self.relayed.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn deliver(&self, entry: &Entry) -> Result<()> {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match self.post(entry) {
                Ok(()) => return Ok(()),
                Err(problem) => last = problem,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Error::Harness(format!(
            "entry {}: not delivered after {ATTEMPTS} attempts: {last}",
            entry.id
        )))
    }

    fn post(&self, entry: &Entry) -> std::result::Result<(), String> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("host", fqdn(WORKLOAD))
            .header("x-stream-entry", &entry.id);
        if let Some(baggage) = entry.fields.get(BAGGAGE_FIELD) {
            request = request.header("baggage", baggage.as_slice());
        }
        for name in TAG_HEADERS {
            if let Some(value) = entry.fields.get(crate::message::field_name(name)) {
                request = request.header(name, value.as_slice());
            }
        }
        let response = request.send_empty().map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}
