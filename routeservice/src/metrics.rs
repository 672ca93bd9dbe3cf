//! `/metrics` in the Prometheus text format (version 0.0.4), by hand: a few
//! counters and histograms need no metrics framework.
//!
//! Label values are bounded: `route` is the route template
//! (`/v1/sandboxes/{name}`), never the raw path; `unmatched` for anything
//! that matched no route.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::service::{CommitObserver, Snapshot};

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Count per bucket of `BUCKETS` (not cumulative), then +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let bucket = BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(BUCKETS.len());
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (le, count) in BUCKETS.iter().zip(self.counts.iter()) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The server's counters. Cheap to update from every request.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (method, route template, status) -> count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route template -> latency.
    latency: Mutex<BTreeMap<String, Histogram>>,
    commits: Mutex<Histogram>,
    commit_failures: AtomicU64,
    connections: Connections,
    /// Answers of `GET /v1/routes` (no `routingKey`), by [`TableRead`]: count, body bytes.
    table_reads: [(AtomicU64, AtomicU64); TableRead::ALL.len()],
}

/// How a read of the whole table was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableRead {
    /// `200` with the full table.
    Full,
    /// `304` to `If-None-Match`.
    FullNotModified,
    /// `200` with a delta (`?since=V`).
    Delta,
    /// `304` to `?since=V`: `V` is current.
    DeltaNotModified,
    /// `410` to `?since=V`: `V` not in the history.
    Gone,
}

impl TableRead {
    const ALL: [TableRead; 5] = [
        TableRead::Full,
        TableRead::FullNotModified,
        TableRead::Delta,
        TableRead::DeltaNotModified,
        TableRead::Gone,
    ];

    /// The `answer` label.
    fn label(self) -> &'static str {
        match self {
            TableRead::Full => "full",
            TableRead::FullNotModified => "full_not_modified",
            TableRead::Delta => "delta",
            TableRead::DeltaNotModified => "delta_not_modified",
            TableRead::Gone => "gone",
        }
    }
}

