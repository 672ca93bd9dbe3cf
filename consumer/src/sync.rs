//! The background table sync: a thread that calls
//! [`RouteClient::refresh`] at once and then every `sync_interval`, until
//! the [`SyncThread`] is stopped or dropped. Failures are logged and leave
//! the last good table in use.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::RouteClient;
use crate::config::ClientConfig;

/// A running sync thread; stops (and is joined) when dropped.
#[derive(Debug)]
pub struct SyncThread {
    stop: Arc<StopSignal>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    /// Sleeps up to `interval`; `true` once a stop was asked for.
    fn sleep(&self, interval: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, interval, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *stopped
    }

    fn raise(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_all();
    }
}

impl SyncThread {
    /// Starts syncing `client` in the background.
    pub fn spawn(client: Arc<RouteClient>) -> std::io::Result<Self> {
        let stop = Arc::new(StopSignal::default());
        let signal = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("route-sync".to_owned())
            .spawn(move || run(&client, &signal))?;
        Ok(SyncThread {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it (a sync in progress finishes first).
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.raise();
        if let Some(handle) = self.handle.take() {
            // A panicked sync thread has nothing left to clean up.
            let _ = handle.join();
        }
    }
}

impl Drop for SyncThread {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A client and its running sync thread, in one call.
pub fn start(config: ClientConfig) -> std::io::Result<(Arc<RouteClient>, SyncThread)> {
    let client = Arc::new(RouteClient::new(config));
    let sync = SyncThread::spawn(Arc::clone(&client))?;
    Ok((client, sync))
}

fn run(client: &RouteClient, stop: &StopSignal) {
    let interval = client.config().sync_interval;
    loop {
        if let Err(error) = client.refresh() {
            log::warn!(
                "sandbox-router-consumer: table sync failed, keeping the last good table: {error}"
            );
        }
        if stop.sleep(interval) {
            return;
        }
    }
}
