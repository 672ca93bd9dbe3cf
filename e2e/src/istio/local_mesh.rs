//! The local Istio mesh of INTERFACES section 9, as one value: a Kubernetes
//! API server, istiod, a registry holding the plugin's image, the demo's
//! workloads as host processes, two caller sidecars (header mode and
//! authority mode) and an ingress gateway, with the project's manifests
//! applied.
//!
//! What the harness does that a cluster would do for itself: it runs the
//! Deployments' workloads as host processes on their own loopback addresses
//! and declares each with a WorkloadEntry carrying the Deployment's pod
//! labels, which the Service selects (there is no kubelet or
//! controller-manager, and Kubernetes refuses loopback addresses in
//! EndpointSlices); it creates the
//! ServiceAccount tokens a pod would get projected. Everything else is the
//! upstream program doing its job.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::agent::{Proxy, ProxyKind, ProxySpec};
use super::istiod::{Istiod, IstiodPorts, ISTIO_NAMESPACE};
use super::kube::{KubeControlPlane, KubePorts};
use super::pki::Pki;
use super::process::{self, MeshProcess};
use super::registry::{PushedImage, Registry};
use super::tools::Tools;
use crate::app::ForwardingApp;
use crate::routeservice::{self, RouteService};
use crate::upstream::{Identity, Upstream};

/// The demo's namespace.
pub const NAMESPACE: &str = "demo";
/// The RouteService's namespace.
pub const ROUTESERVICE_NAMESPACE: &str = "sandbox-system";
/// Every demo service listens on this port, as in `istio-config/sample/`.
pub const SERVICE_PORT: u16 = 8080;
/// The environment variable the gateway's signed-keys Component reads its
/// secret from (`wasmplugin/signed-keys`).
pub const SIGNING_KEY_ENV: &str = "SANDBOX_ROUTER_SIGNING_KEY";
/// The local mesh's signing secret (the env file's
/// `SANDBOX_ROUTER_SIGNING_KEY`, for `routeservice sign`).
pub const LOCAL_SIGNING_KEY: &str = "local-mesh-signing-key-0123456789abcdef";

/// The gateway's HTTP port (the sample Gateway's server port).
pub const GATEWAY_PORT: u16 = 80;
/// The header-mode caller: labelled for `wasmplugin/wasmplugin.yaml`.
pub const CALLER: &str = "frontend";
/// The authority-mode caller: its own WasmPlugin (an overlay of the same
/// base with `mode: authority`) and a Sidecar binding its listeners on
/// [`AUTHORITY_CALLER_IP`].
pub const AUTHORITY_CALLER: &str = "frontend-authority";
/// Where the header-mode caller's outbound listeners bind (Istio's default
/// with no interception).
pub const CALLER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// Where the authority-mode caller's outbound listeners bind.
pub const AUTHORITY_CALLER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// A workload whose app drops `baggage` (it forwards only `traceparent` on
/// its call to `catalog`), with the plugin on both sides of its sidecar and
/// `recovery` on: its own WasmPlugin (an overlay of the same base, `match:
/// CLIENT_AND_SERVER`) and a Sidecar with an `ingress` listener.
pub const RELAY: &str = "relay";
/// Where the relay's outbound listeners bind.
pub const RELAY_OUTBOUND_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Where the relay's inbound listener binds (Sidecar `ingress[].bind`).
pub const RELAY_INBOUND_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
/// Where the relay's app listens (Sidecar `ingress[].defaultEndpoint`).
pub const RELAY_APP_PORT: u16 = 18080;
/// The registry.
pub const REGISTRY_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 5000);
/// The RouteService's token in the local mesh.
pub const ROUTESERVICE_TOKEN: &str = "local-mesh-token";

/// A demo workload: a Kubernetes Service whose one endpoint is a host
/// process on its own loopback address.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The Service name (`catalog`, `catalog-pr-42`, `routeservice`).
    pub service: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    /// The labels its Service selects (the Deployment's pod labels).
    pub labels: Vec<(String, String)>,
}

impl Workload {
    /// `<service>.<namespace>.svc.cluster.local`.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.service, self.namespace)
    }

    /// Where its process listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), SERVICE_PORT)
    }
}

