//! Servers for the client tests: the real RouteService in-process on a
//! loopback port, and a scripted fake for answers the real one never gives.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use routeservice::model::{SandboxRoute, SandboxSpec};
use routeservice::store::MemoryStore;
use routeservice::{app, AppState, Auth, RouteService};

pub const WORKLOAD: &str = "orders.shop.svc.cluster.local";

/// The real RouteService (axum app over a memory store) on a free port.
pub struct Server {
    pub service: Arc<RouteService>,
    pub url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    pub fn start() -> Server {
        let service = Arc::new(RouteService::open(Arc::new(MemoryStore::new())).unwrap());
        let state = AppState::new(
            Auth::Disabled,
            Arc::new(routeservice::metrics::Metrics::new()),
            routeservice::api::DEFAULT_BODY_LIMIT,
        );
        state.set_ready(Arc::clone(&service));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app(state)).await });
        Server {
            service,
            url: format!("http://{addr}"),
            runtime: Some(runtime),
        }
    }

    /// Creates or replaces sandbox `name` forking `baselines` (short names
    /// in `shop`); returns the new version.
    pub fn put(&self, name: &str, key: &str, baselines: &[&str]) -> u64 {
        let spec = SandboxSpec {
            routing_key: key.into(),
            routes: baselines
                .iter()
                .map(|b| SandboxRoute {
                    baseline: format!("{b}.shop.svc.cluster.local"),
                    target: format!("{b}-{name}.shop.svc.cluster.local"),
                })
                .collect(),
        };
        self.service.put(name, spec).unwrap();
        self.service.snapshot().version()
    }

    pub fn delete(&self, name: &str) -> u64 {
        self.service.delete(name).unwrap()
    }

    /// Stops serving: connections are refused from now on.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        // Give the listener a moment to close.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server that answers each request with the next scripted response (the
/// last one again once the script is used up) and records request heads.
pub struct Fake {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    pub fn start(script: Vec<(u16, &'static str, String)>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            let mut script = script.into_iter().peekable();
            let mut last = None;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.lock().unwrap().push(head);
                if let Some(next) = script.next() {
                    last = Some(next);
                }
                let (status, extra, body) = last.clone().unwrap();
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Fake { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn request(&self, index: usize) -> String {
        self.requests.lock().unwrap()[index].clone()
    }
}
