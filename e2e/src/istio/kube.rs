//! A Kubernetes control plane with no nodes: etcd and kube-apiserver on
//! loopback, and kubectl to talk to it.
//!
//! No kubelet or scheduler: the mesh's workloads are host processes,
//! declared to Istio with WorkloadEntries. kube-controller-manager runs on
//! demand ([`KubeControlPlane::start_garbage_collector`]) with its garbage
//! collector only, so owner references do what they do in a cluster. The API server itself runs its own controllers (default
//! namespaces, ClusterIP allocation, the `kubernetes` Service) and serves
//! TokenRequest/TokenReview, which the mesh's identity needs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use serde_json::Value;

use super::pki::Pki;
use super::process::MeshProcess;
use super::tools::Tools;

/// The static admin token of the harness (group `system:masters`).
pub const ADMIN_TOKEN: &str = "sandbox-router-local-admin";
/// The Service ClusterIP range. Nothing listens on these addresses: Istio
/// only lists them as route domains.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The cluster's DNS domain, as Istio assumes.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Ports of the control plane, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct KubePorts {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
}

impl Default for KubePorts {
    fn default() -> Self {
        Self {
            etcd_client: 12379,
            etcd_peer: 12380,
            apiserver: 16443,
        }
    }
}

/// Running etcd + kube-apiserver.
#[derive(Debug)]
pub struct KubeControlPlane {
    // Field order is drop order: the controller manager, then the API
    // server, then its store.
    controller_manager: Option<MeshProcess>,
    apiserver: MeshProcess,
    etcd: MeshProcess,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    /// [`LOCK_FILE`], held while the control plane runs.
    _lock: std::fs::File,
}

/// The local control plane's ports are fixed: one run at a time per host.
/// Every run takes this lock before it starts etcd (and waits for it), so
/// two test binaries, a `make istio-up` and a `make e2e-istio`, or two
/// checkouts never fight over a port.
pub const LOCK_FILE: &str = "/tmp/sandbox-router-local-mesh.lock";

fn take_lock() -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("opening {LOCK_FILE}"))?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "local mesh: another local mesh runs on this host; waiting for it ({LOCK_FILE})"
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {LOCK_FILE}"));
        }
    }
    file.lock()
        .with_context(|| format!("locking {LOCK_FILE}"))?;
    Ok(file)
}

impl KubeControlPlane {
    /// Starts etcd and the API server in `dir` and waits until the API
    /// server is ready (`/readyz`) and has its default namespaces.
    pub fn start(tools: &Tools, pki: &Pki, ports: KubePorts, dir: &Path) -> Result<Self> {
        let lock = take_lock()?;
        let etcd = start_etcd(tools, ports, dir)?;
        let peer_url = format!("http://127.0.0.1:{}", ports.etcd_client);
        etcd.wait_until("etcd serving", Duration::from_secs(60), || {
            Ok(crate::client::Request::get("/health")
                .header("host", "127.0.0.1")
                .send(([127, 0, 0, 1], ports.etcd_client).into())
                .is_ok_and(|response| response.status == 200))
        })?;

        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{ADMIN_TOKEN},sandbox-router-admin,sandbox-router-admin,\"system:masters\"\n"),
        )?;
        let cert_dir = dir.join("apiserver-certs");
        std::fs::create_dir_all(&cert_dir)?;
        let mut command = Command::new(&tools.kube_apiserver);
        command
            .arg(format!("--etcd-servers={peer_url}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={}", ports.apiserver))
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .arg(format!("--tls-cert-file={}", pki.apiserver_cert.display()))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.apiserver_key.display()
            ))
            .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ))
            .arg("--api-audiences=https://kubernetes.default.svc.cluster.local,istio-ca")
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            // One client (the harness) and two controllers (istiod, the
            // RouteService): API priority and fairness only adds startup work.
            .arg("--enable-priority-and-fairness=false")
            .arg("--profiling=false")
            .arg("--v=1");
        let apiserver =
            MeshProcess::spawn("kube-apiserver", command, &dir.join("kube-apiserver.log"))?;

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(pki, ports.apiserver)?)?;
        let plane = Self {
            controller_manager: None,
            apiserver,
            etcd,
            kubeconfig,
            kubectl: tools.kubectl.clone(),
            _lock: lock,
        };
        plane
            .apiserver
            .wait_until("API server ready", Duration::from_secs(120), || {
                Ok(plane.kubectl().args(["get", "--raw", "/readyz"]).ok())
            })?;
        plane
            .apiserver
            .wait_until("namespace default created", Duration::from_secs(60), || {
                Ok(plane.kubectl().args(["get", "namespace", "default"]).ok())
            })?;
        Ok(plane)
    }

    /// Starts kube-controller-manager with only its garbage collector:
    /// objects whose owner (by uid) is gone are deleted, as in a cluster.
    pub fn start_garbage_collector(&mut self, tools: &Tools, dir: &Path) -> Result<()> {
        let mut command = Command::new(&tools.kube_controller_manager);
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg("--controllers=garbagecollector")
            .arg("--leader-elect=false")
            // Its own serving port is of no use here: 0 turns it off.
            .arg("--secure-port=0")
            .arg("--v=1");
        let process = MeshProcess::spawn(
            "kube-controller-manager",
            command,
            &dir.join("kube-controller-manager.log"),
        )?;
        self.controller_manager = Some(process);
        Ok(())
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubectl invocation against this API server.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubectl, &self.kubeconfig)
    }

    /// Fails if etcd or the API server has exited.
    pub fn check_running(&self) -> Result<()> {
        self.etcd.check_running()?;
        if let Some(process) = &self.controller_manager {
            process.check_running()?;
        }
        self.apiserver.check_running()
    }
}

