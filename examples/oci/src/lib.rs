//! Packs a proxy-wasm module into OCI image layouts in the two formats that the Istio and Envoy
//! Gateway image fetchers accept (the "Wasm image specification" *compat* and *oci* variants).
//!
//! Every byte written is a function of the module and [`ImageOptions`] alone: tar headers have
//! fixed owners, modes and times, gzip carries no name or time, and JSON documents are written
//! with sorted keys and no whitespace. The same `.wasm` therefore always yields the same blobs
//! and the same manifest digest, which is what users pin (Istio compares `WasmPlugin.spec.sha256`
//! with the manifest digest, not with the digest of the module).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
};
use oci_spec::OciSpecError;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Config (and runtime-config layer) media type of the two-layer *oci* variant.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
/// Layer media type of the raw module in the two-layer *oci* variant.
pub const WASM_CONTENT_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The file name Istio and Envoy Gateway look for inside a *compat* layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// Manifest annotation the compat specification asks for with `tar+gzip` layers.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
/// Index annotation that names a manifest in an image layout (`oci:DIR:TAG`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const RUNTIME_CONFIG_FILE: &str = "runtime-config.json";
const WASM_MAGIC: &[u8] = b"\0asm";
// "Unknown" in RFC 1952; the default would also be fixed, but naming it keeps it fixed even if
// a flate2 release changes its default.
const GZIP_OS_UNKNOWN: u8 = 255;

/// Errors from packaging; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The input does not start with the WebAssembly magic number.
    #[error("the input is not a WebAssembly module (it lacks the \\0asm header)")]
    NotWasm,
    /// The tag cannot be used as an OCI reference name.
    #[error("invalid tag {0:?}: use 1 to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    BadTag(String),
    /// The output directory holds something other than an image layout.
    #[error("{0} exists and is not an OCI image layout (no oci-layout file): choose a new or empty output directory")]
    NotALayout(PathBuf),
    /// `SOURCE_DATE_EPOCH` (or the given time) is beyond what RFC 3339 can express.
    #[error("creation time {0} is out of range: give Unix seconds before the year 10000")]
    BadTime(u64),
    /// An oci-spec builder refused a value.
    #[error("building the {what}: {source}")]
    Spec {
        /// Which document was being built.
        what: &'static str,
        /// The builder's complaint.
        #[source]
        source: OciSpecError,
    },
    /// A document could not be turned into JSON.
    #[error("serializing the {what}: {source}")]
    Json {
        /// Which document was being serialized.
        what: &'static str,
        /// The serializer's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// Which of the two image formats to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// One `tar+gzip` layer holding `plugin.wasm`, standard image config: any registry takes it.
    Compat,
    /// The raw module as a `…content.layer.v1+wasm` layer next to a runtime-config layer.
    Wasm,
}

impl Variant {
    /// Both variants, the primary one first.
    pub const ALL: [Variant; 2] = [Variant::Compat, Variant::Wasm];

    /// The name used for directories and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Compat => "compat",
            Variant::Wasm => "wasm",
        }
    }
}

/// Everything besides the module that goes into an image.
#[derive(Clone, Debug)]
pub struct ImageOptions {
    /// Reference name of the manifest in the layout (`oci:DIR:TAG`).
    pub tag: String,
    /// Creation time in Unix seconds: config `created`, annotations and tar mtimes.
    pub created_epoch: u64,
    /// Value of `org.opencontainers.image.version`.
    pub version: String,
    /// Root context id advertised in the runtime config of the two-layer variant.
    pub root_id: String,
    /// ABI version advertised in the runtime config of the two-layer variant.
    pub abi_version: String,
}

/// What was written, for the user to pin and for tests to check.
#[derive(Clone, Debug, Serialize)]
pub struct LayoutSummary {
    /// `compat` or `wasm`.
    pub variant: &'static str,
    /// The image layout directory.
    pub dir: PathBuf,
    /// The reference name inside the layout.
    pub tag: String,
    /// `sha256:<hex>` of the manifest: the image digest registries and Istio report.
    pub manifest_digest: String,
    /// Size of the manifest in bytes.
    pub manifest_size: u64,
    /// `sha256:<hex>` of the module itself.
    pub wasm_digest: String,
    /// Size of the module in bytes.
    pub wasm_size: u64,
    /// Media types of the manifest's layers, in order.
    pub layer_media_types: Vec<String>,
    /// Sizes of the layers in bytes (what a pull transfers, besides config and manifest).
    pub layer_sizes: Vec<u64>,
}

/// One piece of content-addressed data.
struct Blob {
    media_type: MediaType,
    bytes: Vec<u8>,
    hex: String,
}

impl Blob {
    fn new(media_type: MediaType, bytes: Vec<u8>) -> Self {
        let hex = sha256_hex(&bytes);
        Blob {
            media_type,
            bytes,
            hex,
        }
    }

