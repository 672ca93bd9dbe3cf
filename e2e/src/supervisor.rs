//! Keeps a [`RouteService`] running: whenever its process exits, starts it
//! again, with backoff, on the same data directory and port.
//!
//! The filter is built to outlive its RouteService (it fails open: the last
//! synced table keeps routing, keys it never saw go to baseline), so a mesh
//! that shows it must outlive it too: one dead child process must not take
//! Envoy and the upstreams down. A [`Supervisor`] owns the RouteService on a
//! thread of its own and polls it every [`POLL`]; once it has exited, it
//! waits the delay its [`Backoff`] gives (in the demo 0.5 s, doubling up to
//! 10 s while starts keep failing or do not stay up, back to 0.5 s once one
//! stayed up 10 s), so a RouteService that cannot start (port taken, a
//! broken data dir) is retried without spinning. What happens is reported as
//! [`Event`]s to a callback, on that thread.
//!
//! The data directory is the same, so everything the RouteService
//! acknowledged before it died is there again (it commits before it
//! answers); the seed is not applied again (see [`crate::routeservice`]).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::routeservice::RouteService;

/// How often the supervisor looks at the process: an exit is noticed
/// within this (a `try_wait`, so cheap).
pub const POLL: Duration = Duration::from_millis(100);

/// How long to wait before each start after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The first delay, and the delay again after a start that stayed up.
    pub initial: Duration,
    /// The delay doubles up to this.
    pub max: Duration,
    /// A start that stayed up this long was a good one: the next exit
    /// waits `initial` again.
    pub stable_after: Duration,
}

impl BackoffPolicy {
    /// The demo's: 0.5 s doubling to 10 s, reset after 10 s up. Short
    /// enough that a `kill -9` shows the outage and the recovery within a
    /// second; long enough that a RouteService that cannot start costs
    /// nothing.
    pub const DEMO: Self = Self {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(10),
        stable_after: Duration::from_secs(10),
    };
}

/// The delays of one supervised process, per [`BackoffPolicy`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    /// The first delay will be `policy.initial`.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            next: policy.initial,
        }
    }

    /// The delay before the next start, after a run that stayed up
    /// `stayed_up` (`None`: the start failed, it never became ready).
    pub fn delay_after(&mut self, stayed_up: Option<Duration>) -> Duration {
        if stayed_up.is_some_and(|up| up >= self.policy.stable_after) {
            self.next = self.policy.initial;
        }
        let delay = self.next.min(self.policy.max);
        self.next = delay.saturating_mul(2).min(self.policy.max);
        delay
    }
}

/// What the supervisor saw or did.
#[derive(Debug, Clone)]
pub enum Event {
    /// The process exited, by itself or killed; a start follows in
    /// `restart_in`.
    Exited {
        /// Its process id (`None` if there was no process to ask).
        pid: Option<u32>,
        /// How it ended (`None` if there was no process to ask).
        status: Option<ExitStatus>,
        /// How long it had been up since it was ready (zero if it never was).
        stayed_up: Duration,
        /// Its log.
        log: PathBuf,
        /// The delay before the next start.
        restart_in: Duration,
    },
    /// Start number `attempt` after the exit did not get it ready; another
    /// follows in `restart_in`.
    RestartFailed {
        /// 1 for the first start after the exit.
        attempt: u32,
        /// Why (with the end of its log, when it exited during startup).
        error: String,
        /// The delay before the next start.
        restart_in: Duration,
    },
    /// It is ready again.
    Restarted {
        /// The new process id.
        pid: u32,
        /// Which start after the exit it took (1: the first).
        attempt: u32,
        /// From when the exit was noticed until ready.
        down_for: Duration,
    },
}

/// Why a [`Supervisor`] could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thread could not be created (the RouteService it would have
    /// owned is dropped, so killed).
    #[error("cannot start the RouteService supervisor thread")]
    Thread(#[source] std::io::Error),
    /// The thread panicked (in the report callback); the RouteService it
    /// owned was dropped, so killed.
    #[error("the RouteService supervisor thread panicked")]
    Panicked,
}

/// A [`RouteService`] watched and restarted on a thread of its own until
/// [`Supervisor::stop`]. Dropping it also stops watching, and kills the
/// RouteService.
#[derive(Debug)]
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<RouteService>>,
}

