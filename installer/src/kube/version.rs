//! The Kubernetes version a bundle carries, as kubeadm prints it (`kubeadm version -o short`:
//! `v1.36.3`), and the kubeadm configuration API that version reads.
//!
//! Only release versions are taken: the version picks the control-plane image tags kubeadm
//! asks for, and a pre-release or build suffix silently dropped would name images the
//! bundle does not hold.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a version string was refused, or a version is one bale cannot configure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("{0:?} is not a Kubernetes version: expected MAJOR.MINOR.PATCH such as v1.36.3")]
    Malformed(String),
    #[error(
        "{0:?} is a pre-release or build of Kubernetes: bale configures release versions only \
         (vMAJOR.MINOR.PATCH), because the version names the control-plane images"
    )]
    NotARelease(String),
    #[error(
        "Kubernetes {0} is too old: kubeadm before 1.15 has no configuration API bale writes \
         (v1beta2 came with 1.15); bundle Kubernetes 1.15 or newer"
    )]
    TooOld(KubeVersion),
    #[error("Kubernetes {0} is not version 1.x, the only major version bale knows")]
    UnknownMajor(KubeVersion),
}

/// A Kubernetes release version. Ordered the way versions are (1.9 < 1.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KubeVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> KubeVersion {
        KubeVersion {
            major,
            minor,
            patch,
        }
    }

    /// `v1.36.3` or `1.36.3`, with surrounding white space (a trailing newline from
    /// `kubeadm version -o short`) ignored.
    pub fn parse(s: &str) -> Result<KubeVersion, VersionError> {
        let t = s.trim();
        let without_v = t.strip_prefix('v').unwrap_or(t);
        // `1.36.0-rc.1`, `1.36.3+dirty`: a release's numbers, then a suffix.
        let (digits, suffix) = match without_v.find(['-', '+']) {
            Some(i) => (&without_v[..i], Some(&without_v[i..])),
            None => (without_v, None),
        };
        let malformed = || VersionError::Malformed(t.to_string());
        let mut parts = digits.split('.');
        let mut number = || -> Result<u32, VersionError> {
            let p = parts.next().ok_or_else(malformed)?;
            // u32::from_str takes a leading '+'; a version never has one.
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            p.parse().map_err(|_| malformed())
        };
        let v = KubeVersion::new(number()?, number()?, number()?);
        if parts.next().is_some() {
            return Err(malformed());
        }
        if suffix.is_some() {
            return Err(VersionError::NotARelease(t.to_string()));
        }
        Ok(v)
    }

    /// Whether this is at least `major.minor` (any patch).
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// The kubeadm configuration API this version's kubeadm reads: v1beta4 from 1.31,
    /// v1beta3 from 1.22, v1beta2 from 1.15 (each newer kubeadm drops the older APIs in
    /// time: 1.36 reads only v1beta4).
    pub fn kubeadm_api(self) -> Result<KubeadmApi, VersionError> {
        if self.major != 1 {
            return Err(VersionError::UnknownMajor(self));
        }
        Ok(match self.minor {
            31.. => KubeadmApi::V1beta4,
            22..=30 => KubeadmApi::V1beta3,
            15..=21 => KubeadmApi::V1beta2,
            _ => return Err(VersionError::TooOld(self)),
        })
    }
}

impl fmt::Display for KubeVersion {
    /// The form kubeadm's `kubernetesVersion` and the image tags use: `v1.36.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for KubeVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KubeVersion::parse(s)
    }
}

/// A kubeadm configuration API version (`apiVersion: kubeadm.k8s.io/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KubeadmApi {
    /// kubeadm 1.15–1.21 (read until 1.25). No `skipPhases`: phases are skipped by flag.
    V1beta2,
    /// kubeadm 1.22–1.30. Extra arguments are maps; timeouts sit in `apiServer` and
    /// `discovery`.
    V1beta3,
    /// kubeadm 1.31 on. Extra arguments are lists of `{name, value}`; timeouts gather
    /// under `timeouts`; DNS and kube-proxy can be `disabled`.
    V1beta4,
}

impl KubeadmApi {
    pub fn api_version(self) -> &'static str {
        match self {
            KubeadmApi::V1beta2 => "kubeadm.k8s.io/v1beta2",
            KubeadmApi::V1beta3 => "kubeadm.k8s.io/v1beta3",
            KubeadmApi::V1beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }
}

impl fmt::Display for KubeadmApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_version())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubeadm_short_output() {
        let v = KubeVersion::parse("v1.36.3\n").unwrap();
        assert_eq!(v, KubeVersion::new(1, 36, 3));
        assert_eq!(v.to_string(), "v1.36.3");
        assert_eq!(
            "1.20.2".parse::<KubeVersion>().unwrap(),
            KubeVersion::new(1, 20, 2)
        );
        assert_eq!(KubeVersion::parse("  v1.9.11 \r\n").unwrap().minor, 9);
    }

    #[test]
    fn refuses_what_is_not_a_release_version() {
        for bad in [
            "",
            "v",
            "1.36",
            "1.36.",
            "v1.36.3.4",
            "1..3",
            "x1.36.3",
            "v1.+36.3",
            "1.36.3a",
            "v 1.36.3",
            "1.36.99999999999",
            "1.36-rc.1",
        ] {
            assert!(
                matches!(KubeVersion::parse(bad), Err(VersionError::Malformed(_))),
                "{bad:?}: {:?}",
                KubeVersion::parse(bad)
            );
        }
        for pre in ["v1.36.0-rc.1", "v1.36.3+dirty", "1.20.5+really1.20.2"] {
            let e = KubeVersion::parse(pre).unwrap_err();
            assert!(matches!(e, VersionError::NotARelease(_)), "{pre}: {e}");
            assert!(e.to_string().contains("release versions only"));
        }
    }

    #[test]
    fn orders_numerically() {
        assert!(KubeVersion::new(1, 9, 0) < KubeVersion::new(1, 10, 0));
        assert!(KubeVersion::new(1, 35, 0).at_least(1, 35));
        assert!(!KubeVersion::new(1, 34, 9).at_least(1, 35));
        assert!(KubeVersion::new(2, 0, 0).at_least(1, 99));
    }

    #[test]
    fn kubeadm_api_by_minor_version() {
        let api = |minor| KubeVersion::new(1, minor, 0).kubeadm_api();
        for (minor, want) in [
            (15, KubeadmApi::V1beta2),
            (20, KubeadmApi::V1beta2),
            (21, KubeadmApi::V1beta2),
            (22, KubeadmApi::V1beta3),
            (30, KubeadmApi::V1beta3),
            (31, KubeadmApi::V1beta4),
            (36, KubeadmApi::V1beta4),
            (40, KubeadmApi::V1beta4),
        ] {
            assert_eq!(api(minor), Ok(want), "1.{minor}");
        }
        let e = api(14).unwrap_err();
        assert_eq!(e, VersionError::TooOld(KubeVersion::new(1, 14, 0)));
        assert!(e.to_string().contains("1.15 or newer"), "{e}");
        assert!(matches!(
            KubeVersion::new(2, 0, 0).kubeadm_api(),
            Err(VersionError::UnknownMajor(_))
        ));
        assert_eq!(KubeadmApi::V1beta4.api_version(), "kubeadm.k8s.io/v1beta4");
        assert_eq!(KubeadmApi::V1beta2.to_string(), "kubeadm.k8s.io/v1beta2");
    }
}
