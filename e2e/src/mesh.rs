//! The local demo mesh of INTERFACES section 8, as one value.
//!
//! A caller `frontend` in namespace `demo` whose sidecar reaches `catalog`
//! and `reviews`, each with a baseline and a fork `<svc>-pr-42` (tests may
//! ask for forks of more sandboxes), and, when the plugin uses one, the
//! RouteService's cluster. Envoy's
//! routes know both forks — a VirtualService header rule per fork in
//! `header` mode, and in every mode the forks' own virtual hosts, as Istio
//! generates for any service — while which requests the plugin sends to a
//! fork is up to the plugin configuration the caller passes in.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::bootstrap::{
    HeaderRoute, InboundListener, MeshService, SidecarBootstrap, WasmPlugin, Workload,
    INBOUND_LISTENER_NAME, LISTENER_NAME,
};
use crate::envoy::{self, Envoy, RunFiles};
use crate::upstream::{Identity, Upstream};

/// The demo namespace.
pub const NAMESPACE: &str = "demo";
/// The demo services (short names).
pub const SERVICES: [&str; 2] = ["catalog", "reviews"];
/// The demo sandbox, which is also its routing key.
pub const SANDBOX: &str = "pr-42";
/// The route header (plugin default `routeHeader`).
pub const ROUTE_HEADER: &str = "x-sandbox-route";
/// The calling workload.
pub const CALLER: &str = "frontend";
/// The plugin's name as istiod renders the WasmPlugin `demo/sandbox-router`
/// of `wasmplugin/`: `<namespace>.<name>~istio-translated-wasmplugin` (the
/// WasmPlugin becomes a TrafficExtension). The filter is
/// `extensions.istio.io/trafficextension/<this>`
/// ([`crate::bootstrap::WasmPlugin::filter_name`]). Metrics do not carry
/// it: the plugin's own are `wasmcustom.sandbox_router.*`.
pub const PLUGIN_NAME: &str = "demo.sandbox-router~istio-translated-wasmplugin";

/// The name of the inbound listener's own plugin
/// ([`MeshOptions::inbound_plugin_config`]).
pub const INBOUND_PLUGIN_NAME: &str = "demo.sandbox-router-inbound~istio-translated-wasmplugin";

/// Who answers requests for hosts outside the mesh (through
/// `PassthroughCluster`): `outside/passthrough`.
pub const PASSTHROUGH_SERVED_BY: &str = "outside/passthrough";

/// How the plugin marks a request for a fork, and so what routes Envoy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The plugin sets the route header; a VirtualService rule matches it.
    Header,
    /// The plugin rewrites `:authority`; the fork's own virtual host matches.
    Authority,
}

impl Mode {
    /// The plugin config spelling: `header` or `authority`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Header => "header",
            Mode::Authority => "authority",
        }
    }
}

impl FromStr for Mode {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "header" => Ok(Mode::Header),
            "authority" => Ok(Mode::Authority),
            other => bail!("mode must be `header` or `authority`, not {other:?}"),
        }
    }
}

/// `<service>.demo.svc.cluster.local`.
pub fn fqdn(service: &str) -> String {
    format!("{service}.{NAMESPACE}.{}", crate::bootstrap::CLUSTER_DOMAIN)
}

/// The fork of `service` for `sandbox`: `<service>-<sandbox>`.
pub fn fork_name(service: &str, sandbox: &str) -> String {
    format!("{service}-{sandbox}")
}

/// The ClusterIP the mirror gives the `index`-th upstream (baseline and
/// forks of each service, in [`SERVICES`] order): `10.96.0.<10 + index>`.
/// Istio lists a Service's ClusterIPs, with and without the port, as
/// domains of its virtual host, so a caller may use one as `Host`.
pub fn cluster_ip(index: usize) -> std::net::Ipv4Addr {
    let last = u8::try_from(10 + index).unwrap_or(u8::MAX);
    std::net::Ipv4Addr::new(10, 96, 0, last)
}

/// The ClusterIP of the `catalog` baseline (always the first upstream).
pub fn catalog_cluster_ip() -> std::net::Ipv4Addr {
    cluster_ip(0)
}

