//! Whole bundles through any OCI distribution registry: `bale push` and `bale pull`.
//!
//! A bundle is stored as an OCI artifact: an image manifest with artifact type
//! [`ARTIFACT_TYPE`], the empty config, and the bundle file cut in order into chunk blobs of
//! [`CHUNK_SIZE`] bytes (the last one shorter). Chunks make the transfer parallel and
//! resumable: a push asks the registry for each chunk's blob before sending it (so what a cut
//! push already stored is not sent again), and a pull keeps the chunks of `OUT.part` whose
//! bytes already match their digests. The signature travels inside the file, so it needs no
//! artifact of its own; the SBOM entry, when the bundle has one, is also pushed as a referrer
//! (a manifest whose `subject` is the bundle's), through the referrers API where the registry
//! has it and through the `sha256-<hex>` tag of an index where it has not.
//!
//! A pull trusts nothing the registry says: the manifest is bounded and checked (types, sizes
//! that add up to the announced bundle size), every chunk is checked against its digest as it
//! arrives, and the assembled file is verified like `bale verify` does before it gets its
//! final name.

mod error;

pub use error::{Result, ShareError};

use crate::imageref::ImageRef;
use crate::images::oci::{self, Descriptor, OCI_INDEX, OCI_MANIFEST};
use crate::images::registry::auth::{Credentials, DockerConfig};
use crate::images::registry::{Body, Connection, Registry, RetryPolicy};
use crate::images::ImagesError;
use crate::store::{BundleStore, StoreError, Stored};
use bale_payload::Bundle;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The artifact type of a pushed bundle.
pub const ARTIFACT_TYPE: &str = "application/vnd.bale.bundle.v1";
/// The media type of each chunk blob.
pub const CHUNK_MEDIA_TYPE: &str = "application/vnd.bale.bundle.chunk.v1";
/// The OCI empty descriptor's media type and content, used as the config.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_JSON: &[u8] = b"{}";
/// The artifact type of the SBOM referrer.
pub const SBOM_ARTIFACT_TYPE: &str = "application/vnd.cyclonedx+json";

pub const ANNOTATION_NAME: &str = "io.bale.bundle.name";
pub const ANNOTATION_VERSION: &str = "io.bale.bundle.version";
pub const ANNOTATION_ARCH: &str = "io.bale.bundle.arch";
pub const ANNOTATION_ROOT: &str = "io.bale.bundle.root";
pub const ANNOTATION_SIZE: &str = "io.bale.bundle.size";
/// The SHA256 fingerprints of the keys whose signatures in the bundle verify over its root,
/// comma-separated; absent for an unsigned bundle. For registry clients to see; `pull` checks
/// the signatures themselves, which travel inside the file.
pub const ANNOTATION_SIGNERS: &str = "io.bale.bundle.signers";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// Bytes per chunk blob. 64 MiB: large enough that the three requests a chunk costs (HEAD,
/// POST, PUT) are lost in its transfer time even on a LAN, and that a 20 GiB bundle stays
/// near 300 layers (some registries limit layer counts); small enough that a 1 GiB bundle
/// gives 16 chunks to share among the parallel transfers and that a cut loses at most one
/// chunk per transfer. Memory does not depend on it: chunks are streamed from and to disk.
pub const CHUNK_SIZE: u64 = 64 << 20;

/// A pulled manifest announcing more than this is refused (1 TiB).
pub const MAX_BUNDLE_SIZE: u64 = 1 << 40;
/// A pulled manifest with more chunks than this is refused.
pub const MAX_CHUNKS: usize = 1 << 16;
/// The SBOM entry is read into memory to push it; larger ones are not pushed as a referrer.
const MAX_SBOM_LEN: u64 = 64 << 20;

/// An OCI image manifest, as far as an artifact needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How to reach the registry and how much to do at once.
#[derive(Debug, Clone)]
pub struct ShareOptions {
    pub connection: Connection,
    /// Credentials given on the command line; otherwise Docker's config is asked.
    pub credentials: Option<Credentials>,
    /// Directory holding Docker's `config.json`; `None` uses `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config: Option<PathBuf>,
    /// Chunks transferred at once.
    pub jobs: usize,
    pub retry: RetryPolicy,
    /// Show a progress bar (only ever on a terminal).
    pub progress: bool,
    /// Threads for the final verification of a pull.
    pub verify_threads: usize,
    /// Bytes per chunk of a push ([`CHUNK_SIZE`]; tests use less to get many chunks).
    pub chunk_size: u64,
    /// The keys a pulled bundle must be signed by (when configured), checked before it gets
    /// its final name, as `bale verify` checks them.
    pub trust: bale_trust::TrustPolicy,
}

