//! Checks every YAML document under some paths (`sandbox-router-manifests check`).
//!
//! Each document is classified by `apiVersion`/`kind`:
//!
//! | class | checked here |
//! |---|---|
//! | Istio resource | against its CRD's schema ([`crate::crd`]) |
//! | core Kubernetes kind ([`CORE_KINDS`]) | parsed, named; its schema is `kubernetes-validate --strict`'s job (`make istio-check` runs both) |
//! | `Kustomization` / `Component` | known fields only; every file and directory it references exists |
//! | kind's `Cluster` config | parsed |
//! | anything else | an error: nothing goes unvalidated silently |

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::crd::{CrdSchemas, Verdict};
use crate::{load_documents, yaml_files, Document};

/// The core Kubernetes kinds the manifests may use, left to
/// `kubernetes-validate`. A kind not listed here (nor Istio's, nor a
/// kustomization) is reported, so a new one is added on purpose.
pub const CORE_KINDS: &[(&str, &str)] = &[
    ("v1", "ConfigMap"),
    ("v1", "Namespace"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Pod"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("policy/v1", "PodDisruptionBudget"),
];

/// Top-level fields of a `kustomize.config.k8s.io` Kustomization (v5).
const KUSTOMIZATION_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "components",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "labels",
    "commonLabels",
    "commonAnnotations",
    "patches",
    "patchesStrategicMerge",
    "patchesJson6902",
    "images",
    "replicas",
    "replacements",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "configurations",
    "crds",
    "generators",
    "transformers",
    "validators",
    "openapi",
    "buildMetadata",
    "sortOptions",
    "helmCharts",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Istio,
    Core,
    Kustomization,
    KindCluster,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Istio => "istio",
            Class::Core => "core",
            Class::Kustomization => "kustomize",
            Class::KindCluster => "kind",
        })
    }
}

/// What was found in one document.
#[derive(Debug, Clone)]
pub struct Finding {
    pub document: String,
    pub class: Option<Class>,
    pub problems: Vec<String>,
}

/// The result of a check over some paths.
#[derive(Debug, Default)]
pub struct Report {
    pub files: Vec<PathBuf>,
    pub findings: Vec<Finding>,
    /// Files that could not be read or parsed as YAML.
    pub file_errors: Vec<String>,
}

impl Report {
    pub fn problem_count(&self) -> usize {
        self.file_errors.len()
            + self
                .findings
                .iter()
                .map(|f| f.problems.len())
                .sum::<usize>()
    }

    pub fn count(&self, class: Class) -> usize {
        self.findings
            .iter()
            .filter(|f| f.class == Some(class))
            .count()
    }

    /// The files holding at least one core Kubernetes document.
    pub fn core_files(&self, all: &[Document]) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = all
            .iter()
            .filter(|d| classify(d, CrdSchemas::istio()) == Some(Class::Core))
            .map(|d| d.path.clone())
            .collect();
        files.dedup();
        files
    }
}

pub fn classify(document: &Document, crds: &CrdSchemas) -> Option<Class> {
    let (api_version, kind) = (document.api_version(), document.kind());
    if crds.covers(api_version) {
        Some(Class::Istio)
    } else if CORE_KINDS.contains(&(api_version, kind)) {
        Some(Class::Core)
    } else if api_version.starts_with("kustomize.config.k8s.io/")
        && (kind == "Kustomization" || kind == "Component")
    {
        Some(Class::Kustomization)
    } else if api_version.starts_with("kind.x-k8s.io/") && kind == "Cluster" {
        Some(Class::KindCluster)
    } else {
        None
    }
}

