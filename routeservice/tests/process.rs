//! The real binary over a real socket: durability across `kill -9`, start-up
//! refusals, graceful shutdown, seeding.

// A test crate: its helpers, like its tests, fail loudly (clippy.toml allows
// that only inside `#[test]` functions themselves).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, BIN, TOKEN};
use routeservice::client::{Client, ClientError};
use routeservice::model::{SandboxRoute, SandboxSpec};

/// The `i`-th write of the stream: names cycle over 25 so later writes
/// replace earlier ones; each has 1-4 routes, so a half-written sandbox
/// would show.
fn write(i: usize) -> (String, SandboxSpec) {
    let name = format!("sb-{}", i % 25);
    let routes = (0..=(i % 4))
        .map(|r| SandboxRoute {
            baseline: format!("svc-{r}.ns.svc.cluster.local"),
            target: format!("svc-{r}-w{i}.ns.svc.cluster.local"),
        })
        .collect();
    let spec = SandboxSpec {
        routing_key: format!("key-{}", i % 25),
        routes,
    };
    (name, spec)
}

fn stored_specs(list: &routeservice::model::SandboxList) -> BTreeMap<String, SandboxSpec> {
    list.sandboxes
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                SandboxSpec {
                    routing_key: s.routing_key.clone(),
                    routes: s.routes.clone(),
                },
            )
        })
        .collect()
}

/// A stream of PUTs from a client thread, `kill -9` mid-stream, restart on
/// the same data dir; six times, each kill a little later after an
/// acknowledgement so some land inside a commit.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The state as last read back, and its version.
    let mut known: BTreeMap<String, SandboxSpec> = BTreeMap::new();
    let mut known_version = 0;
    let mut next_write = 0;
    const ROUNDS: u64 = 6;
    for round in 0..ROUNDS {
        let mut server = Server::start(&data, &[]);
        let client = Client::new(&server.url(), Some(TOKEN.into()));
        let first = next_write;
        // Sequential writes from one thread: writes first..acked were
        // acknowledged (with their versions); at most one more was in
        // flight when the process died.
        let acked = Arc::new(AtomicUsize::new(first));
        let versions = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let acked = Arc::clone(&acked);
            let versions = Arc::clone(&versions);
            std::thread::spawn(move || {
                for i in first..first + 5_000 {
                    let (name, spec) = write(i);
                    match client.put(&name, &spec) {
                        Ok((_, stored)) => {
                            assert_eq!(stored.routes, spec.routes);
                            versions.lock().unwrap().push(stored.version);
                            acked.store(i + 1, Ordering::SeqCst);
                        }
                        Err(ClientError::Unreachable { .. }) => return,
                        Err(e) => panic!("write {i}: {e}"),
                    }
                }
            })
        };
        let started = Instant::now();
        while acked.load(Ordering::SeqCst) < first + 40 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "writes too slow"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        // Spread the kills over one write's time.
        let per_write = started.elapsed() / 40;
        std::thread::sleep(per_write * u32::try_from(round).unwrap() / ROUNDS as u32);
        server.child.kill().unwrap(); // SIGKILL, mid-stream
        server.child.wait().unwrap();
        writer.join().unwrap();
        let acked = acked.load(Ordering::SeqCst);
        let versions = versions.lock().unwrap().clone();
        let last_version = *versions.last().unwrap();
        assert!(versions.windows(2).all(|w| w[1] > w[0]), "{versions:?}");

        let server = Server::start(&data, &[]);
        let list = Client::new(&server.url(), None).list().unwrap();
        let stored = stored_specs(&list);
        eprintln!(
            "round {round}: killed after write {acked} (version {last_version}, {per_write:?} a write); \
             restarted at version {} with {} sandboxes",
            list.version,
            stored.len()
        );

        // Each name holds its last acknowledged content, or the write in
        // flight at the kill (committed but not acknowledged).
        let mut expected = known.clone();
        for i in first..acked {
            let (name, spec) = write(i);
            expected.insert(name, spec);
        }
        let (in_flight_name, in_flight_spec) = write(acked);
        for (name, spec) in &expected {
            let got = stored
                .get(name)
                .unwrap_or_else(|| panic!("acknowledged sandbox {name} lost"));
            let ok = got == spec || (*name == in_flight_name && *got == in_flight_spec);
            assert!(ok, "{name}: stored {got:?}, acknowledged {spec:?}");
        }
        for (name, got) in &stored {
            let sent_whole = expected.get(name) == Some(got)
                || (*name == in_flight_name && *got == in_flight_spec);
            assert!(sent_whole, "{name}: stored but never sent whole: {got:?}");
        }
        assert!(
            list.version == last_version || list.version == last_version + 1,
            "version {} after acknowledged {last_version}",
            list.version
        );
        assert!(list.version > known_version);
        // Every sandbox's own version is at most the table's.
        assert!(list.sandboxes.iter().all(|s| s.version <= list.version));
        known = stored;
        known_version = list.version;
        next_write = acked + 1;
    }
    // The restarted server goes on from there.
    let server = Server::start(&data, &[]);
    let client = Client::new(&server.url(), Some(TOKEN.into()));
    let (_, next) = client
        .put("after-restart", &write(0).1.with_key("after"))
        .unwrap();
    assert_eq!(next.version, known_version + 1);
}

