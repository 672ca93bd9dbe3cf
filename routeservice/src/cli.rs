//! The `routeservice` command line: `serve`, the commands people use
//! against a running server (`list`, `get`, `create`, `delete`, `routes`),
//! and `check-config`, which checks filter configurations offline.
//!
//! Exit codes: 0 done; 1 the server refused (its message is printed), or
//! `check-config` found a configuration invalid or unreadable; 2 bad command
//! line; 64 `serve` refused its configuration; 69 the server could not be
//! reached; 74 `serve` could not open its storage.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use sandbox_router_core::config::FilterConfig;
use sandbox_router_core::signed_key::{self, Secret};

use crate::api::RequestLimits;
use crate::client::{Client, ClientError, Stored};
use crate::connections::ConnectionLimits;
use crate::mesh_routes::{RouteObjects, RoutingPolicy};
use crate::model::{SandboxRoute, SandboxSpec};
use crate::server::{self, LogFormat, ServeConfig, StoreKind};

/// Exit code when the server cannot be reached (`EX_UNAVAILABLE`).
pub const EXIT_UNREACHABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(
    name = "routeservice",
    version,
    about = "RouteService for sandbox-router: which routing key forks which service",
    long_about = "RouteService for sandbox-router: which routing key forks which service.\n\n\
                  `routeservice serve` runs the server; the other commands talk to a running one."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// List the sandboxes.
    List(ClientArgs),
    /// Show one sandbox.
    Get {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create or replace a sandbox.
    Create {
        /// Sandbox name (DNS-1123 label).
        name: String,
        /// The routing key requests of this sandbox carry.
        #[arg(long)]
        routing_key: String,
        /// A forked service: BASELINE=TARGET (FQDNs). Repeat for more.
        #[arg(long = "route", value_name = "BASELINE=TARGET", required = true, value_parser = parse_route)]
        routes: Vec<SandboxRoute>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a sandbox.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the route table the filter reads.
    Routes {
        /// Only the routes of this routing key.
        #[arg(long)]
        routing_key: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check filter configurations with the filter's own parser, before
    /// applying them: a `pluginConfig` JSON file, or a WasmPlugin YAML
    /// (`.yaml`/`.yml`; its `spec.pluginConfig`). Prints `<file>: OK`, or the
    /// error naming the field; exits 1 if any file is invalid.
    CheckConfig {
        /// The files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Mint a signed routing key for requests from outside the mesh (the
    /// gateway's `edge.signedKeys`): prints `<key>.<expiry>.<signature>`,
    /// or with `--link` the URL carrying it. The secret is read from the
    /// environment variable `--secret-env` or from `--secret-file`.
    Sign(SignArgs),
    /// Print the Sandbox CRD (sandboxes.sandbox-router.dev) as YAML, as
    /// generated from the Rust types (istio-config/base/sandbox-crd.yaml).
    Crd,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The routing key (as the sandbox's `routingKey`).
    #[arg(long)]
    pub key: String,
    /// How long it stays valid (`30m`, `2h`, `7d`); at most the gateway's
    /// `maxTtlSeconds`, or it refuses it.
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Duration,
    /// The environment variable holding the secret.
    #[arg(
        long,
        default_value = "SANDBOX_ROUTER_SIGNING_KEY",
        conflicts_with = "secret_file"
    )]
    pub secret_env: String,
    /// A file holding the secret (surrounding whitespace ignored).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Print this URL with the signed key added as query parameter
    /// `--query-parameter` (a preview link).
    #[arg(long)]
    pub link: Option<String>,
    /// The gateway's `edge.signedKeys.queryParameter`.
    #[arg(long, default_value = "sd-routing-key")]
    pub query_parameter: String,
}

/// A header name as the filter's `routeHeader` takes it: lower-case token
/// characters.
fn parse_route_header(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(text.to_owned())
    } else {
        Err("must be a lower-case HTTP header name (like x-sandbox-route)".to_owned())
    }
}

/// `30m`, `2h`, `1h30m`, `7d`: humantime's format, at least one second.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 30m, 2h, 7d)"))?;
    if ttl < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(ttl)
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (IP:port).
    #[arg(long, env = "ROUTESERVICE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where sandboxes are kept: `redb` (one file in --data-dir, one
    /// replica) or `kubernetes` (Sandbox objects; any number of replicas;
    /// in-cluster config or KUBECONFIG; tokens checked by the API server).
    #[arg(long, env = "ROUTESERVICE_STORE", value_enum, default_value_t = StoreKind::Redb)]
    pub store: StoreKind,
    /// With --store kubernetes: reads need `get`/`list` on sandboxes too
    /// (the filter sends no token: give it none of these reads).
    #[arg(long, env = "ROUTESERVICE_AUTH_READS")]
    pub auth_reads: bool,
    /// With --store kubernetes: the routing objects written for each
    /// Sandbox. `httproute` (header mode): an HTTPRoute per forked Service
    /// port, attached to the baseline Service, owned by the Sandbox;
    /// `none` (authority mode, or routes written by hand). Forks are
    /// checked either way (`ForkServiceMissing`).
    #[arg(long, env = "ROUTESERVICE_ROUTE_OBJECTS", value_enum, default_value_t = RouteObjects::Httproute)]
    pub route_objects: RouteObjects,
    /// With --store kubernetes: the filter's `routeHeader`, which the
    /// HTTPRoutes match.
    #[arg(long, env = "ROUTESERVICE_ROUTE_HEADER", default_value = "x-sandbox-route", value_parser = parse_route_header)]
    pub route_header: String,
    /// With --store kubernetes: the cluster's DNS domain (Service hosts are
    /// `<name>.<namespace>.svc.<domain>`).
    #[arg(
        long,
        env = "ROUTESERVICE_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Directory of the database (`routes.redb`); created if missing.
    #[arg(
        long,
        env = "ROUTESERVICE_DATA_DIR",
        default_value = "routeservice-data"
    )]
    pub data_dir: PathBuf,
    /// JSON file of sandboxes to create or replace at start:
    /// {"sandboxes": {"<name>": {"routingKey": "K", "routes": [...]}}}.
    #[arg(long, env = "ROUTESERVICE_SEED")]
    pub seed: Option<PathBuf>,
    /// Accept writes without a token (when ROUTESERVICE_TOKEN is unset).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Log line format.
    #[arg(long, env = "ROUTESERVICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Largest request body accepted, in bytes (413 past it).
    #[arg(long, default_value_t = crate::api::DEFAULT_BODY_LIMIT)]
    pub max_body_bytes: usize,
    /// Seconds a connection gets, from its opening or its previous answer,
    /// to send a request's headers; then it is closed. So also how long an
    /// idle keep-alive connection is kept.
    #[arg(
        long,
        default_value_t = crate::connections::DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub header_read_timeout_secs: u64,
    /// Seconds a request gets from the end of its headers to its answer,
    /// its body's arrival included (408 past it).
    #[arg(
        long,
        default_value_t = crate::api::DEFAULT_REQUEST_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub request_timeout_secs: u64,
    /// Connections open at once; more are accepted and closed at once.
    /// Keep it below the open-file limit (`ulimit -n`).
    #[arg(
        long,
        default_value_t = crate::connections::DEFAULT_MAX_CONNECTIONS as u64,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    pub max_connections: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The RouteService to talk to.
    #[arg(
        long,
        env = "ROUTESERVICE_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Output: a table for people, or the server's JSON.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `routeservice crd`.
