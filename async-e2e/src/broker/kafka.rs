//! A real Apache Kafka for one run: the broker from Maven Central (the jars
//! `make tool-kafka` puts in `.tools/kafka/libs`), one KRaft node that is
//! both controller and broker, on two free loopback ports, its log
//! directory under the run's directory; formatted with
//! `kafka.tools.StorageTool format`, then `kafka.Kafka`; killed when dropped.
//!
//! Each consumer's copy is a consumer group; settling commits offsets (see
//! `sandbox_router_consumer::broker::kafka`). The topic has two partitions,
//! so commits are per partition as in production.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig as KafkaConfig;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::{Timeout, TokioRuntime};
use sandbox_router_consumer::broker::kafka::{self as client, GroupConfig, KafkaGroup, StartAt};
use sandbox_router_consumer::propagation::Injector;
use sandbox_router_e2e::child::GuardedChild;

use super::{find_binary, free_port, log_tail, Broker, Publish};
use crate::analysis::report::Report;
use crate::error::{Error, Result};

/// The topic the producer writes.
pub const TOPIC: &str = "orders";
const PARTITIONS: i32 = 2;
/// A cold JVM on a loaded 2-core machine: formatting plus start take 5-10 s.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running single-node Kafka.
#[derive(Debug)]
pub struct KafkaServer {
    child: GuardedChild,
    bootstrap: String,
    dir: PathBuf,
    version: String,
}

impl KafkaServer {
    /// Formats a log directory in `dir`, starts the node, waits until it
    /// takes metadata requests, and creates [`TOPIC`].
    pub fn start(dir: &Path) -> Result<Self> {
        let java = find_binary(
            "java",
            "JAVA",
            "install a Java 17+ runtime (`apt-get install openjdk-17-jre-headless`)",
        )?;
        let libs = libs_dir()?;
        let version = kafka_version(&libs)?;
        std::fs::create_dir_all(dir)?;
        let (port, controller_port) = (free_port()?, free_port()?);
        let properties = dir.join("server.properties");
        std::fs::write(&properties, server_properties(dir, port, controller_port))?;
        format_storage(&java, &libs, dir, &properties)?;
        let log = std::fs::File::create(dir.join("kafka.log"))?;
        let mut command = java_command(&java, &libs);
        command
            .arg("kafka.Kafka")
            .arg(&properties)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = GuardedChild::spawn(command).map_err(Error::harness)?;
        let server = KafkaServer {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            dir: dir.to_owned(),
            version,
        };
        server.create_topic_when_ready()?;
        Ok(server)
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }

    /// Creates the topic, retrying while the node is still starting.
    fn create_topic_when_ready(&self) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = KafkaConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.exit_status().map_err(Error::harness)? {
                return Err(Error::Harness(format!(
                    "Kafka exited at start ({status}): {}",
                    log_tail(&self.log_path(), 15)
                )));
            }
            let created = runtime.block_on(admin.create_topics([&topic], &options));
            let last = match created {
                Ok(results) => match results.into_iter().next() {
                    Some(Ok(_)) => return Ok(()),
                    Some(Err((_, code))) => format!("{code}"),
                    None => "no answer".to_owned(),
                },
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "Kafka on {} did not create topic {TOPIC} within {STARTUP_TIMEOUT:?} \
                     (last: {last}): {}",
                    self.bootstrap,
                    log_tail(&self.log_path(), 15)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The broker's jars: `KAFKA_LIBS`, else `.tools/kafka/libs` of the repo.
fn libs_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("KAFKA_LIBS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(".tools/kafka/libs")
        });
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::Harness(format!(
            "Kafka's jars not found in {}: run `make tool-kafka` (fetches the broker from \
             Maven Central into .tools/kafka), or set KAFKA_LIBS",
            dir.display()
        )))
    }
}

/// The version in the broker jar's name (`kafka_2.13-4.1.1.jar`).
fn kafka_version(libs: &Path) -> Result<String> {
    let names =
        std::fs::read_dir(libs)?.filter_map(|entry| entry.ok()?.file_name().into_string().ok());
    for name in names {
        if let Some(version) = name
            .strip_prefix("kafka_2.13-")
            .and_then(|rest| rest.strip_suffix(".jar"))
        {
            return Ok(version.to_owned());
        }
    }
    Err(Error::Harness(format!(
        "no kafka_2.13-<version>.jar in {}: run `make tool-kafka`",
        libs.display()
    )))
}

fn java_command(java: &Path, libs: &Path) -> Command {
    let mut command = Command::new(java);
    // A small heap and the serial collector: one node, a few thousand
    // records, and two cores shared with everything else of the run.
    command
        .args(["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC"])
        .arg("-Djava.awt.headless=true")
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=info")
        .arg("-cp")
        .arg(libs.join("*"));
    command
}

/// `kafka-storage format`: a KRaft log directory with a new cluster id.
fn format_storage(java: &Path, libs: &Path, dir: &Path, properties: &Path) -> Result<()> {
    let log_path = dir.join("format.log");
    let log = std::fs::File::create(&log_path)?;
    let status = java_command(java, libs)
        .arg("kafka.tools.StorageTool")
        .arg("format")
        // `--cluster-id=<id>` in one argument: an id is base64url and may
        // start with '-', which the tool's parser would take for an option
        // (one run in 64 failed with "expected one argument").
        .arg(format!("--cluster-id={}", cluster_id()))
        .arg("--config")
        .arg(properties)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Harness(format!(
            "kafka.tools.StorageTool format failed ({status}): {}",
            log_tail(&log_path, 15)
        )))
    }
}

