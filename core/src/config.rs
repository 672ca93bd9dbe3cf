//! The plugin configuration (WasmPlugin `pluginConfig`, INTERFACES section 6),
//! in two steps: strict serde structs that mirror the JSON (camelCase,
//! unknown fields refused, defaults filled in), then [`FilterConfig`], the
//! validated form the filter runs with. Every error names the field. The
//! filter reads the structs by hand ([`read`]), as their derives would.

use serde::{Deserialize, Serialize};

use crate::baggage::{is_tchar, MemberKey};
use crate::carrier::KeyCarriers;
use crate::destination::{is_dns1123_label, is_dns_name};
use crate::json;
use crate::recovery::{TraceHeader, DEFAULT_TRACE_HEADERS};
use crate::route_table::{InvalidRouteAt, Route, RouteTable};
use crate::signed_key::{Secret, Verifier};

mod read;

/// The JSON document as written by users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PluginConfig {
    pub routing_key: RoutingKeyConfig,
    pub mode: Mode,
    pub route_header: String,
    pub trust_incoming_route_header: bool,
    pub namespace: String,
    pub route_service: Option<RouteServiceConfig>,
    pub routes: Vec<Route>,
    /// Present only where the filter runs at the mesh's edge (an ingress
    /// gateway); absent, as on sidecars, the filter trusts incoming keys.
    pub edge: Option<EdgeConfig>,
    /// Opt-in: answer every request with this header saying what the
    /// filter decided (`routed; sandbox=pr-42`), for debugging with curl.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_header: Option<String>,
    /// Recovering a routing key an application dropped, from the trace id
    /// ([`crate::recovery`]); absent: off, and no trace header is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryConfig>,
}

/// `recovery`: the filter on the inbound listener records trace id -> key;
/// on the outbound one a request without a key whose trace id was recorded
/// gets it back (`enabled`), or is only counted (`key_dropped`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoveryConfig {
    /// `true`: recover the key. `false`: record and detect only (count
    /// `key_dropped`).
    #[serde(default)]
    pub enabled: bool,
    /// Where the trace id is read, in order (the four known headers).
    #[serde(default = "defaults::trace_headers")]
    pub trace_headers: Vec<String>,
    /// How long a recorded trace id is remembered.
    #[serde(default = "defaults::recovery_ttl_ms")]
    pub ttl_ms: u64,
    /// Slots of the table (shared by every worker of the Envoy).
    #[serde(default = "defaults::recovery_max_entries")]
    pub max_entries: u64,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            routing_key: RoutingKeyConfig::default(),
            mode: Mode::Header,
            route_header: "x-sandbox-route".to_owned(),
            trust_incoming_route_header: false,
            namespace: "default".to_owned(),
            route_service: None,
            routes: Vec::new(),
            edge: None,
            response_header: None,
            recovery: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RoutingKeyConfig {
    pub baggage_keys: Vec<String>,
    pub legacy_headers: bool,
    pub headers: Vec<String>,
}

impl Default for RoutingKeyConfig {
    fn default() -> Self {
        let carriers = KeyCarriers::default();
        RoutingKeyConfig {
            baggage_keys: carriers
                .baggage_keys
                .iter()
                .map(|key| key.as_str().to_owned())
                .collect(),
            legacy_headers: carriers.legacy_headers,
            headers: carriers.headers,
        }
    }
}

/// The filter runs at the mesh's edge, where requests come from outside it
/// (see [`crate::edge`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeConfig {
    /// Remove every routing-key carrier from incoming requests before the
    /// key is read, so a client outside the mesh cannot pick a sandbox.
    /// On unless turned off: `"edge": {}` strips.
    #[serde(default = "defaults::strip_incoming_keys")]
    pub strip_incoming_keys: bool,
    /// Routing keys from outside accepted when signed
    /// ([`crate::signed_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_keys: Option<SignedKeysConfig>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            strip_incoming_keys: defaults::strip_incoming_keys(),
            signed_keys: None,
        }
    }
}

/// Where signed keys come from and what the gateway does with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedKeysConfig {
    /// The VM environment variable holding the HMAC secret (Istio:
    /// `WasmPlugin.vmConfig.env`, from the gateway's Secret-backed env).
    pub secret_env: String,
    /// A second one still accepted while a rotation is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_env: Option<String>,
    /// The query parameter of a preview link (`?sd-routing-key=...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
    /// The cookie a browser sends it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Remove the parameter or cookie from what the gateway forwards, so
    /// applications never see the signature.
    #[serde(default = "defaults::strip_carrier")]
    pub strip_carrier: bool,
    /// Answer a request whose signed key came in the query with a
    /// `Set-Cookie` of it (until it expires), so the browser keeps it for
    /// the pages it loads next. Needs `cookie`.
    #[serde(default)]
    pub set_cookie: bool,
    /// A key expiring further ahead than this is refused (seconds).
    #[serde(default = "defaults::max_ttl_seconds")]
    pub max_ttl_seconds: u64,
}

/// How a routed request is marked (INTERFACES section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Set the route header; a VirtualService matches it.
    Header,
    /// Also rewrite `:authority` to the fork, so Istio's per-host routes
    /// send it there with no per-sandbox VirtualService.
    Authority,
}

/// Where the RouteService is and how the cache around it behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteServiceConfig {
    /// Envoy cluster name, Istio form `outbound|<port>||<fqdn>`.
    pub cluster: String,
    /// `:authority` of calls to it.
    pub authority: String,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::sync_interval_ms")]
    pub sync_interval_ms: u64,
    #[serde(default = "defaults::cache_ttl_ms")]
    pub cache_ttl_ms: u64,
    #[serde(default = "defaults::negative_cache_ttl_ms")]
    pub negative_cache_ttl_ms: u64,
    #[serde(default = "defaults::max_entries")]
    pub max_entries: u64,
    /// Per-worker budget of single-key lookups (`GET /v1/routes?routingKey=K`):
    /// refill rate, per second. A request that would need a lookup beyond it
    /// goes to baseline without one (`lookup_shed`).
    #[serde(default = "defaults::max_lookups_per_second")]
    pub max_lookups_per_second: u64,
    /// How many lookups the budget allows at once (the bucket's size).
    #[serde(default = "defaults::lookup_burst")]
    pub lookup_burst: u64,
}