impl Default for ShareOptions {
    fn default() -> Self {
        ShareOptions {
            connection: Connection::default(),
            credentials: None,
            docker_config: None,
            jobs: 4,
            retry: RetryPolicy::default(),
            progress: true,
            verify_threads: bale_payload::default_threads(),
            chunk_size: CHUNK_SIZE,
            trust: bale_trust::TrustPolicy::default(),
        }
    }
}

/// Parses `REGISTRY/ns/name:tag` (or `@sha256:…`).
pub fn parse_reference(s: &str) -> Result<ImageRef> {
    Ok(ImageRef::parse(s).map_err(ImagesError::from)?)
}

/// Whether `word` reads as a registry reference with an explicit host: its first path
/// component has a dot or a colon, or is `localhost`, and it has a name after it. Used by
/// `FROM`, where a plain word is a directory.
pub fn looks_like_registry_ref(word: &str) -> bool {
    let Some((host, rest)) = word.split_once('/') else {
        return false;
    };
    if rest.is_empty() || host.is_empty() || host.chars().all(|c| c == '.') {
        return false;
    }
    (host.contains('.') || host.contains(':') || host.eq_ignore_ascii_case("localhost"))
        && ImageRef::parse(word).is_ok_and(|r| r.domain == host)
}

/// A client for the registry of `r`, with the credentials the options or Docker's config give.
pub fn registry_for(r: &ImageRef, opts: &ShareOptions) -> Result<Registry> {
    let config = DockerConfig::load(opts.docker_config.as_deref())?;
    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => config.credentials(&r.domain)?,
    };
    Ok(Registry::connect(
        &r.domain,
        &opts.connection,
        creds,
        config.path().display().to_string(),
        opts.retry.clone(),
    )?)
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The bundle manifest's digest.
    pub digest: String,
    pub size: u64,
    pub chunks: usize,
    /// Chunks sent now; the others were in the registry already.
    pub uploaded: usize,
    pub bytes_uploaded: u64,
    /// The SBOM referrer's manifest digest, when the bundle has an SBOM.
    pub sbom: Option<String>,
    /// How the referrer is found: `referrers API` or `tag sha256-…`.
    pub referrers: Option<String>,
}

fn bar(total: u64, verb: &str, show: bool) -> indicatif::ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>10} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(verb.to_string());
    b
}

/// Runs `work(i)` for `0..count` on `jobs` threads, in order of `i`; the first failure stops
/// the others from starting new items and is returned.
fn parallel<F>(count: usize, jobs: usize, work: F) -> Result<()>
where
    F: Fn(usize) -> Result<()> + Sync,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first: Mutex<Option<(usize, ShareError)>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 32).min(count.max(1)) {
            s.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return;
                }
                if let Err(e) = work(i) {
                    failed.store(true, Ordering::SeqCst);
                    if let Ok(mut f) = first.lock() {
                        // The earliest chunk's failure is the one to report.
                        if f.as_ref().is_none_or(|(j, _)| i < *j) {
                            *f = Some((i, e));
                        }
                    }
                    return;
                }
            });
        }
    });
    match first.into_inner() {
        Ok(Some((_, e))) => Err(e),
        _ => Ok(()),
    }
}

/// `sha256:<hex>` of `len` bytes of `file` from `offset`.
fn hash_range(file: &File, path: &Path, offset: u64, len: u64) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let want = (end - pos).min(buf.len() as u64) as usize;
        let n = file
            .read_at(&mut buf[..want], pos)
            .map_err(|e| ShareError::io(path, e))?;
        if n == 0 {
            return Err(ShareError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the file ends at {pos} bytes, before {end}"),
                ),
            ));
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

fn empty_descriptor() -> Descriptor {
    Descriptor::new(
        EMPTY_MEDIA_TYPE,
        oci::sha256_digest(EMPTY_JSON),
        EMPTY_JSON.len() as u64,
    )
}

