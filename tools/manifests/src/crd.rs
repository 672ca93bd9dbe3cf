//! Custom resources validated against the `openAPIV3Schema` of their CRD.
//!
//! A CRD's schema is OpenAPI 3.0 in Kubernetes' *structural* dialect, not
//! plain JSON Schema, so it is translated first, to what the API server
//! enforces:
//!
//! - an object with `properties` and no `additionalProperties` takes no other
//!   field, unless `x-kubernetes-preserve-unknown-fields: true` (the server
//!   rejects unknown fields under `kubectl apply`'s strict field validation;
//!   a typo such as `failStategy` would otherwise pass silently);
//! - `nullable: true` also admits `null`;
//! - `x-kubernetes-int-or-string: true` admits an integer or a string;
//! - the root also takes `apiVersion`, `kind` and `metadata` (a name that is a
//!   DNS-1123 subdomain, a namespace that is a DNS-1123 label, string-valued
//!   labels and annotations), and a manifest may not carry `status`.
//!
//! Not evaluated: the CEL rules (`x-kubernetes-validations`); the few that
//! matter for this project's WasmPlugins are checked by the repository tests.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize as _;
use serde_json::{json, Map, Value};

/// Istio's generated CRDs (see `tests/data/README.md`).
pub const ISTIO_CRDS_YAML: &str = include_str!("../tests/data/istio-crds.gen.yaml");

/// The served versions of a set of CRDs, by `(apiVersion, kind)`.
#[derive(Debug)]
pub struct CrdSchemas {
    schemas: BTreeMap<(String, String), Entry>,
    groups: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    schema: Value,
    validator: OnceLock<Result<jsonschema::Validator, String>>,
}

/// What validation found for one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// Each problem as `<JSON pointer>: <message>`.
    Invalid(Vec<String>),
    /// The group is one of these CRDs' but no served version has this kind.
    UnknownKind,
    /// Not a group of these CRDs.
    NotCovered,
}

impl CrdSchemas {
    /// The embedded Istio CRDs.
    pub fn istio() -> &'static CrdSchemas {
        static ISTIO: OnceLock<CrdSchemas> = OnceLock::new();
        ISTIO.get_or_init(|| {
            // The embedded file is tested to parse (tests below); an empty
            // set here would make every Istio document fail as UnknownKind.
            CrdSchemas::from_yaml(ISTIO_CRDS_YAML).unwrap_or_else(|_| CrdSchemas {
                schemas: BTreeMap::new(),
                groups: Vec::new(),
            })
        })
    }

    /// Reads CustomResourceDefinition documents (other documents are ignored).
    pub fn from_yaml(text: &str) -> Result<CrdSchemas, String> {
        let mut schemas = BTreeMap::new();
        let mut groups = Vec::new();
        for de in serde_norway::Deserializer::from_str(text) {
            let crd = Value::deserialize(de).map_err(|e| e.to_string())?;
            if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                continue;
            }
            let text_at = |p: &str| crd.pointer(p).and_then(Value::as_str).map(str::to_owned);
            let (Some(group), Some(kind)) = (text_at("/spec/group"), text_at("/spec/names/kind"))
            else {
                return Err("a CRD without spec.group or spec.names.kind".to_owned());
            };
            if !groups.contains(&group) {
                groups.push(group.clone());
            }
            let versions = crd
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for version in versions {
                let served = version.get("served").and_then(Value::as_bool) == Some(true);
                let name = version.get("name").and_then(Value::as_str);
                let schema = version.pointer("/schema/openAPIV3Schema");
                if let (true, Some(name), Some(schema)) = (served, name, schema) {
                    schemas.insert(
                        (format!("{group}/{name}"), kind.clone()),
                        Entry {
                            schema: to_json_schema(schema, true),
                            validator: OnceLock::new(),
                        },
                    );
                }
            }
        }
        Ok(CrdSchemas { schemas, groups })
    }

    /// Whether `apiVersion` belongs to one of these CRDs' groups.
    pub fn covers(&self, api_version: &str) -> bool {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.groups.iter().any(|g| g == group)
    }

    /// The `(apiVersion, kind)` pairs known, for messages.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, &str)> {
        self.schemas.keys().map(|(a, k)| (a.as_str(), k.as_str()))
    }

    /// The translated JSON Schema for a kind, if served.
    pub fn schema(&self, api_version: &str, kind: &str) -> Option<&Value> {
        self.schemas
            .get(&(api_version.to_owned(), kind.to_owned()))
            .map(|e| &e.schema)
    }

    pub fn validate(&self, document: &Value) -> Verdict {
        let api_version = document
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = document
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !self.covers(api_version) {
            return Verdict::NotCovered;
        }
        let Some(entry) = self.schemas.get(&(api_version.to_owned(), kind.to_owned())) else {
            return Verdict::UnknownKind;
        };
        let validator = entry.validator.get_or_init(|| {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft4)
                .build(&entry.schema)
                .map_err(|e| e.to_string())
        });
        let validator = match validator {
            Ok(v) => v,
            Err(e) => {
                return Verdict::Invalid(vec![format!("the CRD schema does not compile: {e}")])
            }
        };
        let mut problems: Vec<String> = validator
            .iter_errors(document)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect();
        if document.get("status").is_some() {
            problems.push("/status: a manifest must not set status".to_owned());
        }
        problems.sort();
        problems.dedup();
        if problems.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid(problems)
        }
    }
}

