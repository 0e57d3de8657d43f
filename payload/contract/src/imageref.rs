//! Container image references: parsing, validation and normalization.
//!
//! Follows the reference grammar that container runtimes use, so a name that
//! containerd would pull is accepted here and normalizes to the same string:
//! `nginx` -> `docker.io/library/nginx:latest`.
//!
//! Bundles keep image names exactly as the user wrote them (the original string
//! is kept in [`ImageRef::original`]); the normalized form is for comparing and
//! de-duplicating only.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Registry assumed when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Old spelling of the default registry; runtimes treat it as `docker.io`.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Single-component names on Docker Hub live under `library/`.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Runtimes reject longer names (domain + path), so reject them at build time.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed image reference: `[domain/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    /// The reference exactly as written.
    pub original: String,
    /// Registry host with optional port, e.g. `registry.k8s.io`, `localhost:5000`.
    pub domain: String,
    /// Repository path inside the registry, e.g. `library/nginx`.
    pub path: String,
    /// The tag as written, if any.
    pub tag: Option<String>,
    /// `algorithm:hex`, if the reference is pinned.
    pub digest: Option<String>,
}

/// A reference that does not follow the grammar; names the bad reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ImageRefError {
    pub reference: String,
    pub reason: RefProblem,
}

/// What is wrong with a reference, and what to write instead where that is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefProblem {
    #[error("the reference is empty")]
    Empty,
    #[error("it contains whitespace")]
    Whitespace,
    #[error("the repository name is missing")]
    NoName,
    #[error("the name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("{0:?} is not a valid registry host[:port]")]
    Domain(String),
    #[error("{domain:?} has an invalid port {port:?}")]
    Port { domain: String, port: String },
    #[error("the repository path has an empty component (\"//\" or a trailing \"/\")")]
    EmptyComponent,
    #[error("repository names must be lowercase ({0:?}); write {lower:?}", lower = .0.to_ascii_lowercase())]
    Uppercase(String),
    #[error(
        "{0:?} is not a valid repository name component (lowercase letters, digits and single \
         separators . _ __ -)"
    )]
    Component(String),
    #[error("the tag after ':' is empty")]
    EmptyTag,
    #[error("tag {0:?} is not valid (letters, digits, _ . -; not starting with . or -)")]
    Tag(String),
    #[error("tag {0:?} is longer than {MAX_TAG_LEN} characters")]
    LongTag(String),
    #[error("digest {0:?} must be algorithm:hex, e.g. sha256:<64 hex digits>")]
    DigestForm(String),
    #[error("digest algorithm {0:?} is not valid")]
    Algorithm(String),
    #[error("a {algorithm} digest is {length} lowercase hex digits, got {hex:?}")]
    DigestLength {
        algorithm: String,
        length: usize,
        hex: String,
    },
    #[error("digest {0:?} is not valid")]
    Digest(String),
}

impl ImageRef {
    /// Parses and validates `reference`.
    pub fn parse(reference: &str) -> Result<ImageRef, ImageRefError> {
        let fail = |reason: RefProblem| ImageRefError {
            reference: reference.to_string(),
            reason,
        };
        if reference.is_empty() {
            return Err(fail(RefProblem::Empty));
        }
        if reference.chars().any(char::is_whitespace) {
            return Err(fail(RefProblem::Whitespace));
        }

        let (name_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => {
                check_digest(d).map_err(&fail)?;
                (n, Some(d.to_string()))
            }
            None => (reference, None),
        };

        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(c) if last_slash.is_none_or(|s| c > s) => {
                (&name_tag[..c], Some(name_tag[c + 1..].to_string()))
            }
            _ => (name_tag, None),
        };
        if name.is_empty() {
            return Err(fail(RefProblem::NoName));
        }
        if let Some(t) = &tag {
            check_tag(t).map_err(&fail)?;
        }