/// Uploads a small blob unless the registry has it.
fn ensure_small_blob(reg: &Registry, repo: &str, d: &Descriptor, data: &[u8]) -> Result<()> {
    if reg.blob_size(repo, &d.digest)?.is_none() {
        reg.upload_blob(
            repo,
            &d.digest,
            &Body::Bytes {
                data,
                content_type: "application/octet-stream",
            },
        )?;
    }
    Ok(())
}

/// The tag a push stores the manifest under.
fn push_tag(r: &ImageRef) -> Result<String> {
    if r.digest.is_some() {
        return Err(ShareError::Invalid {
            what: r.original.clone(),
            message: "a push needs a tag, not a digest (REGISTRY/ns/name:tag)".into(),
        });
    }
    Ok(r.effective_tag().unwrap_or("latest").to_string())
}

/// Pushes the bundle `file` to `r`.
pub fn push(file: &Path, r: &ImageRef, opts: &ShareOptions) -> Result<PushReport> {
    let tag = push_tag(r)?;
    let bundle = Bundle::open(file)?;
    let reg = registry_for(r, opts)?;
    let repo = r.path.as_str();
    let registry = reg.domain().to_string();
    let f = File::open(file).map_err(|e| ShareError::io(file, e))?;
    let size = f.metadata().map_err(|e| ShareError::io(file, e))?.len();
    if size != bundle.trailer.file_len {
        return Err(ShareError::Invalid {
            what: file.display().to_string(),
            message: format!(
                "{size} bytes, but its trailer says {}; the file changed while it was read",
                bundle.trailer.file_len
            ),
        });
    }
    let chunk = opts.chunk_size.max(1);
    let count = size.div_ceil(chunk) as usize;
    let digests: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; count]);
    let uploaded = AtomicUsize::new(0);
    let bytes_uploaded = AtomicU64::new(0);
    let progress = bar(size, "pushing", opts.progress);
    parallel(count, opts.jobs, |i| {
        let offset = i as u64 * chunk;
        let len = chunk.min(size - offset);
        let digest = hash_range(&f, file, offset, len)?;
        let blob_err = |cause: ImagesError| ShareError::Blob {
            digest: digest.clone(),
            index: i + 1,
            count,
            registry: registry.clone(),
            cause: Box::new(cause),
        };
        let there = reg.blob_size(repo, &digest).map_err(blob_err)?;
        if there.is_some() {
            progress.inc(len);
        } else {
            let sent = AtomicU64::new(0);
            reg.upload_blob(
                repo,
                &digest,
                &Body::File {
                    file: &f,
                    offset,
                    len,
                    sent: &sent,
                    bar: &progress,
                },
            )
            .map_err(blob_err)?;
            uploaded.fetch_add(1, Ordering::Relaxed);
            bytes_uploaded.fetch_add(len, Ordering::Relaxed);
        }
        if let Ok(mut d) = digests.lock() {
            d[i] = Some(digest);
        }
        Ok(())
    })?;
    progress.finish_and_clear();

    let digests = digests.into_inner().unwrap_or_default();
    let mut layers = Vec::with_capacity(count);
    for (i, d) in digests.into_iter().enumerate() {
        let offset = i as u64 * chunk;
        let digest = d.ok_or_else(|| ShareError::Invalid {
            what: file.display().to_string(),
            message: format!("chunk {} was not pushed", i + 1),
        })?;
        layers.push(Descriptor::new(
            CHUNK_MEDIA_TYPE,
            digest,
            chunk.min(size - offset),
        ));
    }
    let config = empty_descriptor();
    ensure_small_blob(&reg, repo, &config, EMPTY_JSON)?;

    let h = &bundle.header;
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_NAME.to_string(), h.name.clone());
    annotations.insert(ANNOTATION_VERSION.to_string(), h.version.clone());
    annotations.insert(ANNOTATION_ARCH.to_string(), h.arch.clone());
    annotations.insert(
        ANNOTATION_ROOT.to_string(),
        hex::encode(bundle.trailer.header_sha256),
    );
    annotations.insert(ANNOTATION_SIZE.to_string(), size.to_string());
    let signers = bale_trust::policy::signers(&bundle).map_err(|source| ShareError::Trust {
        path: file.to_path_buf(),
        source,
    })?;
    if !signers.is_empty() {
        let fps: Vec<&str> = signers.iter().map(|s| s.fingerprint.as_str()).collect();
        annotations.insert(ANNOTATION_SIGNERS.to_string(), fps.join(","));
    }
    if let Some(name) = file.file_name() {
        annotations.insert(
            ANNOTATION_TITLE.to_string(),
            name.to_string_lossy().into_owned(),
        );
    }
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: Some(ARTIFACT_TYPE.to_string()),
        config,
        layers,
        subject: None,
        annotations,
    };
    let body = to_json(&manifest)?;
    let digest = reg.put_manifest(repo, &tag, OCI_MANIFEST, &body)?;
    let subject = Descriptor::new(OCI_MANIFEST, digest.clone(), body.len() as u64);

    let (sbom, referrers) = match sbom_bytes(&bundle)? {
        Some(data) => {
            let (d, how) = push_sbom(&reg, repo, &subject, &data)?;
            (Some(d), Some(how))
        }
        None => (None, None),
    };
    Ok(PushReport {
        digest,
        size,
        chunks: count,
        uploaded: uploaded.into_inner(),
        bytes_uploaded: bytes_uploaded.into_inner(),
        sbom,
        referrers,
    })
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ShareError::Invalid {
        what: "manifest".into(),
        message: e.to_string(),
    })
}