mod defaults {
    pub fn strip_incoming_keys() -> bool {
        true
    }
    pub fn strip_carrier() -> bool {
        true
    }
    pub fn max_ttl_seconds() -> u64 {
        7 * 86_400
    }
    pub fn timeout_ms() -> u64 {
        200
    }
    pub fn sync_interval_ms() -> u64 {
        5000
    }
    pub fn cache_ttl_ms() -> u64 {
        30_000
    }
    pub fn negative_cache_ttl_ms() -> u64 {
        2000
    }
    pub fn max_entries() -> u64 {
        10_000
    }
    pub fn max_lookups_per_second() -> u64 {
        100
    }
    pub fn lookup_burst() -> u64 {
        100
    }
    pub fn trace_headers() -> Vec<String> {
        super::DEFAULT_TRACE_HEADERS
            .iter()
            .map(|name| (*name).to_owned())
            .collect()
    }
    pub fn recovery_ttl_ms() -> u64 {
        30_000
    }
    pub fn recovery_max_entries() -> u64 {
        20_000
    }
}

/// A configuration that cannot be used, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn syntax(path: impl Into<String>, message: impl ToString) -> ConfigError {
    ConfigError::Syntax {
        path: path.into(),
        message: message.to_string(),
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The first of `(field, value, range)` whose value is outside its range,
/// as the error naming that field.
fn check_ranges(ranges: &[(&str, u64, std::ops::RangeInclusive<u64>)]) -> Result<(), ConfigError> {
    for (field, value, range) in ranges {
        if !range.contains(value) {
            let problem = format!(
                "{value} is out of range {}..={}",
                range.start(),
                range.end()
            );
            return Err(invalid(*field, problem));
        }
    }
    Ok(())
}

/// Headers the route header may not be: pseudo-headers and headers whose
/// meaning Envoy or HTTP fixes, and the carriers the key is read from.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "baggage",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "traceparent",
    "tracestate",
];

/// Range limits, in one place so the docs and tests can quote them.
pub mod limits {
    use std::ops::RangeInclusive;
    pub const TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
    pub const SYNC_INTERVAL_MS: RangeInclusive<u64> = 100..=3_600_000;
    pub const CACHE_TTL_MS: RangeInclusive<u64> = 0..=86_400_000;
    pub const NEGATIVE_CACHE_TTL_MS: RangeInclusive<u64> = 0..=86_400_000;
    pub const MAX_ENTRIES: RangeInclusive<u64> = 1..=1_000_000;
    pub const MAX_LOOKUPS_PER_SECOND: RangeInclusive<u64> = 1..=100_000;
    pub const LOOKUP_BURST: RangeInclusive<u64> = 1..=100_000;
    /// One minute to 31 days.
    pub const MAX_TTL_SECONDS: RangeInclusive<u64> = 60..=2_678_400;
    pub const MAX_CARRIERS: usize = 16;
    pub const RECOVERY_TTL_MS: RangeInclusive<u64> = 1..=3_600_000;
    pub const RECOVERY_MAX_ENTRIES: RangeInclusive<u64> = 1..=1_000_000;
}

/// The validated configuration the filter runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    pub carriers: KeyCarriers,
    pub mode: Mode,
    pub route_header: String,
    pub trust_incoming_route_header: bool,
    pub namespace: String,
    pub route_service: Option<RouteServiceConfig>,
    /// The static `routes` (the whole table without a RouteService, a
    /// bootstrap table beside one).
    pub static_routes: RouteTable,
    /// `None` unless the filter runs at the mesh's edge.
    pub edge: Option<EdgeConfig>,
    /// `responseHeader`: lower case, `None` when off.
    pub response_header: Option<String>,
    /// `edge.signedKeys` with its secrets read: set by
    /// [`FilterConfig::from_json_with_env`], `None` otherwise.
    pub signed_key_verifier: Option<Verifier>,
    /// `recovery`, validated; `None` when absent.
    pub recovery: Option<Recovery>,
}

/// The validated `recovery` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub enabled: bool,
    /// At least one, no duplicates.
    pub trace_headers: Vec<TraceHeader>,
    pub ttl_ms: u64,
    pub max_entries: u32,
}

impl Default for FilterConfig {
    fn default() -> Self {
        // The defaults are valid by construction; tests pin this.
        let plugin = PluginConfig::default();
        FilterConfig {
            carriers: KeyCarriers::default(),
            mode: plugin.mode,
            route_header: plugin.route_header,
            trust_incoming_route_header: plugin.trust_incoming_route_header,
            namespace: plugin.namespace,
            route_service: None,
            static_routes: RouteTable::default(),
            edge: None,
            response_header: None,
            signed_key_verifier: None,
            recovery: None,
        }
    }
}

impl FilterConfig {
    /// Whether incoming routing keys are removed (`edge.stripIncomingKeys`).
    pub fn strips_incoming_keys(&self) -> bool {
        self.edge
            .as_ref()
            .is_some_and(|edge| edge.strip_incoming_keys)
    }

