//! `make run`: the local demo mesh in the foreground, until Ctrl-C or SIGTERM.
//!
//! Starts the four demo upstreams and an Istio-shaped Envoy running the
//! release plugin with a static route table (sandbox `pr-42` forks
//! `catalog`), prints what it started and how to try it, then waits. On a
//! signal it stops Envoy and exits; Envoy also dies with this process if it
//! is killed outright (parent-death signal).
//!
//! Environment: `MODE` (`header` | `authority`, default `header`),
//! `DEMO_LISTENER_PORT` (10000), `DEMO_ADMIN_PORT` (9901),
//! `DEMO_UPSTREAM_BASE_PORT` (free ports if unset), `ENVOY_BIN`,
//! `SANDBOX_ROUTER_WASM`.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use sandbox_router_e2e::mesh::{self, DemoMesh, MeshOptions, Mode};

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
    let stop = stop_signal()?;
    let options = MeshOptions::for_demo(mode, mesh::demo_plugin_config(mode))?;
    let demo = DemoMesh::start(&options)?;
    print_summary(&demo, &options);
    let outcome = wait_for_stop(&demo, &stop);
    println!("\nstopping Envoy (pid {})", demo.envoy().pid());
    drop(demo);
    outcome
}

/// Returns on Ctrl-C / SIGTERM, or with an error if Envoy dies first.
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

/// A channel that receives one message on Ctrl-C, SIGTERM or SIGHUP.
fn stop_signal() -> Result<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the signal handler")?;
    Ok(rx)
}

fn print_summary(demo: &DemoMesh, options: &MeshOptions) {
    let envoy = demo.envoy();
    let files = envoy.files();
    let listener = demo.listener();
    println!("sandbox-router demo mesh, mode {}", demo.mode().as_str());
    println!(
        "  envoy        pid {}, listener {listener}, admin {}",
        envoy.pid(),
        admin_text(demo)
    );
    println!("  config       {}", files.config.display());
    println!("  envoy log    {}", files.log.display());
    println!("  access log   {}", files.access_log().display());
    for upstream in demo.upstreams() {
        println!(
            "  upstream     {:<16} {}",
            upstream.identity().served_by(),
            upstream.addr()
        );
    }
    println!("  plugin config {}", options.plugin_config);
    let port = listener.port();
    println!("\ntry:");
    println!("  curl -si -H 'host: catalog.demo.svc.cluster.local' -H 'baggage: sd-routing-key=pr-42' localhost:{port}/");
    println!("    # x-served-by: catalog/pr-42");
    println!("  curl -si -H 'host: catalog.demo.svc.cluster.local' localhost:{port}/");
    println!("    # x-served-by: catalog/baseline (no routing key)");
    println!("  curl -si -H 'host: reviews.demo.svc.cluster.local' -H 'baggage: sd-routing-key=pr-42' localhost:{port}/");
    println!("    # x-served-by: reviews/baseline (pr-42 does not fork reviews)");
    println!(
        "  curl -s localhost:{}/stats | grep wasmcustom",
        envoy.admin_addr().map_or(0, |a| a.port())
    );
    println!("\nCtrl-C to stop.");
}

fn admin_text(demo: &DemoMesh) -> String {
    demo.envoy()
        .admin_addr()
        .map_or_else(|_| "unknown".to_owned(), |addr| addr.to_string())
}
