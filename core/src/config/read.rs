//! The configuration document read by hand from its [`json::Value`], field
//! by field, into [`PluginConfig`]: what `PluginConfig`'s serde derive
//! reads through [`json::from_value`], with the same defaults, the same
//! first error and the same message at the same path (the tests and the
//! `config` fuzz target hold the two to that). The derive stays for
//! `Serialize`, the tests and fuzzing; instantiated for the filter it cost
//! the `.wasm` ~30 KB (a copy of serde's visitors per struct and per
//! optional block), this a few.

use super::{
    defaults, EdgeConfig, Mode, PluginConfig, RecoveryConfig, RouteServiceConfig, RoutingKeyConfig,
    SignedKeysConfig,
};
use crate::json::{self, At};
use crate::route_table::Route;

impl PluginConfig {
    /// The document (an object: [`super::FilterConfig::from_json`] checks).
    pub(super) fn read(at: At<'_, '_>) -> json::Result<Self> {
        let mut config = PluginConfig::default();
        let fields = &[
            "routingKey",
            "mode",
            "routeHeader",
            "trustIncomingRouteHeader",
            "namespace",
            "routeService",
            "routes",
            "edge",
            "responseHeader",
            "recovery",
        ];
        at.fields("PluginConfig", fields, &[], &mut |at, field| {
            match field {
                "routingKey" => config.routing_key = RoutingKeyConfig::read(at)?,
                "mode" => config.mode = Mode::read(at)?,
                "routeHeader" => config.route_header = at.string()?,
                "trustIncomingRouteHeader" => config.trust_incoming_route_header = at.bool()?,
                "namespace" => config.namespace = at.string()?,
                "routeService" => config.route_service = optional(at, RouteServiceConfig::read)?,
                "routes" => {
                    let mut routes = Vec::new();
                    at.elements(&mut |at| {
                        routes.push(read_route(at)?);
                        Ok(())
                    })?;
                    config.routes = routes;
                }
                "edge" => config.edge = optional(at, EdgeConfig::read)?,
                "responseHeader" => config.response_header = optional(at, |at| at.string())?,
                "recovery" => config.recovery = optional(at, RecoveryConfig::read)?,
                _ => {} // no other name is passed
            }
            Ok(())
        })?;
        Ok(config)
    }
}

/// An `Option`: `null` is `None` (a field that is absent keeps its default,
/// `None`, too).
fn optional<'v, T>(
    at: At<'v, '_>,
    read: impl FnOnce(At<'v, '_>) -> json::Result<T>,
) -> json::Result<Option<T>> {
    if at.is_null() {
        Ok(None)
    } else {
        read(at).map(Some)
    }
}

