//! A whole run, put together: RouteService, a broker, producer behind
//! Envoy, then either the two pull consumers (on any [`Broker`]) or the
//! push relay (Redis Streams) and its two upstreams; traffic with the
//! sandbox created and deleted in the middle; broker-level checks; the
//! analysis. The report is also written to the Envoy's run directory
//! (`target/e2e-runs/<label>-*/report.txt`); the broker's files are in
//! `target/e2e-runs/<label>-<broker>-*/`.

use std::sync::Arc;
use std::time::Duration;

use sandbox_router_consumer::{RouteClient, SyncThread};

use crate::analysis::report::Report;
use crate::analysis::{self, Bounds};
use crate::broker::redis::RedisServer;
use crate::broker::Broker;
use crate::changes::{self, Handoff};
use crate::error::{Error, Result};
use crate::http_server::Loopback;
use crate::ledger::Decided;
use crate::mesh::{Endpoints, FlowEnvoy};
use crate::message::{Owner, OTHER_SANDBOX, OTHER_SERVICE, SANDBOX};
use crate::pull::{group_name, owner_of, PullConsumer};
use crate::receiver::{self, Deliveries};
use crate::relay::{self, Relay};
use crate::route_service::RouteServiceHandle;
use crate::timings::Timings;
use crate::traffic::{self, Plan, Traffic};

/// The stream the producer writes (push flow).
pub const STREAM: &str = crate::broker::redis::STREAM;
/// The sandbox changes of a run: create, then delete.
pub const CHANGES: usize = 2;
/// Time for consumers to finish after the traffic ends.
const FINISH: Duration = Duration::from_secs(60);
/// Relay threads (one consumer group): enough to keep up with the traffic.
const RELAY_WORKERS: usize = 4;
/// Allowance over the sync interval for a window (fetch, loaded machine).
const WINDOW_SLACK_MS: u64 = 1500;

/// The traffic of every 3,000-message run: three phases of 1,000 at 400
/// per second from 4 senders.
pub const LIVE_PLAN: Plan = Plan {
    per_phase: 1000,
    rate_per_s: 400,
    senders: 4,
};

/// How the pull consumers take a sandbox change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// Changes land while messages flow (see [`Handoff::Live`]).
    Live,
    /// Drain, change, wait for both clients to hold the new version.
    WaitForConsumers,
}

/// A finished run.
#[derive(Debug)]
pub struct Run {
    pub traffic: Traffic,
    pub report: Report,
}

/// What every run starts with.
struct Base<B> {
    loopback: Loopback,
    route_service: RouteServiceHandle,
    broker: B,
}

impl<B: Broker> Base<B> {
    fn start(label: &str) -> Result<Self> {
        let loopback = Loopback::new()?;
        let route_service = RouteServiceHandle::start(&loopback)?;
        let other_fork = format!("{OTHER_SERVICE}-{OTHER_SANDBOX}");
        route_service.put(OTHER_SANDBOX, &[(OTHER_SERVICE, other_fork.as_str())])?;
        let dir = sandbox_router_e2e::new_run_dir(&format!("{label}-{}", B::NAME))
            .map_err(Error::harness)?;
        let broker = B::start(&dir)?;
        Ok(Base {
            loopback,
            route_service,
            broker,
        })
    }

    fn producer(&self) -> Result<std::net::SocketAddr> {
        self.loopback
            .serve(crate::producer::router(self.broker.publisher()?))
    }

    /// Broker-level checks, and which broker it was.
    fn check_broker(&self, total: u64, groups: &[String], report: &mut Report) -> Result<()> {
        report
            .notes
            .push(format!("broker: {}", self.broker.version()));
        self.broker.check(total, groups, report)
    }
}

/// The two pull consumers, their clients and the clients' sync threads.
struct Consumers {
    clients: Vec<Arc<RouteClient>>,
    syncs: Vec<SyncThread>,
    consumers: Vec<PullConsumer>,
}

impl Consumers {
    /// The baseline's consumer, then the sandbox's, each started once its
    /// client holds the current table.
    fn start<B: Broker>(base: &Base<B>, timings: Timings) -> Result<Self> {
        let version = base.route_service.version()?;
        let mut started = Consumers {
            clients: Vec::new(),
            syncs: Vec::new(),
            consumers: Vec::new(),
        };
        for (index, sandbox) in [None, Some(SANDBOX)].into_iter().enumerate() {
            if index > 0 {
                // Independent deployments do not sync in step: start the
                // second client's sync half an interval after the first's.
                std::thread::sleep(Duration::from_millis(timings.sync_interval_ms / 2));
            }
            let config = timings.client_config(&base.route_service.url(), sandbox)?;
            let client = Arc::new(RouteClient::new(config));
            started.syncs.push(SyncThread::spawn(Arc::clone(&client))?);
            client
                .wait_for_version(version, Duration::from_secs(10))
                .map_err(Error::harness)?;
            let subscription = base.broker.subscribe(&group_name(owner_of(&client)))?;
            started
                .consumers
                .push(PullConsumer::spawn(subscription, Arc::clone(&client))?);
            started.clients.push(client);
        }
        Ok(started)
    }
}

