//! What can go wrong in the local bundle store. Messages name the store, the tag or digest,
//! and what to do.

use std::path::PathBuf;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The cause is part of the text and not a source, so a chain printer shows it once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A name, tag or digest the store cannot take.
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },

    /// Nothing in the store answers to this name or digest.
    #[error("{what}: not in the bundle store {}; `bale images --store {}` lists what is there", store.display(), store.display())]
    NotFound { what: String, store: PathBuf },

    /// A digest that several tags name, removed only with `--force`.
    #[error(
        "{digest}: still tagged {tags}; remove those tags first, or add --force to remove them \
         all with the bundle"
    )]
    StillTagged { digest: String, tags: String },

    /// The index is not what the store writes.
    #[error(
        "{}: not a bundle store index ({message}); move it aside (the bundles under sha256/ \
         stay) and tag them again with `bale build -t`",
        path.display()
    )]
    Index { path: PathBuf, message: String },

    /// An entry whose bytes are not the bundle its digest names: a damaged store.
    #[error(
        "{}: {message}; the store entry is damaged: `bale rmi --force {digest}` and build or \
         pull the bundle again",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        digest: String,
        message: String,
    },

    /// The payload's errors name the file they are about.
    #[error(transparent)]
    Bundle(#[from] bale_payload::Error),

    /// A stored bundle's signatures: not trusted now, or a signature that fails over its root.
    #[error("{}", path.display())]
    Trust {
        path: PathBuf,
        #[source]
        source: bale_trust::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            cause,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            what: what.into(),
            message: message.into(),
        }
    }

    /// Bytes were wrong (a damaged entry), as opposed to a failure to get them: `bale`
    /// exits 3 for these.
    pub fn is_damaged(&self) -> bool {
        match self {
            StoreError::Damaged { .. } => true,
            StoreError::Bundle(e) => e.is_corruption(),
            _ => false,
        }
    }
}
