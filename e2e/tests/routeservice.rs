//! The release plugin in a real Envoy, fed by the real RouteService process
//! (or a scripted one that misbehaves), in front of real upstreams.
//!
//! Every test starts its own RouteService and Envoy, so counters are exact
//! per test and tests run in parallel. Waits are polls with deadlines; time
//! bounds are derived from the configured intervals plus a slack for a busy
//! 2-core machine. Measurements are printed (`-- --nocapture` shows them).
//!
//! Needs the release `.wasm` (`make build`) and Envoy (`make run` installs
//! it); the `routeservice` binary is built by the harness (see
//! e2e/README.md).

// This whole file is test code, helpers included: a failing check should
// fail the test loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use sandbox_router_e2e::client::{Request, Response};
use sandbox_router_e2e::envoy_log;
use sandbox_router_e2e::fake_routeservice::{Answer, Behavior, FakeRouteService};
use sandbox_router_e2e::mesh::{self, DemoMesh, MeshOptions, Mode, RouteServiceSettings};
use sandbox_router_e2e::routeservice::{self, RouteService};
use sandbox_router_e2e::upstream::Echo;
use serde_json::{json, Value};

/// Envoy runs `--concurrency 2`: at most this many lookups per key.
const WORKERS: u64 = 2;

/// Allowance for a busy machine on top of any derived time bound.
const SLACK: Duration = Duration::from_millis(1500);

/// Serialises the tests that measure latency under load, so two of them do
/// not share the two cores while measuring.
static LOAD: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------- harness

fn fqdn(service: &str) -> String {
    mesh::fqdn(service)
}

/// `(baseline, fork)` FQDNs: `<service>` forked by `<service>-<sandbox>`.
fn fork(service: &str, sandbox: &str) -> (String, String) {
    (fqdn(service), fqdn(&mesh::fork_name(service, sandbox)))
}

fn pairs(routes: &[(String, String)]) -> Vec<(&str, &str)> {
    routes
        .iter()
        .map(|(b, t)| (b.as_str(), t.as_str()))
        .collect()
}

/// A started RouteService, its run directory labelled `label`.
fn route_service(label: &str) -> RouteService {
    RouteService::start(routeservice::Options::for_tests(label).unwrap()).unwrap()
}

/// An Envoy (with upstreams for `sandboxes`) whose plugin uses the
/// RouteService at `route_service`.
fn mesh_with(
    label: &str,
    mode: Mode,
    settings: &RouteServiceSettings,
    sandboxes: &[&str],
    route_service: SocketAddr,
    static_routes: Option<Value>,
) -> DemoMesh {
    let mut config = mesh::route_service_plugin_config(mode, settings);
    if let Some(routes) = static_routes {
        config["routes"] = routes;
    }
    let mut options = MeshOptions::for_tests(mode, config);
    options.label = label.to_owned();
    options.sandboxes = sandboxes.iter().map(|s| (*s).to_owned()).collect();
    options.route_service = Some(route_service);
    DemoMesh::start(&options).unwrap()
}

/// `GET /` to `service` (short name, qualified by the plugin), with
/// `baggage: sd-routing-key=<key>` when `key` is given.
fn request(service: &str, key: Option<&str>) -> Request {
    let request = Request::get("/").header("host", fqdn(service));
    match key {
        Some(key) => request.header("baggage", format!("sd-routing-key={key}")),
        None => request,
    }
}

fn send(mesh: &DemoMesh, request: &Request) -> Response {
    request
        .send(mesh.listener())
        .unwrap_or_else(|error| panic!("{error:#}"))
}

/// The `x-served-by` of a `200` answer; any other status fails the test.
#[track_caller]
fn served_by(mesh: &DemoMesh, service: &str, key: Option<&str>) -> String {
    let response = send(mesh, &request(service, key));
    assert_eq!(
        response.status,
        200,
        "{service} with key {key:?}: {}\n{}",
        response.headers_text(),
        response.text()
    );
    response.header("x-served-by").unwrap_or_default()
}

/// The plugin's counters and gauges, without the `wasmcustom.sandbox_router.` prefix.
fn stats(mesh: &DemoMesh) -> BTreeMap<String, u64> {
    mesh.envoy()
        .stats()
        .unwrap()
        .into_iter()
        .filter_map(|(name, value)| {
            name.strip_prefix("wasmcustom.sandbox_router.")
                .map(|short| (short.to_owned(), value))
        })
        .collect()
}

/// A snapshot of the plugin's counters, to take differences.
struct Counters(BTreeMap<String, u64>);

impl Counters {
    fn of(mesh: &DemoMesh) -> Self {
        Self(stats(mesh))
    }

    fn get(&self, name: &str) -> u64 {
        *self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no counter sandbox_router.{name} in {:?}", self.0))
    }

    /// How much `name` moved since `earlier`.
    fn since(&self, earlier: &Counters, name: &str) -> u64 {
        self.get(name) - earlier.get(name)
    }
}

fn counter(mesh: &DemoMesh, name: &str) -> u64 {
    Counters::of(mesh).get(name)
}

/// Polls `probe` every 10 ms until it returns `Some` or `timeout` passes;
/// the value and the time it took.
fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some((value, start.elapsed()));
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long after a table is published every worker has adopted it: a
/// worker adopts on its next tick; twice that, plus room for a busy machine.
fn adoption_wait(settings: &RouteServiceSettings) -> Duration {
    Duration::from_millis(2 * settings.tick_ms() + 250)
}

/// Waits until the plugin has finished a table sync (`200` or `304`) and
/// every worker had a tick to adopt it.
fn wait_for_first_sync(mesh: &DemoMesh, settings: &RouteServiceSettings) {
    wait_for_a_sync(mesh);
    // A worker adopts a published table on its next tick.
    std::thread::sleep(adoption_wait(settings));
}

/// Waits until the plugin has finished a table sync (`200` or `304`); for
/// tests whose table stays empty, where adopting it changes nothing.
fn wait_for_a_sync(mesh: &DemoMesh) {
    let synced = poll(Duration::from_secs(20), || {
        let c = Counters::of(mesh);
        (c.get("sync_ok") + c.get("sync_not_modified") >= 1).then_some(())
    });
    assert!(
        synced.is_some(),
        "no table sync within 20 s: {:?}",
        stats(mesh)
    );
}

/// Waits until a table of `version` (or newer) is published (the gauge
/// shows it), then for every worker's next tick, when it adopts it.
fn wait_for_table_version(mesh: &DemoMesh, settings: &RouteServiceSettings, version: u64) {
    let synced = poll(sync_bound(settings) + SLACK, || {
        (Counters::of(mesh).get("table_version") >= version).then_some(())
    });
    assert!(synced.is_some(), "table version {version} never synced");
    std::thread::sleep(adoption_wait(settings));
}

/// The plugin never failed, trapped or panicked in this Envoy.
#[track_caller]
fn assert_plugin_healthy(mesh: &DemoMesh) {
    let log = mesh.envoy().log().unwrap();
    let problems = envoy_log::plugin_problems(&log);
    assert!(
        problems.is_empty(),
        "plugin problems in {}:\n{}",
        mesh.envoy().files().log.display(),
        problems.join("\n")
    );
}

