//! The sandbox-router plugin as an OCI image, built without Docker.
//!
//! Istio's Wasm image fetcher (`pkg/wasm/imagefetcher.go`) accepts three
//! layouts; this crate makes the **compat** one with OCI media types: a single
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer whose tar holds
//! `plugin.wasm`, an OCI image config whose `rootfs.diff_ids` names the
//! uncompressed layer, and an OCI image manifest. It is the same image that
//! `docker build` makes from `wasmplugin/Dockerfile` (`FROM scratch`,
//! `COPY plugin.wasm ./`), but with OCI rather than Docker media types and
//! byte-for-byte reproducible.
//!
//! Output (see [`Image::write_layout`] and [`Image::write_archive`]):
//!
//! - an OCI image layout directory (`oci-layout`, `index.json`,
//!   `blobs/sha256/<hex>`), which `crane push DIR`, `skopeo copy oci:DIR:TAG`
//!   and `oras cp --from-oci-layout DIR:TAG` read;
//! - a tar of that layout plus a Docker `manifest.json`, which is at once an
//!   `oci-archive:` for skopeo and a `docker load` archive (the layout Docker
//!   itself writes since 25.0).
//!
//! Reproducible: tar entries have uid/gid 0, fixed modes, no user or group
//! names and the mtime `SOURCE_DATE_EPOCH` (default 0); gzip has no name and
//! mtime 0; the JSON documents are serialized from structs in a fixed field
//! order. The same `.wasm` and options therefore give the same digests (with
//! the same `flate2`/`miniz_oxide` versions, which `Cargo.lock` pins).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The file name Istio's fetcher looks for in the layer.
pub const PLUGIN_FILE_NAME: &str = "plugin.wasm";

pub mod media_type {
    pub const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

pub mod annotation {
    /// OCI: the tag of a manifest in an image layout (skopeo's `oci:DIR:REF`).
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    /// containerd / Docker: the full image name of a manifest in an archive.
    pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
}

/// The first bytes of every Wasm binary: `\0asm` and version 1.
pub const WASM_MAGIC: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: not a Wasm binary (it does not start with \\0asm, version 1)")]
    NotWasm { path: String },
    #[error("invalid image reference {reference:?}: {problem}")]
    Reference { reference: String, problem: String },
    #[error("invalid platform {0:?}: expected OS/ARCH, e.g. linux/amd64")]
    Platform(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("refusing to replace {path}: it exists and is not an OCI image layout")]
    NotALayout { path: String },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> OciError + '_ {
    move |source| OciError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A `sha256:<hex>` content digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(hex(&Sha256::digest(bytes)))
    }

    /// The 64 hex digits, without `sha256:` (what WasmPlugin `sha256:` takes).
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The path of this blob in an image layout.
    pub fn blob_path(&self) -> String {
        format!("blobs/sha256/{}", self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.strip_prefix("sha256:") {
            Some(h)
                if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(Digest(h.to_owned()))
            }
            _ => Err(serde::de::Error::custom(format!(
                "{text:?} is not a sha256:<64 hex> digest"
            ))),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

// ------------------------------------------------------------- OCI documents

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

impl Platform {
    /// Parses `os/arch`, e.g. `linux/amd64`.
    pub fn parse(text: &str) -> Result<Platform, OciError> {
        match text.split_once('/') {
            Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.contains('/') => {
                Ok(Platform {
                    architecture: arch.to_owned(),
                    os: os.to_owned(),
                })
            }
            _ => Err(OciError::Platform(text.to_owned())),
        }
    }
}

/// `index.json` of an image layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The OCI image configuration (only the fields this image sets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub created: String,
    pub architecture: String,
    pub os: String,
    pub config: serde_json::Map<String, serde_json::Value>,
    pub rootfs: RootFs,
    pub history: Vec<History>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub created: String,
    pub created_by: String,
}

/// One entry of the Docker `manifest.json` that `docker load` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// `oci-layout`.
pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

// ------------------------------------------------------------------ options

/// An image name `registry/repository:tag`, checked the way registries do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub repository: String,
    pub tag: String,
}

