//! The image service's error type and its one mapping onto gRPC status codes.

use std::io;

/// Everything that can go wrong while resolving, pulling, storing or
/// removing an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0:?} not found in the registry")]
    NotFoundInRegistry(String),
    #[error("registry {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("registry {endpoint} refused the credentials: {reason}")]
    Unauthenticated { endpoint: String, reason: String },
    #[error("registry {endpoint} answered {status} for {url}")]
    RegistryStatus {
        endpoint: String,
        status: u16,
        url: String,
    },
    #[error("content {digest} failed verification: {reason}")]
    DigestMismatch { digest: String, reason: String },
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("unsupported {what}: {value}")]
    Unsupported { what: String, value: String },
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("layer entry {path:?} rejected: {reason}")]
    UnsafeEntry { path: String, reason: String },
    #[error("no manifest for platform {0} in the image index")]
    NoMatchingPlatform(String),
    #[error(
        "the image is in Docker Image manifest version 2, schema 1, which is no longer \
         supported: rebuild the image and push it again with a current tool (the \
         registry serves it as schema 2 or OCI then)"
    )]
    Schema1,
    #[error("non-distributable layer {digest}: {reason}")]
    ForeignLayer { digest: String, reason: String },
    #[error("image {image:?} is an OCI artifact ({artifact_type}), not a container image")]
    NotAnImage {
        image: String,
        artifact_type: String,
    },
    #[error("image {0:?} is not known")]
    ImageNotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl ToString) -> Error {
        Error::Malformed {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// Whether another endpoint (the next mirror, or the upstream host) could
    /// still succeed where this one failed.
    pub(crate) fn try_next_endpoint(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::RegistryStatus { .. }
                | Error::NotFoundInRegistry(_)
                | Error::Unauthenticated { .. }
                | Error::DigestMismatch { .. }
        )
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Code;
        let code = match &err {
            Error::InvalidReference { .. } | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFoundInRegistry(_) | Error::ImageNotFound(_) => Code::NotFound,
            Error::Unreachable { .. } => Code::Unavailable,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::RegistryStatus { status, .. } => match status {
                401 => Code::Unauthenticated,
                403 => Code::PermissionDenied,
                404 => Code::NotFound,
                429 | 502 | 503 | 504 => Code::Unavailable,
                _ => Code::Unknown,
            },
            Error::DigestMismatch { .. } => Code::DataLoss,
            Error::Malformed { .. }
            | Error::Unsupported { .. }
            | Error::UnsafeEntry { .. }
            | Error::NoMatchingPlatform(_)
            | Error::Schema1
            | Error::ForeignLayer { .. }
            | Error::NotAnImage { .. } => Code::FailedPrecondition,
            Error::LimitExceeded(_) => Code::ResourceExhausted,
            // A full disk (or quota) is the node's, not the request's, and
            // kubelet backs off and may evict on it.
            Error::Io { source, .. } if is_out_of_space(source) => Code::ResourceExhausted,
            Error::Io { .. } | Error::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, err.to_string())
    }
}

/// Whether an I/O error says the filesystem (or the quota on it) is full.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