/// The bound for a change to reach every worker through the table sync:
/// the next sync (at most one interval away), its fetch, and the other
/// worker's next tick.
fn sync_bound(settings: &RouteServiceSettings) -> Duration {
    Duration::from_millis(settings.sync_interval_ms + settings.timeout_ms + settings.tick_ms())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-quantile (nearest rank) of `samples`.
fn quantile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(samples: &[Duration]) -> String {
    format!(
        "n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        samples.len(),
        ms(quantile(samples, 0.5)),
        ms(quantile(samples, 0.99)),
        ms(samples.iter().max().copied().unwrap_or_default())
    )
}

// ------------------------------------------------------- lifecycle via the API

/// PUT routes the very next request (the key is new, so the miss lookup
/// asks); a key asked about before its sandbox existed routes with the next
/// sync (not after `negativeCacheTtlMs`); a change arrives with the next
/// table sync; a delete returns the key to baseline within the same bound.
#[test]
fn created_sandbox_routes_at_once_changes_with_the_sync_and_delete_returns_to_baseline() {
    let settings = RouteServiceSettings {
        // Long, so that only the table sync can end a "no routes" answer.
        negative_cache_ttl_ms: 20_000,
        ..RouteServiceSettings::for_tests()
    };
    let rs = route_service("rs-lifecycle");
    let mesh = mesh_with(
        "mesh-rs-lifecycle",
        Mode::Header,
        &settings,
        &["life", "late"],
        rs.addr(),
        None,
    );
    wait_for_first_sync(&mesh, &settings);
    // Asked before its sandbox exists, until both workers have cached it as
    // "no routes" (one lookup each).
    let before = Counters::of(&mesh);
    let both_cached = poll(Duration::from_secs(10), || {
        assert_eq!(
            served_by(&mesh, "catalog", Some("late-key")),
            "catalog/baseline"
        );
        (Counters::of(&mesh).since(&before, "lookup") == WORKERS).then_some(())
    });
    assert!(both_cached.is_some(), "requests never reached both workers");

    // The key cached as unknown: the next table sync brings it.
    let before = Counters::of(&mesh);
    rs.put_sandbox("late", "late-key", &pairs(&[fork("catalog", "late")]))
        .unwrap();
    let acked = Instant::now();
    let late = poll(sync_bound(&settings) + SLACK, || {
        (served_by(&mesh, "catalog", Some("late-key")) == "catalog/late").then_some(())
    });
    assert!(
        late.is_some(),
        "a key cached as unknown was not routed within {:?} (negativeCacheTtlMs {})",
        sync_bound(&settings) + SLACK,
        settings.negative_cache_ttl_ms
    );
    let late_latency = acked.elapsed();
    assert_eq!(
        Counters::of(&mesh).since(&before, "lookup"),
        0,
        "answered by the negative cache, then by the synced table"
    );
    println!(
        "MEASURE write->routed for a key cached as unknown (next sync): {:.1} ms",
        ms(late_latency)
    );
    // Create: the first request after the acknowledgement is routed.
    let key = Some("life-key");
    let before = Counters::of(&mesh);
    let written = rs
        .put_sandbox("life", "life-key", &pairs(&[fork("catalog", "life")]))
        .unwrap();
    let acked = Instant::now();
    let response = send(&mesh, &request("catalog", key));
    let miss_latency = acked.elapsed();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("x-served-by").as_deref(),
        Some("catalog/life"),
        "the first request after PUT (version {}) must be routed",
        written.version
    );
    let echo = Echo::parse(&response.body).unwrap();
    assert_eq!(echo.header("x-sandbox-route").as_deref(), Some("life"));
    let after = Counters::of(&mesh);
    // Unless a sync raced the request, the miss lookup asked once.
    assert!(
        after.since(&before, "lookup") <= 1,
        "one request, at most one lookup"
    );
    assert_eq!(after.since(&before, "routed"), 1);
    println!(
        "MEASURE write->routed via the miss lookup: {:.1} ms (lookups {})",
        ms(miss_latency),
        after.since(&before, "lookup")
    );

    // Let the table (every worker's) hold the key before changing it.
    wait_for_table_version(&mesh, &settings, written.version);

    // Change: now it forks reviews instead of catalog. The table knows the
    // key, so no lookup: the change comes with the sync.
    let before = Counters::of(&mesh);
    rs.put_sandbox("life", "life-key", &pairs(&[fork("reviews", "life")]))
        .unwrap();
    let acked = Instant::now();
    let rerouted = poll(sync_bound(&settings) + SLACK, || {
        (served_by(&mesh, "reviews", key) == "reviews/life").then_some(())
    });
    let sync_latency = acked.elapsed();
    assert!(
        rerouted.is_some(),
        "the change did not arrive within {:?}",
        sync_bound(&settings) + SLACK
    );
    // One worker has it; the other adopts it on its next tick (polled: on a
    // busy machine a tick can come late; a worker that never adopts fails).
    let everywhere = poll(adoption_wait(&settings) + SLACK, || {
        (0..10)
            .all(|_| {
                served_by(&mesh, "catalog", key) == "catalog/baseline"
                    && served_by(&mesh, "reviews", key) == "reviews/life"
            })
            .then_some(())
    });
    assert!(
        everywhere.is_some(),
        "not every worker adopted the change within {:?}",
        adoption_wait(&settings) + SLACK
    );
    let after = Counters::of(&mesh);
    assert_eq!(
        after.since(&before, "lookup"),
        0,
        "a key the table knows needs no lookup"
    );
    assert!(after.since(&before, "sync_ok") >= 1);
    println!(
        "MEASURE write->routed via the table sync: {:.1} ms (bound {:?} = syncIntervalMs + timeoutMs + tick)",
        ms(sync_latency),
        sync_bound(&settings)
    );

    // Delete: both services go back to baseline within the sync bound.
    rs.delete_sandbox("life").unwrap();
    let deleted = Instant::now();
    let gone = poll(sync_bound(&settings) + SLACK, || {
        (served_by(&mesh, "reviews", key) == "reviews/baseline").then_some(())
    });
    let delete_latency = deleted.elapsed();
    assert!(
        gone.is_some(),
        "still routed {:?} after the delete",
        sync_bound(&settings) + SLACK
    );
    assert_eq!(served_by(&mesh, "catalog", key), "catalog/baseline");
    println!(
        "MEASURE delete->baseline: {:.1} ms (bound {:?}; cacheTtlMs {} bounds it only while syncs fail)",
        ms(delete_latency),
        sync_bound(&settings),
        settings.cache_ttl_ms
    );
    assert_plugin_healthy(&mesh);
}

