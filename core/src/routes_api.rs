//! The RouteService's answers as the filter reads them (INTERFACES section 5):
//! `GET /v1/routes` and `GET /v1/routes?routingKey=K` both answer
//! `{"version": <u64>, "routes": [Route...]}`; `GET /v1/routes?since=V`
//! answers a [`Delta`] (`304` nothing changed, `410` take the full table).
//!
//! The body comes from the network, so it is read defensively: a size limit
//! before parsing, every route validated, and one bad route refuses the whole
//! answer (the filter then keeps what it had: fail open, counted).

use serde::{Deserialize, Serialize};

use crate::json;
use crate::route_table::{InvalidRouteAt, Route, RouteTable};
use crate::routing_key::RoutingKey;

/// Largest body accepted from the RouteService. A full table of 10,000
/// sandboxes with one route each is about 2 MB.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Path of the whole table.
pub const ROUTES_PATH: &str = "/v1/routes";

/// Path of one key's routes. The key is validated, so it needs no escaping
/// (`[A-Za-z0-9._~-]` are URL-unreserved).
pub fn routes_for_key_path(key: &RoutingKey) -> String {
    format!("{ROUTES_PATH}?routingKey={}", key.as_str())
}

/// Path of what changed after version `since`.
pub fn routes_since_path(since: u64) -> String {
    format!("{ROUTES_PATH}?since={since}")
}

/// The `ETag` of a table version, as the RouteService sends it.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The wire shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutesResponse {
    pub version: u64,
    pub routes: Vec<Route>,
}

/// Why an answer was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("no HTTP status (connection failure or timeout)")]
    NoStatus,
    #[error("body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("body is not a routes document: {0}")]
    Malformed(String),
    #[error("routes{0}")]
    InvalidRoute(InvalidRouteAt),
    #[error("answer for another routing key")]
    ForeignKey,
    #[error("upserts{0}")]
    InvalidUpsert(InvalidRouteAt),
    #[error("deletes[{index}].{field}: invalid")]
    InvalidDelete { index: usize, field: &'static str },
    #[error("a delta since {got}, asked since {asked}")]
    WrongBase { asked: u64, got: u64 },
}

/// One entry of a delta's `deletes`: the route known by this pair is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRef {
    pub routing_key: String,
    pub baseline: String,
}

/// The wire shape of `GET /v1/routes?since=V`, and, once parsed by
/// [`parse_delta`], a validated delta: applying it to the table at `since`
/// gives the table at `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    pub version: u64,
    pub since: u64,
    pub upserts: Vec<Route>,
    pub deletes: Vec<RouteRef>,
}

impl Delta {
    /// Applies this (validated) delta: deletes, then upserts. Deleting a
    /// route the table does not hold is not an error (the server names
    /// every pair touched since `since`, some created and deleted since).
    pub fn apply_to(&self, table: &mut RouteTable) {
        for gone in &self.deletes {
            table.remove(&gone.routing_key, &gone.baseline);
        }
        for route in &self.upserts {
            table.insert(route);
        }
    }
}

/// What the answer to `GET /v1/routes?since=V` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaStatus {
    /// `200`: a delta to parse.
    Body,
    /// `304`: the table at `V` is current.
    NotModified,
    /// `410`: the server does not know `V`: take the full table.
    Gone,
}

/// Classifies the status of a `?since=` answer.
pub fn check_delta_status(status: Option<u16>) -> Result<DeltaStatus, BadAnswer> {
    match status {
        Some(410) => Ok(DeltaStatus::Gone),
        other => check_status(other).map(|body| {
            if body {
                DeltaStatus::Body
            } else {
                DeltaStatus::NotModified
            }
        }),
    }
}

