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
    let delta: Delta = json::from_slice(body).map_err(|e| BadAnswer::Malformed(e.to_string()))?;
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
    let mut de = json::Deserializer::new(body);
    let parsed = serde::de::Deserializer::deserialize_map(
        &mut de,
        TableVisitor {
            invalid: &mut invalid,
        },
    )
    .and_then(|doc| de.end().map(|()| doc));
    if let Some(at) = invalid {
        return Err(BadAnswer::InvalidRoute(at));
    }
    match parsed {
        Ok((Some(version), Some(table))) => Ok(RoutesAnswer { version, table }),
        Ok((None, _)) => Err(BadAnswer::Malformed("missing field `version`".into())),
        Ok((_, None)) => Err(BadAnswer::Malformed("missing field `routes`".into())),
        Err(e) => Err(BadAnswer::Malformed(e.to_string())),
    }
}

/// `{"version": .., "routes": [..]}`, other top-level fields ignored (a
/// newer server may add some); the first invalid route is left in `invalid`.
struct TableVisitor<'a> {
    invalid: &'a mut Option<InvalidRouteAt>,
}

impl<'de> serde::de::Visitor<'de> for TableVisitor<'_> {
    type Value = (Option<u64>, Option<RouteTable>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a routes document")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut version, mut table) = (None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "version" => version = Some(map.next_value()?),
                "routes" => {
                    table = Some(map.next_value_seed(RoutesSeed {
                        invalid: &mut *self.invalid,
                    })?)
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok((version, table))
    }
}

/// The `routes` list, read into a table route by route.
struct RoutesSeed<'a> {
    invalid: &'a mut Option<InvalidRouteAt>,
}

impl<'de> serde::de::DeserializeSeed<'de> for RoutesSeed<'_> {
    type Value = RouteTable;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<RouteTable, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RoutesSeed<'_> {
    type Value = RouteTable;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of routes")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RouteTable, A::Error> {
        let mut table = RouteTable::default();
        let mut index = 0;
        while let Some(route) = seq.next_element::<Route>()? {
            if let Err(source) = route.validate() {
                *self.invalid = Some(InvalidRouteAt { index, source });
                return Err(serde::de::Error::custom("invalid route"));
            }
            table.insert(&route);
            index += 1;
        }
        Ok(table)
    }
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
