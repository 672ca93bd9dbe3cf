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
    child: GuardedChild,
}

impl MeshProcess {
    /// Spawns `command` with stdin closed and stdout/stderr into `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
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
        mut ready: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        let start = Instant::now();
        let mut last_error = None;
        loop {
            self.check_running()?;
            match ready() {
                Ok(true) => return Ok(start.elapsed()),
                Ok(false) => {}
                Err(error) => last_error = Some(error),
            }
            if start.elapsed() > timeout {
                bail!(
                    "{}: {what} not after {timeout:?} (last error: {}); log {}:\n{}",
                    self.name,
                    last_error.map_or_else(|| "none".to_owned(), |e| format!("{e:#}")),
                    self.log.display(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Polls `ready` until `Ok(true)` or `timeout`; for waits not tied to one
/// process.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match ready() {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if start.elapsed() > timeout {
            bail!(
                "{what}: not after {timeout:?} (last error: {})",
                last_error.map_or_else(|| "none".to_owned(), |e| format!("{e:#}"))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