/// A plugin configuration with a static route table in which sandbox
/// `pr-42` (key `pr-42`) forks `catalog` only (no RouteService).
pub fn demo_plugin_config(mode: Mode) -> Value {
    json!({
        "mode": mode.as_str(),
        "namespace": NAMESPACE,
        "routes": [{
            "routingKey": SANDBOX,
            "sandbox": SANDBOX,
            "baseline": fqdn("catalog"),
            "target": fqdn(&fork_name("catalog", SANDBOX)),
        }],
    })
}

/// The `routeService` block of the plugin configuration: the RouteService
/// cluster and authority of [`crate::routeservice`], and the timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteServiceSettings {
    /// `timeoutMs`: how long a request waits for a lookup (and a sync may take).
    pub timeout_ms: u64,
    /// `syncIntervalMs`: how often the table is fetched.
    pub sync_interval_ms: u64,
    /// `cacheTtlMs`: lifetime of a looked-up key that has routes.
    pub cache_ttl_ms: u64,
    /// `negativeCacheTtlMs`: lifetime of a looked-up key without routes.
    pub negative_cache_ttl_ms: u64,
}

impl RouteServiceSettings {
    /// Short intervals, so tests see syncs and expiries quickly.
    pub fn for_tests() -> Self {
        Self {
            timeout_ms: 200,
            sync_interval_ms: 300,
            cache_ttl_ms: 30_000,
            negative_cache_ttl_ms: 1000,
        }
    }

    /// The demo's: a change shows within about a second.
    pub fn for_demo() -> Self {
        Self {
            timeout_ms: 200,
            sync_interval_ms: 1000,
            cache_ttl_ms: 30_000,
            negative_cache_ttl_ms: 2000,
        }
    }

    /// The plugin's tick period for this sync interval (the core's
    /// `tick_period_ms`): how long after a sync every worker has adopted it.
    pub fn tick_ms(&self) -> u64 {
        (self.sync_interval_ms / 4).clamp(50, 1000)
    }

    /// The `routeService` JSON block.
    pub fn to_json(&self) -> Value {
        json!({
            "cluster": crate::routeservice::CLUSTER,
            "authority": crate::routeservice::FQDN,
            "timeoutMs": self.timeout_ms,
            "syncIntervalMs": self.sync_interval_ms,
            "cacheTtlMs": self.cache_ttl_ms,
            "negativeCacheTtlMs": self.negative_cache_ttl_ms,
        })
    }
}

/// The plugin configuration `make run` uses: routes come from the
/// RouteService (no static `routes`).
pub fn route_service_plugin_config(mode: Mode, settings: &RouteServiceSettings) -> Value {
    json!({
        "mode": mode.as_str(),
        "namespace": NAMESPACE,
        "routeService": settings.to_json(),
    })
}

/// What to start.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Decides the Envoy routes (the plugin's own `mode` is in `plugin_config`).
    pub mode: Mode,
    /// The plugin configuration, passed to the plugin as JSON text.
    pub plugin_config: Value,
    /// Outbound listener port on 127.0.0.1; `0` picks a free one.
    pub listener_port: u16,
    /// Admin port on 127.0.0.1; `0` picks a free one.
    pub admin_port: u16,
    /// First upstream port (the four upstreams take consecutive ports);
    /// `None` picks free ports.
    pub upstream_base_port: Option<u16>,
    /// Names the run directory.
    pub label: String,
    /// Sandbox names the mesh has forks for: every service gets an upstream
    /// `<svc>-<sandbox>` per name (and, in `header` mode, the VirtualService
    /// rule `x-sandbox-route: <sandbox>` to it). Default `["pr-42"]`.
    pub sandboxes: Vec<String>,
    /// Where the RouteService listens, if the plugin uses one: the sidecar
    /// gets its cluster [`crate::routeservice::CLUSTER`].
    pub route_service: Option<SocketAddr>,
    /// Deliver the plugin over ECDS (from a file, see
    /// [`crate::bootstrap::WasmPlugin::ecds_file`]) instead of inline, so
    /// that [`DemoMesh::reconfigure_plugin`] can change its configuration.
    pub ecds: bool,
    /// The plugin VM's environment variables (`vmConfig.env`).
    pub plugin_env: Vec<(String, String)>,
    /// The caller's own app, behind an inbound listener of the same Envoy
    /// that runs the same plugin ([`DemoMesh::inbound_listener`]).
    pub inbound_app: Option<SocketAddr>,
    /// The inbound listener's own plugin configuration (the same module
    /// under the name [`INBOUND_PLUGIN_NAME`]); `None`: it runs the
    /// outbound listener's plugin.
    pub inbound_plugin_config: Option<Value>,
    /// A Zipkin collector ([`crate::zipkin::Collector`]): the outbound
    /// listener then traces every request to it, with the plugin's decision
    /// as span tags ([`crate::zipkin::hcm_tracing`]).
    pub zipkin_collector: Option<SocketAddr>,
}

