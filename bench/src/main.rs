//! `make bench`: what a request through sandbox-router costs, side by side
//! with what users would run instead, on the same Envoy binary.
//!
//! One Envoy (`--concurrency 1`, pinned with `taskset` to CPU `BENCH_ENVOY_CPU`,
//! default 0) gets one listener per scenario; `wrk` (pinned to
//! `BENCH_LOAD_CPU`, default 1) drives each in turn, the scenarios interleaved
//! over `BENCH_ROUNDS` rounds of `BENCH_SECONDS` each; the results are the
//! medians. Routes end in `direct_response` so only proxy work is measured,
//! except the `*_upstream` pair, which goes to a real (echo) upstream.
//!
//! Writes `target/bench/results.json`, `report.md` and `report.png`.
//! `--smoke` checks that every scenario answers as it should and runs wrk for
//! one second on one scenario (for `make test`), writing nothing but a line.

mod callgrind;
mod report;
mod scenarios;
mod sync;
mod wrk;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use sandbox_router_e2e::child::GuardedChild;
use sandbox_router_e2e::client::Request;
use sandbox_router_e2e::routeservice::{self, RouteService};
use sandbox_router_e2e::upstream::{Identity, Upstream};
use serde_json::Value;

use crate::scenarios::{Expect, Scenario, Setup};
use crate::wrk::Sample;

/// Sandboxes stored in the RouteService (and synced into the filter).
pub const SANDBOXES: usize = 10_000;
/// Sandboxes of the second RouteService (`router_hit_100k`).
pub const SANDBOXES_LARGE: usize = 100_000;

fn main() -> Result<()> {
    let smoke = std::env::args().any(|arg| arg == "--smoke");
    let table_sync = std::env::args().any(|arg| arg == "--sync");
    let mut settings = Settings::from_env(smoke, !table_sync)?;
    if table_sync {
        return sync::run(&settings);
    }
    if std::env::args().any(|arg| arg == "--callgrind") {
        settings.callgrind = true;
        return callgrind::run(&settings);
    }
    if smoke {
        settings.only.clear();
    }
    run(&settings)
}

/// What the run is told by its environment.
pub struct Settings {
    pub smoke: bool,
    pub rounds: usize,
    pub seconds: u64,
    pub connections: u32,
    pub envoy_cpu: Option<String>,
    pub load_cpu: Option<String>,
    pub envoy_bin: PathBuf,
    pub router_wasm: PathBuf,
    pub floor_wasm: PathBuf,
    pub out_dir: PathBuf,
    /// Where criterion wrote the core's micro-benchmarks (`target/criterion`).
    pub criterion_dir: PathBuf,
    /// Scenarios to measure (`BENCH_SCENARIOS`, comma-separated); empty: all.
    pub only: Vec<String>,
    /// Envoy runs under `valgrind --tool=callgrind` (`--callgrind`).
    pub callgrind: bool,
}

/// `$name` as a number, `default` when unset or empty.
pub(crate) fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(text) if !text.is_empty() => text
            .parse()
            .with_context(|| format!("{name}={text} is not a number")),
        _ => Ok(default),
    }
}

