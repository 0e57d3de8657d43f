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
//! milliseconds by design, so the outcome of a check is remembered (by the SHA-256 of the
//! header), and bcrypt runs on a small fixed number of blocking threads, so a flood of wrong
//! passwords cannot take every core. Within that pool each peer address has one check at a
//! time: a peer sending hundreds of wrong passwords queues behind itself, and a correct login
//! from elsewhere waits for at most one check per busy peer, not for the whole flood.
//!
//! A name that is not in the file costs what a known name with a wrong password costs (a
//! bcrypt check against a hash made at start with the file's highest cost), so the time of an
//! answer does not tell which names exist.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::error::RegistryError;

/// Remembered successful checks; past this many, that memory is cleared.
const MAX_GRANTED: usize = 1024;
/// Remembered failed checks, apart, so a flood of them cannot push out the good ones.
const MAX_REFUSED: usize = 4096;
/// bcrypt checks allowed at once, over all peers.
const BCRYPT_PARALLEL: usize = 2;
/// bcrypt checks allowed at once for one peer address; its others wait for them.
const BCRYPT_PER_PEER: usize = 1;

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
    /// What a name not in the file is checked against; a bcrypt hash when any account has
    /// one, so that every wrong answer costs a bcrypt check.
    dummy: Secret,
    /// Outcomes of past checks, by the SHA-256 of the `Authorization` header.
    granted: Mutex<HashSet<[u8; 32]>>,
    refused: Mutex<HashSet<[u8; 32]>>,
    bcrypt_gate: Arc<Semaphore>,
    peer_gates: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl Auth {
    fn new(users: HashMap<String, Secret>) -> Auth {
        let highest_cost = users
            .values()
            .filter_map(|s| match s {
                Secret::Bcrypt(h) => bcrypt_cost(h),
                Secret::Sha256(_) => None,
            })
            .max();
        // Its password does not matter: a name not in the file is refused whatever it matches.
        let dummy = highest_cost
            .and_then(|cost| bcrypt::hash("no such account", cost).ok())
            .map_or(Secret::Sha256([0; 32]), Secret::Bcrypt);
        Auth {
            users,
            realm: "bale registry".into(),
            dummy,
            granted: Mutex::new(HashSet::new()),
            refused: Mutex::new(HashSet::new()),
            bcrypt_gate: Arc::new(Semaphore::new(BCRYPT_PARALLEL)),
            peer_gates: Mutex::new(HashMap::new()),
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

    /// Whether an `Authorization` header value, sent by `peer`, grants access.
    pub async fn check(&self, header: Option<&[u8]>, peer: IpAddr) -> bool {
        let Some(header) = header else {
            return false;
        };
        let key: [u8; 32] = Sha256::digest(header).into();
        if contains(&self.granted, &key) {
            return true;
        }
        if contains(&self.refused, &key) {
            return false;
        }
        let Some((user, password)) = parse_basic(header) else {
            return false;
        };
        let ok = match self.users.get(&user) {
            Some(secret) => {
                let ok = self.verify(secret, password.clone(), peer).await;
                // A SHA-256 account next to bcrypt ones pays for a bcrypt check as well, so
                // that it answers no faster than a name that is not there.
                if matches!(secret, Secret::Sha256(_)) && matches!(self.dummy, Secret::Bcrypt(_)) {
                    self.verify(&self.dummy, password, peer).await;
                }
                ok
            }
            None => {
                self.verify(&self.dummy, password, peer).await;
                false
            }
        };
        let (memory, max) = if ok {
            (&self.granted, MAX_GRANTED)
        } else {
            (&self.refused, MAX_REFUSED)
        };
        let mut m = memory.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= max {
            m.clear();
        }
        m.insert(key);
        ok
    }

    async fn verify(&self, secret: &Secret, password: String, peer: IpAddr) -> bool {
        match secret {
            Secret::Sha256(want) => {
                let got: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                constant_time_eq(&got, want)
            }
            Secret::Bcrypt(hash) => {
                // The peer's own turn first, then one of the shared threads: a peer's queue
                // never holds more than its one check in the shared one.
                let gate = self.peer_gate(peer);
                let Ok(_mine) = gate.acquire().await else {
                    return false;
                };
                let Ok(_shared) = self.bcrypt_gate.acquire().await else {
                    return false;
                };
                let hash = hash.clone();
                let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false);
                drop(_mine);
                self.forget_idle_gate(peer, gate);
                ok
            }
        }
    }

    fn peer_gate(&self, peer: IpAddr) -> Arc<Semaphore> {
        let mut gates = self.peer_gates.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(BCRYPT_PER_PEER)))
            .clone()
    }

    /// Drops a peer's gate once nobody holds or waits on it, so the map stays as small as the
    /// set of peers checking right now.
    fn forget_idle_gate(&self, peer: IpAddr, gate: Arc<Semaphore>) {
        let mut gates = self.peer_gates.lock().unwrap_or_else(|e| e.into_inner());
        drop(gate);
        if gates.get(&peer).is_some_and(|g| Arc::strong_count(g) == 1) {
            gates.remove(&peer);
        }
    }
}

