//! `results.json`, `report.md` and `report.png`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde_json::{json, Value};

use crate::wrk::Sample;

pub struct Check {
    pub scenario: String,
    pub baggage: String,
    pub served_by: String,
}

pub struct RouteServiceLoad {
    pub key_lookup: Sample,
    pub table_bytes: usize,
    pub table_fetch_ms: f64,
}

pub struct Results {
    pub envoy: String,
    /// In run order.
    pub scenarios: Vec<(&'static str, Sample)>,
    /// RouteService `/v1/routes` calls and requests sent, per scenario.
    pub route_service_calls: BTreeMap<&'static str, (u64, u64)>,
    pub checks: Vec<Check>,
    pub wasm_bytes: u64,
    pub floor_wasm_bytes: u64,
    pub rounds: usize,
    pub seconds: u64,
    pub connections: u32,
    pub pinned: bool,
    pub sync_seconds: f64,
    pub route_service_load: RouteServiceLoad,
    pub machine: String,
    /// Every round's sample per scenario, for per-round ratios.
    pub rounds_samples: BTreeMap<&'static str, Vec<Sample>>,
    /// `/proc/loadavg` before and after the measured rounds.
    pub load_before: String,
    pub load_after: String,
    /// The core's `parse_decide/2KB` (criterion, native, median ns), run by
    /// `make bench` before the Envoy rig; `None` if it was not run.
    pub core_parse_decide_2kb_ns: Option<f64>,
}

/// The median of criterion's last run of `group/bench` under
/// `criterion_dir` (`target/criterion`), in ns.
pub fn criterion_median_ns(criterion_dir: &std::path::Path, bench: &str) -> Option<f64> {
    let path = criterion_dir.join(bench).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: Value = serde_json::from_str(&text).ok()?;
    estimates.get("median")?.get("point_estimate")?.as_f64()
}

/// The routed scenarios and their floors: the same request, the same host
/// calls, no decision (issue 12).
pub const ROUTED_FLOORS: [(&str, &str); 3] = [
    ("router_hit", "wasm_floor_routed"),
    ("router_hit_large", "wasm_floor_routed_large"),
    ("router_hit_upstream", "wasm_floor_routed_upstream"),
];

/// The routed scenarios and the least any Wasm filter routing the same
/// request by a header costs: the floor's one read and the header set,
/// nothing else (no check, no access-log field, no decision).
pub const MARKED_FLOORS: [(&str, &str); 3] = [
    ("router_hit", "wasm_floor_marked"),
    ("router_hit_large", "wasm_floor_marked_large"),
    ("router_hit_upstream", "wasm_floor_marked_upstream"),
];

/// The floors whose ratio to `base` is a ceiling of the goal `scenario` >=
/// x `base`: what a filter making the routed request's host calls and
/// deciding nothing (`wasm_floor_routed*`), and one only setting the header
/// (`wasm_floor_marked*`), reach against the same base. None when the base
/// is itself a routed request's floor.
pub fn ceiling_floors<'a>(
    scenario: &'a str,
    base: &'a str,
) -> impl Iterator<Item = &'static str> + 'a {
    let base_is_floor = ROUTED_FLOORS.iter().any(|(_, floor)| *floor == base);
    ROUTED_FLOORS
        .iter()
        .chain(MARKED_FLOORS.iter())
        .filter(move |(routed, _)| !base_is_floor && *routed == scenario)
        .map(|(_, floor)| *floor)
}

/// The goals that are a same-run ratio of two scenarios: `(scenario,
/// base, minimum)`, `scenario` / `base` in rps. `make bench-callgrind`
/// reads the same goals in instructions (`base` / `scenario`).
pub const RATIO_GOALS: &[(&str, &str, f64)] = &[
    // Issue 12, as written.
    ("router_no_key", "wasm_floor", 0.97),
    ("router_hit", "wasm_floor", 0.95),
    ("router_hit_large", "wasm_floor", 0.93),
    ("router_hit", "lua", 1.10),
    ("router_hit_upstream", "wasm_floor_upstream", 0.97),
    ("router_hit_100k", "router_hit", 0.97),
    // Issue 12, the routed goals over the floors that make a routed
    // request's host calls and decide nothing: what the filter's own work
    // costs (docs/performance.md, session 10).
    ("router_hit", "wasm_floor_routed", 0.95),
    ("router_hit_large", "wasm_floor_routed_large", 0.93),
    ("router_hit_upstream", "wasm_floor_routed_upstream", 0.97),
    // Issue 14: recovery on, on a sidecar that recorded nothing lately
    // (the common case); the other recovery scenarios are in the table.
    ("recovery_no_key_idle", "router_no_key_traced", 0.90),
];

