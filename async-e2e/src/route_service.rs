//! The RouteService of a run: the real axum app (`routeservice::app`) over
//! an in-memory store, served on a loopback port, so Envoy's filter and the
//! consumer clients reach it over real HTTP. Sandboxes are created and
//! deleted through its HTTP API, with a bearer token, as an operator would.

use std::net::SocketAddr;
use std::sync::Arc;

use routeservice::client::Client;
use routeservice::metrics::Metrics;
use routeservice::model::{SandboxRoute, SandboxSpec};
use routeservice::store::MemoryStore;
use routeservice::{app, AppState, Auth, RouteService};

use crate::error::{Error, Result};
use crate::http_server::Loopback;
use crate::message::fqdn;

/// The writers' bearer token of the test RouteService.
pub const TOKEN: &str = "async-e2e-token";

/// A RouteService served by a [`Loopback`], and an API client of it.
#[derive(Debug)]
pub struct RouteServiceHandle {
    addr: SocketAddr,
    client: Client,
}

impl RouteServiceHandle {
    /// Serves an empty RouteService.
    pub fn start(loopback: &Loopback) -> Result<Self> {
        let service = RouteService::open(Arc::new(MemoryStore::new())).map_err(Error::harness)?;
        let auth = Auth::token(TOKEN).map_err(Error::harness)?;
        let metrics = Arc::new(Metrics::new());
        let state = AppState::new(
            auth,
            Arc::clone(&metrics),
            routeservice::api::DEFAULT_BODY_LIMIT,
        );
        state.set_ready(Arc::new(service.with_observer(metrics)));
        let addr = loopback.serve(app(state))?;
        let client = Client::new(&format!("http://{addr}"), Some(TOKEN.to_owned()));
        Ok(RouteServiceHandle { addr, client })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `PUT /v1/sandboxes/{name}`: sandbox `name` (routing key = name)
    /// forks each `(service, fork)` pair (short names in the flows'
    /// namespace). Returns the new table version.
    pub fn put(&self, name: &str, forks: &[(&str, &str)]) -> Result<u64> {
        let spec = SandboxSpec {
            routing_key: name.to_owned(),
            routes: forks
                .iter()
                .map(|(service, fork)| SandboxRoute {
                    baseline: fqdn(service),
                    target: fqdn(fork),
                })
                .collect(),
        };
        let (_, stored) = self.client.put(name, &spec).map_err(Error::harness)?;
        Ok(stored.version)
    }

    /// `DELETE /v1/sandboxes/{name}`; returns the new table version.
    pub fn delete(&self, name: &str) -> Result<u64> {
        self.client.delete(name).map_err(Error::harness)?;
        self.version()
    }

    /// The current table version.
    pub fn version(&self) -> Result<u64> {
        Ok(self.client.list().map_err(Error::harness)?.version)
    }
}