/// Loads every YAML document under `roots`.
pub fn load_all(roots: &[PathBuf]) -> (Vec<PathBuf>, Vec<Document>, Vec<String>) {
    let mut files = Vec::new();
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for root in roots {
        match yaml_files(root) {
            Ok(found) => files.extend(found),
            Err(e) => errors.push(e.to_string()),
        }
    }
    for file in &files {
        match load_documents(file) {
            Ok(docs) => documents.extend(docs),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (files, documents, errors)
}

/// Checks every document under `roots`.
pub fn check_paths(roots: &[PathBuf], crds: &CrdSchemas) -> (Report, Vec<Document>) {
    let (files, documents, file_errors) = load_all(roots);
    let findings = documents.iter().map(|d| check_document(d, crds)).collect();
    (
        Report {
            files,
            findings,
            file_errors,
        },
        documents,
    )
}

pub fn check_document(document: &Document, crds: &CrdSchemas) -> Finding {
    let class = classify(document, crds);
    let mut problems = Vec::new();
    if !document.value.is_object() {
        problems.push("not a mapping".to_owned());
    }
    match class {
        Some(Class::Istio) => match crds.validate(&document.value) {
            Verdict::Valid => {}
            Verdict::Invalid(found) => problems.extend(found),
            Verdict::UnknownKind => problems.push(format!(
                "{} {} is not a served version of an Istio CRD",
                document.api_version(),
                document.kind()
            )),
            Verdict::NotCovered => problems.push("not an Istio resource".to_owned()),
        },
        Some(Class::Core) => {
            // kubernetes-validate checks the schema, not the name rules.
            let name = document.name();
            if name.is_empty() {
                problems.push("metadata.name is missing".to_owned());
            } else if !is_dns1123_subdomain(name) {
                problems.push(format!(
                    "metadata.name {name:?} is not a DNS-1123 subdomain"
                ));
            } else if document.kind() == "Service" && (name.len() > 63 || name.contains('.')) {
                problems.push(format!("Service name {name:?} is not a DNS-1123 label"));
            }
        }
        Some(Class::Kustomization) => problems.extend(check_kustomization(document)),
        Some(Class::KindCluster) => {}
        None => problems.push(format!(
            "unknown apiVersion/kind {:?}/{:?}: not an Istio CRD, a kustomization, kind's Cluster, \
             or a core kind in CORE_KINDS (add it there if it is meant)",
            document.api_version(),
            document.kind()
        )),
    }
    Finding {
        document: document.label(),
        class,
        problems,
    }
}

/// Lower-case alphanumerics, `-` and `.`, starting and ending alphanumeric, at most 253.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Known fields only, and every referenced file or directory exists.
pub fn check_kustomization(document: &Document) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(map) = document.value.as_object() else {
        return vec!["not a mapping".to_owned()];
    };
    let file_name = document
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !matches!(
        file_name,
        "kustomization.yaml" | "kustomization.yml" | "Kustomization"
    ) {
        problems.push(format!(
            "a kustomization must be named kustomization.yaml, not {file_name}"
        ));
    }
    for key in map.keys() {
        if !KUSTOMIZATION_FIELDS.contains(&key.as_str()) {
            problems.push(format!("unknown Kustomization field {key:?}"));
        }
    }
    let base = document.path.parent().unwrap_or(Path::new("."));
    let mut refs: Vec<(String, String)> = Vec::new();
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    for field in ["resources", "components", "configurations", "crds"] {
        for r in strings(map.get(field)) {
            refs.push((field.to_owned(), r));
        }
    }
    if let Some(patches) = map.get("patches").and_then(Value::as_array) {
        for (i, p) in patches.iter().enumerate() {
            match (p.get("path").and_then(Value::as_str), p.get("patch")) {
                (Some(path), None) => refs.push((format!("patches[{i}].path"), path.to_owned())),
                (None, Some(_)) => {}
                _ => problems.push(format!("patches[{i}]: needs exactly one of path or patch")),
            }
        }
    }
    for generator in ["configMapGenerator", "secretGenerator"] {
        if let Some(list) = map.get(generator).and_then(Value::as_array) {
            for (i, g) in list.iter().enumerate() {
                for field in ["files", "envs"] {
                    for f in strings(g.get(field)) {
                        // files: [key=]path
                        let path = f.split_once('=').map_or(f.as_str(), |(_, p)| p);
                        refs.push((format!("{generator}[{i}].{field}"), path.to_owned()));
                    }
                }
            }
        }
    }
    for (field, reference) in refs {
        if reference.contains("://") || reference.starts_with("github.com/") {
            continue; // remote bases are kustomize's to fetch
        }
        let path = base.join(&reference);
        if path.is_dir() {
            let has_kustomization = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
                .iter()
                .any(|n| path.join(n).is_file());
            if !has_kustomization {
                problems.push(format!(
                    "{field}: {reference} is a directory without a kustomization.yaml"
                ));
            }
        } else if !path.is_file() {
            problems.push(format!("{field}: {reference} does not exist"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(value: Value, path: &str) -> Document {
        Document {
            path: PathBuf::from(path),
            index: 0,
            value,
        }
    }

    #[test]
    fn classifies_documents() {
        let crds = CrdSchemas::istio();
        let cases = [
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
                Some(Class::Core),
            ),
            (
                json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar"}),
                Some(Class::Istio),
            ),
            (
                json!({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}),
                Some(Class::Kustomization),
            ),
            (
                json!({"apiVersion": "kind.x-k8s.io/v1alpha4", "kind": "Cluster"}),
                Some(Class::KindCluster),
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "StatefulSett"}),
                None,
            ),
            (json!({"apiVersion": "batch/v1", "kind": "Job"}), None),
        ];
        for (value, class) in cases {
            assert_eq!(
                classify(&doc(value.clone(), "x.yaml"), crds),
                class,
                "{value}"
            );
        }
    }

    #[test]
    fn core_names_follow_the_dns_rules() {
        let check = |kind: &str, name: &str| {
            check_document(
                &doc(
                    json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}),
                    "x.yaml",
                ),
                CrdSchemas::istio(),
            )
            .problems
        };
        assert!(check("Service", "catalog-pr-42").is_empty());
        assert!(check("ConfigMap", "a.b-c").is_empty());
        assert_eq!(check("Service", "a.b").len(), 1);
        assert_eq!(check("ConfigMap", "Bad_Name").len(), 1);
        assert_eq!(check("ConfigMap", "-x").len(), 1);
    }

    #[test]
    fn unknown_kinds_are_problems() {
        let finding = check_document(
            &doc(
                json!({"apiVersion": "v1", "kind": "Servic", "metadata": {"name": "x"}}),
                "x.yaml",
            ),
            CrdSchemas::istio(),
        );
        assert!(finding.problems[0].contains("unknown apiVersion/kind"));
    }

    #[test]
    fn kustomizations_reference_what_exists() {
        let dir = std::env::temp_dir().join(format!("srm-k-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("base")).unwrap();
        std::fs::write(dir.join("base/kustomization.yaml"), "resources: []\n").unwrap();
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        std::fs::write(dir.join("a.yaml"), "").unwrap();
        let k = doc(
            json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["a.yaml", "base", "missing.yaml", "empty", "https://example.com/x"],
                "patches": [{"path": "gone.yaml"}, {"patch": "[]", "target": {"kind": "X"}}, {}],
                "secretGenerator": [{"name": "s", "files": ["token=token.txt"]}],
                "bogus": 1
            }),
            &dir.join("kustomization.yaml").display().to_string(),
        );
        let problems = check_kustomization(&k);
        let expected = [
            "unknown Kustomization field \"bogus\"",
            "patches[2]: needs exactly one of path or patch",
            "resources: missing.yaml does not exist",
            "resources: empty is a directory without a kustomization.yaml",
            "patches[0].path: gone.yaml does not exist",
            "secretGenerator[0].files: token.txt does not exist",
        ];
        for e in expected {
            assert!(problems.iter().any(|p| p == e), "{e:?} not in {problems:?}");
        }
        assert_eq!(problems.len(), expected.len(), "{problems:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