/// The demo's upstream workloads (`istio-config/sample/`): service, variant.
pub const DEMO_WORKLOADS: [(&str, &str, &str, [u8; 4]); 4] = [
    ("catalog", "catalog", "baseline", [127, 0, 1, 1]),
    ("catalog-pr-42", "catalog", "pr-42", [127, 0, 1, 2]),
    ("reviews", "reviews", "baseline", [127, 0, 1, 3]),
    ("reviews-pr-42", "reviews", "pr-42", [127, 0, 1, 4]),
];
/// The RouteService's address (`istio-config/base/`).
pub const ROUTESERVICE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 10);

/// Where the RouteService keeps sandboxes in the local mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshStore {
    /// One replica with a redb file, seeded with the demo's sandbox (the
    /// default: `istio-config/overlays/demo`).
    Redb,
    /// `--store kubernetes` (`istio-config/overlays/kubernetes`): this many
    /// replicas on 127.0.1.10, .11, ..., each behind the `routeservice`
    /// Service, with the RouteService's own ServiceAccount and RBAC, writing
    /// HTTPRoutes; and the API server's garbage collector running. No seed:
    /// sandboxes are Sandbox objects.
    Kubernetes { replicas: u8 },
}

/// Where to put the run and what to deliver.
#[derive(Debug, Clone)]
pub struct LocalMeshOptions {
    /// The run directory (logs, certificates, stores, proxies' files).
    pub dir: PathBuf,
    /// `make oci`'s oci-archive.
    pub oci_archive: PathBuf,
    /// The tag to push it as.
    pub oci_tag: String,
    pub store: MeshStore,
}

impl LocalMeshOptions {
    /// `target/istio-local` and `make oci`'s output.
    pub fn in_dir(dir: PathBuf) -> Self {
        let target = crate::target_dir();
        Self {
            dir,
            oci_archive: target.join("oci/sandbox-router.tar"),
            oci_tag: "0.1.0".to_owned(),
            store: MeshStore::Redb,
        }
    }
}

/// The running local mesh. Dropping it stops the proxies, the workloads,
/// istiod, the registry and the API server, in that order.
#[derive(Debug)]
pub struct LocalMesh {
    // Field order is drop order.
    relay: Proxy,
    _relay_app: ForwardingApp,
    gateway: Proxy,
    authority_caller: Proxy,
    caller: Proxy,
    routeservice: RouteService,
    /// With [`MeshStore::Kubernetes`], the replicas after the first.
    more_routeservices: Vec<RouteService>,
    upstreams: Vec<Upstream>,
    istiod: Istiod,
    registry: Registry,
    kube: KubeControlPlane,
    image: PushedImage,
    tools: Tools,
    dir: PathBuf,
    /// How long each step of the start took, for the note and the output.
    pub timings: Vec<(String, Duration)>,
}

impl LocalMesh {
    /// Starts everything and waits until the sidecars and the gateway have
    /// their listeners and the plugin is loaded in each.
    pub fn start(options: &LocalMeshOptions) -> Result<Self> {
        let tools = Tools::find()?;
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir)?;
        let mut timings = Vec::new();
        let mut step = Instant::now();
        let mut lap = |name: &str, timings: &mut Vec<(String, Duration)>| {
            timings.push((name.to_owned(), step.elapsed()));
            step = Instant::now();
        };

        let stale = process::reap_stale_envoys(&crate::target_dir());
        if stale > 0 {
            eprintln!("local mesh: killed {stale} Envoy(s) left behind by an earlier run");
        }
        let pki = Pki::generate(&dir)?;
        let mut kube = KubeControlPlane::start(&tools, &pki, KubePorts::default(), &dir)?;
        lap("etcd + kube-apiserver", &mut timings);
        apply_crds(&kube)?;
        lap("CRDs established", &mut timings);

        let registry = Registry::start(&tools, REGISTRY_ADDR.into(), &dir)?;
        let image = registry.push(&tools, &options.oci_archive, &options.oci_tag, &dir)?;
        lap("registry + image pushed", &mut timings);

