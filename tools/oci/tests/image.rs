//! Runs `sandbox-router-oci` on a Wasm file, unpacks what it wrote and checks
//! it the way a registry client and Istio's fetcher would: every digest and
//! size, the config's `rootfs.diff_ids`, the one `plugin.wasm` in the layer,
//! Docker's `manifest.json`, and that the same input gives the same bytes.

// This whole file is test code, helpers included: a failing check should
// fail the test loudly. clippy.toml only exempts `#[test]` functions
// themselves, not the helpers they share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::read::GzDecoder;
use sandbox_router_oci::{
    media_type, Digest, DockerManifestEntry, ImageConfig, ImageIndex, ImageManifest,
};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-router-oci");

/// A small but real-looking module: the header, then a custom section of
/// pseudo-random bytes (so gzip has something to do).
fn sample_wasm() -> Vec<u8> {
    let mut wasm = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    let payload_len: usize = 40_000;
    wasm.push(0x00); // custom section
    let name = b"sandbox-router-test";
    let section_len = 1 + name.len() + payload_len;
    leb128(&mut wasm, section_len);
    leb128(&mut wasm, name.len());
    wasm.extend_from_slice(name);
    let mut x: u32 = 0x2545_f491;
    for _ in 0..payload_len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        wasm.push((x % 7) as u8); // compressible, not trivially
    }
    wasm
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

struct Run {
    dir: PathBuf,
    output: Output,
}

impl Run {
    fn layout(&self) -> PathBuf {
        self.dir.join("out/sandbox-router")
    }
    fn archive(&self) -> PathBuf {
        self.dir.join("out/sandbox-router.tar")
    }
}

fn run_tool(dir: &Path, wasm: &[u8], extra: &[&str], epoch: Option<&str>) -> Run {
    std::fs::create_dir_all(dir).unwrap();
    let input = dir.join("plugin-input.wasm");
    std::fs::write(&input, wasm).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(["--wasm", "plugin-input.wasm"])
        .args(["--layout", "out/sandbox-router"])
        .args(["--archive", "out/sandbox-router.tar"])
        .args(["--digest-file", "out/sandbox-router.digest"])
        .args(extra)
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some(epoch) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch);
    }
    let output = cmd.output().unwrap();
    Run {
        dir: dir.to_owned(),
        output,
    }
}

/// One tar entry's path, mode, uid, gid and mtime.
type EntryMeta = (String, u32, u64, u64, u64);

/// Every regular file in a tar, by path, and the headers' metadata.
fn untar(bytes: &[u8]) -> (BTreeMap<String, Vec<u8>>, Vec<EntryMeta>) {
    let mut files = BTreeMap::new();
    let mut meta = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let h = entry.header();
        meta.push((
            path.clone(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mtime().unwrap(),
        ));
        if entry.header().entry_type().is_file() {
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            assert!(
                files.insert(path.clone(), content).is_none(),
                "{path} twice"
            );
        }
    }
    (files, meta)
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &Digest) -> &'a [u8] {
    let bytes = files
        .get(&digest.blob_path())
        .unwrap_or_else(|| panic!("blob {digest} missing"));
    assert_eq!(
        &Digest::of(bytes),
        digest,
        "content of {}",
        digest.blob_path()
    );
    bytes
}