/// Parses and validates a `200` answer to `GET /v1/routes?since=asked`:
/// every route and pair checked, and the delta must start at `asked`. One
/// bad entry refuses the whole delta (the caller then takes the full
/// table): a delta is applied whole or not at all. (The RouteService never
/// names a pair in both lists; if a server did, [`Delta::apply_to`]'s order,
/// deletes then upserts, decides: the upsert stays.)
pub fn parse_delta(body: &[u8], asked: u64) -> Result<Delta, BadAnswer> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BadAnswer::TooLarge);
    }
    let mut pull = json::Pull::new(body);
    let delta = read_delta(&mut pull)
        .and_then(|delta| pull.end().map(|()| delta))
        .map_err(|e| BadAnswer::Malformed(e.to_string()))?;
    if delta.since != asked {
        return Err(BadAnswer::WrongBase {
            asked,
            got: delta.since,
        });
    }
    for (index, route) in delta.upserts.iter().enumerate() {
        route
            .validate()
            .map_err(|source| BadAnswer::InvalidUpsert(InvalidRouteAt { index, source }))?;
    }
    for (index, gone) in delta.deletes.iter().enumerate() {
        if crate::routing_key::validate(&gone.routing_key).is_err() {
            return Err(BadAnswer::InvalidDelete {
                index,
                field: "routingKey",
            });
        }
        let host = gone.baseline.as_str();
        if !crate::destination::is_dns_name(host) || host.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(BadAnswer::InvalidDelete {
                index,
                field: "baseline",
            });
        }
    }
    Ok(delta)
}

// The wire shapes read by hand, as their serde derives (above and in
// `route_table`) read them through `serde_json::from_slice`: the derives
// instantiated for a reader cost the `.wasm` ~20 KB; these cost a few. The
// tests hold both to the same answers.

/// [`Delta`] (unknown fields skipped).
fn read_delta(pull: &mut json::Pull<'_>) -> json::Result<Delta> {
    let mut delta = Delta {
        version: 0,
        since: 0,
        upserts: Vec::new(),
        deletes: Vec::new(),
    };
    pull.fields(
        "Delta",
        &["version", "since", "upserts", "deletes"],
        json::Unknown::Skip,
        &|_| false,
        &mut |pull, index| {
            match index {
                0 => delta.version = pull.u64()?,
                1 => delta.since = pull.u64()?,
                2 => pull.array("a sequence", &mut |pull, _| {
                    delta.upserts.push(read_route(pull)?);
                    Ok(())
                })?,
                _ => pull.array("a sequence", &mut |pull, _| {
                    let [routing_key, baseline] =
                        read_strings(pull, "RouteRef", &["routingKey", "baseline"])?;
                    delta.deletes.push(RouteRef {
                        routing_key,
                        baseline,
                    });
                    Ok(())
                })?,
            }
            Ok(())
        },
    )?;
    Ok(delta)
}

/// A [`Route`] (unknown fields refused).
fn read_route(pull: &mut json::Pull<'_>) -> json::Result<Route> {
    let [routing_key, sandbox, baseline, target] = read_strings(
        pull,
        "Route",
        &["routingKey", "sandbox", "baseline", "target"],
    )?;
    Ok(Route {
        routing_key,
        sandbox,
        baseline,
        target,
    })
}

/// A struct of `N` required string fields, unknown ones refused.
fn read_strings<const N: usize>(
    pull: &mut json::Pull<'_>,
    name: &str,
    fields: &[&str; N],
) -> json::Result<[String; N]> {
    let mut values: [String; N] = std::array::from_fn(|_| String::new());
    pull.fields(
        name,
        fields,
        json::Unknown::Refuse,
        &|_| false,
        &mut |pull, index| {
            let value = pull.string("a string")?;
            if let Some(slot) = values.get_mut(index) {
                *slot = value;
            }
            Ok(())
        },
    )?;
    Ok(values)
}

/// A validated answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesAnswer {
    pub version: u64,
    pub table: RouteTable,
}

