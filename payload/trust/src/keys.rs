//! Key files: making an ed25519 pair, loading a private key to sign with (permissions,
//! passphrase), and reading public key lines.
//!
//! Keys are OpenSSH's formats, so the same files work with `ssh-keygen -Y verify`: the private
//! key is `-----BEGIN OPENSSH PRIVATE KEY-----` (optionally passphrase-encrypted), the public
//! key one `ssh-ed25519 AAAA... comment` line.

use crate::error::{Error, Result};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A key file larger than this is not a key: refused before it is read whole.
const MAX_KEY_FILE: u64 = 1 << 20;

/// `SHA256:...`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// `ssh-ed25519 AAAA... comment`, one line.
pub fn public_line(key: &PublicKey) -> Result<String> {
    key.to_openssh()
        .map_err(|e| Error::Crypto(format!("cannot encode a public key: {e}")))
}

/// `ssh-ed25519 AAAA...` without the comment (whose spaces another file format may not take).
pub fn public_line_bare(key: &PublicKey) -> Result<String> {
    let mut k = key.clone();
    k.set_comment("");
    public_line(&k)
}

/// Reads a small text file, refusing one too large to be a key file.
pub(crate) fn read_bounded(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(Error::KeyFile {
            path: path.into(),
            why: format!("larger than {MAX_KEY_FILE} bytes: not a key file"),
        });
    }
    String::from_utf8(buf).map_err(|_| Error::KeyFile {
        path: path.into(),
        why: "not text: a key file holds OpenSSH key lines".into(),
    })
}

/// Parses one public key line, ed25519 only. `what` names where it came from in errors.
pub fn parse_public_key(line: &str, what: &Path) -> Result<PublicKey> {
    let key = PublicKey::from_openssh(line.trim()).map_err(|e| Error::KeyFile {
        path: what.into(),
        why: format!(
            "not an OpenSSH public key line ({e}): expected `ssh-ed25519 AAAA... comment`"
        ),
    })?;
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(Error::WrongKeyType {
            path: what.into(),
            algorithm: key.algorithm().to_string(),
        });
    }
    Ok(key)
}

/// Every public key in a key file: one per line, blank lines and `#` comments skipped.
pub fn read_public_keys(path: &Path) -> Result<Vec<PublicKey>> {
    let text = read_bounded(path)?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = PathBuf::from(format!("{} line {}", path.display(), i + 1));
        keys.push(parse_public_key(line, &at)?);
    }
    if keys.is_empty() {
        return Err(Error::NoKeys { path: path.into() });
    }
    Ok(keys)
}

/// Where a passphrase comes from: a file (first line) or the environment.
pub const PASSPHRASE_ENV: &str = "BALE_KEY_PASSPHRASE";

/// The passphrase from `--passphrase-file` or `BALE_KEY_PASSPHRASE`, if either is given.
pub fn passphrase(file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        let text = read_bounded(f)?;
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(Error::KeyFile {
                path: f.into(),
                why: "the passphrase file is empty".into(),
            });
        }
        return Ok(Some(line.to_string()));
    }
    Ok(std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty()))
}

/// Loads a private key to sign with: refuses one readable by group or others, and one that is
/// not ed25519; decrypts it with `passphrase` when it is encrypted.
pub fn load_private_key(path: &Path, passphrase: Option<&str>) -> Result<PrivateKey> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyPermissions {
            path: path.into(),
            mode,
        });
    }
    let text = read_bounded(path)?;
    let key = PrivateKey::from_openssh(text.trim_start()).map_err(|e| Error::KeyFile {
        path: path.into(),
        why: format!(
            "not an OpenSSH private key ({e}): expected a file starting with \
             -----BEGIN OPENSSH PRIVATE KEY----- (made by `bale keygen` or `ssh-keygen -t ed25519`)"
        ),
    })?;
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(Error::WrongKeyType {
            path: path.into(),
            algorithm: key.algorithm().to_string(),
        });
    }
    if !key.is_encrypted() {
        return Ok(key);
    }
    let Some(p) = passphrase else {
        return Err(Error::NeedPassphrase { path: path.into() });
    };
    key.decrypt(p)
        .map_err(|_| Error::WrongPassphrase { path: path.into() })
}

/// What `keygen` made.
#[derive(Debug)]
pub struct NewKey {
    pub private: PathBuf,
    pub public: PathBuf,
    pub fingerprint: String,
    pub public_line: String,
}

