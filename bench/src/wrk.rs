//! Running `wrk` (pinned) against one scenario and reading its report.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::scenarios::Scenario;
use crate::Settings;

/// One wrk run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    /// Socket errors plus non-2xx answers.
    pub errors: u64,
}

pub fn run(
    settings: &Settings,
    scenario: &Scenario,
    addr: SocketAddr,
    seconds: u64,
    _scratch: &Path,
    round: usize,
) -> Result<Sample> {
    let mut command = crate::pinned(settings.load_cpu.as_deref(), &PathBuf::from("wrk"));
    command
        .args(["-t", "1"])
        .args(["-c", &settings.connections.to_string()])
        .args(["-d", &format!("{seconds}s")])
        .arg("--latency")
        .args(["-H", &format!("host: {}", scenario.host)]);
    if let Some(baggage) = &scenario.baggage {
        command.args(["-H", &format!("baggage: {baggage}")]);
    }
    for (name, value) in &scenario.headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    if let Some(script) = &scenario.script {
        command.arg("-s").arg(script);
    }
    command.arg(format!("http://{addr}{}", scenario.path));
    if scenario.script.is_some() {
        // Script arguments: a prefix no other run uses.
        command
            .arg("--")
            .arg(format!("r{round}-{}-{}", std::process::id(), unique()));
    }
    let output = command
        .output()
        .context("running wrk (apt-get install wrk; make bench installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&text).with_context(|| format!("reading wrk's report:\n{text}"))
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `123.45us`, `1.20ms`, `2.00s` in microseconds.
fn micros(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

pub fn parse(text: &str) -> Result<Sample> {
    let mut sample = Sample::default();
    let mut seen = (false, false, false, false);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => {
                sample.p50_us = micros(value).unwrap_or(f64::NAN);
                seen.0 = true;
            }
            ["99%", value] => {
                sample.p99_us = micros(value).unwrap_or(f64::NAN);
                seen.1 = true;
            }
            ["Requests/sec:", value] => {
                sample.rps = value.parse()?;
                seen.2 = true;
            }
            [count, "requests", "in", ..] => {
                sample.requests = count.parse()?;
                seen.3 = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                sample.errors += count.parse::<u64>()?
            }
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                sample.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if seen != (true, true, true, true) {
        bail!("incomplete wrk report");
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let text = "\
Running 1s test @ http://127.0.0.1:1/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   410.00us  100.00us   2.00ms   90.00%
  Latency Distribution
     50%  396.00us
     75%  450.00us
     90%  500.00us
     99%    1.25ms
  38000 requests in 1.00s, 4.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  37950.12
Transfer/sec:      4.00MB
";
        let sample = parse(text).unwrap();
        assert_eq!(sample.requests, 38000);
        assert!((sample.p50_us - 396.0).abs() < 1e-9);
        assert!((sample.p99_us - 1250.0).abs() < 1e-9);
        assert!((sample.rps - 37950.12).abs() < 1e-9);
        assert_eq!(sample.errors, 7);
    }
}