trait WithKey {
    fn with_key(self, key: &str) -> Self;
}

impl WithKey for SandboxSpec {
    fn with_key(mut self, key: &str) -> Self {
        self.routing_key = key.into();
        self
    }
}

#[test]
fn refuses_to_start_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("ROUTESERVICE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains("ROUTESERVICE_TOKEN is not set"), "{stderr}");
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing opened before refusing"
    );

    // An empty token is no token either.
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("ROUTESERVICE_TOKEN", "")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn insecure_no_auth_starts_and_accepts_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(&dir.path().join("data"), &["--insecure-no-auth"], None);
    server.wait_ready();
    let client = Client::new(&server.url(), None);
    client.put("pr-1", &write(0).1).unwrap();
    assert!(server.log_text().contains("--insecure-no-auth"));
}

#[test]
fn sigterm_shuts_down_gracefully_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["--log-format", "json"]);
    let client = Client::new(&server.url(), Some(TOKEN.into()));
    client.put("pr-42", &write(3).1).unwrap();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log_text());
    let log = server.log_text();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("stopped: storage closed"), "{log}");
    // JSON log lines, one per request.
    let access: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["target"] == "routeservice::access")
        .collect();
    let put = access.iter().find(|l| l["method"] == "PUT").unwrap();
    assert_eq!(put["route"], "/v1/sandboxes/{name}");
    assert_eq!(put["status"], 201);
    assert!(put["latency_us"].as_u64().is_some());

    let server = Server::start(&data, &[]);
    let got = Client::new(&server.url(), None).get("pr-42").unwrap();
    assert_eq!(got.routes, write(3).1.routes);
}

#[test]
fn seed_applies_once_and_bad_seeds_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        r#"{"sandboxes": {"pr-42": {"routingKey": "pr-42", "routes": [
            {"baseline": "catalog.demo.svc.cluster.local", "target": "catalog-pr-42.demo.svc.cluster.local"}]}}}"#,
    )
    .unwrap();
    let seed_arg = seed.to_str().unwrap();
    let mut first = Server::start(&data, &["--seed", seed_arg]);
    let routes = Client::new(&first.url(), None).routes(None).unwrap();
    assert_eq!((routes.version, routes.routes.len()), (1, 1));
    assert_eq!(first.terminate().code(), Some(0));

    let mut again = Server::start(&data, &["--seed", seed_arg]);
    let routes = Client::new(&again.url(), None).routes(None).unwrap();
    assert_eq!(
        routes.version, 1,
        "re-seeding the same content keeps the version"
    );
    assert_eq!(again.terminate().code(), Some(0));

    std::fs::write(
        &seed,
        r#"{"sandboxes": {"pr-42": {"routingKey": "pr 42", "routes": []}}}"#,
    )
    .unwrap();
    let mut bad = Server::spawn(&data, &["--seed", seed_arg], Some(TOKEN));
    assert_eq!(bad.wait_exit(Duration::from_secs(20)).code(), Some(64));
    let log = bad.log_text();
    assert!(log.contains("sandboxes.pr-42.routingKey"), "{log}");
}