/// Connection counts ([`crate::connections`]).
#[derive(Debug, Default)]
struct Connections {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one answered request.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        {
            let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            *requests
                .entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
        let mut latency = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        latency
            .entry(route.to_owned())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Counts one answer to a read of the whole table, of `bytes` body bytes.
    pub fn table_read(&self, answer: TableRead, bytes: usize) {
        let index = TableRead::ALL
            .iter()
            .position(|a| *a == answer)
            .unwrap_or_default();
        if let Some((count, sent)) = self.table_reads.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
            sent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// A connection was accepted and is being served.
    pub fn connection_opened(&self) {
        self.connections.accepted.fetch_add(1, Ordering::Relaxed);
        self.connections.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A served connection closed (after [`Metrics::connection_opened`]).
    pub fn connection_closed(&self) {
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was closed at once: the connection limit was reached.
    pub fn connection_refused(&self) {
        self.connections.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed because its request headers did not arrive
    /// in time (or it stayed idle that long).
    pub fn connection_timed_out(&self) {
        self.connections.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// The whole exposition; `snapshot` is `None` while storage loads.
    pub fn render(&self, snapshot: Option<&Snapshot>) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP routeservice_http_requests_total HTTP requests answered, by method, route template and status.\n\
             # TYPE routeservice_http_requests_total counter\n",
        );
        {
            let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            for ((method, route, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "routeservice_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {count}",
                    escape(method),
                    escape(route)
                );
            }
        }
        out.push_str(
            "# HELP routeservice_http_request_duration_seconds Time to answer a request, by route template.\n\
             # TYPE routeservice_http_request_duration_seconds histogram\n",
        );
        {
            let latency = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
            for (route, histogram) in latency.iter() {
                histogram.render(
                    &mut out,
                    "routeservice_http_request_duration_seconds",
                    &format!("route=\"{}\"", escape(route)),
                );
            }
        }
        out.push_str(
            "# HELP routeservice_store_commit_duration_seconds Time of durable store commits (incl. fsync).\n\
             # TYPE routeservice_store_commit_duration_seconds histogram\n",
        );
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .render(&mut out, "routeservice_store_commit_duration_seconds", "");
        let _ = write!(
            out,
            "# HELP routeservice_store_commit_failures_total Store commits that failed (the write was refused, nothing changed).\n\
             # TYPE routeservice_store_commit_failures_total counter\n\
             routeservice_store_commit_failures_total {}\n",
            self.commit_failures.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP routeservice_table_reads_total Reads of the whole table (GET /v1/routes without routingKey), by answer: full, full_not_modified, delta (?since=V), delta_not_modified, gone (410).\n\
             # TYPE routeservice_table_reads_total counter\n",
        );
        for (answer, (count, _)) in TableRead::ALL.iter().zip(&self.table_reads) {
            let _ = writeln!(
                out,
                "routeservice_table_reads_total{{answer=\"{}\"}} {}",
                answer.label(),
                count.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP routeservice_table_read_bytes_total Body bytes sent for reads of the whole table, by answer.\n\
             # TYPE routeservice_table_read_bytes_total counter\n",
        );
        for (answer, (_, sent)) in TableRead::ALL.iter().zip(&self.table_reads) {
            let _ = writeln!(
                out,
                "routeservice_table_read_bytes_total{{answer=\"{}\"}} {}",
                answer.label(),
                sent.load(Ordering::Relaxed)
            );
        }
        if let Some(snapshot) = snapshot {
            let (_, held) = snapshot.history();
            let _ = write!(
                out,
                "# HELP routeservice_table_history_versions Versions held for ?since= deltas (older ones get 410).\n\
                 # TYPE routeservice_table_history_versions gauge\n\
                 routeservice_table_history_versions {held}\n"
            );
        }
        let connections = &self.connections;
        let _ = write!(
            out,
            "# HELP routeservice_connections_open Connections open now.\n\
             # TYPE routeservice_connections_open gauge\n\
             routeservice_connections_open {}\n\
             # HELP routeservice_connections_accepted_total Connections accepted and served.\n\
             # TYPE routeservice_connections_accepted_total counter\n\
             routeservice_connections_accepted_total {}\n\
             # HELP routeservice_connections_refused_total Connections closed at once because --max-connections were open.\n\
             # TYPE routeservice_connections_refused_total counter\n\
             routeservice_connections_refused_total {}\n\
             # HELP routeservice_connections_header_timeouts_total Connections closed because request headers did not arrive within --header-read-timeout-secs (slow or idle clients).\n\
             # TYPE routeservice_connections_header_timeouts_total counter\n\
             routeservice_connections_header_timeouts_total {}\n",
            connections.open.load(Ordering::Relaxed),
            connections.accepted.load(Ordering::Relaxed),
            connections.refused.load(Ordering::Relaxed),
            connections.timed_out.load(Ordering::Relaxed),
        );
        let _ = write!(
            out,
            "# HELP routeservice_ready 1 once storage is open and loaded.\n\
             # TYPE routeservice_ready gauge\n\
             routeservice_ready {}\n",
            u8::from(snapshot.is_some())
        );
        if let Some(snapshot) = snapshot {
            let _ = write!(
                out,
                "# HELP routeservice_routes Routes in the table.\n\
                 # TYPE routeservice_routes gauge\n\
                 routeservice_routes {}\n\
                 # HELP routeservice_sandboxes Sandboxes in the table.\n\
                 # TYPE routeservice_sandboxes gauge\n\
                 routeservice_sandboxes {}\n\
                 # HELP routeservice_table_version Version of the table (bumps on every change).\n\
                 # TYPE routeservice_table_version gauge\n\
                 routeservice_table_version {}\n\
                 # HELP routeservice_routes_response_bytes Size of the full GET /v1/routes body.\n\
                 # TYPE routeservice_routes_response_bytes gauge\n\
                 routeservice_routes_response_bytes {}\n",
                snapshot.route_count(),
                snapshot.sandbox_count(),
                snapshot.version(),
                snapshot.routes_json().len(),
            );
        }
        out
    }
}

impl CommitObserver for Metrics {
    fn commit(&self, took: Duration, ok: bool) {
        if ok {
            self.commits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(took.as_secs_f64());
        } else {
            self.commit_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Escapes a label value (`\`, `"`, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.0002);
        h.observe(0.003);
        h.observe(7.0);
        let mut out = String::new();
        h.render(&mut out, "x", "route=\"/a\"");
        assert!(
            out.contains("x_bucket{route=\"/a\",le=\"0.0001\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"/a\",le=\"0.00025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"/a\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{route=\"/a\",le=\"1\"} 2\n"), "{out}");
        assert!(
            out.contains("x_bucket{route=\"/a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{route=\"/a\"} 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