impl Settings {
    /// `need_floor`: the `wasm_floor` fixture must be built (every mode but
    /// `--sync`).
    fn from_env(smoke: bool, need_floor: bool) -> Result<Self> {
        let number = env_number;
        let cpus = report::online_cpus();
        let cpu = |name: &str, default: &str| -> Option<String> {
            if cpus < 2 {
                return None;
            }
            Some(std::env::var(name).unwrap_or_else(|_| default.to_owned()))
                .filter(|cpu| !cpu.is_empty() && cpu != "none")
        };
        let target = sandbox_router_e2e::target_dir();
        let floor_wasm = std::env::var_os("BENCH_FLOOR_WASM").map_or_else(
            || target.join("wasm32-wasip1/release/wasm_floor.wasm"),
            PathBuf::from,
        );
        if need_floor && !floor_wasm.is_file() {
            bail!(
                "{} is missing: cargo build --release --target wasm32-wasip1 -p wasm-floor (make bench does)",
                floor_wasm.display()
            );
        }
        Ok(Self {
            smoke,
            rounds: usize::try_from(number("BENCH_ROUNDS", 5)?)?.max(1),
            seconds: number("BENCH_SECONDS", 3)?.max(1),
            connections: u32::try_from(number("BENCH_CONNECTIONS", 16)?)?.max(1),
            envoy_cpu: cpu("BENCH_ENVOY_CPU", "0"),
            load_cpu: cpu("BENCH_LOAD_CPU", "1"),
            envoy_bin: sandbox_router_e2e::envoy::binary()?,
            router_wasm: sandbox_router_e2e::envoy::plugin_wasm()?,
            floor_wasm,
            out_dir: std::env::var_os("BENCH_OUT_DIR")
                .map_or_else(|| target.join("bench"), PathBuf::from),
            criterion_dir: target.join("criterion"),
            only: std::env::var("BENCH_SCENARIOS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect(),
            callgrind: false,
        })
    }
}

/// Everything running during a bench.
pub struct Rig {
    route_service: RouteService,
    route_service_large: RouteService,
    _envoy: GuardedChild,
    pub envoy_dir: PathBuf,
    pub listeners: BTreeMap<&'static str, SocketAddr>,
    _upstreams: Vec<Upstream>,
    /// Seconds from Envoy being ready until every router plugin had the full table.
    sync_seconds: f64,
}

fn run(settings: &Settings) -> Result<()> {
    std::fs::create_dir_all(&settings.out_dir)?;
    let rig = start_rig(settings)?;
    let checks = check_scenarios(&rig, false)?;
    if settings.smoke {
        let addr = listener(&rig, "router_hit")?;
        let scenario = scenarios::by_name("router_hit")?;
        let sample = wrk::run(settings, &scenario, addr, 1, &settings.out_dir, 0)?;
        if sample.requests == 0 || sample.errors > 0 {
            bail!("bench smoke: wrk on router_hit: {sample:?}");
        }
        println!(
            "bench smoke ok: {} scenarios answer as expected; router_hit {:.0} rps, p99 {:.0} us (1 s, not a measurement)",
            checks.len(),
            sample.rps,
            sample.p99_us
        );
        return Ok(());
    }

    let scenarios = settings.selected(scenarios::all())?;
    let mut samples: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
    let mut rs_calls: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let load_before = report::loadavg();
    for round in 0..settings.rounds {
        for scenario in &scenarios {
            let addr = listener(&rig, scenario.name)?;
            let route_service = rig.route_service_for(scenario);
            let before = lookups(route_service)?;
            let sample = wrk::run(
                settings,
                scenario,
                addr,
                settings.seconds,
                &rig.envoy_dir,
                round,
            )?;
            let after = lookups(route_service)?;
            let calls = rs_calls.entry(scenario.name).or_default();
            calls.0 += after.saturating_sub(before);
            calls.1 += sample.requests;
            eprintln!(
                "round {}/{} {:<20} {:>9.0} rps  p50 {:>7.0} us  p99 {:>7.0} us  errors {}",
                round + 1,
                settings.rounds,
                scenario.name,
                sample.rps,
                sample.p50_us,
                sample.p99_us,
                sample.errors
            );
            samples.entry(scenario.name).or_default().push(sample);
        }
    }
    let load_after = report::loadavg();
    let route_service_load = measure_route_service(settings, &rig)?;
    let envoy_version = envoy_version(&settings.envoy_bin)?;
    let wasm_bytes = std::fs::metadata(&settings.router_wasm)?.len();
    let floor_bytes = std::fs::metadata(&settings.floor_wasm)?.len();
    let results = report::Results {
        envoy: envoy_version,
        scenarios: scenarios
            .iter()
            .filter_map(|s| Some((s.name, report::median(samples.get(s.name)?))))
            .collect(),
        route_service_calls: rs_calls,
        checks,
        wasm_bytes,
        floor_wasm_bytes: floor_bytes,
        rounds: settings.rounds,
        seconds: settings.seconds,
        connections: settings.connections,
        pinned: settings.envoy_cpu.is_some(),
        sync_seconds: rig.sync_seconds,
        route_service_load,
        machine: report::machine(),
        rounds_samples: samples,
        load_before,
        load_after,
        core_parse_decide_2kb_ns: report::criterion_median_ns(
            &settings.criterion_dir,
            "parse_decide/2KB",
        ),
    };
    report::write_all(&settings.out_dir, &results)?;
    println!(
        "wrote {}/results.json, report.md, report.png",
        settings.out_dir.display()
    );
    Ok(())
}

impl Settings {
    /// `scenarios` narrowed to `BENCH_SCENARIOS` (plus `wasm_floor`, which
    /// every ratio needs), in their order.
    pub fn selected(&self, scenarios: Vec<Scenario>) -> Result<Vec<Scenario>> {
        if self.only.is_empty() && self.callgrind {
            // Under valgrind every plugin's start and sync costs minutes.
            return Ok(scenarios
                .into_iter()
                .filter(|s| callgrind::DEFAULT_SCENARIOS.contains(&s.name))
                .collect());
        }
        if self.only.is_empty() {
            return Ok(scenarios.into_iter().filter(|s| !s.is_probe()).collect());
        }
        for name in &self.only {
            if name != "probes" {
                scenarios::by_name(name)?;
            }
        }
        let probes = self.only.iter().any(|n| n == "probes");
        let wanted = |name: &str| {
            self.only
                .iter()
                .any(|n| n == name || scenarios::needs(n) == Some(name))
                || (probes && name.starts_with("probe_"))
        };
        Ok(scenarios
            .into_iter()
            .filter(|s| s.name == "wasm_floor" || wanted(s.name))
            .collect())
    }
}

impl Rig {
    /// The RouteService a scenario's plugin syncs from.
    fn route_service_for(&self, scenario: &Scenario) -> &RouteService {
        if scenario.large_table {
            &self.route_service_large
        } else {
            &self.route_service
        }
    }
}

pub fn listener(rig: &Rig, name: &str) -> Result<SocketAddr> {
    rig.listeners
        .get(name)
        .copied()
        .ok_or_else(|| anyhow!("no listener for scenario {name}"))
}

/// RouteService `GET /v1/routes` calls so far (table syncs and key lookups).
fn lookups(route_service: &RouteService) -> Result<u64> {
    route_service.requests_total(&[("route", "/v1/routes")])
}

pub fn start_rig(settings: &Settings) -> Result<Rig> {
    let run_dir = sandbox_router_e2e::new_run_dir("bench")?;
    let start_route_service = |label: &str, count: usize| -> Result<RouteService> {
        let seed = run_dir.join(format!("{label}.seed.json"));
        std::fs::write(&seed, scenarios::seed(count).to_string())?;
        let mut options = routeservice::Options::for_tests(label)?;
        options.seed = Some(seed);
        RouteService::start(options)
    };
    let route_service = start_route_service("bench-routeservice", SANDBOXES)?;
    let large = settings
        .selected(scenarios::all())?
        .iter()
        .any(|s| s.large_table);
    // Without `router_hit_100k`, the second RouteService holds one sandbox.
    let route_service_large = start_route_service(
        "bench-routeservice-100k",
        if large { SANDBOXES_LARGE } else { 1 },
    )?;

    let baseline = Upstream::start(
        Identity {
            service: "catalog".into(),
            variant: "baseline".into(),
        },
        0,
    )?;
    let fork = Upstream::start(
        Identity {
            service: "catalog".into(),
            variant: scenarios::SANDBOX.into(),
        },
        0,
    )?;

    // Only the scenarios measured get a listener (and a plugin).
    let selected = settings.selected(scenarios::all())?;
    // Every port is held until all are chosen, so that no two scenarios
    // get the same one (a port released at once can come back on the next
    // bind); Envoy binds them once they are released below.
    let mut ports = BTreeMap::new();
    let mut held = Vec::new();
    for scenario in &selected {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        ports.insert(scenario.name, listener.local_addr()?.port());
        held.push(listener);
    }
    drop(held);
    let setup = Setup {
        router_wasm: settings.router_wasm.clone(),
        floor_wasm: settings.floor_wasm.clone(),
        lua_source: std::fs::read_to_string(lua_path("router.lua"))?,
        route_service: route_service.addr(),
        route_service_large: route_service_large.addr(),
        baseline_upstream: baseline.addr(),
        fork_upstream: fork.addr(),
        slow: settings.callgrind,
    };
    let config = scenarios::bootstrap(&setup, &ports);
    let config_path = run_dir.join("envoy.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    let admin_path = run_dir.join("admin-address");
    let console = std::fs::File::create(run_dir.join("envoy.console.log"))?;
    let mut command = if settings.callgrind {
        callgrind::envoy_command(settings, &run_dir)?
    } else {
        pinned(settings.envoy_cpu.as_deref(), &settings.envoy_bin)
    };
    command
        .arg("--config-path")
        .arg(&config_path)
        .args(["--concurrency", "1"])
        .args([
            "--base-id",
            &(std::process::id() % 1_000_000 * 100 + 99).to_string(),
        ])
        .arg("--disable-hot-restart")
        .arg("--admin-address-path")
        .arg(&admin_path)
        .arg("--log-path")
        .arg(run_dir.join("envoy.log"))
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    let envoy = GuardedChild::spawn(command)?;
    // Under valgrind, Envoy starts and syncs some 50 times slower.
    let patience = Duration::from_secs(if settings.callgrind { 1200 } else { 60 });
    let admin = wait_for_admin(&envoy, &admin_path, &run_dir, patience)?;
    let ready = Instant::now();
    let routers = selected.iter().filter(|s| s.router_plugin()).count() as u64;
    if routers > 0 {
        wait_for_table(admin, routers, patience)?;
    }
    if large {
        wait_for_large_table(&route_service_large, patience)?;
    }
    let sync_seconds = ready.elapsed().as_secs_f64();
    eprintln!(
        "envoy ready (run dir {}); {routers} router plugins synced {SANDBOXES} sandboxes in {sync_seconds:.2} s",
        run_dir.display()
    );
    let listeners = ports
        .into_iter()
        .map(|(name, port)| (name, SocketAddr::from(([127, 0, 0, 1], port))))
        .collect();
    Ok(Rig {
        route_service,
        route_service_large,
        _envoy: envoy,
        envoy_dir: run_dir,
        listeners,
        _upstreams: vec![baseline, fork],
        sync_seconds,
    })
}

/// `taskset -c <cpu> <program>`, or just the program.
pub fn pinned(cpu: Option<&str>, program: &Path) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu).arg(program);
            command
        }
        None => Command::new(program),
    }
}

