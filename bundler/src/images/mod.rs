//! Container images into bundles.
//!
//! [`collect`] brings every image a bundle needs into a local cache (an OCI image layout on
//! disk, see [`Cache`]): from OCI layouts and `docker save` / oci-archive tarballs in the
//! build context first (several of them may hold one name, each for its own platform), else
//! from the image's registry. Only the bundle's platform is fetched
//! from a multi-arch image, but its index is kept, so a reference by the index digest still
//! resolves. [`add_images_to_bundle`] then writes them into the bundle as the layout
//! `registry/`, each blob once. Images found in an OCI layout are the exception to the cache:
//! their blobs go into the bundle straight from the layout, so a build of many gigabytes of
//! images needs neither a second copy on disk nor the time to write it.

mod bundle;
mod cache;
mod error;
mod layout;
mod local;
pub mod oci;
pub mod registry;

pub use bundle::{
    add_images_merged, add_images_to_bundle, blob_files, BaseImages, ImagesSummary, REGISTRY_DIR,
};
pub use cache::Cache;
pub use error::{ImagesError, Result};
pub use local::ImageSource;
pub use oci::{Descriptor, Platform};
pub use registry::RetryPolicy;

use crate::imageref::ImageRef;
use local::OpenedSource;
use oci::{Parsed, MAX_CONFIG_LEN, MAX_MANIFEST_LEN};
use registry::auth::DockerConfig;
use registry::{Job, Registry};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// One image, collected into the cache for one platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedImage {
    /// The full normalized reference (`docker.io/library/busybox:1.36`): its name in bundles.
    pub name: String,
    /// What the name points at: the image index for a multi-arch image, else the manifest.
    pub descriptor: Descriptor,
    /// The chosen platform's manifest (the same as `descriptor` for a single-arch image).
    pub manifest: Descriptor,
    pub platform: Platform,
    /// Every blob the image needs in a bundle: index (if any), manifest, config, layers.
    pub blobs: Vec<Descriptor>,
    /// Where it came from: `registry 127.0.0.1:5000`, `docker-archive images/app.tar`.
    pub source: String,
    /// The OCI layout directory its blobs are read from when the bundle is written; `None`
    /// when they are in the image cache. A blob the layout lacks is looked for in the cache.
    pub layout: Option<PathBuf>,
}

impl ResolvedImage {
    /// What the bundle's manifest says of this image, under `name`.
    pub fn record(&self, name: &str) -> bale_contract::manifest::ImageRecord {
        bale_contract::manifest::ImageRecord {
            name: name.to_string(),
            digest: self.descriptor.digest.clone(),
            media_type: self.descriptor.media_type.clone(),
            platform: self.platform.to_string(),
            size: self.size(),
        }
    }

    /// Bytes of all its blobs.
    pub fn size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// How [`collect`] finds images.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The cache; `None` uses [`Cache::default_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Searched in order before any registry (see [`ImageSource::scan_dir`]).
    pub sources: Vec<ImageSource>,
    /// Whether registries may be contacted; without, images come from sources and the cache.
    pub pull: bool,
    /// Registries (`host[:port]`, as in image references) that may use plain HTTP or
    /// unverified TLS; `*` means all. Loopback registries always may.
    pub insecure_registries: Vec<String>,
    /// Directory holding Docker's `config.json`; `None` uses `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config: Option<PathBuf>,
    /// Layers downloaded at once.
    pub parallel: usize,
    pub retry: RetryPolicy,
    /// Show a progress bar while downloading (only ever on a terminal).
    pub progress: bool,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            cache_dir: None,
            sources: Vec::new(),
            pull: true,
            insecure_registries: Vec::new(),
            docker_config: None,
            parallel: 4,
            retry: RetryPolicy::default(),
            progress: true,
        }
    }
}

impl CollectOptions {
    fn insecure(&self, domain: &str) -> bool {
        self.insecure_registries
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(domain))
    }
}