impl ImageName {
    pub fn new(repository: &str, tag: &str) -> Result<ImageName, OciError> {
        let bad = |problem: &str| OciError::Reference {
            reference: format!("{repository}:{tag}"),
            problem: problem.to_owned(),
        };
        // Distribution spec: tag = [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
            });
        if !tag_ok {
            return Err(bad(
                "a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        if repository.is_empty() || repository.contains("://") || repository.contains('@') {
            return Err(bad(
                "a repository is registry/path, without a scheme or digest",
            ));
        }
        // Path components are lower case; the registry host may have a port.
        let mut parts = repository.split('/');
        let first = parts.next().unwrap_or_default();
        let path_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        };
        let host_ok = !first.is_empty()
            && first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
        if !host_ok || !parts.all(path_ok) {
            return Err(bad("path components are lower-case [a-z0-9._-]"));
        }
        Ok(ImageName {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

#[derive(Debug, Clone)]
pub struct ImageOptions {
    pub name: ImageName,
    pub platform: Platform,
    /// Seconds since the epoch for every timestamp (`SOURCE_DATE_EPOCH`).
    pub epoch: u64,
}

// -------------------------------------------------------------------- build

/// The built image: its documents and every blob by digest.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: ImageName,
    pub index: ImageIndex,
    pub manifest: ImageManifest,
    pub manifest_descriptor: Descriptor,
    pub config: ImageConfig,
    /// The digest of the uncompressed layer tar (`rootfs.diff_ids[0]`).
    pub diff_id: Digest,
    /// The digest of `plugin.wasm` itself (what `sha256:` pins for `http(s)://` URLs).
    pub wasm_digest: Digest,
    pub wasm_size: u64,
    pub blobs: BTreeMap<Digest, Vec<u8>>,
    pub index_json: Vec<u8>,
    pub docker_manifest_json: Vec<u8>,
}

impl Image {
    /// Builds the image from the bytes of a `.wasm` (`source` names it in errors).
    pub fn build(wasm: &[u8], source: &str, options: &ImageOptions) -> Result<Image, OciError> {
        if !wasm.starts_with(&WASM_MAGIC) {
            return Err(OciError::NotWasm {
                path: source.to_owned(),
            });
        }
        let created = rfc3339(options.epoch);

        let layer_tar = layer_tar(wasm, options.epoch)?;
        let diff_id = Digest::of(&layer_tar);
        let layer = gzip(&layer_tar)?;
        let layer_descriptor = descriptor(media_type::LAYER_TAR_GZIP, &layer);

        let config = ImageConfig {
            created: created.clone(),
            architecture: options.platform.architecture.clone(),
            os: options.platform.os.clone(),
            config: serde_json::Map::new(),
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: vec![diff_id.clone()],
            },
            history: vec![History {
                created,
                created_by: format!("COPY {PLUGIN_FILE_NAME} ./ # sandbox-router-oci"),
            }],
        };
        let config_json = serde_json::to_vec(&config)?;
        let config_descriptor = descriptor(media_type::IMAGE_CONFIG, &config_json);

        let manifest = ImageManifest {
            schema_version: 2,
            media_type: media_type::IMAGE_MANIFEST.to_owned(),
            config: config_descriptor.clone(),
            layers: vec![layer_descriptor.clone()],
        };
        let manifest_json = serde_json::to_vec(&manifest)?;
        let mut manifest_descriptor = descriptor(media_type::IMAGE_MANIFEST, &manifest_json);
        manifest_descriptor.platform = Some(options.platform.clone());
        manifest_descriptor.annotations = BTreeMap::from([
            (
                annotation::CONTAINERD_IMAGE_NAME.to_owned(),
                options.name.to_string(),
            ),
            (annotation::REF_NAME.to_owned(), options.name.tag.clone()),
        ]);

        let index = ImageIndex {
            schema_version: 2,
            media_type: media_type::IMAGE_INDEX.to_owned(),
            manifests: vec![manifest_descriptor.clone()],
        };
        let index_json = serde_json::to_vec(&index)?;

        let docker_manifest = vec![DockerManifestEntry {
            config: config_descriptor.digest.blob_path(),
            repo_tags: vec![options.name.to_string()],
            layers: vec![layer_descriptor.digest.blob_path()],
        }];
        let docker_manifest_json = serde_json::to_vec(&docker_manifest)?;

        let blobs = BTreeMap::from([
            (layer_descriptor.digest.clone(), layer),
            (config_descriptor.digest.clone(), config_json),
            (manifest_descriptor.digest.clone(), manifest_json),
        ]);
        Ok(Image {
            name: options.name.clone(),
            index,
            manifest,
            manifest_descriptor,
            config,
            diff_id,
            wasm_digest: Digest::of(wasm),
            wasm_size: wasm.len() as u64,
            blobs,
            index_json,
            docker_manifest_json,
        })
    }

    pub fn manifest_digest(&self) -> &Digest {
        &self.manifest_descriptor.digest
    }

    /// The files of the image layout, in the order the archive holds them.
    fn layout_files(&self) -> Vec<(String, &[u8])> {
        let mut files: Vec<(String, &[u8])> = vec![
            ("oci-layout".to_owned(), OCI_LAYOUT.as_bytes()),
            ("index.json".to_owned(), &self.index_json),
        ];
        files.extend(
            self.blobs
                .iter()
                .map(|(digest, bytes)| (digest.blob_path(), bytes.as_slice())),
        );
        files
    }

    /// Writes the OCI image layout into `dir`, replacing an earlier layout
    /// there (a directory holding anything else is refused).
    pub fn write_layout(&self, dir: &Path) -> Result<(), OciError> {
        if dir.exists() {
            let is_layout = dir.join("oci-layout").is_file();
            let is_empty = fs::read_dir(dir).map_err(io_error(dir))?.next().is_none();
            if !is_layout && !is_empty {
                return Err(OciError::NotALayout {
                    path: dir.display().to_string(),
                });
            }
            let blobs = dir.join("blobs");
            if blobs.exists() {
                fs::remove_dir_all(&blobs).map_err(io_error(&blobs))?;
            }
        }
        let sha_dir = dir.join("blobs").join("sha256");
        fs::create_dir_all(&sha_dir).map_err(io_error(&sha_dir))?;
        for (name, bytes) in self.layout_files() {
            let path = dir.join(&name);
            fs::write(&path, bytes).map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// Writes the layout as one tar (plus Docker's `manifest.json`) to `path`.
    pub fn write_archive(&self, path: &Path, epoch: u64) -> Result<(), OciError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let bytes = self.archive(epoch)?;
        // Write next to the target and rename, so a reader never sees half a tar.
        let partial = PathBuf::from(format!("{}.partial", path.display()));
        fs::write(&partial, &bytes).map_err(io_error(&partial))?;
        fs::rename(&partial, path).map_err(io_error(path))
    }

    /// The archive's bytes.
    pub fn archive(&self, epoch: u64) -> Result<Vec<u8>, OciError> {
        let archive_error = io_error(Path::new("<archive>"));
        let mut tar = tar::Builder::new(Vec::new());
        let files = self.layout_files();
        let (top, blobs): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|(name, _)| !name.starts_with("blobs/"));
        for (name, bytes) in &top {
            append_file(&mut tar, name, bytes, epoch).map_err(&archive_error)?;
        }
        append_file(&mut tar, "manifest.json", &self.docker_manifest_json, epoch)
            .map_err(&archive_error)?;
        for dir in ["blobs/", "blobs/sha256/"] {
            append_dir(&mut tar, dir, epoch).map_err(&archive_error)?;
        }
        for (name, bytes) in &blobs {
            append_file(&mut tar, name, bytes, epoch).map_err(&archive_error)?;
        }
        tar.into_inner().map_err(archive_error)
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// The uncompressed layer: one regular file `plugin.wasm`, mode 0644, root-owned.
pub fn layer_tar(wasm: &[u8], epoch: u64) -> Result<Vec<u8>, OciError> {
    let mut tar = tar::Builder::new(Vec::new());
    let layer_error = io_error(Path::new("<layer>"));
    append_file(&mut tar, PLUGIN_FILE_NAME, wasm, epoch).map_err(&layer_error)?;
    tar.into_inner().map_err(layer_error)
}

/// gzip without a file name and with mtime 0, at the best compression.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>, OciError> {
    let gzip_error = io_error(Path::new("<gzip>"));
    let mut encoder: GzEncoder<Vec<u8>> = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    encoder.write_all(bytes).map_err(&gzip_error)?;
    encoder.finish().map_err(gzip_error)
}

fn header(
    path: &str,
    size: u64,
    mode: u32,
    kind: tar::EntryType,
    epoch: u64,
) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(epoch);
    header.set_entry_type(kind);
    header.set_cksum();
    Ok(header)
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    epoch: u64,
) -> io::Result<()> {
    let header = header(
        path,
        bytes.len() as u64,
        0o644,
        tar::EntryType::Regular,
        epoch,
    )?;
    tar.append(&header, bytes)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str, epoch: u64) -> io::Result<()> {
    let header = header(path, 0, 0o755, tar::EntryType::Directory, epoch)?;
    tar.append(&header, io::empty())
}

/// `SOURCE_DATE_EPOCH` seconds as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn image_names() {
        assert!(ImageName::new("ghcr.io/sandbox-router/sandbox-router", "0.1.0").is_ok());
        assert!(ImageName::new("localhost:5001/sandbox-router", "e2e").is_ok());
        assert!(ImageName::new("oci://ghcr.io/x", "1").is_err());
        assert!(ImageName::new("ghcr.io/X", "1").is_err());
        assert!(ImageName::new("ghcr.io/x", "-1").is_err());
        assert!(ImageName::new("ghcr.io/x", "").is_err());
        assert!(ImageName::new("ghcr.io//x", "1").is_err());
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "amd64"));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/arm64/v8").is_err());
    }

    #[test]
    fn digests_round_trip_through_json() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>(r#""md5:abc""#).is_err());
    }

    #[test]
    fn refuses_what_is_not_wasm() {
        let options = ImageOptions {
            name: ImageName::new("r/x", "t").unwrap(),
            platform: Platform::parse("linux/amd64").unwrap(),
            epoch: 0,
        };
        let err = Image::build(b"#!/bin/sh\n", "x.sh", &options).unwrap_err();
        assert!(err.to_string().contains("not a Wasm binary"), "{err}");
    }
}
