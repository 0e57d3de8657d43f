//! The bundle's software bill of materials: a CycloneDX 1.5 JSON document that every build
//! writes as the entry [`SBOM_ENTRY`], so the digest chain (and a signature over its root)
//! covers it like any other byte.
//!
//! Why CycloneDX and not SPDX 2.3: SPDX requires a SHA-1 checksum of every file, which would
//! mean reading every byte again to compute a broken hash; CycloneDX takes the SHA-256 the
//! writer computed for the entry table, names container images as components of type
//! `container` with OCI package URLs, and Go modules and Debian packages as package URLs.
//!
//! What it lists:
//! - `metadata.component`: the bundle (name, version), with its architecture, platform,
//!   Kubernetes version and the bases it was built `FROM` as properties;
//! - a `file` component per file and blob entry, named by its path, with the SHA-256 the
//!   writer already has (nothing is hashed twice);
//! - a `container` component per image, named by its original reference, with its platform,
//!   manifest, config and layer digests; it depends on the blob entries that make it up;
//! - where a file's origin is known, what it came from: the Go modules (and toolchain) a Go
//!   binary was built from ([`gobuild`]), the Debian packages a dpkg status file or an image
//!   layer lists ([`dpkg`]); the file (or layer blob) depends on them;
//! - an `application` component per base bundle, the newest a dependency of the bundle.
//!
//! It is reproducible: components are sorted, no time is recorded unless the build asks for
//! one, and the `serialNumber` is a UUID made from the SHA-256 of the rest of the document.
//! Content that a base bundle's own SBOM already describes (same SHA-256) is not read again.

pub mod dpkg;
pub mod gobuild;
pub mod layer_cache;

use bale_contract::imageref::ImageRef;
use bale_contract::manifest::ImageRecord;
pub use bale_contract::SBOM_ENTRY;
use bale_payload::{format, Bundle, BundleWriter, Entry, Kind};
pub use layer_cache::LayerCache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Largest SBOM `bale sbom` and a `FROM` build read back (about 400,000 files' worth).
pub const MAX_SBOM: u64 = 128 << 20;
/// Largest manifest or index blob read to list an image's layers.
const MAX_MANIFEST: u64 = 4 << 20;
/// The directory holding the SBOM.
const SBOM_DIR: &str = ".bale";

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error(transparent)]
    Payload(#[from] bale_payload::Error),
    #[error(
        "{SBOM_ENTRY} is {size} bytes, more than the {limit} this bale reads; the bundle was \
         made to exhaust memory, or by a newer bale"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error("{SBOM_ENTRY}: the entry is a {kind:?}, not a file: the bundle is malformed")]
    NotAFile { kind: Kind },
    #[error("cannot encode the SBOM: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "{path}: the build context puts its own file where the build writes the SBOM; move it \
         elsewhere"
    )]
    Occupied { path: String },
}