/// Per-field medians over the rounds.
pub fn median(samples: &[Sample]) -> Sample {
    let med = |f: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = samples.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => values.get(n / 2).copied().unwrap_or(f64::NAN),
            n => {
                let a = values.get(n / 2 - 1).copied().unwrap_or(f64::NAN);
                let b = values.get(n / 2).copied().unwrap_or(f64::NAN);
                (a + b) / 2.0
            }
        }
    };
    Sample {
        rps: med(|s| s.rps),
        p50_us: med(|s| s.p50_us),
        p99_us: med(|s| s.p99_us),
        requests: samples.iter().map(|s| s.requests).sum(),
        errors: samples.iter().map(|s| s.errors).sum(),
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// CPUs of the machine (not of this process's affinity mask, which
/// `make bench` narrows to the load generator's CPU).
pub fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|text| text.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// CPU model, CPU count, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = online_cpus();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cpus} CPUs, Linux {kernel}")
}

impl Results {
    fn get(&self, name: &str) -> Option<&Sample> {
        self.scenarios
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
    }

    /// rps of `name` over rps of `to`: the median over rounds of the
    /// ratio within each round (the two ran seconds apart), which holds up
    /// better than a ratio of medians when the machine's load drifts.
    fn ratio(&self, name: &str, to: &str) -> f64 {
        let (Some(a), Some(b)) = (self.rounds_samples.get(name), self.rounds_samples.get(to))
        else {
            return f64::NAN;
        };
        let ratios: Vec<Sample> = a
            .iter()
            .zip(b)
            .filter(|(_, b)| b.rps > 0.0)
            .map(|(a, b)| Sample {
                rps: a.rps / b.rps,
                ..Sample::default()
            })
            .collect();
        if ratios.is_empty() {
            return f64::NAN;
        }
        median(&ratios).rps
    }

    /// Each routed scenario with the floor that makes its host calls and
    /// decides nothing (`bench/wasm-floor`'s `routed`), and the ratio.
    fn over_routed_floors(&self) -> Vec<(&'static str, &'static str, f64)> {
        ROUTED_FLOORS
            .iter()
            .map(|&(name, floor)| (name, floor, self.ratio(name, floor)))
            .collect()
    }

    fn calls_per_request(&self, name: &str) -> f64 {
        match self.route_service_calls.get(name) {
            Some(&(calls, requests)) if requests > 0 => calls as f64 / requests as f64,
            _ => f64::NAN,
        }
    }

    fn to_json(&self) -> Value {
        let scenarios: serde_json::Map<String, Value> = self
            .scenarios
            .iter()
            .map(|(name, s)| {
                (
                    (*name).to_owned(),
                    json!({
                        "rps": round1(s.rps),
                        "p50_us": round1(s.p50_us),
                        "p99_us": round1(s.p99_us),
                        "requests": s.requests,
                        "errors": s.errors,
                        "routeservice_calls_per_request": self.calls_per_request(name),
                    }),
                )
            })
            .collect();
        let over_routed_floors: serde_json::Map<String, Value> = self
            .over_routed_floors()
            .into_iter()
            .map(|(name, floor, ratio)| {
                (name.to_owned(), json!({ "floor": floor, "ratio": ratio }))
            })
            .collect();
        let load = &self.route_service_load;
        json!({
            "envoy": self.envoy,
            "scenarios": scenarios,
            "over_routed_floors": over_routed_floors,
            "wasm_bytes": self.wasm_bytes,
            "wasm_floor_bytes": self.floor_wasm_bytes,
            "core_parse_decide_2kb_ns": self.core_parse_decide_2kb_ns,
            "rounds": self.rounds,
            "seconds_per_run": self.seconds,
            "connections": self.connections,
            "machine": self.machine,
            "loadavg_before": self.load_before,
            "loadavg_after": self.load_after,
            "routeservice": {
                "sandboxes": crate::SANDBOXES,
                "lookup_rps": round1(load.key_lookup.rps),
                "lookup_p99_us": round1(load.key_lookup.p99_us),
                "table_bytes": load.table_bytes,
                "table_fetch_ms": round1(load.table_fetch_ms),
                "filter_sync_ms": round1(self.sync_seconds * 1000.0),
            },
        })
    }