/// One node that is controller and broker, on loopback only; one replica
/// of everything; no automatic topics (the run creates its own).
fn server_properties(dir: &Path, port: u16, controller_port: u16) -> String {
    let mut p = String::new();
    let lines = [
        "process.roles=broker,controller".to_owned(),
        "node.id=1".to_owned(),
        format!("controller.quorum.voters=1@127.0.0.1:{controller_port}"),
        format!("listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
        format!("advertised.listeners=PLAINTEXT://127.0.0.1:{port}"),
        "controller.listener.names=CONTROLLER".to_owned(),
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_owned(),
        "inter.broker.listener.name=PLAINTEXT".to_owned(),
        format!("log.dirs={}", dir.join("data").display()),
        "offsets.topic.replication.factor=1".to_owned(),
        "offsets.topic.num.partitions=1".to_owned(),
        "transaction.state.log.replication.factor=1".to_owned(),
        "transaction.state.log.min.isr=1".to_owned(),
        "share.coordinator.state.topic.replication.factor=1".to_owned(),
        "share.coordinator.state.topic.min.isr=1".to_owned(),
        // A group's first member is assigned at once (the default waits
        // 3 s for more members).
        "group.initial.rebalance.delay.ms=0".to_owned(),
        "auto.create.topics.enable=false".to_owned(),
    ];
    for line in lines {
        let _ = writeln!(p, "{line}");
    }
    p
}

/// A KRaft cluster id: 16 bytes as unpadded base64url (Kafka's `Uuid`),
/// from the clock and the process id (unique enough for a test cluster).
fn cluster_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut bytes = [0u8; 16];
    let mixed = nanos ^ (u128::from(std::process::id()) << 64) | 1 << 127;
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::try_from((mixed >> (8 * i)) & 0xff).unwrap_or(0);
    }
    base64url(&bytes)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
            out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
        }
    }
    out
}

impl Broker for KafkaServer {
    type Subscription = KafkaGroup;
    const NAME: &'static str = "kafka";

    fn start(dir: &Path) -> Result<Self> {
        KafkaServer::start(dir)
    }

    fn version(&self) -> String {
        format!("Apache Kafka {} (KRaft, one node)", self.version)
    }

    fn publisher(&self) -> Result<Arc<dyn Publish>> {
        let producer: FutureProducer<DefaultClientContext, TokioRuntime> = KafkaConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            // Each request waits for its record to be stored: send at once.
            .set("linger.ms", "0")
            .create()?;
        Ok(Arc::new(RecordPublisher { producer }))
    }

    fn subscribe(&self, group: &str) -> Result<KafkaGroup> {
        Ok(KafkaGroup::subscribe(&GroupConfig {
            bootstrap: self.bootstrap.clone(),
            topic: TOPIC.to_owned(),
            group: group.to_owned(),
            start_at: StartAt::Earliest,
        })?)
    }

    /// The topic holds every record once; each group committed all of them.
    fn check(&self, total: u64, groups: &[String], report: &mut Report) -> Result<()> {
        let everyone = format!("{TOPIC}-counter");
        let stored = client::group_lag(&self.bootstrap, TOPIC, &everyone, CALL_TIMEOUT)?;
        if stored != total {
            report
                .problems
                .push(format!("topic {TOPIC} holds {stored} records, not {total}"));
        }
        for group in groups {
            let lag = client::group_lag(&self.bootstrap, TOPIC, group, CALL_TIMEOUT)?;
            if lag != 0 {
                report
                    .problems
                    .push(format!("group {group} has {lag} records not committed"));
            }
        }
        report.notes.push(format!(
            "topic {TOPIC} ({PARTITIONS} partitions): {stored} records; groups {} each committed all",
            groups.join(", ")
        ));
        Ok(())
    }
}

/// One producer shared by the producer's request handlers: each publish
/// waits for the broker's acknowledgement of its record.
struct RecordPublisher {
    producer: FutureProducer<DefaultClientContext, TokioRuntime>,
}

impl Publish for RecordPublisher {
    fn publish(&self, headers: Vec<(String, Vec<u8>)>) -> Result<String> {
        let mut record_headers = OwnedHeaders::new();
        for (name, value) in &headers {
            match std::str::from_utf8(value) {
                Ok(text) => record_headers.set(name, text.to_owned()),
                Err(_) => return Err(Error::Malformed(format!("header {name} is not text"))),
            }
        }
        let empty: &[u8] = &[];
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(TOPIC)
            .payload(empty)
            .headers(record_headers);
        // Called from a blocking thread of the producer's runtime.
        let handle = tokio::runtime::Handle::current();
        let sent = handle.block_on(self.producer.send(record, Timeout::After(CALL_TIMEOUT)));
        match sent {
            Ok(delivery) => Ok(format!("{}@{}", delivery.partition, delivery.offset)),
            Err((error, _)) => Err(Error::Harness(format!("kafka: producing: {error}"))),
        }
    }
}
