//! A Zipkin collector stand-in: records the spans Envoy's Zipkin tracer
//! POSTs (`HTTP_JSON`, Zipkin v2), and the tracing configuration that makes
//! the sidecar send them here with the plugin's decision as span tags.
//!
//! One thread per connection, keep-alive, every request answered `202`.

use std::io::{BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use crate::client::{header_value, read_body, read_header_block, read_line};

/// The sidecar's cluster for the collector.
pub const CLUSTER: &str = "zipkin";

/// Where the collector takes spans (Zipkin v2's path).
pub const ENDPOINT: &str = "/api/v2/spans";

/// The span tags for the plugin's decision, as an operator configures
/// them: each reads the plugin's filter state with an access-log format
/// specifier (`CustomTag.value`, Envoy >= 1.37).
pub fn decision_custom_tags() -> Value {
    json!([
        {"tag": "sandbox_router.outcome", "value": "%FILTER_STATE(wasm.sandbox_router.outcome:PLAIN)%"},
        {"tag": "sandbox_router.sandbox", "value": "%FILTER_STATE(wasm.sandbox_router.sandbox:PLAIN)%"},
    ])
}

/// The HTTP connection manager's `tracing`: Zipkin to [`CLUSTER`], every
/// request sampled, the decision's custom tags.
pub fn hcm_tracing() -> Value {
    json!({
        "random_sampling": {"value": 100},
        "custom_tags": decision_custom_tags(),
        "provider": {
            "name": "envoy.tracers.zipkin",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": CLUSTER,
                "collector_endpoint": ENDPOINT,
                "collector_endpoint_version": "HTTP_JSON",
                "shared_span_context": false,
            },
        },
    })
}

/// The cluster [`CLUSTER`] for a collector at `addr`.
pub fn cluster(addr: SocketAddr) -> Value {
    json!({
        "name": CLUSTER,
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": {
            "cluster_name": CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": addr.ip().to_string(),
                "port_value": addr.port(),
            }}}}]}],
        },
    })
}

/// Runtime that makes the Zipkin tracer send each span at once (it
/// otherwise buffers 5 spans or 5 s).
pub fn flush_at_once_runtime() -> Value {
    json!({"layers": [{"name": "zipkin-flush", "static_layer": {
        "tracing.zipkin.min_flush_spans": 1,
        "tracing.zipkin.flush_interval_ms": 100,
    }}]})
}

/// A running collector; stops accepting when dropped.
#[derive(Debug)]
pub struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Value>>>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Collector {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the Zipkin collector")?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (spans, stopping) = (spans.clone(), stopping.clone());
            std::thread::Builder::new()
                .name("zipkin".to_owned())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        let spans = spans.clone();
                        let _ = std::thread::Builder::new()
                            .name("zipkin-conn".to_owned())
                            .spawn(move || {
                                let _ = serve_connection(stream, &spans);
                            });
                    }
                })?
        };
        Ok(Self {
            addr,
            spans,
            stopping,
            acceptor: Some(acceptor),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans
            .lock()
            .map(|spans| spans.clone())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for a span whose tag `guid:x-request-id` (Envoy
    /// tags each span with the request's id) is `request_id`.
    pub fn span_for_request(&self, request_id: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.spans().into_iter().find(|span| {
                span.pointer("/tags/guid:x-request-id")
                    .and_then(Value::as_str)
                    == Some(request_id)
            });
            if let Some(span) = found {
                return Ok(span);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no span for request {request_id} within {timeout:?}; spans: {}",
                    Value::Array(self.spans())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Records the spans of each POST on one connection until the peer closes it.
fn serve_connection(stream: TcpStream, spans: &Mutex<Vec<Value>>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let line = read_line(&mut reader)?;
        let headers = read_header_block(&mut reader)?;
        let has_body = header_value(&headers, "content-length").is_some()
            || header_value(&headers, "transfer-encoding").is_some();
        let body = if has_body {
            read_body(&mut reader, &headers)?
        } else {
            Vec::new()
        };
        if line.starts_with(b"POST ") {
            let received: Value = serde_json::from_slice(&body)
                .with_context(|| format!("span JSON {}", String::from_utf8_lossy(&body)))?;
            let received = match received {
                Value::Array(received) => received,
                other => return Err(anyhow!("not a span list: {other}")),
            };
            spans
                .lock()
                .map_err(|_| anyhow!("span list poisoned"))?
                .extend(received);
        }
        writer.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")?;
    }
}
