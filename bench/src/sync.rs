//! `sandbox-router-bench --sync` (run by `make bench`, alone by `make
//! bench-sync`): what the table sync costs as the number of sandboxes grows
//! (issue 12, "Scale with the number of sandboxes and sidecars").
//!
//! For each table size (`BENCH_SYNC_SIZES`, default `10000,100000`): a real
//! RouteService seeded with that many sandboxes and a real Envoy
//! (`--concurrency 2`, the demo mesh's sidecar, header mode) whose plugin
//! syncs from it every `BENCH_SYNC_INTERVAL_MS` (default 1000). Measured:
//! - **full sync**: from Envoy ready to every worker answering from the
//!   whole table (20 requests in a row counted `table_hit`);
//! - **bytes per sidecar per single-sandbox change**: the delta bodies the
//!   RouteService sent, per `?since=` answer (its own counters), and one
//!   whole HTTP/1.1 response (status line and headers included);
//! - **write to every worker**: from a PUT's answer to 20 requests in a
//!   row routed by the new content from the table, over
//!   `BENCH_SYNC_CHANGES` (default 10) changes; it includes waiting for
//!   the next sync (0 to one interval), so the interval is reported beside it;
//! - **table memory per Envoy**: the Envoy's resident memory with the table,
//!   minus the same Envoy's with a one-sandbox table.
//!
//! Writes `target/bench/sync.json` and `sync.md`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use sandbox_router_e2e::client::Request;
use sandbox_router_e2e::envoy::PLUGIN_COUNTS_FLUSH_PERIOD;
use sandbox_router_e2e::mesh::{self, DemoMesh, MeshOptions, Mode, RouteServiceSettings};
use sandbox_router_e2e::routeservice::{self, RouteService};
use serde_json::{json, Value};

use crate::{report, scenarios, Settings};

/// The sandbox whose changes are timed: it always has a route (to
/// `elsewhere` or to catalog), so every worker answers its key from the
/// table, never from a lookup.
const PROBE: &str = "sync-probe";

/// Requests in a row that must all be answered as expected.
const RUN: u64 = 20;

struct Sizes {
    sandboxes: usize,
    full_table_bytes: u64,
    full_sync: Duration,
    delta_body_bytes: f64,
    delta_response_bytes: usize,
    write_to_workers: Vec<Duration>,
    rss_table_kib: u64,
    rss_empty_kib: u64,
}

