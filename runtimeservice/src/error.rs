//! The runtime service's errors, by what went wrong, and their one mapping
//! onto gRPC codes ([`From<Error> for tonic::Status`]).
//!
//! The first group is the caller's (a bad or impossible request); the
//! second the node's: each keeps its cause as `source`, and its message
//! (what the gRPC status and the log line carry) names the cause too, so
//! an operator reads "mounting the container rootfs: ENOSPC" rather than
//! "internal error".

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- the request ----
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A pod or container (or what a request names) that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A name already taken by another pod or container.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the call (a container not
    /// running, a pod not ready).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The handler's runtime lacks the operation (runsc has no `update`).
    #[error("{0}")]
    Unimplemented(String),
    /// A path in a container's rootfs that cannot be used as asked.
    #[error(transparent)]
    Rootfs(#[from] crate::container::rootfs_path::RootfsError),

    // ---- the node ----
    /// A CNI operation failed; kubelet retries.
    #[error("pod network: {context}: {source}")]
    Network {
        context: String,
        #[source]
        source: Cause,
    },
    /// The pod network is not in a state to go on (a teardown that must be
    /// retried).
    #[error("pod network: {0}")]
    NetworkNotReady(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A system call on the host (mount, pin, namespace entry) failed.
    #[error("{context}: {source}")]
    Host {
        context: String,
        #[source]
        source: Cause,
    },
    /// The OCI runtime failed, in its own words.
    #[error("{runtime} {op} {id} failed: {message}")]
    Runtime {
        runtime: String,
        op: String,
        id: String,
        message: String,
    },
    /// A gantry-owned file (spec, record) that does not parse.
    #[error("{context}: {source}")]
    Corrupt {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// A worker task that panicked or was cancelled.
    #[error("{context}: {source}")]
    Task {
        context: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// gantry broke one of its own rules (a bug); the message says which.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn host<E: std::error::Error + Send + Sync + 'static>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Error {
        let context = context.into();
        move |source| Error::Host {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn network<E: std::error::Error + Send + Sync + 'static>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Error {
        let context = context.into();
        move |source| Error::Network {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn task(context: impl Into<String>) -> impl FnOnce(tokio::task::JoinError) -> Error {
        let context = context.into();
        move |source| Error::Task { context, source }
    }

    pub(crate) fn corrupt(context: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Error {
        let context = context.into();
        move |source| Error::Corrupt { context, source }
    }

    /// Whether the cause, anywhere in the chain, is a full filesystem.
    pub fn is_out_of_space(&self) -> bool {
        chain_is_out_of_space(self)
    }

    /// The gRPC code kubelet acts on.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        // A full disk (or quota) is the node's, not the request's, and
        // kubelet backs off and may evict on it.
        if self.is_out_of_space() {
            return Code::ResourceExhausted;
        }
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
            // The image (or the request naming the path) is at fault.
            Error::Rootfs(r) if r.is_content_fault() => Code::FailedPrecondition,
            Error::Network { .. } | Error::NetworkNotReady(_) => Code::Unavailable,
            Error::Rootfs(_)
            | Error::Io { .. }
            | Error::Host { .. }
            | Error::Runtime { .. }
            | Error::Corrupt { .. }
            | Error::Task { .. }
            | Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

fn chain_is_out_of_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if is_out_of_space(io) {
                return true;
            }
            // An io::Error wrapping another error reports the wrapped
            // error's source, not the wrapped error itself.
            if let Some(inner) = io.get_ref() {
                if chain_is_out_of_space(inner) {
                    return true;
                }
            }
        }
        if let Some(errno) = c.downcast_ref::<rustix::io::Errno>() {
            if matches!(*errno, rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// Whether an I/O error says the filesystem (or the quota on it) is full.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_error_has_its_code_and_keeps_its_cause() {
        let enospc = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let cases: Vec<(Error, Code)> = vec![
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (Error::NotFound("pod sandbox a".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (Error::DeadlineExceeded("x".into()), Code::DeadlineExceeded),
            (Error::Unimplemented("x".into()), Code::Unimplemented),
            (
                Error::network("ADD")(std::io::Error::other("plugin died")),
                Code::Unavailable,
            ),
            (Error::NetworkNotReady("retry".into()), Code::Unavailable),
            (
                Error::io("writing")(std::io::Error::other("EIO")),
                Code::Internal,
            ),
            (Error::io("writing")(enospc()), Code::ResourceExhausted),
            (
                Error::host("mounting")(rustix::io::Errno::NOSPC),
                Code::ResourceExhausted,
            ),
            (
                Error::host("mounting")(rustix::io::Errno::PERM),
                Code::Internal,
            ),
            (
                Error::network("ADD")(std::io::Error::other(enospc())),
                Code::ResourceExhausted,
            ),
            (
                Error::Runtime {
                    runtime: "runc".into(),
                    op: "create".into(),
                    id: "c1".into(),
                    message: "boom".into(),
                },
                Code::Internal,
            ),
            (Error::Internal("bug".into()), Code::Internal),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
        // The cause is in the message and in the chain.
        let e = Error::host("mounting the container rootfs")(rustix::io::Errno::NOSPC);
        let s = tonic::Status::from(Error::host("mounting the container rootfs")(
            rustix::io::Errno::NOSPC,
        ));
        assert!(
            s.message().contains("mounting the container rootfs"),
            "{s:?}"
        );
        assert!(s.message().contains("No space left"), "{s:?}");
        let source = std::error::Error::source(&e).expect("a cause");
        assert!(source.downcast_ref::<rustix::io::Errno>().is_some());
        let bad_json = serde_json::from_str::<u32>("x").unwrap_err();
        let e = Error::corrupt("reading config.json")(bad_json);
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.code(), Code::Internal);
    }
}