impl MeshOptions {
    /// Free ports everywhere, for tests running in parallel.
    pub fn for_tests(mode: Mode, plugin_config: Value) -> Self {
        Self {
            mode,
            plugin_config,
            listener_port: 0,
            admin_port: 0,
            upstream_base_port: None,
            label: format!("mesh-{}", mode.as_str()),
            sandboxes: vec![SANDBOX.to_owned()],
            route_service: None,
            ecds: false,
            plugin_env: Vec::new(),
            inbound_app: None,
            inbound_plugin_config: None,
            zipkin_collector: None,
        }
    }

    /// The demo's fixed ports (listener 10000, admin 9901), overridable by
    /// `DEMO_LISTENER_PORT`, `DEMO_ADMIN_PORT` and `DEMO_UPSTREAM_BASE_PORT`.
    pub fn for_demo(mode: Mode, plugin_config: Value) -> Result<Self> {
        Ok(Self {
            mode,
            plugin_config,
            listener_port: port_from_env("DEMO_LISTENER_PORT")?.unwrap_or(10000),
            admin_port: port_from_env("DEMO_ADMIN_PORT")?.unwrap_or(9901),
            upstream_base_port: port_from_env("DEMO_UPSTREAM_BASE_PORT")?,
            label: "demo".to_owned(),
            sandboxes: vec![SANDBOX.to_owned()],
            route_service: None,
            ecds: false,
            plugin_env: Vec::new(),
            inbound_app: None,
            inbound_plugin_config: None,
            zipkin_collector: None,
        })
    }
}

/// A port from environment variable `name`, if set.
pub fn port_from_env(name: &str) -> Result<Option<u16>> {
    match std::env::var(name) {
        Ok(text) => {
            Ok(Some(text.parse().with_context(|| {
                format!("{name}={text:?} is not a port")
            })?))
        }
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {name}")),
    }
}

/// The running demo mesh. Dropping it stops Envoy, then the upstreams.
#[derive(Debug)]
pub struct DemoMesh {
    envoy: Envoy,
    upstreams: Vec<Upstream>,
    passthrough: Upstream,
    listener: SocketAddr,
    inbound_listener: Option<SocketAddr>,
    mode: Mode,
    plugin: WasmPlugin,
}

impl DemoMesh {
    /// Starts the four upstreams and an Envoy in front of them, and waits
    /// until Envoy is ready.
    pub fn start(options: &MeshOptions) -> Result<Self> {
        let Launched {
            mut envoy,
            upstreams,
            passthrough,
            plugin,
        } = launch(options)?;
        envoy.wait_until_ready()?;
        let listener = envoy.listener_addr(LISTENER_NAME)?;
        let inbound_listener = match options.inbound_app {
            Some(_) => Some(envoy.listener_addr(INBOUND_LISTENER_NAME)?),
            None => None,
        };
        Ok(Self {
            envoy,
            upstreams,
            passthrough,
            listener,
            inbound_listener,
            mode: options.mode,
            plugin,
        })
    }

    /// Gives the plugin `plugin_config` over ECDS, as version `version`
    /// (higher than the last); only for a mesh started with
    /// [`MeshOptions::ecds`]. Envoy applies it asynchronously.
    pub fn reconfigure_plugin(&mut self, plugin_config: &Value, version: u64) -> Result<()> {
        if self.plugin.ecds_file.is_none() {
            bail!("the mesh was not started with ECDS");
        }
        self.plugin.configuration = plugin_config.to_string();
        write_ecds(&self.plugin, version)
    }

    /// Where callers send requests (the outbound listener).
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    /// The inbound listener in front of the caller's app, when the mesh
    /// was started with [`MeshOptions::inbound_app`].
    pub fn inbound_listener(&self) -> Option<SocketAddr> {
        self.inbound_listener
    }

    /// The Envoy process.
    pub fn envoy(&self) -> &Envoy {
        &self.envoy
    }