/// The demo's flow (`make run`): the seed forks catalog only; replacing
/// `pr-42` with a version that also forks reviews reroutes reviews with no
/// restart, within the demo's sync interval.
#[test]
fn demo_seed_then_forking_reviews_reroutes_without_restart() {
    let settings = RouteServiceSettings::for_demo();
    let mut options = routeservice::Options::for_tests("rs-demo-flow").unwrap();
    options.seed = Some(sandbox_router_e2e::repo_root().join("routeservice/demo/seed.json"));
    let rs = RouteService::start(options).unwrap();
    let mesh = mesh_with(
        "mesh-rs-demo-flow",
        Mode::Header,
        &settings,
        &[mesh::SANDBOX],
        rs.addr(),
        None,
    );
    let key = Some(mesh::SANDBOX);
    assert_eq!(served_by(&mesh, "catalog", key), "catalog/pr-42");
    assert_eq!(served_by(&mesh, "reviews", key), "reviews/baseline");
    assert_eq!(served_by(&mesh, "catalog", None), "catalog/baseline");
    wait_for_first_sync(&mesh, &settings);

    rs.put_sandbox(
        mesh::SANDBOX,
        mesh::SANDBOX,
        &pairs(&[
            fork("catalog", mesh::SANDBOX),
            fork("reviews", mesh::SANDBOX),
        ]),
    )
    .unwrap();
    let rerouted = poll(sync_bound(&settings) + SLACK, || {
        (served_by(&mesh, "reviews", key) == "reviews/pr-42").then_some(())
    });
    assert!(rerouted.is_some(), "reviews not rerouted");
    assert_eq!(served_by(&mesh, "catalog", key), "catalog/pr-42");
    assert_plugin_healthy(&mesh);
}

/// `mode: "authority"` with the RouteService: the target comes from the
/// API and `:authority` is rewritten to it, port kept.
#[test]
fn authority_mode_takes_the_target_from_the_route_service() {
    let settings = RouteServiceSettings::for_demo();
    let rs = route_service("rs-authority");
    let mesh = mesh_with(
        "mesh-rs-authority",
        Mode::Authority,
        &settings,
        &["auth"],
        rs.addr(),
        None,
    );
    rs.put_sandbox("auth", "auth-key", &pairs(&[fork("reviews", "auth")]))
        .unwrap();
    let response = send(
        &mesh,
        &Request::get("/")
            .header("host", "reviews:8080")
            .header("baggage", "sd-routing-key=auth-key"),
    );
    assert_eq!(
        response.header("x-served-by").as_deref(),
        Some("reviews/auth")
    );
    let echo = Echo::parse(&response.body).unwrap();
    assert_eq!(
        echo.header("host").as_deref(),
        Some("reviews-auth.demo.svc.cluster.local:8080")
    );
    assert_eq!(echo.header("x-sandbox-route").as_deref(), Some("auth"));
    assert_eq!(
        served_by(&mesh, "catalog", Some("auth-key")),
        "catalog/baseline"
    );
    assert_plugin_healthy(&mesh);
}

// ------------------------------------------------------------ steady state

/// Once the table is synced, requests with known keys (routed or not) and
/// without keys make no RouteService call at all; the only traffic is the
/// background sync, one `304` per interval per Envoy.
#[test]
fn steady_state_requests_make_no_route_service_calls() {
    let settings = RouteServiceSettings::for_tests();
    let rs = route_service("rs-steady");
    rs.put_sandbox(
        mesh::SANDBOX,
        mesh::SANDBOX,
        &pairs(&[fork("catalog", mesh::SANDBOX)]),
    )
    .unwrap();
    rs.put_sandbox("other", "other-key", &pairs(&[fork("reviews", "other")]))
        .unwrap();
    let mesh = mesh_with(
        "mesh-rs-steady",
        Mode::Header,
        &settings,
        &[mesh::SANDBOX, "other"],
        rs.addr(),
        None,
    );
    wait_for_first_sync(&mesh, &settings);

    let route = [("route", "/v1/routes")];
    let route_200 = [("route", "/v1/routes"), ("status", "200")];
    let rs_all_before = rs.requests_total(&route).unwrap();
    let rs_200_before = rs.requests_total(&route_200).unwrap();
    let before = Counters::of(&mesh);
    let started = Instant::now();
    // Long enough for several syncs: they stay 304, whatever the traffic.
    let duration = Duration::from_millis(5 * settings.sync_interval_ms);
    let mut rounds = 0_u64;
    while started.elapsed() < duration {
        rounds += 1;
        assert_eq!(
            served_by(&mesh, "catalog", Some(mesh::SANDBOX)),
            "catalog/pr-42"
        );
        assert_eq!(
            served_by(&mesh, "reviews", Some(mesh::SANDBOX)),
            "reviews/baseline"
        );
        assert_eq!(
            served_by(&mesh, "reviews", Some("other-key")),
            "reviews/other"
        );
        assert_eq!(
            served_by(&mesh, "catalog", Some("other-key")),
            "catalog/baseline"
        );
        assert_eq!(served_by(&mesh, "catalog", None), "catalog/baseline");
    }
    let elapsed = started.elapsed();
    let after = Counters::of(&mesh);
    let rs_all = rs.requests_total(&route).unwrap() - rs_all_before;
    let rs_200 = rs.requests_total(&route_200).unwrap() - rs_200_before;
    let requests = rounds * 5;
    let keyed = rounds * 4;

    assert_eq!(after.since(&before, "lookup"), 0, "no lookups");
    assert_eq!(after.since(&before, "cache_miss"), 0);
    assert_eq!(after.since(&before, "table_hit"), keyed);
    assert_eq!(after.since(&before, "routed"), rounds * 2);
    assert_eq!(after.since(&before, "baseline"), rounds * 2);
    assert_eq!(after.since(&before, "no_key"), rounds);
    assert_eq!(
        rs_200, 0,
        "no lookup and no changed table reached the RouteService"
    );
    let rs_304 = rs
        .requests_total(&[("route", "/v1/routes"), ("status", "304")])
        .unwrap();
    assert!(rs_304 >= rs_all, "every sync in the window was a 304");
    // Background syncs only: about one per interval (plus the one running).
    let intervals = elapsed.as_millis() as u64 / settings.sync_interval_ms;
    assert!(
        rs_all <= intervals + 2,
        "{rs_all} table syncs in {elapsed:?} (interval {} ms)",
        settings.sync_interval_ms
    );
    println!(
        "MEASURE steady state: {requests} requests ({keyed} with known keys) in {:.0} ms -> \
         {} RouteService lookups (0.000 per request); background syncs {rs_all} (all 304) \
         = one per {} ms per Envoy, independent of traffic",
        ms(elapsed),
        after.since(&before, "lookup"),
        settings.sync_interval_ms
    );
    assert_plugin_healthy(&mesh);
}

// -------------------------------------------------------------- coalescing

