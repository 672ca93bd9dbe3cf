//! The real RouteService (`routeservice serve`, the workspace's
//! `routeservice` binary) as a child process of the harness.
//!
//! One [`RouteService`] is one data directory and one address: it can be
//! killed (`SIGKILL`, as `kill -9`), stopped (`SIGTERM`, graceful), and
//! restarted on the same data directory and port (the seed, if any, is
//! applied by the first start only), and it is killed when dropped or when
//! the harness dies (see [`crate::child`]). Its log (stderr) goes to
//! `routeservice.<n>.log` in the run directory, one file per start.
//! [`crate::supervisor`] restarts one that exits.
//!
//! The binary is `ROUTESERVICE_BIN` if set; otherwise the harness builds it
//! once per process with `cargo build -p routeservice` (in the profile the
//! harness itself was built in: `target/debug` under `cargo test`,
//! `target/release` for `cargo run --release`) and takes the path cargo
//! reports, so a plain `cargo test -p sandbox-router-e2e` needs no prior step.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use crate::child::GuardedChild;
use crate::client::{Request, Response};
use crate::envoy_log;

/// The RouteService's name in the mesh, as Istio names a service.
pub const FQDN: &str = "routeservice.sandbox-system.svc.cluster.local";
/// The port it serves on in the mesh (the `8080` of its cluster name).
pub const MESH_PORT: u16 = 8080;
/// Its Envoy cluster in Istio's form.
pub const CLUSTER: &str = "outbound|8080||routeservice.sandbox-system.svc.cluster.local";
/// The token the tests use (the demo uses `ROUTESERVICE_TOKEN` or `dev-token`).
pub const TEST_TOKEN: &str = "e2e-token";

