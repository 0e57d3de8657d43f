//! The trust policy: which keys a bundle must be signed by, from every place an operator can
//! name them, and the verdict on one bundle.
//!
//! Keys come from `--key PUB` files, `--trusted-keys DIR` (every `*.pub`, and `DIR/revoked`),
//! `BALE_TRUSTED_KEYS` (a key file or such a directory), `/etc/bale/trusted-keys/` when it
//! exists, and the keys baked into the running program. A revoked key never counts, wherever
//! it is also listed.

use crate::block::{SignatureBlock, Signer};
use crate::error::{Error, Result};
use crate::keys::{fingerprint, parse_public_key, read_bounded, read_public_keys};
use bale_payload::Bundle;
use ssh_key::PublicKey;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The environment variable naming a trusted key file or directory.
pub const TRUSTED_KEYS_ENV: &str = "BALE_TRUSTED_KEYS";
/// The host-wide directory of trusted keys, used when it exists.
pub const SYSTEM_DIR: &str = "/etc/bale/trusted-keys";
/// A directory with more files than this is not a key directory.
const MAX_DIR_FILES: usize = 4096;

#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key: PublicKey,
    pub fingerprint: String,
    /// Where it was listed, for messages.
    pub source: String,
}

/// The keys a bundle must be signed by, and those that never count.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    trusted: Vec<TrustedKey>,
    revoked: BTreeSet<String>,
    sources: Vec<String>,
}

/// The flags of a command that checks bundles.
#[derive(Debug, Clone, Default)]
pub struct TrustFlags {
    /// `--key PUB` (repeatable).
    pub keys: Vec<PathBuf>,
    /// `--trusted-keys DIR` (repeatable).
    pub dirs: Vec<PathBuf>,
}

impl TrustPolicy {
    /// Every source: the flags, `BALE_TRUSTED_KEYS`, `/etc/bale/trusted-keys/`, baked keys.
    pub fn load(flags: &TrustFlags) -> Result<TrustPolicy> {
        let mut p = TrustPolicy::default();
        for k in &flags.keys {
            p.add_key_file(k)?;
        }
        for d in &flags.dirs {
            p.add_dir(d)?;
        }
        p.add_environment()?;
        Ok(p)
    }

    /// What applies with no flags (install, the node agent): the environment, the host's
    /// directory and the baked keys.
    pub fn system() -> Result<TrustPolicy> {
        TrustPolicy::load(&TrustFlags::default())
    }

    fn add_environment(&mut self) -> Result<()> {
        if let Some(v) = std::env::var_os(TRUSTED_KEYS_ENV).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(v);
            if p.is_dir() {
                self.add_dir(&p)?;
            } else {
                self.add_key_file(&p)?;
            }
            if let Some(s) = self.sources.last_mut() {
                *s = format!("{TRUSTED_KEYS_ENV}={s}");
            }
        }
        let system = Path::new(SYSTEM_DIR);
        if system.is_dir() {
            // An empty host directory means "no keys here", not an error on every command.
            self.add_dir_keys(system, false)?;
        }
        let baked = crate::baked::baked_keys();
        if !baked.trim().is_empty() {
            self.add_lines(&baked, "keys baked into this program")?;
        }
        Ok(())
    }

    /// Trust every key in a key file.
    pub fn add_key_file(&mut self, path: &Path) -> Result<()> {
        let source = path.display().to_string();
        for key in read_public_keys(path)? {
            self.push(key, &source);
        }
        self.sources.push(source);
        Ok(())
    }

    /// Trust every `*.pub` in `dir`, and revoke what `dir/revoked` lists. A directory named
    /// by the user must hold one or the other.
    pub fn add_dir(&mut self, dir: &Path) -> Result<()> {
        self.add_dir_keys(dir, true)
    }

    fn add_dir_keys(&mut self, dir: &Path, required: bool) -> Result<()> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut files = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Error::io(dir, e))?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pub") {
                files.push(p);
            }
            if files.len() > MAX_DIR_FILES {
                return Err(Error::KeyFile {
                    path: dir.into(),
                    why: format!("more than {MAX_DIR_FILES} key files"),
                });
            }
        }
        files.sort();
        for f in &files {
            let source = f.display().to_string();
            for key in read_public_keys(f)? {
                self.push(key, &source);
            }
        }
        let revoked = dir.join("revoked");
        if revoked.exists() {
            self.add_revoked(&revoked)?;
        }
        if files.is_empty() && !revoked.exists() {
            if required {
                return Err(Error::NoKeys { path: dir.into() });
            }
            return Ok(());
        }
        self.sources.push(dir.display().to_string());
        Ok(())
    }

    /// Revoke the keys a file lists: public key lines or `SHA256:...` fingerprints.
    pub fn add_revoked(&mut self, path: &Path) -> Result<()> {
        let text = read_bounded(path)?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = PathBuf::from(format!("{} line {}", path.display(), i + 1));
            if line.starts_with("SHA256:") {
                let fp: ssh_key::Fingerprint = line.parse().map_err(|e| Error::KeyFile {
                    path: at.clone(),
                    why: format!("not a SHA256 key fingerprint ({e})"),
                })?;
                self.revoked.insert(fp.to_string());
            } else {
                self.revoked
                    .insert(fingerprint(&parse_public_key(line, &at)?));
            }
        }
        Ok(())
    }

    /// Trust the key lines of `text` (the baked slot), `source` naming where they are.
    pub fn add_lines(&mut self, text: &str, source: &str) -> Result<()> {
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = parse_public_key(line, Path::new(source))?;
            self.push(key, source);
        }
        self.sources.push(source.to_string());
        Ok(())
    }

    fn push(&mut self, key: PublicKey, source: &str) {
        let fp = fingerprint(&key);
        if !self.trusted.iter().any(|t| t.fingerprint == fp) {
            self.trusted.push(TrustedKey {
                key,
                fingerprint: fp,
                source: source.to_string(),
            });
        }
    }

    /// Whether any trusted key is configured: then an unsigned or foreign bundle is refused.
    pub fn is_configured(&self) -> bool {
        !self.trusted.is_empty()
    }

    pub fn trusted(&self) -> &[TrustedKey] {
        &self.trusted
    }

    pub fn is_revoked(&self, fp: &str) -> bool {
        self.revoked.contains(fp)
    }

    /// The trusted fingerprints that count (not revoked), for messages.
    fn trusted_list(&self) -> String {
        let v: Vec<&str> = self
            .trusted
            .iter()
            .filter(|t| !self.is_revoked(&t.fingerprint))
            .map(|t| t.fingerprint.as_str())
            .collect();
        if v.is_empty() {
            "none (every listed key is revoked)".into()
        } else {
            v.join(", ")
        }
    }
}

