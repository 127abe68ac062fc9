//! The typed error that crosses every RPC boundary, and its one errno mapping.
//!
//! Servers answer `Result<T, FsError>`; the client can therefore tell "no such file" from
//! "node unreachable" and the FUSE adapter maps each variant to exactly one errno in
//! [`FsError::errno`]. Never add a catch-all arm there: a new variant must choose its errno.

use serde::{Deserialize, Serialize};

pub type FsResult<T> = Result<T, FsError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("file name too long")]
    NameTooLong,
    #[error("permission denied")]
    AccessDenied,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("no space left in the cluster")]
    NoSpace,
    #[error("file too large")]
    FileTooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("too many levels of symbolic links")]
    Loop,
    #[error("cross-device link")]
    CrossDevice,
    #[error("no such attribute")]
    NoAttr,
    #[error("attribute value larger than the buffer")]
    Range,
    #[error("attribute too large")]
    TooBig,
    #[error("operation not supported")]
    NotSupported,
    #[error("resource busy")]
    Busy,
    #[error("would block")]
    WouldBlock,
    #[error("bad file handle")]
    BadHandle,
    #[error("timed out: {0}")]
    TimedOut(String),
    /// A peer could not be reached or did not answer; retry elsewhere or later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The write used a version older than the one the replica already holds: re-grant.
    #[error("stale version: replica holds {held:?}, write used {used:?}")]
    StaleVersion {
        held: crate::Version,
        used: crate::Version,
    },
    /// Stored bytes failed their checksum or authentication; never served.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The peer is not part of this cluster, or presented a wrong key check.
    #[error("wrong cluster or key: {0}")]
    WrongCluster(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A blocking call (a lock wait) gave up because its caller got a signal.
    #[error("interrupted")]
    Interrupted,
}

impl FsError {
    /// The errno the application sees. One exhaustive match; table-tested below.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::AccessDenied => libc::EACCES,
            FsError::NotPermitted => libc::EPERM,
            FsError::NoSpace => libc::ENOSPC,
            FsError::FileTooBig => libc::EFBIG,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::Loop => libc::ELOOP,
            FsError::CrossDevice => libc::EXDEV,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::E2BIG,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::Busy => libc::EBUSY,
            FsError::WouldBlock => libc::EAGAIN,
            FsError::BadHandle => libc::EBADF,
            FsError::TimedOut(_) => libc::ETIMEDOUT,
            FsError::Unavailable(_) => libc::EIO,
            FsError::StaleVersion { .. } => libc::EIO,
            FsError::Corrupt(_) => libc::EIO,
            FsError::WrongCluster(_) => libc::EACCES,
            FsError::Io(_) => libc::EIO,
            FsError::Internal(_) => libc::EIO,
            FsError::Interrupted => libc::EINTR,
        }
    }

    /// True for errors where another replica or a later retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            FsError::Unavailable(_) | FsError::TimedOut(_) | FsError::Corrupt(_) | FsError::Io(_)
        )
    }

    pub fn unavailable(what: impl std::fmt::Display) -> FsError {
        FsError::Unavailable(what.to_string())
    }

    pub fn io(what: impl std::fmt::Display) -> FsError {
        FsError::Io(what.to_string())
    }

    pub fn internal(what: impl std::fmt::Display) -> FsError {
        FsError::Internal(what.to_string())
    }
}

/// How a role refusal's detail text starts: the server's role check (`rpc::RoleGuard`)
/// writes it, and the client maps it to [`FsError::NotPermitted`]. Kept here, beside the
/// mapping, so that this module does not depend on `rpc`.
pub const ROLE_REFUSAL: &str = "refused by role: ";

impl From<tarpc::client::RpcError> for FsError {
    fn from(err: tarpc::client::RpcError) -> Self {
        match err {
            tarpc::client::RpcError::DeadlineExceeded => FsError::TimedOut("rpc deadline".into()),
            // The server's role check refused the call (see `rpc::RoleGuard`): retrying
            // elsewhere cannot help, unlike an unreachable peer.
            // Matched on the text: tarpc's wire form of `io::ErrorKind` does not keep
            // PermissionDenied.
            tarpc::client::RpcError::Server(e) if e.detail.starts_with(ROLE_REFUSAL) => {
                FsError::NotPermitted
            }
            other => FsError::Unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        let table: &[(FsError, i32)] = &[
            (FsError::NotFound, libc::ENOENT),
            (FsError::Exists, libc::EEXIST),
            (FsError::NotDir, libc::ENOTDIR),
            (FsError::IsDir, libc::EISDIR),
            (FsError::NotEmpty, libc::ENOTEMPTY),
            (FsError::Invalid("x".into()), libc::EINVAL),
            (FsError::NameTooLong, libc::ENAMETOOLONG),
            (FsError::AccessDenied, libc::EACCES),
            (FsError::NotPermitted, libc::EPERM),
            (FsError::NoSpace, libc::ENOSPC),
            (FsError::FileTooBig, libc::EFBIG),
            (FsError::TooManyLinks, libc::EMLINK),
            (FsError::Loop, libc::ELOOP),
            (FsError::CrossDevice, libc::EXDEV),
            (FsError::NoAttr, libc::ENODATA),
            (FsError::Range, libc::ERANGE),
            (FsError::TooBig, libc::E2BIG),
            (FsError::NotSupported, libc::EOPNOTSUPP),
            (FsError::Busy, libc::EBUSY),
            (FsError::WouldBlock, libc::EAGAIN),
            (FsError::BadHandle, libc::EBADF),
            (FsError::TimedOut("t".into()), libc::ETIMEDOUT),
            (FsError::Unavailable("u".into()), libc::EIO),
            (
                FsError::StaleVersion {
                    held: crate::Version(2),
                    used: crate::Version(1),
                },
                libc::EIO,
            ),
            (FsError::Corrupt("c".into()), libc::EIO),
            (FsError::WrongCluster("w".into()), libc::EACCES),
            (FsError::Io("i".into()), libc::EIO),
            (FsError::Internal("i".into()), libc::EIO),
            (FsError::Interrupted, libc::EINTR),
        ];
        for (err, errno) in table {
            assert_eq!(err.errno(), *errno, "{err:?}");
        }
    }

    #[test]
    fn retryable_classification() {
        assert!(FsError::Unavailable("x".into()).is_retryable());
        assert!(FsError::Corrupt("x".into()).is_retryable());
        assert!(!FsError::NotFound.is_retryable());
        assert!(!FsError::NoSpace.is_retryable());
    }
}
