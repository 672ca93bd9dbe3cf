//! End-to-end harness for sandbox-router: a real Envoy running the release
//! `.wasm` in a sidecar-shaped configuration, real upstreams behind it, the
//! real RouteService, and a raw HTTP client to poke it. See `e2e/README.md`.
//!
//! - [`child`]: a process that cannot outlive the harness;
//! - [`envoy`]: finding, starting, probing and stopping Envoy;
//! - [`envoy_log`]: spotting plugin failures in Envoy's log;
//! - [`app`]: an app that forwards only some headers on its own calls;
//! - [`bootstrap`]: the Istio-shaped Envoy configuration;
//! - [`upstream`]: echoing upstream servers;
//! - [`client`]: the raw HTTP/1.1 client;
//! - [`mesh`]: the demo mesh (INTERFACES section 8) put together;
//! - [`routeservice`]: the real RouteService as a child process;
//! - [`supervisor`]: a RouteService restarted with backoff when it exits;
//! - [`fake_routeservice`]: a scripted RouteService that misbehaves;
//! - [`zipkin`]: a Zipkin collector, and the tracing that sends it spans.

pub mod app;
pub mod bootstrap;
pub mod child;
pub mod client;
pub mod envoy;
pub mod envoy_log;
pub mod fake_routeservice;
pub mod istio;
pub mod mesh;
pub mod routeservice;
pub mod supervisor;
pub mod upstream;
pub mod zipkin;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, Result};

/// The workspace root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), PathBuf::from)
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// A fresh directory for one run's files (config, logs), kept after the run
/// for post-mortems: `<target>/e2e-runs/<label>-<pid>-<n>`.
pub fn new_run_dir(label: &str) -> Result<PathBuf> {
    let dir = target_dir().join("e2e-runs").join(format!(
        "{label}-{}-{}",
        std::process::id(),
        next_instance_number()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A number unique within this process, for names that must not collide
/// between Envoys started by parallel tests.
pub fn next_instance_number() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