/// Fires `n` requests for `key` to `service` at once; their answers.
fn burst(mesh: &DemoMesh, service: &str, key: &str, n: usize) -> Vec<Response> {
    let barrier = Arc::new(Barrier::new(n));
    let listener = mesh.listener();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let request = request(service, Some(key));
            std::thread::spawn(move || {
                barrier.wait();
                request.send(listener).unwrap()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Twenty requests for a key created a moment ago: at most one lookup per
/// worker, every request routed.
#[test]
fn concurrent_requests_for_a_new_key_share_one_lookup_per_worker() {
    // No sync after the first, so the new key is only learnt by lookups.
    let settings = RouteServiceSettings {
        sync_interval_ms: 3_600_000,
        ..RouteServiceSettings::for_tests()
    };
    let rs = route_service("rs-burst");
    let mesh = mesh_with(
        "mesh-rs-burst",
        Mode::Header,
        &settings,
        &["burst"],
        rs.addr(),
        None,
    );
    wait_for_a_sync(&mesh);
    rs.put_sandbox("burst", "burst-key", &pairs(&[fork("catalog", "burst")]))
        .unwrap();
    let route_200 = [("route", "/v1/routes"), ("status", "200")];
    let rs_before = rs.requests_total(&route_200).unwrap();
    let before = Counters::of(&mesh);
    let answers = burst(&mesh, "catalog", "burst-key", 20);
    let after = Counters::of(&mesh);
    for answer in &answers {
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("x-served-by").as_deref(),
            Some("catalog/burst")
        );
    }
    let lookups = after.since(&before, "lookup");
    assert!(
        (1..=WORKERS).contains(&lookups),
        "{lookups} lookups for 20 requests"
    );
    assert_eq!(
        after.since(&before, "cache_miss") + after.since(&before, "cache_hit"),
        20
    );
    assert_eq!(after.since(&before, "routed"), 20);
    assert_eq!(rs.requests_total(&route_200).unwrap() - rs_before, lookups);
    println!(
        "MEASURE 20 concurrent requests for a new key: {lookups} lookups, {} waited for one, {} cache hits",
        after.since(&before, "cache_miss") - lookups,
        after.since(&before, "cache_hit")
    );
    assert_plugin_healthy(&mesh);
}

/// With an answer that takes 500 ms, all twenty requests arrive while the
/// lookup is in flight: they all miss, yet only one call per worker is made,
/// and every one of them is routed when it answers.
#[test]
fn requests_arriving_during_a_lookup_wait_for_it_instead_of_calling() {
    let settings = RouteServiceSettings {
        timeout_ms: 5000,
        sync_interval_ms: 3_600_000,
        ..RouteServiceSettings::for_tests()
    };
    let fake = FakeRouteService::start(Behavior::healthy()).unwrap();
    let mesh = mesh_with(
        "mesh-fake-waiters",
        Mode::Header,
        &settings,
        &["burst"],
        fake.addr(),
        None,
    );
    wait_for_a_sync(&mesh);
    let (baseline, target) = fork("catalog", "burst");
    fake.set_behavior(Behavior::slow(
        Duration::from_millis(500),
        Answer::Table {
            version: 2,
            routes: vec![json!({"routingKey": "burst-key", "sandbox": "burst",
                                "baseline": baseline, "target": target})],
        },
    ));
    let before = Counters::of(&mesh);
    let calls_before = fake.key_requests();
    let answers = burst(&mesh, "catalog", "burst-key", 20);
    let after = Counters::of(&mesh);
    for answer in &answers {
        assert_eq!(
            answer.header("x-served-by").as_deref(),
            Some("catalog/burst")
        );
    }
    let lookups = after.since(&before, "lookup");
    assert!((1..=WORKERS).contains(&lookups), "{lookups} lookups");
    assert_eq!(fake.key_requests() - calls_before, lookups);
    // Every request missed: the ones that did not call waited.
    assert_eq!(after.since(&before, "cache_miss"), 20);
    assert_eq!(after.since(&before, "routed"), 20);
    assert_plugin_healthy(&mesh);
}

/// Issue 10: a request resumed after waiting on a lookup (its own or
/// another request's) must be routed again like one decided at once: in
/// `authority` mode the rewritten `:authority` picks the fork's virtual
/// host only once the route is selected again. The spoofed route header
/// each request carries is removed before it waits and replaced by the
/// plugin's own marking.
#[test]
fn requests_resumed_after_a_shared_lookup_are_routed_again_in_authority_mode() {
    const REQUESTS: usize = 12;
    let settings = RouteServiceSettings {
        timeout_ms: 5000,
        sync_interval_ms: 3_600_000,
        ..RouteServiceSettings::for_tests()
    };
    let fake = FakeRouteService::start(Behavior::healthy()).unwrap();
    let mesh = mesh_with(
        "mesh-fake-resume-authority",
        Mode::Authority,
        &settings,
        &["resume"],
        fake.addr(),
        None,
    );
    wait_for_a_sync(&mesh);
    let (baseline, target) = fork("reviews", "resume");
    fake.set_behavior(Behavior::slow(
        Duration::from_millis(500),
        Answer::Table {
            version: 2,
            routes: vec![json!({"routingKey": "resume-key", "sandbox": "resume",
                                "baseline": baseline, "target": target})],
        },
    ));
    let before = Counters::of(&mesh);
    let barrier = Arc::new(Barrier::new(REQUESTS));
    let listener = mesh.listener();
    let threads: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let barrier = barrier.clone();
            let request = Request::get("/")
                .header("host", "reviews:8080")
                .header("baggage", "sd-routing-key=resume-key")
                .header("x-sandbox-route", "evil");
            std::thread::spawn(move || {
                barrier.wait();
                request.send(listener).unwrap()
            })
        })
        .collect();
    let answers: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let after = Counters::of(&mesh);
    for answer in &answers {
        assert_eq!(
            answer.header("x-served-by").as_deref(),
            Some("reviews/resume")
        );
        let echo = Echo::parse(&answer.body).unwrap();
        assert_eq!(
            echo.header("host").as_deref(),
            Some("reviews-resume.demo.svc.cluster.local:8080")
        );
        assert_eq!(echo.header_values("x-sandbox-route"), ["resume"]);
    }
    let lookups = after.since(&before, "lookup");
    assert!((1..=WORKERS).contains(&lookups), "{lookups} lookups");
    // All of them waited (owners and waiters alike), none was decided at once.
    assert_eq!(after.since(&before, "cache_miss"), REQUESTS as u64);
    assert_eq!(after.since(&before, "routed"), REQUESTS as u64);
    assert_eq!(
        after.since(&before, "spoofed_header_removed"),
        REQUESTS as u64
    );
    println!(
        "MEASURE {REQUESTS} concurrent requests resumed after {lookups} lookups (authority mode): all routed"
    );
    assert_plugin_healthy(&mesh);
}

/// A request that owns a lookup and goes away (its client closed) releases
/// the requests waiting for that lookup at once: they go to baseline,
/// counted as fail-open, instead of staying paused.
#[test]
fn waiters_are_released_when_the_request_owning_the_lookup_goes_away() {
    let settings = RouteServiceSettings {
        timeout_ms: 5000,
        sync_interval_ms: 3_600_000,
        ..RouteServiceSettings::for_tests()
    };
    let fake = FakeRouteService::start(Behavior::healthy()).unwrap();
    let mesh = mesh_with(
        "mesh-fake-owner-gone",
        Mode::Header,
        &settings,
        &["gone"],
        fake.addr(),
        None,
    );
    wait_for_a_sync(&mesh);
    let (baseline, target) = fork("catalog", "gone");
    let slow = Duration::from_millis(2000);
    fake.set_behavior(Behavior::slow(
        slow,
        Answer::Table {
            version: 2,
            routes: vec![json!({"routingKey": "gone-key", "sandbox": "gone",
                                "baseline": baseline, "target": target})],
        },
    ));
    let before = Counters::of(&mesh);
    let listener = mesh.listener();
    let owner = std::thread::spawn(move || {
        abandon(
            listener,
            &request("catalog", Some("gone-key")),
            Duration::from_millis(300),
        );
    });
    std::thread::sleep(Duration::from_millis(100));
    let waiters: Vec<_> = (0..6)
        .map(|_| {
            let request = request("catalog", Some("gone-key"));
            std::thread::spawn(move || {
                let sent = Instant::now();
                let response = request.send(listener).unwrap();
                (
                    response.status,
                    response.header("x-served-by"),
                    sent.elapsed(),
                )
            })
        })
        .collect();
    owner.join().unwrap();
    let answers: Vec<_> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
    let after = Counters::of(&mesh);
    let mut released = 0;
    for (status, served_by, latency) in &answers {
        assert_eq!(*status, 200);
        match served_by.as_deref() {
            // Waited on the other worker's own lookup, which answered.
            Some("catalog/gone") => assert!(*latency >= slow - Duration::from_millis(300)),
            // Waited on the abandoned lookup: released when its owner left.
            Some("catalog/baseline") => {
                released += 1;
                assert!(*latency < slow, "released only after {latency:?}");
            }
            other => panic!("served by {other:?}"),
        }
    }
    assert_eq!(after.since(&before, "fail_open"), released);
    println!("MEASURE owner gone: {released} of 6 waiters released at once, the rest routed by the other worker's lookup");
    assert_plugin_healthy(&mesh);
}