/// How long a start may take until `/readyz` says ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `routeservice` binary: `ROUTESERVICE_BIN`, else built by cargo once
/// per process (see the module docs).
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = crate::envoy::env_path("ROUTESERVICE_BIN") {
        if !path.is_file() {
            bail!("ROUTESERVICE_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build(!cfg!(debug_assertions)).map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(|error| anyhow!(error))
}

/// `cargo build -p routeservice --bin routeservice`; the executable path
/// cargo reports.
fn build(release: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(crate::repo_root())
        .args(["build", "-p", "routeservice", "--bin", "routeservice"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if release {
        command.arg("--release");
    }
    let output = command.output().with_context(|| {
        format!(
            "running {} to build the routeservice binary (or set ROUTESERVICE_BIN)",
            cargo.to_string_lossy()
        )
    })?;
    if !output.status.success() {
        bail!(
            "`cargo build -p routeservice` failed ({}); set ROUTESERVICE_BIN to use a built binary:\n{}",
            output.status,
            envoy_log::tail(&String::from_utf8_lossy(&output.stderr), 30)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| {
            message.get("reason").and_then(Value::as_str) == Some("compiler-artifact")
        })
        .filter(|message| {
            message.pointer("/target/name").and_then(Value::as_str) == Some("routeservice")
        })
        .find_map(|message| {
            message
                .get("executable")
                .and_then(Value::as_str)
                .map(PathBuf::from)
        })
        .ok_or_else(|| anyhow!("cargo built routeservice but named no executable"))
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `routes.redb` lives (created if missing).
    pub data_dir: PathBuf,
    /// Where the logs go.
    pub log_dir: PathBuf,
    /// The address it listens on: `127.0.0.1` for the plain suites, its own
    /// loopback address in the local Istio mesh.
    pub ip: std::net::IpAddr,
    /// `<ip>:<port>`; `0` takes a free port (read back from its log).
    pub port: u16,
    /// `--seed FILE`.
    pub seed: Option<PathBuf>,
    /// `ROUTESERVICE_TOKEN` with the redb store; with the Kubernetes store,
    /// the bearer token its writes send (a Kubernetes token).
    pub token: String,
    /// `Some`: `--store kubernetes` with this `KUBECONFIG` (no
    /// `ROUTESERVICE_TOKEN`: the API server checks tokens).
    pub kubeconfig: Option<PathBuf>,
    /// More `serve` arguments (`--route-objects none`).
    pub args: Vec<String>,
}

impl Options {
    /// A fresh run directory `<target>/e2e-runs/<label>-...` holding the
    /// data dir and logs, a free port, no seed, [`TEST_TOKEN`].
    pub fn for_tests(label: &str) -> Result<Self> {
        let dir = crate::new_run_dir(label)?;
        Ok(Self {
            data_dir: dir.join("routeservice-data"),
            log_dir: dir,
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 0,
            seed: None,
            token: TEST_TOKEN.to_owned(),
            kubeconfig: None,
            args: Vec::new(),
        })
    }
}

/// A running (or killed, ready to restart) RouteService.
#[derive(Debug)]
pub struct RouteService {
    options: Options,
    binary: PathBuf,
    child: Option<GuardedChild>,
    addr: SocketAddr,
    log: PathBuf,
    starts: u32,
    /// How the last start ended, if the process exited during startup.
    startup_exit: Option<ExitStatus>,
    /// When the current process became ready (`None` while starting, or
    /// after a start that failed).
    ready_at: Option<Instant>,
    /// Set by someone who no longer wants a start to finish (see
    /// [`RouteService::abandon_starts_when`]).
    abandon: Option<Arc<AtomicBool>>,
}

/// The exit code of `routeservice serve` when it cannot bind its address.
const EXIT_BIND: i32 = 1;

/// A write the RouteService acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// HTTP status (`201` created, `200` replaced, `204` deleted).
    pub status: u16,
    /// The table version after the write (read back for a delete).
    pub version: u64,
}

impl RouteService {
    /// Starts it and waits until `/readyz` answers `200`.
    pub fn start(options: Options) -> Result<Self> {
        let binary = binary()?;
        std::fs::create_dir_all(&options.log_dir)
            .with_context(|| format!("creating {}", options.log_dir.display()))?;
        let mut service = Self {
            addr: SocketAddr::new(options.ip, options.port),
            options,
            binary,
            child: None,
            log: PathBuf::new(),
            starts: 0,
            startup_exit: None,
            ready_at: None,
            abandon: None,
        };
        service.spawn_and_wait()?;
        Ok(service)
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.starts += 1;
        self.startup_exit = None;
        self.ready_at = None;
        self.log = self
            .options
            .log_dir
            .join(format!("routeservice.{}.log", self.starts));
        let log = std::fs::File::create(&self.log)
            .with_context(|| format!("creating {}", self.log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.options.data_dir);
        match &self.options.kubeconfig {
            Some(kubeconfig) => command
                .args(["--store", "kubernetes"])
                .env("KUBECONFIG", kubeconfig)
                .env_remove("ROUTESERVICE_TOKEN"),
            None => command.env("ROUTESERVICE_TOKEN", &self.options.token),
        };
        command
            .env_remove("ROUTESERVICE_STORE")
            .env_remove("ROUTESERVICE_AUTH_READS")
            .env_remove("ROUTESERVICE_LISTEN")
            .env_remove("ROUTESERVICE_DATA_DIR")
            .env_remove("ROUTESERVICE_SEED")
            .env_remove("ROUTESERVICE_LOG_FORMAT")
            .env_remove("ROUTESERVICE_ROUTE_OBJECTS")
            .env_remove("ROUTESERVICE_ROUTE_HEADER")
            .env_remove("ROUTESERVICE_CLUSTER_DOMAIN")
            .args(&self.options.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Only the first start seeds: the seed is applied over what is
        // stored, so seeding again on a restart would undo every change made
        // through the API since (and bring back deleted sandboxes).
        if let Some(seed) = self.options.seed.as_ref().filter(|_| self.starts == 1) {
            command.arg("--seed").arg(seed);
        }
        self.child = Some(GuardedChild::spawn(command)?);
        self.wait_until_ready()
    }

    fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child()?.exit_status()? {
                self.startup_exit = Some(status);
                bail!(
                    "routeservice exited during startup ({status}); log {}:\n{}",
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            if self.addr.port() == 0 {
                if let Some(addr) = listening_addr(&self.log) {
                    self.addr = addr;
                }
            }
            if self.addr.port() != 0
                && self
                    .get("/readyz")
                    .is_ok_and(|response| response.status == 200)
            {
                self.ready_at = Some(Instant::now());
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "routeservice not ready after {STARTUP_TIMEOUT:?}; log {}:\n{}",
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            if self.abandoned() {
                bail!("routeservice start abandoned (shutting down)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Makes a start (or restart) in progress give up, with an error, once
    /// `flag` is set, instead of waiting up to [`STARTUP_TIMEOUT`] for
    /// readiness: so a supervisor asked to stop is not held up by a
    /// RouteService that will not come up. The process stays as it is.
    pub fn abandon_starts_when(&mut self, flag: Arc<AtomicBool>) {
        self.abandon = Some(flag);
    }

    fn abandoned(&self) -> bool {
        self.abandon
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    }

    fn child(&self) -> Result<&GuardedChild> {
        self.child
            .as_ref()
            .ok_or_else(|| anyhow!("routeservice is not running"))
    }

    /// Where it listens (kept across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// When the current (or last) process became ready; `None` if its
    /// start failed.
    pub fn ready_since(&self) -> Option<Instant> {
        self.ready_at
    }

    /// The current process id.
    pub fn pid(&self) -> Result<u32> {
        Ok(self.child()?.pid())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }

    /// The log of the current (or last) start.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the current log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        envoy_log::tail(&text, n)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|child| child.exit_status().is_ok_and(|status| status.is_none()))
    }

    /// How the process ended, if it has; `None` while it runs. An error if
    /// there is no process (after [`RouteService::kill`] or
    /// [`RouteService::stop`], or a restart that could not spawn one).
    pub fn exit_status(&self) -> Result<Option<ExitStatus>> {
        self.child()?.exit_status()
    }

    /// `kill -9`: no shutdown at all.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let status = self.child()?.kill()?;
        self.child = None;
        Ok(status)
    }

    /// `SIGTERM` and wait (drain, close the store), `SIGKILL` after 15 s.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let status = self.child()?.terminate(Duration::from_secs(15))?;
        self.child = None;
        Ok(status)
    }

    /// Starts it again on the same data directory and port, without the
    /// seed (after [`RouteService::kill`] or [`RouteService::stop`], or once
    /// it exited by itself); waits until ready.
    /// If the port is briefly taken (another socket got it meanwhile), it
    /// tries again for up to 5 s.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("routeservice is still running (pid {})", self.pid()?);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.child = None;
            match self.spawn_and_wait() {
                Err(_)
                    if self.startup_exit.and_then(|status| status.code()) == Some(EXIT_BIND)
                        && Instant::now() < deadline
                        && !self.abandoned() =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                outcome => return outcome,
            }
        }
    }

    /// A `GET` of `path`.
    pub fn get(&self, path: &str) -> Result<Response> {
        Request::get(path)
            .header("host", self.addr.to_string())
            .header("connection", "close")
            .send(self.addr)
    }

    /// `PUT /v1/sandboxes/{name}` with `routes` as `(baseline, target)`
    /// FQDN pairs; an answer other than `200`/`201` is an error.
    pub fn put_sandbox(
        &self,
        name: &str,
        routing_key: &str,
        routes: &[(&str, &str)],
    ) -> Result<Written> {
        let routes: Vec<Value> = routes
            .iter()
            .map(|(baseline, target)| json!({"baseline": baseline, "target": target}))
            .collect();
        let body = json!({"routingKey": routing_key, "routes": routes}).to_string();
        let response = self
            .write_request("PUT", name)
            .header("content-type", "application/json")
            .body(body)
            .send(self.addr)?;
        if !matches!(response.status, 200 | 201) {
            bail!(
                "PUT sandbox {name}: {} {}",
                response.status,
                response.text()
            );
        }
        let version = response
            .json()?
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("PUT answer without a version: {}", response.text()))?;
        Ok(Written {
            status: response.status,
            version,
        })
    }

    /// `DELETE /v1/sandboxes/{name}`; an answer other than `204` is an error.
    pub fn delete_sandbox(&self, name: &str) -> Result<Written> {
        let response = self.write_request("DELETE", name).send(self.addr)?;
        if response.status != 204 {
            bail!(
                "DELETE sandbox {name}: {} {}",
                response.status,
                response.text()
            );
        }
        Ok(Written {
            status: response.status,
            version: self.version()?,
        })
    }

    fn write_request(&self, method: &str, name: &str) -> Request {
        Request::new(method, &format!("/v1/sandboxes/{name}"))
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.options.token))
            .header("connection", "close")
    }

    /// The table version (`/readyz`).
    pub fn version(&self) -> Result<u64> {
        let response = self.get("/readyz")?;
        response
            .json()?
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("/readyz without a version: {}", response.text()))
    }

    /// `GET /v1/sandboxes`: `{"version": V, "sandboxes": [Sandbox...]}`.
    pub fn sandboxes(&self) -> Result<Value> {
        let response = self.get("/v1/sandboxes")?;
        if response.status != 200 {
            bail!("/v1/sandboxes answered {}", response.status);
        }
        response.json()
    }

    /// `GET /v1/routes` (the whole table).
    pub fn routes(&self) -> Result<Value> {
        self.get("/v1/routes")?.json()
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        let response = self.get("/metrics")?;
        if response.status != 200 {
            bail!("/metrics answered {}", response.status);
        }
        Ok(response.text())
    }

    /// `routeservice_http_requests_total` summed over the series whose
    /// labels include every `label="value"` in `labels`.
    pub fn requests_total(&self, labels: &[(&str, &str)]) -> Result<u64> {
        Ok(sum_requests(&self.metrics()?, labels))
    }
}

/// Sums `routeservice_http_requests_total` series matching `labels`.
pub fn sum_requests(metrics: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("routeservice_http_requests_total{"))
        .filter_map(|rest| rest.split_once("} "))
        .filter(|(series, _)| {
            labels.iter().all(|(name, value)| {
                series
                    .split(',')
                    .any(|l| l == format!("{name}=\"{value}\""))
            })
        })
        .filter_map(|(_, count)| count.trim().parse::<u64>().ok())
        .sum()
}

/// The address in the `listening addr=<ip:port>` line of a log.
fn listening_addr(log: &Path) -> Option<SocketAddr> {
    let file = std::fs::File::open(log).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| line.contains("listening"))
        .find_map(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("addr="))
                .and_then(|addr| addr.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_request_series_by_label() {
        let text = "\
# TYPE routeservice_http_requests_total counter
routeservice_http_requests_total{method=\"GET\",route=\"/v1/routes\",status=\"200\"} 3
routeservice_http_requests_total{method=\"GET\",route=\"/v1/routes\",status=\"304\"} 5
routeservice_http_requests_total{method=\"PUT\",route=\"/v1/sandboxes/{name}\",status=\"201\"} 1
";
        assert_eq!(sum_requests(text, &[("route", "/v1/routes")]), 8);
        assert_eq!(
            sum_requests(text, &[("route", "/v1/routes"), ("status", "200")]),
            3
        );
        assert_eq!(sum_requests(text, &[("method", "DELETE")]), 0);
    }
}
