//! What a layer scan found, kept per layer digest next to the image cache
//! (`<cache>/sbom/<hex>.json`), so a rebuild, or another bundle with the same layers, does not
//! decompress them again.
//!
//! A layer is content-addressed, so its findings never go stale for the same scanner; the
//! entry records [`SCAN_VERSION`] and the codec it was read with, and any entry that does not
//! match them, is larger than [`MAX_ENTRY`], or does not parse is ignored (the layer is scanned
//! again and the entry replaced). Entries are written under a temporary name, synced and
//! renamed, so a reader sees a whole entry or none. Failing to write one only costs a rescan
//! next time, never the build.

use super::dpkg::{Codec, LayerScan, Package};
use super::gobuild::BuildInfo;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bumped whenever the scanner could find something else in the same layer: older entries
/// are then ignored.
pub const SCAN_VERSION: u32 = 1;
/// Largest entry read back (a layer's packages and Go modules take a few hundred KiB at most).
pub const MAX_ENTRY: u64 = 16 << 20;

/// The directory of findings under an image cache's root.
pub fn dir_in(cache_root: &Path) -> PathBuf {
    cache_root.join("sbom")
}

#[derive(Serialize, Deserialize)]
struct CachedScan {
    version: u32,
    /// `sha256:…` of the stored layer, as a check against a renamed file.
    digest: String,
    codec: String,
    debs: Vec<Package>,
    go: Vec<(String, BuildInfo)>,
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Tar => "tar",
        Codec::Gzip => "gzip",
        Codec::Zstd => "zstd",
    }
}

/// A directory of per-layer findings.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    pub fn new(dir: impl Into<PathBuf>) -> LayerCache {
        LayerCache { dir: dir.into() }
    }

    fn path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!("{hex}.json"))
    }

    /// The findings stored for the layer whose SHA-256 is `sha256`, read with `codec`; `None`
    /// when there are none or they cannot be trusted.
    pub fn get(&self, sha256: &[u8; 32], codec: Codec) -> Option<LayerScan> {
        let hex = hex::encode(sha256);
        let f = std::fs::File::open(self.path(&hex)).ok()?;
        let mut bytes = Vec::new();
        f.take(MAX_ENTRY + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() as u64 > MAX_ENTRY {
            return None;
        }
        let c: CachedScan = serde_json::from_slice(&bytes).ok()?;
        let valid = c.version == SCAN_VERSION
            && c.digest.strip_prefix("sha256:") == Some(hex.as_str())
            && c.codec == codec_name(codec);
        valid.then_some(LayerScan {
            debs: c.debs,
            go: c.go,
        })
    }

    /// Stores the findings of a layer; an error means only that the next build scans it again.
    pub fn put(&self, sha256: &[u8; 32], codec: Codec, scan: &LayerScan) -> std::io::Result<()> {
        let hex = hex::encode(sha256);
        let entry = CachedScan {
            version: SCAN_VERSION,
            digest: format!("sha256:{hex}"),
            codec: codec_name(codec).to_string(),
            debs: scan.debs.clone(),
            go: scan.go.clone(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(&hex)).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::gobuild::Module;

    fn sample() -> LayerScan {
        LayerScan {
            debs: vec![Package {
                name: "libc6".into(),
                version: "2.36-9+deb12u4".into(),
                arch: "amd64".into(),
                source: Some("glibc".into()),
            }],
            go: vec![(
                "bin/srv".into(),
                BuildInfo {
                    go_version: "go1.24.1".into(),
                    path: Some("example.com/cmd/srv".into()),
                    main: Some(Module {
                        path: "example.com".into(),
                        version: "v1.0.0".into(),
                        sum: None,
                        replaced_by: Some(Box::new(Module {
                            path: "example.com/fork".into(),
                            version: "v1.0.1".into(),
                            sum: Some("h1:abc=".into()),
                            replaced_by: None,
                        })),
                    }),
                    deps: vec![],
                    settings: vec![("GOOS".into(), "linux".into())],
                },
            )],
        }
    }

    #[test]
    fn an_entry_reads_back_as_written_and_only_for_its_layer_and_codec() {
        let d = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(dir_in(d.path()));
        let digest = [7u8; 32];
        assert!(cache.get(&digest, Codec::Gzip).is_none());
        cache.put(&digest, Codec::Gzip, &sample()).unwrap();
        let back = cache.get(&digest, Codec::Gzip).unwrap();
        assert_eq!(back.debs, sample().debs);
        assert_eq!(back.go, sample().go);
        assert!(cache.get(&digest, Codec::Tar).is_none());
        // Copied under another layer's name, it is not taken for that layer.
        let other = [8u8; 32];
        std::fs::copy(
            cache.path(&hex::encode(digest)),
            cache.path(&hex::encode(other)),
        )
        .unwrap();
        assert!(cache.get(&other, Codec::Gzip).is_none());
    }

    #[test]
    fn damaged_oversized_or_older_entries_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(d.path());
        let digest = [9u8; 32];
        let at = cache.path(&hex::encode(digest));
        std::fs::write(&at, b"{\"version\": 1, \"digest\": \"sha2").unwrap();
        assert!(cache.get(&digest, Codec::Gzip).is_none());
        std::fs::write(&at, vec![b' '; MAX_ENTRY as usize + 1]).unwrap();
        assert!(cache.get(&digest, Codec::Gzip).is_none());
        cache.put(&digest, Codec::Gzip, &sample()).unwrap();
        let text = std::fs::read_to_string(&at).unwrap();
        let older = text.replace(
            &format!("\"version\":{SCAN_VERSION}"),
            &format!("\"version\":{}", SCAN_VERSION + 1),
        );
        assert_ne!(older, text);
        std::fs::write(&at, older).unwrap();
        assert!(cache.get(&digest, Codec::Gzip).is_none());
    }
}