/// Parses a `200` body into a table. The routes are validated and indexed
/// as they are read, with no list of them all in between: at 100,000 routes
/// that list would be some 20 MB more of a worker's Wasm memory (which never
/// shrinks) on top of the body and the table.
pub fn parse_routes(body: &[u8]) -> Result<RoutesAnswer, BadAnswer> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BadAnswer::TooLarge);
    }
    let mut invalid = None;
    let (mut version, mut table) = (None, None);
    let mut pull = json::Pull::new(body);
    // `{"version": .., "routes": [..]}`, other top-level fields skipped (a
    // newer server may add some), the last of a duplicate key kept; the
    // first invalid route is left in `invalid`.
    let parsed = pull
        .object("a routes document", &mut |pull, key| {
            match key {
                "version" => version = Some(pull.u64()?),
                "routes" => table = Some(read_table(pull, &mut invalid)?),
                _ => pull.skip()?,
            }
            Ok(())
        })
        .and_then(|()| pull.end());
    if let Some(at) = invalid {
        return Err(BadAnswer::InvalidRoute(at));
    }
    match (parsed, version, table) {
        (Ok(()), Some(version), Some(table)) => Ok(RoutesAnswer { version, table }),
        (Ok(()), None, _) => Err(BadAnswer::Malformed("missing field `version`".into())),
        (Ok(()), _, None) => Err(BadAnswer::Malformed("missing field `routes`".into())),
        (Err(e), _, _) => Err(BadAnswer::Malformed(e.to_string())),
    }
}

/// The `routes` list, read into a table route by route.
fn read_table(
    pull: &mut json::Pull<'_>,
    invalid: &mut Option<InvalidRouteAt>,
) -> json::Result<RouteTable> {
    let mut table = RouteTable::default();
    pull.array("a list of routes", &mut |pull, index| {
        let route = read_route(pull)?;
        if let Err(source) = route.validate() {
            *invalid = Some(InvalidRouteAt { index, source });
            return Err(pull.error("invalid route"));
        }
        table.insert(&route);
        Ok(())
    })?;
    Ok(table)
}

/// Parses the answer to `GET /v1/routes?routingKey=K`: every route must be
/// for `key` (a server that answers for other keys is wrong, not trusted).
pub fn parse_key_routes(body: &[u8], key: &str) -> Result<RoutesAnswer, BadAnswer> {
    let answer = parse_routes(body)?;
    let foreign = answer.table.keys().any(|k| k != key);
    if foreign {
        return Err(BadAnswer::ForeignKey);
    }
    Ok(answer)
}

/// Whether a failed call ran out of time. Envoy answers a
/// `dispatch_http_call` whose timeout fired with its own `504` ("upstream
/// request timeout"), not with a missing response; other hosts give no
/// response at all. Either is a timeout once the call has taken its whole
/// timeout (within 5%: the host's clock and its timers are not the same
/// clock). A `504` that came sooner is the server's own error.
pub fn is_timeout(error: &BadAnswer, elapsed_ms: u64, timeout_ms: u64) -> bool {
    let waited = elapsed_ms.saturating_add(timeout_ms / 20) >= timeout_ms;
    waited && matches!(error, BadAnswer::NoStatus | BadAnswer::Status(504))
}

