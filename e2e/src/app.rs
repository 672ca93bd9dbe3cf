//! An application behind a sidecar that calls another service and forwards
//! only some of the headers it received: the app that drops `baggage` which
//! the recovery feature is for (issue 14, part 1).
//!
//! For every request it makes one onward `GET /` to `onward` (the sidecar's
//! outbound listener) with `host: <onward_host>` and, of the headers it
//! received, only those named in `forward`. It answers `200` with the onward
//! response's body (the upstream's echo), `x-onward-served-by: <the onward
//! response's x-served-by>` and `x-app-received-route-header: yes|no`
//! (whether the inbound sidecar let a route header through to it).

use std::io::{BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};

use crate::client::{header_value, read_body, read_header_block, read_line, Request};

/// The running app; stops accepting when dropped.
#[derive(Debug)]
pub struct ForwardingApp {
    addr: SocketAddr,
    onward: Arc<OnceLock<SocketAddr>>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl ForwardingApp {
    /// Starts on a free loopback port. `forward` lists the header names
    /// passed on (lower case); the onward address is set later
    /// ([`Self::set_onward`]), once the sidecar is up.
    pub fn start(onward_host: &str, forward: &[&str], route_header: &str) -> Result<Self> {
        Self::start_at(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            onward_host,
            forward,
            route_header,
        )
    }

    /// [`Self::start`] on `addr`.
    pub fn start_at(
        addr: SocketAddr,
        onward_host: &str,
        forward: &[&str],
        route_header: &str,
    ) -> Result<Self> {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("binding the app to {addr}"))?;
        let addr = listener.local_addr()?;
        let onward = Arc::new(OnceLock::new());
        let stopping = Arc::new(AtomicBool::new(false));
        let settings = Arc::new(Settings {
            onward_host: onward_host.to_owned(),
            forward: forward.iter().map(|name| (*name).to_owned()).collect(),
            route_header: route_header.to_owned(),
            onward: onward.clone(),
        });
        let acceptor = {
            let stopping = stopping.clone();
            std::thread::Builder::new()
                .name("forwarding-app".to_owned())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        let settings = settings.clone();
                        let _ = std::thread::Builder::new()
                            .name("forwarding-app-conn".to_owned())
                            .spawn(move || {
                                let _ = serve(stream, &settings);
                            });
                    }
                })?
        };
        Ok(Self {
            addr,
            onward,
            stopping,
            acceptor: Some(acceptor),
        })
    }

    /// Where it listens (the inbound listener's cluster points here).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its onward calls go (once; later calls are ignored).
    pub fn set_onward(&self, onward: SocketAddr) {
        let _ = self.onward.set(onward);
    }
}

impl Drop for ForwardingApp {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

struct Settings {
    onward_host: String,
    forward: Vec<String>,
    route_header: String,
    onward: Arc<OnceLock<SocketAddr>>,
}

fn serve(stream: TcpStream, settings: &Settings) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Ok(line) = read_line(&mut reader) else {
            return Ok(());
        };
        if line.is_empty() {
            return Ok(());
        }
        let headers = read_header_block(&mut reader)?;
        if header_value(&headers, "content-length").is_some()
            || header_value(&headers, "transfer-encoding").is_some()
        {
            read_body(&mut reader, &headers)?;
        }
        let response = match call_onward(settings, &headers) {
            Ok(response) => response,
            Err(error) => {
                let body = format!("onward call failed: {error:#}");
                format!(
                    "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
        };
        writer.write_all(&response)?;
    }
}

fn call_onward(settings: &Settings, received: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let onward = settings
        .onward
        .get()
        .copied()
        .ok_or_else(|| anyhow!("no onward address yet"))?;
    let mut request = Request::get("/").header("host", &settings.onward_host);
    for (name, value) in received {
        if settings
            .forward
            .iter()
            .any(|f| f.eq_ignore_ascii_case(name))
        {
            request = request.header(name, value);
        }
    }
    let response = request.send(onward)?;
    let served_by = response.header("x-served-by").unwrap_or_default();
    let saw_route_header = header_value(received, &settings.route_header).is_some();
    let mut out = format!(
        "HTTP/1.1 {} OK\r\nx-onward-served-by: {served_by}\r\nx-app-received-route-header: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        response.status,
        if saw_route_header { "yes" } else { "no" },
        response.body.len()
    )
    .into_bytes();
    out.extend_from_slice(&response.body);
    Ok(out)
}
