//! The trust layer's one error type: what is wrong with a key file, a signature block or a
//! bundle's signatures, each message naming the file or key and the fix.
//!
//! Messages about a bundle do not name its path: the caller knows how it named the bundle and
//! puts that in front, once.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{}: {why}", path.display())]
    KeyFile { path: PathBuf, why: String },

    #[error(
        "{}: the private key is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },

    #[error(
        "{}: a {algorithm} key; bale signs and verifies with ed25519 keys only (make one with \
         `bale keygen -o NAME`)",
        path.display()
    )]
    WrongKeyType { path: PathBuf, algorithm: String },

    #[error(
        "{}: the private key is passphrase-protected; give the passphrase with \
         --passphrase-file FILE or BALE_KEY_PASSPHRASE",
        path.display()
    )]
    NeedPassphrase { path: PathBuf },

    #[error("{}: wrong passphrase (the key does not decrypt with it)", path.display())]
    WrongPassphrase { path: PathBuf },

    #[error("{}: already exists; bale keygen never overwrites a key (choose another -o NAME)", path.display())]
    KeyExists { path: PathBuf },

    /// The signature block is not what bale writes: the file is damaged.
    #[error("the signature block is damaged: {0}; copy the bundle again, or sign it again with `bale sign --replace`")]
    BadBlock(String),

    #[error(
        "the bundle already holds {0} signatures, the most a bundle may carry; re-sign it with \
         `bale sign --replace`"
    )]
    TooManySignatures(usize),

    /// A signature in the bundle does not verify over its root: the payload was changed after
    /// it was signed, or the signature was.
    #[error(
        "the signature by {key} does not match this bundle ({why}): its payload was changed \
         after it was signed; do not use it, get the bundle again from its publisher"
    )]
    BadSignature { key: String, why: String },

    /// Trust is configured and the bundle is not signed by any trusted key.
    #[error("refusing an untrusted bundle: {verdict}; trusted keys: {trusted} ({sources}). Sign it with a trusted key (`bale sign FILE --key KEY`) or trust its signer")]
    Untrusted {
        verdict: String,
        trusted: String,
        sources: String,
    },

    #[error("{}: holds no public key (one `ssh-ed25519 AAAA... comment` line per key)", path.display())]
    NoKeys { path: PathBuf },

    #[error(
        "{}: {why}; the program's key slot is missing, so keys cannot be baked into it (use a \
         bale program built from this source)",
        path.display()
    )]
    Slot { path: PathBuf, why: String },

    #[error("{0}")]
    Crypto(String),

    #[error(transparent)]
    Payload(#[from] bale_payload::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    /// True when trust is configured and the bundle is not signed by a trusted key (exit 4).
    pub fn is_untrusted(&self) -> bool {
        matches!(self, Error::Untrusted { .. })
    }

    /// True when the bundle's bytes are wrong: a signature that fails over its root, a damaged
    /// block, or a damaged payload (exit 3).
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::BadSignature { .. } | Error::BadBlock(_) => true,
            Error::Payload(p) => p.is_corruption(),
            _ => false,
        }
    }
}
