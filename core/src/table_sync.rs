//! Table sync across worker VMs: one worker at a time fetches
//! `GET /v1/routes` and publishes the validated body through proxy-wasm
//! shared data; every worker adopts a new version once, on its next tick.
//!
//! Which worker fetches is settled by a lease in shared data: an expiry time
//! written with compare-and-swap. Whoever swaps in a new expiry fetches; the
//! lease lasts one sync interval, so there is about one fetch per interval
//! per Envoy, whatever the number of workers.
//!
//! Once a worker holds a table at version `V` it asks `?since=V`. The deltas
//! it receives reach the other workers through a [`DeltaLog`] in shared
//! data beside the full table: each worker applies, in place, only the
//! deltas after its own version, so a change costs every worker the size of
//! the change, not of the table. The shared state is
//! - `table`: a full `GET /v1/routes` body at some version `T`;
//! - `deltas`: a chain of deltas `from -> to` ending at `end`, in which `T`
//!   is `end` or the `from` of a record (so the table plus the records
//!   after it give the table at `end`);
//! - `version`: `end`, cheap to poll.
//!
//! A worker that cannot find its version in the chain reads `table` and the
//! records after it. When the log outgrows [`DELTA_LOG_MAX_BYTES`], the
//! fetching worker writes its own table as the new `table` and keeps only
//! the last records (compaction), so that workers a few versions behind
//! still find theirs. Readers check every `from -> to` link, so a state
//! caught between two writes is skipped, never half-applied.

/// Shared-data keys of one RouteService (one Envoy may run several plugins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedKeys {
    /// The last good `GET /v1/routes` body, as received.
    pub table: String,
    /// Its version, 8 bytes little-endian: cheap to poll.
    pub version: String,
    /// The fetch lease: expiry in ms, 8 bytes little-endian.
    pub lease: String,
    /// The [`DeltaLog`] after `table`.
    pub deltas: String,
}

impl SharedKeys {
    pub fn new(route_service_cluster: &str) -> Self {
        let prefix = format!("sandbox-router/{route_service_cluster}");
        SharedKeys {
            table: format!("{prefix}/table"),
            version: format!("{prefix}/version"),
            lease: format!("{prefix}/lease"),
            deltas: format!("{prefix}/deltas"),
        }
    }
}

pub fn encode_u64(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

/// `None` unless exactly 8 bytes.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

/// Whether a lease read from shared data (absent, garbage or an expiry) is
/// free to take at `now_ms`.
pub fn lease_is_free(lease: Option<&[u8]>, now_ms: u64) -> bool {
    lease
        .and_then(decode_u64)
        .is_none_or(|expiry| expiry <= now_ms)
}

/// The log is compacted past this size: every adopting worker copies the
/// whole log out of shared data, so it stays small; about 150 single-sandbox
/// changes fit.
pub const DELTA_LOG_MAX_BYTES: usize = 64 * 1024;

/// What a compaction keeps of the log (the last records), so that workers
/// a few versions behind still apply deltas rather than the full table.
pub const DELTA_LOG_KEEP_BYTES: usize = 16 * 1024;

const RECORD_HEADER: usize = 8 + 8 + 4;

/// One delta of the chain: the body of a `?since=from` answer, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub from: u64,
    pub to: u64,
    pub body: &'a [u8],
}

/// The chain of deltas in shared data. Encoded as `end` (u64 LE), then per
/// record `from`, `to` (u64 LE), body length (u32 LE), body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaLog<'a> {
    pub end: u64,
    pub records: Vec<Record<'a>>,
}

impl<'a> DeltaLog<'a> {
    /// An empty chain at `end` (a full table was just published).
    pub fn empty(end: u64) -> Self {
        DeltaLog {
            end,
            records: Vec::new(),
        }
    }

