//! Runs the real `routeservice` binary on a free loopback port.

#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "dev-token";
pub const BIN: &str = env!("CARGO_BIN_EXE_routeservice");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// `routeservice serve --listen 127.0.0.1:<free> --data-dir <data_dir> <extra>`
    /// with `ROUTESERVICE_TOKEN=dev-token`; waits until `/readyz` answers 200.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let server = Server::spawn(data_dir, extra, Some(TOKEN));
        server.wait_ready();
        server
    }

    pub fn spawn(data_dir: &Path, extra: &[&str], token: Option<&str>) -> Server {
        let port = free_port();
        let log = data_dir.with_extension(format!("{port}.log"));
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env_remove("ROUTESERVICE_TOKEN")
            .env_remove("ROUTESERVICE_LISTEN")
            .env_remove("ROUTESERVICE_DATA_DIR")
            .env_remove("ROUTESERVICE_SEED")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        if let Some(token) = token {
            command.env("ROUTESERVICE_TOKEN", token);
        }
        Server {
            child: command.spawn().unwrap(),
            port,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn wait_ready(&self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = agent.get(format!("{}/readyz", self.url())).call() {
                if response.status() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server not ready in 30 s; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within 20 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_exit(Duration::from_secs(20))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "server did not exit in {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
