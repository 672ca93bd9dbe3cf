//! A scripted stand-in for the RouteService, to see the filter survive one
//! that misbehaves: slow, failing, answering garbage or a huge body, or
//! never answering at all.
//!
//! It speaks HTTP/1.1 on loopback, one thread per connection, keep-alive.
//! What it does is a [`Behavior`] that the test can change while it runs.
//! Healthy answers follow the API (INTERFACES section 5): `GET /v1/routes`
//! gives the whole table with an `ETag` and `304` to a matching
//! `If-None-Match`; `GET /v1/routes?routingKey=K` gives that key's routes.

use std::io::{BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use serde_json::{json, Value};

use crate::client::{header_value, read_header_block, read_line};

/// What the fake does with each request.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Then answer this.
    pub answer: Answer,
}

/// An answer (after [`Behavior::delay`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A correct RouteService with this table (`Route` objects).
    Table {
        /// The table version (`ETag`).
        version: u64,
        /// `{"routingKey", "sandbox", "baseline", "target"}` objects.
        routes: Vec<Value>,
    },
    /// This status, with a JSON error body.
    Status(u16),
    /// `200` with a body that is not JSON at all.
    Garbage,
    /// `200` with a body of this many bytes (a JSON prefix, then padding).
    Huge(usize),
    /// Never answer; keep the connection open until the client gives up.
    Hang,
    /// `200` and the start of a body, then the connection is closed (a
    /// server that dies mid-answer).
    Truncated,
    /// `200` and the start of a body at once, the rest after this long (a
    /// body slower than the client's timeout).
    StalledBody(Duration),
}

impl Answer {
    /// A correct RouteService's answer from an empty table, version 1.
    pub fn healthy_table() -> Self {
        Answer::Table {
            version: 1,
            routes: Vec::new(),
        }
    }
}

impl Behavior {
    /// A correct RouteService with an empty table, answering at once.
    pub fn healthy() -> Self {
        Self::answer(Answer::healthy_table())
    }

    /// `answer`, at once.
    pub fn answer(answer: Answer) -> Self {
        Self {
            delay: Duration::ZERO,
            answer,
        }
    }

    /// `answer` after `delay`.
    pub fn slow(delay: Duration, answer: Answer) -> Self {
        Self { delay, answer }
    }
}

/// Requests the fake received, by kind.
#[derive(Debug, Default)]
struct Counts {
    table: AtomicU64,
    since: AtomicU64,
    key: AtomicU64,
    other: AtomicU64,
}