fn start_etcd(tools: &Tools, ports: KubePorts, dir: &Path) -> Result<MeshProcess> {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    let mut command = Command::new(&tools.etcd);
    command
        .args(["--name", "local"])
        .arg("--data-dir")
        .arg(dir.join("etcd-data"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("local={peer}")])
        // A throw-away store per run: durability buys nothing, fsync costs
        // seconds of API latency on a busy CI disk.
        .arg("--unsafe-no-fsync")
        .args(["--log-level", "warn"]);
    MeshProcess::spawn("etcd", command, &dir.join("etcd.log"))
}

/// The admin kubeconfig: the CA inline, the static token.
fn kubeconfig_yaml(pki: &Pki, port: u16) -> Result<String> {
    let ca = std::fs::read(&pki.ca_cert)?;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    Ok(format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {ADMIN_TOKEN}
contexts:
- name: local
  context:
    cluster: local
    user: admin
current-context: local
"
    ))
}

/// One kubectl command line.
#[derive(Debug)]
pub struct Kubectl {
    command: Command,
    stdin: Option<String>,
    display: String,
}

impl Kubectl {
    fn new(binary: &Path, kubeconfig: &Path) -> Self {
        let mut command = Command::new(binary);
        command.arg("--kubeconfig").arg(kubeconfig);
        Self {
            command,
            stdin: None,
            display: "kubectl".to_owned(),
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        for arg in args {
            self.display.push(' ');
            self.display.push_str(&arg.as_ref().to_string_lossy());
            self.command.arg(arg);
        }
        self
    }

    /// Adds a path argument.
    pub fn arg_path(self, path: &Path) -> Self {
        self.args([path.as_os_str()])
    }

    /// Feeds `text` on stdin (for `apply -f -`).
    pub fn stdin(mut self, text: impl Into<String>) -> Self {
        self.stdin = Some(text.into());
        self
    }

    /// Runs it; stdout on success, an error with stderr otherwise.
    pub fn run(mut self) -> Result<String> {
        use std::io::Write as _;
        self.command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .command
            .spawn()
            .with_context(|| format!("running {}", self.display))?;
        if let (Some(text), Some(mut pipe)) = (self.stdin.take(), child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "{} failed ({}): {}",
                self.display,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs it and reports only whether it succeeded.
    pub fn ok(self) -> bool {
        self.run().is_ok()
    }

    /// Runs it with `-o json` and parses the output.
    pub fn json(self) -> Result<Value> {
        let text = self.args(["-o", "json"]).run()?;
        serde_json::from_str(&text).context("kubectl printed no JSON")
    }
}