/// The SBOM entry's content, when the bundle has one of a sane size.
fn sbom_bytes(bundle: &Bundle) -> Result<Option<Vec<u8>>> {
    let entries = bundle.entries()?;
    let Some(e) = entries
        .iter()
        .find(|e| e.path == bale_contract::SBOM_ENTRY && e.kind == bale_payload::Kind::File)
    else {
        return Ok(None);
    };
    if e.size > MAX_SBOM_LEN {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(e.size as usize);
    bundle
        .open_entry(e)?
        .take(MAX_SBOM_LEN + 1)
        .read_to_end(&mut data)
        .map_err(|err| ShareError::io(bundle.path(), err))?;
    Ok(Some(data))
}

/// Pushes the SBOM as a referrer of `subject`; returns its manifest digest and how clients
/// find it.
fn push_sbom(
    reg: &Registry,
    repo: &str,
    subject: &Descriptor,
    data: &[u8],
) -> Result<(String, String)> {
    let blob = Descriptor::new(
        SBOM_ARTIFACT_TYPE,
        oci::sha256_digest(data),
        data.len() as u64,
    );
    ensure_small_blob(reg, repo, &blob, data)?;
    let config = empty_descriptor();
    ensure_small_blob(reg, repo, &config, EMPTY_JSON)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        ANNOTATION_TITLE.to_string(),
        bale_contract::SBOM_ENTRY
            .trim_start_matches(".bale/")
            .to_string(),
    );
    let mut layer = blob;
    layer.annotations = annotations.clone();
    let m = ArtifactManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: Some(SBOM_ARTIFACT_TYPE.to_string()),
        config,
        layers: vec![layer],
        subject: Some(subject.clone()),
        annotations: BTreeMap::new(),
    };
    let body = to_json(&m)?;
    let digest = oci::sha256_digest(&body);
    reg.put_manifest(repo, &digest, OCI_MANIFEST, &body)?;
    if reg.has_referrers_api(repo, &subject.digest)? {
        return Ok((digest, "referrers API".into()));
    }
    // The OCI 1.1 fallback: an index under the tag `sha256-<hex>` of the subject lists its
    // referrers. Other referrers already there are kept.
    let tag = subject.digest.replacen(':', "-", 1);
    let mut index = match reg.manifest_if_any(repo, &tag)? {
        Some((bytes, _)) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .filter(|v| v.get("manifests").is_some_and(serde_json::Value::is_array))
            .unwrap_or_else(empty_index),
        None => empty_index(),
    };
    let entry = serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": body.len(),
        "artifactType": SBOM_ARTIFACT_TYPE,
    });
    if let Some(list) = index
        .get_mut("manifests")
        .and_then(serde_json::Value::as_array_mut)
    {
        if !list
            .iter()
            .any(|m| m.get("digest").and_then(serde_json::Value::as_str) == Some(&digest))
        {
            list.push(entry);
        }
    }
    let bytes = to_json(&index)?;
    reg.put_manifest(repo, &tag, OCI_INDEX, &bytes)?;
    Ok((digest, format!("tag {tag}")))
}

