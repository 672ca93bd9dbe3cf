//! A local OCI registry (Debian's `docker-registry`, the CNCF Distribution
//! registry) on loopback, and pushing `make oci`'s image into it with skopeo:
//! the plugin reaches the sidecars the way users deliver it, pulled by
//! pilot-agent from a registry by digest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::process::MeshProcess;
use super::tools::Tools;

/// The repository the plugin is pushed to, inside the local registry.
pub const PLUGIN_REPOSITORY: &str = "sandbox-router";

/// The running registry.
#[derive(Debug)]
pub struct Registry {
    process: MeshProcess,
    addr: SocketAddr,
}

/// An image in the registry.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `<registry>/<repository>:<tag>`.
    pub tagged: String,
    /// The manifest digest the registry reports, `sha256:<hex>`.
    pub digest: String,
}

impl PushedImage {
    /// `oci://<registry>/<repository>@sha256:<hex>`: the image pinned by
    /// digest, as a WasmPlugin's `spec.url`.
    pub fn pinned_url(&self) -> String {
        let repository = self
            .tagged
            .rsplit_once(':')
            .map_or(self.tagged.as_str(), |(repository, _)| repository);
        format!("oci://{repository}@{}", self.digest)
    }

    /// The hex part of the digest (WasmPlugin `spec.sha256`).
    pub fn digest_hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

impl Registry {
    /// Starts it on `addr` with its storage in `dir`, and waits for `/v2/`.
    pub fn start(tools: &Tools, addr: SocketAddr, dir: &Path) -> Result<Self> {
        let storage = dir.join("registry-data");
        std::fs::create_dir_all(&storage)?;
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
http:
  addr: {addr}
",
                storage.display()
            ),
        )?;
        let mut command = Command::new(&tools.registry);
        command.arg("serve").arg(&config);
        let process = MeshProcess::spawn("registry", command, &dir.join("registry.log"))?;
        process.wait_until("serving /v2/", Duration::from_secs(30), || {
            Ok(crate::client::Request::get("/v2/")
                .header("host", addr.to_string())
                .send(addr)
                .is_ok_and(|response| response.status == 200))
        })?;
        Ok(Self { process, addr })
    }

    /// `host:port`, as image references and `WASM_INSECURE_REGISTRIES` name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Pushes the `oci-archive` at `archive` (from `make oci`) as
    /// `<registry>/sandbox-router:<tag>` with skopeo, unchanged (no format
    /// conversion, so the digest is the one `make oci` wrote).
    pub fn push(
        &self,
        tools: &Tools,
        archive: &Path,
        tag: &str,
        dir: &Path,
    ) -> Result<PushedImage> {
        if !archive.is_file() {
            bail!("{} is missing: run `make oci`", archive.display());
        }
        let tagged = format!("{}/{PLUGIN_REPOSITORY}:{tag}", self.host());
        let digest_file: PathBuf = dir.join("pushed.digest");
        let output = Command::new(&tools.skopeo)
            .arg("--insecure-policy")
            .arg("copy")
            .arg("--dest-tls-verify=false")
            .arg("--preserve-digests")
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{tagged}"))
            .output()
            .context("running skopeo")?;
        if !output.status.success() {
            bail!(
                "skopeo copy to {tagged} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let digest = std::fs::read_to_string(&digest_file)
            .with_context(|| format!("reading {}", digest_file.display()))?
            .trim()
            .to_owned();
        Ok(PushedImage { tagged, digest })
    }

    /// The process, for a supervisor.
    pub fn process(&self) -> &MeshProcess {
        &self.process
    }
}