    /// The upstreams, baselines and forks.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// The stand-in for the world outside the mesh, behind
    /// `PassthroughCluster` (Istio's `allow_any` virtual host).
    pub fn passthrough(&self) -> &Upstream {
        &self.passthrough
    }

    /// The mode its routes were built for.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

/// The upstreams and an Envoy that was started but not waited for, to watch
/// an Envoy that is expected to refuse its configuration.
#[derive(Debug)]
pub struct Launched {
    /// The Envoy process, maybe still starting.
    pub envoy: Envoy,
    /// The running upstreams.
    pub upstreams: Vec<Upstream>,
    /// The upstream behind `PassthroughCluster`.
    pub passthrough: Upstream,
    /// The plugin as it was given to Envoy.
    pub plugin: WasmPlugin,
}

/// Starts the upstreams and spawns Envoy without waiting for it.
pub fn launch(options: &MeshOptions) -> Result<Launched> {
    let upstreams = start_upstreams(options.upstream_base_port, &options.sandboxes)?;
    // Any free port, also for the demo: nobody dials it directly.
    let passthrough = Upstream::start(
        Identity {
            service: "outside".to_owned(),
            variant: "passthrough".to_owned(),
        },
        0,
    )?;
    let files = RunFiles::in_dir(&crate::new_run_dir(&options.label)?);
    let services = demo_services(
        upstreams
            .iter()
            .map(|upstream| (upstream.identity().clone(), upstream.addr())),
    );
    let bootstrap = sidecar_bootstrap(
        options,
        services,
        passthrough.addr(),
        envoy::plugin_wasm()?,
        &files,
    );
    if bootstrap.plugin.ecds_file.is_some() {
        write_ecds(&bootstrap.plugin, 1)?;
    }
    let mut config = bootstrap.to_json();
    add_cluster_ip_domains(&mut config, &bootstrap.services);
    if let Some(collector) = options.zipkin_collector {
        add_zipkin_tracing(&mut config, collector)?;
    }
    let envoy = Envoy::spawn(&config, files)?;
    Ok(Launched {
        envoy,
        upstreams,
        passthrough,
        plugin: bootstrap.plugin,
    })
}

/// Traces the outbound listener's requests to the Zipkin collector at
/// `collector` (see [`MeshOptions::zipkin_collector`]).
fn add_zipkin_tracing(config: &mut Value, collector: SocketAddr) -> Result<()> {
    let hcm = config
        .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow::anyhow!("no outbound HTTP connection manager"))?;
    hcm.insert("tracing".to_owned(), crate::zipkin::hcm_tracing());
    config
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| anyhow::anyhow!("no clusters"))?
        .push(crate::zipkin::cluster(collector));
    if let Some(bootstrap) = config.as_object_mut() {
        bootstrap.insert(
            "layered_runtime".to_owned(),
            crate::zipkin::flush_at_once_runtime(),
        );
    }
    Ok(())
}

/// Adds each service's [`cluster_ip`] to the domains of its virtual host, as
/// Istio does (done here rather than in the bootstrap, which stays a plain
/// description of the sidecar).
fn add_cluster_ip_domains(config: &mut Value, services: &[MeshService]) {
    let virtual_hosts = config
        .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts")
        .and_then(Value::as_array_mut);
    let Some(virtual_hosts) = virtual_hosts else {
        return;
    };
    for (index, service) in services.iter().enumerate() {
        let name = format!("{}:{}", service.fqdn(), crate::bootstrap::SERVICE_PORT);
        let domains = virtual_hosts
            .iter_mut()
            .find(|vhost| vhost.get("name").and_then(Value::as_str) == Some(name.as_str()))
            .and_then(|vhost| vhost.get_mut("domains"))
            .and_then(Value::as_array_mut);
        if let Some(domains) = domains {
            let ip = cluster_ip(index);
            domains.push(json!(ip.to_string()));
            domains.push(json!(format!("{ip}:{}", crate::bootstrap::SERVICE_PORT)));
        }
    }
}

