//! `make run`: the local demo mesh in the foreground, until Ctrl-C or SIGTERM.
//!
//! Starts the RouteService (the workspace's `routeservice` binary, built
//! here if needed) on 127.0.0.1:8080 with a fresh data dir
//! `target/demo/routeservice-data`, seeded from `routeservice/demo/seed.json`
//! (sandbox `pr-42` forks `catalog` only); then the four demo upstreams and
//! an Istio-shaped Envoy whose plugin takes its routes from the RouteService
//! (no static routes). Prints what it started and how to try it, including
//! how to change the sandbox with no restart, then waits.
//!
//! If the RouteService exits (crash, `kill -9`), the mesh stays up: that is
//! the fail-open the product promises, and the demo is where to see it. It
//! says so, and a [`Supervisor`] starts the RouteService again with backoff
//! (0.5 s doubling to 10 s) on the same data dir and port, without the
//! seed, so every acknowledged change is back. Only Envoy exiting ends the
//! demo (with an error).
//!
//! On a signal it stops Envoy and the RouteService and exits; both also die
//! with this process if it is killed outright (parent-death signal).
//!
//! Environment: `MODE` (`header` | `authority`, default `header`),
//! `DEMO_LISTENER_PORT` (10000), `DEMO_ADMIN_PORT` (9901),
//! `DEMO_ROUTESERVICE_PORT` (8080; `0` for any of them picks a free port),
//! `DEMO_UPSTREAM_BASE_PORT` (free ports if unset), `DEMO_DIR` (the data
//! dir's and RouteService logs' directory, `target/demo`),
//! `ROUTESERVICE_TOKEN` (`dev-token`), `ROUTESERVICE_BIN`, `ENVOY_BIN`,
//! `SANDBOX_ROUTER_WASM`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use sandbox_router_e2e::mesh::{self, DemoMesh, MeshOptions, Mode, RouteServiceSettings};
use sandbox_router_e2e::routeservice::{self, RouteService};
use sandbox_router_e2e::supervisor::{BackoffPolicy, Event, Supervisor};
use serde_json::Value;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mode: Mode = std::env::var("MODE")
        .unwrap_or_else(|_| "header".to_owned())
        .parse()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stop_signal(Arc::clone(&stopping))?;
    let route_service = start_route_service()?;
    let settings = RouteServiceSettings::for_demo();
    let mut options =
        MeshOptions::for_demo(mode, mesh::route_service_plugin_config(mode, &settings))?;
    options.route_service = Some(route_service.addr());
    let demo = DemoMesh::start(&options)?;
    print_summary(&demo, &options, &route_service, &settings);
    let supervisor = Supervisor::start(route_service, BackoffPolicy::DEMO, move |event, rs| {
        // Ctrl-C in the terminal reaches the RouteService too (same process
        // group), which may exit before we stop watching it: no outage.
        if !stopping.load(Ordering::SeqCst) {
            report(event, rs);
        }
    })?;
    let outcome = wait_for_stop(&demo, &stop);
    println!(
        "\nstopping Envoy (pid {}) and the RouteService",
        demo.envoy().pid()
    );
    // Stop restarting first, so the RouteService stopped below stays down.
    let route_service = supervisor.stop();
    drop(demo);
    let mut route_service = route_service?;
    if route_service.is_running() {
        route_service.stop()?;
    }
    outcome
}

/// Prints what the supervisor saw: what the outage means for requests,
/// and what is back after it.
fn report(event: &Event, route_service: &RouteService) {
    match event {
        Event::Exited {
            pid,
            status,
            stayed_up,
            log,
            restart_in,
        } => {
            let pid = pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string());
            let status = status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string());
            println!(
                "\nRouteService down: pid {pid} exited ({status}) after {:.1} s up; log {}",
                stayed_up.as_secs_f64(),
                short(log)
            );
            println!(
                "  Envoy and the upstreams stay up: requests go on from the plugin's last good \
                 route table (keys it does not know: baseline)"
            );
            println!(
                "  restarting it in {:.1} s, same data dir and port",
                restart_in.as_secs_f64()
            );
        }
        Event::RestartFailed {
            attempt,
            error,
            restart_in,
        } => {
            println!(
                "RouteService restart {attempt} failed: {error}\n  next try in {:.1} s",
                restart_in.as_secs_f64()
            );
        }
        Event::Restarted {
            pid,
            attempt,
            down_for,
        } => {
            println!(
                "RouteService back: pid {pid}, {} (start {attempt}, {:.1} s after it went down); {}; log {}",
                route_service.url(),
                down_for.as_secs_f64(),
                table_text(route_service),
                short(route_service.log_path())
            );
        }
    }
}

