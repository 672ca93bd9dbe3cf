//! A real Redis for one run: Debian's `redis-server` on a free loopback
//! port, its files in the run's directory, no persistence, killed when
//! dropped (and by the kernel if the test process dies: see
//! `sandbox_router_e2e::child`). Each consumer's copy is a consumer group
//! of the stream; settling is `XACK`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sandbox_router_consumer::broker::redis_streams::{self, StreamGroup};
use sandbox_router_e2e::child::GuardedChild;

use super::{find_binary, free_port, log_tail, Broker, Publish};
use crate::analysis::report::Report;
use crate::error::{Error, Result};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// The stream the producer writes.
pub const STREAM: &str = "orders";

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: GuardedChild,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` (`REDIS_SERVER`, else from `PATH`) with its
    /// files in `dir` and waits until it answers `PING`.
    pub fn start(dir: &Path) -> Result<Self> {
        let binary = find_binary(
            "redis-server",
            "REDIS_SERVER",
            "run `make async-e2e` (installs Debian's redis-server), or `apt-get install redis-server`",
        )?;
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let child = GuardedChild::spawn(command(&binary, dir, port)).map_err(Error::harness)?;
        let server = RedisServer {
            child,
            port,
            dir: dir.to_owned(),
        };
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
        self.dir.join("redis.log")
    }

    fn wait_until_ready(&self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.exit_status().map_err(Error::harness)? {
                return Err(Error::Harness(format!(
                    "redis-server exited at start ({status}): {}",
                    log_tail(&self.log_path(), 10)
                )));
            }
            if self.ping().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "redis-server not answering PING after {STARTUP_TIMEOUT:?}: {}",
                    log_tail(&self.log_path(), 10)
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
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
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

impl Broker for RedisServer {
    type Subscription = StreamGroup;
    const NAME: &'static str = "redis-streams";

    fn start(dir: &Path) -> Result<Self> {
        RedisServer::start(dir)
    }

    fn version(&self) -> String {
        let info: Result<String> = self
            .connection()
            .and_then(|mut c| Ok(redis::cmd("INFO").arg("server").query(&mut c)?));
        let version = info.ok().and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_owned())
        });
        format!("redis-server {}", version.as_deref().unwrap_or("?"))
    }

    fn publisher(&self) -> Result<Arc<dyn Publish>> {
        Ok(Arc::new(StreamPublisher {
            conn: Mutex::new(self.connection()?),
        }))
    }

    fn subscribe(&self, group: &str) -> Result<StreamGroup> {
        Ok(StreamGroup::join(
            self.connection()?,
            STREAM,
            group,
            &format!("{group}-1"),
        )?)
    }

    /// The stream holds every message once; nothing is left pending in
    /// any group.
    fn check(&self, total: u64, groups: &[String], report: &mut Report) -> Result<()> {
        let mut conn = self.connection()?;
        let len = redis_streams::len(&mut conn, STREAM)?;
        if len != total {
            report
                .problems
                .push(format!("the stream holds {len} entries, not {total}"));
        }
        for group in groups {
            let pending = redis_streams::pending(&mut conn, STREAM, group)?;
            if pending != 0 {
                report
                    .problems
                    .push(format!("{pending} entries still pending in group {group}"));
            }
        }
        report.notes.push(format!(
            "stream {STREAM}: {len} entries; groups {} each acked all",
            groups.join(", ")
        ));
        Ok(())
    }
}

/// `XADD` over one connection.
struct StreamPublisher {
    conn: Mutex<redis::Connection>,
}

impl Publish for StreamPublisher {
    fn publish(&self, headers: Vec<(String, Vec<u8>)>) -> Result<String> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let fields: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
            .collect();
        Ok(redis_streams::add(&mut conn, STREAM, &fields)?)
    }
}