    /// [`FilterConfig::from_json`], then the secrets of `edge.signedKeys`
    /// read through `env` (the plugin VM's environment), so that a missing
    /// or short secret refuses the configuration like any other error.
    pub fn from_json_with_env(
        json: &[u8],
        env: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<Self, ConfigError> {
        let mut config = Self::from_json(json)?;
        if let Some(signed_keys) = config.edge.as_ref().and_then(|e| e.signed_keys.as_ref()) {
            config.signed_key_verifier = Some(signed_keys.verifier(env)?);
        }
        Ok(config)
    }

    /// Parses and validates the JSON configuration. Empty input (no
    /// `pluginConfig` at all) means all defaults.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        Self::from_document(json, |document| {
            PluginConfig::read(json::At::root(document))
        })
    }

    /// [`FilterConfig::from_json`] with the document read by
    /// `PluginConfig`'s serde derive ([`json::from_value`]), as it was read
    /// before [`read`]: the reference that the tests and the `config` fuzz
    /// target hold `from_json` to. Not for the filter (it would bring the
    /// derive back into the `.wasm`).
    pub fn from_json_by_derive(json: &[u8]) -> Result<Self, ConfigError> {
        Self::from_document(json, |document| json::from_value(document))
    }

    fn from_document(
        json: &[u8],
        read: impl FnOnce(&json::Value) -> json::Result<PluginConfig>,
    ) -> Result<Self, ConfigError> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Ok(FilterConfig::default());
        }
        let document = json::Value::from_slice(json).map_err(|e| syntax("config", e))?;
        if !document.is_object() {
            return Err(syntax("config", "must be a JSON object"));
        }
        // The document first, then the types: duplicate keys and the order
        // errors are found in are those of serde_json's `Value`, as before.
        let plugin = read(&document).map_err(|e| syntax(e.path(), e.message()))?;
        plugin.validate()
    }
}

/// What the filter still does while its configuration is refused
/// (INTERFACES section 6): it routes nothing, and it removes a
/// client-supplied route header, so that no client picks a route by sending
/// it. The route header is the refused document's `routeHeader` when that
/// field on its own is a valid route header (lower-cased), else the default
/// `x-sandbox-route`. An incoming route header is never trusted here, even
/// if the document says `trustIncomingRouteHeader`: a trusted header would
/// route the request, and a pass-through sends everything to baseline.
///
/// At the mesh's edge a refused configuration must not open the gate: when
/// the document has an `edge` block (in any form, unless it says
/// `"stripIncomingKeys": false`), the pass-through still strips incoming
/// routing keys, from carriers wider than any valid configuration reads
/// (see [`PassThrough::strip`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassThrough {
    pub route_header: String,
    /// `Some` at the edge: the carriers to strip from every request.
    pub strip: Option<KeyCarriers>,
}

impl PassThrough {
    /// The pass-through for a configuration `json` that was refused.
    pub fn for_refused(json: &[u8]) -> Self {
        let document = json::Value::from_slice(json).ok();
        let document = document.as_ref();
        let salvaged = document
            .and_then(|document| {
                document
                    .get("routeHeader")?
                    .as_str()
                    .map(str::to_ascii_lowercase)
            })
            .filter(|name| validate_route_header(name).is_ok());
        PassThrough {
            route_header: salvaged.unwrap_or_else(|| PluginConfig::default().route_header),
            strip: document.and_then(salvage_edge_strip),
        }
    }

    /// Whether `headers` carry the route header (names compared in any
    /// case): then it must be removed.
    pub fn has_route_header<K: AsRef<str>, V>(&self, headers: &[(K, V)]) -> bool {
        headers
            .iter()
            .any(|(name, _)| name.as_ref().eq_ignore_ascii_case(&self.route_header))
    }
}

