use std::path::PathBuf;

pub type Result<T, E = ImagesError> = std::result::Result<T, E>;

/// Everything that can go wrong collecting images. Messages name the image, the file or the
/// registry involved, and what a user can do.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    // Causes are part of the text and not sources, so a chain printer shows each once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{what}: {message}")]
    Invalid { what: String, message: String },

    #[error(
        "{what} has digest {actual}, expected {expected}: the content is damaged or was \
         replaced; it was not kept"
    )]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("{what}: {message}")]
    Unsupported { what: String, message: String },

    #[error("image {image} is {found}, but the bundle is for {wanted}{hint}")]
    PlatformMismatch {
        image: String,
        found: String,
        wanted: String,
        hint: String,
    },

    #[error("image {image} has no {wanted} variant (it offers: {available})")]
    NoPlatform {
        image: String,
        wanted: String,
        available: String,
    },

    #[error("image {image}: {message}")]
    NotFound { image: String, message: String },

    #[error("{host}: {message}")]
    Auth { host: String, message: String },

    #[error("{url}: HTTP {status}{message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },

    #[error("{url}: {message}")]
    Connect { url: String, message: String },

    #[error("{what}: reading failed: {message}")]
    Read { what: String, message: String },

    #[error("image {image}: {cause}")]
    Image {
        image: String,
        cause: Box<ImagesError>,
    },

    #[error(transparent)]
    Reference(#[from] crate::imageref::ImageRefError),

    /// The payload's errors name the file they are about.
    #[error(transparent)]
    Bundle(#[from] bale_payload::Error),
}

impl ImagesError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImagesError::Io {
            path: path.into(),
            cause: source,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        ImagesError::Invalid {
            what: what.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(what: impl Into<String>, message: impl Into<String>) -> Self {
        ImagesError::Unsupported {
            what: what.into(),
            message: message.into(),
        }
    }

    /// Names the image this error happened for, once.
    pub(crate) fn for_image(self, image: &str) -> Self {
        match self {
            e @ (ImagesError::Image { .. }
            | ImagesError::PlatformMismatch { .. }
            | ImagesError::NoPlatform { .. }
            | ImagesError::NotFound { .. }) => e,
            e => ImagesError::Image {
                image: image.to_string(),
                cause: Box::new(e),
            },
        }
    }

    /// Worth another try: the server or the network failed, not the request.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ImagesError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            ImagesError::Connect { .. } | ImagesError::Read { .. } => true,
            _ => false,
        }
    }
}
