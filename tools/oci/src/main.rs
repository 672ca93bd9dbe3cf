//! `sandbox-router-oci`: packs the release `.wasm` as an OCI image that
//! Istio's `WasmPlugin` can pull (`make oci`). See the library docs.
//!
//! Exit codes: 0 done; 1 it could not read the `.wasm` or write the output;
//! 2 bad command line (clap); 65 the input is not a Wasm binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sandbox_router_oci::{Image, ImageName, ImageOptions, OciError, Platform};

#[derive(Debug, Parser)]
#[command(
    name = "sandbox-router-oci",
    version,
    about = "Build the sandbox-router plugin's OCI image (Istio compat layout, plugin.wasm) without Docker"
)]
struct Cli {
    /// The plugin to pack.
    #[arg(
        long,
        default_value = "target/wasm32-wasip1/release/sandbox_router.wasm"
    )]
    wasm: PathBuf,
    /// The OCI image layout directory to write (replaced if it is one).
    #[arg(long, default_value = "target/oci/sandbox-router")]
    layout: PathBuf,
    /// The tar of that layout (an `oci-archive:` and a `docker load` archive).
    #[arg(long, default_value = "target/oci/sandbox-router.tar")]
    archive: PathBuf,
    /// Repository the image is named for (`docker load` tags it so).
    #[arg(long, default_value = "ghcr.io/sandbox-router/sandbox-router")]
    repository: String,
    /// Image tag.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// OS/ARCH recorded in the image config. Istio ignores it; `docker load`
    /// needs OS `linux`.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Seconds since the epoch for every timestamp in the image.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    source_date_epoch: u64,
    /// Also write the manifest digest (`sha256:<hex>`) to this file.
    #[arg(long)]
    digest_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandbox-router-oci: {e}");
            match e {
                OciError::NotWasm { .. } => ExitCode::from(65),
                OciError::Reference { .. } | OciError::Platform(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run(cli: &Cli) -> Result<(), OciError> {
    let options = ImageOptions {
        name: ImageName::new(&cli.repository, &cli.tag)?,
        platform: Platform::parse(&cli.platform)?,
        epoch: cli.source_date_epoch,
    };
    let wasm = std::fs::read(&cli.wasm).map_err(|source| OciError::Io {
        path: format!(
            "{} (build it first: make build, or cargo build --release --target wasm32-wasip1 -p sandbox-router)",
            cli.wasm.display()
        ),
        source,
    })?;
    let image = Image::build(&wasm, &cli.wasm.display().to_string(), &options)?;
    image.write_layout(&cli.layout)?;
    image.write_archive(&cli.archive, options.epoch)?;
    if let Some(path) = &cli.digest_file {
        std::fs::write(path, format!("{}\n", image.manifest_digest())).map_err(|source| {
            OciError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
    }

    let layer = image.manifest.layers.first();
    let manifest = image.manifest_digest();
    println!(
        "sandbox-router-oci: {} -> {} (OCI image layout) and {}",
        cli.wasm.display(),
        cli.layout.display(),
        cli.archive.display()
    );
    println!("  image        {}", image.name);
    println!("  manifest     {manifest}");
    println!("  config       {}", image.manifest.config.digest);
    if let Some(layer) = layer {
        println!(
            "  layer        {} ({} bytes, tar+gzip; diff_id {})",
            layer.digest, layer.size, image.diff_id
        );
    }
    println!(
        "  plugin.wasm  {} ({} bytes)",
        image.wasm_digest, image.wasm_size
    );
    println!("Pin it in a WasmPlugin (the manifest digest, which Istio checks for oci:// URLs):");
    println!("  url: oci://{}:{}", image.name.repository, image.name.tag);
    println!("  sha256: {}", manifest.hex());
    println!("or: url: oci://{}@{manifest}", image.name.repository);
    Ok(())
}