        let (domain, path) = split_domain(name);
        check_domain(domain).map_err(&fail)?;
        let domain = if domain.eq_ignore_ascii_case(LEGACY_DEFAULT_DOMAIN) {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain.to_string()
        };
        check_path(path).map_err(&fail)?;
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{path}")
        } else {
            path.to_string()
        };
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(fail(RefProblem::TooLong));
        }

        Ok(ImageRef {
            original: reference.to_string(),
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`, e.g. `docker.io/library/nginx`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, or `latest` when neither a tag nor a digest was given (what a
    /// runtime pulls). `None` for a digest-only reference.
    pub fn effective_tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// Fully qualified form used to compare references: always a domain, a
    /// tag (`latest` unless pinned by digest only) and the digest if any.
    pub fn normalized(&self) -> String {
        let mut s = self.name();
        if let Some(t) = self.effective_tag() {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized())
    }
}

/// The first component is a registry when it looks like a host (has a `.` or
/// a port, or is `localhost`); repository paths are lowercase, so an uppercase
/// first component can only be a host too.
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, name),
    }
}

fn check_domain(domain: &str) -> Result<(), RefProblem> {
    let bad = || RefProblem::Domain(domain.to_string());
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // Bracketed IPv6 literal, optionally followed by :port.
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        if ip.is_empty() || !ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(bad());
        }
        match after {
            "" => return Ok(()),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(RefProblem::Port {
                domain: domain.to_string(),
                port: port.to_string(),
            });
        }
    }
    Ok(())
}

/// Path components: lowercase alphanumerics separated by `.`, `_`, `__` or
/// runs of `-`.
fn check_path(path: &str) -> Result<(), RefProblem> {
    for comp in path.split('/') {
        if comp.is_empty() {
            return Err(RefProblem::EmptyComponent);
        }
        if comp.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(RefProblem::Uppercase(comp.to_string()));
        }
        if !path_component_ok(comp) {
            return Err(RefProblem::Component(comp.to_string()));
        }
    }
    Ok(())
}

fn path_component_ok(comp: &str) -> bool {
    let b = comp.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &comp[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn check_tag(tag: &str) -> Result<(), RefProblem> {
    if tag.is_empty() {
        return Err(RefProblem::EmptyTag);
    }
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        return Err(RefProblem::Tag(tag.to_string()));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(RefProblem::LongTag(tag.to_string()));
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), RefProblem> {
    let Some((algo, hex)) = digest.split_once(':') else {
        return Err(RefProblem::DigestForm(digest.to_string()));
    };
    let algo_ok = !algo.is_empty()
        && algo.split(['+', '.', '_', '-']).all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !algo_ok {
        return Err(RefProblem::Algorithm(algo.to_string()));
    }
    let want_len = match algo {
        "sha256" => Some(64),
        "sha384" => Some(96),
        "sha512" => Some(128),
        _ => None,
    };
    match want_len {
        Some(n) => {
            if hex.len() != n
                || !hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            {
                return Err(RefProblem::DigestLength {
                    algorithm: algo.to_string(),
                    length: n,
                    hex: hex.to_string(),
                });
            }
        }
        None => {
            let ok = hex.len() >= 32
                && hex
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | '_' | '-'));
            if !ok {
                return Err(RefProblem::Digest(digest.to_string()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        match ImageRef::parse(s) {
            Ok(r) => r.normalized(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn normalizes_short_names() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(norm("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(
            norm("index.docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
    }

    #[test]
    fn domains() {
        assert_eq!(
            norm("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(norm("localhost/a"), "localhost/a:latest");
        assert_eq!(norm("localhost:5000/a/b:1"), "localhost:5000/a/b:1");
        assert_eq!(norm("myhost:5000/a"), "myhost:5000/a:latest");
        assert_eq!(norm("[::1]:5000/a"), "[::1]:5000/a:latest");
        // Without a dot, port or "localhost" the first component is a path.
        assert_eq!(norm("myhost/a"), "docker.io/myhost/a:latest");
    }

    #[test]
    fn digests() {
        let r = ImageRef::parse(&format!("localhost:5000/a/b@{D}")).expect("valid");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.normalized(), format!("localhost:5000/a/b@{D}"));
        assert_eq!(
            norm(&format!("nginx:1.25@{D}")),
            format!("docker.io/library/nginx:1.25@{D}")
        );
        assert_eq!(r.original, format!("localhost:5000/a/b@{D}"));
    }

    #[test]
    fn errors_name_the_reference() {
        for (bad, why) in [
            ("", "empty"),
            ("Nginx", "lowercase"),
            ("nginx:", "tag after ':' is empty"),
            ("nginx:-x", "not valid"),
            ("a b", "whitespace"),
            ("nginx@sha256:abc", "64 lowercase hex"),
            ("nginx@md5", "algorithm:hex"),
            ("a//b", "empty component"),
            ("a/b/", "empty component"),
            ("ex-.com:5000/a", "registry host"),
            ("example.com:50x0/a", "invalid port"),
            ("a__-b", "not a valid repository name"),
        ] {
            let e = ImageRef::parse(bad).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains(why), "{bad}: {msg}");
        }
    }
}
