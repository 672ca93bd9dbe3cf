//! The Istio and Kubernetes manifests of sandbox-router, read and checked in Rust.
//!
//! - [`plugin_config_from_wasmplugin`]: the `pluginConfig` of the shipped
//!   `WasmPlugin`, so the local Envoy end-to-end suite runs the filter with
//!   exactly the configuration users install (the shipped config is the
//!   tested config).
//! - `crd::CrdSchemas` (feature `schemas`, on by default): Istio resources validated against the
//!   `openAPIV3Schema` of their CustomResourceDefinition (the generated CRDs
//!   are embedded), the way the API server would, unknown fields included.
//! - `check` (feature `schemas`): every YAML document of a directory tree classified and
//!   checked: Istio kinds by schema, kustomizations by their references, core
//!   Kubernetes kinds handed to `kubernetes-validate` (`make istio-check`).
//! - [`istio::OutboundCluster`]: Istio's `outbound|<port>|<subset>|<fqdn>`
//!   cluster names.

#[cfg(feature = "schemas")]
pub mod check;
#[cfg(feature = "schemas")]
pub mod crd;
pub mod istio;

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {index}: YAML: {message}")]
    Yaml {
        path: String,
        index: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Content { path: String, message: String },
}

/// One YAML document of a file (documents are counted from 0, empty ones skipped).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub path: PathBuf,
    pub index: usize,
    pub value: Value,
}

impl Document {
    pub fn api_version(&self) -> &str {
        self.value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }

    /// `path#index (Kind name)`, for messages.
    pub fn label(&self) -> String {
        format!(
            "{}#{} ({} {})",
            self.path.display(),
            self.index,
            self.kind(),
            self.name()
        )
    }
}

/// Parses YAML text holding one or more documents. Empty documents (a
/// trailing `---`, comments only) are skipped; indexes count them all.
pub fn parse_documents(text: &str, path: &Path) -> Result<Vec<Document>, ManifestError> {
    let mut out = Vec::new();
    for (index, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| ManifestError::Yaml {
            path: path.display().to_string(),
            index,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            out.push(Document {
                path: path.to_owned(),
                index,
                value,
            });
        }
    }
    Ok(out)
}

/// Reads and parses one YAML file.
pub fn load_documents(path: impl AsRef<Path>) -> Result<Vec<Document>, ManifestError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_documents(&text, path)
}

/// The `spec.pluginConfig` of the one `WasmPlugin` in a YAML file, as the
/// JSON value Istio hands the filter (`{}` when the plugin sets none).
///
/// ```no_run
/// let config = sandbox_router_manifests::plugin_config_from_wasmplugin("wasmplugin/wasmplugin.yaml")?;
/// let json = serde_json::to_string(&config).unwrap(); // the filter's configuration
/// # Ok::<(), sandbox_router_manifests::ManifestError>(())
/// ```
pub fn plugin_config_from_wasmplugin(path: impl AsRef<Path>) -> Result<Value, ManifestError> {
    let path = path.as_ref();
    let documents = load_documents(path)?;
    let plugins: Vec<&Document> = documents
        .iter()
        .filter(|d| d.kind() == "WasmPlugin" && d.api_version().starts_with("extensions.istio.io/"))
        .collect();
    let content = |message: String| ManifestError::Content {
        path: path.display().to_string(),
        message,
    };
    match plugins.as_slice() {
        [plugin] => match plugin.value.pointer("/spec/pluginConfig") {
            None => Ok(Value::Object(serde_json::Map::new())),
            Some(config @ Value::Object(_)) => Ok(config.clone()),
            Some(other) => Err(content(format!(
                "spec.pluginConfig must be an object, not {other}"
            ))),
        },
        [] => Err(content(
            "no extensions.istio.io WasmPlugin in this file".to_owned(),
        )),
        more => Err(content(format!(
            "{} WasmPlugins in this file; expected one",
            more.len()
        ))),
    }
}

/// [`plugin_config_from_wasmplugin`] as the compact JSON text Envoy receives.
pub fn plugin_config_json(path: impl AsRef<Path>) -> Result<String, ManifestError> {
    let value = plugin_config_from_wasmplugin(path)?;
    Ok(value.to_string())
}

/// The YAML files (`.yaml`, `.yml`) under `root`, sorted; `root` may be a file.
pub fn yaml_files(root: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: root.display().to_string(),
        source,
    };
    if root.is_file() {
        return Ok(vec![root.to_owned()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yaml" || e == "yml")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml_and_skips_empty_documents() {
        let text = "# header\n---\na: 1\n---\n# nothing\n---\nb: [x, 'on']\n---\n";
        let docs = parse_documents(text, Path::new("t.yaml")).unwrap();
        let values: Vec<(usize, String)> = docs
            .iter()
            .map(|d| (d.index, d.value.to_string()))
            .collect();
        assert_eq!(
            values,
            [
                (0, r#"{"a":1}"#.to_owned()),
                (2, r#"{"b":["x","on"]}"#.to_owned())
            ]
        );
    }

    #[test]
    fn yaml_errors_name_the_file_and_document() {
        let err = parse_documents("a: 1\n---\nb: [\n", Path::new("bad.yaml")).unwrap_err();
        assert!(
            err.to_string().starts_with("bad.yaml: document 1: YAML:"),
            "{err}"
        );
    }

    #[test]
    fn plugin_config_is_found_and_checked() {
        let dir = std::env::temp_dir().join(format!("srm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let one = dir.join("one.yaml");
        std::fs::write(
            &one,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
             apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n\
             metadata: {name: p}\nspec:\n  url: oci://r/p:1\n  pluginConfig:\n    mode: header\n",
        )
        .unwrap();
        assert_eq!(plugin_config_json(&one).unwrap(), r#"{"mode":"header"}"#);
        let none = dir.join("none.yaml");
        std::fs::write(
            &none,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        )
        .unwrap();
        assert!(plugin_config_from_wasmplugin(&none)
            .unwrap_err()
            .to_string()
            .contains("no extensions.istio.io WasmPlugin"));
        let empty = dir.join("empty.yaml");
        std::fs::write(
            &empty,
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: p}\nspec: {url: x}\n",
        )
        .unwrap();
        assert_eq!(plugin_config_json(&empty).unwrap(), "{}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