fn contains(memory: &Mutex<HashSet<[u8; 32]>>, key: &[u8; 32]) -> bool {
    memory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(key)
}

/// The cost of a `$2?$NN$...` hash.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
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
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

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
        assert!(a.check(Some(&basic("alice", "s3cret")), PEER).await);
        assert!(a.check(Some(&basic("alice", "s3cret")), PEER).await);
        assert!(!a.check(Some(&basic("alice", "wrong")), PEER).await);
        assert!(a.check(Some(&basic("bob", "pw2")), PEER).await);
        assert!(!a.check(Some(&basic("carol", "pw2")), PEER).await);
        assert!(!a.check(Some(b"Bearer x"), PEER).await);
        assert!(!a.check(Some(b"Basic !!!"), PEER).await);
        assert!(!a.check(None, PEER).await);
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
        assert!(a.check(Some(&basic("puller", "pa:ss")), PEER).await);
        std::fs::write(&f, "nocolon\n").unwrap();
        assert!(Auth::from_credentials_file(&f).is_err());
    }

    fn bcrypt_account(dir: &Path, cost: u32) -> Auth {
        let f = dir.join("htpasswd");
        let hash = bcrypt::hash("right", cost).unwrap();
        let sha = hex::encode(Sha256::digest(b"pw2"));
        std::fs::write(&f, format!("alice:{hash}\nbob:sha256:{sha}\n")).unwrap();
        Auth::from_htpasswd(&f).unwrap()
    }

    /// Finding F7: a name not in the file was refused in 0.19 ms, a known one with a wrong
    /// password in 58.8 ms, which told an attacker which names exist.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_names_cost_what_wrong_passwords_cost() {
        let dir = tempfile::tempdir().unwrap();
        let auth = bcrypt_account(dir.path(), 8);
        // Interleaved, and the fastest of each kept: whatever else runs on the machine slows
        // every kind alike, and the fastest shows what a check costs by itself.
        let mut fastest = [Duration::MAX; 3];
        for i in 0..7 {
            for (k, user) in ["alice", "mallory", "bob"].into_iter().enumerate() {
                let started = Instant::now();
                assert!(
                    !auth
                        .check(Some(&basic(user, &format!("no{i}"))), PEER)
                        .await
                );
                fastest[k] = fastest[k].min(started.elapsed());
            }
        }
        let [known, unknown, sha_account] = fastest;
        eprintln!("known name {known:?}, unknown name {unknown:?}, sha256 account {sha_account:?}");
        assert!(
            unknown * 2 > known && sha_account * 2 > known,
            "wrong password for a known name {known:?}, an unknown name {unknown:?}, a \
             sha256 account {sha_account:?}"
        );
        // A check already made is answered from memory, whatever its outcome.
        let started = Instant::now();
        assert!(!auth.check(Some(&basic("mallory", "no1")), PEER).await);
        assert!(started.elapsed() < known / 2, "{:?}", started.elapsed());
    }

    /// Finding F6: bcrypt checks ran two at a time in one queue, so 200 wrong passwords
    /// delayed a correct login from elsewhere by 16.7 s. Each peer now queues behind itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_passwords_from_one_peer_barely_delay_a_login_from_another() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(bcrypt_account(dir.path(), 8));
        let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66));
        let started = Instant::now();
        assert!(!auth.check(Some(&basic("alice", "probe")), attacker).await);
        let one = started.elapsed();

        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let flood: Vec<_> = (0..200)
            .map(|i| {
                let (auth, queued) = (auth.clone(), queued.clone());
                tokio::spawn(async move {
                    let header = basic("alice", &format!("wrong{i}"));
                    let check = auth.check(Some(&header), attacker);
                    // Counted in the poll of this task that queues the check.
                    queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    check.await
                })
            })
            .collect();
        // Every check of the flood is queued before the login starts.
        while queued.load(std::sync::atomic::Ordering::SeqCst) < flood.len() {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        assert!(auth.check(Some(&basic("alice", "right")), PEER).await);
        let login = started.elapsed();
        for f in &flood {
            f.abort();
        }
        eprintln!("a correct login behind 200 wrong passwords: {login:?} (one check {one:?})");
        assert!(
            login < one * 25,
            "a correct login took {login:?} behind a flood of wrong passwords (one check: \
             {one:?})"
        );
    }
}
