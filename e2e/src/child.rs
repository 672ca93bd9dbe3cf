//! A child process that cannot outlive the process that started it.
//!
//! Two safety nets, because an orphaned Envoy keeps its ports and breaks the
//! next run:
//! - [`GuardedChild`] kills and reaps the child when dropped;
//! - on Linux the child asks the kernel (`PR_SET_PDEATHSIG`) for `SIGKILL`
//!   when its parent goes away, which covers a parent killed by a signal or a
//!   value that is never dropped (a `static` shared by a test binary).
//!
//! The kernel sends that signal when the *thread* that forked the child exits,
//! not the process. Test harnesses run each test on its own short-lived
//! thread, so the child is forked from a keeper thread that lives exactly as
//! long as the [`GuardedChild`].

use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

/// A running child process, killed when this value is dropped.
#[derive(Debug)]
pub struct GuardedChild {
    child: Mutex<Child>,
    pid: u32,
    /// Dropping the sender lets the keeper thread (the child's kernel parent) end.
    release_keeper: Option<mpsc::Sender<()>>,
    keeper: Option<JoinHandle<()>>,
}

impl GuardedChild {
    /// Spawns `command` from a keeper thread, with the parent-death signal set.
    pub fn spawn(command: Command) -> Result<Self> {
        let program = command.get_program().to_string_lossy().into_owned();
        let (child_tx, child_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let keeper = std::thread::Builder::new()
            .name(format!("keeper:{program}"))
            .spawn(move || {
                let mut command = command;
                die_with_parent(&mut command);
                let spawned = command.spawn();
                let ok = spawned.is_ok();
                // The receiver only goes away if `spawn` below already returned.
                let _ = child_tx.send(spawned);
                if ok {
                    // Blocks until the GuardedChild is dropped (sender dropped).
                    let _ = release_rx.recv();
                }
            })
            .context("starting the keeper thread")?;
        let child = child_rx
            .recv()
            .map_err(|_| anyhow!("keeper thread for {program} ended before spawning it"))?
            .with_context(|| format!("spawning {program}"))?;
        Ok(Self {
            pid: child.id(),
            child: Mutex::new(child),
            release_keeper: Some(release_tx),
            keeper: Some(keeper),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the child has already exited, without waiting.
    pub fn exit_status(&self) -> Result<Option<ExitStatus>> {
        let mut child = self
            .child
            .lock()
            .map_err(|_| anyhow!("child mutex poisoned"))?;
        child.try_wait().context("polling the child process")
    }

    /// Kills the child (if still running) and reaps it.
    pub fn kill(&self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .lock()
            .map_err(|_| anyhow!("child mutex poisoned"))?;
        if child.try_wait()?.is_none() {
            // An error here means it exited in between: `wait` still reaps it.
            let _ = child.kill();
        }
        child.wait().context("reaping the child process")
    }
}

impl GuardedChild {
    /// Asks the child to stop (`SIGTERM`), waits up to `grace` for it to
    /// exit, then kills it (`SIGKILL`); reaps it either way.
    pub fn terminate(&self, grace: Duration) -> Result<ExitStatus> {
        {
            let mut child = self
                .child
                .lock()
                .map_err(|_| anyhow!("child mutex poisoned"))?;
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            send_sigterm(self.pid);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    return Ok(status);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill()
    }
}

/// `kill(pid, SIGTERM)`; a child that already exited is not an error.
fn send_sigterm(pid: u32) {
    let _ = send_signal(pid, libc::SIGTERM);
}

/// `kill(pid, signal)`, for a process this harness did not spawn itself
/// (a test killing the demo's RouteService as `kill -9` would). An error if
/// there is no such process or it may not be signalled.
pub fn send_signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    // Only one process: 0 and negative pids would signal whole process groups.
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // Sending a signal has no memory-safety preconditions; `unsafe` only
    // because it is a C call (the workspace denies `unsafe_code`).
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, signal) };
    if sent == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `kill(-pgid, signal)`: signals every process of the process group that
/// `pgid` leads (a child spawned with `process_group(0)` and what it
/// started). An error if there is no such group.
pub fn signal_group(pgid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|pgid| *pgid > 1)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // As in `send_signal`: a C call without memory-safety preconditions.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(-pgid, signal) };
    if sent == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Drop for GuardedChild {
    fn drop(&mut self) {
        let _ = self.kill();
        drop(self.release_keeper.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// Makes the kernel kill the child when its parent thread ends (Linux only).
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // `pre_exec` is unsafe because the closure runs between fork and exec,
    // where only async-signal-safe calls are allowed; prctl, getppid and
    // _exit are. There is no safe std API for PR_SET_PDEATHSIG, hence the
    // local allow of the workspace's `unsafe_code = "deny"`.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