/// The pull flow on broker `B`: a baseline and a sandbox consumer, each
/// with its own copy of the messages.
pub fn run_pull<B: Broker>(
    label: &str,
    plan: Plan,
    timings: Timings,
    mode: PullMode,
) -> Result<Run> {
    let base = Base::<B>::start(label)?;
    let producer = base.producer()?;
    let endpoints = Endpoints {
        route_service: base.route_service.addr(),
        producer,
        receivers: None,
    };
    let envoy = FlowEnvoy::start(label, endpoints, timings)?;
    let Consumers {
        clients,
        syncs,
        consumers,
    } = Consumers::start(&base, timings)?;
    let handoff = match mode {
        PullMode::Live => Handoff::Live,
        PullMode::WaitForConsumers => Handoff::WaitForConsumers {
            clients,
            decided: consumers
                .iter()
                .map(PullConsumer::decided_counter)
                .collect(),
        },
    };
    let traffic = traffic::run(plan, envoy.listener(), CHANGES, &mut |step, sent| {
        changes::apply(&base.route_service, &handoff, step, sent)
    })?;
    let total = u64::try_from(traffic.sent.len()).unwrap_or(u64::MAX);
    let mut decisions: Vec<Decided> = Vec::new();
    for consumer in consumers {
        decisions.extend(consumer.finish(total, FINISH)?);
    }
    drop(syncs);
    let bounds = Bounds {
        window_ms: timings.pull_window_bound_ms(WINDOW_SLACK_MS)?,
    };
    let mut report =
        analysis::pull::check(label, &traffic.sent, &traffic.changes, &decisions, bounds);
    let groups = [group_name(Owner::Baseline), group_name(Owner::Sandbox)];
    base.check_broker(total, &groups, &mut report)?;
    check_envoy(&envoy, &mut report)?;
    save(&envoy, &report)?;
    Ok(Run { traffic, report })
}

/// The push flow: the relay delivers through Envoy to two upstreams.
pub fn run_push(label: &str, plan: Plan, timings: Timings) -> Result<Run> {
    let base = Base::<RedisServer>::start(label)?;
    let producer = base.producer()?;
    let deliveries = Deliveries::default();
    let baseline = base
        .loopback
        .serve(receiver::router(Owner::Baseline, &deliveries))?;
    let fork = base
        .loopback
        .serve(receiver::router(Owner::Sandbox, &deliveries))?;
    let endpoints = Endpoints {
        route_service: base.route_service.addr(),
        producer,
        receivers: Some((baseline, fork)),
    };
    let envoy = FlowEnvoy::start(label, endpoints, timings)?;
    wait_for_envoy_sync(&envoy, base.route_service.version()?)?;
    let relay = Relay::spawn(
        &base.broker.client()?,
        STREAM,
        envoy.listener(),
        RELAY_WORKERS,
    )?;
    let traffic = traffic::run(plan, envoy.listener(), CHANGES, &mut |step, sent| {
        changes::apply(&base.route_service, &Handoff::Live, step, sent)
    })?;
    let total = u64::try_from(traffic.sent.len()).unwrap_or(u64::MAX);
    relay.finish(total, FINISH)?;
    let bounds = Bounds {
        window_ms: timings.window_bound_ms(WINDOW_SLACK_MS),
    };
    let delivered = deliveries.all();
    let mut report =
        analysis::push::check(label, &traffic.sent, &traffic.changes, &delivered, bounds);
    base.check_broker(total, &[relay::GROUP.to_owned()], &mut report)?;
    check_envoy(&envoy, &mut report)?;
    let routed = envoy.counter("routed")?;
    let to_fork = delivered.iter().filter(|d| d.to == Owner::Sandbox).count();
    if u64::try_from(to_fork).ok() != Some(routed) {
        report.problems.push(format!(
            "the filter counted {routed} routed requests, the fork received {to_fork}"
        ));
    }
    save(&envoy, &report)?;
    Ok(Run { traffic, report })
}

/// Waits until Envoy's filter holds table version `version` (its gauge).
fn wait_for_envoy_sync(envoy: &FlowEnvoy, version: u64) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let gauge = "wasmcustom.sandbox_router.table_version";
    loop {
        let stats = envoy.envoy().stats().map_err(Error::harness)?;
        if stats.get(gauge).is_some_and(|v| *v >= version) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "Envoy's {gauge} never reached {version}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No plugin failure in Envoy's log; the filter's counters as notes.
fn check_envoy(envoy: &FlowEnvoy, report: &mut Report) -> Result<()> {
    for problem in envoy.plugin_problems()? {
        report.problems.push(format!("Envoy log: {problem}"));
    }
    let names = [
        "routed",
        "baseline",
        "no_key",
        "invalid_key",
        "fail_open",
        "lookup",
        "sync_ok",
    ];
    let counts: Vec<String> = names
        .iter()
        .map(|name| Ok(format!("{name} {}", envoy.counter(name)?)))
        .collect::<Result<_>>()?;
    report
        .notes
        .push(format!("filter counters: {}", counts.join(", ")));
    Ok(())
}

fn save(envoy: &FlowEnvoy, report: &Report) -> Result<()> {
    let path = envoy.envoy().files().dir.join("report.txt");
    std::fs::write(&path, report.to_string())?;
    Ok(())
}
