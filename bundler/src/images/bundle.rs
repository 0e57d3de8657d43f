//! Writing collected images into a bundle as the OCI image layout `registry/`, which the
//! built-in registry serves on site straight from the bundle file.

use super::cache::Cache;
use super::error::{ImagesError, Result};
use super::layout::LayoutBlobs;
use super::oci::{self, Descriptor, Index, OCI_LAYOUT_JSON, REF_NAME};
use super::ResolvedImage;
use bale_payload::BundleWriter;
use std::collections::btree_map::Entry;
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

/// A blob to write, and where its bytes come from.
struct Planned<'a> {
    desc: Descriptor,
    /// The image it is written for, for messages.
    image: &'a str,
    from: Origin,
}

enum Origin {
    Cache,
    /// The OCI layout the image was found in; the file is opened (and checked) again when
    /// written, since it may have changed since it was collected.
    Layout(LayoutBlobs),
}

/// Where the bundle writer reads each of `img`'s blobs from, in the order of `img.blobs`: its
/// OCI layout when it came from one that has the blob, else the cache. For readers after the
/// bundle (the SBOM) that want the same bytes; the layout is resolved once per image.
pub fn blob_files(img: &ResolvedImage, cache: &Cache) -> Result<Vec<std::path::PathBuf>> {
    let layout = match &img.layout {
        Some(dir) => Some(LayoutBlobs::new(dir, &img.source)?),
        None => None,
    };
    img.blobs
        .iter()
        .map(|d| match &layout {
            Some(l) if l.has(&d.digest) => l.path(&d.digest),
            _ => cache.blob_path(&d.digest),
        })
        .collect()
}