/// Checks one image (as the files of a layout/archive) against the wasm it holds.
fn check_image(files: &BTreeMap<String, Vec<u8>>, wasm: &[u8]) -> Digest {
    assert_eq!(
        files["oci-layout"],
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()
    );

    let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index.schema_version, 2);
    assert_eq!(index.media_type, media_type::IMAGE_INDEX);
    assert_eq!(index.manifests.len(), 1);
    let md = &index.manifests[0];
    assert_eq!(md.media_type, media_type::IMAGE_MANIFEST);
    assert_eq!(
        md.annotations["org.opencontainers.image.ref.name"],
        "0.1.0-test"
    );
    assert_eq!(
        md.annotations["io.containerd.image.name"],
        "registry.example:5000/sandbox-router:0.1.0-test"
    );
    let platform = md.platform.as_ref().unwrap();
    assert_eq!(
        (platform.os.as_str(), platform.architecture.as_str()),
        ("linux", "amd64")
    );

    let manifest_bytes = blob(files, &md.digest);
    assert_eq!(manifest_bytes.len() as u64, md.size);
    let manifest: ImageManifest = serde_json::from_slice(manifest_bytes).unwrap();
    assert_eq!(manifest.schema_version, 2);
    assert_eq!(manifest.media_type, media_type::IMAGE_MANIFEST);
    // The manifest is strict JSON with exactly the fields Istio/go-containerregistry read.
    let raw: serde_json::Value = serde_json::from_slice(manifest_bytes).unwrap();
    let keys: Vec<&str> = raw
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");

    assert_eq!(manifest.config.media_type, media_type::IMAGE_CONFIG);
    let config_bytes = blob(files, &manifest.config.digest);
    assert_eq!(config_bytes.len() as u64, manifest.config.size);
    let config: ImageConfig = serde_json::from_slice(config_bytes).unwrap();
    assert_eq!(
        (config.os.as_str(), config.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(config.rootfs.kind, "layers");

    // Istio's compat variant: exactly one layer, OCI tar+gzip.
    assert_eq!(manifest.layers.len(), 1);
    let ld = &manifest.layers[0];
    assert_eq!(ld.media_type, media_type::LAYER_TAR_GZIP);
    let layer_gz = blob(files, &ld.digest);
    assert_eq!(layer_gz.len() as u64, ld.size);
    assert_eq!(&layer_gz[..2], &[0x1f, 0x8b], "gzip magic");
    let mut layer_tar = Vec::new();
    GzDecoder::new(layer_gz)
        .read_to_end(&mut layer_tar)
        .unwrap();
    assert_eq!(config.rootfs.diff_ids, vec![Digest::of(&layer_tar)]);
    assert_eq!(config.history.len(), 1);

    let (layer_files, layer_meta) = untar(&layer_tar);
    assert_eq!(layer_files.keys().collect::<Vec<_>>(), ["plugin.wasm"]);
    assert!(
        layer_files["plugin.wasm"] == wasm,
        "plugin.wasm differs from the input"
    );
    assert_eq!(layer_meta, [("plugin.wasm".to_owned(), 0o644, 0, 0, 0)]);

    // Nothing else in blobs/ but these three.
    let blob_count = files.keys().filter(|k| k.starts_with("blobs/")).count();
    assert_eq!(blob_count, 3);
    md.digest.clone()
}

#[test]
fn builds_a_valid_compat_image_and_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = sample_wasm();
    let run = run_tool(
        tmp.path(),
        &wasm,
        &[
            "--repository",
            "registry.example:5000/sandbox-router",
            "--tag",
            "0.1.0-test",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(
        run.output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.output.stderr)
    );

    // The archive.
    let archive = std::fs::read(run.archive()).unwrap();
    let (files, meta) = untar(&archive);
    let digest = check_image(&files, &wasm);
    for (path, mode, uid, gid, mtime) in &meta {
        assert_eq!((*uid, *gid, *mtime), (0, 0, 0), "{path}");
        let want = if path.ends_with('/') { 0o755 } else { 0o644 };
        assert_eq!(*mode, want, "{path}");
    }
    let order: Vec<&str> = meta.iter().map(|m| m.0.as_str()).take(5).collect();
    assert_eq!(
        order,
        [
            "oci-layout",
            "index.json",
            "manifest.json",
            "blobs/",
            "blobs/sha256/"
        ]
    );

    // docker load's manifest.json points at the same config and layer.
    let docker: Vec<DockerManifestEntry> = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(docker.len(), 1);
    let manifest: ImageManifest = serde_json::from_slice(&files[&digest.blob_path()]).unwrap();
    assert_eq!(docker[0].config, manifest.config.digest.blob_path());
    assert_eq!(
        docker[0].layers,
        vec![manifest.layers[0].digest.blob_path()]
    );
    assert_eq!(
        docker[0].repo_tags,
        ["registry.example:5000/sandbox-router:0.1.0-test"]
    );

    // The layout directory holds the same files as the archive (but manifest.json).
    let mut layout_files = BTreeMap::new();
    for entry in walk(&run.layout()) {
        let rel = entry.strip_prefix(run.layout()).unwrap();
        layout_files.insert(
            rel.to_string_lossy().into_owned(),
            std::fs::read(&entry).unwrap(),
        );
    }
    let mut archive_layout = files.clone();
    archive_layout.remove("manifest.json");
    assert_eq!(layout_files, archive_layout);

    // The digest file and the printed pins name the manifest.
    let digest_file = std::fs::read_to_string(run.dir.join("out/sandbox-router.digest")).unwrap();
    assert_eq!(digest_file, format!("{digest}\n"));
    assert!(
        stdout.contains(&format!("sha256: {}", digest.hex())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("plugin.wasm  {}", Digest::of(&wasm))),
        "{stdout}"
    );
}

#[test]
fn same_input_same_bytes_and_epoch_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = sample_wasm();
    let args = [
        "--repository",
        "registry.example:5000/sandbox-router",
        "--tag",
        "0.1.0-test",
    ];
    let a = run_tool(&tmp.path().join("a"), &wasm, &args, None);
    let b = run_tool(&tmp.path().join("b"), &wasm, &args, Some("0"));
    assert!(a.output.status.success() && b.output.status.success());
    assert!(
        std::fs::read(a.archive()).unwrap() == std::fs::read(b.archive()).unwrap(),
        "two runs on the same wasm gave different archives"
    );

    // Running again over an existing layout replaces it (no stale blobs).
    let again = run_tool(
        &tmp.path().join("a"),
        &wasm[..wasm.len() - 1000],
        &args,
        None,
    );
    assert!(again.output.status.success());
    let count = std::fs::read_dir(again.layout().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(count, 3);

    let later = run_tool(&tmp.path().join("c"), &wasm, &args, Some("1700000000"));
    assert!(later.output.status.success());
    let (files, meta) = untar(&std::fs::read(later.archive()).unwrap());
    assert!(meta.iter().all(|m| m.4 == 1_700_000_000));
    let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifest: ImageManifest =
        serde_json::from_slice(&files[&index.manifests[0].digest.blob_path()]).unwrap();
    let config: ImageConfig =
        serde_json::from_slice(&files[&manifest.config.digest.blob_path()]).unwrap();
    assert_eq!(config.created, "2023-11-14T22:13:20Z");
}

#[test]
fn refuses_a_file_that_is_not_wasm_and_a_foreign_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_tool(tmp.path(), b"not wasm at all", &[], None);
    assert_eq!(run.output.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&run.output.stderr).contains("not a Wasm binary"));

    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("out/sandbox-router")).unwrap();
    std::fs::write(other.join("out/sandbox-router/precious.txt"), "keep").unwrap();
    let run = run_tool(&other, &sample_wasm(), &[], None);
    assert_eq!(run.output.status.code(), Some(1));
    assert!(other.join("out/sandbox-router/precious.txt").exists());
}

/// The real plugin, when it has been built: packs it and checks the result.
#[test]
fn packs_the_release_plugin_when_built() {
    let release = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/wasm32-wasip1/release/sandbox_router.wasm");
    let Ok(wasm) = std::fs::read(&release) else {
        eprintln!("skipped: {} not built (make build)", release.display());
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = run_tool(
        tmp.path(),
        &wasm,
        &[
            "--repository",
            "registry.example:5000/sandbox-router",
            "--tag",
            "0.1.0-test",
        ],
        None,
    );
    assert!(run.output.status.success());
    let (files, _) = untar(&std::fs::read(run.archive()).unwrap());
    check_image(&files, &wasm);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