        // Istio's namespace, as its Helm chart or istioctl creates it.
        kube.kubectl()
            .args(["apply", "-f", "-"])
            .stdin(format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ISTIO_NAMESPACE}\n"
            ))
            .run()?;
        // The project's manifests, as a user applies them: the RouteService
        // base and the demo sample (istio-config/overlays/demo).
        kube.kubectl()
            .args(["apply", "-k"])
            .arg_path(&crate::repo_root().join("istio-config/overlays/demo"))
            .run()?;
        let istiod = Istiod::start(&tools, &kube, IstiodPorts::default(), &dir)?;
        lap("istiod ready", &mut timings);

        let upstreams = DEMO_WORKLOADS
            .iter()
            .map(|(_, service, variant, ip)| {
                Upstream::start_at(
                    Identity {
                        service: (*service).to_owned(),
                        variant: (*variant).to_owned(),
                    },
                    SocketAddr::from((*ip, SERVICE_PORT)),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let (routeservice, more_routeservices) = match options.store {
            MeshStore::Redb => (
                RouteService::start(routeservice::Options {
                    data_dir: dir.join("routeservice-data"),
                    log_dir: dir.clone(),
                    ip: IpAddr::V4(ROUTESERVICE_IP),
                    port: SERVICE_PORT,
                    seed: Some(crate::repo_root().join("istio-config/overlays/demo/seed.json")),
                    token: ROUTESERVICE_TOKEN.to_owned(),
                    kubeconfig: None,
                    args: Vec::new(),
                })?,
                Vec::new(),
            ),
            MeshStore::Kubernetes { replicas } => {
                kube.start_garbage_collector(&tools, &dir)?;
                start_kube_routeservices(&kube, &dir, replicas)?
            }
        };
        for workload in workloads() {
            write_workload_entry(&kube, &workload, &format!("{}-local", workload.service))?;
        }
        for (i, replica) in more_routeservices.iter().enumerate() {
            let mut workload = routeservice_workload();
            if let IpAddr::V4(ip) = replica.addr().ip() {
                workload.ip = ip;
            }
            write_workload_entry(&kube, &workload, &format!("routeservice-local-{}", i + 2))?;
        }
        lap("workloads + WorkloadEntries", &mut timings);

        apply_local_objects(&kube, &dir, &image)?;
        let insecure = registry.host();
        let caller = Proxy::start(
            &tools,
            &kube,
            &istiod,
            caller_spec(CALLER, &[("sandbox-router/enabled", "true")], 0, &insecure),
            &dir,
        )?;
        let authority_caller = Proxy::start(
            &tools,
            &kube,
            &istiod,
            caller_spec(
                AUTHORITY_CALLER,
                &[("sandbox-router/authority", "true")],
                100,
                &insecure,
            ),
            &dir,
        )?;
        let gateway = Proxy::start(&tools, &kube, &istiod, gateway_spec(&insecure), &dir)?;
        let relay_app = ForwardingApp::start_at(
            SocketAddr::from(([127, 0, 0, 1], RELAY_APP_PORT)),
            "catalog.demo.svc.cluster.local:8080",
            &["traceparent"],
            "x-sandbox-route",
        )?;
        relay_app.set_onward(SocketAddr::new(IpAddr::V4(RELAY_OUTBOUND_IP), SERVICE_PORT));
        let relay = Proxy::start(
            &tools,
            &kube,
            &istiod,
            caller_spec(
                RELAY,
                &[("sandbox-router/recovery", "true")],
                300,
                &insecure,
            ),
            &dir,
        )?;
        let mut mesh = Self {
            relay,
            _relay_app: relay_app,
            gateway,
            authority_caller,
            caller,
            routeservice,
            more_routeservices,
            upstreams,
            istiod,
            registry,
            kube,
            image,
            tools,
            dir,
            timings,
        };
        mesh.wait_until_serving()?;
        mesh.timings.push((
            "proxies configured, plugin loaded".to_owned(),
            step.elapsed(),
        ));
        Ok(mesh)
    }

    /// Waits until each proxy has the listener it serves on and a loaded
    /// plugin (its `config_valid` gauge... or its first counter defined).
    fn wait_until_serving(&self) -> Result<()> {
        let timeout = Duration::from_secs(120);
        let listener = format!("{}_{SERVICE_PORT}", CALLER_IP);
        self.caller.wait_for_listener(&listener, timeout)?;
        let listener = format!("{}_{SERVICE_PORT}", AUTHORITY_CALLER_IP);
        self.authority_caller
            .wait_for_listener(&listener, timeout)?;
        self.gateway
            .wait_for_listener(&format!("0.0.0.0_{GATEWAY_PORT}"), timeout)?;
        self.relay
            .wait_for_listener(&format!("{RELAY_OUTBOUND_IP}_{SERVICE_PORT}"), timeout)?;
        self.relay
            .wait_for_listener(&self.relay_inbound_listener(), timeout)?;
        for proxy in [
            &self.caller,
            &self.authority_caller,
            &self.gateway,
            &self.relay,
        ] {
            proxy.process().wait_until(
                "the plugin's metrics defined (module pulled and started)",
                timeout,
                || {
                    Ok(proxy
                        .stats()?
                        .keys()
                        .any(|name| name.starts_with("wasmcustom.sandbox_router")))
                },
            )?;
        }
        Ok(())
    }

    /// Where the header-mode caller's sidecar takes requests for port 8080.
    pub fn sidecar_http(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(CALLER_IP), SERVICE_PORT)
    }

    /// Where the authority-mode caller's sidecar takes requests for port 8080.
    pub fn authority_sidecar_http(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(AUTHORITY_CALLER_IP), SERVICE_PORT)
    }

    /// The gateway's HTTP listener.
    pub fn gateway_http(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], GATEWAY_PORT))
    }

    /// The header-mode caller's sidecar.
    pub fn caller(&self) -> &Proxy {
        &self.caller
    }

    /// The authority-mode caller's sidecar.
    pub fn authority_caller(&self) -> &Proxy {
        &self.authority_caller
    }

    /// The relay's sidecar (`recovery` on, the plugin on both listeners).
    pub fn relay(&self) -> &Proxy {
        &self.relay
    }

    /// Where the relay's sidecar takes requests for its app (its inbound
    /// listener).
    pub fn relay_inbound_http(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(RELAY_INBOUND_IP), SERVICE_PORT)
    }

    /// The name istiod gives the relay's inbound listener.
    pub fn relay_inbound_listener(&self) -> String {
        format!("{RELAY_INBOUND_IP}_{SERVICE_PORT}")
    }

    /// The ingress gateway.
    pub fn gateway(&self) -> &Proxy {
        &self.gateway
    }

    /// The RouteService (host process; its API at [`RouteService::url`]).
    pub fn routeservice(&self) -> &RouteService {
        &self.routeservice
    }

    /// The RouteService, to kill and restart it.
    pub fn routeservice_mut(&mut self) -> &mut RouteService {
        &mut self.routeservice
    }

    /// Every RouteService replica (one but with [`MeshStore::Kubernetes`]).
    pub fn routeservices(&self) -> impl Iterator<Item = &RouteService> {
        std::iter::once(&self.routeservice).chain(self.more_routeservices.iter())
    }

    /// Replica `i` (0 is [`Self::routeservice`]), to kill and restart it.
    pub fn routeservice_replica_mut(&mut self, i: usize) -> Option<&mut RouteService> {
        std::iter::once(&mut self.routeservice)
            .chain(self.more_routeservices.iter_mut())
            .nth(i)
    }

    /// istiod.
    pub fn istiod(&self) -> &Istiod {
        &self.istiod
    }

    /// The API server and kubectl.
    pub fn kube(&self) -> &KubeControlPlane {
        &self.kube
    }

    /// The plugin's image as pushed.
    pub fn image(&self) -> &PushedImage {
        &self.image
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The upstreams (demo workloads).
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tools it runs.
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// The `KEY=value` lines of `target/istio-local/env`.
    pub fn env_file(&self) -> String {
        let mut text = String::new();
        let mut line = |key: &str, value: &str| {
            let _ = writeln!(text, "{key}={value}");
        };
        line("KUBECONFIG", &self.kube.kubeconfig().display().to_string());
        line("SIDECAR_HTTP", &self.sidecar_http().to_string());
        line(
            "SIDECAR_AUTHORITY_HTTP",
            &self.authority_sidecar_http().to_string(),
        );
        line("GATEWAY_HTTP", &self.gateway_http().to_string());
        line("RELAY_HTTP", &self.relay_inbound_http().to_string());
        line("ROUTESERVICE_URL", &self.routeservice.url());
        line("ROUTESERVICE_TOKEN", ROUTESERVICE_TOKEN);
        line("REGISTRY", &self.registry.host());
        line("NAMESPACE", NAMESPACE);
        line(
            "PLUGIN_IMAGE",
            &format!("{}@{}", self.image.tagged, self.image.digest),
        );
        line("SIDECAR_ADMIN", &self.caller.admin_addr().to_string());
        line(
            "SIDECAR_AUTHORITY_ADMIN",
            &self.authority_caller.admin_addr().to_string(),
        );
        line("GATEWAY_ADMIN", &self.gateway.admin_addr().to_string());
        line(SIGNING_KEY_ENV, LOCAL_SIGNING_KEY);
        line(
            "ISTIOD_DEBUG",
            &format!("http://127.0.0.1:{}", self.istiod.ports().http),
        );
        text
    }

    /// Fails with the dead process's log if any part of the mesh exited.
    pub fn check_running(&self) -> Result<()> {
        self.kube.check_running()?;
        for process in self.processes() {
            process.check_running()?;
        }
        for routeservice in self.routeservices() {
            if !routeservice.is_running() {
                bail!(
                    "a RouteService exited; log {}:\n{}",
                    routeservice.log_path().display(),
                    routeservice.log_tail(30)
                );
            }
        }
        Ok(())
    }

    fn processes(&self) -> [&MeshProcess; 6] {
        [
            self.istiod.process(),
            self.registry.process(),
            self.caller.process(),
            self.authority_caller.process(),
            self.gateway.process(),
            self.relay.process(),
        ]
    }
}