fn empty_index() -> serde_json::Value {
    serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
}

/// A bundle artifact found in a registry, checked, not yet downloaded.
#[derive(Debug, Clone)]
pub struct Remote {
    /// As the user wrote it.
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    pub manifest: ArtifactManifest,
    /// Total bytes (the sum of the chunks, equal to the announced size).
    pub size: u64,
}

impl Remote {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.manifest.annotations.get(key).map(String::as_str)
    }
}

/// Fetches and checks the manifest `r` names.
pub fn resolve(reg: &Registry, r: &ImageRef) -> Result<Remote> {
    let reference = r
        .digest
        .clone()
        .or_else(|| r.effective_tag().map(str::to_string))
        .unwrap_or_else(|| "latest".into());
    let (body, ctype) = match reg.manifest_if_any(&r.path, &reference)? {
        Some(m) => m,
        None => {
            return Err(ShareError::manifest(
                &r.original,
                format!(
                    "not found in registry {} (push it with `bale push FILE {}`)",
                    reg.domain(),
                    r.original
                ),
            ))
        }
    };
    let digest = oci::sha256_digest(&body);
    let manifest = check_manifest(&r.original, &body, ctype.as_deref())?;
    let size = manifest.layers.iter().map(|l| l.size).sum();
    Ok(Remote {
        reference: r.original.clone(),
        digest,
        manifest,
        size,
    })
}

/// Parses a bundle manifest and checks everything a pull relies on.
pub fn check_manifest(
    reference: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<ArtifactManifest> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ShareError::manifest(reference, format!("the manifest is not valid JSON: {e}"))
    })?;
    if v.get("manifests").is_some() {
        return Err(ShareError::manifest(
            reference,
            "an image index, not a bale bundle (bundles are stored with `bale push`)",
        ));
    }
    let m: ArtifactManifest = serde_json::from_value(v).map_err(|e| {
        ShareError::manifest(reference, format!("not a bale bundle's manifest: {e}"))
    })?;
    let media_type = m.media_type.as_deref().or(content_type).unwrap_or_default();
    if m.schema_version != 2 || media_type != OCI_MANIFEST {
        return Err(ShareError::manifest(
            reference,
            format!(
                "not an OCI image manifest (schemaVersion {}, mediaType {media_type:?})",
                m.schema_version
            ),
        ));
    }
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(ShareError::manifest(
            reference,
            format!(
                "not a bale bundle: artifactType is {:?}, expected {ARTIFACT_TYPE:?} (bundles \
                 are stored with `bale push`)",
                m.artifact_type.as_deref().unwrap_or("absent")
            ),
        ));
    }
    if m.layers.is_empty() || m.layers.len() > MAX_CHUNKS {
        return Err(ShareError::manifest(
            reference,
            format!("{} chunks; a bundle has 1 to {MAX_CHUNKS}", m.layers.len()),
        ));
    }
    let mut total: u64 = 0;
    for (i, l) in m.layers.iter().enumerate() {
        if l.media_type != CHUNK_MEDIA_TYPE {
            return Err(ShareError::manifest(
                reference,
                format!(
                    "layer {} has media type {:?}, expected {CHUNK_MEDIA_TYPE:?}",
                    i + 1,
                    l.media_type
                ),
            ));
        }
        oci::check_digest(&format!("{reference} layer {}", i + 1), &l.digest)?;
        if l.size == 0 {
            return Err(ShareError::manifest(
                reference,
                format!("layer {} ({}) is empty", i + 1, l.digest),
            ));
        }
        total = total
            .checked_add(l.size)
            .filter(|t| *t <= MAX_BUNDLE_SIZE)
            .ok_or_else(|| {
                ShareError::manifest(
                    reference,
                    format!("the chunks add up to more than {MAX_BUNDLE_SIZE} bytes; refused"),
                )
            })?;
    }
    let announced = m
        .annotations
        .get(ANNOTATION_SIZE)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            ShareError::manifest(
                reference,
                format!("the manifest has no numeric {ANNOTATION_SIZE} annotation"),
            )
        })?;
    if announced != total {
        return Err(ShareError::manifest(
            reference,
            format!(
                "the chunks add up to {total} bytes, but {ANNOTATION_SIZE} says {announced}; \
                 the manifest points at blobs of another size"
            ),
        ));
    }
    if let Some(root) = m.annotations.get(ANNOTATION_ROOT) {
        if root.len() != 64 || !root.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ShareError::manifest(
                reference,
                format!("{ANNOTATION_ROOT} {root:?} is not 64 hex digits"),
            ));
        }
    }
    Ok(m)
}

