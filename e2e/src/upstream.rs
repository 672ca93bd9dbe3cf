//! Demo upstream servers: real HTTP/1.1 on loopback that say who they are and
//! echo what they received.
//!
//! Each answers every request `200` with `x-served-by: <service>/<variant>`
//! and a JSON body holding the request line and all request headers in the
//! order received, so a test can see what the filter and Envoy did to the
//! request (route header added or removed, `:authority` rewritten).
//!
//! One thread per connection, keep-alive, any method: Envoy opens few
//! connections to each upstream, so this stays small and predictable.

use std::io::{BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use serde_json::json;

use crate::client::{header_value, read_body, read_header_block, read_line};

/// How long an idle keep-alive connection stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A running upstream; stops accepting when dropped.
#[derive(Debug)]
pub struct Upstream {
    identity: Arc<Identity>,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    acceptor: Option<JoinHandle<()>>,
}

/// Who an upstream is: the value of its `x-served-by` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Short service name, e.g. `catalog`.
    pub service: String,
    /// `baseline` or the sandbox name, e.g. `pr-42`.
    pub variant: String,
}

impl Identity {
    /// `<service>/<variant>`, the `x-served-by` value.
    pub fn served_by(&self) -> String {
        format!("{}/{}", self.service, self.variant)
    }
}

impl Upstream {
    /// Starts serving on `127.0.0.1:<port>` (`0` picks a free port).
    pub fn start(identity: Identity, port: u16) -> Result<Self> {
        Self::start_at(identity, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Starts serving on `addr` (the local Istio mesh gives every workload
    /// its own loopback address, as pods have their own IPs).
    pub fn start_at(identity: Identity, addr: SocketAddr) -> Result<Self> {
        let port = addr.port();
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("binding upstream {} to port {port}", identity.served_by()))?;
        let addr = listener.local_addr()?;
        let identity = Arc::new(identity);
        let stopping = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let acceptor = {
            let (identity, stopping, served) = (identity.clone(), stopping.clone(), served.clone());
            std::thread::Builder::new()
                .name(format!("upstream:{}", identity.served_by()))
                .spawn(move || accept_loop(&listener, &identity, &stopping, &served))?
        };
        Ok(Self {
            identity,
            addr,
            stopping,
            served,
            acceptor: Some(acceptor),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Who it says it is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// How many requests it has answered.
    pub fn requests_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    identity: &Arc<Identity>,
    stopping: &AtomicBool,
    served: &Arc<AtomicU64>,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (identity, served) = (identity.clone(), served.clone());
        // A connection thread ends when its peer closes or goes idle.
        let _ = std::thread::Builder::new()
            .name(format!("conn:{}", identity.served_by()))
            .spawn(move || {
                let _ = serve_connection(stream, &identity, &served);
            });
    }
}

/// Answers requests on one connection until the peer closes it.
fn serve_connection(stream: TcpStream, identity: &Identity, served: &AtomicU64) -> Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let request = match ReceivedRequest::read(&mut reader) {
            Ok(request) => request,
            Err(_) => return Ok(()), // closed, idle or garbage: end the connection
        };
        served.fetch_add(1, Ordering::Relaxed);
        writer.write_all(&echo_response(identity, &request))?;
        if request.wants_close() {
            return Ok(());
        }
    }
}

/// A request as the upstream received it.
#[derive(Debug)]
struct ReceivedRequest {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, Vec<u8>)>,
    body_len: usize,
}

impl ReceivedRequest {
    fn read(reader: &mut impl std::io::BufRead) -> Result<Self> {
        let line = String::from_utf8(read_line(reader)?)?;
        let mut parts = line.split(' ');
        let mut next = || {
            parts
                .next()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("bad request line {line:?}"))
        };
        let (method, target, version) = (next()?, next()?, next()?);
        let headers = read_header_block(reader)?;
        let has_body = header_value(&headers, "content-length").is_some()
            || header_value(&headers, "transfer-encoding").is_some();
        let body_len = if has_body {
            read_body(reader, &headers)?.len()
        } else {
            0
        };
        Ok(Self {
            method,
            target,
            version,
            headers,
            body_len,
        })
    }

    fn wants_close(&self) -> bool {
        header_value(&self.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"))
            || self.version == "HTTP/1.0"
    }
}

/// The `200` answer: identity header plus the JSON echo of the request.
/// Header values that are not UTF-8 are echoed lossily (U+FFFD).
fn echo_response(identity: &Identity, request: &ReceivedRequest) -> Vec<u8> {
    let headers: Vec<_> = request
        .headers
        .iter()
        .map(|(name, value)| json!([name, String::from_utf8_lossy(value)]))
        .collect();
    let body = json!({
        "servedBy": identity.served_by(),
        "method": request.method,
        "target": request.target,
        "version": request.version,
        "bodyLength": request.body_len,
        "headers": headers,
    })
    .to_string();
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nx-served-by: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        identity.served_by(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// What an upstream received, read back from its JSON answer.
#[derive(Debug, Clone)]
pub struct Echo {
    /// `<service>/<variant>` of the upstream that answered.
    pub served_by: String,
    /// Request method.
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// Request headers in the order received (values lossily UTF-8).
    pub headers: Vec<(String, String)>,
}

impl Echo {
    /// Parses an upstream's response body.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .with_context(|| format!("not an upstream echo: {}", String::from_utf8_lossy(body)))?;
        let text = |key: &str| {
            value
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("echo has no {key}"))
        };
        let headers = value
            .get("headers")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| anyhow!("echo has no headers"))?
            .iter()
            .map(|pair| {
                match (
                    pair.get(0).and_then(|v| v.as_str()),
                    pair.get(1).and_then(|v| v.as_str()),
                ) {
                    (Some(name), Some(value)) => Ok((name.to_owned(), value.to_owned())),
                    _ => Err(anyhow!("bad header pair {pair}")),
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            served_by: text("servedBy")?,
            method: text("method")?,
            target: text("target")?,
            headers,
        })
    }

    /// Every value received for header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of header `name`; `None` if absent. Several values
    /// join with `,` as HTTP would fold them.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.header_values(name);
        (!values.is_empty()).then(|| values.join(","))
    }
}
