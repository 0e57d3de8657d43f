//! What moving images around needs beyond the shared OCI model ([`bale_contract::oci`], re-exported
//! here): reading a manifest or index the way a pull follows it, picking a platform, and checked
//! digests.

use super::error::{ImagesError, Result};
pub use bale_contract::oci::*;
use sha2::{Digest, Sha256};

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

/// Reads a manifest or index. Its kind comes from its own `mediaType` field, else from the
/// type it was served or listed with, else from its shape (OCI lets the field be absent).
pub fn parse_manifest(what: &str, data: &[u8], declared_type: Option<&str>) -> Result<Parsed> {
    let raw = ManifestDoc::parse(data).map_err(|e| ImagesError::invalid(what, e.to_string()))?;
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

#[derive(serde::Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