/// Adds `images` from `cache` to the bundle under `registry/`: every blob once, at
/// `registry/blobs/sha256/<hex>`, stored raw so the registry can serve it by offset; an
/// `index.json` naming each image by its full normalized reference; and `oci-layout`. Images
/// collected from an OCI layout are read from that layout, each blob checked against its
/// size and digest as it streams into the bundle.
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
    // Each blob once, from the first image (by name) that has it: a layout's copy where the
    // image came from one and the layout has it, else the cache's.
    let mut layouts: BTreeMap<&Path, LayoutBlobs> = BTreeMap::new();
    let mut blobs: BTreeMap<String, Planned<'_>> = BTreeMap::new();
    for img in by_name.values() {
        let layout = match &img.layout {
            Some(dir) => Some(match layouts.entry(dir.as_path()) {
                Entry::Occupied(o) => o.into_mut().clone(),
                Entry::Vacant(v) => v.insert(LayoutBlobs::new(dir, &img.source)?).clone(),
            }),
            None => None,
        };
        for b in &img.blobs {
            let hex = oci::digest_hex(&img.name, &b.digest)?.to_string();
            if base.blobs.contains(&hex) || blobs.contains_key(&hex) {
                continue;
            }
            let from = match &layout {
                Some(l) if l.has(&b.digest) => Origin::Layout(l.clone()),
                _ if cache.has(b) => Origin::Cache,
                _ => {
                    return Err(ImagesError::invalid(
                        &img.name,
                        format!(
                            "blob {} is not in the image cache {}: collect the image again",
                            b.digest,
                            cache.root().display()
                        ),
                    ))
                }
            };
            blobs.insert(
                hex,
                Planned {
                    desc: b.bare(),
                    image: &img.name,
                    from,
                },
            );
        }
    }

    // Sorted path order gives the payload a layout that depends only on the images.
    writer.add_dir(REGISTRY_DIR, 0o755)?;
    writer.add_dir("registry/blobs", 0o755)?;
    writer.add_dir("registry/blobs/sha256", 0o755)?;
    let mut bytes = 0u64;
    for (hex, p) in &blobs {
        let d = &p.desc;
        let digest = oci::digest_bytes(p.image, &d.digest)?;
        let entry = format!("registry/blobs/sha256/{hex}");
        match &p.from {
            Origin::Cache => {
                let source = cache.blob_path(&d.digest)?;
                writer
                    .add_blob(&entry, &source, Some(&digest))
                    .map_err(|e| {
                        ImagesError::invalid(
                            format!("image {}", p.image),
                            format!(
                                "{e} (the cached copy {} may be damaged: delete it and collect \
                                 the image again)",
                                source.display()
                            ),
                        )
                    })?;
            }
            Origin::Layout(layout) => {
                let mut file = layout.open(d).map_err(|e| e.for_image(p.image))?;
                let source = layout.path(&d.digest)?;
                writer
                    .add_blob_from_file(&entry, &mut file, &source, Some(&digest))
                    .map_err(|e| {
                        ImagesError::invalid(
                            format!("image {}", p.image),
                            format!(
                                "blob {} in {}: {e} (the layout's copy is damaged or changed \
                                 after the images were collected: export the image again)",
                                d.digest,
                                layout.label()
                            ),
                        )
                    })?;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::oci::{OCI_LAYER_GZIP, OCI_MANIFEST};
    use crate::images::Platform;
    use bale_payload::{BundleMeta, WriteOptions};
    use std::path::PathBuf;

    /// An image whose only blob is `content`, found in a layout under `tmp`.
    struct Scene {
        tmp: tempfile::TempDir,
        image: ResolvedImage,
        blob: PathBuf,
    }

    fn scene(content: &[u8]) -> Scene {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = tmp.path().join("layout");
        std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
        let digest = oci::sha256_digest(content);
        let blob = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        std::fs::write(&blob, content).expect("write");
        let layer = Descriptor::new(OCI_LAYER_GZIP, digest.clone(), content.len() as u64);
        let top = Descriptor::new(OCI_MANIFEST, digest, content.len() as u64);
        let image = ResolvedImage {
            name: "example.com/app:1".into(),
            descriptor: top.clone(),
            manifest: top,
            platform: Platform::parse("linux/amd64").expect("platform"),
            blobs: vec![layer],
            source: format!("OCI layout {}", layout.display()),
            layout: Some(layout),
        };
        Scene { tmp, image, blob }
    }

    /// Writes the scene's image into a bundle, with a frame size small enough that `content`
    /// of a few KiB streams as several frames.
    fn write(s: &Scene) -> Result<ImagesSummary> {
        let dest = s.tmp.path().join("out.bale");
        let stub = std::env::current_exe().expect("exe");
        let mut w = BundleWriter::create(
            &dest,
            &stub,
            BundleMeta::default(),
            WriteOptions {
                frame_size: 1024,
                threads: 2,
                ..Default::default()
            },
        )
        .expect("writer");
        let summary = add_images_to_bundle(
            &mut w,
            &s.tmp.path().join("cache"),
            std::slice::from_ref(&s.image),
        )?;
        w.finish().expect("finish");
        Ok(summary)
    }

    fn content() -> Vec<u8> {
        (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_layout_blob_streams_into_the_bundle_and_not_into_the_cache() {
        let s = scene(&content());
        let summary = write(&s).expect("write");
        assert_eq!((summary.blobs, summary.bytes), (1, 10_000));
        let cached = std::fs::read_dir(s.tmp.path().join("cache/blobs/sha256"))
            .expect("cache")
            .count();
        assert_eq!(cached, 0);
    }

    #[test]
    fn a_streamed_blob_that_does_not_match_its_digest_fails_naming_it() {
        let s = scene(&content());
        let mut other = content();
        other[9_999] ^= 1;
        std::fs::write(&s.blob, other).expect("write");
        let msg = write(&s).expect_err("mismatch").to_string();
        let digest = &s.image.blobs[0].digest;
        assert!(
            msg.contains("example.com/app:1")
                && msg.contains(digest.as_str())
                && msg.contains(&s.image.source)
                && msg.contains("content has digest"),
            "{msg}"
        );
    }

    #[test]
    fn a_truncated_blob_fails_before_it_is_read() {
        let s = scene(&content());
        std::fs::write(&s.blob, &content()[..4_000]).expect("write");
        let msg = write(&s).expect_err("truncated").to_string();
        assert!(
            msg.contains("example.com/app:1") && msg.contains("truncated"),
            "{msg}"
        );
    }

    #[test]
    fn a_blob_symlinked_out_of_the_layout_is_refused() {
        let s = scene(&content());
        let outside = s.tmp.path().join("elsewhere");
        std::fs::write(&outside, content()).expect("write");
        std::fs::remove_file(&s.blob).expect("rm");
        std::os::unix::fs::symlink(&outside, &s.blob).expect("symlink");
        let msg = write(&s).expect_err("escapes").to_string();
        assert!(
            msg.contains("example.com/app:1") && msg.contains("leads out of the layout"),
            "{msg}"
        );
    }
}
