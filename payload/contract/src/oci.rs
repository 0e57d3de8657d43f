//! The one model of OCI image documents that build and site share: media types, descriptors,
//! platforms, the index of an image layout (`index.json`) and the fields of a manifest or index
//! that tell what else it needs. The bundler writes these documents and pulls them from
//! registries; the registry built into bale and the node steps read them back from the bundle.
//!
//! Readers here are lenient where the specs let documents leave fields out (a descriptor's
//! `mediaType`, a manifest's own `mediaType`), and every caller decides what an absent field
//! means for it; sizes and digests are always required.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The annotation that names an image in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and `docker save`'s, since Docker 25) full image name annotation.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// What a registry is asked to return for a manifest: any of the four kinds a pull follows.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and indexes larger than this are refused: the distribution spec's limit, and a
/// bound on what is read into memory.
pub const MAX_MANIFEST_LEN: u64 = 4 << 20;
/// Image configs are JSON too, but carry history; allow more.
pub const MAX_CONFIG_LEN: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Required by the spec; read as empty when a document leaves it out, so the reader
    /// decides (from the type it was listed or served with) instead of the parser.
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: String, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    pub fn is_index(&self) -> bool {
        is_index_type(&self.media_type)
    }

    /// The same blob without the fields that only make sense where it was listed.
    pub fn bare(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest.clone(), self.size)
    }
}

pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

pub fn is_manifest_type(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    /// `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`; a bare architecture means Linux, and the
    /// kernel's names (`x86_64`, `aarch64`) are accepted for theirs.
    pub fn parse(s: &str) -> Result<Platform, OciError> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || OciError::Platform {
            given: s.to_string(),
        };
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(*v)),
            _ => return Err(bad()),
        };
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !ok(os) || !ok(arch) || variant.is_some_and(|v| !ok(v)) {
            return Err(bad());
        }
        let arch = normalize_arch(arch);
        Ok(Platform::new(os, arch, variant))
    }

    /// The platform this program was built for.
    pub fn host() -> Platform {
        Platform::new("linux", normalize_arch(std::env::consts::ARCH), None)
    }

    /// The platform for a bundle whose program is built for `arch` (`x86_64`, `aarch64`, as
    /// `BundleWriter::arch` reports it).
    pub fn for_arch(arch: &str) -> Platform {
        Platform::new("linux", normalize_arch(arch), None)
    }

    fn default_variant(&self) -> Option<&'static str> {
        match self.architecture.as_str() {
            "arm64" => Some("v8"),
            _ => None,
        }
    }

    fn variant_or_default(&self) -> Option<&str> {
        self.variant.as_deref().or(self.default_variant())
    }

    /// Whether an image built for `other` runs here. A wanted platform without a variant takes
    /// any variant of its architecture.
    pub fn accepts(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != normalize_arch(&other.architecture) {
            return false;
        }
        match &self.variant {
            None => true,
            Some(_) => self.variant_or_default() == other.variant_or_default(),
        }
    }

    /// Higher is a better fit among several accepted ones: the exact or default variant first.
    pub fn fit(&self, other: &Platform) -> u8 {
        if self.variant_or_default() == other.variant_or_default() {
            2
        } else if other.variant.is_none() {
            1
        } else {
            0
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

pub fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// What cannot be read as an OCI document.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("platform {given:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64")]
    Platform { given: String },
    #[error("not an OCI image index: {0}")]
    Index(#[source] serde_json::Error),
    #[error("not a valid image manifest: {0}")]
    Manifest(#[source] serde_json::Error),
}

/// The index of an OCI image layout (`index.json`), or an image index as a registry serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default = "schema_version_2")]
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn schema_version_2() -> u32 {
    2
}

impl Index {
    /// An index as bale writes it, naming `manifests`.
    pub fn new(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests,
            annotations: BTreeMap::new(),
        }
    }

    pub fn parse(data: &[u8]) -> Result<Index, OciError> {
        serde_json::from_slice(data).map_err(OciError::Index)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and numbers cannot fail; an empty index is a safe fallback.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The image names (`org.opencontainers.image.ref.name`) the index gives its entries.
    pub fn ref_names(&self) -> impl Iterator<Item = &str> {
        self.manifests
            .iter()
            .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
    }
}

/// The fields of an image manifest, an image index or an artifact manifest that say what it
/// is and what else it needs; which of them are present tells the kind when `media_type` is
/// absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDoc {
    pub schema_version: Option<u32>,
    pub media_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Option<Vec<Descriptor>>,
    pub manifests: Option<Vec<Descriptor>>,
    /// Artifact manifests list their content here.
    pub blobs: Option<Vec<Descriptor>>,
}

impl ManifestDoc {
    pub fn parse(data: &[u8]) -> Result<ManifestDoc, OciError> {
        serde_json::from_slice(data).map_err(OciError::Manifest)
    }
}

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const OCI_LAYOUT_JSON: &[u8] = b"{\"imageLayoutVersion\":\"1.0.0\"}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64").expect("ok");
        assert!(p.accepts(&Platform::new("linux", "arm64", Some("v8"))));
        assert!(p.accepts(&Platform::new("linux", "arm64", None)));
        assert!(!p.accepts(&Platform::new("linux", "amd64", None)));
        let v8 = Platform::parse("linux/arm64/v8").expect("ok");
        assert!(v8.accepts(&Platform::new("linux", "arm64", None)));
        let v7 = Platform::parse("linux/arm/v7").expect("ok");
        assert!(!v7.accepts(&Platform::new("linux", "arm", Some("v6"))));
        assert_eq!(
            Platform::parse("x86_64").expect("ok").to_string(),
            "linux/amd64"
        );
        assert_eq!(Platform::for_arch("aarch64").to_string(), "linux/arm64");
        let e = Platform::parse("linux/").expect_err("empty arch");
        assert!(e.to_string().contains("OS/ARCH"), "{e}");
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn an_index_round_trips_and_names_its_images() {
        let mut d = Descriptor::new(OCI_MANIFEST, format!("sha256:{}", "a".repeat(64)), 7);
        d.annotations
            .insert(REF_NAME.into(), "docker.io/library/busybox:1.36".into());
        let idx = Index::new(vec![d, Descriptor::new(OCI_MANIFEST, "sha256:b".into(), 1)]);
        let back = Index::parse(&idx.to_json()).expect("parse");
        assert_eq!(back, idx);
        assert_eq!(
            back.ref_names().collect::<Vec<_>>(),
            ["docker.io/library/busybox:1.36"]
        );
    }

    #[test]
    fn readers_leave_absent_types_to_the_caller_but_need_sizes() {
        let idx = Index::parse(br#"{"manifests":[{"digest":"sha256:x","size":3}]}"#)
            .expect("an index without mediaType fields");
        assert_eq!(idx.schema_version, 2);
        assert_eq!(idx.manifests[0].media_type, "");
        assert!(Index::parse(br#"{"manifests":[{"digest":"sha256:x"}]}"#).is_err());
        let doc = ManifestDoc::parse(br#"{"blobs":[{"digest":"sha256:x","size":1}]}"#)
            .expect("an artifact manifest");
        assert!(doc.media_type.is_none() && doc.blobs.is_some());
        assert!(matches!(
            ManifestDoc::parse(b"[1]"),
            Err(OciError::Manifest(_))
        ));
    }
}
