//! A real NATS server with JetStream for one run: Debian's `nats-server
//! -js` on a free loopback port, its store under the run's directory,
//! killed when dropped. The run's stream (`ORDERS`, subject `orders`) is
//! created here, as an operator would.
//!
//! Each consumer's copy is a durable pull consumer; settling is `ack` or
//! `term` (see `sandbox_router_consumer::broker::jetstream`). The producer
//! publishes with the stream's acknowledgement, so a `201` means stored.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use sandbox_router_consumer::broker::jetstream::{DurableConfig, JetStreamDurable};
use sandbox_router_consumer::propagation::Injector;
use sandbox_router_e2e::child::GuardedChild;
use tokio::runtime::Runtime;

use super::{find_binary, free_port, log_tail, Broker, Publish};
use crate::analysis::report::Report;
use crate::error::{Error, Result};

/// The stream and the subject the producer publishes on.
pub const STREAM: &str = "ORDERS";
pub const SUBJECT: &str = "orders";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `nats-server -js`.
#[derive(Debug)]
pub struct NatsServer {
    child: GuardedChild,
    port: u16,
    dir: PathBuf,
    /// Always `Some` until dropped.
    runtime: Option<Runtime>,
    version: String,
}

impl NatsServer {
    /// Starts the server with its store in `dir`, waits until it accepts
    /// clients, and creates the stream.
    pub fn start(dir: &Path) -> Result<Self> {
        let binary = find_binary(
            "nats-server",
            "NATS_SERVER",
            "run `make tool-nats` (installs Debian's nats-server), or `apt-get install nats-server`",
        )?;
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut command = Command::new(binary);
        command
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(dir.join("jetstream"))
            .arg("-l")
            .arg(dir.join("nats.log"))
            .args(["-n", &format!("async-e2e-{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = GuardedChild::spawn(command).map_err(Error::harness)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let mut server = NatsServer {
            child,
            port,
            dir: dir.to_owned(),
            runtime: Some(runtime),
            version: "?".to_owned(),
        };
        server.version = server.create_stream_when_ready()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn runtime(&self) -> Result<&Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| Error::Harness("nats: server handle closed".into()))
    }

    /// Creates the stream once the server answers; returns its version.
    fn create_stream_when_ready(&self) -> Result<String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let log = self.dir.join("nats.log");
        loop {
            if let Some(status) = self.child.exit_status().map_err(Error::harness)? {
                return Err(Error::Harness(format!(
                    "nats-server exited at start ({status}): {}",
                    log_tail(&log, 10)
                )));
            }
            let url = self.url();
            let created = self.runtime()?.block_on(async move {
                let client = async_nats::connect(&url).await.map_err(Error::harness)?;
                let context = jetstream::new(client.clone());
                context
                    .get_or_create_stream(stream::Config {
                        name: STREAM.to_owned(),
                        subjects: vec![SUBJECT.to_owned()],
                        ..stream::Config::default()
                    })
                    .await
                    .map_err(Error::harness)?;
                Ok::<_, Error>(client.server_info().version)
            });
            let last = match created {
                Ok(version) => return Ok(version),
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "nats-server on 127.0.0.1:{} not ready after {STARTUP_TIMEOUT:?} \
                     (last: {last}): {}",
                    self.port,
                    log_tail(&log, 10)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = self.child.kill();
    }
}

impl Broker for NatsServer {
    type Subscription = JetStreamDurable;
    const NAME: &'static str = "jetstream";

    fn start(dir: &Path) -> Result<Self> {
        NatsServer::start(dir)
    }

    fn version(&self) -> String {
        format!("nats-server {} (JetStream, file store)", self.version)
    }

    fn publisher(&self) -> Result<Arc<dyn Publish>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let url = self.url();
        let context = runtime.block_on(async move {
            let client = async_nats::connect(&url).await.map_err(Error::harness)?;
            Ok::<_, Error>(jetstream::new(client))
        })?;
        Ok(Arc::new(StreamPublisher {
            runtime: Some(runtime),
            context,
        }))
    }

    fn subscribe(&self, group: &str) -> Result<JetStreamDurable> {
        JetStreamDurable::subscribe(&DurableConfig {
            url: self.url(),
            stream: STREAM.to_owned(),
            durable: group.to_owned(),
            max_ack_pending: 1000,
            ack_wait: Duration::from_secs(30),
        })
        .map_err(Error::harness)
    }

    /// The stream holds every message once; no durable has a message
    /// pending or unacknowledged.
    fn check(&self, total: u64, groups: &[String], report: &mut Report) -> Result<()> {
        let url = self.url();
        let groups_owned = groups.to_vec();
        let (stored, left) = self.runtime()?.block_on(async move {
            let client = async_nats::connect(&url).await.map_err(Error::harness)?;
            let context = jetstream::new(client);
            let mut stream = context.get_stream(STREAM).await.map_err(Error::harness)?;
            let stored = stream.info().await.map_err(Error::harness)?.state.messages;
            let mut left = Vec::new();
            for group in groups_owned {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                    stream.get_consumer(&group).await.map_err(Error::harness)?;
                let info = consumer.info().await.map_err(Error::harness)?;
                left.push((group, info.num_pending, info.num_ack_pending));
            }
            Ok::<_, Error>((stored, left))
        })?;
        if stored != total {
            report.problems.push(format!(
                "stream {STREAM} holds {stored} messages, not {total}"
            ));
        }
        for (group, pending, unacked) in left {
            if pending != 0 || unacked != 0 {
                report.problems.push(format!(
                    "durable {group}: {pending} messages not delivered, {unacked} not acked"
                ));
            }
        }
        report.notes.push(format!(
            "stream {STREAM}: {stored} messages; durables {} each acked or termed all",
            groups.join(", ")
        ));
        Ok(())
    }
}

/// One JetStream context shared by the producer's handlers; each publish
/// waits for the stream's acknowledgement.
struct StreamPublisher {
    runtime: Option<Runtime>,
    context: jetstream::Context,
}

impl Publish for StreamPublisher {
    fn publish(&self, headers: Vec<(String, Vec<u8>)>) -> Result<String> {
        let mut map = async_nats::HeaderMap::new();
        for (name, value) in headers {
            let text = String::from_utf8(value)
                .map_err(|_| Error::Malformed(format!("header {name} is not text")))?;
            map.set(&name, text);
        }
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::Harness("nats: publisher closed".into()))?;
        let context = &self.context;
        let ack = runtime.block_on(async move {
            context
                .publish_with_headers(SUBJECT, map, Vec::new().into())
                .await
                .map_err(Error::harness)?
                .await
                .map_err(Error::harness)
        })?;
        Ok(ack.sequence.to_string())
    }
}

impl Drop for StreamPublisher {
    /// Dropped on the producer's runtime thread: no blocking shutdown there.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