    /// Reads a log; `None` if it is malformed or its links do not chain
    /// (`to` of one record is the `from` of the next, the last `to` is `end`).
    pub fn decode(bytes: &'a [u8]) -> Option<Self> {
        let end = decode_u64(bytes.get(..8)?)?;
        let mut rest = bytes.get(8..)?;
        let mut records = Vec::new();
        while !rest.is_empty() {
            let from = decode_u64(rest.get(..8)?)?;
            let to = decode_u64(rest.get(8..16)?)?;
            let len: [u8; 4] = rest.get(16..RECORD_HEADER)?.try_into().ok()?;
            let len = usize::try_from(u32::from_le_bytes(len)).ok()?;
            let body = rest.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
            rest = rest.get(RECORD_HEADER + len..)?;
            records.push(Record { from, to, body });
        }
        let chained = records
            .iter()
            .zip(records.iter().skip(1))
            .all(|(a, b)| a.to == b.from)
            && records.last().is_none_or(|r| r.to == end);
        chained.then_some(DeltaLog { end, records })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&encode_u64(self.end));
        for record in &self.records {
            out.extend_from_slice(&encode_u64(record.from));
            out.extend_from_slice(&encode_u64(record.to));
            let len = u32::try_from(record.body.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(record.body);
        }
        out
    }

    pub fn encoded_len(&self) -> usize {
        8 + self
            .records
            .iter()
            .map(|r| RECORD_HEADER + r.body.len())
            .sum::<usize>()
    }

    /// The records that take `version` to `end`: empty if `version` is
    /// `end`, `None` if `version` is not in the chain. Versions are compared
    /// for equality only (they may be unordered content hashes); a version
    /// met twice is taken at its last place (the same content, fewer deltas).
    pub fn after(&self, version: u64) -> Option<&[Record<'a>]> {
        if version == self.end {
            return Some(&[]);
        }
        let at = self.records.iter().rposition(|r| r.from == version)?;
        self.records.get(at..)
    }

    /// This log with `record` appended, if it chains (`record.from` is
    /// `end`) and the result stays within `max_bytes`.
    pub fn appended(&self, record: Record<'a>, max_bytes: usize) -> Option<Self> {
        let fits = self.encoded_len() + RECORD_HEADER + record.body.len() <= max_bytes;
        (record.from == self.end && fits).then(|| {
            let mut records = self.records.clone();
            records.push(record);
            DeltaLog {
                end: record.to,
                records,
            }
        })
    }

    /// The last records (those that fit in `keep_bytes`), for a log whose
    /// `table` is rewritten at `end`.
    pub fn compacted(&self, keep_bytes: usize) -> Self {
        let mut kept = 8;
        let first = self
            .records
            .iter()
            .rposition(|r| {
                kept += RECORD_HEADER + r.body.len();
                kept > keep_bytes
            })
            .map_or(0, |i| i + 1);
        DeltaLog {
            end: self.end,
            records: self.records.get(first..).unwrap_or_default().to_vec(),
        }
    }
}

/// What a worker does to reach the published table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// It holds the newest table (or the shared state is between two
    /// writes: try again on the next tick).
    Nothing,
    /// Apply these validated deltas, in order, to the table it holds.
    Apply { version: u64, deltas: Vec<Delta> },
    /// Take this table (the full table plus the deltas after it).
    Replace { version: u64, table: RouteTable },
}

/// Why the shared state could not be adopted (logged; the worker keeps its
/// table and tries again on the next tick).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unadoptable {
    #[error("published table unreadable: {0}")]
    Table(BadAnswer),
    #[error("published delta {from} -> {to} unreadable: {problem}")]
    Delta {
        from: u64,
        to: u64,
        problem: BadAnswer,
    },
}