pub fn run(settings: &Settings) -> Result<()> {
    let number = crate::env_number;
    let sizes: Vec<usize> = std::env::var("BENCH_SYNC_SIZES")
        .unwrap_or_else(|_| "10000,100000".to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().context("BENCH_SYNC_SIZES"))
        .collect::<Result<_>>()?;
    let intervals: Vec<u64> = std::env::var("BENCH_SYNC_INTERVAL_MS")
        .unwrap_or_else(|_| "1000,100".to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().context("BENCH_SYNC_INTERVAL_MS"))
        .collect::<Result<_>>()?;
    let changes = number("BENCH_SYNC_CHANGES", 10)?.max(1);
    let mut markdown = format!(
        "# Table sync as the table grows\n\n{}; Envoy `--concurrency 2` (2 workers); \
         {changes} single-sandbox changes per row.\n\n\
         | sandboxes | `syncIntervalMs` (sync check / root tick) | full table (bytes) | full sync, Envoy ready to every worker (ms) \
         | delta body per change (bytes) | whole delta response (bytes) \
         | write to every worker p50 / max (ms) | table memory per Envoy (MiB RSS) |\n\
         |---|---|---|---|---|---|---|---|\n",
        report::machine(),
    );
    let mut rows = Vec::new();
    for interval_ms in intervals {
        let sync = RouteServiceSettings {
            // The 100,000-sandbox table is some 14 MB: more than 200 ms to fetch.
            timeout_ms: 10_000,
            sync_interval_ms: interval_ms,
            cache_ttl_ms: 30_000,
            negative_cache_ttl_ms: 2000,
        };
        let results = measure(&sizes, &sync, changes)?;
        let (json, md) = render(&results, &sync);
        markdown.push_str(&md);
        rows.extend(json);
    }
    markdown.push_str(
        "\nWrite to every worker includes the wait for the next sync (0 to one \
         `syncIntervalMs`), the fetch and the other worker's next root tick. Table memory is the \
         Envoy's resident memory with the table minus the same Envoy's with a one-sandbox table \
         (both workers' tables, the shared copy, and what the JSON parse left in the Wasm heap).\n",
    );
    let json = json!({
        "machine": report::machine(),
        "changes": changes,
        "results": rows,
    });
    std::fs::create_dir_all(&settings.out_dir)?;
    std::fs::write(
        settings.out_dir.join("sync.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(settings.out_dir.join("sync.md"), &markdown)?;
    println!("{markdown}");
    Ok(())
}

fn measure(sizes: &[usize], sync: &RouteServiceSettings, changes: u64) -> Result<Vec<Sizes>> {
    let sync = *sync;
    // The same Envoy with a one-sandbox table: the memory baseline.
    let (empty_rss, _) = {
        let rs = start_route_service("sync-empty", 1)?;
        let mesh = start_mesh("sync-empty", &sync, &rs)?;
        wait_for_table(&mesh, 2, Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(2 * sync.tick_ms()));
        (rss_kib(mesh.envoy().pid())?, ())
    };
    let mut results = Vec::new();
    for &sandboxes in sizes {
        println!(
            "==> table sync with {sandboxes} sandboxes, syncIntervalMs {}",
            sync.sync_interval_ms
        );
        let rs = start_route_service(&format!("sync-{sandboxes}"), sandboxes)?;
        let mesh = start_mesh(&format!("sync-{sandboxes}"), &sync, &rs)?;
        let ready = Instant::now();
        wait_for_table(&mesh, sandboxes + 1, Duration::from_secs(300))?;
        let full_sync = ready.elapsed();
        // Let every worker adopt it (and the parse's garbage settle).
        std::thread::sleep(Duration::from_millis(4 * sync.tick_ms()));
        let rss_table = rss_kib(mesh.envoy().pid())?;
        let full_table_bytes = metric(&rs, "routeservice_table_read_bytes_total{answer=\"full\"}")?;

        let deltas_before = metric(&rs, "routeservice_table_reads_total{answer=\"delta\"}")?;
        let bytes_before = metric(&rs, "routeservice_table_read_bytes_total{answer=\"delta\"}")?;
        let mut write_to_workers = Vec::new();
        let mut version = 0;
        for change in 0..changes {
            let forks_catalog = change % 2 == 0;
            let baseline = if forks_catalog {
                "catalog"
            } else {
                "elsewhere"
            };
            let written = rs.put_sandbox(
                PROBE,
                PROBE,
                &[(
                    mesh::fqdn(baseline).as_str(),
                    mesh::fqdn(&mesh::fork_name(baseline, PROBE)).as_str(),
                )],
            )?;
            let acked = Instant::now();
            version = written.version;
            let want = if forks_catalog {
                format!("catalog/{PROBE}")
            } else {
                "catalog/baseline".to_owned()
            };
            every_worker(&mesh, &want, Duration::from_secs(30))?;
            write_to_workers.push(acked.elapsed());
        }
        let deltas =
            metric(&rs, "routeservice_table_reads_total{answer=\"delta\"}")? - deltas_before;
        let delta_bytes =
            metric(&rs, "routeservice_table_read_bytes_total{answer=\"delta\"}")? - bytes_before;
        if deltas == 0 {
            bail!("{sandboxes} sandboxes: no delta was served");
        }
        let full_reads = metric(&rs, "routeservice_table_reads_total{answer=\"full\"}")?;
        if full_reads != 1 {
            bail!("{sandboxes} sandboxes: {full_reads} full tables served, expected 1");
        }
        // One whole answer as a sidecar receives it.
        let response = rs.get(&format!("/v1/routes?since={}", version - 1))?;
        let delta_response_bytes = format!("HTTP/1.1 {} OK\r\n", response.status).len()
            + response
                .headers
                .iter()
                .map(|(name, value)| name.len() + 2 + value.len() + 2)
                .sum::<usize>()
            + 2
            + response.body.len();
        results.push(Sizes {
            sandboxes,
            full_table_bytes,
            full_sync,
            delta_body_bytes: delta_bytes as f64 / deltas as f64,
            delta_response_bytes,
            write_to_workers,
            rss_table_kib: rss_table,
            rss_empty_kib: empty_rss,
        });
    }
    Ok(results)
}

fn start_route_service(label: &str, sandboxes: usize) -> Result<RouteService> {
    let mut options = routeservice::Options::for_tests(label)?;
    let mut seed = scenarios::seed(sandboxes);
    if let Some(sandboxes) = seed.get_mut("sandboxes").and_then(Value::as_object_mut) {
        sandboxes.insert(
            PROBE.to_owned(),
            json!({"routingKey": PROBE, "routes": [{
                "baseline": mesh::fqdn("elsewhere"),
                "target": mesh::fqdn(&mesh::fork_name("elsewhere", PROBE)),
            }]}),
        );
    }
    let path = options.log_dir.join("seed.json");
    std::fs::write(&path, seed.to_string())?;
    options.seed = Some(path);
    RouteService::start(options)
}

fn start_mesh(label: &str, sync: &RouteServiceSettings, rs: &RouteService) -> Result<DemoMesh> {
    let config = mesh::route_service_plugin_config(Mode::Header, sync);
    let mut options = MeshOptions::for_tests(Mode::Header, config);
    options.label = label.to_owned();
    options.sandboxes = vec![PROBE.to_owned()];
    options.route_service = Some(rs.addr());
    DemoMesh::start(&options)
}

/// The plugin's counter or gauge `name` (without its prefix).
fn plugin_stat(mesh: &DemoMesh, name: &str) -> Result<u64> {
    Ok(mesh
        .envoy()
        .stats()?
        .get(&format!("wasmcustom.sandbox_router.{name}"))
        .copied()
        .unwrap_or(0))
}

/// Waits until the table gauge shows `routes` and `RUN` requests in a row
/// with the probe's key are answered from the table (so every worker that
/// served one holds it).
fn wait_for_table(mesh: &DemoMesh, routes: usize, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    while plugin_stat(mesh, "table_routes")? < routes as u64 {
        if Instant::now() > deadline {
            bail!("no table of {routes} routes within {patience:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    every_worker(mesh, "catalog/baseline", patience)
}

/// Polls until `RUN` requests in a row (each on a new connection, so both
/// workers take some) for catalog with the probe's key are served by
/// `want`, all counted `table_hit`.
fn every_worker(mesh: &DemoMesh, want: &str, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        let hits = plugin_stat(mesh, "table_hit")?;
        let mut all = true;
        for _ in 0..RUN {
            let response = Request::get("/")
                .header("host", mesh::fqdn("catalog"))
                .header("baggage", format!("sd-routing-key={PROBE}"))
                .send(mesh.listener())?;
            if response.header("x-served-by").as_deref() != Some(want) {
                all = false;
                break;
            }
        }
        if all && plugin_stat(mesh, "table_hit")? - hits == RUN {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not every worker served {want} from its table within {patience:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn metric(rs: &RouteService, series: &str) -> Result<u64> {
    let text = rs.metrics()?;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .context(format!("no {series} in /metrics"))?
        .trim()
        .parse()
        .context(series.to_owned())
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How often a worker's root context ticks: the sync's own check period,
/// but at least as often as a worker adds its counts to Envoy's (README,
/// *Metrics*). A worker adopts a published table on its next tick.
fn root_tick_ms(sync: &RouteServiceSettings) -> u64 {
    let flush_ms = u64::try_from(PLUGIN_COUNTS_FLUSH_PERIOD.as_millis()).unwrap_or(u64::MAX);
    sync.tick_ms().min(flush_ms)
}

fn render(results: &[Sizes], sync: &RouteServiceSettings) -> (Vec<Value>, String) {
    let mut md = String::new();
    let mut rows = Vec::new();
    for r in results {
        let mut sorted = r.write_to_workers.clone();
        sorted.sort();
        let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
        let max = sorted.last().copied().unwrap_or_default();
        let table_mib = r.rss_table_kib.saturating_sub(r.rss_empty_kib) as f64 / 1024.0;
        md.push_str(&format!(
            "| {} | {} ({} / {}) | {} | {:.0} | {:.0} | {} | {:.0} / {:.0} | {:.1} |\n",
            r.sandboxes,
            sync.sync_interval_ms,
            sync.tick_ms(),
            root_tick_ms(sync),
            r.full_table_bytes,
            ms(r.full_sync),
            r.delta_body_bytes,
            r.delta_response_bytes,
            ms(p50),
            ms(max),
            table_mib,
        ));
        rows.push(json!({
            "sandboxes": r.sandboxes,
            "syncIntervalMs": sync.sync_interval_ms,
            "tickMs": sync.tick_ms(),
            "rootTickMs": root_tick_ms(sync),
            "fullTableBytes": r.full_table_bytes,
            "fullSyncMs": ms(r.full_sync),
            "deltaBodyBytesPerChange": r.delta_body_bytes,
            "deltaResponseBytes": r.delta_response_bytes,
            "writeToEveryWorkerMs": r.write_to_workers.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "envoyRssKiB": r.rss_table_kib,
            "envoyRssOneSandboxKiB": r.rss_empty_kib,
        }));
    }
    (rows, md)
}
