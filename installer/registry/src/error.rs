//! Errors: [`RegistryError`] for starting the server, [`ApiError`] for what a client is told.

use std::path::PathBuf;

use hyper::StatusCode;

/// Why the registry could not be set up or could not run.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Reading the bundle failed; kept as the source so that a damaged bundle is told apart.
    #[error("reading the bundle's images")]
    Bundle(#[from] bale_payload::Error),

    #[error("this bale program carries no bundle; pass --bundle FILE to serve another one")]
    NoBundle,

    #[error("{}: registry/index.json is unusable", bundle.display())]
    Index {
        bundle: PathBuf,
        #[source]
        source: IndexError,
    },

    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a usable PEM file", path.display())]
    TlsPem {
        path: PathBuf,
        #[source]
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },

    #[error("{}: no certificate in it", path.display())]
    NoCertificate { path: PathBuf },

    #[error("the TLS certificate and key do not make a server configuration")]
    TlsConfig(#[source] tokio_rustls::rustls::Error),

    #[error("{path}: {why}")]
    Credentials { path: PathBuf, why: String },

    #[error("cannot start the registry's {what}")]
    Start {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("the registry's server thread panicked")]
    Panicked,
}

/// What is wrong with a bundle's `registry/index.json`, or the graph of manifests it opens.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
    #[error("it is larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error(transparent)]
    Json(bale_contract::oci::OciError),
    #[error(
        "its images link to more than {max} manifests and blobs (counting each repository \
         apart): the bundle is hostile or broken"
    )]
    TooManyLinks { max: usize },
}

impl RegistryError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RegistryError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The error codes of the OCI distribution specification that a read-only registry can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    Unauthorized,
    Unsupported,
    /// Not in the OCI list, but what the reference implementation answers to a bad `n`.
    PaginationNumberInvalid,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Unsupported => "UNSUPPORTED",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
        }
    }
}

/// An error answered to a client as `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} {}: {message}", status.as_u16(), code.as_str())]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::json!({
            "errors": [{
                "code": self.code.as_str(),
                "message": self.message,
                "detail": serde_json::Value::Null,
            }]
        })
        .to_string()
        .into_bytes()
    }
}
