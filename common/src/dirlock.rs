//! Exclusive ownership of a daemon's directory: the master's state directory, a
//! chunkserver's data directory. Two processes committing to one `meta.db`, or writing one
//! set of chunk files, would hand out conflicting versions and lose data, so a daemon takes
//! this lock before it reads anything from the directory and holds it for its whole life.
//!
//! The lock is `flock(2)` on `DIR/<name>.lock`, which holds the holder's pid as text for the
//! refusal message. The kernel drops the lock when the process exits, however it exits
//! (kill -9 included), so a stale lock file never blocks a restart. The file is never
//! removed: removing it while another process waits to lock it would let two processes each
//! lock a different inode of the same name.
//!
//! This module never decides which commands need the lock; each daemon says so where it
//! opens its directory.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lock.
    #[error(
        "{dir} is in use by another {daemon} (pid {holder}, see {file}): stop that process first, \
         or give this one its own directory"
    )]
    Held {
        dir: String,
        daemon: String,
        /// The pid the holder wrote, or "unknown" when it has not written it yet.
        holder: String,
        file: String,
    },
    #[error("lock {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a directory, held until this value is dropped.
#[derive(Debug)]
pub struct DirLock {
    // Never read: the open descriptor is the lock.
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Locks `dir` for `daemon` (e.g. `mosaic-master`, which also names the lock file) and
    /// records this process's pid in the lock file. Never waits: a held lock is refused at
    /// once with the holder's pid.
    pub fn acquire(dir: &Path, daemon: &str) -> Result<DirLock, LockError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(format!("{daemon}.lock"));
        let io = |source| LockError::Io {
            file: path.display().to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                // Best effort: the holder may be between locking and writing its pid.
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "unknown".to_string(),
                    pid => pid.chars().take(20).collect(),
                };
                return Err(LockError::Held {
                    dir: dir.display().to_string(),
                    daemon: daemon.to_string(),
                    holder,
                    file: path.display().to_string(),
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        // Ours now: replace whatever pid a previous holder left.
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_data())
            .map_err(io)?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path(), "mosaic-test").expect("first lock");
        let pid = std::process::id().to_string();
        assert_eq!(
            std::fs::read_to_string(first.path()).expect("read").trim(),
            pid
        );
        // flock conflicts between two open file descriptions, even in one process.
        let err = DirLock::acquire(dir.path(), "mosaic-test").expect_err("held");
        let text = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{text}");
        assert!(text.contains(&format!("pid {pid}")), "{text}");
        assert!(text.contains("mosaic-test"), "{text}");
        // Another daemon's lock in the same directory is independent.
        let _other = DirLock::acquire(dir.path(), "mosaic-other").expect("other name");
        drop(first);
        let again = DirLock::acquire(dir.path(), "mosaic-test").expect("relocked after drop");
        assert!(again.path().exists());
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = DirLock::acquire(&dir.path().join("absent"), "mosaic-test").expect_err("no dir");
        assert!(matches!(err, LockError::Io { .. }), "{err}");
    }
}
