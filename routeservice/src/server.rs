//! `routeservice serve`: configuration, start-up, graceful shutdown.
//!
//! Start-up order: refuse a bad configuration (exit 64) before anything
//! else; bind the listener (liveness answers from here on); open and load
//! the store and apply the seed on a blocking thread; then latch readiness.
//! SIGTERM or SIGINT stops accepting, lets in-flight requests finish (within
//! the drain timeout), and closes the store. Connections are served by
//! [`crate::connections`], within its limits.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::api::{app, AppState, RequestLimits};
use crate::auth::Auth;
use crate::connections::{self, ConnectionLimits};
use crate::kube_auth::KubeAuth;
use crate::kube_store::{KubeStore, MeshOptions};
use crate::mesh_routes::RoutingPolicy;
use crate::metrics::Metrics;
use crate::redb_store::RedbStore;
use crate::service::{RouteService, Seed, WriteError};
use crate::store::{Store, StoreError};

/// Exit code of a configuration the server refuses (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code of a storage failure at start (`EX_IOERR`).
pub const EXIT_STORAGE: u8 = 74;
/// Exit code when the listen address cannot be bound.
pub const EXIT_BIND: u8 = 1;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where sandboxes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StoreKind {
    /// One redb file (`--data-dir`): one replica.
    #[default]
    Redb,
    /// Sandbox objects of the Kubernetes API: any number of replicas.
    Kubernetes,
}

/// Who checks tokens, before the store is open.
#[derive(Debug, Clone)]
pub enum AuthPlan {
    /// Decided now.
    Ready(Auth),
    /// The Kubernetes API server, through the store's client.
    Kubernetes { reads: bool },
}

/// Everything `serve` needs, as plain data.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub store: StoreKind,
    /// With the Kubernetes store: reads need get/list too.
    pub auth_reads: bool,
    pub data_dir: PathBuf,
    pub seed: Option<PathBuf>,
    /// `Some(token)` from `ROUTESERVICE_TOKEN`.
    pub token: Option<String>,
    pub insecure_no_auth: bool,
    pub log_format: LogFormat,
    pub requests: RequestLimits,
    pub connections: ConnectionLimits,
    pub drain_timeout: Duration,
    /// With the Kubernetes store: the routing objects it writes and how the
    /// mesh routes a marked request.
    pub routing: RoutingPolicy,
}

/// A configuration that is refused, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "ROUTESERVICE_TOKEN is not set: writes would be open to anyone. \
         Set ROUTESERVICE_TOKEN to the bearer token writers must send, \
         or pass --insecure-no-auth to accept unauthenticated writes"
    )]
    NoToken,
    #[error("ROUTESERVICE_TOKEN: {0}")]
    BadToken(#[from] crate::auth::InvalidToken),
    #[error("--seed {path}: {problem}")]
    Seed { path: String, problem: String },
    #[error(
        "ROUTESERVICE_TOKEN is set, but --store kubernetes checks tokens with the API server \
         (TokenReview + SubjectAccessReview): unset ROUTESERVICE_TOKEN"
    )]
    TokenWithKubernetes,
    #[error(
        "--seed needs --store redb: with --store kubernetes, apply Sandbox objects (kubectl apply)"
    )]
    SeedWithKubernetes,
    #[error("--auth-reads needs --store kubernetes (with a token, reads are open)")]
    AuthReadsWithoutKubernetes,
}

impl ServeConfig {
    /// Who may write with the redb store: the token, or no one needs one
    /// with `--insecure-no-auth`. A token set beside the flag wins.
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        match (&self.token, self.insecure_no_auth) {
            (Some(token), _) => Ok(Auth::token(token)?),
            (None, true) => Ok(Auth::Disabled),
            (None, false) => Err(ConfigError::NoToken),
        }
    }

    /// Who will check tokens: [`ServeConfig::auth`] for redb; for
    /// Kubernetes, the API server (or no one, `--insecure-no-auth`).
    pub fn auth_plan(&self) -> Result<AuthPlan, ConfigError> {
        match self.store {
            StoreKind::Redb if self.auth_reads => Err(ConfigError::AuthReadsWithoutKubernetes),
            StoreKind::Redb => self.auth().map(AuthPlan::Ready),
            StoreKind::Kubernetes if self.token.is_some() => Err(ConfigError::TokenWithKubernetes),
            StoreKind::Kubernetes if self.insecure_no_auth => Ok(AuthPlan::Ready(Auth::Disabled)),
            StoreKind::Kubernetes => Ok(AuthPlan::Kubernetes {
                reads: self.auth_reads,
            }),
        }
    }

    /// The seed file, parsed and checked (not yet applied).
    pub fn seed(&self) -> Result<Option<Seed>, ConfigError> {
        let Some(path) = &self.seed else {
            return Ok(None);
        };
        if self.store == StoreKind::Kubernetes {
            return Err(ConfigError::SeedWithKubernetes);
        }
        let seed_error = |problem: String| ConfigError::Seed {
            path: path.display().to_string(),
            problem,
        };
        let bytes = std::fs::read(path).map_err(|e| seed_error(e.to_string()))?;
        Seed::parse(&bytes)
            .map(Some)
            .map_err(|e| seed_error(e.to_string()))
    }
}

