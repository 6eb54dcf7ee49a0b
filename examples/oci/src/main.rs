//! `portcullis-oci`: writes the OCI image layouts of a built Portcullis `.wasm` and prints the
//! manifest digests to pin. `scripts/oci` is the user-facing wrapper (build, package, push).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use portcullis_oci::{write_layout, ImageOptions, LayoutSummary, OciError, Variant};

/// Package a proxy-wasm module as OCI image layouts (compat and two-layer variants).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The module to package.
    #[arg(long, default_value = "target/wasm32-wasip1/release/portcullis.wasm")]
    wasm: PathBuf,
    /// Parent directory: each variant is written to DIR/<variant> (replacing an earlier layout).
    #[arg(long, default_value = "out/oci")]
    out: PathBuf,
    /// Reference name in the layouts (`oci:DIR/compat:TAG`).
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Which variants to write.
    #[arg(long, value_enum, default_value_t = Which::All)]
    variant: Which,
    /// The `org.opencontainers.image.version` annotation.
    #[arg(long, default_value = "unversioned")]
    image_version: String,
    /// Root context id advertised in the two-layer variant's runtime config.
    #[arg(long, default_value = "portcullis")]
    root_id: String,
    /// ABI version advertised in the two-layer variant's runtime config.
    #[arg(long, default_value = "proxy_abi_version_0_2_1")]
    abi_version: String,
    /// Print one JSON object per variant instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Which {
    All,
    Compat,
    Wasm,
}

/// Errors of the command line on top of the packager's.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot read the module {path}: {source} (build it first: scripts/build)")]
    ReadWasm {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds since 1970")]
    SourceDateEpoch(String),
    #[error("packaging {wasm} into {dir}: {source}")]
    Package {
        wasm: PathBuf,
        dir: PathBuf,
        #[source]
        source: OciError,
    },
    #[error("printing the summary: {0}")]
    Print(#[from] serde_json::Error),
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-oci: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), CliError> {
    let wasm = std::fs::read(&args.wasm).map_err(|source| CliError::ReadWasm {
        path: args.wasm.clone(),
        source,
    })?;
    // Reproducible builds' convention for a fixed timestamp; without it, the Unix epoch, so the
    // same module gives the same digest whenever and wherever it is packaged.
    let created_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => s.trim().parse().map_err(|_| CliError::SourceDateEpoch(s))?,
        _ => 0,
    };
    let opts = ImageOptions {
        tag: args.tag,
        created_epoch,
        version: args.image_version,
        root_id: args.root_id,
        abi_version: args.abi_version,
    };
    let variants: &[Variant] = match args.variant {
        Which::All => &Variant::ALL,
        Which::Compat => &[Variant::Compat],
        Which::Wasm => &[Variant::Wasm],
    };
    for &variant in variants {
        let dir = args.out.join(variant.name());
        let summary =
            write_layout(&wasm, variant, &opts, &dir).map_err(|source| CliError::Package {
                wasm: args.wasm.clone(),
                dir,
                source,
            })?;
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            print_summary(&summary);
        }
    }
    Ok(())
}

fn print_summary(s: &LayoutSummary) {
    let hex = s.manifest_digest.trim_start_matches("sha256:");
    println!("{} image: oci:{}:{}", s.variant, s.dir.display(), s.tag);
    println!(
        "  manifest digest  {}  ({} bytes)",
        s.manifest_digest, s.manifest_size
    );
    println!("  pin it as        sha256: {hex}   (Istio WasmPlugin.spec.sha256, Envoy Gateway image.sha256)");
    println!(
        "  module           {}  ({} bytes)",
        s.wasm_digest, s.wasm_size
    );
    for (media_type, size) in s.layer_media_types.iter().zip(&s.layer_sizes) {
        println!("  layer            {media_type}  ({size} bytes)");
    }
}