/// `table version V, sandboxes a, b` from `GET /v1/sandboxes`.
fn table_text(route_service: &RouteService) -> String {
    let Ok(list) = route_service.sandboxes() else {
        return "its table is unreadable".to_owned();
    };
    let version = list.get("version").and_then(Value::as_u64).unwrap_or(0);
    let names: Vec<&str> = list
        .get("sandboxes")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter_map(|sandbox| sandbox.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        format!("table version {version}, no sandboxes")
    } else {
        format!("table version {version}, sandboxes {}", names.join(", "))
    }
}

/// The token writers must send: `ROUTESERVICE_TOKEN`, else `dev-token`.
fn token() -> String {
    std::env::var("ROUTESERVICE_TOKEN")
        .ok()
        .filter(|token| !token.is_empty())
        .unwrap_or_else(|| "dev-token".to_owned())
}

/// Where the data dir and the RouteService logs go: `DEMO_DIR`, else
/// `<target>/demo` (a test running the demo beside `make run` needs its own).
fn demo_dir() -> PathBuf {
    std::env::var_os("DEMO_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(
            || sandbox_router_e2e::target_dir().join("demo"),
            PathBuf::from,
        )
}

/// The RouteService on `DEMO_ROUTESERVICE_PORT` (8080), on a fresh data dir,
/// seeded with the demo sandbox.
fn start_route_service() -> Result<RouteService> {
    let dir = demo_dir();
    let data_dir = dir.join("routeservice-data");
    // Fresh each run, so the demo always starts from the seed.
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("removing {}", data_dir.display()))?;
    }
    println!("building the routeservice binary (cargo build -p routeservice) ...");
    routeservice::binary()?;
    let options = routeservice::Options {
        data_dir,
        log_dir: dir,
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        port: mesh::port_from_env("DEMO_ROUTESERVICE_PORT")?.unwrap_or(8080),
        seed: Some(sandbox_router_e2e::repo_root().join("routeservice/demo/seed.json")),
        token: token(),
        kubeconfig: None,
        args: Vec::new(),
    };
    RouteService::start(options).context("starting the RouteService")
}

/// Returns on Ctrl-C / SIGTERM, or with an error if Envoy dies first
/// (the RouteService is the supervisor's).
fn wait_for_stop(demo: &DemoMesh, stop: &mpsc::Receiver<()>) -> Result<()> {
    loop {
        match stop.recv_timeout(Duration::from_millis(500)) {
            // A disconnected channel means the handler is gone: stop too.
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = demo.envoy().exit_status()? {
            bail!(
                "Envoy exited ({status}); see {}",
                demo.envoy().files().log.display()
            );
        }
    }
}

/// A channel that receives one message on Ctrl-C, SIGTERM or SIGHUP, which
/// also set `stopping` (read by the supervisor's report, on its thread).
fn stop_signal(stopping: Arc<AtomicBool>) -> Result<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        stopping.store(true, Ordering::SeqCst);
        let _ = tx.send(());
    })
    .context("installing the signal handler")?;
    Ok(rx)
}