    fn goals(&self) -> Vec<(String, bool, String)> {
        let mut goals = Vec::new();
        let mut ratio_goal = |name: &str, to: &str, min: f64| {
            let r = self.ratio(name, to);
            // What a filter that makes the same host calls and decides
            // nothing reaches against the same base, and one that only sets
            // the header: the goal's ceilings.
            let ceilings: Vec<String> = ceiling_floors(name, to)
                .map(|floor| (floor, self.ratio(floor, to)))
                .filter(|(_, c)| !c.is_nan())
                .map(|(floor, c)| format!("`{floor}`: {c:.3}"))
                .collect();
            let measured = if ceilings.is_empty() {
                format!("{r:.3}")
            } else {
                format!("{r:.3} ({})", ceilings.join("; "))
            };
            goals.push((
                format!("`{name}` >= {min:.2} x `{to}` (rps)"),
                r >= min,
                measured,
            ));
        };
        for &(name, to, min) in RATIO_GOALS {
            ratio_goal(name, to, min);
        }
        let steady = [
            "router_no_key",
            "router_hit",
            "router_hit_large",
            "router_authority",
        ]
        .iter()
        .map(|n| self.calls_per_request(n))
        .fold(0.0, f64::max);
        goals.push((
            "0 RouteService calls per request in steady state (router_no_key/hit/hit_large/authority)".into(),
            steady < 0.001,
            format!("max {steady:.5} (periodic table syncs only)"),
        ));
        let miss_p99 = self.get("router_miss").map_or(f64::NAN, |s| s.p99_us);
        goals.push((
            "`router_miss` p99 <= timeoutMs (200 ms) + one loopback RTT".into(),
            miss_p99 <= 200_000.0 + 1_000.0,
            format!("{:.0} us", miss_p99),
        ));
        let core = self.core_parse_decide_2kb_ns;
        goals.push((
            "core parse + decide, 2 KB baggage, native (criterion `parse_decide/2KB`) < 1 us"
                .into(),
            core.is_some_and(|ns| ns < 1000.0),
            core.map_or("not run".into(), |ns| format!("{ns:.0} ns (median)")),
        ));
        goals.push((
            "release `.wasm` <= 250 KB (256,000 bytes)".into(),
            self.wasm_bytes <= 256_000,
            format!("{} bytes", self.wasm_bytes),
        ));
        goals
    }

    fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# sandbox-router bench report\n");
        let _ = writeln!(
            md,
            "Envoy {} (`--concurrency 1`{}), wrk 1 thread / {} connections{}, {} rounds x {} s per scenario, \
             interleaved; rps/p50/p99 are medians over rounds, ratios the median of the per-round ratios. \
             Machine: {}; load average {} before, {} after (other work on the machine shows here).\n",
            self.envoy,
            if self.pinned { ", pinned to one CPU" } else { ", not pinned (one CPU)" },
            self.connections,
            if self.pinned { " on the other CPU" } else { "" },
            self.rounds,
            self.seconds,
            self.machine,
            self.load_before,
            self.load_after
        );
        let _ = writeln!(
            md,
            "All scenarios but the `*_upstream` pair end in `direct_response`. Every request but \
             `router_no_key` and `router_miss` carries the same ~300-byte `baggage` with \
             `sd-routing-key=pr-421` (`router_hit_large`: 2 KB, 33 members, key last). The router \
             plugins run against a live RouteService holding {} sandboxes, synced into the filter \
             before the first run (`router_hit` is routed from the synced table).\n",
            crate::SANDBOXES
        );
        let _ = writeln!(
            md,
            "| scenario | rps | p50 us | p99 us | x plain | x wasm_floor | RouteService calls/request | errors |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, s) in &self.scenarios {
            let calls = self.calls_per_request(name);
            let calls = if calls.is_nan() {
                "-".to_owned()
            } else {
                format!("{calls:.4}")
            };
            let _ = writeln!(
                md,
                "| `{name}` | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} | {calls} | {} |",
                s.rps,
                s.p50_us,
                s.p99_us,
                self.ratio(name, "plain"),
                self.ratio(name, "wasm_floor"),
                s.errors
            );
        }
        let _ = writeln!(
            md,
            "\n`router_hit` / `lua` = {:.3}. `router_hit_upstream` / `plain_upstream` = {:.3}.\n",
            self.ratio("router_hit", "lua"),
            self.ratio("router_hit_upstream", "plain_upstream")
        );
        let _ = writeln!(
            md,
            "Release `sandbox_router.wasm`: **{} bytes** ({:.1} KB); the `wasm_floor` fixture: {} bytes.\n",
            self.wasm_bytes,
            self.wasm_bytes as f64 / 1024.0,
            self.floor_wasm_bytes
        );
        let _ = writeln!(md, "## Goals\n");
        let _ = writeln!(md, "| goal | holds | measured |\n|---|---|---|");
        for (goal, holds, measured) in self.goals() {
            let _ = writeln!(
                md,
                "| {goal} | {} | {measured} |",
                if holds { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(md, "\n## Routed requests over their own floor\n");
        let _ = writeln!(
            md,
            "Each `wasm_floor_routed*` makes the host calls sandbox-router makes for a request it \
             routes, and decides nothing: the headers read as one buffer and the chosen cluster; \
             with a cluster (`_upstream`), the fork's unreachable record, the route header set \
             (Envoy then selects the route again), and once the router chose the cluster again \
             and two filter state values; without one (`direct_response`), `xds.route_name`, the \
             header, and the filter state at once. Over it, a routed scenario shows what the \
             filter's own work costs; `wasm_floor_routed` / `wasm_floor` = {:.3} is what those \
             host calls cost against the floor's one read. Each `wasm_floor_marked*` reads \
             `baggage` as `wasm_floor` does and sets the route header, nothing else: the least \
             any Wasm filter routing by a header can cost (no check that the request reached \
             the fork, no access-log field); `wasm_floor_marked` / `wasm_floor` = {:.3}. The \
             goals above show both ratios, in brackets, beside each routed goal against \
             `wasm_floor`, `lua` or `wasm_floor_upstream`: a goal over them cannot be met by a \
             filter that routes.\n",
            self.ratio("wasm_floor_routed", "wasm_floor"),
            self.ratio("wasm_floor_marked", "wasm_floor")
        );
        let _ = writeln!(
            md,
            "| scenario | its floor | x floor (rps) |\n|---|---|---:|"
        );
        for (name, floor, ratio) in self.over_routed_floors() {
            let _ = writeln!(md, "| `{name}` | `{floor}` | {ratio:.3} |");
        }
        let load = &self.route_service_load;
        let _ = writeln!(md, "\n## RouteService\n");
        let _ = writeln!(
            md,
            "- `GET /v1/routes?routingKey=K` with {} sandboxes stored (wrk, {} connections, same pinning): \
             **{:.0} rps**, p50 {:.0} us, p99 **{:.0} us**.",
            crate::SANDBOXES,
            self.connections,
            load.key_lookup.rps,
            load.key_lookup.p50_us,
            load.key_lookup.p99_us
        );
        let _ = writeln!(
            md,
            "- Full table (`GET /v1/routes`, {} routes): **{} bytes** ({:.2} MB), fetched in {:.1} ms (median of 5).",
            crate::SANDBOXES,
            load.table_bytes,
            load.table_bytes as f64 / 1e6,
            load.table_fetch_ms
        );
        let _ = writeln!(
            md,
            "- Full-table sync into the filter: {:.2} s from Envoy ready until every router plugin's \
             `sandbox_router.table_routes` gauge showed {} routes (includes the first sync tick, the \
             fetch and the decode; polled every 10 ms).",
            self.sync_seconds,
            crate::SANDBOXES
        );
        let _ = writeln!(md, "\n## Who answered (checked before measuring)\n");
        let _ = writeln!(md, "| scenario | baggage | answered by |\n|---|---|---|");
        for check in &self.checks {
            let _ = writeln!(
                md,
                "| {} | `{}` | {} |",
                check.scenario, check.baggage, check.served_by
            );
        }
        let _ = writeln!(
            md,
            "\nThe `vs_regex` probes use the per-sandbox VirtualService regex `{}` on `baggage`: it \
             routes `sd-routing-key=pr-421` to the sandbox, but also a `sd-routing-key=pr-421` that is \
             only a *property* of another member, and the different key `pr-4210` \
             (see the probe rows above).",
            crate::scenarios::VS_REGEX
        );
        let _ = writeln!(
            md,
            "\n`report.png`: rps of each scenario relative to `plain` (left bar of each pair) and to \
             `wasm_floor` (right bar), in table order; the horizontal line is 1.0. Bars have no text \
             (the bitmap backend is built without fonts)."
        );
        md
    }
}

fn round1(v: f64) -> Value {
    serde_json::Number::from_f64((v * 10.0).round() / 10.0).map_or(Value::Null, Value::Number)
}

pub fn write_all(dir: &Path, results: &Results) -> Result<()> {
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results.to_json())? + "\n",
    )?;
    std::fs::write(dir.join("report.md"), results.to_markdown())?;
    chart(&dir.join("report.png"), results)
}

