//! `make istio-up`: the local Istio mesh (INTERFACES section 9) in the
//! foreground, until Ctrl-C or SIGTERM.
//!
//! Starts etcd, kube-apiserver, istiod, a registry with the plugin's image,
//! the demo's workloads and the RouteService as host processes, two caller
//! sidecars and an ingress gateway (pilot-agent + Envoy), applies the
//! project's manifests, writes `target/istio-local/env` and prints `ready`.
//! On a signal, or when any part of the mesh exits, it stops everything
//! (each process also dies with this one: parent-death signal).
//!
//! Environment: `ISTIO_TOOLS_BIN` (the Go-built binaries, default
//! `.tools/istio/bin`), `ENVOY_BIN`, `ROUTESERVICE_BIN`.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use sandbox_router_e2e::istio::local_mesh::{LocalMesh, LocalMeshOptions};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("istio-up: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let (tx, stop) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the signal handler")?;

    let dir = sandbox_router_e2e::target_dir().join("istio-local");
    if dir.exists() {
        // Each run starts from an empty store: a mesh is cheap to rebuild
        // and a stale etcd would hold the last run's objects.
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    println!("istio-up: starting the local mesh in {}", dir.display());
    let mesh = LocalMesh::start(&LocalMeshOptions::in_dir(dir.clone()))?;
    for (step, took) in &mesh.timings {
        println!("  {step}: {:.1}s", took.as_secs_f64());
    }
    let env = dir.join("env");
    std::fs::write(&env, mesh.env_file()).with_context(|| format!("writing {}", env.display()))?;
    print!("{}", mesh.env_file());
    println!(
        "\ntry:\n  . {env}\n  curl -s -H 'host: catalog.demo.svc.cluster.local:8080' -H 'baggage: sd-routing-key=pr-42' -D- -o /dev/null http://$SIDECAR_HTTP/\n  {kubectl} --kubeconfig $KUBECONFIG get wasmplugins,virtualservices -A\n(logs under {dir}; Ctrl-C stops everything)",
        env = env.display(),
        kubectl = mesh.tools().kubectl.display(),
        dir = dir.display(),
    );
    println!("ready");
    loop {
        match stop.recv_timeout(Duration::from_millis(500)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        mesh.check_running()?;
    }
    println!("istio-up: stopping");
    drop(mesh);
    Ok(())
}
