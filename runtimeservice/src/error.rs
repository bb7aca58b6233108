//! The runtime service's errors and their one mapping onto gRPC codes.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The handler's runtime lacks the operation (runsc has no `update`).
    #[error("{0}")]
    Unimplemented(String),
    #[error("pod network: {0}")]
    Network(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A path in a container's rootfs that cannot be used as asked.
    #[error(transparent)]
    Rootfs(#[from] crate::container::rootfs_path::RootfsError),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Network(_) => Code::Unavailable,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
            // The image (or the request naming the path) is at fault.
            Error::Rootfs(r) if r.is_content_fault() => Code::FailedPrecondition,
            // A full disk (or quota) is the node's, not the request's, and
            // kubelet backs off and may evict on it.
            Error::Io { source, .. } if is_out_of_space(source) => Code::ResourceExhausted,
            Error::Io { .. } | Error::Internal(_) | Error::Rootfs(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// Whether an I/O error says the filesystem (or the quota on it) is full.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