fn crd() -> ExitCode {
    match sandbox_router_crd::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("routeservice crd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_route(value: &str) -> Result<SandboxRoute, String> {
    match value.split_once('=') {
        Some((baseline, target)) if !baseline.is_empty() && !target.is_empty() => {
            Ok(SandboxRoute {
                baseline: baseline.to_owned(),
                target: target.to_owned(),
            })
        }
        _ => Err(format!("{value:?} is not BASELINE=TARGET")),
    }
}

/// Runs the command; the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let token = std::env::var("ROUTESERVICE_TOKEN").ok();
    match cli.command {
        Command::Serve(args) => server::main(ServeConfig {
            listen: args.listen,
            store: args.store,
            auth_reads: args.auth_reads,
            data_dir: args.data_dir,
            seed: args.seed,
            token,
            insecure_no_auth: args.insecure_no_auth,
            log_format: args.log_format,
            requests: RequestLimits {
                body_bytes: args.max_body_bytes,
                timeout: Duration::from_secs(args.request_timeout_secs),
            },
            connections: ConnectionLimits {
                header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
                // The range above keeps it far below any usize.
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            },
            drain_timeout: Duration::from_secs(args.drain_timeout_secs),
            routing: RoutingPolicy {
                objects: args.route_objects,
                route_header: args.route_header,
                cluster_domain: args.cluster_domain,
            },
        }),
        Command::Crd => crd(),
        Command::List(client) => finish(list(&client)),
        Command::Get { name, client } => finish(get(&client, &name)),
        Command::Create {
            name,
            routing_key,
            routes,
            client,
        } => finish(create(&client, token, &name, routing_key, routes)),
        Command::Delete { name, client } => finish(delete(&client, token, &name)),
        Command::Routes {
            routing_key,
            client,
        } => finish(routes(&client, routing_key.as_deref())),
        Command::CheckConfig { files } => check_configs(&files),
        Command::Sign(args) => match sign(&args, SystemTime::now()) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
    }
}

