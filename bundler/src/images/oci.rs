//! The parts of the OCI image spec (and Docker's schema 2, which it grew from) that moving
//! images around needs: descriptors, platforms, and telling an index from a manifest.

use super::error::{ImagesError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

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

/// An operating system and CPU, as image indexes and configs describe them.
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
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            ImagesError::invalid(
                format!("platform {s:?}"),
                "expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64",
            )
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
    fn fit(&self, other: &Platform) -> u8 {
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

fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// A manifest or index, reduced to what a pull follows.
#[derive(Debug, Clone)]
pub enum Parsed {
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
    Manifest {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// Reads a manifest or index. Its kind comes from its own `mediaType` field, else from the
/// type it was served or listed with, else from its shape (OCI lets the field be absent).
pub fn parse_manifest(what: &str, data: &[u8], declared_type: Option<&str>) -> Result<Parsed> {
    let raw: RawManifest = serde_json::from_slice(data)
        .map_err(|e| ImagesError::invalid(what, format!("not a valid image manifest: {e}")))?;
    let declared = declared_type
        .map(|t| t.split(';').next().unwrap_or(t).trim())
        .filter(|t| !t.is_empty() && *t != "application/json" && *t != "text/plain");
    let media_type = raw
        .media_type
        .clone()
        .or(declared.map(str::to_string))
        .unwrap_or_else(|| {
            if raw.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        });
    if raw.schema_version == Some(1)
        || media_type == DOCKER_SCHEMA1
        || media_type == DOCKER_SCHEMA1_SIGNED
    {
        return Err(ImagesError::unsupported(
            what,
            "Docker schema 1 manifests are deprecated and not supported; push the image again \
             with a current tool",
        ));
    }
    if is_index_type(&media_type) {
        let manifests = raw
            .manifests
            .ok_or_else(|| ImagesError::invalid(what, "an image index without \"manifests\""))?;
        for m in &manifests {
            check_digest(what, &m.digest)?;
        }
        return Ok(Parsed::Index {
            media_type,
            manifests,
        });
    }
    if !is_manifest_type(&media_type) {
        return Err(ImagesError::unsupported(
            what,
            format!("media type {media_type:?} is not an image manifest or index"),
        ));
    }
    let config = raw
        .config
        .ok_or_else(|| ImagesError::invalid(what, "an image manifest without \"config\""))?;
    let layers = raw.layers.unwrap_or_default();
    check_digest(what, &config.digest)?;
    for l in &layers {
        check_digest(what, &l.digest)?;
    }
    Ok(Parsed::Manifest {
        media_type,
        config,
        layers,
    })
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// The platform an image config says it is for; `None` when it does not say.
pub fn config_platform(what: &str, data: &[u8]) -> Result<Option<Platform>> {
    let c: RawConfig = serde_json::from_slice(data)
        .map_err(|e| ImagesError::invalid(what, format!("not a valid image config: {e}")))?;
    if c.architecture.is_empty() || c.os.is_empty() {
        return Ok(None);
    }
    Ok(Some(Platform::new(
        &c.os,
        normalize_arch(&c.architecture),
        c.variant.as_deref(),
    )))
}

/// Picks the wanted platform's manifest from an index's list.
pub fn select_platform<'a>(
    image: &str,
    manifests: &'a [Descriptor],
    wanted: &Platform,
) -> Result<&'a Descriptor> {
    let best = manifests
        .iter()
        .filter(|m| is_manifest_type(&m.media_type) || m.media_type.is_empty())
        .filter_map(|m| m.platform.as_ref().map(|p| (m, p)))
        .filter(|(_, p)| wanted.accepts(p))
        .max_by_key(|(_, p)| wanted.fit(p))
        .map(|(m, _)| m);
    best.ok_or_else(|| {
        let mut offered: Vec<String> = manifests
            .iter()
            .filter_map(|m| m.platform.as_ref())
            .filter(|p| p.os != "unknown")
            .map(|p| p.to_string())
            .collect();
        offered.dedup();
        ImagesError::NoPlatform {
            image: image.to_string(),
            wanted: wanted.to_string(),
            available: if offered.is_empty() {
                "no platforms".into()
            } else {
                offered.join(", ")
            },
        }
    })
}

/// The hex part of a `sha256:` digest, checked: it names files, so nothing else may pass.
pub fn digest_hex<'a>(what: &str, digest: &'a str) -> Result<&'a str> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        Some((algo, _)) if algo != "sha256" => Err(ImagesError::unsupported(
            what,
            format!("digest {digest:?} uses {algo}; only sha256 is supported"),
        )),
        _ => Err(ImagesError::invalid(
            what,
            format!("{digest:?} is not a valid sha256 digest"),
        )),
    }
}

pub fn check_digest(what: &str, digest: &str) -> Result<()> {
    digest_hex(what, digest).map(|_| ())
}

/// The 32 bytes of a checked `sha256:` digest.
pub fn digest_bytes(what: &str, digest: &str) -> Result<[u8; 32]> {
    let hex = digest_hex(what, digest)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out)
        .map_err(|e| ImagesError::invalid(what, format!("{digest:?}: {e}")))?;
    Ok(out)
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The OCI layer type for a layer's bytes, from their first bytes.
pub fn layer_type_for(magic: &[u8]) -> &'static str {
    if magic.starts_with(b"\x1f\x8b") {
        OCI_LAYER_GZIP
    } else if magic.starts_with(b"\x28\xb5\x2f\xfd") {
        OCI_LAYER_ZSTD
    } else {
        OCI_LAYER_TAR
    }
}

/// An index in the OCI layout sense, written by bale.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    pub media_type: &'static str,
    pub manifests: Vec<Descriptor>,
}

impl Index {
    pub fn new(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and numbers cannot fail; an empty index is a safe fallback.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
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
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn digests_are_checked() {
        assert!(digest_hex("x", "sha256:../../etc/passwd").is_err());
        assert!(digest_hex("x", &format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(digest_hex("x", &format!("sha512:{}", "a".repeat(128))).is_err());
        assert!(digest_hex("x", &format!("sha256:{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn kinds() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_manifest("x", idx, None),
            Ok(Parsed::Index { .. })
        ));
        let s1 = br#"{"schemaVersion":1,"name":"x"}"#;
        let e = parse_manifest("x", s1, None).expect_err("schema 1");
        assert!(e.to_string().contains("schema 1"), "{e}");
    }
}