/// Collects `refs` for `platform` into the cache, each from the first local source that has
/// it, else (for a reference pinned by digest) from the cache, else from its registry. The
/// result is in the order of `refs`, one per distinct normalized reference.
pub fn collect(
    refs: &[ImageRef],
    platform: &Platform,
    opts: &CollectOptions,
) -> Result<Vec<ResolvedImage>> {
    let cache = Cache::open(opts.cache_dir.clone().unwrap_or_else(Cache::default_dir))?;
    let mut opened: Vec<Option<OpenedSource>> = opts.sources.iter().map(|_| None).collect();
    let cached = OpenedSource::of_cache(&cache)?;
    let mut seen = HashSet::new();
    let mut out: Vec<Option<ResolvedImage>> = Vec::new();
    let mut to_pull: Vec<(usize, &ImageRef)> = Vec::new();

    'refs: for r in refs {
        let name = r.normalized();
        if !seen.insert(name.clone()) {
            continue;
        }
        let slot = out.len();
        out.push(None);
        // Several sources may hold one name for different platforms (a layout per
        // architecture): the first that has this platform wins.
        let mut other_platform = None;
        for (k, src) in opts.sources.iter().enumerate() {
            let o = match &mut opened[k] {
                Some(o) => o,
                empty => empty.insert(OpenedSource::open(src, &cache)?),
            };
            if let Some(entry) = o.find(r) {
                match o.import(&cache, entry, &name, platform) {
                    Ok(img) => {
                        out[slot] = Some(img);
                        continue 'refs;
                    }
                    Err(
                        e @ (ImagesError::NoPlatform { .. } | ImagesError::PlatformMismatch { .. }),
                    ) => {
                        other_platform.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if let Some(e) = other_platform {
            return Err(e);
        }
        // A digest names content for good, so the cache can answer for it; a tag may have
        // moved since, so only an offline build takes the cache's word for one.
        if r.digest.is_some() || !opts.pull {
            if let Some(entry) = cached.find(r) {
                match cached.import(&cache, entry, &name, platform) {
                    Ok(img) => {
                        out[slot] = Some(img);
                        continue 'refs;
                    }
                    Err(e) if !opts.pull => return Err(e),
                    Err(_) => {}
                }
            }
        }
        if !opts.pull {
            return Err(ImagesError::NotFound {
                image: name,
                message: "not in any local image source or the cache, and pulling is off".into(),
            });
        }
        to_pull.push((slot, r));
    }

    if !to_pull.is_empty() {
        let config = DockerConfig::load(opts.docker_config.as_deref())?;
        let mut registries: HashMap<String, Arc<Registry>> = HashMap::new();
        let mut jobs = Vec::new();
        let mut queued = HashSet::new();
        for (slot, r) in to_pull {
            let name = r.normalized();
            let reg = match registries.get(&r.domain) {
                Some(reg) => Arc::clone(reg),
                None => {
                    let creds = config.credentials(&r.domain)?;
                    let reg = Arc::new(Registry::new(
                        &r.domain,
                        opts.insecure(&r.domain),
                        creds,
                        config.path().display().to_string(),
                        opts.retry.clone(),
                    )?);
                    registries.insert(r.domain.clone(), Arc::clone(&reg));
                    reg
                }
            };
            let tree = reg
                .resolve(r, platform, &cache)
                .map_err(|e| e.for_image(&name))?;
            for l in &tree.layers {
                if !cache.has(l) && queued.insert(l.digest.clone()) {
                    jobs.push(Job {
                        registry: Arc::clone(&reg),
                        repo: r.path.clone(),
                        image: name.clone(),
                        blob: l.bare(),
                    });
                }
            }
            out[slot] = Some(tree.into_resolved(&name, &format!("registry {}", r.domain)));
        }
        registry::download(jobs, &cache, opts.parallel, opts.progress)?;
    }

    let images: Vec<ResolvedImage> = out.into_iter().flatten().collect();
    // Only what the cache holds whole is named in it: a layout's images stay in the layout.
    let named: Vec<(String, Descriptor)> = images
        .iter()
        .filter(|i| i.layout.is_none())
        .map(|i| (i.name.clone(), i.descriptor.bare()))
        .collect();
    cache.record(&named)?;
    Ok(images)
}

/// An image's blobs for one platform, as found by following its manifests.
#[derive(Debug, Clone)]
pub struct Tree {
    pub top: Descriptor,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub platform: Platform,
}

impl Tree {
    fn into_resolved(self, name: &str, source: &str) -> ResolvedImage {
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut seen = HashSet::new();
        let all = std::iter::once(&self.top)
            .chain(std::iter::once(&self.manifest))
            .chain(std::iter::once(&self.config))
            .chain(self.layers.iter());
        for d in all {
            if seen.insert(d.digest.clone()) {
                blobs.push(d.bare());
            }
        }
        ResolvedImage {
            name: name.to_string(),
            descriptor: self.top.bare(),
            manifest: self.manifest.bare(),
            platform: self.platform,
            blobs,
            source: source.to_string(),
            layout: None,
        }
    }
}

/// Follows `top` (already fetched as `top_bytes`) to the manifest for `wanted`, and checks the
/// config's platform. `fetch` returns a blob's bytes (at most `limit`) and stores it in the
/// cache; layers are not fetched.
pub(crate) fn resolve_tree(
    image: &str,
    top: &Descriptor,
    top_bytes: &[u8],
    wanted: &Platform,
    fetch: &mut dyn FnMut(&Descriptor, u64) -> Result<Vec<u8>>,
) -> Result<Tree> {
    let parsed = oci::parse_manifest(image, top_bytes, Some(&top.media_type))?;
    let mut top = top.bare();
    let (manifest, parsed, listed_as) = match parsed {
        Parsed::Index {
            media_type,
            manifests,
        } => {
            top.media_type = media_type;
            let child = oci::select_platform(image, &manifests, wanted)?;
            let bytes = fetch(&child.bare(), MAX_MANIFEST_LEN)?;
            let what = format!("{image} ({})", child.digest);
            let p = oci::parse_manifest(&what, &bytes, Some(&child.media_type))?;
            if matches!(p, Parsed::Index { .. }) {
                return Err(ImagesError::unsupported(
                    what,
                    "an index nested in an index is not supported",
                ));
            }
            (child.bare(), p, child.platform.clone())
        }
        p @ Parsed::Manifest { .. } => {
            if let Parsed::Manifest { media_type, .. } = &p {
                top.media_type = media_type.clone();
            }
            (top.clone(), p, None)
        }
    };
    let Parsed::Manifest { config, layers, .. } = parsed else {
        return Err(ImagesError::invalid(image, "no image manifest found"));
    };
    let cfg = fetch(&config.bare(), MAX_CONFIG_LEN)?;
    let found = oci::config_platform(image, &cfg)?;
    if let Some(p) = &found {
        if !wanted.accepts(p) {
            let hint = match &listed_as {
                Some(l) => format!(" (although its index lists it as {l})"),
                None => "; pull a multi-arch image or one built for the bundle's platform".into(),
            };
            return Err(ImagesError::PlatformMismatch {
                image: image.to_string(),
                found: p.to_string(),
                wanted: wanted.to_string(),
                hint,
            });
        }
    }
    let platform = listed_as.or(found).unwrap_or_else(|| wanted.clone());
    Ok(Tree {
        top,
        manifest,
        config: config.bare(),
        layers: layers.iter().map(Descriptor::bare).collect(),
        platform,
    })
}

/// Images from a build context's `images/` directory, if it has one.
pub fn context_sources(context: &std::path::Path) -> Result<Vec<ImageSource>> {
    let dir = context.join("images");
    if dir.is_dir() {
        ImageSource::scan_dir(&dir)
    } else {
        Ok(Vec::new())
    }
}