/// Runs the server until SIGTERM/SIGINT; the process exit code.
pub fn main(config: ServeConfig) -> ExitCode {
    let auth = match config.auth_plan() {
        Ok(auth) => auth,
        Err(e) => return refuse(&e),
    };
    let seed = match config.seed() {
        Ok(seed) => seed,
        Err(e) => return refuse(&e),
    };
    init_logging(config.log_format);
    if config.token.is_some() && config.insecure_no_auth {
        tracing::warn!("--insecure-no-auth ignored: ROUTESERVICE_TOKEN is set, writes need it");
    }
    if matches!(auth, AuthPlan::Ready(Auth::Disabled)) {
        tracing::warn!("--insecure-no-auth: anyone who can reach this server can change routes");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, auth, seed));
    // Waits for blocking writes still running: each commits or aborts whole.
    drop(runtime);
    match result {
        Ok(()) => {
            tracing::info!("stopped: storage closed");
            ExitCode::SUCCESS
        }
        Err(fatal) => {
            tracing::error!(error = %fatal, "stopped");
            ExitCode::from(fatal.exit_code())
        }
    }
}

fn refuse(e: &ConfigError) -> ExitCode {
    eprintln!("routeservice: refusing to start: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// Why the server stopped on its own.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Storage(#[from] StoreError),
    #[error("--seed: {0}")]
    Seed(WriteError),
    #[error("storage loader failed: {0}")]
    Loader(String),
    #[error("Kubernetes client: {0}")]
    Kube(String),
}

impl Fatal {
    fn exit_code(&self) -> u8 {
        match self {
            Fatal::Bind { .. } | Fatal::Loader(_) => EXIT_BIND,
            Fatal::Storage(_) | Fatal::Seed(WriteError::Store(_)) | Fatal::Kube(_) => EXIT_STORAGE,
            Fatal::Seed(_) => EXIT_CONFIG,
        }
    }
}

/// The opened store, before it is loaded.
enum Opened {
    Redb(std::path::PathBuf),
    Kubernetes(Box<KubeStore>),
}

/// A client of the API server: in-cluster config, or KUBECONFIG (or
/// ~/.kube/config). Reads files and the environment only.
async fn kube_client() -> Result<(kube::Client, String), Fatal> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Fatal::Kube(e.to_string()))?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| Fatal::Kube(e.to_string()))?;
    Ok((client, server))
}

