//! A real RabbitMQ for one run: Debian's `rabbitmq-server` (Erlang), a
//! node of its own on free loopback ports (AMQP, Erlang distribution, and
//! an `epmd` started here on a port of its own, so nothing is shared with
//! another node on the machine), its database and logs under the run's
//! directory, no plugins; killed when dropped.
//!
//! Each consumer's copy is a durable queue bound to the workload's fanout
//! exchange; settling is a cumulative `basic.ack` (see
//! `sandbox_router_consumer::broker::rabbitmq`). The producer publishes with
//! publisher confirms, so a `201` means the broker has the message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sandbox_router_consumer::broker::rabbitmq::{self as client, AmqpQueue, QueueConfig};
use sandbox_router_consumer::propagation::Injector;
use sandbox_router_e2e::child::GuardedChild;
use tokio::runtime::Runtime;

use super::{find_binary, free_port, log_tail, Broker, Publish};
use crate::analysis::report::Report;
use crate::error::{Error, Result};

/// The workload's exchange, which the producer publishes to.
pub const EXCHANGE: &str = "orders";
/// Unacknowledged messages in flight per consumer.
const PREFETCH: u16 = 200;
/// Erlang boots slowly on a loaded 2-core machine (about 10 s).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
/// One attempt to connect and declare, at start.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A running RabbitMQ node and its `epmd`.
#[derive(Debug)]
pub struct RabbitServer {
    // Dropped (killed) in this order: the node, then its epmd.
    node: GuardedChild,
    epmd: GuardedChild,
    port: u16,
    dir: PathBuf,
    runtime: Runtime,
}

impl RabbitServer {
    /// Starts `epmd` and the node with files in `dir`; waits until AMQP
    /// connections are accepted and declares [`EXCHANGE`].
    pub fn start(dir: &Path) -> Result<Self> {
        let server = server_script()?;
        let epmd_binary = find_binary(
            "epmd",
            "EPMD",
            "run `make tool-rabbitmq` (installs Debian's rabbitmq-server and Erlang)",
        )?;
        std::fs::create_dir_all(dir.join("log"))?;
        let (port, dist_port, epmd_port) = (free_port()?, free_port()?, free_port()?);
        let mut epmd = Command::new(epmd_binary);
        epmd.args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let epmd = GuardedChild::spawn(epmd).map_err(Error::harness)?;
        let config = dir.join("rabbitmq.conf");
        std::fs::write(
            &config,
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"),
        )?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let node = GuardedChild::spawn(node_command(&server, dir, port, dist_port, epmd_port))
            .map_err(Error::harness)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let started = RabbitServer {
            node,
            epmd,
            port,
            dir: dir.to_owned(),
            runtime,
        };
        started.declare_when_ready()?;
        Ok(started)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log").join("rabbit.log")
    }

    fn declare_when_ready(&self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.node.exit_status().map_err(Error::harness)? {
                return Err(Error::Harness(format!(
                    "rabbitmq-server exited at start ({status}): {}\n{}",
                    log_tail(&self.dir.join("server.log"), 10),
                    log_tail(&self.log_path(), 10)
                )));
            }
            // Each attempt is bounded: a connection made while the node
            // boots can hang in the AMQP handshake (seen once: a run waited
            // 10 minutes with the listener up and no connection logged).
            let declared = self.runtime.block_on(async {
                tokio::time::timeout(ATTEMPT_TIMEOUT, async {
                    let (connection, channel) = self.channel().await?;
                    client::declare_exchange(&channel, EXCHANGE).await?;
                    connection.close(200, "declared".into()).await?;
                    Ok::<(), Error>(())
                })
                .await
            });
            let last = match declared {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            };
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "RabbitMQ on 127.0.0.1:{} not accepting AMQP after {STARTUP_TIMEOUT:?} \
                     (last: {last}): {}",
                    self.port,
                    log_tail(&self.log_path(), 15)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    async fn channel(&self) -> Result<(Connection, Channel)> {
        let connection = Connection::connect(&self.uri(), ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        Ok((connection, channel))
    }

    /// Messages ready in `queue` (a passive declare). Unacknowledged ones
    /// count too once their consumer's connection is closed (requeued).
    fn ready(&self, queue: &str) -> Result<u32> {
        self.runtime.block_on(async {
            let (connection, channel) = self.channel().await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let declared = channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await?;
            connection.close(200, "checked".into()).await?;
            Ok(declared.message_count())
        })
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        let _ = self.node.kill();
        let _ = self.epmd.kill();
    }
}

fn server_script() -> Result<PathBuf> {
    let path = std::env::var_os("RABBITMQ_SERVER")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(SERVER), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Harness(format!(
            "{} not found: run `make tool-rabbitmq` (installs Debian's rabbitmq-server), \
             or `apt-get install rabbitmq-server`, or set RABBITMQ_SERVER",
            path.display()
        )))
    }
}

