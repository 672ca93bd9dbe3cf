//! Where the mesh's upstream binaries are.
//!
//! istiod, pilot-agent, kube-apiserver, kube-controller-manager, kubectl
//! and etcd are built from
//! their own Go modules, pinned in `e2e/istio/tools/go.mod`, by
//! `make istio-tools` into `.tools/istio/bin` (`ISTIO_TOOLS_BIN` overrides);
//! the registry and skopeo are Debian's (`docker-registry`, `skopeo`), and
//! Envoy is the PyPI one of the rest of the suite.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Every program the local mesh runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub pilot_discovery: PathBuf,
    pub pilot_agent: PathBuf,
    pub kube_apiserver: PathBuf,
    /// Run with its garbage collector only (owner references).
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
    pub etcd: PathBuf,
    pub registry: PathBuf,
    pub skopeo: PathBuf,
    pub envoy: PathBuf,
}

impl Tools {
    /// Finds them all, or says which are missing and how to get them.
    pub fn find() -> Result<Self> {
        let bin = bin_dir();
        let mut missing = Vec::new();
        let mut built = |name: &str| {
            let path = bin.join(name);
            if !path.is_file() {
                missing.push(format!("{} (run `make istio-tools`)", path.display()));
            }
            path
        };
        let pilot_discovery = built("pilot-discovery");
        let pilot_agent = built("pilot-agent");
        let kube_apiserver = built("kube-apiserver");
        let kube_controller_manager = built("kube-controller-manager");
        let kubectl = built("kubectl");
        let etcd = built("etcd");
        let mut system = |name: &str, package: &str| {
            let found = which(name);
            if found.is_none() {
                missing.push(format!("{name} (apt-get install {package})"));
            }
            found.unwrap_or_else(|| PathBuf::from(name))
        };
        let registry = system("docker-registry", "docker-registry");
        let skopeo = system("skopeo", "skopeo");
        let envoy = match crate::envoy::binary() {
            Ok(path) => path,
            Err(error) => {
                missing.push(format!("{error:#}"));
                PathBuf::from("envoy")
            }
        };
        if !missing.is_empty() {
            bail!("the local Istio mesh needs: {}", missing.join("; "));
        }
        Ok(Self {
            pilot_discovery,
            pilot_agent,
            kube_apiserver,
            kube_controller_manager,
            kubectl,
            etcd,
            registry,
            skopeo,
            envoy,
        })
    }
}

/// The CRDs `make istio-tools` copies out of the pinned modules:
/// `istio-crds.yaml` (istio.io/istio `manifests/charts/base/files/crd-all.gen.yaml`)
/// and `gateway-api-crds.yaml` (sigs.k8s.io/gateway-api's standard install).
pub fn crd_dir() -> Result<PathBuf> {
    let dir = tools_dir().join("crds");
    for file in ["istio-crds.yaml", "gateway-api-crds.yaml"] {
        if !dir.join(file).is_file() {
            bail!(
                "{} is missing: run `make istio-tools`",
                dir.join(file).display()
            );
        }
    }
    Ok(dir)
}

/// The Envoy bootstrap template of the pinned Istio
/// (`tools/packaging/common/envoy_bootstrap.json`, which the proxy image
/// ships as `/var/lib/istio/envoy/envoy_bootstrap_tmpl.json`), unchanged.
pub fn bootstrap_template() -> Result<PathBuf> {
    let path = tools_dir().join("crds/envoy_bootstrap_tmpl.json");
    if !path.is_file() {
        bail!("{} is missing: run `make istio-tools`", path.display());
    }
    Ok(path)
}

/// `.tools/istio` (or the parent of `ISTIO_TOOLS_BIN`).
fn tools_dir() -> PathBuf {
    bin_dir().parent().map_or_else(
        || crate::repo_root().join(".tools/istio"),
        Path::to_path_buf,
    )
}

fn bin_dir() -> PathBuf {
    std::env::var_os("ISTIO_TOOLS_BIN")
        .filter(|value| !value.is_empty())
        .map_or_else(
            || crate::repo_root().join(".tools/istio/bin"),
            PathBuf::from,
        )
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