impl RoutingKeyConfig {
    fn read(at: At<'_, '_>) -> json::Result<Self> {
        let mut config = RoutingKeyConfig::default();
        let fields = &["baggageKeys", "legacyHeaders", "headers"];
        at.fields("RoutingKeyConfig", fields, &[], &mut |at, field| {
            match field {
                "baggageKeys" => config.baggage_keys = at.strings()?,
                "legacyHeaders" => config.legacy_headers = at.bool()?,
                "headers" => config.headers = at.strings()?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(config)
    }
}

impl Mode {
    fn read(at: At<'_, '_>) -> json::Result<Self> {
        match at.variant(&["header", "authority"])? {
            0 => Ok(Mode::Header),
            _ => Ok(Mode::Authority),
        }
    }
}

impl RouteServiceConfig {
    fn read(at: At<'_, '_>) -> json::Result<Self> {
        let mut config = RouteServiceConfig {
            cluster: String::new(),
            authority: String::new(),
            timeout_ms: defaults::timeout_ms(),
            sync_interval_ms: defaults::sync_interval_ms(),
            cache_ttl_ms: defaults::cache_ttl_ms(),
            negative_cache_ttl_ms: defaults::negative_cache_ttl_ms(),
            max_entries: defaults::max_entries(),
            max_lookups_per_second: defaults::max_lookups_per_second(),
            lookup_burst: defaults::lookup_burst(),
        };
        let fields = &[
            "cluster",
            "authority",
            "timeoutMs",
            "syncIntervalMs",
            "cacheTtlMs",
            "negativeCacheTtlMs",
            "maxEntries",
            "maxLookupsPerSecond",
            "lookupBurst",
        ];
        let required = &["cluster", "authority"];
        at.fields("RouteServiceConfig", fields, required, &mut |at, field| {
            match field {
                "cluster" => config.cluster = at.string()?,
                "authority" => config.authority = at.string()?,
                "timeoutMs" => config.timeout_ms = at.u64()?,
                "syncIntervalMs" => config.sync_interval_ms = at.u64()?,
                "cacheTtlMs" => config.cache_ttl_ms = at.u64()?,
                "negativeCacheTtlMs" => config.negative_cache_ttl_ms = at.u64()?,
                "maxEntries" => config.max_entries = at.u64()?,
                "maxLookupsPerSecond" => config.max_lookups_per_second = at.u64()?,
                "lookupBurst" => config.lookup_burst = at.u64()?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(config)
    }
}

/// A static route (`Route`'s derive: every field required, no other).
fn read_route(at: At<'_, '_>) -> json::Result<Route> {
    let mut route = Route {
        routing_key: String::new(),
        sandbox: String::new(),
        baseline: String::new(),
        target: String::new(),
    };
    let fields = &["routingKey", "sandbox", "baseline", "target"];
    at.fields("Route", fields, fields, &mut |at, field| {
        let value = at.string()?;
        match field {
            "routingKey" => route.routing_key = value,
            "sandbox" => route.sandbox = value,
            "baseline" => route.baseline = value,
            "target" => route.target = value,
            _ => {}
        }
        Ok(())
    })?;
    Ok(route)
}

impl EdgeConfig {
    fn read(at: At<'_, '_>) -> json::Result<Self> {
        let mut config = EdgeConfig::default();
        let fields = &["stripIncomingKeys", "signedKeys"];
        at.fields("EdgeConfig", fields, &[], &mut |at, field| {
            match field {
                "stripIncomingKeys" => config.strip_incoming_keys = at.bool()?,
                "signedKeys" => config.signed_keys = optional(at, SignedKeysConfig::read)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(config)
    }
}

impl SignedKeysConfig {
    fn read(at: At<'_, '_>) -> json::Result<Self> {
        let mut config = SignedKeysConfig {
            secret_env: String::new(),
            previous_secret_env: None,
            query_parameter: None,
            cookie: None,
            strip_carrier: defaults::strip_carrier(),
            set_cookie: false,
            max_ttl_seconds: defaults::max_ttl_seconds(),
        };
        let fields = &[
            "secretEnv",
            "previousSecretEnv",
            "queryParameter",
            "cookie",
            "stripCarrier",
            "setCookie",
            "maxTtlSeconds",
        ];
        at.fields(
            "SignedKeysConfig",
            fields,
            &["secretEnv"],
            &mut |at, field| {
                let string = |at: At<'_, '_>| at.string();
                match field {
                    "secretEnv" => config.secret_env = at.string()?,
                    "previousSecretEnv" => config.previous_secret_env = optional(at, string)?,
                    "queryParameter" => config.query_parameter = optional(at, string)?,
                    "cookie" => config.cookie = optional(at, string)?,
                    "stripCarrier" => config.strip_carrier = at.bool()?,
                    "setCookie" => config.set_cookie = at.bool()?,
                    "maxTtlSeconds" => config.max_ttl_seconds = at.u64()?,
                    _ => {}
                }
                Ok(())
            },
        )?;
        Ok(config)
    }
}

impl RecoveryConfig {
    fn read(at: At<'_, '_>) -> json::Result<Self> {
        let mut config = RecoveryConfig {
            enabled: false,
            trace_headers: defaults::trace_headers(),
            ttl_ms: defaults::recovery_ttl_ms(),
            max_entries: defaults::recovery_max_entries(),
        };
        let fields = &["enabled", "traceHeaders", "ttlMs", "maxEntries"];
        at.fields("RecoveryConfig", fields, &[], &mut |at, field| {
            match field {
                "enabled" => config.enabled = at.bool()?,
                "traceHeaders" => config.trace_headers = at.strings()?,
                "ttlMs" => config.ttl_ms = at.u64()?,
                "maxEntries" => config.max_entries = at.u64()?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::{json, Value as Json};

    /// A document that sets every field of every block.
    fn full() -> Json {
        json!({
            "routingKey": {"baggageKeys": ["sd-routing-key", "tenant"], "legacyHeaders": false, "headers": ["x-key"]},
            "mode": "header",
            "routeHeader": "x-sandbox-route",
            "trustIncomingRouteHeader": true,
            "namespace": "demo",
            "routeService": {
                "cluster": "outbound|8080||rs.svc", "authority": "rs:8080", "timeoutMs": 200,
                "syncIntervalMs": 5000, "cacheTtlMs": 1, "negativeCacheTtlMs": 2, "maxEntries": 3,
                "maxLookupsPerSecond": 4, "lookupBurst": 5
            },
            "routes": [{"routingKey": "k", "sandbox": "s", "baseline": "a.b", "target": "c.d"}],
            "edge": {"stripIncomingKeys": false, "signedKeys": {
                "secretEnv": "A", "previousSecretEnv": "B", "queryParameter": "q", "cookie": "c",
                "stripCarrier": false, "setCookie": true, "maxTtlSeconds": 60
            }},
            "responseHeader": "x-routed",
            "recovery": {"enabled": true, "traceHeaders": ["traceparent"], "ttlMs": 1, "maxEntries": 2}
        })
    }

    /// Each struct (as a JSON pointer into [`full`]) with its fields in
    /// serde's order.
    const BLOCKS: &[(&str, &[&str])] = &[
        (
            "",
            &[
                "routingKey",
                "mode",
                "routeHeader",
                "trustIncomingRouteHeader",
                "namespace",
                "routeService",
                "routes",
                "edge",
                "responseHeader",
                "recovery",
            ],
        ),
        ("/routingKey", &["baggageKeys", "legacyHeaders", "headers"]),
        (
            "/routeService",
            &[
                "cluster",
                "authority",
                "timeoutMs",
                "syncIntervalMs",
                "cacheTtlMs",
                "negativeCacheTtlMs",
                "maxEntries",
                "maxLookupsPerSecond",
                "lookupBurst",
            ],
        ),
        (
            "/routes/0",
            &["routingKey", "sandbox", "baseline", "target"],
        ),
        ("/edge", &["stripIncomingKeys", "signedKeys"]),
        (
            "/edge/signedKeys",
            &[
                "secretEnv",
                "previousSecretEnv",
                "queryParameter",
                "cookie",
                "stripCarrier",
                "setCookie",
                "maxTtlSeconds",
            ],
        ),
        (
            "/recovery",
            &["enabled", "traceHeaders", "ttlMs", "maxEntries"],
        ),
    ];

    /// Values of every kind, put in place of every field and block.
    fn samples() -> Vec<Json> {
        [
            "null",
            "true",
            "false",
            "0",
            "7",
            "-7",
            "18446744073709551615",
            "1.5",
            "1e2",
            "\"\"",
            "\"x\\n\\\"y\"",
            "\"header\"",
            "\"authority\"",
            "\"sd-routing-key\"",
            "[]",
            "[\"x\"]",
            "[\"sd-routing-key\", 7]",
            "[null]",
            "{}",
            "{\"header\": null}",
            "{\"authority\": null}",
            "{\"header\": 1}",
            "{\"header\": []}",
            "{\"nope\": null}",
            "{\"a\": 1, \"b\": 2}",
        ]
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect()
    }

    /// The document as read by hand and by the derive: the same config, or
    /// the same error at the same path. Then the same [`FilterConfig`] or
    /// error through validation.
    fn assert_read_alike(document: &Json) {
        let text = document.to_string();
        let value = json::Value::from_slice(text.as_bytes()).unwrap();
        let by_hand = PluginConfig::read(At::root(&value));
        let by_derive = json::from_value::<PluginConfig>(&value);
        match (&by_hand, &by_derive) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
            (Err(a), Err(b)) => {
                assert_eq!((a.path(), a.message()), (b.path(), b.message()), "{text}")
            }
            _ => panic!("{text}: by hand {by_hand:?}, by the derive {by_derive:?}"),
        }
        assert_eq!(
            FilterConfig::from_json(text.as_bytes()),
            FilterConfig::from_json_by_derive(text.as_bytes()),
            "{text}"
        );
    }

    /// Every field of every block replaced by every sample, removed, and
    /// joined by unknown keys; every block replaced by every sample and by
    /// arrays of its fields of every length.
    #[test]
    fn the_document_is_read_as_its_derive_reads_it() {
        let samples = samples();
        let mut documents = vec![json!({}), full()];
        for (block, fields) in BLOCKS {
            let with = |change: &dyn Fn(&mut Json)| {
                let mut document = full();
                change(document.pointer_mut(block).unwrap());
                document
            };
            for field in *fields {
                for sample in &samples {
                    documents.push(with(&|b| b[*field] = sample.clone()));
                }
                documents.push(with(&|b| {
                    b.as_object_mut().unwrap().remove(*field);
                }));
                // Everything but this field: the first missing one named.
                documents.push(with(&|b| {
                    b.as_object_mut().unwrap().retain(|k, _| k == field);
                }));
            }
            for unknown in ["aaa", "zzz", "mode", "routes"] {
                if !fields.contains(&unknown) {
                    documents.push(with(&|b| b[unknown] = json!(1)));
                }
            }
            if block.is_empty() {
                continue;
            }
            for sample in &samples {
                documents.push(with(&|b| *b = sample.clone()));
            }
            for len in 0..=fields.len() + 1 {
                documents.push(with(&|b| {
                    let mut items: Vec<Json> = fields.iter().map(|f| b[*f].clone()).collect();
                    items.push(json!("extra"));
                    items.truncate(len);
                    *b = Json::Array(items);
                }));
            }
        }
        for document in &documents {
            assert_read_alike(document);
        }
        assert!(documents.len() > 1000, "{}", documents.len());
    }

    #[test]
    fn optional_blocks_and_lists_of_routes_are_read_alike() {
        for document in [
            json!({"routeService": null, "edge": null, "recovery": null, "responseHeader": null}),
            json!({"edge": {"signedKeys": null}}),
            json!({"edge": {"signedKeys": {"secretEnv": "A", "cookie": null}}}),
            json!({"routes": []}),
            json!({"routes": [["k", "s", "a.b", "c.d"], {"routingKey": "k", "sandbox": "s", "baseline": "a.b", "target": 7}]}),
            json!({"routes": [{"routingKey": "k"}]}),
            json!({"routes": {}}),
            json!({"mode": {"authority": null}}),
            json!({"mode": {"authority": {"x": 1}}}),
            json!({"routingKey": [["a"], true]}),
            json!({"routingKey": {"baggageKeys": [1.25]}}),
        ] {
            assert_read_alike(&document);
        }
    }
}