/// `sign`: the signed key, or the preview link carrying it, at `now`.
fn sign(args: &SignArgs, now: SystemTime) -> Result<String, String> {
    let secret = match &args.secret_file {
        Some(path) => {
            std::fs::read(path).map_err(|e| format!("--secret-file {}: {e}", path.display()))?
        }
        None => std::env::var_os(&args.secret_env)
            .ok_or_else(|| {
                format!(
                    "--secret-env: environment variable {} is not set",
                    args.secret_env
                )
            })?
            .into_encoded_bytes(),
    };
    let secret = Secret::new(&secret).map_err(|e| format!("the secret {e}"))?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_owned())?;
    let expiry = now.saturating_add(args.ttl).as_secs();
    let token = signed_key::sign(&secret, &args.key, expiry).map_err(|e| format!("--key: {e}"))?;
    Ok(match &args.link {
        None => token,
        Some(url) => {
            let (base, fragment) = url
                .split_once('#')
                .map_or((url.as_str(), None), |(b, f)| (b, Some(f)));
            let separator = if base.contains('?') { '&' } else { '?' };
            let mut link = format!("{base}{separator}{}={token}", args.query_parameter);
            if let Some(fragment) = fragment {
                link.push('#');
                link.push_str(fragment);
            }
            link
        }
    })
}