/// Every workload the harness runs and declares.
pub fn workloads() -> Vec<Workload> {
    DEMO_WORKLOADS
        .iter()
        .map(|(service, app, variant, ip)| Workload {
            service: (*service).to_owned(),
            namespace: NAMESPACE.to_owned(),
            ip: Ipv4Addr::from(*ip),
            labels: vec![
                ("app".to_owned(), (*app).to_owned()),
                ("version".to_owned(), (*variant).to_owned()),
            ],
        })
        .chain(std::iter::once(routeservice_workload()))
        .collect()
}

/// The RouteService's workload (its first replica).
fn routeservice_workload() -> Workload {
    Workload {
        service: "routeservice".to_owned(),
        namespace: ROUTESERVICE_NAMESPACE.to_owned(),
        ip: ROUTESERVICE_IP,
        labels: vec![(
            "app.kubernetes.io/name".to_owned(),
            "routeservice".to_owned(),
        )],
    }
}

/// A kubeconfig like the admin's, with `token` as its user.
pub fn kubeconfig_with_token(admin: &Path, token: &str, to: &Path) -> Result<()> {
    let text = std::fs::read_to_string(admin)?;
    std::fs::write(to, text.replace(super::kube::ADMIN_TOKEN, token))?;
    Ok(())
}

