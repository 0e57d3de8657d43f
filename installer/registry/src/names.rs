//! Grammar of everything a request or `index.json` may name: repositories, tags, digests,
//! registry hosts and full image references.
//!
//! Every string that comes from a URL is checked here before it is used as a map key or shown
//! in a message, so nothing unexpected (percent escapes, `..`, control bytes) gets further.

use bale_contract::imageref::ImageRefError;

/// A SHA-256 digest as raw bytes.
pub type Digest = [u8; 32];

/// Longest repository name accepted, with its registry host (the limit Docker and the
/// distribution reference implementation use).
pub(crate) const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Parses `sha256:` followed by exactly 64 lowercase hex digits: the only digest form the
/// bundle can hold.
pub fn parse_digest(s: &str) -> Option<Digest> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex, &mut d).ok()?;
    Some(d)
}

pub(crate) fn digest_string(d: &Digest) -> String {
    format!("sha256:{}", hex::encode(d))
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !is_lower_alnum(first) || !is_lower_alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        // A separator must be followed by an alphanumeric run.
        if !b.get(i).copied().is_some_and(is_lower_alnum) {
            return false;
        }
    }
    true
}

/// A registry host as it appears in a reference or in containerd's `ns` parameter:
/// DNS labels joined by dots, or a bracketed IPv6 address, with an optional port.
pub(crate) fn is_host(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return false;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if s.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// A repository name as it may appear in a request path. Besides the OCI grammar the first
/// component may be a `host:port`, so a full name such as `localhost:5000/app` can still be
/// asked for directly.
pub(crate) fn is_repository_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let mut parts = name.split('/');
    let Some(first) = parts.next() else {
        return false;
    };
    let rest_ok = parts.clone().all(is_path_component);
    let has_rest = parts.next().is_some();
    rest_ok && (is_path_component(first) || (has_rest && first.contains(':') && is_host(first)))
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Docker Hub answers under several host names; images are always recorded under this one.
pub const DOCKER_HUB: &str = "docker.io";

/// Maps Docker Hub's alias hosts to `docker.io`, as containerd and Docker do.
pub(crate) fn normalize_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        h => h,
    }
}

/// A full image reference from `index.json`, normalized the way Docker and containerd do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, e.g. `docker.io`, `registry.k8s.io`, `localhost:5000`.
    pub host: String,
    /// Repository path below the host, e.g. `library/busybox`.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// `host/path`: the repository's full name.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }
}

/// Why a full image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The reference grammar that the build side uses too (`bale_contract::imageref`).
    #[error(transparent)]
    Grammar(#[from] ImageRefError),
    /// The registry serves blobs by sha256 only.
    #[error("{0:?} is not a sha256 digest")]
    Digest(String),
}

/// Parses `[host/]path[:tag][@sha256:...]` with the one image-reference grammar bale has, then
/// as this registry keys it: a reference without a host is a Docker Hub one (`busybox` becomes
/// `docker.io/library/busybox`), Docker Hub's other host names become `docker.io`, and one with
/// neither tag nor digest means `latest`.
pub fn parse_image_ref(s: &str) -> Result<ImageRef, RefError> {
    let r = bale_contract::imageref::ImageRef::parse(s)?;
    let digest = match &r.digest {
        Some(d) => Some(parse_digest(d).ok_or_else(|| RefError::Digest(d.clone()))?),
        None => None,
    };
    Ok(ImageRef {
        host: normalize_host(&r.domain).to_string(),
        tag: r.effective_tag().map(str::to_string),
        path: r.path,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        assert!(parse_digest(&format!("sha256:{hex}")).is_some());
        for bad in [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha512:{hex}"),
            format!("sha256:{}/../x", "a".repeat(58)),
            hex.clone(),
        ] {
            assert!(parse_digest(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for ok in [
            "busybox",
            "library/busybox",
            "docker.io/library/busybox",
            "registry.k8s.io/pause",
            "a__b/c-d/e.f/g---h",
            "localhost:5000/app",
        ] {
            assert!(is_repository_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Busybox",
            "a/../b",
            "a//b",
            "/a",
            "a/",
            "a___b",
            "a.-b",
            "-a",
            "a%2fb",
            "localhost:5000",
            "a/localhost:5000",
            &"a".repeat(256),
        ] {
            assert!(!is_repository_name(bad), "{bad}");
        }
    }

    #[test]
    fn hosts_and_tags() {
        for ok in [
            "docker.io",
            "localhost:5000",
            "[::1]:5000",
            "[fe80::1]",
            "a-b.c",
        ] {
            assert!(is_host(ok), "{ok}");
        }
        for bad in ["", "a..b", "-a.b", "a:", "a:123456", "a/b", "[::1", "a b"] {
            assert!(!is_host(bad), "{bad}");
        }
        assert!(is_tag("1.36"));
        assert!(is_tag("_x-Y.z"));
        assert!(!is_tag(".x"));
        assert!(!is_tag("a/b"));
        assert!(!is_tag(&"a".repeat(129)));
    }

    #[test]
    fn references_are_normalized() {
        let r = parse_image_ref("busybox:1.36").unwrap();
        assert_eq!(r.full_name(), "docker.io/library/busybox");
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        let r = parse_image_ref("registry-1.docker.io/x/y").unwrap();
        assert_eq!(r.full_name(), "docker.io/x/y");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let d = format!("sha256:{}", "b".repeat(64));
        let r = parse_image_ref(&format!("localhost:5000/a/b:v1@{d}")).unwrap();
        assert_eq!(r.full_name(), "localhost:5000/a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, parse_digest(&d));
        let r = parse_image_ref(&format!("quay.io/x/y@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert!(matches!(
            parse_image_ref("quay.io/X/y:1"),
            Err(RefError::Grammar(e)) if e.reason.to_string().contains("lowercase")
        ));
        assert!(parse_image_ref("quay.io/x/y:a/b").is_err());
        assert!(matches!(
            parse_image_ref("quay.io/x/y@sha256:abc"),
            Err(RefError::Grammar(e)) if e.reason.to_string().contains("64 lowercase hex")
        ));
        let other = format!("quay.io/x/y@sha512:{}", "a".repeat(128));
        assert!(matches!(parse_image_ref(&other), Err(RefError::Digest(_))));
        assert!(matches!(
            parse_image_ref(&format!("quay.io/{}", "a".repeat(250))),
            Err(RefError::Grammar(e)) if e.reason.to_string().contains("longer than")
        ));
    }
}
