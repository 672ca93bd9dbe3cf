//! [`RouteClient`]: one consumer's view of the RouteService table, and its
//! decisions.
//!
//! - [`RouteClient::refresh`] syncs the table once: holding a table at `V`,
//!   by what changed since (`GET /v1/routes?since=V`); with none, or when
//!   the server answers `410` (it no longer knows `V`) or a delta that cannot
//!   be applied, by the full table (`GET /v1/routes` with `If-None-Match`).
//!   A failed sync keeps the last good table. Run it from
//!   [`crate::SyncThread`] in the background, or call it yourself (tests).
//! - [`RouteClient::should_process`] extracts the routing key from a
//!   message's headers and applies the selective-consumption rule
//!   (`sandbox_router_core::consumption`), asking the RouteService about a
//!   key the table does not know (a sandbox newer than the last sync).
//! - [`RouteClient::version`] and [`RouteClient::wait_for_version`] tell
//!   which table the decisions come from.
//! - After a sandbox change, the client keeps taking the messages of a key
//!   it just lost for the hand-over grace ([`ClientConfig::handover_grace`],
//!   `sandbox_router_core::handover`), so that a message decided while the
//!   consumers' tables differ is processed twice rather than by nobody.
//!   [`RouteClient::handover_pending`] tells whether a grace is running.
//!
//! It is `Sync`: share one (in an `Arc`) between every consumer thread of a
//! process. RouteService calls are made outside its lock.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use sandbox_router_core::consumption::{self, Consumer, MessageKey, Reason, Verdict};
use sandbox_router_core::handover::Handover;
use sandbox_router_core::route_knowledge::{Known, RouteKnowledge};
use sandbox_router_core::route_table::RouteTable;
use sandbox_router_core::route_table::SandboxTarget;
use sandbox_router_core::routes_api::{BadAnswer, RoutesAnswer};
use sandbox_router_core::routing_key::RoutingKey;

use crate::config::ClientConfig;
use crate::error::{FetchError, WaitTimeout};
use crate::http::{DeltaFetch, RouteServiceHttp, TableFetch};
use crate::stats::{Counters, Stats};

/// Where the answer for a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No valid routing key: the headers alone decide (baseline's).
    Headers,
    /// The synced table knows the key.
    Table,
    /// A fresh single-key answer from an earlier miss.
    Cache,
    /// A single-key call made for this message.
    Lookup,
    /// The table does not know the key and the RouteService could not be
    /// asked (call failed, breaker open): no sandbox, baseline's.
    FailOpen,
}

/// A verdict, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub source: Source,
    /// The version of the synced table held when deciding (`None` before
    /// the first successful sync).
    pub table_version: Option<u64>,
}

/// What one [`RouteClient::refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// `304`: the table held is current.
    Unchanged(u64),
    /// A new table was adopted.
    Updated { from: Option<u64>, to: u64 },
}

/// A consumer's client of the RouteService.
#[derive(Debug)]
pub struct RouteClient {
    config: ClientConfig,
    http: RouteServiceHttp,
    /// What this consumer knows and which keys are in their grace.
    view: Mutex<View>,
    /// Signalled whenever a new table is adopted.
    adopted: Condvar,
    /// One table sync at a time, so tables are adopted in version order.
    syncing: Mutex<()>,
    started: Instant,
    /// `started` on the wall clock, to place the brokers' message stamps
    /// on the same clock as the client's own times.
    started_wall: SystemTime,
    counters: Counters,
}