/// `OUT.part`, beside `OUT`: where a pull assembles the file.
pub fn part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    out.with_file_name(name)
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub digest: String,
    pub size: u64,
    pub chunks: usize,
    /// Chunks downloaded now; the others were already right in `OUT.part`.
    pub fetched: usize,
    pub bytes_fetched: u64,
    pub name: String,
    pub version: String,
    /// The signature verdict in plain words ("signed by ...", "unsigned").
    pub signature: String,
}

/// Downloads `remote` to `out`: chunks into `OUT.part` (keeping those already right), then
/// the whole file verified, synced and renamed to `out`.
pub fn fetch(
    reg: &Registry,
    repo: &str,
    remote: &Remote,
    out: &Path,
    opts: &ShareOptions,
) -> Result<PullReport> {
    let part = part_path(out);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
        .map_err(|e| ShareError::io(&part, e))?;
    let had = f.metadata().map_err(|e| ShareError::io(&part, e))?.len();
    f.set_len(remote.size)
        .map_err(|e| ShareError::io(&part, e))?;
    let layers = &remote.manifest.layers;
    let count = layers.len();
    let mut offsets = Vec::with_capacity(count);
    let mut at = 0u64;
    for l in layers {
        offsets.push(at);
        at += l.size;
    }
    let registry = reg.domain().to_string();
    let fetched = AtomicUsize::new(0);
    let bytes_fetched = AtomicU64::new(0);
    let progress = bar(remote.size, "pulling", opts.progress);
    parallel(count, opts.jobs, |i| {
        let l = &layers[i];
        let offset = offsets[i];
        // Bytes a cut pull left are kept when they are already right.
        if offset + l.size <= had && hash_range(&f, &part, offset, l.size)? == l.digest {
            progress.inc(l.size);
            return Ok(());
        }
        fetch_chunk(reg, repo, l, &f, &part, offset, &progress).map_err(|e| match e {
            ImagesError::Digest { actual, .. } => ShareError::Corrupt {
                digest: l.digest.clone(),
                index: i + 1,
                count,
                registry: registry.clone(),
                actual,
            },
            e => ShareError::Blob {
                digest: l.digest.clone(),
                index: i + 1,
                count,
                registry: registry.clone(),
                cause: Box::new(e),
            },
        })?;
        fetched.fetch_add(1, Ordering::Relaxed);
        bytes_fetched.fetch_add(l.size, Ordering::Relaxed);
        // Written back while the other chunks still arrive, so the final sync has little
        // left to do.
        f.sync_data().map_err(|e| ShareError::io(&part, e))?;
        Ok(())
    })?;
    progress.finish_and_clear();

    // Every byte again, through the bundle's own digest chain: the chunk digests only say
    // that the registry returned what was pushed. The sync runs meanwhile: both must be done
    // before the file gets its name.
    let bundle = Bundle::open(&part)?;
    let check = bar(bundle.trailer.file_len, "verifying", opts.progress);
    let (synced, verified) = std::thread::scope(|s| {
        let sync = s.spawn(|| f.sync_all());
        let verified =
            bale_payload::verify::verify(&bundle, opts.verify_threads, &|n| check.inc(n));
        (sync.join(), verified)
    });
    verified?;
    match synced {
        Ok(r) => r.map_err(|e| ShareError::io(&part, e))?,
        Err(_) => {
            return Err(ShareError::io(
                &part,
                std::io::Error::other("the sync thread failed"),
            ))
        }
    }
    drop(f);
    check.finish_and_clear();
    if let Some(root) = remote.annotation(ANNOTATION_ROOT) {
        let have = hex::encode(bundle.trailer.header_sha256);
        if !root.eq_ignore_ascii_case(&have) {
            return Err(ShareError::manifest(
                &remote.reference,
                format!(
                    "the bundle's root is {have}, but the manifest's {ANNOTATION_ROOT} says \
                     {root}; the artifact was tampered with"
                ),
            ));
        }
    }
    let signature = bale_trust::enforce(&bundle, &opts.trust)
        .map_err(|source| ShareError::Trust {
            path: out.to_path_buf(),
            source,
        })?
        .describe();
    let report = PullReport {
        digest: remote.digest.clone(),
        size: remote.size,
        chunks: count,
        fetched: fetched.into_inner(),
        bytes_fetched: bytes_fetched.into_inner(),
        name: bundle.header.name.clone(),
        version: bundle.header.version.clone(),
        signature,
    };
    drop(bundle);
    std::fs::rename(&part, out).map_err(|e| ShareError::io(out, e))?;
    if let Some(dir) = out.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(report)
}