/// Makes an ed25519 pair: `name` (private, 0600, encrypted when a passphrase is given) and
/// `name.pub` (0644). Neither may exist; each is written under a temporary name and linked to
/// its final name, which fails rather than overwrite, so a final name never holds a partial key.
pub fn keygen(name: &Path, comment: &str, passphrase: Option<&str>) -> Result<NewKey> {
    let public = {
        let mut s = name.as_os_str().to_owned();
        s.push(".pub");
        PathBuf::from(s)
    };
    for p in [name, public.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(Error::KeyExists { path: p.into() });
        }
    }
    let mut key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519)
        .map_err(|e| Error::Crypto(format!("cannot make an ed25519 key: {e}")))?;
    key.set_comment(comment);
    let public_line = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::Crypto(format!("cannot encode the public key: {e}")))?;
    let stored = match passphrase {
        Some(p) => key
            .encrypt(&mut rand_core::OsRng, p)
            .map_err(|e| Error::Crypto(format!("cannot encrypt the key: {e}")))?,
        None => key.clone(),
    };
    let pem = stored
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::Crypto(format!("cannot encode the private key: {e}")))?;
    write_new(name, pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, format!("{public_line}\n").as_bytes(), 0o644) {
        let _ = std::fs::remove_file(name);
        return Err(e);
    }
    Ok(NewKey {
        private: name.into(),
        public,
        fingerprint: fingerprint(key.public_key()),
        public_line,
    })
}

/// Writes `data` to a new file `path` with `mode`: a temporary name in the same directory,
/// flushed, then hard-linked to `path` (which fails if `path` exists) and unlinked.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have cleared bits of `mode` (0644 under umask 077 is fine as 0600, but
        // a private key must never gain any).
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Error::KeyExists { path: path.into() })
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_makes_a_pair_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let name = d.path().join("k");
        let k = keygen(&name, "me@site", None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&name), 0o600);
        assert_eq!(mode(&k.public), 0o644);
        let pubs = read_public_keys(&k.public).unwrap();
        assert_eq!(fingerprint(&pubs[0]), k.fingerprint);
        assert!(k.fingerprint.starts_with("SHA256:"));
        let private = load_private_key(&name, None).unwrap();
        assert_eq!(fingerprint(private.public_key()), k.fingerprint);
        let err = keygen(&name, "again", None).unwrap_err();
        assert!(matches!(err, Error::KeyExists { .. }), "{err}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_key_readable_by_others_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let name = d.path().join("k");
        keygen(&name, "", None).unwrap();
        std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_private_key(&name, None).unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && err.contains(&*name.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn an_encrypted_key_needs_its_passphrase() {
        let d = tempfile::tempdir().unwrap();
        let name = d.path().join("k");
        let k = keygen(&name, "", Some("correct horse")).unwrap();
        let text = std::fs::read_to_string(&name).unwrap();
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(matches!(
            load_private_key(&name, None),
            Err(Error::NeedPassphrase { .. })
        ));
        assert!(matches!(
            load_private_key(&name, Some("wrong")),
            Err(Error::WrongPassphrase { .. })
        ));
        let key = load_private_key(&name, Some("correct horse")).unwrap();
        assert_eq!(fingerprint(key.public_key()), k.fingerprint);
    }

    #[test]
    fn only_ed25519_keys_are_accepted() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("rsa.pub");
        // A real (short) RSA public key line.
        std::fs::write(
            &f,
            "# a comment\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDH0XtT1Z6Y5N8h0l1+Fh0m6Q8sMZpZ1S6kmYh2a0d1o3bp5r6T5yYc5k2x3gqg0YfVfZpG8HqE3bS6mQ8yH0cLxW3z4pE9t7q3mZ2B7J4yQ5mPpL2c7cE8y2uQ1lXn0X9i3f5yWvJ8lK0qN1mZfO0Hc4s6v1lD2y3xA5w5V7XxQ== x\n",
        )
        .unwrap();
        let err = read_public_keys(&f).unwrap_err();
        assert!(
            matches!(err, Error::WrongKeyType { .. } | Error::KeyFile { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("line 2"), "{err}");
        std::fs::write(&f, "# only comments\n\n").unwrap();
        assert!(matches!(read_public_keys(&f), Err(Error::NoKeys { .. })));
    }
}