/// A token of ServiceAccount `sandbox-system/<account>`, as a pod gets one.
pub fn service_account_token(kube: &KubeControlPlane, account: &str) -> Result<String> {
    Ok(kube
        .kubectl()
        .args(["-n", ROUTESERVICE_NAMESPACE, "create", "token", account])
        .args(["--duration=2h"])
        .run()?
        .trim()
        .to_owned())
}

/// `routeservice serve --store kubernetes` replicas as the
/// `istio-config/overlays/kubernetes` Deployment runs them: the shipped
/// RBAC, the `routeservice` ServiceAccount's token, one loopback address
/// each. Their writes through the API send the `sandbox-tooling` token.
fn start_kube_routeservices(
    kube: &KubeControlPlane,
    dir: &Path,
    replicas: u8,
) -> Result<(RouteService, Vec<RouteService>)> {
    kube.kubectl()
        .args(["apply", "-f"])
        .arg_path(&crate::repo_root().join("istio-config/overlays/kubernetes/rbac.yaml"))
        .run()?;
    let kubeconfig = dir.join("routeservice.kubeconfig");
    kubeconfig_with_token(
        kube.kubeconfig(),
        &service_account_token(kube, "routeservice")?,
        &kubeconfig,
    )?;
    let writer = service_account_token(kube, "sandbox-tooling")?;
    let mut started = Vec::new();
    for i in 0..replicas.max(1) {
        let [a, b, c, d] = ROUTESERVICE_IP.octets();
        let ip = Ipv4Addr::new(a, b, c, d.saturating_add(i));
        started.push(RouteService::start(routeservice::Options {
            data_dir: dir.join(format!("routeservice-{i}")),
            log_dir: dir.join(format!("routeservice-{i}")),
            ip: IpAddr::V4(ip),
            port: SERVICE_PORT,
            seed: None,
            token: writer.clone(),
            kubeconfig: Some(kubeconfig.clone()),
            args: Vec::new(),
        })?);
    }
    let mut started = started.into_iter();
    let first = started.next().context("at least one replica")?;
    Ok((first, started.collect()))
}