// ---------------------------------------------------------- lookup budget

/// Issue 10: a client that sends a fresh routing key with every request
/// made one RouteService lookup per request. The per-worker budget
/// (`maxLookupsPerSecond` 2, `lookupBurst` 5 here) bounds the lookups; the
/// requests beyond it go to baseline at once, counted as `lookup_shed`.
#[test]
fn fresh_keys_beyond_the_lookup_budget_go_to_baseline_without_a_lookup() {
    const RATE: u64 = 2;
    const BURST: u64 = 5;
    const REQUESTS: u64 = 80;
    let settings = RouteServiceSettings {
        sync_interval_ms: 3_600_000,
        ..RouteServiceSettings::for_tests()
    };
    let fake = FakeRouteService::start(Behavior::healthy()).unwrap();
    let mut config = mesh::route_service_plugin_config(Mode::Header, &settings);
    config["routeService"]["maxLookupsPerSecond"] = RATE.into();
    config["routeService"]["lookupBurst"] = BURST.into();
    let mut options = MeshOptions::for_tests(Mode::Header, config);
    options.label = "mesh-fake-budget".to_owned();
    options.route_service = Some(fake.addr());
    let mesh = DemoMesh::start(&options).unwrap();
    wait_for_a_sync(&mesh);

    let before = Counters::of(&mesh);
    let calls_before = fake.key_requests();
    let started = Instant::now();
    for n in 0..REQUESTS {
        let key = format!("fresh-{n}");
        assert_eq!(served_by(&mesh, "catalog", Some(&key)), "catalog/baseline");
    }
    let elapsed = started.elapsed();
    let after = Counters::of(&mesh);
    let calls = fake.key_requests() - calls_before;
    let lookups = after.since(&before, "lookup");
    let shed = after.since(&before, "lookup_shed");
    // Each worker: its burst, plus the rate over the time taken.
    let bound = WORKERS * (BURST + RATE * elapsed.as_secs().saturating_add(1));
    assert_eq!(calls, lookups, "every lookup reached the RouteService");
    assert!(
        lookups <= bound,
        "{lookups} lookups for {REQUESTS} fresh keys in {elapsed:?} (bound {bound})"
    );
    assert!(lookups >= 1, "no lookup at all");
    assert_eq!(lookups + shed, REQUESTS, "each fresh key: a lookup or shed");
    assert!(shed > 0);
    assert_eq!(after.since(&before, "cache_miss"), REQUESTS);
    // Shed requests are baseline, counted as fail-open; looked-up ones
    // (unknown keys) as baseline.
    assert_eq!(after.since(&before, "fail_open"), shed);
    assert_eq!(after.since(&before, "baseline"), lookups);
    println!(
        "MEASURE {REQUESTS} requests with fresh keys in {:.0} ms, budget {RATE}/s burst {BURST} \
         per worker ({WORKERS} workers): {lookups} lookups reached the RouteService, {shed} shed",
        ms(elapsed)
    );
    assert_plugin_healthy(&mesh);
}

// --------------------------------------------------------------- failures

/// One request as the load generator saw it.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    latency: Duration,
    status: u16,
    served_by: String,
    /// The key was a fresh one (needs a lookup), not a known sandbox's.
    fresh_key: bool,
}

/// Client threads sending, in turn, a known sandbox key (`known`, to
/// `catalog`) and a key nobody has (a lookup each) until `stop`.
fn load(
    mesh: &DemoMesh,
    threads: usize,
    known: &'static str,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Sample>>> {
    let listener = mesh.listener();
    (0..threads)
        .map(|thread| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                let mut n = 0_u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let fresh = format!("fresh-{thread}-{n}");
                    for (key, fresh_key) in [(known, false), (fresh.as_str(), true)] {
                        let sent = Instant::now();
                        let response = request("catalog", Some(key)).send(listener).unwrap();
                        samples.push(Sample {
                            sent,
                            latency: sent.elapsed(),
                            status: response.status,
                            served_by: response.header("x-served-by").unwrap_or_default(),
                            fresh_key,
                        });
                    }
                }
                samples
            })
        })
        .collect()
}

fn fresh_latencies(samples: &[Sample], from: Instant, to: Instant) -> Vec<Duration> {
    samples
        .iter()
        .filter(|s| s.fresh_key && s.sent >= from && s.sent < to)
        .map(|s| s.latency)
        .collect()
}