pub fn lua_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lua").join(name)
}

fn wait_for_admin(
    envoy: &GuardedChild,
    path: &Path,
    dir: &Path,
    patience: Duration,
) -> Result<SocketAddr> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = envoy.exit_status()? {
            bail!(
                "Envoy exited during startup ({status}); see {}/envoy.log and envoy.console.log",
                dir.display()
            );
        }
        let addr = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<SocketAddr>().ok());
        if let Some(addr) = addr {
            if admin_get(addr, "/ready").is_ok_and(|(status, _)| status == 200) {
                return Ok(addr);
            }
        }
        if Instant::now() > deadline {
            bail!("Envoy not ready after {patience:?}; see {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn admin_get(admin: SocketAddr, path: &str) -> Result<(u16, String)> {
    let response = Request::get(path)
        .header("host", admin.to_string())
        .send(admin)?;
    Ok((response.status, response.text()))
}

/// Waits until the plugins' `table_routes` gauge says the whole table is in.
fn wait_for_table(admin: SocketAddr, routers: u64, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    let want = SANDBOXES as u64;
    loop {
        // Under valgrind an admin answer can take longer than the client waits.
        let text = admin_get(admin, "/stats?filter=sandbox_router.table_routes")
            .map(|(_, text)| text)
            .unwrap_or_default();
        let values: Vec<u64> = text
            .lines()
            .filter_map(|line| line.rsplit_once(": "))
            .filter_map(|(_, value)| value.trim().parse().ok())
            .collect();
        // One gauge per VM or per plugin, depending on how Envoy shares them.
        if !values.is_empty() && values.iter().all(|&v| v >= want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the router plugins did not sync {want} routes in {patience:?} ({routers} plugins): {text}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the 100,000-sandbox RouteService has served its whole table
/// (the plugins share the `table_routes` gauge, so it cannot tell), then for
/// the workers' next ticks, when they adopt it. The report's RouteService
/// calls per request of `router_hit_100k` show that it was answered from
/// the synced table (a key lookup would count one).
fn wait_for_large_table(route_service: &RouteService, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    while route_service.requests_total(&[("route", "/v1/routes"), ("status", "200")])? == 0 {
        if Instant::now() > deadline {
            bail!("the 100k RouteService served no table in {patience:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The plugin parses ~14 MB of JSON, then every worker adopts it on a tick.
    let ticks = if patience > Duration::from_secs(60) {
        90
    } else {
        5
    };
    std::thread::sleep(Duration::from_secs(ticks));
    Ok(())
}

/// Sends each scenario's request once (and the `vs_regex` probes) and checks
/// who answers. An unexpected answer stops the bench: it would measure the
/// wrong thing.
pub fn check_scenarios(rig: &Rig, patient: bool) -> Result<Vec<report::Check>> {
    let mut checks = Vec::new();
    for scenario in scenarios::all() {
        let Ok(addr) = listener(rig, scenario.name) else {
            continue; // not selected
        };
        let baggage = match &scenario.expect {
            Expect::Miss => Some(format!("{}=check-miss-1", scenarios::BAGGAGE_KEY)),
            _ => scenario.baggage.clone(),
        };
        let want = scenario.expect.served_by();
        // Under valgrind a worker may be busy for minutes (starting and
        // syncing its plugins): wait for the right answer.
        let deadline = Instant::now() + Duration::from_secs(if patient { 900 } else { 0 });
        let send = || served_by(addr, scenario.host, baggage.as_deref(), &scenario.headers);
        let mut got = send();
        while got.as_ref().map_or(true, |got| *got != want) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(5));
            got = send();
        }
        let got = got?;
        if got != want {
            bail!(
                "scenario {}: answered by {got:?}, expected {want:?} (run dir {})",
                scenario.name,
                rig.envoy_dir.display()
            );
        }
        checks.push(report::Check {
            scenario: scenario.name.to_owned(),
            baggage: baggage
                .map(|b| abbreviate(&b))
                .unwrap_or_else(|| "(none)".into()),
            served_by: got,
        });
    }
    let Ok(vs) = listener(rig, "vs_regex") else {
        return Ok(checks);
    };
    for probe in scenarios::regex_probes() {
        let got = served_by(vs, scenarios::HOST, Some(probe), &[])?;
        checks.push(report::Check {
            scenario: "vs_regex probe".into(),
            baggage: probe.to_owned(),
            served_by: got,
        });
    }
    Ok(checks)
}

fn abbreviate(text: &str) -> String {
    if text.len() <= 60 {
        return text.to_owned();
    }
    let head: String = text.chars().take(40).collect();
    format!("{head}... ({} bytes)", text.len())
}

/// Who answered: the `x-served-by` header of an upstream, or the body of a
/// `direct_response`.
fn served_by(
    addr: SocketAddr,
    host: &str,
    baggage: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<String> {
    let mut request = Request::get("/").header("host", host);
    if let Some(baggage) = baggage {
        request = request.header("baggage", baggage);
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    // A busy Envoy (under valgrind) may answer later than the client waits.
    let response = match request.send(addr) {
        Ok(response) => response,
        Err(_) => request.send(addr)?,
    };
    if response.status != 200 {
        bail!("{addr}: status {} {}", response.status, response.text());
    }
    Ok(response
        .header("x-served-by")
        .unwrap_or_else(|| response.text().trim().to_owned()))
}

fn envoy_version(binary: &Path) -> Result<String> {
    let output = Command::new(binary).arg("--version").output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let build = text
        .split_once("version:")
        .map_or(text.as_ref(), |(_, build)| build)
        .trim();
    Ok(build
        .split('/')
        .nth(1)
        .map_or_else(|| build.to_owned(), str::to_owned))
}

/// Item 5: the RouteService under load, and the full table's size and fetch time.
fn measure_route_service(settings: &Settings, rig: &Rig) -> Result<report::RouteServiceLoad> {
    let addr = rig.route_service.addr();
    let key = scenarios::key_of(SANDBOXES / 2);
    let scenario = Scenario::route_service_lookup(&key);
    let seconds = settings.seconds.max(3);
    let sample = wrk::run(settings, &scenario, addr, seconds, &rig.envoy_dir, 0)?;
    let mut fetches = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let response = rig.route_service.get("/v1/routes")?;
        fetches.push(started.elapsed().as_secs_f64() * 1000.0);
        if response.status != 200 {
            bail!("GET /v1/routes: {}", response.status);
        }
        let table: Value = response.json()?;
        let routes = table
            .get("routes")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if routes < SANDBOXES {
            bail!("GET /v1/routes has {routes} routes, expected {SANDBOXES}");
        }
        bytes = response.text().len();
    }
    fetches.sort_by(f64::total_cmp);
    Ok(report::RouteServiceLoad {
        key_lookup: sample,
        table_bytes: bytes,
        table_fetch_ms: fetches.get(fetches.len() / 2).copied().unwrap_or(0.0),
    })
}