/// The carriers a refused document at the edge is stripped of, or `None`
/// when it is not an edge document. Wider than reading, as stripping is
/// (see [`crate::edge`]): the default baggage key and legacy headers always,
/// plus every name in `routingKey.baggageKeys` and `routingKey.headers` that
/// on its own is a token and not a reserved header, whatever else is wrong
/// with the document. A malformed `edge` (`"edge": true`, a typo inside)
/// strips: only an explicit `"stripIncomingKeys": false` turns it off.
fn salvage_edge_strip(document: &json::Value) -> Option<KeyCarriers> {
    let edge = document.get("edge").filter(|edge| !edge.is_null())?;
    if edge.get("stripIncomingKeys") == Some(&json::Value::Bool(false)) {
        return None;
    }
    let names = |field: &str| -> Vec<String> {
        document
            .get("routingKey")
            .and_then(|routing_key| routing_key.get(field))
            .and_then(json::Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(json::Value::as_str)
                    .filter(|name| is_token(name))
                    .map(str::to_ascii_lowercase)
                    .filter(|name| !RESERVED_HEADERS.contains(&name.as_str()))
                    .take(limits::MAX_CARRIERS)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut carriers = KeyCarriers::default();
    for key in names("baggageKeys") {
        if !carriers.baggage_keys.iter().any(|known| *known == *key) {
            carriers.baggage_keys.push(MemberKey::new(key));
        }
    }
    carriers.legacy_headers = true;
    carriers.headers = names("headers");
    Some(carriers)
}

/// The shared-data key under which the VMs of plugin `plugin_name` in one
/// Envoy note the configuration they were given last (its
/// [`config_fingerprint`]). Envoy configures the plugin in a VM on its main
/// thread and again in one VM per worker: the first VM to see a new
/// configuration is the one that reports a refused one, so it is logged and
/// counted once per Envoy, not once per VM.
pub fn last_config_key(plugin_name: &str) -> String {
    format!("sandbox-router/{plugin_name}/last-config")
}

/// A fingerprint of configuration bytes (64-bit FNV-1a, little-endian).
pub fn config_fingerprint(json: &[u8]) -> [u8; 8] {
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash.to_le_bytes()
}

impl PluginConfig {
    /// Checks every value and builds the runtime form.
    pub fn validate(self) -> Result<FilterConfig, ConfigError> {
        self.routing_key.validate()?;
        validate_route_header(&self.route_header)?;
        if let Some(name) = &self.response_header {
            validate_header_name("responseHeader", name)?;
            if *name == self.route_header {
                return Err(invalid("responseHeader", "must differ from routeHeader"));
            }
        }
        if self.edge.is_some() && self.mode == Mode::Authority {
            // A Gateway's listener serves only the hosts its servers list,
            // and a gateway VirtualService binds to those: a request whose
            // `:authority` became the fork's host would match no virtual
            // host there (404), or the catch-all of a `*` server, never the
            // fork by design. Header mode is what works at a gateway.
            return Err(invalid(
                "mode",
                "`authority` is not supported at the mesh's edge (`edge` is set): \
                 a gateway routes only the hosts of its Gateway's servers; use `header`",
            ));
        }
        if !is_dns1123_label(&self.namespace) {
            return Err(invalid("namespace", "must be a DNS-1123 label"));
        }
        if let Some(route_service) = &self.route_service {
            route_service.validate()?;
        }
        if let Some(signed_keys) = self.edge.as_ref().and_then(|e| e.signed_keys.as_ref()) {
            signed_keys.validate()?;
        }
        let recovery = match &self.recovery {
            Some(_) if self.edge.is_some() => {
                // A gateway has no inbound side of an app to learn keys
                // from, and must not give keys to requests from outside.
                return Err(invalid(
                    "recovery",
                    "is not supported at the mesh's edge (`edge` is set)",
                ));
            }
            Some(recovery) => Some(recovery.validate()?),
            None => None,
        };
        let static_routes = RouteTable::new(&self.routes).map_err(|e: InvalidRouteAt| {
            invalid(
                format!("routes[{}].{}", e.index, e.source.field),
                e.source.problem,
            )
        })?;
        Ok(FilterConfig {
            carriers: KeyCarriers {
                baggage_keys: self
                    .routing_key
                    .baggage_keys
                    .into_iter()
                    .map(MemberKey::new)
                    .collect(),
                legacy_headers: self.routing_key.legacy_headers,
                headers: self
                    .routing_key
                    .headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            },
            mode: self.mode,
            route_header: self.route_header,
            trust_incoming_route_header: self.trust_incoming_route_header,
            namespace: self.namespace,
            route_service: self.route_service,
            static_routes,
            edge: self.edge,
            response_header: self.response_header,
            signed_key_verifier: None,
            recovery,
        })
    }
}

impl RecoveryConfig {
    fn validate(&self) -> Result<Recovery, ConfigError> {
        const FIELD: &str = "recovery.traceHeaders";
        if self.trace_headers.is_empty() {
            return Err(invalid(FIELD, "must name at least one header"));
        }
        let mut trace_headers = Vec::with_capacity(self.trace_headers.len());
        for (index, name) in self.trace_headers.iter().enumerate() {
            let header = TraceHeader::from_name(name).ok_or_else(|| {
                invalid(
                    format!("{FIELD}[{index}]"),
                    format!("must be one of {}", DEFAULT_TRACE_HEADERS.join(", ")),
                )
            })?;
            if trace_headers.contains(&header) {
                return Err(invalid(format!("{FIELD}[{index}]"), "is listed twice"));
            }
            trace_headers.push(header);
        }
        let ranges = [
            ("recovery.ttlMs", self.ttl_ms, limits::RECOVERY_TTL_MS),
            (
                "recovery.maxEntries",
                self.max_entries,
                limits::RECOVERY_MAX_ENTRIES,
            ),
        ];
        check_ranges(&ranges)?;
        Ok(Recovery {
            enabled: self.enabled,
            trace_headers,
            ttl_ms: self.ttl_ms,
            max_entries: u32::try_from(self.max_entries).unwrap_or(u32::MAX),
        })
    }
}

impl SignedKeysConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        const FIELD: &str = "edge.signedKeys";
        let envs = [
            ("secretEnv", Some(&self.secret_env)),
            ("previousSecretEnv", self.previous_secret_env.as_ref()),
        ];
        for (name, value) in envs {
            if value.is_some_and(|v| !is_env_name(v)) {
                return Err(invalid(
                    format!("{FIELD}.{name}"),
                    "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                ));
            }
        }
        let carriers = [
            ("queryParameter", self.query_parameter.as_ref()),
            ("cookie", self.cookie.as_ref()),
        ];
        for (name, value) in carriers {
            if value.is_some_and(|v| !is_token(v)) {
                return Err(invalid(
                    format!("{FIELD}.{name}"),
                    "must be a token (RFC 9110: letters, digits, !#$%&'*+-.^_`|~)",
                ));
            }
        }
        if self.query_parameter.is_none() && self.cookie.is_none() {
            return Err(invalid(
                FIELD,
                "must name a `queryParameter`, a `cookie` or both",
            ));
        }
        if self.set_cookie && self.cookie.is_none() {
            return Err(invalid(
                format!("{FIELD}.setCookie"),
                "needs `cookie` (the name of the cookie to set)",
            ));
        }
        check_ranges(&[(
            &format!("{FIELD}.maxTtlSeconds"),
            self.max_ttl_seconds,
            limits::MAX_TTL_SECONDS,
        )])?;
        Ok(())
    }

    /// The verifier, with the secrets read through `env` (the VM's
    /// environment in the filter). Errors name the field whose variable is
    /// missing or too short; the secret itself is never shown.
    pub fn verifier(&self, env: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Verifier, ConfigError> {
        let mut secrets = Vec::new();
        let envs = [
            ("secretEnv", Some(&self.secret_env)),
            ("previousSecretEnv", self.previous_secret_env.as_ref()),
        ];
        for (name, variable) in envs {
            let Some(variable) = variable else { continue };
            let field = format!("edge.signedKeys.{name}");
            let value = env(variable).ok_or_else(|| {
                invalid(
                    field.clone(),
                    format!("environment variable {variable} is not set in the plugin's VM (WasmPlugin vmConfig.env)"),
                )
            })?;
            let secret = Secret::new(&value)
                .map_err(|e| invalid(field, format!("environment variable {variable} {e}")))?;
            secrets.push(secret);
        }
        Ok(Verifier {
            secrets,
            max_ttl_seconds: self.max_ttl_seconds,
        })
    }
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl RoutingKeyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.baggage_keys.is_empty() {
            return Err(invalid(
                "routingKey.baggageKeys",
                "must name at least one key",
            ));
        }
        let lists = [
            ("routingKey.baggageKeys", &self.baggage_keys),
            ("routingKey.headers", &self.headers),
        ];
        for (field, list) in lists {
            if list.len() > limits::MAX_CARRIERS {
                let problem = format!("at most {} entries", limits::MAX_CARRIERS);
                return Err(invalid(field, problem));
            }
            if let Some(index) = list.iter().position(|name| !is_token(name)) {
                let problem = "must be a token (RFC 9110: letters, digits, !#$%&'*+-.^_`|~)";
                return Err(invalid(format!("{field}[{index}]"), problem));
            }
        }
        Ok(())
    }
}

fn validate_route_header(name: &str) -> Result<(), ConfigError> {
    validate_header_name("routeHeader", name)
}

/// A header this filter sets: a lower-case token that is not one whose
/// meaning Envoy or HTTP fixes.
fn validate_header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let lower = name.to_ascii_lowercase();
    if !is_token(name) {
        return Err(invalid(field, "must be an HTTP header name (token)"));
    }
    if name != lower {
        return Err(invalid(
            field,
            "must be lower case (HTTP/2 header names are)",
        ));
    }
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-envoy-") {
        return Err(invalid(field, format!("`{name}` is reserved")));
    }
    Ok(())
}