impl RouteClient {
    /// A client with an empty table; nothing is fetched until
    /// [`RouteClient::refresh`] (or a [`crate::SyncThread`]) runs.
    pub fn new(config: ClientConfig) -> Self {
        RouteClient {
            http: RouteServiceHttp::new(&config.server, config.timeout),
            view: Mutex::new(View {
                knowledge: RouteKnowledge::new(RouteTable::default(), config.cache),
                handover: Handover::new(millis(config.handover_grace())),
            }),
            config,
            adopted: Condvar::new(),
            syncing: Mutex::new(()),
            started: Instant::now(),
            started_wall: SystemTime::now(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn consumer(&self) -> &Consumer {
        &self.config.consumer
    }

    /// Syncs the table once. On error the last good table stays in use.
    pub fn refresh(&self) -> Result<Refresh, FetchError> {
        let _one_at_a_time = lock(&self.syncing);
        let held = self.version();
        let fetched = self.fetch_table(held);
        let now = self.now_ms();
        let mut view = lock(&self.view);
        let View {
            knowledge,
            handover,
        } = &mut *view;
        knowledge.sync_finished(fetched.is_ok(), now);
        let outcome = match (fetched, held) {
            (Ok(Fetched::NotModified), Some(version)) => {
                Counters::bump(&self.counters.not_modified);
                Ok(Refresh::Unchanged(version))
            }
            (Ok(Fetched::Table(TableFetch::NotModified)), Some(version)) => {
                Counters::bump(&self.counters.not_modified);
                Ok(Refresh::Unchanged(version))
            }
            (Ok(Fetched::Delta(delta)), Some(from)) => {
                // One sync at a time: the table held is still the one at
                // `since` (checked by the parser against what was asked).
                Counters::bump(&self.counters.tables_adopted);
                Counters::bump(&self.counters.deltas);
                let mut table = knowledge.table().clone();
                delta.apply_to(&mut table);
                let to = delta.version;
                handover.adopt(knowledge, &self.config.consumer, to, table, now);
                self.adopted.notify_all();
                Ok(Refresh::Updated {
                    from: Some(from),
                    to,
                })
            }
            (Ok(Fetched::Table(TableFetch::Changed(answer))), from) => {
                Counters::bump(&self.counters.tables_adopted);
                Counters::bump(&self.counters.full_tables);
                let to = answer.version;
                handover.adopt(knowledge, &self.config.consumer, to, answer.table, now);
                self.adopted.notify_all();
                Ok(Refresh::Updated { from, to })
            }
            // Deltas are asked only while a table is held.
            (Ok(Fetched::NotModified | Fetched::Delta(_)), None) => Err(FetchError::BadAnswer {
                url: self.config.server.clone(),
                problem: BadAnswer::Status(304),
            }),
            // A 304 to a request that sent no tag: a broken server.
            (Ok(Fetched::Table(TableFetch::NotModified)), None) => Err(FetchError::BadAnswer {
                url: self.config.server.clone(),
                problem: BadAnswer::Status(304),
            }),
            (Err(error), _) => Err(error),
        };
        if outcome.is_err() {
            Counters::bump(&self.counters.sync_errors);
        }
        outcome
    }

    /// One sync's call(s): a delta since `held` when a table is held; the
    /// full table with none, after a `410`, or when the delta could not be
    /// used (a bad body, or a server without `?since=`). A transport
    /// failure is not retried here (the next sync tries again).
    fn fetch_table(&self, held: Option<u64>) -> Result<Fetched, FetchError> {
        if let Some(version) = held {
            match self.http.since(version) {
                Ok(DeltaFetch::NotModified) => return Ok(Fetched::NotModified),
                Ok(DeltaFetch::Changed(delta)) => return Ok(Fetched::Delta(delta)),
                Ok(DeltaFetch::Gone) => {
                    Counters::bump(&self.counters.gone);
                    log::info!(
                        "sandbox-router-consumer: the RouteService no longer knows version {version}: taking the full table"
                    );
                }
                Err(error @ FetchError::Unreachable { .. }) => return Err(error),
                Err(FetchError::BadAnswer {
                    problem: problem @ (BadAnswer::NoStatus | BadAnswer::Status(500..)),
                    url,
                }) => return Err(FetchError::BadAnswer { url, problem }),
                Err(error) => {
                    log::warn!(
                        "sandbox-router-consumer: unusable delta ({error}): taking the full table"
                    );
                }
            }
        }
        self.http.table(held).map(Fetched::Table)
    }

    /// Whether this consumer processes the message with these headers (any
    /// string map: Kafka headers, Redis Stream fields, AMQP properties, SQS
    /// attributes). Never fails: what cannot be decided is baseline's.
    pub fn should_process<I, K, V>(&self, headers: I) -> Verdict
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        self.decide(headers).verdict
    }

    /// [`RouteClient::should_process`], saying where the answer came from.
    pub fn decide<I, K, V>(&self, headers: I) -> Decision
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        self.decide_produced(headers, None)
    }

    /// [`RouteClient::decide`] for a message the broker stamped at
    /// `produced` (`None`: it does not say). With the stamp, the hand-over
    /// grace also covers a message produced during the grace but decided
    /// only later, when this consumer lags behind the others
    /// (`sandbox_router_core::handover`). [`crate::broker::consume`]
    /// passes each broker's stamp.
    pub fn decide_produced<I, K, V>(&self, headers: I, produced: Option<SystemTime>) -> Decision
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        Counters::bump(&self.counters.decisions);
        let headers: Vec<(K, V)> = headers.into_iter().collect();
        // The core reads names as bytes (as Envoy's header map has them).
        let headers: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_ref().as_bytes(), value.as_ref()))
            .collect();
        let candidate = self.config.carriers.extract(&headers);
        let key = MessageKey::classify(candidate.as_ref().map(|c| c.value.as_ref()));
        match key {
            MessageKey::Valid(valid) => {
                self.decide_key(key, valid, produced.map(|p| self.on_clock(p)))
            }
            MessageKey::Missing | MessageKey::Invalid => Decision {
                verdict: consumption::decide(&self.config.consumer, key, None),
                source: Source::Headers,
                table_version: self.version(),
            },
        }
    }

    /// The version of the synced table (`None` before the first sync).
    pub fn version(&self) -> Option<u64> {
        lock(&self.view).knowledge.version()
    }

    /// How many keys are in their hand-over grace now: while it is not 0,
    /// this consumer may take messages another consumer takes too. An
    /// ordered hand over waits for 0 on every consumer, after
    /// [`RouteClient::wait_for_version`], before producing again.
    pub fn handover_pending(&self) -> usize {
        let now = self.now_ms();
        lock(&self.view).handover.pending(now)
    }

    /// Waits until a table of at least version `at_least` is adopted (by a
    /// [`crate::SyncThread`] or another thread's refresh); returns its version.
    /// Versions compare as numbers, which is what the RouteService's own
    /// store gives (every change bumps it). With `--store kubernetes` a
    /// version is a content hash with no order: use
    /// [`RouteClient::wait_for_exact_version`] there.
    pub fn wait_for_version(&self, at_least: u64, timeout: Duration) -> Result<u64, WaitTimeout> {
        self.wait_until(at_least, timeout, |version| version >= at_least)
    }

    /// Waits until the adopted table is exactly version `version` (any
    /// store; the Kubernetes store's versions are content hashes).
    pub fn wait_for_exact_version(
        &self,
        version: u64,
        timeout: Duration,
    ) -> Result<u64, WaitTimeout> {
        self.wait_until(version, timeout, |adopted| adopted == version)
    }

    fn wait_until(
        &self,
        wanted: u64,
        timeout: Duration,
        done: impl Fn(u64) -> bool,
    ) -> Result<u64, WaitTimeout> {
        let started = Instant::now();
        let mut view = lock(&self.view);
        loop {
            if let Some(version) = view.knowledge.version().filter(|v| done(*v)) {
                return Ok(version);
            }
            let waited = started.elapsed();
            let Some(left) = timeout.checked_sub(waited).filter(|l| !l.is_zero()) else {
                return Err(WaitTimeout {
                    wanted,
                    have: view.knowledge.version(),
                    waited,
                });
            };
            view = self
                .adopted
                .wait_timeout(view, left)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    fn decide_key(&self, key: MessageKey<'_>, valid: &str, produced_ms: Option<u64>) -> Decision {
        let workload = self.config.consumer.workload.as_str();
        let now = self.now_ms();
        {
            let mut guard = lock(&self.view);
            let View {
                knowledge,
                handover,
            } = &mut *guard;
            let table_version = knowledge.version();
            let known = knowledge.is_known(valid, now);
            // Unknown: ask, unless the breaker says the RouteService is down.
            let source = if !known && knowledge.breaker_mut().allow(now) {
                None
            } else {
                match knowledge.known(valid, workload, now) {
                    Known::Table(fork) => Some((fork, Source::Table)),
                    Known::Cached(fork) => Some((fork, Source::Cache)),
                    Known::Unknown => Some((None, Source::FailOpen)),
                }
            };
            if let Some((fork, source)) = source {
                let at = (&*handover, now, produced_ms);
                return self.decision(key, fork, source, table_version, at);
            }
        }
        self.look_up(key, valid, produced_ms)
    }

    /// Asks the RouteService about a key the table does not know, caches
    /// the answer and decides from it (or fails open).
    fn look_up(&self, key: MessageKey<'_>, valid: &str, produced_ms: Option<u64>) -> Decision {
        let answer = self.fetch_key(valid);
        let now = self.now_ms();
        let mut guard = lock(&self.view);
        let View {
            knowledge,
            handover,
        } = &mut *guard;
        let consumer = &self.config.consumer;
        handover.key_answered(knowledge, consumer, valid, answer.clone(), now);
        let table_version = knowledge.version();
        let at = (&*handover, now, produced_ms);
        match &answer {
            Some(answer) => {
                let fork = answer.table.lookup(valid, consumer.workload.as_str());
                self.decision(key, fork, Source::Lookup, table_version, at)
            }
            None => self.decision(key, None, Source::FailOpen, table_version, at),
        }
    }

    fn fetch_key(&self, valid: &str) -> Option<RoutesAnswer> {
        Counters::bump(&self.counters.lookups);
        let fetched = RoutingKey::parse(valid).ok().map(|key| self.http.key(&key));
        match fetched {
            Some(Ok(answer)) => Some(answer),
            Some(Err(error)) => {
                log::warn!("sandbox-router-consumer: lookup failed: {error}");
                Counters::bump(&self.counters.lookup_errors);
                None
            }
            None => None,
        }
    }

    fn decision(
        &self,
        key: MessageKey<'_>,
        fork: Option<&SandboxTarget>,
        source: Source,
        table_version: Option<u64>,
        (handover, now_ms, produced_ms): (&Handover, u64, Option<u64>),
    ) -> Decision {
        if source == Source::FailOpen {
            Counters::bump(&self.counters.fail_open);
        }
        let verdict = handover.decide(&self.config.consumer, key, fork, now_ms, produced_ms);
        if matches!(verdict.reason, Reason::Handover(_)) {
            Counters::bump(&self.counters.handover);
        }
        Decision {
            verdict,
            source,
            table_version,
        }
    }

    /// A wall-clock time on the client's clock (ms since it started); a
    /// time before the start is 0.
    fn on_clock(&self, at: SystemTime) -> u64 {
        at.duration_since(self.started_wall).map_or(0, millis)
    }

    fn now_ms(&self) -> u64 {
        millis(self.started.elapsed())
    }
}

/// What one sync's call(s) brought.
enum Fetched {
    /// `304` to `?since=V`.
    NotModified,
    /// A validated delta from the version held.
    Delta(sandbox_router_core::routes_api::Delta),
    /// The answer of the full form.
    Table(TableFetch),
}

/// A client's knowledge and its hand-over graces, under one lock: a table
/// is adopted and its graces started in one step, so no decision sees the
/// one without the other.
#[derive(Debug)]
struct View {
    /// The same table + key cache + breaker policy as the filter's workers.
    knowledge: RouteKnowledge,
    handover: Handover,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