/// Pairs of bars per scenario (x plain, x wasm_floor), a line at 1.0; no text.
fn chart(path: &Path, results: &Results) -> Result<()> {
    let n = results.scenarios.len();
    let width = 80 + 70 * u32::try_from(n)?;
    let root = BitMapBackend::new(path, (width, 400)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let max = results
        .scenarios
        .iter()
        .flat_map(|(name, _)| {
            [
                results.ratio(name, "plain"),
                results.ratio(name, "wasm_floor"),
            ]
        })
        .filter(|v| v.is_finite())
        .fold(1.2_f64, f64::max);
    let y = |ratio: f64| -> i32 { 380 - (ratio / max * 340.0) as i32 };
    for (i, (name, _)) in results.scenarios.iter().enumerate() {
        let x = 40 + 70 * i32::try_from(i)?;
        for (j, (to, color)) in [("plain", BLUE), ("wasm_floor", RED)].iter().enumerate() {
            let ratio = results.ratio(name, to);
            if !ratio.is_finite() {
                continue;
            }
            let left = x + 28 * i32::try_from(j)?;
            root.draw(&Rectangle::new(
                [(left, y(ratio)), (left + 24, 380)],
                color.filled(),
            ))
            .map_err(err)?;
        }
    }
    root.draw(&PathElement::new(
        vec![(20, y(1.0)), (i32::try_from(width)? - 20, y(1.0))],
        BLACK.stroke_width(2),
    ))
    .map_err(err)?;
    root.draw(&PathElement::new(
        vec![(20, 380), (i32::try_from(width)? - 20, 380)],
        BLACK,
    ))
    .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routed_goal_against_another_base_has_both_ceilings() {
        let floors: Vec<_> = ceiling_floors("router_hit", "wasm_floor").collect();
        assert_eq!(floors, ["wasm_floor_routed", "wasm_floor_marked"]);
        let floors: Vec<_> = ceiling_floors("router_hit_upstream", "wasm_floor_upstream").collect();
        assert_eq!(
            floors,
            ["wasm_floor_routed_upstream", "wasm_floor_marked_upstream"]
        );
    }

    #[test]
    fn a_goal_over_a_routed_floor_or_without_routing_has_none() {
        assert_eq!(ceiling_floors("router_hit", "wasm_floor_routed").count(), 0);
        assert_eq!(ceiling_floors("router_no_key", "wasm_floor").count(), 0);
        assert_eq!(ceiling_floors("router_hit_100k", "router_hit").count(), 0);
    }

    #[test]
    fn every_ceiling_floor_is_a_scenario() {
        let names: Vec<_> = crate::scenarios::all().iter().map(|s| s.name).collect();
        for (_, floor) in ROUTED_FLOORS.iter().chain(MARKED_FLOORS.iter()) {
            assert!(names.contains(floor), "{floor}");
        }
    }
}