    fn descriptor(&self, annotations: &[(&str, &str)]) -> Result<Descriptor, OciError> {
        let spec = |source| OciError::Spec {
            what: "descriptor",
            source,
        };
        let digest = Sha256Digest::from_str(&self.hex).map_err(spec)?;
        let mut builder = DescriptorBuilder::default()
            .media_type(self.media_type.clone())
            .digest(digest)
            .size(self.bytes.len() as u64);
        if !annotations.is_empty() {
            builder = builder.annotations(to_map(annotations));
        }
        builder.build().map_err(spec)
    }
}

/// Writes the image layout of `variant` for `wasm` into `dir`, replacing an earlier layout there.
pub fn write_layout(
    wasm: &[u8],
    variant: Variant,
    opts: &ImageOptions,
    dir: &Path,
) -> Result<LayoutSummary, OciError> {
    if !wasm.starts_with(WASM_MAGIC) {
        return Err(OciError::NotWasm);
    }
    if !valid_tag(&opts.tag) {
        return Err(OciError::BadTag(opts.tag.clone()));
    }
    let created = rfc3339(opts.created_epoch)?;
    let (config, layers) = match variant {
        Variant::Compat => compat_blobs(wasm, opts, &created)?,
        Variant::Wasm => wasm_blobs(wasm, opts)?,
    };

    let mut annotations = vec![
        ("org.opencontainers.image.created", created.as_str()),
        ("org.opencontainers.image.title", "portcullis"),
        (
            "org.opencontainers.image.description",
            "Portcullis: identity-aware JWT policy filter (proxy-wasm plugin)",
        ),
        ("org.opencontainers.image.version", opts.version.as_str()),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
    ];
    if variant == Variant::Compat {
        annotations.push((VARIANT_ANNOTATION, "compat"));
    }
    let layer_descriptors = layers
        .iter()
        .map(|(blob, title)| blob.descriptor(&title_annotation(title)))
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor(&[])?)
        .layers(layer_descriptors)
        .annotations(to_map(&annotations))
        .build()
        .map_err(|source| OciError::Spec {
            what: "image manifest",
            source,
        })?;
    let manifest = Blob::new(
        MediaType::ImageManifest,
        canonical_json(&manifest, "image manifest")?,
    );

    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![
            manifest.descriptor(&[(REF_NAME_ANNOTATION, opts.tag.as_str())])?
        ])
        .build()
        .map_err(|source| OciError::Spec {
            what: "image index",
            source,
        })?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(|source| OciError::Spec {
            what: "oci-layout file",
            source,
        })?;

    prepare_dir(dir)?;
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(io_at(&blob_dir))?;
    for blob in [&config, &manifest]
        .into_iter()
        .chain(layers.iter().map(|(blob, _)| blob))
    {
        write_file(&blob_dir.join(&blob.hex), &blob.bytes)?;
    }
    write_file(
        &dir.join("index.json"),
        &canonical_json(&index, "image index")?,
    )?;
    write_file(
        &dir.join("oci-layout"),
        &canonical_json(&layout, "oci-layout file")?,
    )?;

    Ok(LayoutSummary {
        variant: variant.name(),
        dir: dir.to_path_buf(),
        tag: opts.tag.clone(),
        manifest_digest: format!("sha256:{}", manifest.hex),
        manifest_size: manifest.bytes.len() as u64,
        wasm_digest: format!("sha256:{}", sha256_hex(wasm)),
        wasm_size: wasm.len() as u64,
        layer_media_types: layers
            .iter()
            .map(|(blob, _)| blob.media_type.to_string())
            .collect(),
        layer_sizes: layers
            .iter()
            .map(|(blob, _)| blob.bytes.len() as u64)
            .collect(),
    })
}

type Layers = Vec<(Blob, &'static str)>;

/// Config and layer of the compat variant: `plugin.wasm` in a gzipped tar, standard config.
fn compat_blobs(
    wasm: &[u8],
    opts: &ImageOptions,
    created: &str,
) -> Result<(Blob, Layers), OciError> {
    let tar = plugin_tar(wasm, opts.created_epoch)?;
    // The config names the layer by the digest of its uncompressed form (the "diff id").
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let layer = Blob::new(MediaType::ImageLayerGzip, gzip(&tar)?);
    let spec = |source| OciError::Spec {
        what: "image config",
        source,
    };
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![diff_id])
        .build()
        .map_err(spec)?;
    let config = ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::Wasm)
        // The OS a WASI preview 1 module targets, as the wasm OCI artifact guidance names it.
        .os(Os::Other("wasip1".to_string()))
        .rootfs(rootfs)
        .build()
        .map_err(spec)?;
    let config = Blob::new(
        MediaType::ImageConfig,
        canonical_json(&config, "image config")?,
    );
    Ok((config, vec![(layer, "")]))
}