/// `kill -9` of the RouteService under load: no client sees anything but
/// `200`; the known sandbox keeps routing from the synced table; requests
/// that need a lookup pay at most `timeoutMs` until the breaker opens, then
/// nothing; after a restart on the same data dir and port, new sandboxes
/// route again, with no Envoy restart.
#[test]
fn route_service_killed_under_load_fails_open_and_recovers() {
    let _serial = LOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let settings = RouteServiceSettings::for_tests();
    let mut rs = route_service("rs-kill-load");
    rs.put_sandbox(
        mesh::SANDBOX,
        mesh::SANDBOX,
        &pairs(&[fork("catalog", mesh::SANDBOX)]),
    )
    .unwrap();
    let mesh = mesh_with(
        "mesh-rs-kill-load",
        Mode::Header,
        &settings,
        &[mesh::SANDBOX, "after"],
        rs.addr(),
        None,
    );
    wait_for_first_sync(&mesh, &settings);

    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&mesh, 3, mesh::SANDBOX, &stop);
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = Instant::now();
    rs.kill().unwrap();
    // Down: until the breaker has opened on both workers, then while open.
    std::thread::sleep(Duration::from_millis(500));
    let open_from = Instant::now();
    let open_counters = Counters::of(&mesh);
    std::thread::sleep(Duration::from_millis(2000));
    let open_to = Instant::now();
    let open_counters_end = Counters::of(&mesh);
    rs.restart().unwrap();
    let restarted_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    let samples: Vec<Sample> = workers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();

    // Nobody saw a failure; the known sandbox never stopped routing.
    let failures: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failures.is_empty(),
        "{} non-200 answers, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let known_misrouted = samples
        .iter()
        .filter(|s| !s.fresh_key && s.served_by != "catalog/pr-42")
        .count();
    assert_eq!(
        known_misrouted, 0,
        "the synced table keeps routing through an outage"
    );
    assert!(samples
        .iter()
        .filter(|s| s.fresh_key)
        .all(|s| s.served_by == "catalog/baseline"));

    let before = fresh_latencies(&samples, killed_at - Duration::from_secs(10), killed_at);
    let closing = fresh_latencies(&samples, killed_at, open_from);
    let open = fresh_latencies(&samples, open_from, open_to);
    let recovered = fresh_latencies(&samples, restarted_at, Instant::now());
    let bound = Duration::from_millis(settings.timeout_ms) + SLACK;
    let worst = samples
        .iter()
        .filter(|s| s.sent >= killed_at && s.sent < restarted_at)
        .map(|s| s.latency)
        .max()
        .unwrap_or_default();
    assert!(
        worst <= bound,
        "a request took {worst:?} during the outage (bound {bound:?})"
    );
    // While open, the breaker lets through only its half-open probes.
    let probes = open_counters_end.since(&open_counters, "lookup");
    let failed_open = open_counters_end.since(&open_counters, "fail_open");
    assert!(
        probes <= 3 * WORKERS,
        "{probes} lookups while the breaker was open"
    );
    assert!(failed_open >= 10, "only {failed_open} fail-open requests");
    assert!(
        Counters::of(&mesh).get("lookup_error") + Counters::of(&mesh).get("lookup_timeout") >= 1
    );
    println!(
        "MEASURE kill -9 under load, fresh-key (lookup) requests: before {}; breaker closing {}; \
         breaker open {} ({probes} probe lookups, {failed_open} fail-open); after restart {}",
        summary(&before),
        summary(&closing),
        summary(&open),
        summary(&recovered)
    );

    // Back: a sandbox created now routes at once (the breaker closed with
    // the first good sync), with the same Envoy.
    let recovered = poll(sync_bound(&settings) + SLACK, || {
        rs.put_sandbox("after", "after-key", &pairs(&[fork("catalog", "after")]))
            .unwrap();
        (served_by(&mesh, "catalog", Some("after-key")) == "catalog/after").then_some(())
    });
    assert!(recovered.is_some(), "no routing after the restart");
    assert_eq!(mesh.envoy().exit_status().unwrap(), None);
    assert_plugin_healthy(&mesh);
}

/// A sandbox acknowledged a moment before `kill -9`, never seen by the
/// filter, routes once the RouteService is back on the same data dir.
#[test]
fn sandbox_acknowledged_just_before_kill_routes_after_restart() {
    let settings = RouteServiceSettings::for_tests();
    let mut rs = route_service("rs-ack-kill");
    let mesh = mesh_with(
        "mesh-rs-ack-kill",
        Mode::Header,
        &settings,
        &["durable"],
        rs.addr(),
        None,
    );
    wait_for_first_sync(&mesh, &settings);
    let written = rs
        .put_sandbox(
            "durable",
            "durable-key",
            &pairs(&[fork("catalog", "durable")]),
        )
        .unwrap();
    rs.kill().unwrap();

    // Down: the filter cannot learn it; it fails open and counts.
    let before = Counters::of(&mesh);
    let key = Some("durable-key");
    let while_down = served_by(&mesh, "catalog", key);
    assert!(
        ["catalog/baseline", "catalog/durable"].contains(&while_down.as_str()),
        "{while_down}"
    );
    let noticed = poll(Duration::from_secs(10), || {
        (Counters::of(&mesh).since(&before, "sync_error") >= 2).then_some(())
    });
    assert!(noticed.is_some(), "failing syncs are counted");

    rs.restart().unwrap();
    let ready = Instant::now();
    assert!(
        rs.version().unwrap() >= written.version,
        "the acknowledged write survived kill -9"
    );
    let routed = poll(sync_bound(&settings) + SLACK, || {
        (served_by(&mesh, "catalog", key) == "catalog/durable").then_some(())
    });
    assert!(
        routed.is_some(),
        "not routed {:?} after the restart",
        sync_bound(&settings) + SLACK
    );
    println!(
        "MEASURE restart (ready) -> routed: {:.1} ms",
        ms(ready.elapsed())
    );
    assert_plugin_healthy(&mesh);
}

/// The pieces of a misbehaving-RouteService test.
struct Misbehaving {
    mesh: DemoMesh,
    fake: FakeRouteService,
}

/// An Envoy whose RouteService behaves as `behavior` from the start; its
/// static `routes` (the bootstrap table) route `pr-42` to catalog's fork.
fn misbehaving(label: &str, behavior: Behavior) -> Misbehaving {
    let settings = RouteServiceSettings::for_tests();
    let fake = FakeRouteService::start(behavior).unwrap();
    let (baseline, target) = fork("catalog", mesh::SANDBOX);
    let mesh = mesh_with(
        label,
        Mode::Header,
        &settings,
        &[mesh::SANDBOX],
        fake.addr(),
        Some(
            json!([{"routingKey": mesh::SANDBOX, "sandbox": mesh::SANDBOX,
                     "baseline": baseline, "target": target}]),
        ),
    );
    Misbehaving { mesh, fake }
}

/// Fresh keys go to baseline with a `200`, counted as `fail_open` and as
/// `failure`; table syncs fail and are counted; the bootstrap table still
/// routes; Envoy's log shows no plugin error. Returns the fresh-key latencies.
fn assert_fails_open(m: &Misbehaving, failure: &str, requests: usize) -> Vec<Duration> {
    let settings = RouteServiceSettings::for_tests();
    let before = Counters::of(&m.mesh);
    let mut latencies = Vec::new();
    for n in 0..requests {
        let key = format!("fresh-{n}");
        let sent = Instant::now();
        assert_eq!(
            served_by(&m.mesh, "catalog", Some(&key)),
            "catalog/baseline"
        );
        latencies.push(sent.elapsed());
    }
    let after = Counters::of(&m.mesh);
    let requests = requests as u64;
    assert_eq!(after.since(&before, "fail_open"), requests, "{:?}", after.0);
    assert!(
        after.since(&before, failure) >= 1,
        "{failure} did not move: {:?}",
        after.0
    );
    assert_eq!(after.since(&before, "routed"), 0);
    let sync_failed = poll(Duration::from_secs(10), || {
        (counter(&m.mesh, "sync_error") >= 1).then_some(())
    });
    assert!(sync_failed.is_some(), "no sync_error: {:?}", stats(&m.mesh));
    assert_eq!(counter(&m.mesh, "sync_ok"), 0);
    assert!(m.fake.table_requests() >= 1);
    // The static bootstrap table is kept while no good table arrives.
    assert_eq!(
        served_by(&m.mesh, "catalog", Some(mesh::SANDBOX)),
        "catalog/pr-42"
    );
    let bound = Duration::from_millis(settings.timeout_ms) + SLACK;
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(worst <= bound, "a request took {worst:?}");
    assert_plugin_healthy(&m.mesh);
    latencies
}

#[test]
fn slow_route_service_times_out_to_baseline() {
    let m = misbehaving(
        "mesh-fake-slow",
        Behavior::slow(Duration::from_millis(700), Answer::healthy_table()),
    );
    let latencies = assert_fails_open(&m, "lookup_timeout", 3);
    assert!(latencies.iter().any(|l| *l >= Duration::from_millis(150)));
    println!(
        "MEASURE slow RouteService (700 ms > timeoutMs 200): fresh-key requests {}",
        summary(&latencies)
    );
}

