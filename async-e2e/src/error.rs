//! The one error type of the flows.

/// Why a flow could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Stream(#[from] sandbox_router_consumer::broker::redis_streams::Error),
    #[error("{0}")]
    Kafka(#[from] sandbox_router_consumer::broker::kafka::Error),
    #[error("{0}")]
    Amqp(#[from] sandbox_router_consumer::broker::rabbitmq::Error),
    #[error("rabbitmq: {0}")]
    AmqpClient(#[from] lapin::Error),
    #[error("kafka: {0}")]
    KafkaClient(#[from] rdkafka::error::KafkaError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Envoy, the harness, the RouteService client: their own messages.
    #[error("{0}")]
    Harness(String),
    /// A stream entry or an HTTP request that is not what the flow sends.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// Wraps a harness (`anyhow`) or client error, keeping its whole chain.
    pub fn harness(error: impl std::fmt::Display) -> Self {
        Error::Harness(format!("{error:#}"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;