/// Config and layers of the two-layer variant: runtime config and raw module.
fn wasm_blobs(wasm: &[u8], opts: &ImageOptions) -> Result<(Blob, Layers), OciError> {
    let runtime = serde_json::json!({
        "type": "envoy_proxy",
        "abiVersions": [opts.abi_version],
        "config": {"rootIds": [opts.root_id]},
    });
    let runtime = canonical_json(&runtime, "runtime config")?;
    let config = Blob::new(MediaType::Other(WASM_CONFIG_MEDIA_TYPE.into()), runtime);
    // Istio's fetcher wants exactly two layers, one of them the module; the runtime config is
    // the other (the same blob the manifest's config points at).
    let config_layer = Blob::new(config.media_type.clone(), config.bytes.clone());
    let module = Blob::new(
        MediaType::Other(WASM_CONTENT_MEDIA_TYPE.into()),
        wasm.to_vec(),
    );
    Ok((
        config,
        vec![(config_layer, RUNTIME_CONFIG_FILE), (module, PLUGIN_FILE)],
    ))
}

/// A tar holding only `plugin.wasm`, with every header field fixed.
fn plugin_tar(wasm: &[u8], mtime: u64) -> Result<Vec<u8>, OciError> {
    let io = io_at(Path::new("<layer tar>"));
    let mut header = tar::Header::new_ustar();
    header.set_path(PLUGIN_FILE).map_err(&io)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(wasm.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("root").map_err(&io)?;
    header.set_groupname("root").map_err(&io)?;
    header.set_mtime(mtime);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, wasm).map_err(&io)?;
    builder.into_inner().map_err(&io)
}

/// Gzip with no file name, no modification time and a fixed OS byte.
fn gzip(data: &[u8]) -> Result<Vec<u8>, OciError> {
    let io = io_at(Path::new("<layer gzip>"));
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(Vec::new(), Compression::best());
    encoder.write_all(data).map_err(&io)?;
    encoder.finish().map_err(&io)
}

/// Compact JSON with object keys sorted at every level.
///
/// oci-spec keeps annotations in `HashMap`s, whose order changes from run to run; sorting here
/// makes the bytes (and so the digests) independent of that and of serde_json's map features.
fn canonical_json<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, OciError> {
    let value = serde_json::to_value(value).map_err(|source| OciError::Json { what, source })?;
    serde_json::to_vec(&sorted(value)).map_err(|source| OciError::Json { what, source })
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Makes `dir` an empty directory, removing an earlier image layout but nothing else.
fn prepare_dir(dir: &Path) -> Result<(), OciError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(());
            }
            if !dir.join("oci-layout").is_file() {
                return Err(OciError::NotALayout(dir.to_path_buf()));
            }
            // A stale blob left behind would make two builds of the same module differ.
            fs::remove_dir_all(dir).map_err(io_at(dir))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(dir)(e)),
    }
    fs::create_dir_all(dir).map_err(io_at(dir))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    fs::write(path, bytes).map_err(io_at(path))
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> OciError + '_ {
    move |source| OciError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn title_annotation(title: &'static str) -> Vec<(&'static str, &'static str)> {
    if title.is_empty() {
        Vec::new()
    } else {
        vec![("org.opencontainers.image.title", title)]
    }
}