/// `path` relative to the repository when it is inside it (shorter to type).
fn short(path: &Path) -> String {
    let root = sandbox_router_e2e::repo_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn print_summary(
    demo: &DemoMesh,
    options: &MeshOptions,
    route_service: &RouteService,
    settings: &RouteServiceSettings,
) {
    let envoy = demo.envoy();
    let files = envoy.files();
    let listener = demo.listener();
    println!("sandbox-router demo mesh, mode {}", demo.mode().as_str());
    println!(
        "  envoy         pid {}, listener {listener}, admin {}",
        envoy.pid(),
        admin_text(demo)
    );
    println!("  config        {}", files.config.display());
    println!("  envoy log     {}", files.log.display());
    println!("  access log    {}", files.access_log().display());
    for upstream in demo.upstreams() {
        println!(
            "  upstream      {:<16} {}",
            upstream.identity().served_by(),
            upstream.addr()
        );
    }
    println!(
        "  routeservice  pid {}, {} (cluster {})",
        route_service.pid().unwrap_or(0),
        route_service.url(),
        routeservice::CLUSTER
    );
    println!(
        "  data dir      {} (fresh each run, seeded from routeservice/demo/seed.json; kept across restarts)",
        route_service.data_dir().display()
    );
    println!("  rs log        {}", route_service.log_path().display());
    println!("  plugin config {}", options.plugin_config);

    let port = listener.port();
    let rs = route_service.url();
    let token = token();
    let cli = routeservice::binary()
        .map(|path| short(&path))
        .unwrap_or_else(|_| "routeservice".to_owned());
    let server = if route_service.addr().port() == 8080 {
        String::new()
    } else {
        format!(" --server {rs}")
    };
    let catalog = mesh::fqdn("catalog");
    let reviews = mesh::fqdn("reviews");
    let fork = |service: &str| mesh::fqdn(&mesh::fork_name(service, mesh::SANDBOX));
    println!("\ntry:");
    println!(
        "  curl -si -H 'host: {catalog}' -H 'baggage: sd-routing-key=pr-42' localhost:{port}/"
    );
    println!("    # x-served-by: catalog/pr-42");
    println!("  curl -si -H 'host: {catalog}' localhost:{port}/");
    println!("    # x-served-by: catalog/baseline (no routing key)");
    println!(
        "  curl -si -H 'host: {reviews}' -H 'baggage: sd-routing-key=pr-42' localhost:{port}/"
    );
    println!("    # x-served-by: reviews/baseline (pr-42 does not fork reviews yet)");
    println!("\nmake pr-42 fork reviews too, with no restart (the CLI, or curl):");
    println!("  ROUTESERVICE_TOKEN={token} {cli}{server} create pr-42 --routing-key pr-42 \\");
    println!("    --route {catalog}={} \\", fork("catalog"));
    println!("    --route {reviews}={}", fork("reviews"));
    println!(
        "  curl -si -X PUT {rs}/v1/sandboxes/pr-42 -H 'authorization: Bearer {token}' -H 'content-type: application/json' \\"
    );
    println!(
        "    -d '{{\"routingKey\": \"pr-42\", \"routes\": [{{\"baseline\": \"{catalog}\", \"target\": \"{}\"}}, {{\"baseline\": \"{reviews}\", \"target\": \"{}\"}}]}}'",
        fork("catalog"),
        fork("reviews")
    );
    println!(
        "  # within syncIntervalMs ({} ms), the same reviews request answers:",
        settings.sync_interval_ms
    );
    println!(
        "  curl -si -H 'host: {reviews}' -H 'baggage: sd-routing-key=pr-42' localhost:{port}/"
    );
    println!("    # x-served-by: reviews/pr-42");
    println!(
        "  {cli}{server} list                  # the table; `{cli}{server} delete pr-42` undoes it"
    );
    println!(
        "  curl -s localhost:{}/stats | grep wasmcustom     # the plugin's counters",
        envoy.admin_addr().map_or(0, |a| a.port())
    );
    println!("  curl -s {rs}/metrics | grep requests_total");
    println!(
        "\nsee the fail-open: kill the RouteService; Envoy keeps routing from its last good table,\n\
         and the demo restarts it (after 0.5 s, doubling to 10 s while it keeps failing) on the\n\
         same data dir and port, without the seed:"
    );
    println!(
        "  kill -9 {}",
        route_service
            .pid()
            .map_or_else(|_| "<routeservice pid>".to_owned(), |pid| pid.to_string())
    );
    println!("\nCtrl-C to stop.");
}

fn admin_text(demo: &DemoMesh) -> String {
    demo.envoy()
        .admin_addr()
        .map_or_else(|_| "unknown".to_owned(), |addr| addr.to_string())
}