/// The verdict on a bundle's signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by these trusted (and not revoked) keys.
    Trusted {
        by: Vec<String>,
    },
    Unsigned,
    /// Validly signed, but by no key the policy trusts.
    UnknownSigners {
        signers: Vec<String>,
    },
    /// Signed only by keys the policy trusts but revoked.
    Revoked {
        keys: Vec<String>,
    },
}

/// What the check found: the verdict, every signer (all of whose signatures verify over the
/// bundle's root) and those of them that are revoked.
#[derive(Debug, Clone)]
pub struct Report {
    pub verdict: Verdict,
    pub signers: Vec<String>,
    pub revoked: Vec<String>,
    pub configured: bool,
}

impl Report {
    /// The verdict in plain words.
    pub fn describe(&self) -> String {
        let mut s = match &self.verdict {
            Verdict::Trusted { by } => format!("signed by trusted key {}", by.join(", ")),
            Verdict::Unsigned => "unsigned".into(),
            Verdict::UnknownSigners { signers } => {
                format!("signed by unknown key {}", signers.join(", "))
            }
            Verdict::Revoked { keys } => format!("signed only by revoked key {}", keys.join(", ")),
        };
        if !matches!(self.verdict, Verdict::Revoked { .. }) && !self.revoked.is_empty() {
            s.push_str(&format!(
                " (also signed by revoked key {}, which does not count)",
                self.revoked.join(", ")
            ));
        }
        s
    }

    pub fn is_trusted(&self) -> bool {
        matches!(self.verdict, Verdict::Trusted { .. })
    }
}

/// The signers of a bundle (every signature checked over its root), without a policy: for
/// `info` and `signatures export`.
pub fn signers(bundle: &Bundle) -> Result<Vec<Signer>> {
    match bundle.signature_block()? {
        None => Ok(Vec::new()),
        Some(bytes) => SignatureBlock::decode(&bytes)?.verify_all(&bundle.root()),
    }
}

/// Checks a bundle's signatures against `policy`. A signature that does not verify over the
/// bundle's root is an error whatever the policy ([`Error::BadSignature`]).
pub fn check(bundle: &Bundle, policy: &TrustPolicy) -> Result<Report> {
    let signers = signers(bundle)?;
    let fps: Vec<String> = signers.iter().map(|s| s.fingerprint.clone()).collect();
    let revoked: Vec<String> = fps
        .iter()
        .filter(|f| policy.is_revoked(f))
        .cloned()
        .collect();
    let trusted: Vec<String> = fps
        .iter()
        .filter(|f| !policy.is_revoked(f) && policy.trusted.iter().any(|t| &&t.fingerprint == f))
        .cloned()
        .collect();
    let verdict = if fps.is_empty() {
        Verdict::Unsigned
    } else if !trusted.is_empty() {
        Verdict::Trusted { by: trusted }
    } else if !revoked.is_empty() && revoked.len() == fps.len() {
        Verdict::Revoked {
            keys: revoked.clone(),
        }
    } else {
        Verdict::UnknownSigners {
            signers: fps
                .iter()
                .filter(|f| !policy.is_revoked(f))
                .cloned()
                .collect(),
        }
    };
    Ok(Report {
        verdict,
        signers: fps,
        revoked,
        configured: policy.is_configured(),
    })
}

/// The one gate used by `verify`, `install` and the node agent: checks the bundle and, when
/// trust is configured, refuses anything not signed by a trusted key ([`Error::Untrusted`]).
pub fn enforce(bundle: &Bundle, policy: &TrustPolicy) -> Result<Report> {
    let report = check(bundle, policy)?;
    if report.configured && !report.is_trusted() {
        return Err(Error::Untrusted {
            verdict: report.describe(),
            trusted: policy.trusted_list(),
            sources: policy.sources.join(", "),
        });
    }
    Ok(report)
}