fn to_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `tag` is a valid OCI distribution tag.
pub fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Unix seconds as an RFC 3339 UTC timestamp (`1970-01-01T00:00:00Z`).
pub fn rfc3339(epoch: u64) -> Result<String, OciError> {
    // 253402300800 is 10000-01-01T00:00:00Z, the first instant RFC 3339 cannot write.
    if epoch >= 253_402_300_800 {
        return Err(OciError::BadTime(epoch));
    }
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (year, month, day) = civil_from_days(days);
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    ))
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Count in 400-year eras starting on 0000-03-01, so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn opts() -> ImageOptions {
        ImageOptions {
            tag: "1.2.3".into(),
            created_epoch: 0,
            version: "1.2.3".into(),
            root_id: "portcullis".into(),
            abi_version: "proxy_abi_version_0_2_1".into(),
        }
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    fn blob(dir: &Path, digest: &Value) -> Vec<u8> {
        let digest = digest.as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(sha256_hex(&bytes), hex, "blob content matches its name");
        bytes
    }

    fn manifest(dir: &Path) -> Value {
        let index = read_json(&dir.join("index.json"));
        let entry = &index["manifests"][0];
        assert_eq!(entry["annotations"][REF_NAME_ANNOTATION], "1.2.3");
        serde_json::from_slice(&blob(dir, &entry["digest"])).unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("portcullis-oci-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(253_402_300_799).unwrap(), "9999-12-31T23:59:59Z");
        assert!(matches!(
            rfc3339(253_402_300_800),
            Err(OciError::BadTime(_))
        ));
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        for good in ["latest", "0.1.0", "v1_2-rc.3", "_x"] {
            assert!(valid_tag(good), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn compat_layer_holds_plugin_wasm_with_fixed_headers() {
        let dir = tmp("compat");
        let summary = write_layout(MODULE, Variant::Compat, &opts(), &dir).unwrap();
        let manifest = manifest(&dir);
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(manifest["annotations"][VARIANT_ANNOTATION], "compat");
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let gz = blob(&dir, &layers[0]["digest"]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime is zero");
        assert_eq!(gz[3] & 0x08, 0, "gzip has no file name");
        assert_eq!(gz[9], GZIP_OS_UNKNOWN);
        let mut tar_bytes = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut tar_bytes).unwrap();

        let config: Value =
            serde_json::from_slice(&blob(&dir, &manifest["config"]["digest"])).unwrap();
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&tar_bytes))
        );
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");

        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some(PLUGIN_FILE));
        assert_eq!(entry.header().mode().unwrap(), 0o644);
        assert_eq!(entry.header().uid().unwrap(), 0);
        assert_eq!(entry.header().mtime().unwrap(), 0);
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        assert_eq!(content, MODULE);
        drop(entry);
        assert!(entries.next().is_none(), "only plugin.wasm in the layer");
        assert_eq!(summary.layer_media_types.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wasm_variant_has_the_module_and_runtime_config_as_layers() {
        let dir = tmp("wasm");
        write_layout(MODULE, Variant::Wasm, &opts(), &dir).unwrap();
        let manifest = manifest(&dir);
        assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
        assert!(manifest["annotations"].get(VARIANT_ANNOTATION).is_none());
        let layers = manifest["layers"].as_array().unwrap();
        let types: Vec<_> = layers.iter().map(|l| l["mediaType"].clone()).collect();
        assert_eq!(types, [WASM_CONFIG_MEDIA_TYPE, WASM_CONTENT_MEDIA_TYPE]);
        assert_eq!(blob(&dir, &layers[1]["digest"]), MODULE);
        assert_eq!(
            layers[1]["annotations"]["org.opencontainers.image.title"],
            PLUGIN_FILE
        );
        let runtime: Value = serde_json::from_slice(&blob(&dir, &layers[0]["digest"])).unwrap();
        assert_eq!(runtime["type"], "envoy_proxy");
        assert_eq!(runtime["config"]["rootIds"][0], "portcullis");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn same_module_same_bytes_and_new_time_new_digest() {
        let (a, b, c) = (tmp("a"), tmp("b"), tmp("c"));
        for variant in Variant::ALL {
            let first = write_layout(MODULE, variant, &opts(), &a).unwrap();
            let second = write_layout(MODULE, variant, &opts(), &b).unwrap();
            assert_eq!(first.manifest_digest, second.manifest_digest);
            for name in ["index.json", "oci-layout"] {
                assert_eq!(
                    fs::read(a.join(name)).unwrap(),
                    fs::read(b.join(name)).unwrap()
                );
            }
            let later = ImageOptions {
                created_epoch: 1_700_000_000,
                ..opts()
            };
            let third = write_layout(MODULE, variant, &later, &c).unwrap();
            assert_ne!(first.manifest_digest, third.manifest_digest);
        }
        for dir in [a, b, c] {
            fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn rewriting_a_layout_leaves_no_stale_blobs() {
        let dir = tmp("rewrite");
        write_layout(b"\0asm\x01\0\0\0old", Variant::Wasm, &opts(), &dir).unwrap();
        write_layout(MODULE, Variant::Wasm, &opts(), &dir).unwrap();
        let blobs = fs::read_dir(dir.join("blobs/sha256")).unwrap().count();
        assert_eq!(blobs, 3, "config (also a layer), module, manifest");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_what_it_should_not_package_or_overwrite() {
        let dir = tmp("refuse");
        assert!(matches!(
            write_layout(b"not wasm", Variant::Compat, &opts(), &dir),
            Err(OciError::NotWasm)
        ));
        let bad_tag = ImageOptions {
            tag: "a:b".into(),
            ..opts()
        };
        assert!(matches!(
            write_layout(MODULE, Variant::Compat, &bad_tag, &dir),
            Err(OciError::BadTag(_))
        ));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("precious.txt"), "keep me").unwrap();
        let err = write_layout(MODULE, Variant::Compat, &opts(), &dir).unwrap_err();
        assert!(matches!(err, OciError::NotALayout(_)), "{err}");
        assert!(dir.join("precious.txt").is_file());
        fs::remove_dir_all(&dir).unwrap();
    }
}
