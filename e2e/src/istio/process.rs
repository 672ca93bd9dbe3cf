//! Starting the mesh's upstream programs (etcd, kube-apiserver, istiod,
//! pilot-agent, the registry) as guarded children with a log file each, and
//! waiting for them the same way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::child::GuardedChild;

/// One running program of the mesh and where its output goes.
#[derive(Debug)]
pub struct MeshProcess {
    /// A short name for messages (`etcd`, `istiod`, `sidecar frontend`).
    pub name: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// Whether it leads a process group of its own (see [`MeshProcess::spawn_group`]).
    group: bool,
    child: GuardedChild,
}

/// How long a process group gets to stop after `SIGTERM` when the mesh
/// stops (pilot-agent drains for `terminationDrainDuration`, 1 s, then
/// stops Envoy).
const GROUP_GRACE: Duration = Duration::from_secs(5);

impl MeshProcess {
    /// Spawns `command` with stdin closed and stdout/stderr into `log`.
    pub fn spawn(name: &str, command: Command, log: &Path) -> Result<Self> {
        Self::spawn_with(name, command, log, false)
    }

    /// Like [`MeshProcess::spawn`], in a process group of its own that is
    /// stopped as a whole: pilot-agent starts Envoy, and Envoy does not die
    /// with pilot-agent when that is killed.
    pub fn spawn_group(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
        Self::spawn_with(name, command, log, true)
    }

    fn spawn_with(name: &str, mut command: Command, log: &Path, group: bool) -> Result<Self> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = GuardedChild::spawn(command).with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_path_buf(),
            group,
            child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// An error carrying the end of the log if the process has exited.
    pub fn check_running(&self) -> Result<()> {
        if let Some(status) = self.child.exit_status()? {
            bail!(
                "{} exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        crate::envoy_log::tail(&text, n)
    }

    /// Asks it to stop (`SIGTERM`), kills it after `grace`.
    pub fn terminate(&self, grace: Duration) -> Result<()> {
        self.child.terminate(grace).map(drop)
    }

    /// Polls `ready` every 100 ms until it answers `Ok(true)`; fails early
    /// when the process exits, and after `timeout` with `what` and its log.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        poll(timeout, || self.check_running(), ready).map_err(|last_error| {
            anyhow::anyhow!(
                "{}: {what} not after {timeout:?} (last error: {}); log {}:\n{}",
                self.name,
                describe(last_error),
                self.log.display(),
                self.log_tail(40)
            )
        })?
    }
}

impl Drop for MeshProcess {
    fn drop(&mut self) {
        if !self.group {
            return;
        }
        // SIGTERM to the group, as a pod's containers get it; whatever is
        // left after the grace period (the leader's children too) is killed.
        let pgid = self.child.pid();
        if crate::child::signal_group(pgid, libc::SIGTERM).is_ok() {
            let deadline = Instant::now() + GROUP_GRACE;
            while Instant::now() < deadline && matches!(self.child.exit_status(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = crate::child::signal_group(pgid, libc::SIGKILL);
    }
}

/// Kills Envoys left behind by an earlier run whose harness was killed
/// outright: orphans (parent pid 1, their pilot-agent gone) whose `-c`
/// config lies under `runs`, which only this harness writes. A mesh still
/// running beside this one has a live pilot-agent for each Envoy and is left
/// alone. Returns how many it killed.
pub fn reap_stale_envoys(runs: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let prefix = runs.to_string_lossy().into_owned();
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let is_envoy = args.first().is_some_and(|arg0| arg0.ends_with("envoy"));
        let ours = args.windows(2).any(|pair| {
            matches!(pair, [flag, config] if flag == "-c"
                && config.starts_with(&prefix)
                && config.ends_with("/etc/istio/proxy/envoy-rev.json"))
        });
        let orphan = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // `pid (comm) state ppid ...`; comm may hold spaces.
                let (_, rest) = stat.rsplit_once(')')?;
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            })
            == Some(1);
        if is_envoy && ours && orphan && crate::child::send_signal(pid, libc::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Polls `ready` until `Ok(true)` or `timeout`; for waits not tied to one
/// process.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    ready: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    poll(timeout, || Ok(()), ready).map_err(|last_error| {
        anyhow::anyhow!(
            "{what}: not after {timeout:?} (last error: {})",
            describe(last_error)
        )
    })?
}

/// Calls `check` (an error ends the wait at once) and `ready` every 100 ms
/// until `ready` answers `Ok(true)`: `Ok(Ok(elapsed))`, `Ok(Err(..))` when
/// `check` failed, `Err(last error of ready)` after `timeout`.
fn poll(
    timeout: Duration,
    mut check: impl FnMut() -> Result<()>,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<Result<Duration>, Option<anyhow::Error>> {
    let start = Instant::now();
    let mut last_error = None;
    loop {
        if let Err(error) = check() {
            return Ok(Err(error));
        }
        match ready() {
            Ok(true) => return Ok(Ok(start.elapsed())),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if start.elapsed() > timeout {
            return Err(last_error);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn describe(error: Option<anyhow::Error>) -> String {
    error.map_or_else(|| "none".to_owned(), |e| format!("{e:#}"))
}
