//! Measures the numbers quoted in docs/routeservice.md, over a real loopback
//! socket against the durable (redb) store in a temporary directory:
//!
//!     cargo run --release -p routeservice --example measure [-- SANDBOXES]
//!
//! PUT latency (durable commits) on a small and a large table, and the size
//! and latency of `GET /v1/routes` (200 and 304) with SANDBOXES (default
//! 10,000) sandboxes of one route each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use routeservice::model::{SandboxRoute, SandboxSpec};
use routeservice::redb_store::RedbStore;
use routeservice::service::Seed;
use routeservice::{app, AppState, Auth, RouteService};

fn spec(i: usize) -> SandboxSpec {
    SandboxSpec {
        routing_key: format!("key-{i}"),
        routes: vec![SandboxRoute {
            baseline: format!("svc-{}.team-{}.svc.cluster.local", i % 50, i % 7),
            target: format!("svc-{}-sb-{i}.team-{}.svc.cluster.local", i % 50, i % 7),
        }],
    }
}

/// Durations of the store's commits alone (fsync included).
#[derive(Default)]
struct Commits(std::sync::Mutex<Vec<Duration>>);

impl routeservice::service::CommitObserver for Commits {
    fn commit(&self, took: Duration, _ok: bool) {
        self.0.lock().unwrap().push(took);
    }
}

impl Commits {
    fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
        samples.len()
    )
}

fn main() {
    let sandboxes: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |n| n.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let commits = Arc::new(Commits::default());
    let service = Arc::new(
        RouteService::open(Arc::new(store))
            .unwrap()
            .with_observer(commits.clone()),
    );
    let state = AppState::new(
        Auth::token("dev-token").unwrap(),
        Arc::new(routeservice::metrics::Metrics::new()),
        routeservice::api::DEFAULT_BODY_LIMIT,
    );
    state.set_ready(Arc::clone(&service));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app(state)).await });

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let put = |name: &str, spec: &SandboxSpec| {
        let started = Instant::now();
        let response = agent
            .put(format!("{url}/v1/sandboxes/{name}"))
            .header("authorization", "Bearer dev-token")
            .content_type("application/json")
            .send(serde_json::to_vec(spec).unwrap())
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        started.elapsed()
    };
    let get = |path: &str, etag: Option<&str>| {
        let started = Instant::now();
        let mut request = agent.get(format!("{url}{path}"));
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        let mut response = request.call().unwrap();
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .unwrap();
        (started.elapsed(), status, body.len())
    };

    // Durable PUTs on a small table.
    let small: Vec<Duration> = (0..200)
        .map(|i| put(&format!("small-{i}"), &spec(1_000_000 + i)))
        .collect();
    println!(
        "PUT, table of up to 200 sandboxes:      {}",
        percentiles(small)
    );
    println!(
        "  of which store commit:                {}",
        percentiles(commits.take())
    );

    // Bulk load through a seed (one transaction).
    let seed = Seed {
        sandboxes: (0..sandboxes)
            .map(|i| (format!("sb-{i}"), spec(i)))
            .collect::<BTreeMap<_, _>>(),
    };
    let started = Instant::now();
    service.apply_seed(&seed).unwrap();
    commits.take();
    println!(
        "seed of {sandboxes} sandboxes in one commit: {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    let large: Vec<Duration> = (0..100)
        .map(|i| put(&format!("large-{i}"), &spec(2_000_000 + i)))
        .collect();
    println!(
        "PUT, table of {} sandboxes:            {}",
        service.snapshot().sandbox_count(),
        percentiles(large)
    );
    println!(
        "  of which store commit:                {}",
        percentiles(commits.take())
    );

    let version = service.snapshot().version();
    let etag = format!("\"{version}\"");
    let mut full = Vec::new();
    let mut size = 0;
    for _ in 0..100 {
        let (took, status, len) = get("/v1/routes", None);
        assert_eq!(status, 200);
        size = len;
        full.push(took);
    }
    println!(
        "GET /v1/routes ({} routes, {} bytes): {}",
        service.snapshot().route_count(),
        size,
        percentiles(full)
    );
    let not_modified: Vec<Duration> = (0..1000)
        .map(|_| {
            let (took, status, _) = get("/v1/routes", Some(&etag));
            assert_eq!(status, 304);
            took
        })
        .collect();
    println!(
        "GET /v1/routes, If-None-Match -> 304:   {}",
        percentiles(not_modified)
    );
    let by_key: Vec<Duration> = (0..1000)
        .map(|i| {
            let (took, status, _) = get(&format!("/v1/routes?routingKey=key-{}", i * 7), None);
            assert_eq!(status, 200);
            took
        })
        .collect();
    println!(
        "GET /v1/routes?routingKey=K:            {}",
        percentiles(by_key)
    );
    let db = std::fs::metadata(dir.path().join(routeservice::redb_store::FILE_NAME))
        .unwrap()
        .len();
    println!("routes.redb: {:.1} MiB", db as f64 / (1024.0 * 1024.0));
}
