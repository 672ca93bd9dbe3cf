//! Loopback HTTP servers for a run (the RouteService, the producer, the
//! push receivers): axum routers served from one small tokio runtime, each
//! on a free `127.0.0.1` port. Everything stops when the [`Loopback`] is
//! dropped.

use std::net::SocketAddr;

use axum::Router;
use tokio::runtime::Runtime;

use crate::error::Result;

/// The runtime serving a run's HTTP servers.
#[derive(Debug)]
pub struct Loopback {
    runtime: Option<Runtime>,
}

impl Loopback {
    pub fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("loopback-http")
            .enable_all()
            .build()?;
        Ok(Loopback {
            runtime: Some(runtime),
        })
    }

    /// Serves `router` on a free port; returns its address.
    pub fn serve(&self, router: Router) -> Result<SocketAddr> {
        let runtime = self.runtime()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move { axum::serve(listener, router).await });
        Ok(addr)
    }

    /// Runs blocking work (a store commit, a Redis call) off the servers' threads.
    pub fn runtime(&self) -> Result<&Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the loopback runtime is shut down").into())
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
