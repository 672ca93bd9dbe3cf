//! A real Redis for one run: Debian's `redis-server` on a free loopback
//! port, its files in a temporary directory, no persistence, killed when
//! dropped (and by the kernel if the test process dies: see
//! `sandbox_router_e2e::child`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_router_e2e::child::GuardedChild;
use tempfile::TempDir;

use crate::error::{Error, Result};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: GuardedChild,
    port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` (`REDIS_SERVER`, else from `PATH`) and waits
    /// until it answers `PING`.
    pub fn start() -> Result<Self> {
        let binary = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("async-e2e-redis")
            .tempdir()?;
        let port = free_port()?;
        let child =
            GuardedChild::spawn(command(&binary, dir.path(), port)).map_err(Error::harness)?;
        let server = RedisServer { child, port, dir };
        server.wait_until_ready()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> Result<redis::Client> {
        Ok(redis::Client::open(self.url())?)
    }

    pub fn connection(&self) -> Result<redis::Connection> {
        Ok(self.client()?.get_connection()?)
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn wait_until_ready(&self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.exit_status().map_err(Error::harness)? {
                return Err(Error::Harness(format!(
                    "redis-server exited at start ({status}): {}",
                    self.log_tail()
                )));
            }
            if self.ping().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "redis-server not answering PING after {STARTUP_TIMEOUT:?}: {}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> Result<()> {
        let mut conn = self
            .client()?
            .get_connection_with_timeout(Duration::from_millis(200))?;
        let _: String = redis::cmd("PING").query(&mut conn)?;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(10);
        lines.get(start..).unwrap_or_default().join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Killed before its directory goes away.
        let _ = self.child.kill();
    }
}

fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("REDIS_SERVER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.ok_or_else(|| {
        Error::Harness(
            "redis-server not found on PATH: run `make async-e2e` (installs Debian's \
             redis-server), or `apt-get install redis-server`, or set REDIS_SERVER"
                .to_owned(),
        )
    })
}

fn command(binary: &Path, dir: &Path, port: u16) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