/// Istio's CRDs from the pinned module and the Gateway API's, server-side
/// applied (some are larger than client-side apply's annotation allows),
/// then waited for until established.
fn apply_crds(kube: &KubeControlPlane) -> Result<()> {
    let crds = super::tools::crd_dir()?;
    for file in ["istio-crds.yaml", "gateway-api-crds.yaml"] {
        kube.kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg_path(&crds.join(file))
            .run()?;
    }
    kube.kubectl()
        .args(["wait", "--for", "condition=Established", "--timeout=120s"])
        .args(["crd", "--all"])
        .run()?;
    Ok(())
}

/// The WorkloadEntry that puts the workload's host process behind its
/// Service: Istio selects WorkloadEntries with a Kubernetes Service's
/// selector, as it selects Pods (how VMs join a mesh). An EndpointSlice
/// cannot do it: Kubernetes refuses loopback endpoint addresses.
pub fn write_workload_entry(
    kube: &KubeControlPlane,
    workload: &Workload,
    name: &str,
) -> Result<()> {
    let labels: String = workload
        .labels
        .iter()
        .map(|(key, value)| format!("    {key}: \"{value}\"\n"))
        .collect();
    let manifest = format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: {namespace}
spec:
  address: {ip}
  labels:
{labels}  ports:
    http: {SERVICE_PORT}
",
        namespace = workload.namespace,
        ip = workload.ip,
    );
    kube.kubectl()
        .args(["apply", "-f", "-"])
        .stdin(manifest)
        .run()
        .map(drop)
}