/// Why one piece of content was left out of the SBOM. Never stops a build: each becomes a
/// warning that names the entry or image.
#[derive(Debug, thiserror::Error)]
enum ScanError {
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Payload(#[from] bale_payload::Error),
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error("larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Go(#[from] gobuild::GoInfoError),
    #[error(transparent)]
    Layer(#[from] dpkg::LayerError),
    #[error("{path}: its content is not the layer sha256:{digest} (it changed during the build?)")]
    NotTheLayer { path: String, digest: String },
    #[error("the scan stopped")]
    Stopped,
    #[error("{digest}: not a sha256 digest")]
    NotADigest { digest: String },
    #[error("{path} cannot be read back")]
    NotInBundle { path: String },
    #[error("{path}: {source}")]
    Blob {
        path: String,
        source: Box<ScanError>,
    },
    #[error(transparent)]
    Manifest(#[from] crate::images::ImagesError),
    #[error(transparent)]
    Platform(#[from] bale_contract::oci::OciError),
    #[error("an index nested in an index")]
    NestedIndex,
}

/// Where an entry's content can be read back while the bundle is being written.
pub enum Source<'a> {
    /// A file on disk (random access: a binary's build information is a few small reads).
    Disk(PathBuf),
    /// An entry of a base bundle (read as a stream, every frame checked).
    Base(&'a Bundle, &'a Entry),
}

/// A base bundle, as the header's `metadata.layers` records it.
#[derive(Debug, Clone)]
pub struct BaseRef {
    pub name: String,
    pub version: String,
    /// `sha256:…` of its header.
    pub digest: String,
}

/// What the SBOM says beyond the entries.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub name: String,
    pub version: String,
    /// Kernel name of the program's architecture (`x86_64`).
    pub arch: String,
    /// `os/arch[/variant]`.
    pub platform: Option<String>,
    /// RFC 3339; only when the build records its time.
    pub timestamp: Option<String>,
    pub kubernetes_version: Option<String>,
    /// Oldest first; the last is the one named in `FROM`.
    pub bases: Vec<BaseRef>,
    pub images: Vec<ImageRecord>,
    /// The SBOM of the base named in `FROM`: its findings about content this bundle shares.
    pub base_sbom: Option<Vec<u8>>,
    /// Where layer findings are kept between builds; `None` scans every layer.
    pub layer_cache: Option<LayerCache>,
}

/// One entry as the SBOM sees it.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// What was written, for the build's report.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub bytes: u64,
    pub components: usize,
    pub go_binaries: usize,
    pub go_modules: usize,
    pub deb_packages: usize,
    pub layers_scanned: usize,
    /// Layers whose findings came from the layer cache instead of a scan.
    pub layers_cached: usize,
    /// Content whose origin came from the base's SBOM instead of being read again.
    pub reused: usize,
    /// Origins that could not be read (never fatal).
    pub warnings: Vec<String>,
}

/// Builds the SBOM from what `w` has been given and adds it (and `.bale/`, if missing) as the
/// last entry before [`BundleWriter::finish`]. `source` says where an entry's content can be
/// read back; entries without one are listed with their digest only.
pub fn add_sbom<'a>(
    w: &mut BundleWriter,
    input: &Input,
    source: &dyn Fn(&str) -> Option<Source<'a>>,
) -> Result<Summary, SbomError> {
    if w.has(SBOM_ENTRY) {
        return Err(SbomError::Occupied {
            path: SBOM_ENTRY.to_string(),
        });
    }
    let entries: Vec<EntryInfo> = w
        .added()
        .map(|a| EntryInfo {
            path: a.path.to_string(),
            kind: a.kind,
            mode: a.mode,
            size: a.size,
            sha256: *a.sha256,
        })
        .collect();
    let (doc, summary) = document(input, &entries, source)?;
    if !w.has(SBOM_DIR) {
        w.add_dir(SBOM_DIR, 0o755)?;
    }
    w.add_bytes(SBOM_ENTRY, 0o644, &doc)?;
    Ok(summary)
}

/// Reads a bundle's SBOM (`None` for a bundle built before SBOMs), every frame checked against
/// the chain and the whole against the entry's digest.
pub fn read_sbom(bundle: &Bundle, entries: &[Entry]) -> Result<Option<Vec<u8>>, SbomError> {
    let Ok(i) = entries.binary_search_by(|e| e.path.as_str().cmp(SBOM_ENTRY)) else {
        return Ok(None);
    };
    let e = &entries[i];
    if e.kind != Kind::File {
        return Err(SbomError::NotAFile { kind: e.kind });
    }
    if e.size > MAX_SBOM {
        return Err(SbomError::TooLarge {
            size: e.size,
            limit: MAX_SBOM,
        });
    }
    let mut dctx = bale_payload::reader::new_decompressor()?;
    let (mut stored, mut frame) = (Vec::new(), Vec::new());
    let mut out = Vec::with_capacity(e.size as usize);
    for k in 0..e.frames.len() {
        bundle.read_frame(e, k, &mut dctx, &mut stored, &mut frame)?;
        out.extend_from_slice(&frame);
    }
    if out.len() as u64 != e.size || format::sha256(&out) != e.sha256 {
        return Err(bale_payload::Error::BadFrame {
            path: e.path.clone(),
            frame: 0,
            offset: e.frames.first().map_or(0, |f| f.offset),
            why: "its content does not match the entry's digest".into(),
        }
        .into());
    }
    Ok(Some(out))
}

/// An RFC 3339 time for the SBOM from the header's `created_at` (`@SECONDS` or RFC 3339).
pub fn timestamp_of(created_at: &str) -> Option<String> {
    let Some(secs) = created_at.strip_prefix('@') else {
        return Some(created_at.to_string()).filter(|s| s.contains('T'));
    };
    let secs: i64 = secs.parse().ok()?;
    Some(rfc3339_utc(secs))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since 1970-01-01 (the civil date of the proleptic
/// Gregorian calendar, from days since the epoch).
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// The document.

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    #[serde(default)]
    bom_format: String,
    #[serde(default)]
    spec_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serial_number: Option<String>,
    #[serde(default)]
    version: u32,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    components: Vec<Component>,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tools: Option<Tools>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    component: Option<Component>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tools {
    #[serde(default)]
    components: Vec<Component>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Component {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(rename = "bom-ref", default, skip_serializing_if = "String::is_empty")]
    bom_ref: String,
    #[serde(default)]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Hash {
    #[serde(default)]
    alg: String,
    #[serde(default)]
    content: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Property {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Dependency {
    #[serde(rename = "ref", default)]
    reference: String,
    #[serde(rename = "dependsOn", default, skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
}

fn prop(name: &str, value: impl Into<String>) -> Property {
    Property {
        name: name.to_string(),
        value: value.into(),
    }
}

fn sha256_hash(d: &[u8; 32]) -> Hash {
    Hash {
        alg: "SHA-256".into(),
        content: format::hex(d),
    }
}

const BUNDLE_REF: &str = "bundle";

fn file_ref(path: &str) -> String {
    format!("file:{path}")
}

/// Percent-encodes a purl segment: everything but ASCII letters, digits and `.-_~`.
pub fn purl_encode(s: &str) -> String {
    encode_keep(s, "")
}

fn encode_keep(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a component set and its dependencies look like while being assembled.
#[derive(Default)]
struct Graph {
    /// Origin components (Go modules, Debian packages), by bom-ref.
    origins: BTreeMap<String, Component>,
    deps: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn depend(&mut self, from: &str, to: impl IntoIterator<Item = String>) {
        self.deps.entry(from.to_string()).or_default().extend(to);
    }

    /// Adds an origin component; the same package from two places is one component, an
    /// `application` wherever one place says so.
    fn origin(&mut self, c: Component) -> String {
        let r = c.bom_ref.clone();
        match self.origins.get_mut(&r) {
            Some(have) => {
                if c.kind == "application" {
                    have.kind = c.kind;
                }
            }
            None => {
                self.origins.insert(r.clone(), c);
            }
        }
        r
    }
}

/// What is known about one content digest: the file's own properties and its origins.
#[derive(Debug, Clone, Default)]
struct Finding {
    properties: Vec<Property>,
    origins: Vec<Component>,
}

/// Findings of the base's SBOM, by content digest (hex).
fn known_from(base: Option<&[u8]>) -> HashMap<String, Finding> {
    let mut out = HashMap::new();
    let Some(bytes) = base else { return out };
    let Ok(bom) = serde_json::from_slice::<Bom>(bytes) else {
        return out;
    };
    let by_ref: HashMap<&str, &Component> = bom
        .components
        .iter()
        .map(|c| (c.bom_ref.as_str(), c))
        .collect();
    let deps: HashMap<&str, &Vec<String>> = bom
        .dependencies
        .iter()
        .map(|d| (d.reference.as_str(), &d.depends_on))
        .collect();
    for c in &bom.components {
        if c.kind != "file" || !c.bom_ref.starts_with("file:") {
            continue;
        }
        let Some(h) = c.hashes.iter().find(|h| h.alg == "SHA-256") else {
            continue;
        };
        let origins = deps
            .get(c.bom_ref.as_str())
            .into_iter()
            .flat_map(|v| v.iter())
            .filter_map(|r| by_ref.get(r.as_str()))
            .filter(|o| o.kind == "library" || o.kind == "application")
            .map(|o| (*o).clone())
            .collect();
        out.insert(
            h.content.clone(),
            Finding {
                properties: c.properties.clone(),
                origins,
            },
        );
    }
    out
}

/// What reading one file or layer found.
enum Scan {
    Go(Box<gobuild::BuildInfo>),
    Debs(Vec<dpkg::Package>),
    List(Vec<String>),
    Layer(dpkg::LayerScan),
    CachedLayer(dpkg::LayerScan),
    Nothing,
}

/// Why a piece of content was read: a possible Go binary, a status file, an image layer.
#[derive(Clone, Copy)]
enum Job {
    Binary,
    Status,
    List,
    /// A layer, with its SHA-256 (the key of its cached findings).
    Layer(dpkg::Codec, [u8; 32]),
}

fn read_all(src: &Source<'_>, limit: u64) -> Result<Vec<u8>, ScanError> {
    let mut out = Vec::new();
    open(src)?.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(ScanError::TooLarge { limit });
    }
    Ok(out)
}

/// Buffered, so a layer's decompressor reads its input in place.
fn open<'s>(src: &'s Source<'_>) -> Result<Box<dyn BufRead + 's>, ScanError> {
    const READ_BUFFER: usize = 1 << 20;
    match src {
        Source::Disk(p) => Ok(Box::new(BufReader::with_capacity(
            READ_BUFFER,
            open_file(p)?,
        ))),
        Source::Base(b, e) => Ok(Box::new(BufReader::with_capacity(
            READ_BUFFER,
            b.open_entry(e)?,
        ))),
    }
}

fn open_file(path: &Path) -> Result<std::fs::File, ScanError> {
    std::fs::File::open(path).map_err(|source| ScanError::File {
        path: path.display().to_string(),
        source,
    })
}

fn run_job(job: Job, src: &Source<'_>, cache: Option<&LayerCache>) -> Result<Scan, ScanError> {
    match job {
        Job::Binary => match src {
            Source::Disk(p) => match gobuild::read_elf(&open_file(p)?)? {
                Some(info) => Ok(Scan::Go(Box::new(info))),
                None => Ok(Scan::Nothing),
            },
            // A stream has no random access: a base's binaries come with its own SBOM.
            Source::Base(..) => Ok(Scan::Nothing),
        },
        Job::Status => {
            let text = read_all(src, dpkg::MAX_STATUS)?;
            Ok(Scan::Debs(dpkg::parse_status(&String::from_utf8_lossy(
                &text,
            ))))
        }
        Job::List => {
            let text = read_all(src, dpkg::MAX_STATUS)?;
            Ok(Scan::List(dpkg::parse_list(&String::from_utf8_lossy(
                &text,
            ))))
        }
        Job::Layer(codec, sha256) => {
            if let Some(found) = cache.and_then(|c| c.get(&sha256, codec)) {
                return Ok(Scan::CachedLayer(found));
            }
            let Source::Disk(path) = src else {
                // A base's layers were checked with its bundle; its findings are not cached.
                let scan = dpkg::scan_layer(open(src)?, codec)?;
                return Ok(Scan::Layer(scan));
            };
            // A layer on disk is hashed as it is scanned: a file that is not the layer its
            // digest names (changed in a layout while the build runs) must not leave findings
            // under that digest for later builds.
            let file = open_file(path)?;
            let mut hashed = HashingReader {
                inner: file,
                hasher: Sha256::new(),
            };
            let scan = dpkg::scan_layer(
                Box::new(BufReader::with_capacity(1 << 20, &mut hashed)),
                codec,
            )?;
            std::io::copy(&mut hashed, &mut std::io::sink()).map_err(|source| ScanError::File {
                path: path.display().to_string(),
                source,
            })?;
            let got: [u8; 32] = hashed.hasher.finalize().into();
            if got != sha256 {
                return Err(ScanError::NotTheLayer {
                    path: path.display().to_string(),
                    digest: hex::encode(sha256),
                });
            }
            if let Some(c) = cache {
                // A cache that cannot be written costs a scan next time, not this build.
                let _ = c.put(&sha256, codec, &scan);
            }
            Ok(Scan::Layer(scan))
        }
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Runs the jobs on every core; results in job order, so the output does not depend on timing.
fn run_jobs(
    jobs: &[(usize, Job, Source<'_>)],
    cache: Option<&LayerCache>,
) -> Vec<Result<Scan, ScanError>> {
    let threads = bale_payload::default_threads().min(jobs.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Result<Scan, ScanError>>> = (0..jobs.len()).map(|_| None).collect();
    let slots: Vec<std::sync::Mutex<Option<Result<Scan, ScanError>>>> = (0..jobs.len())
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((_, job, src)) = jobs.get(i) else {
                    break;
                };
                let r = run_job(*job, src, cache);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    for (i, slot) in slots.into_iter().enumerate() {
        results[i] = slot.into_inner().ok().flatten();
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(ScanError::Stopped)))
        .collect()
}

/// An image layer to scan ahead of the SBOM, as its descriptor and the image cache give it.
pub struct LayerBlob {
    /// `sha256:…`.
    pub digest: String,
    pub media_type: String,
    /// Stored size.
    pub size: u64,
    pub path: PathBuf,
}

/// Scans the layers whose findings `cache` does not hold yet, and stores what they hold, so
/// the SBOM written afterwards takes every one from there. The build runs it while it writes
/// the bundle's entries: the layers are decompressed while the writer copies and hashes.
/// Layers the SBOM would not scan (another media type, above [`dpkg::MAX_LAYER`]) are left
/// out; one that cannot be read is left for the SBOM to report. Returns the layers scanned.
pub fn fill_layer_cache(cache: &LayerCache, layers: &[LayerBlob]) -> usize {
    let mut seen = BTreeSet::new();
    let jobs: Vec<(usize, Job, Source<'_>)> = layers
        .iter()
        .filter(|l| l.size <= dpkg::MAX_LAYER)
        .filter_map(|l| {
            let codec = dpkg::layer_codec(&l.media_type)?;
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(l.digest.strip_prefix("sha256:")?, &mut sha256).ok()?;
            seen.insert(sha256).then_some((l, codec, sha256))
        })
        .filter(|(_, codec, sha256)| cache.get(sha256, *codec).is_none())
        .enumerate()
        .map(|(i, (l, codec, sha256))| (i, Job::Layer(codec, sha256), Source::Disk(l.path.clone())))
        .collect();
    run_jobs(&jobs, Some(cache))
        .iter()
        .filter(|r| matches!(r, Ok(Scan::Layer(_))))
        .count()
}

fn go_findings(info: &gobuild::BuildInfo) -> Finding {
    let mut f = Finding::default();
    let toolchain = info.toolchain();
    if !toolchain.is_empty() {
        f.properties.push(prop("bale:go:toolchain", toolchain));
        f.origins.push(Component {
            kind: "library".into(),
            bom_ref: format!(
                "pkg:golang/stdlib@{}",
                purl_encode(toolchain.trim_start_matches("go"))
            ),
            name: "stdlib".into(),
            version: Some(toolchain.to_string()),
            purl: Some(format!(
                "pkg:golang/stdlib@{}",
                purl_encode(toolchain.trim_start_matches("go"))
            )),
            ..Default::default()
        });
    }
    if let Some(p) = &info.path {
        f.properties.push(prop("bale:go:package", p.as_str()));
    }
    for (k, v) in &info.settings {
        if matches!(
            k.as_str(),
            "GOOS" | "GOARCH" | "GOAMD64" | "GOARM64" | "CGO_ENABLED" | "-tags" | "vcs.revision"
        ) {
            f.properties
                .push(prop(&format!("bale:go:build:{k}"), v.as_str()));
        }
    }
    let modules = info
        .main
        .iter()
        .map(|m| (m, "application"))
        .chain(info.deps.iter().map(|m| (m, "library")));
    for (m, kind) in modules {
        if m.path.is_empty() {
            continue;
        }
        let used = m.replaced_by.as_deref().unwrap_or(m);
        let version = Some(used.version.clone()).filter(|v| !v.is_empty() && v != "(devel)");
        let path = encode_keep(&used.path, "/");
        let purl = match &version {
            Some(v) => format!("pkg:golang/{path}@{}", purl_encode(v)),
            None => format!("pkg:golang/{path}"),
        };
        let mut properties = Vec::new();
        if let Some(sum) = &used.sum {
            properties.push(prop("bale:go:sum", sum.as_str()));
        }
        if m.replaced_by.is_some() {
            properties.push(prop(
                "bale:go:replaces",
                format!("{}@{}", m.path, m.version),
            ));
        }
        f.origins.push(Component {
            kind: kind.into(),
            bom_ref: purl.clone(),
            name: used.path.clone(),
            version,
            purl: Some(purl),
            properties,
            ..Default::default()
        });
    }
    f
}

/// A layer's findings: its packages, and per Go binary a property naming it and its modules.
fn layer_findings(scan: &dpkg::LayerScan) -> Finding {
    let mut f = deb_findings(&scan.debs);
    for (path, info) in &scan.go {
        let g = go_findings(info);
        let mut what = info.path.clone().unwrap_or_default();
        let toolchain = info.toolchain();
        if !toolchain.is_empty() {
            what = format!("{what} ({toolchain})");
        }
        f.properties
            .push(prop("bale:layer:go-binary", format!("{path}: {what}")));
        f.origins.extend(g.origins);
    }
    f
}

fn deb_findings(pkgs: &[dpkg::Package]) -> Finding {
    let mut f = Finding::default();
    for p in pkgs {
        let purl = p.purl();
        let mut properties = Vec::new();
        if let Some(s) = &p.source {
            properties.push(prop("bale:deb:source", s.as_str()));
        }
        f.origins.push(Component {
            kind: "library".into(),
            bom_ref: purl.clone(),
            name: p.name.clone(),
            version: Some(p.version.clone()),
            purl: Some(purl),
            properties,
            ..Default::default()
        });
    }
    f
}

/// An image's blobs as the bundle holds them.
struct ImageBlobs {
    index: Option<String>,
    manifest: String,
    config: Option<String>,
    layers: Vec<(String, String, u64)>,
}

fn blob_path(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("registry/blobs/sha256/{hex}"))
}

fn image_blobs<'a>(
    img: &ImageRecord,
    source: &dyn Fn(&str) -> Option<Source<'a>>,
) -> Result<ImageBlobs, ScanError> {
    use crate::images::oci::{self, Parsed, Platform};
    let read = |digest: &str| -> Result<Vec<u8>, ScanError> {
        let path = blob_path(digest).ok_or_else(|| ScanError::NotADigest {
            digest: digest.to_string(),
        })?;
        let src = source(&path).ok_or_else(|| ScanError::NotInBundle { path: path.clone() })?;
        read_all(&src, MAX_MANIFEST).map_err(|e| ScanError::Blob {
            path,
            source: Box::new(e),
        })
    };
    let top = read(&img.digest)?;
    let parsed = oci::parse_manifest(&img.name, &top, Some(&img.media_type))?;
    let (index, manifest, parsed) = match parsed {
        Parsed::Index { manifests, .. } => {
            let wanted = Platform::parse(&img.platform)?;
            let child = oci::select_platform(&img.name, &manifests, &wanted)?;
            let bytes = read(&child.digest)?;
            let p = oci::parse_manifest(&img.name, &bytes, Some(&child.media_type))?;
            (Some(img.digest.clone()), child.digest.clone(), p)
        }
        p => (None, img.digest.clone(), p),
    };
    match parsed {
        Parsed::Manifest { config, layers, .. } => Ok(ImageBlobs {
            index,
            manifest,
            config: Some(config.digest),
            layers: layers
                .into_iter()
                .map(|l| (l.digest, l.media_type, l.size))
                .collect(),
        }),
        Parsed::Index { .. } => Err(ScanError::NestedIndex),
    }
}

/// A purl for an image: `pkg:oci/NAME@DIGEST?arch=…&repository_url=…&tag=…`.
fn image_purl(img: &ImageRecord) -> (String, Option<String>) {
    let arch = img
        .platform
        .split('/')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let Ok(r) = ImageRef::parse(&img.name) else {
        return (
            format!(
                "pkg:oci/{}@{}",
                purl_encode(&img.name),
                purl_encode(&img.digest)
            ),
            None,
        );
    };
    let last = r.path.rsplit('/').next().unwrap_or(&r.path);
    let mut q = Vec::new();
    if !arch.is_empty() {
        q.push(format!("arch={}", purl_encode(&arch)));
    }
    q.push(format!(
        "repository_url={}",
        encode_keep(&format!("{}/{}", r.domain, r.path), "/")
    ));
    if let Some(t) = &r.tag {
        q.push(format!("tag={}", purl_encode(t)));
    }
    (
        format!(
            "pkg:oci/{}@{}?{}",
            purl_encode(last),
            purl_encode(&img.digest),
            q.join("&")
        ),
        r.tag.clone(),
    )
}

/// The SBOM of a bundle with `entries`, as JSON bytes.
pub fn document<'a>(
    input: &Input,
    entries: &[EntryInfo],
    source: &dyn Fn(&str) -> Option<Source<'a>>,
) -> Result<(Vec<u8>, Summary), SbomError> {
    let mut summary = Summary::default();
    let known = known_from(input.base_sbom.as_deref());
    let mut files: Vec<&EntryInfo> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::File | Kind::Blob) && e.path != SBOM_ENTRY)
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let present: BTreeSet<&str> = files.iter().map(|e| e.path.as_str()).collect();

    // Images first: their layers are content to scan.
    let mut images = input.images.clone();
    images.sort_by(|a, b| a.name.cmp(&b.name));
    let mut layer_codec: HashMap<String, dpkg::Codec> = HashMap::new();
    let mut image_parts = Vec::new();
    for img in &images {
        match image_blobs(img, source) {
            Ok(b) => {
                for (digest, media_type, size) in &b.layers {
                    if let (Some(path), Some(codec)) =
                        (blob_path(digest), dpkg::layer_codec(media_type))
                    {
                        if *size <= dpkg::MAX_LAYER {
                            layer_codec.insert(path, codec);
                        } else {
                            summary.warnings.push(format!(
                                "image {}: layer {digest} is larger than {} MiB; its Debian \
                                 packages are not listed",
                                img.name,
                                dpkg::MAX_LAYER >> 20
                            ));
                        }
                    }
                }
                image_parts.push(Some(b));
            }
            Err(e) => {
                summary.warnings.push(format!(
                    "image {}: its layers are not listed: {e}",
                    img.name
                ));
                image_parts.push(None);
            }
        }
    }

    // What to read, and what the base already told.
    let mut findings: HashMap<usize, Finding> = HashMap::new();
    let mut jobs: Vec<(usize, Job, Source<'a>)> = Vec::new();
    let mut scanned_digest: HashMap<[u8; 32], usize> = HashMap::new();
    let mut same_as: Vec<(usize, usize)> = Vec::new();
    for (i, e) in files.iter().enumerate() {
        let job = if let Some(codec) = layer_codec.get(&e.path) {
            Job::Layer(*codec, e.sha256)
        } else if e.kind == Kind::File && dpkg::status_root(&e.path).is_some() {
            Job::Status
        } else if e.kind == Kind::File && dpkg::list_of(&e.path).is_some() {
            Job::List
        } else if e.kind == Kind::File && e.mode & 0o111 != 0 && e.size >= 64 {
            Job::Binary
        } else {
            continue;
        };
        if let Some(f) = known.get(&format::hex(&e.sha256)) {
            summary.reused += 1;
            findings.insert(i, f.clone());
            continue;
        }
        if let Some(first) = scanned_digest.get(&e.sha256) {
            same_as.push((i, *first));
            continue;
        }
        if let Some(src) = source(&e.path) {
            scanned_digest.insert(e.sha256, i);
            jobs.push((i, job, src));
        }
    }
    // Installed packages by (root, name), and the files each package's list names.
    let mut installed: HashMap<(String, String), dpkg::Package> = HashMap::new();
    let mut lists: Vec<(String, String, Vec<String>)> = Vec::new();
    for ((i, _, _), r) in jobs.iter().zip(run_jobs(&jobs, input.layer_cache.as_ref())) {
        let path = &files[*i].path;
        match r {
            Ok(Scan::Go(info)) => {
                findings.insert(*i, go_findings(&info));
            }
            Ok(Scan::Debs(pkgs)) => {
                let root = dpkg::status_root(path).unwrap_or_default();
                for p in &pkgs {
                    installed.insert((root.to_string(), p.name.clone()), p.clone());
                }
                findings.insert(*i, deb_findings(&pkgs));
            }
            Ok(Scan::List(listed)) => {
                if let Some((root, name)) = dpkg::list_of(path) {
                    lists.push((root.to_string(), name.to_string(), listed));
                }
            }
            Ok(Scan::Layer(scan)) => {
                summary.layers_scanned += 1;
                findings.insert(*i, layer_findings(&scan));
            }
            Ok(Scan::CachedLayer(scan)) => {
                summary.layers_cached += 1;
                findings.insert(*i, layer_findings(&scan));
            }
            Ok(Scan::Nothing) => {}
            Err(e) => summary
                .warnings
                .push(format!("{path}: its origin is not listed: {e}")),
        }
    }
    for (i, first) in same_as {
        if let Some(f) = findings.get(&first).cloned() {
            findings.insert(i, f);
        }
    }
    // The package each executable or shared library of a dpkg tree came from.
    if !lists.is_empty() {
        let index: HashMap<&str, usize> = files
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();
        for (root, name, listed) in &lists {
            let Some(pkg) = installed.get(&(root.clone(), name.clone())) else {
                continue;
            };
            let deb = deb_findings(std::slice::from_ref(pkg));
            for l in listed {
                let Some(&i) = index.get(format!("{root}{l}").as_str()) else {
                    continue;
                };
                let e = files[i];
                let binary = e.kind == Kind::File
                    && (e.mode & 0o111 != 0 || l.ends_with(".so") || l.contains(".so."));
                if binary {
                    let f = findings.entry(i).or_default();
                    f.properties.push(prop("bale:deb:package", name.as_str()));
                    f.origins.extend(deb.origins.iter().cloned());
                }
            }
        }
    }

    // Components.
    let mut g = Graph::default();
    let mut components = Vec::new();
    let mut go_binaries = 0;
    for (i, e) in files.iter().enumerate() {
        let r = file_ref(&e.path);
        let mut c = Component {
            kind: "file".into(),
            bom_ref: r.clone(),
            name: e.path.clone(),
            hashes: vec![sha256_hash(&e.sha256)],
            ..Default::default()
        };
        if let Some(f) = findings.remove(&i) {
            go_binaries += f
                .properties
                .iter()
                .filter(|p| p.name == "bale:go:toolchain" || p.name == "bale:layer:go-binary")
                .count();
            c.properties = f.properties;
            let refs: Vec<String> = f.origins.into_iter().map(|o| g.origin(o)).collect();
            if !refs.is_empty() {
                g.depend(&r, refs);
            }
        }
        components.push(c);
    }
    summary.go_binaries = go_binaries;

    let mut bundle_deps = Vec::new();
    for (img, parts) in images.iter().zip(&image_parts) {
        let r = format!("image:{}", img.name);
        let (purl, tag) = image_purl(img);
        let mut properties = vec![
            prop("bale:image:platform", img.platform.as_str()),
            prop("bale:image:media-type", img.media_type.as_str()),
            prop("bale:image:size", img.size.to_string()),
        ];
        let mut blobs = Vec::new();
        if let Some(b) = parts {
            if let Some(ix) = &b.index {
                properties.push(prop("bale:image:index-digest", ix.as_str()));
                blobs.push(ix.clone());
            }
            properties.push(prop("bale:image:manifest-digest", b.manifest.as_str()));
            blobs.push(b.manifest.clone());
            if let Some(c) = &b.config {
                properties.push(prop("bale:image:config-digest", c.as_str()));
                blobs.push(c.clone());
            }
            for (d, _, _) in &b.layers {
                properties.push(prop("bale:image:layer", d.as_str()));
                blobs.push(d.clone());
            }
        }
        let refs: Vec<String> = blobs
            .iter()
            .filter_map(|d| blob_path(d))
            .filter(|p| present.contains(p.as_str()))
            .map(|p| file_ref(&p))
            .collect();
        g.depend(&r, refs);
        components.push(Component {
            kind: "container".into(),
            bom_ref: r.clone(),
            name: img.name.clone(),
            version: Some(tag.unwrap_or_else(|| img.digest.clone())),
            purl: Some(purl),
            properties,
            ..Default::default()
        });
        bundle_deps.push(r);
    }

    let mut meta_props = vec![prop("bale:arch", input.arch.as_str())];
    if let Some(p) = &input.platform {
        meta_props.push(prop("bale:platform", p.as_str()));
    }
    if let Some(k) = &input.kubernetes_version {
        meta_props.push(prop("bale:kubernetes:version", k.as_str()));
    }
    let mut below: Option<String> = None;
    for (k, b) in input.bases.iter().enumerate() {
        let r = format!("base:{}", b.digest);
        if let Some(older) = below.take() {
            g.depend(&r, [older]);
        }
        components.push(Component {
            kind: "application".into(),
            bom_ref: r.clone(),
            name: b.name.clone(),
            version: Some(b.version.clone()),
            properties: vec![
                prop("bale:base:header-digest", b.digest.as_str()),
                prop("bale:base:depth", (input.bases.len() - k).to_string()),
            ],
            ..Default::default()
        });
        below = Some(r);
    }
    if let Some(b) = input.bases.last() {
        meta_props.push(prop("bale:base:name", b.name.as_str()));
        meta_props.push(prop("bale:base:version", b.version.as_str()));
        meta_props.push(prop("bale:base:header-digest", b.digest.as_str()));
    }
    if let Some(newest) = below {
        bundle_deps.push(newest);
    }
    g.depend(BUNDLE_REF, bundle_deps);

    summary.go_modules = g
        .origins
        .keys()
        .filter(|r| r.starts_with("pkg:golang/"))
        .count();
    summary.deb_packages = g
        .origins
        .keys()
        .filter(|r| r.starts_with("pkg:deb/"))
        .count();
    components.extend(std::mem::take(&mut g.origins).into_values());
    summary.components = components.len();

    let mut dependencies: Vec<Dependency> = g
        .deps
        .into_iter()
        .map(|(reference, to)| Dependency {
            reference,
            depends_on: to.into_iter().collect(),
        })
        .collect();
    dependencies.sort_by(|a, b| a.reference.cmp(&b.reference));

    let mut bom = Bom {
        bom_format: "CycloneDX".into(),
        spec_version: "1.5".into(),
        serial_number: None,
        version: 1,
        metadata: Metadata {
            timestamp: input.timestamp.clone(),
            tools: Some(Tools {
                components: vec![Component {
                    kind: "application".into(),
                    name: "bale".into(),
                    version: Some(env!("CARGO_PKG_VERSION").into()),
                    ..Default::default()
                }],
            }),
            component: Some(Component {
                kind: "application".into(),
                bom_ref: BUNDLE_REF.into(),
                name: input.name.clone(),
                version: Some(input.version.clone()),
                ..Default::default()
            }),
            properties: meta_props,
        },
        components,
        dependencies,
    };
    let unserialized = serde_json::to_vec(&bom)?;
    bom.serial_number = Some(uuid_of(&format::sha256(&unserialized)));
    let mut out = serde_json::to_vec_pretty(&bom)?;
    out.push(b'\n');
    summary.bytes = out.len() as u64;
    Ok((out, summary))
}

/// A UUID in the name-based layout (version 5 bits, RFC 4122 variant) from a SHA-256: the
/// schema asks for versions 1 to 5, and the content decides it.
fn uuid_of(d: &[u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind, mode: u32, data: &[u8]) -> EntryInfo {
        EntryInfo {
            path: path.into(),
            kind,
            mode,
            size: data.len() as u64,
            sha256: format::sha256(data),
        }
    }

    #[test]
    fn the_same_input_gives_the_same_bytes_and_serial() {
        let d = tempfile::tempdir().unwrap();
        let status = b"Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n";
        std::fs::create_dir_all(d.path().join("var/lib/dpkg/status.d")).unwrap();
        std::fs::write(d.path().join("var/lib/dpkg/status.d/tzdata"), status).unwrap();
        let entries = vec![
            entry("b", Kind::File, 0o644, b"bee"),
            entry(
                "a",
                Kind::File,
                0o755,
                b"#!/bin/sh\necho an ordinary script, no ELF here\n",
            ),
            entry("var/lib/dpkg/status.d/tzdata", Kind::File, 0o644, status),
            entry("dir", Kind::Dir, 0o755, b""),
        ];
        let root = d.path().to_path_buf();
        let src = move |p: &str| Some(Source::Disk(root.join(p)));
        let input = Input {
            name: "app".into(),
            version: "1.0".into(),
            arch: "x86_64".into(),
            kubernetes_version: Some("v1.36.3".into()),
            bases: vec![BaseRef {
                name: "kubernetes".into(),
                version: "v1.36.3".into(),
                digest: format!("sha256:{}", "ab".repeat(32)),
            }],
            ..Default::default()
        };
        let (one, s) = document(&input, &entries, &src).unwrap();
        let mut reversed = entries.clone();
        reversed.reverse();
        let (two, _) = document(&input, &reversed, &src).unwrap();
        assert_eq!(one, two);
        assert_eq!(s.deb_packages, 1);
        let v: serde_json::Value = serde_json::from_slice(&one).unwrap();
        let serial = v["serialNumber"].as_str().unwrap();
        assert!(
            serial.starts_with("urn:uuid:") && serial.as_bytes()[23] == b'5',
            "{serial}"
        );
        assert!(v["metadata"].get("timestamp").is_none());
        let names: Vec<&str> = v["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "a",
                "b",
                "var/lib/dpkg/status.d/tzdata",
                "kubernetes",
                "tzdata"
            ]
        );
        // A different file gives another serial number.
        let mut other = entries.clone();
        other[0] = entry("b", Kind::File, 0o644, b"bea");
        let (three, _) = document(&input, &other, &src).unwrap();
        let v3: serde_json::Value = serde_json::from_slice(&three).unwrap();
        assert_ne!(v3["serialNumber"], v["serialNumber"]);

        // The base's findings are taken over for the same content, without reading it.
        let with_base = Input {
            base_sbom: Some(one.clone()),
            ..input.clone()
        };
        let nowhere = |_: &str| None;
        let (four, s4) = document(&with_base, &entries, &nowhere).unwrap();
        assert_eq!(s4.reused, 1);
        assert_eq!(s4.deb_packages, 1);
        assert_eq!(four, one);
    }

    #[test]
    fn a_binary_of_a_dpkg_tree_names_its_package() {
        let d = tempfile::tempdir().unwrap();
        let files: [(&str, &[u8], u32); 4] = [
            (
                "rootfs/var/lib/dpkg/status",
                b"Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\n\
                  Architecture: amd64\n",
                0o644,
            ),
            (
                "rootfs/var/lib/dpkg/info/bash.list",
                b"/.\n/bin\n/bin/bash\n/usr/share/doc/bash/README\n",
                0o644,
            ),
            (
                "rootfs/bin/bash",
                b"\x7fELF but not really a program, only a stand-in",
                0o755,
            ),
            ("rootfs/usr/share/doc/bash/README", b"docs", 0o644),
        ];
        let mut entries = Vec::new();
        for (p, data, mode) in files {
            let at = d.path().join(p);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(&at, data).unwrap();
            entries.push(entry(p, Kind::File, mode, data));
        }
        let root = d.path().to_path_buf();
        let src = move |p: &str| Some(Source::Disk(root.join(p)));
        let (doc, s) = document(&Input::default(), &entries, &src).unwrap();
        assert_eq!(s.deb_packages, 1);
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        let deps = |r: &str| -> Vec<String> {
            v["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["ref"] == r)
                .map(|d| serde_json::from_value(d["dependsOn"].clone()).unwrap())
                .unwrap_or_default()
        };
        let bash = "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64";
        assert_eq!(deps("file:rootfs/bin/bash"), [bash]);
        assert_eq!(deps("file:rootfs/var/lib/dpkg/status"), [bash]);
        // Documentation is not a binary: no dependency listed for it.
        assert!(deps("file:rootfs/usr/share/doc/bash/README").is_empty());
    }

    /// A gzip layer with a Go binary and a Debian status file, on disk.
    fn go_layer(dir: &std::path::Path) -> (PathBuf, [u8; 32]) {
        let text = "path\texample.com/cmd/srv\nmod\texample.com\tv1.0.0\t\n";
        let mut elf = b"\x7fELF".to_vec();
        elf.resize(4096, 0);
        elf.extend_from_slice(&gobuild::tests::section("go1.24.1", text));
        let mut b = tar::Builder::new(Vec::new());
        for (p, data, mode) in [
            ("bin/srv", &elf[..], 0o755),
            (
                "var/lib/dpkg/status.d/base",
                &b"Package: base\nVersion: 1\nArchitecture: all\n"[..],
                0o644,
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_cksum();
            b.append_data(&mut h, p, data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let at = dir.join("layer");
        std::fs::write(&at, &gz).unwrap();
        (at, format::sha256(&gz))
    }

    fn findings_of(r: Result<Scan, ScanError>) -> (bool, Vec<Property>, Vec<Component>) {
        let (cached, scan) = match r {
            Ok(Scan::Layer(s)) => (false, s),
            Ok(Scan::CachedLayer(s)) => (true, s),
            _ => panic!("not a layer's findings"),
        };
        let f = layer_findings(&scan);
        (cached, f.properties, f.origins)
    }

    #[test]
    fn a_cached_layer_gives_the_same_findings_and_a_damaged_entry_is_scanned_again() {
        let d = tempfile::tempdir().unwrap();
        let (path, sha256) = go_layer(d.path());
        let cache = LayerCache::new(d.path().join("sbom"));
        let job = Job::Layer(dpkg::Codec::Gzip, sha256);
        let src = Source::Disk(path.clone());

        let (cached, props, origins) = findings_of(run_job(job, &src, Some(&cache)));
        assert!(!cached);
        assert_eq!(props.len(), 1, "{props:?}");
        assert!(origins.iter().any(|o| o.name == "base"));
        let again = findings_of(run_job(job, &src, Some(&cache)));
        assert_eq!(again, (true, props.clone(), origins.clone()));

        // A damaged entry is ignored: the layer is read again and the entry replaced.
        let entry = d
            .path()
            .join("sbom")
            .join(format!("{}.json", format::hex(&sha256)));
        std::fs::write(&entry, b"{\"version\":").unwrap();
        let rescanned = findings_of(run_job(job, &src, Some(&cache)));
        assert_eq!(rescanned, (false, props.clone(), origins.clone()));
        assert!(cache.get(&sha256, dpkg::Codec::Gzip).is_some());

        // Filling the cache ahead scans only what it lacks.
        std::fs::remove_file(&entry).unwrap();
        let blob = LayerBlob {
            digest: format!("sha256:{}", format::hex(&sha256)),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: std::fs::metadata(&path).unwrap().len(),
            path,
        };
        assert_eq!(fill_layer_cache(&cache, std::slice::from_ref(&blob)), 1);
        assert_eq!(fill_layer_cache(&cache, std::slice::from_ref(&blob)), 0);
        let from_cache = findings_of(run_job(job, &src, Some(&cache)));
        assert_eq!(from_cache, (true, props, origins));
    }

    #[test]
    fn a_layer_file_that_is_not_its_digest_leaves_nothing_in_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let (path, sha256) = go_layer(d.path());
        let cache = LayerCache::new(d.path().join("sbom"));
        let mut other = sha256;
        other[0] ^= 1;
        let r = run_job(
            Job::Layer(dpkg::Codec::Gzip, other),
            &Source::Disk(path),
            Some(&cache),
        );
        assert!(
            matches!(&r, Err(ScanError::NotTheLayer { .. })),
            "{:?}",
            r.as_ref().err()
        );
        assert!(cache.get(&other, dpkg::Codec::Gzip).is_none());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp_of("@0").unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp_of("@1796428800").unwrap(), "2026-12-05T00:00:00Z");
        assert_eq!(timestamp_of("@951782400").unwrap(), "2000-02-29T00:00:00Z");
        assert!(timestamp_of("yesterday").is_none());
    }

    #[test]
    fn image_purls_follow_the_oci_type() {
        let img = ImageRecord {
            name: "registry.k8s.io/kube-apiserver:v1.36.3".into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            platform: "linux/amd64".into(),
            size: 1,
        };
        let (purl, tag) = image_purl(&img);
        assert_eq!(
            purl,
            format!(
                "pkg:oci/kube-apiserver@sha256%3A{}?arch=amd64&repository_url=registry.k8s.io/kube-apiserver&tag=v1.36.3",
                "0".repeat(64)
            )
        );
        assert_eq!(tag.as_deref(), Some("v1.36.3"));
    }
}