/// `check-config`: every file checked, each one's verdict on its own line.
fn check_configs(files: &[PathBuf]) -> ExitCode {
    let mut all_valid = true;
    for file in files {
        match check_config(file) {
            Ok(()) => println!("{}: OK", file.display()),
            Err(error) => {
                all_valid = false;
                println!("{}: {error}", file.display());
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Checks one file as the filter would see its configuration: JSON as is,
/// a WasmPlugin's `spec.pluginConfig` as the JSON Istio hands the filter.
pub fn check_config(file: &Path) -> Result<(), String> {
    let is_yaml = file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let json = if is_yaml {
        sandbox_router_manifests::plugin_config_json(file)
            // The error names the file already; the caller prints it first.
            .map_err(|e| {
                e.to_string()
                    .replacen(&format!("{}: ", file.display()), "", 1)
            })?
            .into_bytes()
    } else {
        std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?
    };
    FilterConfig::from_json(&json)
        .map(drop)
        .map_err(|e| format!("invalid configuration: {e}"))
}

fn finish(result: Result<String, ClientError>) -> ExitCode {
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(out.as_bytes()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("routeservice: {e}");
            match e {
                ClientError::Unreachable { .. } => ExitCode::from(EXIT_UNREACHABLE),
                ClientError::Server { status: 401, .. } => {
                    eprintln!(
                        "routeservice: writes need ROUTESERVICE_TOKEN set to the server's token"
                    );
                    ExitCode::FAILURE
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, ClientError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| ClientError::BadResponse(e.to_string()))
}

fn list(args: &ClientArgs) -> Result<String, ClientError> {
    let list = Client::new(&args.server, None).list()?;
    if args.output == Output::Json {
        return json(&list);
    }
    let mut rows = vec![[
        "NAME".to_owned(),
        "ROUTING KEY".to_owned(),
        "VERSION".to_owned(),
        "ROUTES (BASELINE=TARGET)".to_owned(),
    ]];
    for sandbox in &list.sandboxes {
        for (i, route) in sandbox.routes.iter().enumerate() {
            let first = i == 0;
            rows.push([
                if first {
                    sandbox.name.clone()
                } else {
                    String::new()
                },
                if first {
                    sandbox.routing_key.clone()
                } else {
                    String::new()
                },
                if first {
                    sandbox.version.to_string()
                } else {
                    String::new()
                },
                format!("{}={}", route.baseline, route.target),
            ]);
        }
    }
    let mut out = table(&rows);
    out.push_str(&format!(
        "{} sandboxes, table version {}\n",
        list.sandboxes.len(),
        list.version
    ));
    Ok(out)
}

fn get(args: &ClientArgs, name: &str) -> Result<String, ClientError> {
    let sandbox = Client::new(&args.server, None).get(name)?;
    if args.output == Output::Json {
        return json(&sandbox);
    }
    let mut out = format!(
        "name:        {}\nrouting key: {}\nversion:     {}\nroutes:\n",
        sandbox.name, sandbox.routing_key, sandbox.version
    );
    for route in &sandbox.routes {
        out.push_str(&format!("  {} -> {}\n", route.baseline, route.target));
    }
    Ok(out)
}

fn create(
    args: &ClientArgs,
    token: Option<String>,
    name: &str,
    routing_key: String,
    routes: Vec<SandboxRoute>,
) -> Result<String, ClientError> {
    let spec = SandboxSpec {
        routing_key,
        routes,
    };
    let (stored, sandbox) = Client::new(&args.server, token).put(name, &spec)?;
    if args.output == Output::Json {
        return json(&sandbox);
    }
    let verb = match stored {
        Stored::Created => "created",
        Stored::Replaced => "stored",
    };
    Ok(format!(
        "{verb} sandbox {} (routing key {}, {} routes, version {})\n",
        sandbox.name,
        sandbox.routing_key,
        sandbox.routes.len(),
        sandbox.version
    ))
}

fn delete(args: &ClientArgs, token: Option<String>, name: &str) -> Result<String, ClientError> {
    Client::new(&args.server, token).delete(name)?;
    Ok(format!("deleted sandbox {name}\n"))
}

fn routes(args: &ClientArgs, routing_key: Option<&str>) -> Result<String, ClientError> {
    let list = Client::new(&args.server, None).routes(routing_key)?;
    if args.output == Output::Json {
        return json(&list);
    }
    let mut rows = vec![[
        "ROUTING KEY".to_owned(),
        "BASELINE".to_owned(),
        "TARGET".to_owned(),
        "SANDBOX".to_owned(),
    ]];
    for route in &list.routes {
        rows.push([
            route.routing_key.clone(),
            route.baseline.clone(),
            route.target.clone(),
            route.sandbox.clone(),
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&format!(
        "{} routes, table version {}\n",
        list.routes.len(),
        list.version
    ));
    Ok(out)
}

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_router_core::signed_key::Verifier;

    fn sign_args(extra: &[&str]) -> SignArgs {
        let mut argv = vec!["routeservice", "sign", "--key", "pr-42", "--ttl", "2h"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Sign(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sign_mints_a_key_the_gateway_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let file = file.to_str().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let token = sign(&sign_args(&["--secret-file", file]), now).unwrap();
        // printf 'pr-42.1767232800' | openssl dgst -sha256 -hmac <secret> -binary | basenc --base64url
        assert_eq!(
            token,
            "pr-42.1767232800.ZxKaiXKdlZOVYVID7CUeR9W0j3jNY41sryGJwnx7PxQ"
        );
        let verifier = Verifier {
            secrets: vec![Secret::new(b"0123456789abcdef0123456789abcdef").unwrap()],
            max_ttl_seconds: 86_400,
        };
        assert_eq!(verifier.verify(&token, 1_767_225_600).unwrap().key, "pr-42");
        let link = sign(
            &sign_args(&[
                "--secret-file",
                file,
                "--link",
                "https://shop.example.com/p?a=1#top",
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            link,
            format!("https://shop.example.com/p?a=1&sd-routing-key={token}#top")
        );
    }

    #[test]
    fn sign_errors_name_what_is_wrong() {
        let now = SystemTime::now();
        let missing = sign_args(&["--secret-env", "SANDBOX_ROUTER_TEST_UNSET_SECRET"]);
        assert_eq!(
            sign(&missing, now).unwrap_err(),
            "--secret-env: environment variable SANDBOX_ROUTER_TEST_UNSET_SECRET is not set"
        );
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "short").unwrap();
        let args = sign_args(&["--secret-file", short.to_str().unwrap()]);
        assert_eq!(
            sign(&args, now).unwrap_err(),
            "the secret is shorter than 32 bytes"
        );
        for bad_ttl in ["0s", "soon", "-1h"] {
            let argv = ["routeservice", "sign", "--key", "k", "--ttl", bad_ttl];
            assert!(Cli::try_parse_from(argv).is_err(), "{bad_ttl}");
        }
        let long = dir.path().join("long");
        std::fs::write(&long, [b'x'; 32]).unwrap();
        let mut args = sign_args(&["--secret-file", long.to_str().unwrap()]);
        args.key = "pr 42".to_owned();
        assert!(sign(&args, now).unwrap_err().starts_with("--key: "));
    }

    #[test]
    fn routes_are_baseline_equals_target() {
        let r = parse_route("a.b=c.d").unwrap();
        assert_eq!((r.baseline.as_str(), r.target.as_str()), ("a.b", "c.d"));
        for bad in ["a.b", "=c", "a=", ""] {
            assert!(parse_route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_parses() {
        Cli::try_parse_from([
            "routeservice",
            "create",
            "pr-42",
            "--routing-key",
            "pr-42",
            "--route",
            "a.b=c.d",
            "--route",
            "e.f=g.h",
        ])
        .unwrap();
        assert!(
            Cli::try_parse_from(["routeservice", "create", "x", "--routing-key", "k"]).is_err()
        );
        assert!(Cli::try_parse_from(["routeservice"]).is_err());
    }

    #[test]
    fn check_config_takes_files() {
        let cli =
            Cli::try_parse_from(["routeservice", "check-config", "a.json", "b.yaml"]).unwrap();
        assert!(matches!(cli.command, Command::CheckConfig { files } if files.len() == 2));
        assert!(Cli::try_parse_from(["routeservice", "check-config"]).is_err());
    }

    #[test]
    fn tables_align() {
        let out = table(&[
            ["A".to_owned(), "B".to_owned()],
            ["long".to_owned(), "x".to_owned()],
        ]);
        assert_eq!(out, "A     B\nlong  x\n");
    }
}