/// The node, from the script without Debian's wrapper (which would switch
/// to the `rabbitmq` user and its system directories). Everything it
/// writes is under `dir`. With `RABBITMQ_ALLOW_INPUT` the script `exec`s
/// the Erlang VM (so killing the child kills the node) and the VM keeps a
/// shell on stdin, a pipe that stays open as long as the child is ours:
/// if the test process dies, the pipe closes and the node stops too.
fn node_command(script: &Path, dir: &Path, port: u16, dist_port: u16, epmd_port: u16) -> Command {
    let mut command = Command::new(script);
    let path = |name: &str| dir.join(name).into_os_string();
    command
        .env("HOME", dir)
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_ALLOW_INPUT", "1")
        .env("RABBITMQ_NODENAME", format!("rabbit-e2e-{port}@localhost"))
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config"))
        .env("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
        .env("RABBITMQ_PLUGINS_EXPAND_DIR", path("plugins-expand"))
        .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
        .env("RABBITMQ_LOG_BASE", path("log"))
        .env("RABBITMQ_LOGS", dir.join("log").join("rabbit.log"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(log) = std::fs::File::create(dir.join("server.log")) {
        if let Ok(copy) = log.try_clone() {
            command.stdout(copy);
        }
        command.stderr(log);
    }
    command
}

impl Broker for RabbitServer {
    type Subscription = AmqpQueue;
    const NAME: &'static str = "rabbitmq";

    fn start(dir: &Path) -> Result<Self> {
        RabbitServer::start(dir)
    }

    /// From the node's log (`Starting RabbitMQ 3.10.8 on Erlang ...`).
    fn version(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let version = log
            .lines()
            .find_map(|line| line.split("Starting RabbitMQ ").nth(1))
            .map_or("?", |rest| rest.trim());
        format!("RabbitMQ {version}")
    }

    fn publisher(&self) -> Result<Arc<dyn Publish>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let uri = self.uri();
        let (connection, channel) = runtime.block_on(async {
            let connection = Connection::connect(&uri, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, Error>((connection, channel))
        })?;
        Ok(Arc::new(ConfirmedPublisher {
            runtime: Some(runtime),
            _connection: connection,
            channel,
        }))
    }

    fn subscribe(&self, group: &str) -> Result<AmqpQueue> {
        Ok(AmqpQueue::subscribe(&QueueConfig {
            uri: self.uri(),
            exchange: EXCHANGE.to_owned(),
            queue: group.to_owned(),
            prefetch: PREFETCH,
        })?)
    }

    /// Every message was confirmed to the producer (its `201`s, counted by
    /// the traffic); no queue holds a message, ready or unacknowledged.
    fn check(&self, total: u64, groups: &[String], report: &mut Report) -> Result<()> {
        // The consumers' connections are closing: unacked messages, if any,
        // are requeued within moments.
        std::thread::sleep(Duration::from_millis(300));
        for group in groups {
            let left = self.ready(group)?;
            if left != 0 {
                report
                    .problems
                    .push(format!("queue {group} still holds {left} messages"));
            }
        }
        report.notes.push(format!(
            "exchange {EXCHANGE} (fanout): {total} messages confirmed; queues {} each acked all",
            groups.join(", ")
        ));
        Ok(())
    }
}

/// One channel in confirm mode shared by the producer's handlers; each
/// publish waits for the broker's confirm.
struct ConfirmedPublisher {
    /// Always `Some` until dropped.
    runtime: Option<Runtime>,
    _connection: Connection,
    channel: Channel,
}

impl Publish for ConfirmedPublisher {
    fn publish(&self, headers: Vec<(String, Vec<u8>)>) -> Result<String> {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            let text = String::from_utf8(value)
                .map_err(|_| Error::Malformed(format!("header {name} is not text")))?;
            table.set(&name, text);
        }
        // The AMQP timestamp (whole seconds), as producers should set it:
        // the consumers' hand-over grace reads it.
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let properties = BasicProperties::default()
            .with_headers(table)
            .with_timestamp(now_s);
        let channel = &self.channel;
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::Harness("rabbitmq: publisher closed".into()))?;
        let confirmation = runtime.block_on(async move {
            channel
                .basic_publish(
                    EXCHANGE.into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    b"",
                    properties,
                )
                .await?
                .await
        })?;
        if confirmation.is_nack() {
            return Err(Error::Harness(
                "rabbitmq: the broker nacked a publish".into(),
            ));
        }
        Ok("confirmed".to_owned())
    }
}

impl Drop for ConfirmedPublisher {
    /// The producer's router (and this) is dropped on its own runtime's
    /// thread, where blocking on a runtime shutdown is not allowed.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