/// Downloads one chunk to its place in `f`, checking its digest and size as it arrives.
fn fetch_chunk(
    reg: &Registry,
    repo: &str,
    l: &Descriptor,
    f: &File,
    part: &Path,
    offset: u64,
    progress: &indicatif::ProgressBar,
) -> std::result::Result<(), ImagesError> {
    reg.retry().run(|| {
        let resp = reg.blob_response(repo, &l.digest)?;
        let what = format!("blob {}", l.digest);
        // A registry that says how long the blob is settles a size mismatch at once; retrying
        // would not change it.
        if let Some(len) = resp
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if len != l.size {
                return Err(ImagesError::invalid(
                    &what,
                    format!(
                        "the registry has {len} bytes for it, but the manifest says {}: the                          manifest points at a blob of another size",
                        l.size
                    ),
                ));
            }
        }
        let mut reader = resp.into_reader().take(l.size + 1);
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        let r = (|| loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ImagesError::Read {
                        what: what.clone(),
                        message: format!("after {got} of {} bytes: {e}", l.size),
                    })
                }
            };
            if got + n as u64 > l.size {
                return Err(ImagesError::Digest {
                    what: what.clone(),
                    expected: l.digest.clone(),
                    actual: format!("(more than the {} bytes the manifest says)", l.size),
                });
            }
            f.write_all_at(&buf[..n], offset + got)
                .map_err(|e| ImagesError::Io {
                    path: part.to_path_buf(),
                    cause: e,
                })?;
            h.update(&buf[..n]);
            got += n as u64;
            progress.inc(n as u64);
        })();
        if let Err(e) = r {
            progress.dec(got);
            return Err(e);
        }
        if got < l.size {
            progress.dec(got);
            return Err(ImagesError::Read {
                what,
                message: format!("the registry sent {got} of {} bytes", l.size),
            });
        }
        let actual = format!("sha256:{}", hex::encode(h.finalize()));
        if actual != l.digest {
            return Err(ImagesError::Digest {
                what,
                expected: l.digest.clone(),
                actual,
            });
        }
        Ok(())
    })
}

/// Pulls `r` to `out` (see [`fetch`]).
pub fn pull(r: &ImageRef, out: &Path, opts: &ShareOptions) -> Result<PullReport> {
    let reg = registry_for(r, opts)?;
    let remote = resolve(&reg, r)?;
    fetch(&reg, &r.path, &remote, out, opts)
}

/// Where `FROM REGISTRY/ns/name:tag` bases are kept: the local bundle store
/// ([`BundleStore`]), tagged with their reference (a digest reference as the tag
/// `sha256-<hex>`) and remembering the manifest digest they were pulled as, so an unchanged
/// manifest is not pulled again and an offline build takes what the reference last resolved to.
/// One store for what is built here and what is pulled: `bale images` lists both.
pub struct BundleCache {
    store: BundleStore,
}

impl BundleCache {
    /// The bundle store's: [`BundleStore::default_dir`].
    pub fn default_dir() -> PathBuf {
        BundleStore::default_dir()
    }

    pub fn new(root: PathBuf) -> BundleCache {
        BundleCache {
            store: BundleStore::new(root),
        }
    }

    /// The store tag a pulled reference is kept under.
    fn tag_of(r: &ImageRef) -> String {
        match &r.digest {
            Some(d) => format!("{}:{}", r.name(), d.replace(':', "-")),
            None => r.normalized(),
        }
    }