#[test]
fn failing_route_service_500_goes_to_baseline() {
    let m = misbehaving("mesh-fake-500", Behavior::answer(Answer::Status(500)));
    assert_fails_open(&m, "lookup_error", 3);
}

#[test]
fn garbage_from_the_route_service_goes_to_baseline() {
    let m = misbehaving("mesh-fake-garbage", Behavior::answer(Answer::Garbage));
    assert_fails_open(&m, "lookup_error", 3);
}

#[test]
fn huge_body_from_the_route_service_goes_to_baseline() {
    let m = misbehaving(
        "mesh-fake-huge",
        Behavior::answer(Answer::Huge(20 * 1024 * 1024)),
    );
    assert_fails_open(&m, "lookup_error", 3);
}

/// A RouteService that dies in the middle of its answer: Envoy reports the
/// call as reset, with no response at all.
#[test]
fn route_service_closing_mid_answer_goes_to_baseline() {
    let m = misbehaving("mesh-fake-truncated", Behavior::answer(Answer::Truncated));
    assert_fails_open(&m, "lookup_error", 3);
}

/// Headers at once, the body slower than `timeoutMs`: Envoy cannot answer
/// `504` once headers have arrived, so it resets the call.
#[test]
fn route_service_stalling_mid_body_times_out_to_baseline() {
    let m = misbehaving(
        "mesh-fake-stalled",
        Behavior::answer(Answer::StalledBody(Duration::from_millis(700))),
    );
    assert_fails_open(&m, "lookup_timeout", 3);
}

/// A RouteService that accepts and never answers: each lookup costs
/// `timeoutMs` until the breaker opens (five failures in a row per worker),
/// then nothing but a half-open probe now and then.
#[test]
fn hanging_route_service_costs_at_most_timeout_then_nothing_once_the_breaker_opens() {
    let _serial = LOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let settings = RouteServiceSettings::for_tests();
    let m = misbehaving("mesh-fake-hang", Behavior::answer(Answer::Hang));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers = load(&m.mesh, 4, mesh::SANDBOX, &stop);
    std::thread::sleep(Duration::from_millis(1500));
    let open_from = Instant::now();
    let at_open = Counters::of(&m.mesh);
    std::thread::sleep(Duration::from_millis(2000));
    let at_end = Counters::of(&m.mesh);
    stop.store(true, Ordering::SeqCst);
    let samples: Vec<Sample> = workers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(samples.iter().all(|s| s.status == 200));
    assert!(samples
        .iter()
        .all(|s| s.fresh_key || s.served_by == "catalog/pr-42"));
    // Until the first request that did not wait, no worker's breaker was open.
    let first_fast = samples
        .iter()
        .filter(|s| s.fresh_key && s.latency < Duration::from_millis(settings.timeout_ms / 2))
        .map(|s| s.sent)
        .min()
        .unwrap();
    let closed = fresh_latencies(&samples, started, first_fast);
    let closing = fresh_latencies(&samples, started, open_from);
    let open = fresh_latencies(&samples, open_from, Instant::now());
    let bound = Duration::from_millis(settings.timeout_ms) + SLACK;
    let worst = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    assert!(worst <= bound, "a request took {worst:?} (bound {bound:?})");
    let waited = |samples: &[Duration]| {
        samples
            .iter()
            .filter(|l| **l >= Duration::from_millis(settings.timeout_ms / 2))
            .count()
    };
    // Before the breaker opened, requests waited for timeoutMs.
    assert!(!closed.is_empty());
    assert_eq!(waited(&closed), closed.len());
    // Once open: fail-open at once, but for a few half-open probes.
    let probes = at_end.since(&at_open, "lookup");
    assert!(probes <= 3 * WORKERS, "{probes} lookups while open");
    assert!(quantile(&open, 0.5) < Duration::from_millis(settings.timeout_ms / 4));
    assert!(at_end.get("lookup_timeout") >= 1);
    assert!(at_end.since(&at_open, "fail_open") >= 10);
    println!(
        "MEASURE hanging RouteService, fresh-key requests: before the breaker opened {}; \
         first 1.5 s {} ({} waited); breaker open {} ({probes} probes)",
        summary(&closed),
        summary(&closing),
        waited(&closing),
        summary(&open)
    );
    assert_plugin_healthy(&m.mesh);
}

/// Sends `request` on a new connection and closes it after `after`,
/// without reading the answer (a client that gives up).
fn abandon(listener: SocketAddr, request: &Request, after: Duration) {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(listener).unwrap();
    stream.write_all(&request.to_bytes()).unwrap();
    std::thread::sleep(after);
    drop(stream);
}

/// The breaker's half-open probe is a request like any other: if its client
/// goes away before the RouteService answers, the next request must be
/// able to probe again, or lookups on that worker would stop for good.
#[test]
fn a_probe_abandoned_by_its_client_does_not_stop_lookups_for_good() {
    let m = misbehaving("mesh-fake-abandoned-probe", Behavior::answer(Answer::Hang));
    // Open the breaker on both workers: 24 lookups at once, 200 ms each.
    let listener = m.mesh.listener();
    let hung: Vec<_> = (0..24)
        .map(|n| {
            let request = request("catalog", Some(&format!("open-{n}")));
            std::thread::spawn(move || request.send(listener).unwrap().status)
        })
        .collect();
    assert!(hung.into_iter().all(|t| t.join().unwrap() == 200));
    let mut n = 0_u32;
    let mut fresh = || {
        n += 1;
        format!("fresh-{n}")
    };
    // Open on both when eight requests in a row fail open at once.
    let opened = poll(Duration::from_secs(10), || {
        (0..8)
            .all(|_| {
                let sent = Instant::now();
                assert_eq!(
                    served_by(&m.mesh, "catalog", Some(&fresh())),
                    "catalog/baseline"
                );
                sent.elapsed() < Duration::from_millis(100)
            })
            .then_some(())
    });
    assert!(opened.is_some(), "the breaker did not open on both workers");
    // Once a worker's backoff is over, its next lookup is the half-open
    // probe: here every client gives up 50 ms in, before the (hanging)
    // answer. Repeat until a probe was made.
    let probed = poll(Duration::from_secs(10), || {
        let before = Counters::of(&m.mesh);
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let request = request("catalog", Some(&fresh()));
                std::thread::spawn(move || abandon(listener, &request, Duration::from_millis(50)))
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        let probes = Counters::of(&m.mesh).since(&before, "lookup");
        (probes >= 1).then_some(probes)
    });
    assert!(probed.is_some(), "no half-open probe was made");
    // Healthy again: lookups resume (within the backoff a worker may still
    // be in), instead of failing open for good.
    m.fake.set_behavior(Behavior::healthy());
    let resumed = poll(Duration::from_secs(10), || {
        let before = Counters::of(&m.mesh);
        for _ in 0..12 {
            assert_eq!(
                served_by(&m.mesh, "catalog", Some(&fresh())),
                "catalog/baseline"
            );
        }
        let after = Counters::of(&m.mesh);
        (after.since(&before, "fail_open") == 0 && after.since(&before, "lookup") == 12)
            .then_some(())
    });
    assert!(
        resumed.is_some(),
        "lookups stopped after an abandoned probe: {:?}",
        stats(&m.mesh)
    );
    assert_plugin_healthy(&m.mesh);
}