/// DNS-1123 subdomain (object names) and label (namespaces, Service names).
const DNS1123_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

fn metadata_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
            "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
            "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
        },
        "additionalProperties": false
    })
}

/// Translates one structural-schema node (see the module docs).
pub fn to_json_schema(node: &Value, root: bool) -> Value {
    let Value::Object(map) = node else {
        return node.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let translated = match key.as_str() {
            "properties" | "patternProperties" | "definitions" => match value {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(k, v)| (k.clone(), to_json_schema(v, false)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" => to_json_schema(value, false),
            "anyOf" | "oneOf" | "allOf" => match value {
                Value::Array(list) => {
                    Value::Array(list.iter().map(|v| to_json_schema(v, false)).collect())
                }
                other => other.clone(),
            },
            // Kubernetes extensions and OpenAPI-only keywords have no JSON
            // Schema meaning; their effect is applied below.
            k if k.starts_with("x-kubernetes-") || k == "nullable" => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), translated);
    }
    let flag = |name: &str| map.get(name).and_then(Value::as_bool) == Some(true);

    if flag("x-kubernetes-int-or-string") && !out.contains_key("anyOf") && !out.contains_key("type")
    {
        out.insert(
            "anyOf".to_owned(),
            json!([{"type": "integer"}, {"type": "string"}]),
        );
    }
    if flag("nullable") {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".to_owned(), json!([t, "null"]));
        }
    }
    if root {
        let props = out
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(props) = props {
            props.insert("apiVersion".to_owned(), json!({"type": "string"}));
            props.insert("kind".to_owned(), json!({"type": "string"}));
            props.insert("metadata".to_owned(), metadata_schema());
        }
        let required = out
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(required) = required {
            for field in ["apiVersion", "kind", "metadata"] {
                if !required.iter().any(|r| r == field) {
                    required.push(json!(field));
                }
            }
        }
    }
    if out.contains_key("properties")
        && !out.contains_key("additionalProperties")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        out.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasmplugin(spec: Value) -> Value {
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": "sandbox-router", "namespace": "demo"},
            "spec": spec
        })
    }

    fn problems(doc: &Value) -> Vec<String> {
        match CrdSchemas::istio().validate(doc) {
            Verdict::Invalid(p) => p,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_embedded_istio_crds_load() {
        let crds = CrdSchemas::from_yaml(ISTIO_CRDS_YAML).unwrap();
        for (api_version, kind) in [
            ("extensions.istio.io/v1alpha1", "WasmPlugin"),
            ("networking.istio.io/v1", "VirtualService"),
            ("networking.istio.io/v1", "Sidecar"),
            ("networking.istio.io/v1beta1", "VirtualService"),
            ("security.istio.io/v1", "AuthorizationPolicy"),
        ] {
            assert!(
                crds.schema(api_version, kind).is_some(),
                "{api_version} {kind}"
            );
        }
        assert!(crds.kinds().count() > 20);
        assert!(crds.covers("networking.istio.io/v1"));
        assert!(!crds.covers("apps/v1"));
    }

    #[test]
    fn a_good_wasmplugin_is_valid() {
        let doc = wasmplugin(json!({
            "selector": {"matchLabels": {"sandbox-router/enabled": "true"}},
            "url": "oci://ghcr.io/sandbox-router/sandbox-router:0.1.0",
            "failStrategy": "FAIL_OPEN",
            "phase": "STATS",
            "priority": null,
            "match": [{"mode": "CLIENT"}],
            "pluginConfig": {"anything": {"goes": [1, 2]}}
        }));
        assert_eq!(CrdSchemas::istio().validate(&doc), Verdict::Valid);
    }

    #[test]
    fn typos_wrong_enums_and_types_are_caught() {
        let doc = wasmplugin(json!({"url": "oci://x", "failStategy": "FAIL_OPEN"}));
        let p = problems(&doc);
        assert!(
            p.iter()
                .any(|p| p.starts_with("/spec:") && p.contains("failStategy")),
            "{p:?}"
        );

        let doc = wasmplugin(json!({"url": "oci://x", "match": [{"mode": "OUTBOUND"}]}));
        assert!(problems(&doc)
            .iter()
            .any(|p| p.starts_with("/spec/match/0/mode")));

        let doc = wasmplugin(json!({"url": "oci://x", "sha256": "sha256:abc"}));
        assert!(problems(&doc).iter().any(|p| p.starts_with("/spec/sha256")));

        let doc = wasmplugin(json!({"url": "oci://x", "priority": "high"}));
        assert!(problems(&doc)
            .iter()
            .any(|p| p.starts_with("/spec/priority")));

        let doc = wasmplugin(json!({"failStrategy": "FAIL_OPEN"}));
        assert!(problems(&doc).iter().any(|p| p.contains("url")));
    }

    #[test]
    fn metadata_and_status_are_checked() {
        let mut doc = wasmplugin(json!({"url": "oci://x"}));
        doc["metadata"]["labels"] = json!({"sidecar.istio.io/inject": true});
        doc["metadata"]["name"] = json!("Sandbox_Router");
        doc["status"] = json!({});
        let p = problems(&doc);
        assert!(
            p.iter()
                .any(|p| p.starts_with("/metadata/labels/sidecar.istio.io~1inject")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.starts_with("/metadata/name")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("/status")), "{p:?}");
    }

    #[test]
    fn int_or_string_and_unknown_kinds() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "catalog"},
            "spec": {"hosts": ["catalog"], "http": [{"route": [{"destination": {"host": "catalog", "port": {"number": 8080}}}]}]}
        });
        assert_eq!(CrdSchemas::istio().validate(&vs), Verdict::Valid);
        let mut bad = vs.clone();
        bad["spec"]["http"][0]["route"][0]["destination"]["port"]["number"] = json!("eighty");
        assert!(matches!(
            CrdSchemas::istio().validate(&bad),
            Verdict::Invalid(_)
        ));

        let mut unknown = vs.clone();
        unknown["kind"] = json!("VirtualServices");
        assert_eq!(CrdSchemas::istio().validate(&unknown), Verdict::UnknownKind);
        let mut old = vs;
        old["apiVersion"] = json!("networking.istio.io/v2");
        assert_eq!(CrdSchemas::istio().validate(&old), Verdict::UnknownKind);
        let core = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}});
        assert_eq!(CrdSchemas::istio().validate(&core), Verdict::NotCovered);
    }
}