    /// The stored bundle, checked (its digest and, against the keys trusted now, its
    /// signatures).
    fn checked(&self, stored: &Stored, opts: &ShareOptions) -> Result<PathBuf> {
        self.store.check(stored, &opts.trust).map_err(|e| match e {
            StoreError::Trust { path, source } => ShareError::Trust { path, source },
            e => ShareError::Store(e),
        })?;
        Ok(stored.path.clone())
    }

    /// The bundle `r` names: pulled unless the store has its manifest's digest; `offline`
    /// asks no registry and takes the digest `r` last resolved to.
    pub fn get(&self, r: &ImageRef, offline: bool, opts: &ShareOptions) -> Result<PathBuf> {
        let tag = Self::tag_of(r);
        if offline {
            let found = match &r.digest {
                Some(d) => self.store.pulled_as(d)?,
                None => self
                    .store
                    .resolve(&tag, None)?
                    .filter(|s| s.record.pulled_as.is_some()),
            };
            let stored = found.ok_or_else(|| ShareError::Invalid {
                what: r.original.clone(),
                message: format!(
                    "not in the bundle store {} and --offline forbids pulling it; build once \
                     online or `bale pull {} -o base.bale` and FROM that file",
                    self.store.root().display(),
                    r.original
                ),
            })?;
            return self.checked(&stored, opts);
        }
        let reg = registry_for(r, opts)?;
        let remote = resolve(&reg, r)?;
        if let Some(stored) = self.store.pulled_as(&remote.digest)? {
            let file = self.checked(&stored, opts)?;
            if stored.tag != tag {
                self.store.add_as(&file, &tag, Some(&remote.digest))?;
            }
            return Ok(file);
        }
        let hex = oci::digest_hex("bundle manifest", &remote.digest)?;
        let incoming = self.store.incoming(&format!("{hex}.bale"))?;
        fetch(&reg, &r.path, &remote, &incoming, opts)?;
        let record = self.store.add_as(&incoming, &tag, Some(&remote.digest))?;
        // The store has its own link (or copy) now.
        let _ = std::fs::remove_file(&incoming);
        Ok(self.store.file_for(record.hex()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json(layers: &[(u64, &str)], size: u64) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(
                |(s, d)| serde_json::json!({"mediaType": CHUNK_MEDIA_TYPE, "digest": d, "size": s}),
            )
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": oci::sha256_digest(b"{}"), "size": 2},
            "layers": layers,
            "annotations": {ANNOTATION_SIZE: size.to_string()},
        }))
        .unwrap()
    }

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_manifest_whose_chunks_add_up_is_accepted() {
        let m = check_manifest("r", &manifest_json(&[(10, D), (5, D)], 15), None).unwrap();
        assert_eq!(m.layers.len(), 2);
    }

    #[test]
    fn chunks_of_another_size_are_refused() {
        let e = check_manifest("r", &manifest_json(&[(10, D), (6, D)], 15), None).unwrap_err();
        assert!(e.to_string().contains("blobs of another size"), "{e}");
    }

    #[test]
    fn sizes_beyond_the_bound_are_refused() {
        let big = MAX_BUNDLE_SIZE;
        let e = check_manifest("r", &manifest_json(&[(big, D), (big, D)], 15), None).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }

    #[test]
    fn another_artifact_is_not_a_bundle() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&manifest_json(&[(1, D)], 1)).unwrap();
        v["artifactType"] = "application/vnd.example".into();
        let e = check_manifest("r", &serde_json::to_vec(&v).unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("not a bale bundle"), "{e}");
    }

    #[test]
    fn registry_words() {
        assert!(looks_like_registry_ref("127.0.0.1:5000/ns/base:1"));
        assert!(looks_like_registry_ref("localhost/ns/base"));
        assert!(looks_like_registry_ref("registry.example.com/base:1"));
        assert!(!looks_like_registry_ref("./rootfs"));
        assert!(!looks_like_registry_ref("../rootfs/x"));
        assert!(!looks_like_registry_ref("rootfs/sub"));
        assert!(!looks_like_registry_ref("base:1"));
    }

    #[test]
    fn part_file_is_beside_the_output() {
        assert_eq!(
            part_path(Path::new("out/app.bale")),
            PathBuf::from("out/app.bale.part")
        );
    }
}
