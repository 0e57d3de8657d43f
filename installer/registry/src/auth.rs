//! HTTP basic authentication.
//!
//! Two file formats:
//! - `--htpasswd FILE`: lines `user:HASH`, where HASH is bcrypt (`$2y$`, `$2b$`, `$2a$`, as
//!   written by `htpasswd -B`) or `sha256:` and the 64 hex digits of the SHA-256 of the password.
//!   Blank lines and lines starting with `#` are ignored; other hash schemes (MD5 `$apr1$`,
//!   `{SHA}`, crypt) are refused at start rather than silently never matching.
//! - `--basic-auth FILE`: one line `user:password`, for a single pull account whose password
//!   stays out of the process list.
//!
//! containerd sends the credentials with every request, and a bcrypt check costs tens of
//! milliseconds by design, so a successful check is remembered (by the SHA-256 of the header)
//! and bcrypt runs on a small fixed number of blocking threads: a flood of wrong passwords
//! cannot take every core.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::error::RegistryError;

/// Remembered successful credentials; past this many, the memory is cleared.
const MAX_REMEMBERED: usize = 1024;
/// bcrypt checks allowed at once.
const BCRYPT_PARALLEL: usize = 2;

#[derive(Debug, Clone)]
enum Secret {
    Bcrypt(String),
    Sha256([u8; 32]),
}

/// A set of accounts allowed to pull.
#[derive(Debug)]
pub struct Auth {
    users: HashMap<String, Secret>,
    realm: String,
    remembered: Mutex<HashSet<[u8; 32]>>,
    bcrypt_gate: Arc<Semaphore>,
}

impl Auth {
    fn new(users: HashMap<String, Secret>) -> Auth {
        Auth {
            users,
            realm: "bale registry".into(),
            remembered: Mutex::new(HashSet::new()),
            bcrypt_gate: Arc::new(Semaphore::new(BCRYPT_PARALLEL)),
        }
    }

    /// One account with a clear-text password (kept only as its SHA-256).
    pub fn single(user: &str, password: &str) -> Auth {
        let mut users = HashMap::new();
        users.insert(
            user.to_string(),
            Secret::Sha256(Sha256::digest(password.as_bytes()).into()),
        );
        Auth::new(users)
    }

    /// Reads an htpasswd-style file (bcrypt or `sha256:` hashes).
    pub fn from_htpasswd(path: &Path) -> Result<Auth, RegistryError> {
        let text = read_secret_file(path)?;
        let bad = |line: usize, why: &str| RegistryError::Credentials {
            path: path.to_path_buf(),
            why: format!("line {line}: {why}"),
        };
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad(i + 1, "expected user:hash"))?;
            if user.is_empty() {
                return Err(bad(i + 1, "empty user name"));
            }
            let secret = if let Some(hex) = hash.strip_prefix("sha256:") {
                let mut d = [0u8; 32];
                hex::decode_to_slice(hex, &mut d)
                    .map_err(|_| bad(i + 1, "sha256: must be followed by 64 hex digits"))?;
                Secret::Sha256(d)
            } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                Secret::Bcrypt(hash.to_string())
            } else {
                return Err(bad(
                    i + 1,
                    "unsupported hash: use bcrypt (htpasswd -B) or sha256:HEX",
                ));
            };
            users.insert(user.to_string(), secret);
        }
        if users.is_empty() {
            return Err(RegistryError::Credentials {
                path: path.to_path_buf(),
                why: "no account in the file".into(),
            });
        }
        Ok(Auth::new(users))
    }

    /// Reads a file holding one `user:password` line.
    pub fn from_credentials_file(path: &Path) -> Result<Auth, RegistryError> {
        let text = read_secret_file(path)?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        match line.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(Auth::single(u, p)),
            _ => Err(RegistryError::Credentials {
                path: path.to_path_buf(),
                why: "expected one line user:password".into(),
            }),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Whether an `Authorization` header value grants access.
    pub async fn check(&self, header: Option<&[u8]>) -> bool {
        let Some(header) = header else {
            return false;
        };
        let key: [u8; 32] = Sha256::digest(header).into();
        if self.is_remembered(&key) {
            return true;
        }
        let Some((user, password)) = parse_basic(header) else {
            return false;
        };
        let ok = match self.users.get(&user) {
            None => false,
            Some(Secret::Sha256(want)) => {
                let got: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                constant_time_eq(&got, want)
            }
            Some(Secret::Bcrypt(hash)) => {
                let Ok(_permit) = self.bcrypt_gate.clone().acquire_owned().await else {
                    return false;
                };
                let hash = hash.clone();
                tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false)
            }
        };
        if ok {
            if let Ok(mut m) = self.remembered.lock() {
                if m.len() >= MAX_REMEMBERED {
                    m.clear();
                }
                m.insert(key);
            }
        }
        ok
    }

    fn is_remembered(&self, key: &[u8; 32]) -> bool {
        self.remembered.lock().is_ok_and(|m| m.contains(key))
    }
}

fn read_secret_file(path: &Path) -> Result<String, RegistryError> {
    let bytes = std::fs::read(path).map_err(|e| RegistryError::io(path, e))?;
    String::from_utf8(bytes).map_err(|_| RegistryError::Credentials {
        path: path.to_path_buf(),
        why: "not UTF-8 text".into(),
    })
}

fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn sha256_and_bcrypt_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("htpasswd");
        let bc = bcrypt::hash("s3cret", 4).unwrap();
        let sha = hex::encode(Sha256::digest(b"pw2"));
        std::fs::write(&f, format!("# comment\nalice:{bc}\n\nbob:sha256:{sha}\n")).unwrap();
        let a = Auth::from_htpasswd(&f).unwrap();
        assert!(a.check(Some(&basic("alice", "s3cret"))).await);
        assert!(a.check(Some(&basic("alice", "s3cret"))).await);
        assert!(!a.check(Some(&basic("alice", "wrong"))).await);
        assert!(a.check(Some(&basic("bob", "pw2"))).await);
        assert!(!a.check(Some(&basic("carol", "pw2"))).await);
        assert!(!a.check(Some(b"Bearer x")).await);
        assert!(!a.check(Some(b"Basic !!!")).await);
        assert!(!a.check(None).await);
    }

    #[test]
    fn unsupported_hashes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("htpasswd");
        std::fs::write(&f, "alice:$apr1$abc$def\n").unwrap();
        let err = Auth::from_htpasswd(&f).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("bcrypt"), "{err}");
        std::fs::write(&f, "\n# nothing\n").unwrap();
        assert!(Auth::from_htpasswd(&f).is_err());
    }

    #[tokio::test]
    async fn credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cred");
        std::fs::write(&f, "puller:pa:ss\n").unwrap();
        let a = Auth::from_credentials_file(&f).unwrap();
        assert!(a.check(Some(&basic("puller", "pa:ss"))).await);
        std::fs::write(&f, "nocolon\n").unwrap();
        assert!(Auth::from_credentials_file(&f).is_err());
    }
}