impl RouteServiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster.is_empty() || self.cluster.chars().any(char::is_whitespace) {
            return Err(invalid(
                "routeService.cluster",
                "must be an Envoy cluster name",
            ));
        }
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(h, _)| h);
        if !is_dns_name(host) && host != "localhost" && !is_ipv4(host) {
            return Err(invalid("routeService.authority", "must be host[:port]"));
        }
        let ranges = [
            (
                "routeService.timeoutMs",
                self.timeout_ms,
                limits::TIMEOUT_MS,
            ),
            (
                "routeService.syncIntervalMs",
                self.sync_interval_ms,
                limits::SYNC_INTERVAL_MS,
            ),
            (
                "routeService.cacheTtlMs",
                self.cache_ttl_ms,
                limits::CACHE_TTL_MS,
            ),
            (
                "routeService.negativeCacheTtlMs",
                self.negative_cache_ttl_ms,
                limits::NEGATIVE_CACHE_TTL_MS,
            ),
            (
                "routeService.maxEntries",
                self.max_entries,
                limits::MAX_ENTRIES,
            ),
            (
                "routeService.maxLookupsPerSecond",
                self.max_lookups_per_second,
                limits::MAX_LOOKUPS_PER_SECOND,
            ),
            (
                "routeService.lookupBurst",
                self.lookup_burst,
                limits::LOOKUP_BURST,
            ),
        ];
        check_ranges(&ranges)?;
        Ok(())
    }
}

fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