/// Decides how a worker holding `held` reaches the shared state: the deltas
/// after `held` when the log has them (reading only the log), else the
/// full table (read by `read_table`, only then) and the deltas after it.
pub fn plan_adoption(
    held: Option<u64>,
    log: Option<&[u8]>,
    read_table: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<Adoption, Unadoptable> {
    let log = log.and_then(DeltaLog::decode);
    if let (Some(held), Some(log)) = (held, &log) {
        if held == log.end {
            return Ok(Adoption::Nothing);
        }
        if let Some(records) = log.after(held) {
            if let Ok(deltas) = parse_records(records) {
                return Ok(Adoption::Apply {
                    version: log.end,
                    deltas,
                });
            }
        }
    }
    let Some(body) = read_table() else {
        return Ok(Adoption::Nothing);
    };
    let answer = parse_routes(&body).map_err(Unadoptable::Table)?;
    let Some(log) = log else {
        // No log: a plain table (as before deltas existed).
        return Ok(if held == Some(answer.version) {
            Adoption::Nothing
        } else {
            Adoption::Replace {
                version: answer.version,
                table: answer.table,
            }
        });
    };
    // Caught between the writes of a new table and its log.
    let Some(records) = log.after(answer.version) else {
        return Ok(Adoption::Nothing);
    };
    let mut table = answer.table;
    for delta in parse_records(records)? {
        delta.apply_to(&mut table);
    }
    Ok(Adoption::Replace {
        version: log.end,
        table,
    })
}

fn parse_records(records: &[Record<'_>]) -> Result<Vec<Delta>, Unadoptable> {
    records
        .iter()
        .map(|r| {
            let bad = |problem| Unadoptable::Delta {
                from: r.from,
                to: r.to,
                problem,
            };
            let delta = parse_delta(r.body, r.from).map_err(bad)?;
            if delta.version == r.to {
                Ok(delta)
            } else {
                Err(bad(BadAnswer::Malformed(format!(
                    "version {} in a record to {}",
                    delta.version, r.to
                ))))
            }
        })
        .collect()
}

/// What the fetching worker writes after it applied a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// The new log (the table stays).
    Log(Vec<u8>),
    /// A new table, then its log (compaction, or a log that did not end
    /// where the delta starts).
    TableAndLog { table: Vec<u8>, log: Vec<u8> },
}

/// What to publish for `record` (a delta the worker applied, now holding
/// `table` at `record.to`), given the log in shared data now.
pub fn publish_delta(
    current: Option<&[u8]>,
    record: Record<'_>,
    table: &RouteTable,
) -> Publication {
    let current = current.and_then(DeltaLog::decode);
    if let Some(log) = current
        .as_ref()
        .and_then(|log| log.appended(record, DELTA_LOG_MAX_BYTES))
    {
        return Publication::Log(log.encode());
    }
    let log = current
        .and_then(|log| log.appended(record, usize::MAX))
        .map_or_else(
            || DeltaLog::empty(record.to),
            |log| log.compacted(DELTA_LOG_KEEP_BYTES),
        );
    let mut body = Vec::new();
    table.write_json(record.to, &mut body);
    Publication::TableAndLog {
        table: body,
        log: log.encode(),
    }
}

/// The tick period the table sync needs: often enough to adopt a table
/// another worker published well within one sync interval, rarely enough to
/// cost nothing. (The filter's root context ticks at least every 100 ms
/// anyway, to add its counts to Envoy's counters.)
pub fn tick_period_ms(sync_interval_ms: u64) -> u64 {
    (sync_interval_ms / 4).clamp(50, 1000)
}

use crate::route_table::RouteTable;
use crate::routes_api::{parse_delta, parse_routes, BadAnswer, Delta};

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn keys_are_per_route_service() {
        let keys = SharedKeys::new("outbound|8080||rs.ns.svc.cluster.local");
        assert_eq!(
            keys.table,
            "sandbox-router/outbound|8080||rs.ns.svc.cluster.local/table"
        );
        assert_ne!(keys.version, keys.lease);
    }

    #[test]
    fn u64_round_trip_and_garbage() {
        assert_eq!(decode_u64(&encode_u64(42)), Some(42));
        assert_eq!(decode_u64(b"short"), None);
        assert_eq!(decode_u64(b"nine bytes"), None);
    }

    #[test]
    fn lease() {
        assert!(lease_is_free(None, 0));
        assert!(lease_is_free(Some(b"junk"), 0));
        assert!(lease_is_free(Some(&encode_u64(100)), 100));
        assert!(!lease_is_free(Some(&encode_u64(101)), 100));
    }

    fn rec(from: u64, to: u64, body: &[u8]) -> Record<'_> {
        Record { from, to, body }
    }

    #[test]
    fn a_delta_log_round_trips_and_checks_its_links() {
        let log = DeltaLog::empty(3)
            .appended(rec(3, 9, b"a"), 1000)
            .unwrap()
            .appended(rec(9, 4, b"bc"), 1000)
            .unwrap();
        assert_eq!(log.end, 4);
        let bytes = log.encode();
        assert_eq!(bytes.len(), log.encoded_len());
        assert_eq!(DeltaLog::decode(&bytes), Some(log.clone()));
        // Unordered versions: found by equality.
        assert_eq!(log.after(9).map(<[_]>::len), Some(1));
        assert_eq!(log.after(3).map(<[_]>::len), Some(2));
        assert_eq!(log.after(4).map(<[_]>::len), Some(0));
        assert_eq!(log.after(5), None);
        // Appending what does not chain, or past the bound, is refused.
        assert_eq!(log.appended(rec(9, 5, b""), 1000), None);
        assert_eq!(log.appended(rec(4, 5, b"x"), bytes.len() + 20), None);
        assert!(log.appended(rec(4, 5, b"x"), bytes.len() + 21).is_some());
        // Broken links, truncation and garbage read as nothing.
        let broken = DeltaLog {
            end: 4,
            records: vec![rec(3, 9, b"a"), rec(8, 4, b"b")],
        };
        assert_eq!(DeltaLog::decode(&broken.encode()), None);
        let wrong_end = DeltaLog {
            end: 5,
            records: vec![rec(3, 9, b"a")],
        };
        assert_eq!(DeltaLog::decode(&wrong_end.encode()), None);
        for cut in 1..bytes.len() {
            if cut != 8 && cut != 8 + 21 {
                assert_eq!(DeltaLog::decode(&bytes[..cut]), None, "cut {cut}");
            }
        }
        assert_eq!(DeltaLog::decode(b""), None);
        // A version met twice is taken at its last place.
        let again = log
            .appended(rec(4, 3, b"d"), 1000)
            .unwrap()
            .appended(rec(3, 7, b"e"), 1000)
            .unwrap();
        assert_eq!(again.after(3).map(<[_]>::len), Some(1));
    }

    #[test]
    fn compaction_keeps_the_last_records() {
        let mut log = DeltaLog::empty(0);
        let body = [b'x'; 80];
        for v in 0..10 {
            log = log.appended(rec(v, v + 1, &body), usize::MAX).unwrap();
        }
        let kept = log.compacted(8 + 3 * 100);
        assert_eq!(kept.end, 10);
        assert_eq!(kept.records.len(), 3);
        assert_eq!(kept.records[0].from, 7);
        assert!(kept.encoded_len() <= 8 + 3 * 100);
        assert!(log.compacted(0).records.is_empty());
        assert_eq!(log.compacted(usize::MAX), log);
    }

    /// A worker's table, as the shared state gives it.
    #[derive(Clone)]
    struct Held(Option<u64>, RouteTable);

    fn adopt(held: &mut Held, shared: &Shared) {
        match plan_adoption(held.0, shared.log.as_deref(), || shared.table.clone()).unwrap() {
            Adoption::Nothing => {}
            Adoption::Apply { version, deltas } => {
                for d in &deltas {
                    d.apply_to(&mut held.1);
                }
                held.0 = Some(version);
            }
            Adoption::Replace { version, table } => *held = Held(Some(version), table),
        }
    }

    #[derive(Default)]
    struct Shared {
        table: Option<Vec<u8>>,
        log: Option<Vec<u8>>,
    }

    fn route(key: usize, baseline: usize, target: usize) -> crate::route_table::Route {
        crate::route_table::Route {
            routing_key: format!("k{key}"),
            sandbox: format!("s{key}"),
            baseline: format!("b{baseline}.ns"),
            target: format!("t{target}.ns"),
        }
    }

    fn delta_body(since: u64, version: u64, before: &RouteTable, after: &RouteTable) -> Vec<u8> {
        let old = before.sorted_routes();
        let new = after.sorted_routes();
        let upserts: Vec<_> = new.iter().filter(|r| !old.contains(r)).cloned().collect();
        let deletes: Vec<_> = old
            .iter()
            .filter(|r| {
                !new.iter()
                    .any(|n| n.routing_key == r.routing_key && n.baseline == r.baseline)
            })
            .map(|r| crate::routes_api::RouteRef {
                routing_key: r.routing_key.clone(),
                baseline: r.baseline.clone(),
            })
            .collect();
        serde_json::to_vec(&Delta {
            version,
            since,
            upserts,
            deletes,
        })
        .unwrap()
    }

    /// One fetching worker publishes deltas (compacting now and then);
    /// workers that adopt at different paces, and one that starts late,
    /// always reach exactly the server's table.
    #[test]
    fn workers_at_any_lag_reach_the_published_table() {
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) % n as u64) as usize
        };
        // The first sync is a full table.
        let mut server = RouteTable::new(&[route(1, 1, 1)]).unwrap();
        let mut version = 1000u64;
        let mut body = Vec::new();
        server.write_json(version, &mut body);
        let mut shared = Shared {
            table: Some(body),
            log: Some(DeltaLog::empty(version).encode()),
        };
        let mut fetcher = Held(Some(version), server.clone());
        let mut workers = vec![Held(None, RouteTable::default()); 4];
        let mut compactions = 0;
        for step in 0..3000 {
            let before = server.clone();
            for _ in 0..1 + next(3) {
                let (k, b) = (next(40), next(5));
                if next(3) == 0 {
                    server.remove(&format!("k{k}"), &format!("b{b}.ns"));
                } else {
                    server.insert(&route(k, b, next(4)));
                }
            }
            // Unordered versions, as a content hash would be.
            let since = version;
            version = (version.wrapping_mul(31) ^ step) % 1_000_003;
            let body = delta_body(since, version, &before, &server);
            let delta = parse_delta(&body, since).unwrap();
            delta.apply_to(&mut fetcher.1);
            fetcher.0 = Some(version);
            let record = Record {
                from: since,
                to: version,
                body: &body,
            };
            match publish_delta(shared.log.as_deref(), record, &fetcher.1) {
                Publication::Log(log) => shared.log = Some(log),
                Publication::TableAndLog { table, log } => {
                    compactions += 1;
                    shared.table = Some(table);
                    shared.log = Some(log);
                }
            }
            assert!(shared.log.as_ref().unwrap().len() <= DELTA_LOG_MAX_BYTES);
            for (i, worker) in workers.iter_mut().enumerate() {
                // Worker i adopts every (i + 1)th step; the last one starts late.
                if step % (i as u64 * 7 + 1) == 0 && (i < 3 || step > 2000) {
                    adopt(worker, &shared);
                    assert_eq!(worker.0, Some(version), "worker {i} step {step}");
                    assert_eq!(
                        worker.1.sorted_routes(),
                        server.sorted_routes(),
                        "worker {i} step {step}"
                    );
                }
            }
        }
        assert!(compactions > 2, "{compactions}");
    }

    #[test]
    fn a_state_between_two_writes_is_skipped_not_half_applied() {
        let table = RouteTable::new(&[route(1, 1, 1)]).unwrap();
        let mut body = Vec::new();
        table.write_json(5, &mut body);
        // A new table at 5, the log still of an older table (ending at 4).
        let old_log = DeltaLog::empty(4).encode();
        assert_eq!(
            plan_adoption(None, Some(&old_log), || Some(body.clone())).unwrap(),
            Adoption::Nothing
        );
        // No log at all: the plain table.
        assert!(matches!(
            plan_adoption(None, None, || Some(body.clone())).unwrap(),
            Adoption::Replace { version: 5, .. }
        ));
        assert_eq!(
            plan_adoption(Some(5), None, || Some(body.clone())).unwrap(),
            Adoption::Nothing
        );
        // A bad record falls back to the table, which needs the same record: refused.
        let bad = DeltaLog::empty(5)
            .appended(
                Record {
                    from: 5,
                    to: 6,
                    body: b"{}",
                },
                1000,
            )
            .unwrap()
            .encode();
        assert!(matches!(
            plan_adoption(Some(5), Some(&bad), || Some(body.clone())),
            Err(Unadoptable::Delta { from: 5, to: 6, .. })
        ));
        assert!(matches!(
            plan_adoption(None, Some(&bad), || Some(b"junk".to_vec())),
            Err(Unadoptable::Table(_))
        ));
    }

    #[test]
    fn tick_period() {
        assert_eq!(tick_period_ms(5000), 1000);
        assert_eq!(tick_period_ms(1000), 250);
        assert_eq!(tick_period_ms(100), 50);
    }
}