/// A running fake; stops accepting when dropped.
#[derive(Debug)]
pub struct FakeRouteService {
    addr: SocketAddr,
    behavior: Arc<Mutex<Behavior>>,
    counts: Arc<Counts>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeRouteService {
    /// Starts on a free loopback port.
    pub fn start(behavior: Behavior) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding the fake")?;
        let addr = listener.local_addr()?;
        let behavior = Arc::new(Mutex::new(behavior));
        let counts = Arc::new(Counts::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (behavior, counts, stopping) = (behavior.clone(), counts.clone(), stopping.clone());
            std::thread::Builder::new()
                .name("fake-routeservice".to_owned())
                .spawn(move || accept_loop(&listener, &behavior, &counts, &stopping))?
        };
        Ok(Self {
            addr,
            behavior,
            counts,
            stopping,
            acceptor: Some(acceptor),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what it does from the next request on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *self.behavior.lock().unwrap_or_else(PoisonError::into_inner) = behavior;
    }

    /// `GET /v1/routes` requests received (table syncs).
    pub fn table_requests(&self) -> u64 {
        self.counts.table.load(Ordering::SeqCst)
    }

    /// `GET /v1/routes?routingKey=K` requests received (lookups).
    /// `GET /v1/routes?since=V` requests (answered `304` or `410`).
    pub fn since_requests(&self) -> u64 {
        self.counts.since.load(Ordering::SeqCst)
    }

    pub fn key_requests(&self) -> u64 {
        self.counts.key.load(Ordering::SeqCst)
    }
}

impl Drop for FakeRouteService {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    behavior: &Arc<Mutex<Behavior>>,
    counts: &Arc<Counts>,
    stopping: &Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (behavior, counts, stopping) = (behavior.clone(), counts.clone(), stopping.clone());
        let _ = std::thread::Builder::new()
            .name("fake-routeservice-conn".to_owned())
            .spawn(move || {
                let _ = serve_connection(stream, &behavior, &counts, &stopping);
            });
    }
}

/// Polling period of blocking reads, so a connection thread notices `stopping`.
const POLL: Duration = Duration::from_millis(100);

fn serve_connection(
    stream: TcpStream,
    behavior: &Mutex<Behavior>,
    counts: &Counts,
    stopping: &AtomicBool,
) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let line = String::from_utf8(read_line(&mut reader)?)?;
        let target = line
            .split(' ')
            .nth(1)
            .ok_or_else(|| anyhow!("bad request line {line:?}"))?
            .to_owned();
        let headers = read_header_block(&mut reader)?;
        let key = routing_key_of(&target);
        let since = since_of(&target);
        match (target.split('?').next(), &key) {
            (Some("/v1/routes"), _) if since.is_some() => {
                counts.since.fetch_add(1, Ordering::SeqCst)
            }
            (Some("/v1/routes"), Some(_)) => counts.key.fetch_add(1, Ordering::SeqCst),
            (Some("/v1/routes"), None) => counts.table.fetch_add(1, Ordering::SeqCst),
            _ => counts.other.fetch_add(1, Ordering::SeqCst),
        };
        let current = behavior
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        std::thread::sleep(current.delay);
        let if_none_match = header_value(&headers, "if-none-match").map(<[u8]>::to_vec);
        match current.answer {
            Answer::Hang => return hang(&stream, stopping),
            Answer::Huge(size) => {
                write_huge(&mut writer, size)?;
            }
            // A server with no history: `since` is current (304) or gone (410).
            Answer::Table { version, .. } if since.is_some() => {
                if since == Some(version) {
                    write!(
                        writer,
                        "HTTP/1.1 304 Not Modified\r\netag: \"{version}\"\r\ncontent-length: 0\r\n\r\n"
                    )?;
                } else {
                    let body = json!({"error": "since: not in this server's history"}).to_string();
                    write_response(&mut writer, 410, &[], body.as_bytes())?;
                }
            }
            Answer::Table { version, routes } => {
                let etag = format!("\"{version}\"");
                if key.is_none() && if_none_match.as_deref() == Some(etag.as_bytes()) {
                    write!(
                        writer,
                        "HTTP/1.1 304 Not Modified\r\netag: {etag}\r\ncontent-length: 0\r\n\r\n"
                    )?;
                } else {
                    let routes: Vec<&Value> = routes
                        .iter()
                        .filter(|route| {
                            key.as_deref()
                                .is_none_or(|key| route["routingKey"].as_str() == Some(key))
                        })
                        .collect();
                    let body = json!({"version": version, "routes": routes}).to_string();
                    write_response(&mut writer, 200, &[("etag", &etag)], body.as_bytes())?;
                }
            }
            Answer::Status(status) => {
                let body = json!({"error": "scripted failure"}).to_string();
                write_response(&mut writer, status, &[], body.as_bytes())?;
            }
            Answer::Garbage => {
                write_response(&mut writer, 200, &[], b"<html>\x00\xff not json {{{\n")?;
            }
            Answer::Truncated => {
                write_partial(&mut writer)?;
                return Ok(()); // closes the connection mid-body
            }
            Answer::StalledBody(stall) => {
                write_partial(&mut writer)?;
                std::thread::sleep(stall);
                let rest = vec![b' '; PARTIAL_LENGTH - PARTIAL_PREFIX.len() - 2];
                writer.write_all(&rest)?;
                writer.write_all(b"]}")?;
            }
        }
    }
}

/// The `since` query parameter of a request target, if it is a number.
fn since_of(target: &str) -> Option<u64> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("since="))
        .and_then(|v| v.parse().ok())
}

/// The `routingKey` query parameter of a request target, if any.
fn routing_key_of(target: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("routingKey="))
        .map(str::to_owned)
}

fn write_response(
    writer: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    Ok(())
}

/// The body [`Answer::Truncated`] and [`Answer::StalledBody`] promise, and
/// the part of it they send at once.
const PARTIAL_LENGTH: usize = 4096;
const PARTIAL_PREFIX: &[u8] = br#"{"version": 1, "routes": ["#;

/// `200` with a `content-length` of [`PARTIAL_LENGTH`], and only its start.
fn write_partial(writer: &mut TcpStream) -> Result<()> {
    write!(
        writer,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {PARTIAL_LENGTH}\r\n\r\n"
    )?;
    writer.write_all(PARTIAL_PREFIX)?;
    writer.flush()?;
    Ok(())
}

/// `200` with a `size`-byte body: a routes document that never ends.
fn write_huge(writer: &mut TcpStream, size: usize) -> Result<()> {
    let prefix = br#"{"version": 1, "routes": ["#;
    write!(
        writer,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
    )?;
    writer.write_all(prefix.get(..size.min(prefix.len())).unwrap_or_default())?;
    let chunk = vec![b' '; 64 * 1024];
    let mut left = size.saturating_sub(prefix.len());
    while left > 0 {
        let n = left.min(chunk.len());
        // The client may give up (limit, timeout) and close: stop writing.
        writer.write_all(chunk.get(..n).unwrap_or_default())?;
        left -= n;
    }
    Ok(())
}

/// Holds the connection open without answering until the client closes it.
fn hang(stream: &TcpStream, stopping: &AtomicBool) -> Result<()> {
    use std::io::Read as _;
    stream.set_read_timeout(Some(POLL))?;
    let mut buffer = [0_u8; 1024];
    let mut reader = stream;
    while !stopping.load(Ordering::SeqCst) {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_key_is_read_from_the_query() {
        assert_eq!(
            routing_key_of("/v1/routes?routingKey=pr-42").as_deref(),
            Some("pr-42")
        );
        assert_eq!(routing_key_of("/v1/routes"), None);
        assert_eq!(
            routing_key_of("/v1/routes?x=1&routingKey=k").as_deref(),
            Some("k")
        );
    }
}