async fn run(config: ServeConfig, auth: AuthPlan, seed: Option<Seed>) -> Result<(), Fatal> {
    let (auth, opened) = match config.store {
        StoreKind::Redb => {
            let AuthPlan::Ready(auth) = auth else {
                return Err(Fatal::Kube("the redb store has no Kubernetes auth".into()));
            };
            (auth, Opened::Redb(config.data_dir.clone()))
        }
        StoreKind::Kubernetes => {
            let (client, server) = kube_client().await?;
            let auth = match auth {
                AuthPlan::Ready(auth) => auth,
                AuthPlan::Kubernetes { reads } => Auth::Kubernetes {
                    auth: Arc::new(KubeAuth::new(client.clone())),
                    reads,
                },
            };
            tracing::info!(%server, "store: Sandbox objects of the Kubernetes API");
            (
                auth,
                Opened::Kubernetes(Box::new(KubeStore::start(
                    client,
                    server,
                    Some(MeshOptions {
                        policy: config.routing.clone(),
                        instance: std::env::var("POD_NAME")
                            .or_else(|_| std::env::var("HOSTNAME"))
                            .unwrap_or_else(|_| "routeservice".to_owned()),
                    }),
                ))),
            )
        }
    };
    let metrics = Arc::new(Metrics::new());
    let state = AppState::with_limits(auth, Arc::clone(&metrics), config.requests);
    let listener = connections::bind(config.listen).map_err(|source| Fatal::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(
        %addr,
        data_dir = %config.data_dir.display(),
        max_connections = config.connections.max_connections,
        header_read_timeout_s = config.connections.header_read_timeout.as_secs_f64(),
        request_timeout_s = config.requests.timeout.as_secs_f64(),
        "listening"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let failure: Arc<Mutex<Option<Fatal>>> = Arc::default();

    // Storage: open, load, seed; then ready. A failure stops the server.
    {
        let state = state.clone();
        let stop_tx = Arc::clone(&stop_tx);
        let failure = Arc::clone(&failure);
        tokio::spawn(async move {
            let loaded =
                tokio::task::spawn_blocking(move || load(opened, seed.as_ref(), metrics)).await;
            let loaded = loaded.unwrap_or_else(|e| Err(Fatal::Loader(e.to_string())));
            match loaded {
                Ok(service) => {
                    let snapshot = service.snapshot();
                    tracing::info!(
                        store = %service.describe_store(),
                        version = snapshot.version(),
                        sandboxes = snapshot.sandbox_count(),
                        routes = snapshot.route_count(),
                        "ready"
                    );
                    let service = Arc::new(service);
                    // A fed store's changes (kubectl, other replicas).
                    tokio::spawn(Arc::clone(&service).follow_feed());
                    state.set_ready(service);
                }
                Err(fatal) => {
                    *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(fatal);
                    let _ = stop_tx.send(true);
                }
            }
        });
    }

    // Signals.
    {
        let stop_tx = Arc::clone(&stop_tx);
        tokio::spawn(async move {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
        });
    }

    let mut graceful_rx = stop_rx.clone();
    let server = connections::serve(
        listener,
        app(state.clone()),
        config.connections,
        Arc::clone(state.metrics()),
        async move {
            let _ = graceful_rx.wait_for(|stop| *stop).await;
        },
    );
    let mut drain_rx = stop_rx;
    let drain_timeout = config.drain_timeout;
    let drain_deadline = async move {
        let _ = drain_rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        () = server => {}
        () = drain_deadline => {
            tracing::warn!(timeout_s = drain_timeout.as_secs_f64(), "drain timeout: closing remaining connections");
        }
    }
    let failed = failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(fatal) = failed {
        return Err(fatal);
    }
    // The last handles on the service (and its store) go with the state and
    // the runtime's tasks; a write still running holds its own until it has
    // committed.
    Ok(())
}

fn load(opened: Opened, seed: Option<&Seed>, metrics: Arc<Metrics>) -> Result<RouteService, Fatal> {
    let store: Arc<dyn Store> = match opened {
        Opened::Redb(data_dir) => Arc::new(RedbStore::open(&data_dir)?),
        Opened::Kubernetes(store) => Arc::new(*store),
    };
    let service = RouteService::open(store)?.with_observer(metrics);
    if let Some(seed) = seed {
        let outcome = service.apply_seed(seed).map_err(Fatal::Seed)?;
        tracing::info!(
            sandboxes = seed.sandboxes.len(),
            changed = outcome.changed,
            version = outcome.version,
            "seed applied"
        );
    }
    Ok(service)
}

/// Waits for SIGTERM or SIGINT; names the one that came.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("routeservice: logging not set up: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServeConfig {
        ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: StoreKind::Redb,
            auth_reads: false,
            data_dir: PathBuf::from("unused"),
            seed: None,
            token: None,
            insecure_no_auth: false,
            log_format: LogFormat::Text,
            requests: RequestLimits::default(),
            connections: ConnectionLimits::default(),
            routing: RoutingPolicy::default(),
            drain_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn no_token_no_start() {
        assert!(matches!(config().auth(), Err(ConfigError::NoToken)));
        let insecure = ServeConfig {
            insecure_no_auth: true,
            ..config()
        };
        assert!(matches!(insecure.auth(), Ok(Auth::Disabled)));
        let both = ServeConfig {
            token: Some("t".into()),
            insecure_no_auth: true,
            ..config()
        };
        assert!(matches!(both.auth(), Ok(Auth::Token(_))));
        let bad = ServeConfig {
            token: Some(String::new()),
            ..config()
        };
        assert!(matches!(bad.auth(), Err(ConfigError::BadToken(_))));
    }

    #[test]
    fn the_kubernetes_store_checks_tokens_itself() {
        let kube = ServeConfig {
            store: StoreKind::Kubernetes,
            ..config()
        };
        assert!(matches!(
            kube.auth_plan(),
            Ok(AuthPlan::Kubernetes { reads: false })
        ));
        let with_token = ServeConfig {
            token: Some("t".into()),
            ..kube.clone()
        };
        assert!(matches!(
            with_token.auth_plan(),
            Err(ConfigError::TokenWithKubernetes)
        ));
        let with_seed = ServeConfig {
            seed: Some(PathBuf::from("seed.json")),
            ..kube
        };
        assert!(matches!(
            with_seed.seed(),
            Err(ConfigError::SeedWithKubernetes)
        ));
        let reads_on_redb = ServeConfig {
            auth_reads: true,
            insecure_no_auth: true,
            ..config()
        };
        assert!(matches!(
            reads_on_redb.auth_plan(),
            Err(ConfigError::AuthReadsWithoutKubernetes)
        ));
    }

    #[test]
    fn seed_errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.json");
        std::fs::write(
            &path,
            r#"{"sandboxes": {"pr-1": {"routingKey": "k", "routes": [{"baseline": "A", "target": "b.c"}]}}}"#,
        )
        .unwrap();
        let with_seed = ServeConfig {
            seed: Some(path),
            ..config()
        };
        let err = with_seed.seed().unwrap_err().to_string();
        assert!(
            err.contains("seed.json: sandboxes.pr-1.routes[0].baseline"),
            "{err}"
        );
    }
}