// ------------------------------------------------------------ delta sync

/// `routeservice_table_reads_total{answer="<answer>"}` of the RouteService.
fn table_reads(rs: &RouteService, answer: &str) -> u64 {
    let prefix = format!("routeservice_table_reads_total{{answer=\"{answer}\"}} ");
    rs.metrics()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse().unwrap()))
        .unwrap_or_else(|| panic!("no {prefix}"))
}

/// `routeservice_table_read_bytes_total{answer="<answer>"}`.
fn table_read_bytes(rs: &RouteService, answer: &str) -> u64 {
    let prefix = format!("routeservice_table_read_bytes_total{{answer=\"{answer}\"}} ");
    rs.metrics()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse().unwrap()))
        .unwrap_or_else(|| panic!("no {prefix}"))
}

/// Requests with `key` until `count` in a row are served by `want` on
/// `service` (both workers answer in a run of 20): the table every worker
/// holds has the change.
fn every_worker_serves(mesh: &DemoMesh, service: &str, key: &str, want: &str) -> bool {
    poll(Duration::from_secs(10), || {
        (0..20)
            .all(|_| served_by(mesh, service, Some(key)) == want)
            .then_some(())
    })
    .is_some()
}

/// Once the filter holds a table it syncs by `?since=V`: one full table at
/// start, then only deltas, each a few hundred bytes; a change reaches
/// both workers (as table hits, no lookup) through the shared delta log.
#[test]
fn the_filter_syncs_by_delta_after_its_first_full_table() {
    let settings = RouteServiceSettings::for_tests();
    let rs = route_service("rs-delta");
    for n in 0..50 {
        let name = format!("bulk-{n}");
        rs.put_sandbox(&name, &name, &pairs(&[fork("catalog", &name)]))
            .unwrap();
    }
    let mesh = mesh_with(
        "mesh-rs-delta",
        Mode::Header,
        &settings,
        &["dl", "bulk-7"],
        rs.addr(),
        None,
    );
    wait_for_first_sync(&mesh, &settings);
    let full = table_reads(&rs, "full");
    assert_eq!(full, 1, "one full table per Envoy, fetched by one worker");

    let before = Counters::of(&mesh);
    let deltas_before = table_reads(&rs, "delta");
    let bytes_before = table_read_bytes(&rs, "delta");
    let written = rs
        .put_sandbox("dl", "dl-key", &pairs(&[fork("catalog", "dl")]))
        .unwrap();
    wait_for_table_version(&mesh, &settings, written.version);
    assert!(every_worker_serves(
        &mesh,
        "catalog",
        "dl-key",
        "catalog/dl"
    ));
    // Change it: reviews instead of catalog.
    let changed = rs
        .put_sandbox("dl", "dl-key", &pairs(&[fork("reviews", "dl")]))
        .unwrap();
    wait_for_table_version(&mesh, &settings, changed.version);
    assert!(every_worker_serves(
        &mesh,
        "reviews",
        "dl-key",
        "reviews/dl"
    ));
    assert!(every_worker_serves(
        &mesh,
        "catalog",
        "dl-key",
        "catalog/baseline"
    ));
    // And delete it.
    let deleted = rs.delete_sandbox("dl").unwrap();
    wait_for_table_version(&mesh, &settings, deleted.version);
    assert!(every_worker_serves(
        &mesh,
        "reviews",
        "dl-key",
        "reviews/baseline"
    ));
    // The bulk sandboxes still route on every worker (nothing lost).
    assert!(every_worker_serves(
        &mesh,
        "catalog",
        "bulk-7",
        "catalog/bulk-7"
    ));

    let after = Counters::of(&mesh);
    let deltas = table_reads(&rs, "delta") - deltas_before;
    let delta_bytes = table_read_bytes(&rs, "delta") - bytes_before;
    assert_eq!(
        table_reads(&rs, "full"),
        full,
        "no full table after the first"
    );
    assert_eq!(table_reads(&rs, "gone"), 0);
    assert!(deltas >= 3, "three changes, {deltas} deltas");
    assert_eq!(after.since(&before, "sync_delta"), deltas);
    assert_eq!(after.since(&before, "sync_full"), 0);
    assert_eq!(after.since(&before, "sync_gone"), 0);
    assert_eq!(after.since(&before, "sync_error"), 0);
    // Every worker knew the key from its table; the first request of the
    // new key may have looked it up once per worker before a sync.
    assert!(after.since(&before, "lookup") <= WORKERS);
    let per_delta = delta_bytes / deltas;
    assert!(per_delta < 1024, "{per_delta} bytes per delta");
    let full_bytes = table_read_bytes(&rs, "full");
    println!(
        "MEASURE delta sync: {deltas} deltas, {per_delta} bytes each on average; \
         the one full table was {full_bytes} bytes (51 sandboxes)"
    );
    assert_plugin_healthy(&mesh);
}

/// A RouteService restarted after a write the filter had not synced no
/// longer knows the filter's version: it answers `410`, and the filter
/// takes the full table at once and routes by it.
#[test]
fn a_restarted_route_service_answers_410_and_the_filter_takes_the_full_table() {
    let settings = RouteServiceSettings::for_tests();
    let mut rs = route_service("rs-delta-410");
    let mesh = mesh_with(
        "mesh-rs-delta-410",
        Mode::Header,
        &settings,
        &["gone"],
        rs.addr(),
        None,
    );
    wait_for_first_sync(&mesh, &settings);
    let before = Counters::of(&mesh);
    // A write, then kill -9 before the filter syncs it (retried in the rare
    // case a sync slips in between).
    let mut took_410 = false;
    for attempt in 0..5 {
        let written = rs
            .put_sandbox(
                "gone",
                "gone-key",
                &pairs(&[fork(
                    if attempt % 2 == 0 {
                        "catalog"
                    } else {
                        "reviews"
                    },
                    "gone",
                )]),
            )
            .unwrap();
        rs.kill().unwrap();
        rs.restart().unwrap();
        wait_for_table_version(&mesh, &settings, written.version);
        if table_reads(&rs, "gone") >= 1 {
            took_410 = true;
            let service = if attempt % 2 == 0 {
                "catalog"
            } else {
                "reviews"
            };
            assert!(every_worker_serves(
                &mesh,
                service,
                "gone-key",
                &format!("{service}/gone")
            ));
            break;
        }
    }
    assert!(took_410, "no 410 in 5 attempts");
    let after = Counters::of(&mesh);
    assert!(after.since(&before, "sync_gone") >= 1);
    assert!(
        after.since(&before, "sync_full") >= 1,
        "the full table after the 410"
    );
    assert!(table_reads(&rs, "full") >= 1);
    // Back to deltas afterwards.
    let deltas = table_reads(&rs, "delta");
    let next = rs
        .put_sandbox(
            "gone",
            "gone-key",
            &pairs(&[fork("catalog", "gone"), fork("reviews", "gone")]),
        )
        .unwrap();
    wait_for_table_version(&mesh, &settings, next.version);
    for service in ["catalog", "reviews"] {
        assert!(every_worker_serves(
            &mesh,
            service,
            "gone-key",
            &format!("{service}/gone")
        ));
    }
    assert!(table_reads(&rs, "delta") > deltas);
    assert_plugin_healthy(&mesh);
}
