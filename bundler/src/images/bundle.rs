//! Writing collected images into a bundle as the OCI image layout `registry/`, which the
//! built-in registry serves on site straight from the bundle file.

use super::cache::Cache;
use super::error::{ImagesError, Result};
use super::oci::{self, Descriptor, Index, OCI_LAYOUT_JSON, REF_NAME};
use super::ResolvedImage;
use bale_payload::BundleWriter;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where the image layout lives in a bundle.
pub const REGISTRY_DIR: &str = "registry";

/// What the bundle header's metadata says about the images.
#[derive(Debug, Clone)]
pub struct ImagesSummary {
    /// Images named in `registry/index.json`.
    pub count: u64,
    /// Distinct blobs stored (layers shared by several images count once).
    pub blobs: u64,
    /// Bytes of those blobs.
    pub bytes: u64,
    /// Each image as the bundle's manifest lists it, sorted by name.
    pub images: Vec<bale_contract::manifest::ImageRecord>,
}

/// Images a `FROM` base bundle already carries under `registry/`, which a build on it keeps.
#[derive(Debug, Clone, Default)]
pub struct BaseImages {
    /// Hex digests of the blobs the bundle gets from the base (as stored frames, added by the
    /// caller); they are not added again.
    pub blobs: BTreeSet<String>,
    /// The base's `index.json` manifests, kept in the merged index.
    pub manifests: Vec<Descriptor>,
    /// The base as written in the Kubefile, for messages.
    pub shown: String,
}

impl BaseImages {
    /// Reads a base's `registry/index.json`.
    pub fn parse_index(data: &[u8], shown: &str) -> Result<Vec<Descriptor>> {
        let parsed = Index::parse(data).map_err(|e| {
            ImagesError::invalid(
                format!("FROM {shown}"),
                format!("its registry/index.json: {e}; rebuild the base"),
            )
        })?;
        Ok(parsed.manifests)
    }

    /// Image names (`org.opencontainers.image.ref.name`) the base carries.
    pub fn names(&self) -> BTreeSet<&str> {
        self.manifests
            .iter()
            .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
            .collect()
    }
}

/// Adds `images` from `cache` to the bundle under `registry/`: every blob once, at
/// `registry/blobs/sha256/<hex>`, stored raw so the registry can serve it by offset; an
/// `index.json` naming each image by its full normalized reference; and `oci-layout`.
pub fn add_images_to_bundle(
    writer: &mut BundleWriter,
    cache: &Path,
    images: &[ResolvedImage],
) -> Result<ImagesSummary> {
    add_images_merged(writer, cache, images, &BaseImages::default())
}

/// [`add_images_to_bundle`] on top of a base's images: blobs the base holds are not added
/// again (layers shared by the base's and this build's images are stored once), and
/// `index.json` names the base's images and these, sorted by name. An image name in both with
/// different content is refused: on site one name resolves to one image.
pub fn add_images_merged(
    writer: &mut BundleWriter,
    cache: &Path,
    images: &[ResolvedImage],
    base: &BaseImages,
) -> Result<ImagesSummary> {
    let cache = Cache::open(cache)?;
    let mut by_name: BTreeMap<&str, &ResolvedImage> = BTreeMap::new();
    for img in images {
        if let Some(prev) = by_name.insert(&img.name, img) {
            if prev.descriptor.digest != img.descriptor.digest {
                return Err(ImagesError::invalid(
                    &img.name,
                    format!(
                        "collected twice with different content ({} from {}, {} from {})",
                        prev.descriptor.digest, prev.source, img.descriptor.digest, img.source
                    ),
                ));
            }
        }
    }
    let mut blobs: BTreeMap<String, (Descriptor, &str)> = BTreeMap::new();
    for img in by_name.values() {
        for b in &img.blobs {
            let hex = oci::digest_hex(&img.name, &b.digest)?.to_string();
            if base.blobs.contains(&hex) {
                continue;
            }
            if !cache.has(b) {
                return Err(ImagesError::invalid(
                    &img.name,
                    format!(
                        "blob {} is not in the image cache {}: collect the image again",
                        b.digest,
                        cache.root().display()
                    ),
                ));
            }
            blobs.entry(hex).or_insert((b.bare(), &img.name));
        }
    }

    // Sorted path order gives the payload a layout that depends only on the images.
    writer.add_dir(REGISTRY_DIR, 0o755)?;
    writer.add_dir("registry/blobs", 0o755)?;
    writer.add_dir("registry/blobs/sha256", 0o755)?;
    let mut bytes = 0u64;
    for (hex, (d, image)) in &blobs {
        let digest = oci::digest_bytes(image, &d.digest)?;
        let source = cache.blob_path(&d.digest)?;
        writer
            .add_blob(
                &format!("registry/blobs/sha256/{hex}"),
                &source,
                Some(&digest),
            )
            .map_err(|e| {
                ImagesError::invalid(
                    format!("image {image}"),
                    format!(
                        "{e} (the cached copy {} may be damaged: delete it and collect the \
                         image again)",
                        source.display()
                    ),
                )
            })?;
        bytes += d.size;
    }
    // The base's entries first, by name (an unnamed one keeps its place by digest).
    let mut manifests: BTreeMap<String, Descriptor> = BTreeMap::new();
    for d in &base.manifests {
        let key = d
            .annotations
            .get(REF_NAME)
            .cloned()
            .unwrap_or_else(|| format!("@{}", d.digest));
        manifests.insert(key, d.clone());
    }
    let mut listed = Vec::new();
    for (name, img) in &by_name {
        if let Some(prev) = manifests.get(*name) {
            if prev.digest != img.descriptor.digest {
                return Err(ImagesError::invalid(
                    name.to_string(),
                    format!(
                        "the base FROM {} carries it as {}, this build collects {} (from {}); \
                         a bundle names each image once: rebuild the base with this image, or \
                         leave it out of this build (list it in .baleignore-images)",
                        base.shown, prev.digest, img.descriptor.digest, img.source
                    ),
                ));
            }
            continue;
        }
        let mut d = img.descriptor.bare();
        if !d.is_index() {
            d.platform = Some(img.platform.clone());
        }
        d.annotations.insert(REF_NAME.to_string(), name.to_string());
        manifests.insert(name.to_string(), d);
        listed.push(img.record(name));
    }
    writer.add_bytes(
        "registry/index.json",
        0o644,
        &Index::new(manifests.into_values().collect()).to_json(),
    )?;
    writer.add_bytes("registry/oci-layout", 0o644, OCI_LAYOUT_JSON)?;
    Ok(ImagesSummary {
        count: by_name.len() as u64,
        blobs: blobs.len() as u64,
        bytes,
        images: listed,
    })
}