fn is_ipv4(host: &str) -> bool {
    host.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn error(json: &str) -> String {
        FilterConfig::from_json(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_input_and_empty_object_mean_defaults() {
        let defaults = FilterConfig::from_json(b"").unwrap();
        assert_eq!(defaults, FilterConfig::from_json(b"{}").unwrap());
        assert_eq!(defaults, FilterConfig::default());
        assert_eq!(defaults.route_header, "x-sandbox-route");
        assert_eq!(defaults.carriers.baggage_keys, ["sd-routing-key"]);
        assert!(defaults.carriers.legacy_headers);
        assert_eq!(defaults.mode, Mode::Header);
        assert_eq!(defaults.namespace, "default");
        // The defaults pass validation.
        assert_eq!(PluginConfig::default().validate().unwrap(), defaults);
    }

    #[test]
    fn the_contract_example_is_accepted() {
        let json = r#"{
          "routingKey": {"baggageKeys": ["sd-routing-key"], "legacyHeaders": true, "headers": []},
          "mode": "header",
          "routeHeader": "x-sandbox-route",
          "trustIncomingRouteHeader": false,
          "namespace": "default",
          "routeService": {
            "cluster": "outbound|8080||routeservice.sandbox-system.svc.cluster.local",
            "authority": "routeservice.sandbox-system.svc.cluster.local",
            "timeoutMs": 200, "syncIntervalMs": 5000, "cacheTtlMs": 30000,
            "negativeCacheTtlMs": 2000, "maxEntries": 10000
          }
        }"#;
        let config = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(config.route_service.unwrap().timeout_ms, 200);
    }

    #[test]
    fn route_service_defaults() {
        let json = r#"{"routeService": {"cluster": "c", "authority": "rs:8080"}}"#;
        let rs = FilterConfig::from_json(json.as_bytes())
            .unwrap()
            .route_service
            .unwrap();
        assert_eq!(
            (
                rs.timeout_ms,
                rs.sync_interval_ms,
                rs.cache_ttl_ms,
                rs.negative_cache_ttl_ms,
                rs.max_entries
            ),
            (200, 5000, 30_000, 2000, 10_000)
        );
    }

    #[test]
    fn static_routes_build_the_table() {
        let json = r#"{"namespace": "demo", "routes": [{"routingKey": "pr-42", "sandbox": "pr-42",
            "baseline": "catalog.demo.svc.cluster.local", "target": "catalog-pr-42.demo.svc.cluster.local"}]}"#;
        let config = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert!(config
            .static_routes
            .lookup("pr-42", "catalog.demo.svc.cluster.local")
            .is_some());
    }

    #[test]
    fn lookup_budget_defaults_and_ranges() {
        let json = r#"{"routeService": {"cluster": "c", "authority": "rs"}}"#;
        let rs = FilterConfig::from_json(json.as_bytes())
            .unwrap()
            .route_service
            .unwrap();
        assert_eq!((rs.max_lookups_per_second, rs.lookup_burst), (100, 100));
        let json = r#"{"routeService": {"cluster": "c", "authority": "rs",
            "maxLookupsPerSecond": 5, "lookupBurst": 20}}"#;
        let rs = FilterConfig::from_json(json.as_bytes())
            .unwrap()
            .route_service
            .unwrap();
        assert_eq!((rs.max_lookups_per_second, rs.lookup_burst), (5, 20));
    }

    #[test]
    fn edge_is_off_unless_configured_and_strips_by_default() {
        assert!(!FilterConfig::default().strips_incoming_keys());
        assert_eq!(FilterConfig::default().edge, None);
        let on = FilterConfig::from_json(br#"{"edge": {"stripIncomingKeys": true}}"#).unwrap();
        assert!(on.strips_incoming_keys());
        let off = FilterConfig::from_json(br#"{"edge": {"stripIncomingKeys": false}}"#).unwrap();
        assert_eq!(
            off.edge,
            Some(EdgeConfig {
                strip_incoming_keys: false,
                signed_keys: None,
            })
        );
        assert!(!off.strips_incoming_keys());
        // Being an edge is what matters: an empty block strips.
        let empty = FilterConfig::from_json(br#"{"edge": {}}"#).unwrap();
        assert!(empty.strips_incoming_keys());
        let null = FilterConfig::from_json(br#"{"edge": null}"#).unwrap();
        assert!(!null.strips_incoming_keys());
        // Written back out and read again, it means the same.
        let plugin: PluginConfig =
            serde_json::from_str(r#"{"edge": {"stripIncomingKeys": true}}"#).unwrap();
        let written = serde_json::to_vec(&plugin).unwrap();
        assert_eq!(FilterConfig::from_json(&written).unwrap(), on);
    }

    #[test]
    fn signed_keys_config_is_checked_naming_the_field() {
        let with = |signed: &str| format!(r#"{{"edge": {{"signedKeys": {signed}}}}}"#);
        let ok = FilterConfig::from_json(
            with(r#"{"secretEnv": "SIGNING_KEY", "queryParameter": "sd-routing-key"}"#).as_bytes(),
        )
        .unwrap();
        let signed = ok.edge.unwrap().signed_keys.unwrap();
        assert!(signed.strip_carrier && !signed.set_cookie);
        assert_eq!(signed.max_ttl_seconds, 604_800);
        assert_eq!(
            ok.signed_key_verifier, None,
            "from_json reads no environment"
        );
        let cases = [
            (
                r#"{"queryParameter": "q"}"#,
                "edge.signedKeys: missing field `secretEnv`",
            ),
            (
                r#"{"secretEnv": "1X", "cookie": "c"}"#,
                "edge.signedKeys.secretEnv:",
            ),
            (
                r#"{"secretEnv": "A", "previousSecretEnv": "a-b", "cookie": "c"}"#,
                "edge.signedKeys.previousSecretEnv:",
            ),
            (r#"{"secretEnv": "A"}"#, "edge.signedKeys: must name"),
            (
                r#"{"secretEnv": "A", "cookie": "a b"}"#,
                "edge.signedKeys.cookie:",
            ),
            (
                r#"{"secretEnv": "A", "queryParameter": "q", "setCookie": true}"#,
                "edge.signedKeys.setCookie: needs `cookie`",
            ),
            (
                r#"{"secretEnv": "A", "cookie": "c", "maxTtlSeconds": 5}"#,
                "edge.signedKeys.maxTtlSeconds: 5 is out of range",
            ),
            (
                r#"{"secretEnv": "A", "cookie": "c", "ttl": 5}"#,
                "edge.signedKeys.ttl: unknown field",
            ),
        ];
        for (signed, want) in cases {
            let err = FilterConfig::from_json(with(signed).as_bytes()).unwrap_err();
            assert!(err.to_string().starts_with(want), "{signed}: {err}");
        }
    }

    #[test]
    fn signed_key_secrets_come_from_the_environment_and_are_never_shown() {
        let json = br#"{"edge": {"signedKeys": {"secretEnv": "NEW", "previousSecretEnv": "OLD", "cookie": "c"}}}"#;
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let env = |name: &str| match name {
            "NEW" | "OLD" => Some(secret.clone()),
            _ => None,
        };
        let config = FilterConfig::from_json_with_env(json, env).unwrap();
        assert_eq!(config.signed_key_verifier.unwrap().secrets.len(), 2);
        let missing = FilterConfig::from_json_with_env(json, |name: &str| {
            (name == "NEW").then(|| secret.clone())
        })
        .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "edge.signedKeys.previousSecretEnv: environment variable OLD is not set in the \
             plugin's VM (WasmPlugin vmConfig.env)"
        );
        let short =
            FilterConfig::from_json_with_env(json, |_: &str| Some(b"too-short-secret".to_vec()))
                .unwrap_err();
        assert_eq!(
            short.to_string(),
            "edge.signedKeys.secretEnv: environment variable NEW is shorter than 32 bytes"
        );
        assert!(!short.to_string().contains("too-short"));
    }

    #[test]
    fn response_header_is_off_unless_named_and_checked() {
        assert_eq!(FilterConfig::default().response_header, None);
        let on = FilterConfig::from_json(br#"{"responseHeader": "x-sandbox-routed"}"#).unwrap();
        assert_eq!(on.response_header.as_deref(), Some("x-sandbox-routed"));
        for (json, want) in [
            (
                &br#"{"responseHeader": "X-Routed"}"#[..],
                "responseHeader: must be lower case",
            ),
            (
                br#"{"responseHeader": "a b"}"#,
                "responseHeader: must be an HTTP header name",
            ),
            (
                br#"{"responseHeader": "content-length"}"#,
                "responseHeader: `content-length` is reserved",
            ),
            (
                br#"{"responseHeader": "x-sandbox-route"}"#,
                "responseHeader: must differ from routeHeader",
            ),
        ] {
            let err = FilterConfig::from_json(json).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn authority_mode_is_refused_at_the_edge_naming_mode() {
        let err = FilterConfig::from_json(br#"{"mode": "authority", "edge": {}}"#).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { field, .. } if field == "mode"),
            "{err}"
        );
        assert!(err.to_string().contains("`edge` is set"), "{err}");
        // Header mode at the edge, and authority mode on a sidecar, are fine.
        FilterConfig::from_json(br#"{"mode": "header", "edge": {}}"#).unwrap();
        FilterConfig::from_json(br#"{"mode": "authority"}"#).unwrap();
    }

    #[test]
    fn a_refused_edge_config_still_strips_incoming_keys() {
        // Not an edge document: nothing stripped.
        for json in [&br#"{"bogus": 1}"#[..], br#"{"edge": null, "x": 1}"#, b"{"] {
            assert_eq!(PassThrough::for_refused(json).strip, None);
        }
        // Turned off explicitly: nothing stripped.
        let off = br#"{"edge": {"stripIncomingKeys": false}, "x": 1}"#;
        assert_eq!(PassThrough::for_refused(off).strip, None);
        // An edge document refused for another field, or for a malformed
        // edge block: the defaults and every valid name it lists.
        for json in [
            &br#"{"edge": {}, "bogus": 1}"#[..],
            br#"{"edge": true}"#,
            br#"{"edge": {"stripIncomingKey": false}}"#,
            br#"{"edge": {"stripIncomingKeys": "no"}}"#,
        ] {
            let strip = PassThrough::for_refused(json).strip.unwrap();
            assert_eq!(
                strip,
                KeyCarriers::default(),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        let json = br#"{"edge": {}, "mode": "authority", "routingKey": {
            "baggageKeys": ["Tenant-Key", "a b", 7, "sd-routing-key"],
            "legacyHeaders": false,
            "headers": ["X-Key", "host", "c:d"]}}"#;
        let strip = PassThrough::for_refused(json).strip.unwrap();
        assert_eq!(strip.baggage_keys, ["sd-routing-key", "tenant-key"]);
        assert!(strip.legacy_headers, "stripping is wider than reading");
        assert_eq!(strip.headers, ["x-key"]);
    }

    #[test]
    fn a_refused_config_still_names_the_route_header_to_remove() {
        let default = PassThrough::for_refused(br#"{"bogus": 1}"#);
        assert_eq!(default.route_header, "x-sandbox-route");
        // Its own routeHeader, when that field is valid (lower-cased).
        let own = PassThrough::for_refused(br#"{"routeHeader": "X-Route", "mode": "no"}"#);
        assert_eq!(own.route_header, "x-route");
        // Not JSON, not an object, an invalid or reserved name: the default.
        for json in [
            &b"{"[..],
            b"[1]",
            br#"{"routeHeader": "baggage"}"#,
            br#"{"routeHeader": "a b"}"#,
            br#"{"routeHeader": 7}"#,
        ] {
            assert_eq!(
                PassThrough::for_refused(json).route_header,
                "x-sandbox-route",
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        let headers = [(":authority", "a"), ("X-Sandbox-Route", "pr-42")];
        assert!(default.has_route_header(&headers));
        assert!(!own.has_route_header(&headers));
    }

    #[test]
    fn fingerprints_tell_configurations_apart() {
        assert_eq!(
            config_fingerprint(b""),
            0xcbf2_9ce4_8422_2325_u64.to_le_bytes()
        );
        assert_eq!(
            config_fingerprint(b"a"),
            0xaf63_dc4c_8601_ec8c_u64.to_le_bytes()
        );
        assert_ne!(config_fingerprint(b"{}"), config_fingerprint(b"{ }"));
        assert_eq!(
            last_config_key("istio-system.sandbox-router"),
            "sandbox-router/istio-system.sandbox-router/last-config"
        );
    }

    #[test]
    fn an_error_deep_in_a_long_list_names_its_element() {
        let good = r#"{"routingKey": "k", "sandbox": "s", "baseline": "a.b", "target": "c.d"}"#;
        let bad = r#"{"routingKey": "k", "sandbox": "s", "baseline": "a.b", "target": 7}"#;
        let mut routes = [good; 9];
        routes[6] = bad;
        routes[8] = bad;
        let json = format!(r#"{{"routes": [{}]}}"#, routes.join(","));
        let error = FilterConfig::from_json(json.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("routes[6].target: invalid type"),
            "{error}"
        );
    }

    #[test]
    fn recovery_is_off_unless_configured_and_checked_naming_the_field() {
        assert_eq!(FilterConfig::from_json(b"{}").unwrap().recovery, None);
        let config = FilterConfig::from_json(br#"{"recovery": {}}"#).unwrap();
        assert_eq!(
            config.recovery,
            Some(Recovery {
                enabled: false,
                trace_headers: TraceHeader::ALL.to_vec(),
                ttl_ms: 30_000,
                max_entries: 20_000,
            })
        );
        let config = FilterConfig::from_json(
            br#"{"recovery": {"enabled": true, "traceHeaders": ["X-Request-Id", "traceparent"], "ttlMs": 1, "maxEntries": 1000000}}"#,
        )
        .unwrap();
        let recovery = config.recovery.unwrap();
        assert!(recovery.enabled);
        assert_eq!(
            recovery.trace_headers,
            [TraceHeader::RequestId, TraceHeader::Traceparent]
        );
        for (json, want) in [
            (r#"{"recovery": {"enable": true}}"#, "recovery.enable: unknown field `enable`"),
            (r#"{"recovery": {"enabled": 1}}"#, "recovery.enabled: invalid type"),
            (r#"{"recovery": {"traceHeaders": []}}"#, "recovery.traceHeaders: must name at least one"),
            (
                r#"{"recovery": {"traceHeaders": ["traceparent", "x-b3-spanid"]}}"#,
                "recovery.traceHeaders[1]: must be one of traceparent, x-b3-traceid, uber-trace-id, x-request-id",
            ),
            (
                r#"{"recovery": {"traceHeaders": ["traceparent", "TRACEPARENT"]}}"#,
                "recovery.traceHeaders[1]: is listed twice",
            ),
            (r#"{"recovery": {"ttlMs": 0}}"#, "recovery.ttlMs: 0 is out of range 1..=3600000"),
            (
                r#"{"recovery": {"maxEntries": 1000001}}"#,
                "recovery.maxEntries: 1000001 is out of range 1..=1000000",
            ),
            (r#"{"recovery": {"maxEntries": -1}}"#, "recovery.maxEntries: invalid value"),
            (r#"{"recovery": {}, "edge": {}}"#, "recovery: is not supported at the mesh's edge"),
        ] {
            let got = error(json);
            assert!(got.starts_with(want), "{json}: {got}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"mode": "sideways"}"#,
                "mode: unknown variant `sideways`",
            ),
            (r#"{"bogus": 1}"#, "bogus: unknown field `bogus`"),
            (
                r#"{"routingKey": {"baggageKey": []}}"#,
                "routingKey.baggageKey: unknown field `baggageKey`",
            ),
            (
                r#"{"routingKey": {"baggageKeys": []}}"#,
                "routingKey.baggageKeys: must name",
            ),
            (
                r#"{"routingKey": {"baggageKeys": ["a b"]}}"#,
                "routingKey.baggageKeys[0]: ",
            ),
            (
                r#"{"routingKey": {"headers": ["ok", "x:y"]}}"#,
                "routingKey.headers[1]: ",
            ),
            (
                r#"{"routingKey": {"legacyHeaders": "yes"}}"#,
                "routingKey.legacyHeaders: invalid type",
            ),
            (r#"{"routeHeader": ":authority"}"#, "routeHeader: "),
            (
                r#"{"routeHeader": "X-Route"}"#,
                "routeHeader: must be lower case",
            ),
            (
                r#"{"routeHeader": "baggage"}"#,
                "routeHeader: `baggage` is reserved",
            ),
            (r#"{"namespace": "Demo"}"#, "namespace: "),
            (
                r#"{"routeService": {"authority": "a"}}"#,
                "routeService: missing field `cluster`",
            ),
            (
                r#"{"routeService": {"cluster": "c", "authority": "a", "timeoutMs": 0}}"#,
                "routeService.timeoutMs: 0 is out of range 1..=60000",
            ),
            (
                r#"{"routeService": {"cluster": "c", "authority": "a", "maxEntries": -1}}"#,
                "routeService.maxEntries: invalid value",
            ),
            (
                r#"{"routeService": {"cluster": "c", "authority": "a", "syncIntervalMs": 99}}"#,
                "routeService.syncIntervalMs: 99 is out of range",
            ),
            (
                r#"{"routeService": {"cluster": "c", "authority": "a", "maxLookupsPerSecond": 0}}"#,
                "routeService.maxLookupsPerSecond: 0 is out of range 1..=100000",
            ),
            (
                r#"{"routeService": {"cluster": "c", "authority": "a", "lookupBurst": 100001}}"#,
                "routeService.lookupBurst: 100001 is out of range 1..=100000",
            ),
            (
                r#"{"routeService": {"cluster": "c", "authority": "a", "maxLookupsPerSec": 5}}"#,
                "routeService.maxLookupsPerSec: unknown field",
            ),
            (
                r#"{"routeService": {"cluster": "c", "authority": "a b"}}"#,
                "routeService.authority: ",
            ),
            (
                r#"{"routes": [{"routingKey": "k", "sandbox": "s", "baseline": "a.b", "target": "c.d", "x": 1}]}"#,
                "routes[0].x: unknown field `x`",
            ),
            (
                r#"{"routes": [{"routingKey": "k k", "sandbox": "s", "baseline": "a.b", "target": "c.d"}]}"#,
                "routes[0].routingKey: ",
            ),
            (
                r#"{"edge": {"stripIncomingKey": true}}"#,
                "edge.stripIncomingKey: unknown field `stripIncomingKey`",
            ),
            (
                r#"{"edge": {"signedKey": {"cookie": "k"}}}"#,
                "edge.signedKey: unknown field `signedKey`",
            ),
            (
                r#"{"edge": {"stripIncomingKeys": "yes"}}"#,
                "edge.stripIncomingKeys: invalid type",
            ),
            (r#"{"edge": true}"#, "edge: invalid type"),
            ("[1]", "config: must be a JSON object"),
            ("{} {}", "config: trailing characters"),
            ("{", "config: EOF"),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .map(|(json, expected)| (json, expected, error(json)))
            .filter(|(_, expected, err)| !err.starts_with(*expected))
            .map(|(json, expected, err)| format!("{json}\n  got: {err}\n  want: {expected}"))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
