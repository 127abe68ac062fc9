//! Whether a failed replica read is evidence against the replica, which the mount then
//! reports to the master (`report_bad_replica`), or the mount's own problem, which it never
//! reports. A block this mount cannot open (its key ring lacks the block's key id, or
//! AES-GCM authentication fails with a key it has, which may be the wrong key) proves
//! nothing about the replica: the read fails with EIO and the replica is left alone
//! (docs/SECURITY.md, "Bad replicas").
//!
//! Pure and table-tested. It never decides that a replica is bad: even a report is only a
//! hint, which the master confirms with the node before it marks anything.

use common::FsError;

/// Where a replica read failed.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The node answered with an error (or not at all).
    Node(FsError),
    /// The node's answer arrived but this mount could not use it.
    Local(FsError),
}

impl ReadFailure {
    pub(crate) fn error(&self) -> &FsError {
        match self {
            ReadFailure::Node(e) | ReadFailure::Local(e) => e,
        }
    }

    pub(crate) fn into_error(self) -> FsError {
        match self {
            ReadFailure::Node(e) | ReadFailure::Local(e) => e,
        }
    }
}

/// Whether `failure` says something about the replica itself: only what the node said of
/// its own copy (its checksum failed, it holds no copy or an older one, its read failed).
pub(crate) fn against_replica(failure: &ReadFailure) -> bool {
    match failure {
        ReadFailure::Node(e) => matches!(
            e,
            FsError::Corrupt(_) | FsError::NotFound | FsError::StaleVersion { .. } | FsError::Io(_)
        ),
        // Our key ring, our decryption, our reading of the answer: nothing the replica
        // carries proves it damaged.
        ReadFailure::Local(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Version;

    #[test]
    fn only_the_nodes_own_word_is_evidence() {
        let corrupt = || FsError::Corrupt("x".into());
        let table: &[(ReadFailure, bool)] = &[
            (ReadFailure::Node(corrupt()), true),
            (ReadFailure::Node(FsError::NotFound), true),
            (
                ReadFailure::Node(FsError::StaleVersion {
                    held: Version(1),
                    used: Version(2),
                }),
                true,
            ),
            (ReadFailure::Node(FsError::Io("EIO".into())), true),
            // The node was slow, away or refused us: nothing about its copy.
            (ReadFailure::Node(FsError::TimedOut("t".into())), false),
            (ReadFailure::Node(FsError::Unavailable("u".into())), false),
            (ReadFailure::Node(FsError::NotPermitted), false),
            // This mount could not open the block: never the replica's fault.
            (
                ReadFailure::Local(FsError::Corrupt(
                    "block sealed with unknown key id 1".into(),
                )),
                false,
            ),
            (
                ReadFailure::Local(FsError::Corrupt(
                    "block 0 of chunk 7 failed authentication".into(),
                )),
                false,
            ),
        ];
        for (failure, want) in table {
            assert_eq!(against_replica(failure), *want, "{failure:?}");
        }
    }
}