/// Classifies an HTTP status for a routes call: `Ok(true)` a body to parse,
/// `Ok(false)` not modified (304).
pub fn check_status(status: Option<u16>) -> Result<bool, BadAnswer> {
    match status {
        None => Err(BadAnswer::NoStatus),
        Some(200) => Ok(true),
        Some(304) => Ok(false),
        Some(other) => Err(BadAnswer::Status(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const BODY: &str = r#"{"version": 7, "routes": [
        {"routingKey": "pr-42", "sandbox": "pr-42", "baseline": "catalog.demo.svc.cluster.local",
         "target": "catalog-pr-42.demo.svc.cluster.local"}]}"#;

    #[test]
    fn parses_a_table() {
        let answer = parse_routes(BODY.as_bytes()).unwrap();
        assert_eq!(answer.version, 7);
        assert_eq!(answer.table.len(), 1);
        assert!(answer
            .table
            .lookup("pr-42", "catalog.demo.svc.cluster.local")
            .is_some());
    }

    #[test]
    fn unknown_fields_are_tolerated_at_the_top_but_not_in_routes() {
        // A newer server may add top-level fields; a route it does not
        // describe in the agreed shape is refused.
        let extra = r#"{"version": 1, "routes": [], "generatedAt": "now"}"#;
        assert!(parse_routes(extra.as_bytes()).is_ok());
        let nested = r#"{"meta": {"a": [1, {"b": null}]}, "routes": [], "version": 2}"#;
        assert_eq!(parse_routes(nested.as_bytes()).unwrap().version, 2);
        assert!(matches!(
            parse_routes(br#"{"version": 1, "routes": []} x"#),
            Err(BadAnswer::Malformed(_))
        ));
        let bad = r#"{"version": 1, "routes": [{"routingKey": "k", "sandbox": "s", "baseline": "a.b", "target": "c.d", "weight": 5}]}"#;
        assert!(matches!(
            parse_routes(bad.as_bytes()),
            Err(BadAnswer::Malformed(_))
        ));
    }

    #[test]
    fn refuses_garbage_and_bad_routes() {
        for body in [
            "",
            "{",
            "null",
            "[]",
            r#"{"version": -1, "routes": []}"#,
            r#"{"routes": []}"#,
        ] {
            assert!(
                matches!(parse_routes(body.as_bytes()), Err(BadAnswer::Malformed(_))),
                "{body}"
            );
        }
        let bad_key = BODY.replace("\"routingKey\": \"pr-42\"", "\"routingKey\": \"a b\"");
        let err = parse_routes(bad_key.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("routes[0].routingKey"), "{err}");
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse_routes(&huge), Err(BadAnswer::TooLarge));
    }

    #[test]
    fn key_answers_must_be_for_that_key() {
        assert!(parse_key_routes(BODY.as_bytes(), "pr-42").is_ok());
        assert_eq!(
            parse_key_routes(BODY.as_bytes(), "pr-7"),
            Err(BadAnswer::ForeignKey)
        );
        let empty = r#"{"version": 3, "routes": []}"#;
        assert!(parse_key_routes(empty.as_bytes(), "pr-7")
            .unwrap()
            .table
            .is_empty());
    }

    const DELTA: &str = r#"{"version": 9, "since": 7,
        "upserts": [{"routingKey": "pr-42", "sandbox": "pr-42", "baseline": "reviews.demo.svc.cluster.local",
                     "target": "reviews-pr-42.demo.svc.cluster.local"}],
        "deletes": [{"routingKey": "pr-42", "baseline": "catalog.demo.svc.cluster.local"}]}"#;

    #[test]
    fn a_delta_applied_to_the_table_at_since_gives_the_table_at_version() {
        let mut table = parse_routes(BODY.as_bytes()).unwrap().table;
        let delta = parse_delta(DELTA.as_bytes(), 7).unwrap();
        assert_eq!((delta.since, delta.version), (7, 9));
        delta.apply_to(&mut table);
        assert_eq!(table.len(), 1);
        assert!(table
            .lookup("pr-42", "catalog.demo.svc.cluster.local")
            .is_none());
        assert_eq!(
            table
                .lookup("pr-42", "reviews.demo.svc.cluster.local")
                .unwrap()
                .target,
            "reviews-pr-42.demo.svc.cluster.local"
        );
        // Deleting what is not held is a no-op; applying twice is the same.
        delta.apply_to(&mut table);
        assert_eq!(table.len(), 1);
        assert_eq!(routes_since_path(7), "/v1/routes?since=7");
    }

    #[test]
    fn a_delta_is_refused_whole_for_one_bad_entry() {
        assert_eq!(
            parse_delta(DELTA.as_bytes(), 8),
            Err(BadAnswer::WrongBase { asked: 8, got: 7 })
        );
        let bad_upsert = DELTA.replace("reviews-pr-42.demo", "Reviews.demo");
        let err = parse_delta(bad_upsert.as_bytes(), 7).unwrap_err();
        assert!(err.to_string().starts_with("upserts[0].target"), "{err}");
        for (from, to, field) in [
            (
                "\"routingKey\": \"pr-42\", \"baseline\"",
                "\"routingKey\": \"a b\", \"baseline\"",
                "routingKey",
            ),
            (
                "\"baseline\": \"catalog.demo",
                "\"baseline\": \"Catalog.demo",
                "baseline",
            ),
        ] {
            let body = DELTA.replace(from, to);
            assert_eq!(
                parse_delta(body.as_bytes(), 7),
                Err(BadAnswer::InvalidDelete { index: 0, field }),
                "{body}"
            );
        }
        let twice = DELTA.replace(
            "catalog.demo.svc.cluster.local\"}]",
            "reviews.demo.svc.cluster.local\"}]",
        );
        // A pair in both lists: deletes first, the upsert stays.
        let mut table = RouteTable::default();
        parse_delta(twice.as_bytes(), 7)
            .unwrap()
            .apply_to(&mut table);
        assert!(table
            .lookup("pr-42", "reviews.demo.svc.cluster.local")
            .is_some());
        for body in [
            "",
            "{}",
            r#"{"version": 9, "since": 7, "upserts": []}"#,
            r#"{"version": 9, "since": 7, "upserts": [], "deletes": [{"routingKey": "k", "baseline": "a.b", "x": 1}]}"#,
            r#"{"version": 9, "routes": []}"#,
        ] {
            assert!(
                matches!(
                    parse_delta(body.as_bytes(), 7),
                    Err(BadAnswer::Malformed(_))
                ),
                "{body}"
            );
        }
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse_delta(&huge, 7), Err(BadAnswer::TooLarge));
    }

    /// The hand readers answer as the serde derives did through
    /// serde_json (the errors' positions aside).
    #[test]
    fn deltas_and_routes_read_as_their_derives_read_them() {
        let route = r#"{"routingKey": "k", "sandbox": "s", "baseline": "a.b", "target": "c.d"}"#;
        let bodies = [
            format!(r#"{{"version": 9, "since": 7, "upserts": [{route}], "deletes": []}}"#),
            format!(r#"{{"since": 7, "deletes": [], "x": [1e400, "\ud800"], "upserts": [{route}, {route}], "version": 9}}"#),
            format!(r#"[9, 7, [{route}], [["k", "a.b"]]]"#),
            r#"[9, 7, [["k", "s", "a.b", "c.d"]], []]"#.to_owned(),
            r#"[9, 7, [["k", "s", "a.b"]], []]"#.to_owned(),
            r#"[9, 7, [["k", "s", "a.b", "c.d", "e"]], []]"#.to_owned(),
            r#"[9, 7, []]"#.to_owned(),
            r#"[9, 7, [], [], 5]"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [], "deletes": [], "version": 9}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [{"routingKey": "k", "routingKey": "k"}], "deletes": []}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [{"sandbox": "s"}], "deletes": []}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [{"bogus": 1}], "deletes": []}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [{"routingKey": 7}], "deletes": []}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [7], "deletes": []}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": {}, "deletes": []}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [], "deletes": [{"routingKey": "k", "baseline": "a.b", "sandbox": "s"}]}"#.to_owned(),
            r#"{"version": 9.5, "since": 7, "upserts": [], "deletes": []}"#.to_owned(),
            r#"{"version": -9, "since": 7, "upserts": [], "deletes": []}"#.to_owned(),
            r#"{"version": "9", "since": 7, "upserts": [], "deletes": []}"#.to_owned(),
            r#"{"version": null, "since": 7, "upserts": [], "deletes": []}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [], "deletes": [],}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [], "deletes": []} {}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [], "deletes": []"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [], "deletes": [{"routingKey": "k", "baseline": "a.b\u0041"}]}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": [], "deletes": [{"routingKey": "k", "baseline": "\ud800"}]}"#.to_owned(),
            r#"{"version": 9, "since": 7, "upserts": []}"#.to_owned(),
            "true".to_owned(),
            "[]".to_owned(),
            "".to_owned(),
        ];
        let strip = |message: String| message.split(" at line").next().unwrap().to_owned();
        for body in &bodies {
            let ours = read_delta_for_test(body.as_bytes()).map_err(|e| strip(e.to_string()));
            let theirs = serde_json::from_str::<Delta>(body).map_err(|e| strip(e.to_string()));
            assert_eq!(ours, theirs, "{body}");
        }
        // The routes document: the last of a duplicate key kept, other
        // keys skipped.
        for (body, version) in [
            (
                r#"{"version": 1, "routes": [], "version": 2}"#.to_owned(),
                Ok(2),
            ),
            (
                format!(r#"{{"routes": [{route}], "routes": [], "version": 1}}"#),
                Ok(1),
            ),
            (
                format!(r#"{{"version": 1, "routes": [{route}], "z": {{"a": [{{}}]}}}}"#),
                Ok(1),
            ),
            (
                r#"{"version": 1, "routes": {}}"#.to_owned(),
                Err("invalid type: map, expected a list of routes"),
            ),
            (
                r#"[1, []]"#.to_owned(),
                Err("invalid type: sequence, expected a routes document"),
            ),
            (
                r#"{"version": 1, "routes": [[]]}"#.to_owned(),
                Err("invalid length 0, expected struct Route with 4 elements"),
            ),
        ] {
            let got = parse_routes(body.as_bytes())
                .map(|a| a.version)
                .map_err(|e| match e {
                    BadAnswer::Malformed(m) => strip(m),
                    other => other.to_string(),
                });
            assert_eq!(got, version.map_err(str::to_owned), "{body}");
        }
    }

    fn read_delta_for_test(body: &[u8]) -> json::Result<Delta> {
        let mut pull = json::Pull::new(body);
        let delta = read_delta(&mut pull)?;
        pull.end()?;
        Ok(delta)
    }

    #[test]
    fn delta_statuses() {
        assert_eq!(check_delta_status(Some(200)), Ok(DeltaStatus::Body));
        assert_eq!(check_delta_status(Some(304)), Ok(DeltaStatus::NotModified));
        assert_eq!(check_delta_status(Some(410)), Ok(DeltaStatus::Gone));
        assert_eq!(check_delta_status(Some(400)), Err(BadAnswer::Status(400)));
        assert_eq!(check_delta_status(None), Err(BadAnswer::NoStatus));
    }

    #[test]
    fn statuses() {
        assert_eq!(check_status(Some(200)), Ok(true));
        assert_eq!(check_status(Some(304)), Ok(false));
        assert_eq!(check_status(Some(503)), Err(BadAnswer::Status(503)));
        assert_eq!(check_status(None), Err(BadAnswer::NoStatus));
    }

    #[test]
    fn timeouts_are_envoys_504_or_no_answer_after_the_whole_timeout() {
        // Envoy 1.40 delivers a timed-out call as a local 504: it used to be
        // counted as a lookup error, never as a timeout.
        assert!(is_timeout(&BadAnswer::Status(504), 200, 200));
        assert!(is_timeout(&BadAnswer::Status(504), 203, 200));
        assert!(is_timeout(&BadAnswer::NoStatus, 200, 200));
        assert!(is_timeout(&BadAnswer::NoStatus, 199, 200), "clock skew");
        assert!(!is_timeout(&BadAnswer::Status(504), 20, 200), "a quick 504");
        assert!(
            !is_timeout(&BadAnswer::NoStatus, 3, 200),
            "connection refused"
        );
        assert!(!is_timeout(&BadAnswer::Status(503), 200, 200));
        assert!(!is_timeout(&BadAnswer::Malformed(String::new()), 500, 200));
        assert!(!is_timeout(&BadAnswer::TooLarge, 500, 200));
        assert!(is_timeout(&BadAnswer::NoStatus, 1, 1));
    }

    #[test]
    fn paths_and_etags() {
        let key = RoutingKey::parse("pr-42").unwrap();
        assert_eq!(routes_for_key_path(&key), "/v1/routes?routingKey=pr-42");
        assert_eq!(etag(12), "\"12\"");
    }
}