impl Supervisor {
    /// Takes over `service` (running) and keeps it running; `report` is
    /// called on the supervisor thread with each [`Event`] and the service
    /// as it is then.
    pub fn start<F>(
        mut service: RouteService,
        policy: BackoffPolicy,
        report: F,
    ) -> Result<Self, Error>
    where
        F: FnMut(&Event, &RouteService) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        // A restart in progress must not hold up `stop` for the whole
        // startup timeout.
        service.abandon_starts_when(Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("supervisor:routeservice".to_owned())
            .spawn({
                let stop = Arc::clone(&stop);
                move || watch(service, policy, &stop, report)
            })
            .map_err(Error::Thread)?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops watching (a restart in progress is abandoned, a pending one
    /// not made) and hands the RouteService back as it is, running or not,
    /// so the caller stops it in its own order.
    pub fn stop(mut self) -> Result<RouteService, Error> {
        self.end().ok_or(Error::Panicked)
    }

    /// Ends the thread; its RouteService, unless it panicked.
    fn end(&mut self) -> Option<RouteService> {
        let thread = self.thread.take()?;
        self.stop.store(true, Ordering::SeqCst);
        thread.thread().unpark();
        thread.join().ok()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // The RouteService handed back is dropped here, which kills it.
        drop(self.end());
    }
}

/// The supervisor thread: returns the service once `stop` is set.
fn watch<F>(
    mut service: RouteService,
    policy: BackoffPolicy,
    stop: &AtomicBool,
    mut report: F,
) -> RouteService
where
    F: FnMut(&Event, &RouteService),
{
    let mut backoff = Backoff::new(policy);
    while !stop.load(Ordering::SeqCst) {
        let status = match service.exit_status() {
            Ok(None) => {
                pause(POLL, stop);
                continue;
            }
            Ok(Some(status)) => Some(status),
            // No process at all: nothing to report about it but its absence.
            Err(_) => None,
        };
        let down_since = Instant::now();
        let stayed_up = service
            .ready_since()
            .map(|ready| down_since.saturating_duration_since(ready));
        let mut restart_in = backoff.delay_after(stayed_up);
        report(
            &Event::Exited {
                pid: service.pid().ok(),
                status,
                stayed_up: stayed_up.unwrap_or_default(),
                log: service.log_path().to_owned(),
                restart_in,
            },
            &service,
        );
        let mut attempt = 0;
        loop {
            if !pause(restart_in, stop) {
                return service;
            }
            attempt += 1;
            match service.restart() {
                Ok(()) => {
                    let event = Event::Restarted {
                        pid: service.pid().unwrap_or(0),
                        attempt,
                        down_for: down_since.elapsed(),
                    };
                    report(&event, &service);
                    break;
                }
                // Abandoned because we are stopping: not a failure.
                Err(_) if stop.load(Ordering::SeqCst) => return service,
                Err(error) => {
                    // A start that is up but never got ready must not be
                    // taken for a running one, nor hold the port for the
                    // next attempt.
                    if service.is_running() {
                        let _ = service.kill();
                    }
                    restart_in = backoff.delay_after(None);
                    let event = Event::RestartFailed {
                        attempt,
                        error: format!("{error:#}"),
                        restart_in,
                    };
                    report(&event, &service);
                }
            }
        }
    }
    service
}

/// Sleeps `duration` unless `stop` is set first (the thread is unparked
/// then); whether it slept it all.
fn pause(duration: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::park_timeout(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_up_to_the_max_while_starts_fail_or_do_not_stay_up() {
        let mut backoff = Backoff::new(BackoffPolicy::DEMO);
        let delays: Vec<u64> = [
            Some(ms(100)),
            None,
            Some(ms(2000)),
            None,
            None,
            None,
            Some(ms(9999)),
        ]
        .into_iter()
        .map(|up| u64::try_from(backoff.delay_after(up).as_millis()).unwrap())
        .collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    }

    #[test]
    fn backoff_resets_after_a_start_that_stayed_up() {
        let mut backoff = Backoff::new(BackoffPolicy::DEMO);
        for _ in 0..5 {
            backoff.delay_after(None);
        }
        assert_eq!(backoff.delay_after(Some(ms(10_000))), ms(500));
        assert_eq!(backoff.delay_after(None), ms(1000));
    }

    #[test]
    fn backoff_never_exceeds_a_max_below_the_initial_delay() {
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: ms(500),
            max: ms(200),
            stable_after: ms(1000),
        });
        assert_eq!(backoff.delay_after(None), ms(200));
        assert_eq!(backoff.delay_after(None), ms(200));
    }

    #[test]
    fn pause_returns_early_once_stopped() {
        let stop = AtomicBool::new(true);
        let start = Instant::now();
        assert!(!pause(Duration::from_secs(10), &stop));
        assert!(start.elapsed() < Duration::from_secs(1));
        stop.store(false, Ordering::SeqCst);
        assert!(pause(ms(20), &stop));
    }
}
