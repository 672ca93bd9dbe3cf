//! `make run` as a user runs it: the real demo binary as a process, with
//! its real Envoy (the release `.wasm`), upstreams and RouteService, driven
//! from outside through its ports and signals and read through what it
//! prints. All ports are free loopback ports (`DEMO_*_PORT=0`) and the data
//! dir is the test's own (`DEMO_DIR`), so it runs beside `make run` and the
//! other tests.
//!
//! Needs the release `.wasm` (`make build`) and Envoy (`make venv`); the
//! `routeservice` binary is built by the harness (see e2e/README.md).

// This whole file is test code, helpers included: a failing check should
// fail the test loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_router_e2e::child::{self, GuardedChild};
use sandbox_router_e2e::client::{Request, Response};
use sandbox_router_e2e::{envoy_log, mesh, routeservice};
use serde_json::{json, Value};

const TOKEN: &str = routeservice::TEST_TOKEN;

/// The demo process and what it printed.
struct Demo {
    child: GuardedChild,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Demo {
    /// Starts the demo binary on free ports with its own `DEMO_DIR`.
    fn start(label: &str) -> Self {
        let dir = sandbox_router_e2e::new_run_dir(label).unwrap();
        let stdout = dir.join("demo.stdout.log");
        let stderr = dir.join("demo.stderr.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_demo"));
        command
            .env("MODE", "header")
            .env("DEMO_DIR", &dir)
            .env("DEMO_LISTENER_PORT", "0")
            .env("DEMO_ADMIN_PORT", "0")
            .env("DEMO_ROUTESERVICE_PORT", "0")
            .env_remove("DEMO_UPSTREAM_BASE_PORT")
            .env("ROUTESERVICE_TOKEN", TOKEN)
            // Built once by this process; the demo need not run cargo again.
            .env("ROUTESERVICE_BIN", routeservice::binary().unwrap())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        Self {
            child: GuardedChild::spawn(command).unwrap(),
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn describe(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!(
            "demo stdout ({}):\n{}\ndemo stderr:\n{}",
            self.stdout.display(),
            self.output(),
            envoy_log::tail(&stderr, 30)
        )
    }

    /// The first printed line containing `needle`, waiting up to `timeout`.
    #[track_caller]
    fn line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output().lines().find(|line| line.contains(needle)) {
                return line.to_owned();
            }
            if let Some(status) = self.child.exit_status().unwrap() {
                panic!(
                    "the demo exited ({status}) before printing {needle:?}\n{}",
                    self.describe()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the demo printed no {needle:?} within {timeout:?}\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The word after `word` in `line`, without a trailing comma.
#[track_caller]
fn after<'a>(line: &'a str, word: &str) -> &'a str {
    let mut words = line.split_whitespace();
    words
        .find(|w| *w == word)
        .and_then(|_| words.next())
        .map(|w| w.trim_end_matches(','))
        .unwrap_or_else(|| panic!("no word after {word:?} in {line:?}"))
}

/// Whether `pid` is a live process (a zombie has exited: not live).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) S ...`; the comm may hold spaces and parentheses.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Polls `probe` every 20 ms until it holds or `timeout` passes; the time
/// it took.
fn poll(timeout: Duration, mut probe: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if probe() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `GET /` to `service` through Envoy, with routing key `key` if given.
fn through_envoy(
    listener: SocketAddr,
    service: &str,
    key: Option<&str>,
) -> anyhow::Result<Response> {
    let request = Request::get("/").header("host", mesh::fqdn(service));
    match key {
        Some(key) => request.header("baggage", format!("sd-routing-key={key}")),
        None => request,
    }
    .send(listener)
}

/// The `x-served-by` of a `200` through Envoy, else what went wrong.
fn served_by(listener: SocketAddr, service: &str, key: Option<&str>) -> String {
    match through_envoy(listener, service, key) {
        Ok(response) if response.status == 200 => {
            response.header("x-served-by").unwrap_or_default()
        }
        Ok(response) => format!("status {}", response.status),
        Err(error) => format!("error {error:#}"),
    }
}

/// `PUT /v1/sandboxes/pr-42` with `routing_key`, forking `services`.
fn put_pr_42(rs: SocketAddr, routing_key: &str, services: &[&str]) -> Response {
    let routes: Vec<Value> = services
        .iter()
        .map(|service| {
            json!({
                "baseline": mesh::fqdn(service),
                "target": mesh::fqdn(&mesh::fork_name(service, mesh::SANDBOX)),
            })
        })
        .collect();
    Request::new("PUT", "/v1/sandboxes/pr-42")
        .header("host", rs.to_string())
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .header("connection", "close")
        .body(json!({"routingKey": routing_key, "routes": routes}).to_string())
        .send(rs)
        .unwrap()
}

fn rs_get(rs: SocketAddr, path: &str) -> anyhow::Result<Response> {
    Request::get(path)
        .header("host", rs.to_string())
        .header("connection", "close")
        .send(rs)
}

/// The plugin's `table_version` gauge, from Envoy's admin `/stats`.
fn table_version(admin: SocketAddr) -> u64 {
    let Ok(response) = Request::get("/stats?filter=sandbox_router.table_version")
        .header("host", admin.to_string())
        .header("connection", "close")
        .send(admin)
    else {
        return 0;
    };
    sandbox_router_e2e::envoy::parse_stats(&response.text())
        .get("wasmcustom.sandbox_router.table_version")
        .copied()
        .unwrap_or(0)
}

/// `kill -9` of the demo's RouteService: Envoy and the upstreams stay up,
/// the requests sent until it is back (200 or more) all get a `200`, from
/// the last good table (the sandbox forks reviews too since a change made
/// through the API). The demo says it is down and restarts it on the same
/// data dir and port, without the seed: the change is still there, and a
/// change made after the restart routes. Ctrl-C then stops everything: no
/// process is left.
#[test]
fn demo_keeps_serving_when_the_route_service_is_killed_and_restarts_it() {
    let demo = Demo::start("demo-rs-kill");
    demo.line("Ctrl-C to stop.", Duration::from_secs(120));
    let envoy_line = demo.line("  envoy ", Duration::ZERO);
    let envoy_pid: u32 = after(&envoy_line, "pid").parse().unwrap();
    let listener: SocketAddr = after(&envoy_line, "listener").parse().unwrap();
    let admin: SocketAddr = after(&envoy_line, "admin").parse().unwrap();
    let rs_line = demo.line("  routeservice ", Duration::ZERO);
    let rs_pid: u32 = after(&rs_line, "pid").parse().unwrap();
    let rs: SocketAddr = after(&rs_line, &format!("{rs_pid},"))
        .trim_start_matches("http://")
        .parse()
        .unwrap();

    // The seed: pr-42 forks catalog only.
    let routed = poll(Duration::from_secs(10), || {
        served_by(listener, "catalog", Some(mesh::SANDBOX)) == "catalog/pr-42"
    });
    assert!(
        routed.is_some(),
        "the seed never routed\n{}",
        demo.describe()
    );

    // State created through the API: pr-42 forks reviews too. Wait until
    // every worker decides from the table that has it.
    let put = put_pr_42(rs, mesh::SANDBOX, &["catalog", "reviews"]);
    assert_eq!(put.status, 200, "{}", put.text());
    let version = put.json().unwrap()["version"].as_u64().unwrap();
    let synced = poll(Duration::from_secs(15), || table_version(admin) >= version);
    assert!(synced.is_some(), "table version {version} never synced");
    // A worker adopts a published table on its next tick (250 ms in the demo).
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        served_by(listener, "reviews", Some(mesh::SANDBOX)),
        "reviews/pr-42"
    );

    // kill -9, and wait until its port refuses connections: it is down.
    child::send_signal(rs_pid, libc::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let down = poll(Duration::from_secs(5), || TcpStream::connect(rs).is_err());
    assert!(
        down.is_some(),
        "the RouteService still answers after kill -9"
    );

    // Requests back to back through the whole outage, until it answers
    // again (bounded), and at least 200: they span the demo noticing the
    // exit, the backoff (0.5 s, so most of the first 200 land in it) and
    // the restart.
    let cases = [
        ("catalog", Some(mesh::SANDBOX), "catalog/pr-42"),
        ("reviews", Some(mesh::SANDBOX), "reviews/pr-42"),
        ("catalog", None, "catalog/baseline"),
        ("reviews", None, "reviews/baseline"),
    ];
    let mut failures = Vec::new();
    let mut misrouted = Vec::new();
    let (mut sent, mut sent_while_down) = (0_usize, 0_usize);
    let sending = Instant::now();
    loop {
        let rs_up = TcpStream::connect(rs).is_ok();
        if sent >= 200 && rs_up {
            break;
        }
        if sending.elapsed() > Duration::from_secs(30)
            || demo.child.exit_status().unwrap().is_some()
        {
            break;
        }
        let (service, key, expected) = cases[sent % cases.len()];
        sent += 1;
        sent_while_down += usize::from(!rs_up);
        match through_envoy(listener, service, key) {
            Ok(response) if (200..300).contains(&response.status) => {
                let got = response.header("x-served-by").unwrap_or_default();
                if got != expected {
                    misrouted.push(format!("{service} {key:?}: {got}, not {expected}"));
                }
            }
            Ok(response) => failures.push(format!("{service} {key:?}: {}", response.status)),
            Err(error) => failures.push(format!("{service} {key:?}: {error:#}")),
        }
    }
    let sending = sending.elapsed();
    assert!(
        failures.is_empty(),
        "{} non-2xx of {sent} requests ({sent_while_down} sent while the RouteService was down), \
         e.g. {:?}\n{}",
        failures.len(),
        failures.first(),
        demo.describe()
    );
    assert!(
        misrouted.is_empty(),
        "the last good table must keep routing: {misrouted:?}"
    );
    assert!(
        sent_while_down >= 1,
        "no request was sent while it was down"
    );

    // The demo says so, and brings it back on the same port.
    let down_line = demo.line(
        &format!("RouteService down: pid {rs_pid} exited"),
        Duration::from_secs(5),
    );
    assert!(down_line.contains("SIGKILL"), "{down_line}");
    let output = demo.output();
    assert!(
        output.contains("Envoy and the upstreams stay up")
            && output.contains("last good route table"),
        "{output}"
    );
    let back_line = demo.line("RouteService back: pid", Duration::from_secs(30));
    let back_at = killed_at.elapsed();
    let new_pid: u32 = after(&back_line, "pid").parse().unwrap();
    assert_ne!(new_pid, rs_pid);
    let ready = rs_get(rs, "/readyz").unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());

    // What was acknowledged before the kill is back, not the seed again.
    let list = rs_get(rs, "/v1/sandboxes").unwrap().json().unwrap();
    let pr_42 = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sandbox| sandbox["name"] == mesh::SANDBOX)
        .unwrap_or_else(|| panic!("no pr-42 after the restart: {list}"))
        .clone();
    let targets: Vec<&str> = pr_42["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|route| route["target"].as_str())
        .collect();
    assert!(
        targets.contains(&mesh::fqdn("reviews-pr-42").as_str()),
        "the change made before the kill is lost: {pr_42}"
    );
    assert_eq!(
        served_by(listener, "reviews", Some(mesh::SANDBOX)),
        "reviews/pr-42"
    );

    // The filter reads the new process: a key no table had yet routes.
    let put = put_pr_42(rs, "after-restart", &["catalog"]);
    assert_eq!(put.status, 200, "{}", put.text());
    let rerouted = poll(Duration::from_secs(10), || {
        served_by(listener, "catalog", Some("after-restart")) == "catalog/pr-42"
    });
    assert!(
        rerouted.is_some(),
        "a change after the restart does not route: {}",
        served_by(listener, "catalog", Some("after-restart"))
    );
    println!(
        "MEASURE demo kill -9: {sent} requests in {:.0} ms, {sent_while_down} of them while the \
         RouteService was down, 0 non-2xx; back (printed) {:.2} s after the kill; {back_line}",
        sending.as_secs_f64() * 1000.0,
        back_at.as_secs_f64()
    );

    // Ctrl-C: the demo exits cleanly and takes Envoy and the RouteService along.
    child::send_signal(demo.child.pid(), libc::SIGINT).unwrap();
    let mut status = None;
    let exited = poll(Duration::from_secs(30), || {
        status = demo.child.exit_status().unwrap();
        status.is_some()
    });
    assert!(exited.is_some(), "the demo did not stop on SIGINT");
    assert!(
        status.unwrap().success(),
        "{:?}\n{}",
        status,
        demo.describe()
    );
    let gone = poll(Duration::from_secs(5), || {
        [envoy_pid, rs_pid, new_pid].iter().all(|pid| !alive(*pid))
    });
    assert!(
        gone.is_some(),
        "left running after Ctrl-C: {:?}",
        [envoy_pid, rs_pid, new_pid]
            .iter()
            .filter(|pid| alive(**pid))
            .collect::<Vec<_>>()
    );
}