/// Writes the plugin's ECDS file in one step (a rename, which Envoy's file
/// watch sees as one change).
fn write_ecds(plugin: &WasmPlugin, version: u64) -> Result<()> {
    let Some(path) = &plugin.ecds_file else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(&crate::bootstrap::ecds_response(plugin, version))?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Baseline and forks of every demo service, in that order.
fn start_upstreams(base_port: Option<u16>, sandboxes: &[String]) -> Result<Vec<Upstream>> {
    upstream_identities(sandboxes)
        .into_iter()
        .enumerate()
        .map(|(index, identity)| {
            let port = match base_port {
                Some(base) => base
                    .checked_add(u16::try_from(index)?)
                    .context("upstream port out of range")?,
                None => 0,
            };
            Upstream::start(identity, port)
        })
        .collect()
}

/// The upstreams the mesh starts: baseline and forks of every demo
/// service, in that order.
pub fn upstream_identities(sandboxes: &[String]) -> Vec<Identity> {
    SERVICES
        .iter()
        .flat_map(|service| {
            std::iter::once("baseline")
                .chain(sandboxes.iter().map(String::as_str))
                .map(move |variant| Identity {
                    service: (*service).to_owned(),
                    variant: variant.to_owned(),
                })
        })
        .collect()
}

/// The Kubernetes services the upstreams play (`<svc>` or
/// `<svc>-<sandbox>`), with made-up ClusterIPs `10.96.0.<n>` in that order.
pub fn demo_services(
    upstreams: impl IntoIterator<Item = (Identity, SocketAddr)>,
) -> Vec<MeshService> {
    upstreams
        .into_iter()
        .zip(1..=u8::MAX)
        .map(|((Identity { service, variant }, endpoint), host)| {
            let name = if variant == "baseline" {
                service
            } else {
                fork_name(&service, &variant)
            };
            MeshService {
                name,
                namespace: NAMESPACE.to_owned(),
                cluster_ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, host)),
                endpoint,
            }
        })
        .collect()
}

/// The sidecar bootstrap [`launch`] gives Envoy, for `services` (see
/// [`demo_services`]), the PassthroughCluster stand-in at `passthrough` and
/// the plugin at `wasm_path`; `files` says where Envoy writes.
pub fn sidecar_bootstrap(
    options: &MeshOptions,
    services: Vec<MeshService>,
    passthrough: SocketAddr,
    wasm_path: PathBuf,
    files: &RunFiles,
) -> SidecarBootstrap {
    let header_routes = match options.mode {
        Mode::Header => SERVICES
            .iter()
            .flat_map(|service| {
                options
                    .sandboxes
                    .iter()
                    .map(|sandbox| fork_header_route(service, sandbox))
            })
            .collect(),
        Mode::Authority => Vec::new(),
    };
    let inbound = options.inbound_app.map(|app| InboundListener {
        port: 0,
        app,
        plugin: options
            .inbound_plugin_config
            .as_ref()
            .map(|config| WasmPlugin {
                name: INBOUND_PLUGIN_NAME.to_owned(),
                wasm_path: wasm_path.clone(),
                configuration: config.to_string(),
                ecds_file: None,
                vm_env: options.plugin_env.clone(),
            }),
    });
    SidecarBootstrap {
        workload: Workload {
            name: CALLER.to_owned(),
            namespace: NAMESPACE.to_owned(),
        },
        listener_port: options.listener_port,
        admin_port: options.admin_port,
        services,
        header_routes,
        plugin: WasmPlugin {
            name: PLUGIN_NAME.to_owned(),
            wasm_path,
            configuration: options.plugin_config.to_string(),
            ecds_file: options.ecds.then(|| files.dir.join("ecds-plugin.json")),
            vm_env: options.plugin_env.clone(),
        },
        access_log: files.access_log(),
        inbound,
        route_service: options.route_service.map(|endpoint| MeshService {
            name: "routeservice".to_owned(),
            namespace: "sandbox-system".to_owned(),
            cluster_ip: IpAddr::V4(Ipv4Addr::new(10, 96, 1, 1)),
            endpoint,
        }),
        passthrough,
    }
}

/// The VirtualService rule that sends `service` requests carrying
/// `x-sandbox-route: <sandbox>` to its fork `<service>-<sandbox>`.
fn fork_header_route(service: &str, sandbox: &str) -> HeaderRoute {
    HeaderRoute {
        name: format!("sandbox-{sandbox}"),
        service: fqdn(service),
        header: ROUTE_HEADER.to_owned(),
        value: sandbox.to_owned(),
        target: fqdn(&fork_name(service, sandbox)),
    }
}
