//! What can go wrong pushing or pulling a bundle. Messages name the bundle file, the registry,
//! the blob and what to do.

use crate::images::ImagesError;
use std::path::PathBuf;

pub type Result<T, E = ShareError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    // Causes are part of the text and not sources, so a chain printer shows each once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A transfer of one chunk failed for good (after the retries).
    #[error("blob {digest} (chunk {index} of {count}) at {registry}: {cause}")]
    Blob {
        digest: String,
        index: usize,
        count: usize,
        registry: String,
        cause: Box<ImagesError>,
    },

    /// Bytes from the registry that are not the ones the manifest names.
    #[error(
        "blob {digest} (chunk {index} of {count}) from {registry} has digest {actual}: the \
         registry's copy is damaged or was replaced; push the bundle again"
    )]
    Corrupt {
        digest: String,
        index: usize,
        count: usize,
        registry: String,
        actual: String,
    },

    /// A manifest that is not a bale bundle, or one that does not add up.
    #[error("{reference}: {message}")]
    Manifest { reference: String, message: String },

    #[error("{what}: {message}")]
    Invalid { what: String, message: String },

    #[error(transparent)]
    Registry(#[from] ImagesError),

    /// The payload's errors name the file they are about.
    #[error(transparent)]
    Bundle(#[from] bale_payload::Error),
    /// Where pulled bundles are kept.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The pulled bundle's signatures: not trusted, or a signature that fails over its root.
    #[error("{}", path.display())]
    Trust {
        path: PathBuf,
        #[source]
        source: bale_trust::Error,
    },
}

impl ShareError {
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        ShareError::Io {
            path: path.into(),
            cause,
        }
    }

    pub(crate) fn manifest(reference: &str, message: impl Into<String>) -> Self {
        ShareError::Manifest {
            reference: reference.to_string(),
            message: message.into(),
        }
    }

    /// Bytes were wrong (a damaged blob or bundle), as opposed to a failure to get them:
    /// `bale` exits 3 for these.
    pub fn is_damaged(&self) -> bool {
        match self {
            ShareError::Corrupt { .. } => true,
            ShareError::Bundle(e) => e.is_corruption(),
            ShareError::Store(e) => e.is_damaged(),
            _ => false,
        }
    }
}