/// The plugin (sidecar and gateway WasmPlugins, pinned to the pushed image)
/// and what the local callers add: each is what a user writes in an
/// overlay of the repo's manifests.
fn apply_local_objects(kube: &KubeControlPlane, dir: &Path, image: &PushedImage) -> Result<()> {
    let url = image.pinned_url();
    let overlays = dir.join("overlays");
    let repo = crate::repo_root();
    let header = overlays.join("wasmplugin-header");
    write_kustomization(
        &header,
        &repo.join("wasmplugin"),
        &format!(
            "patches:
  - target: {{kind: WasmPlugin, name: sandbox-router}}
    patch: |-
      - op: replace
        path: /spec/url
        value: {url}
"
        ),
    )?;
    let authority = overlays.join("wasmplugin-authority");
    write_kustomization(
        &authority,
        &repo.join("wasmplugin"),
        &format!(
            "nameSuffix: -authority
patches:
  - target: {{kind: WasmPlugin, name: sandbox-router}}
    patch: |-
      - op: replace
        path: /spec/url
        value: {url}
      - op: replace
        path: /spec/selector/matchLabels
        value: {{sandbox-router/authority: \"true\"}}
      - op: replace
        path: /spec/pluginConfig/mode
        value: authority
"
        ),
    )?;
    let gateway = overlays.join("wasmplugin-gateway");
    write_kustomization(
        &gateway,
        &repo.join("wasmplugin/wasmplugin-gateway.yaml"),
        &format!(
            "components:
  - {signed_keys}
patches:
  - target: {{kind: WasmPlugin, name: sandbox-router-gateway}}
    patch: |-
      - op: replace
        path: /spec/url
        value: {url}
",
            signed_keys = relative_to(&repo.join("wasmplugin/signed-keys"), &gateway),
        ),
    )?;
    let recovery = overlays.join("wasmplugin-recovery");
    write_kustomization(
        &recovery,
        &repo.join("wasmplugin"),
        &format!(
            "nameSuffix: -recovery
patches:
  - target: {{kind: WasmPlugin, name: sandbox-router}}
    patch: |-
      - op: replace
        path: /spec/url
        value: {url}
      - op: replace
        path: /spec/selector/matchLabels
        value: {{sandbox-router/recovery: \"true\"}}
      - op: replace
        path: /spec/match
        value: [{{mode: CLIENT_AND_SERVER}}]
      - op: add
        path: /spec/pluginConfig/recovery
        value: {{enabled: true}}
"
        ),
    )?;
    for overlay in [&header, &authority, &gateway, &recovery] {
        kube.kubectl()
            .args(["apply", "-k"])
            .arg_path(overlay)
            .run()?;
    }
    // The authority-mode caller binds its outbound listeners on its own
    // loopback address (no interception: two callers on one host).
    kube.kubectl()
        .args(["apply", "-f", "-"])
        .stdin(format!(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: {AUTHORITY_CALLER}
  namespace: {NAMESPACE}
spec:
  workloadSelector:
    labels:
      app: {AUTHORITY_CALLER}
  egress:
    - bind: {AUTHORITY_CALLER_IP}
      hosts: [\"./*\", \"istio-system/*\", \"sandbox-system/*\"]
"
        ))
        .run()?;
    // The relay: outbound listeners on its own address, and an inbound
    // listener (no interception: a Sidecar `ingress` makes one) in front of
    // its app.
    kube.kubectl()
        .args(["apply", "-f", "-"])
        .stdin(format!(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: {RELAY}
  namespace: {NAMESPACE}
spec:
  workloadSelector:
    labels:
      app: {RELAY}
  ingress:
    - port: {{number: {SERVICE_PORT}, protocol: HTTP, name: http}}
      bind: {RELAY_INBOUND_IP}
      defaultEndpoint: 127.0.0.1:{RELAY_APP_PORT}
  egress:
    - bind: {RELAY_OUTBOUND_IP}
      hosts: [\"./*\", \"istio-system/*\", \"sandbox-system/*\"]
"
        ))
        .run()?;
    Ok(())
}

/// `<overlay>/kustomization.yaml` with `base` as its one resource (a
/// directory, or a file copied in: kustomize loads files only from inside
/// the kustomization's root).
fn write_kustomization(overlay: &Path, base: &Path, rest: &str) -> Result<()> {
    std::fs::create_dir_all(overlay)?;
    let resource = if base.is_dir() {
        relative_to(base, overlay)
    } else {
        let name = base
            .file_name()
            .context("a base file has a name")?
            .to_string_lossy()
            .into_owned();
        std::fs::copy(base, overlay.join(&name))
            .with_context(|| format!("copying {}", base.display()))?;
        name
    };
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {resource}
{rest}"
        ),
    )
    .with_context(|| format!("writing {}/kustomization.yaml", overlay.display()))
}

/// `path` relative to `from` (kustomize takes remote bases as relative
/// paths), both absolute.
fn relative_to(path: &Path, from: &Path) -> String {
    let path: Vec<_> = path.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = path
        .iter()
        .zip(from.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for component in path.iter().skip(common) {
        out.push(component);
    }
    out.display().to_string()
}

fn caller_spec(name: &str, labels: &[(&str, &str)], port_offset: u16, insecure: &str) -> ProxySpec {
    let mut all = BTreeMap::from([("app".to_owned(), name.to_owned())]);
    all.extend(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    ProxySpec {
        kind: ProxyKind::Sidecar,
        name: name.to_owned(),
        namespace: NAMESPACE.to_owned(),
        service_account: name.to_owned(),
        labels: all,
        instance_ip: "127.0.0.1".to_owned(),
        admin_port: 15000 + port_offset,
        status_port: 15020 + port_offset,
        envoy_status_port: 15021 + port_offset,
        envoy_prometheus_port: 15090 + port_offset,
        insecure_registries: insecure.to_owned(),
        env: Vec::new(),
    }
}

fn gateway_spec(insecure: &str) -> ProxySpec {
    ProxySpec {
        kind: ProxyKind::Router,
        name: "istio-ingressgateway".to_owned(),
        namespace: ISTIO_NAMESPACE.to_owned(),
        service_account: "istio-ingressgateway-service-account".to_owned(),
        labels: BTreeMap::from([
            ("app".to_owned(), "istio-ingressgateway".to_owned()),
            ("istio".to_owned(), "ingressgateway".to_owned()),
        ]),
        instance_ip: "127.0.0.1".to_owned(),
        admin_port: 15200,
        status_port: 15220,
        envoy_status_port: 15221,
        envoy_prometheus_port: 15290,
        insecure_registries: insecure.to_owned(),
        // The secret of the signed-keys Component (wasmplugin/signed-keys),
        // as the gateway's Deployment would get it from a Secret.
        env: vec![(SIGNING_KEY_ENV.to_owned(), LOCAL_SIGNING_KEY.to_owned())],
    }
}
