//! Durable replacement of small whole files (listen addresses, a node's identity, the key
//! ring): a temp file in the same directory, write, fsync, rename over the target, fsync
//! of the directory. A reader sees the old file or the new one, never a partial one, and
//! once the call returns the new one survives a crash or a power loss.
//!
//! For small files written in one piece. It must never be used for chunk data (the chunk
//! store creates its sparse files itself) and never reuses a temp name another writer may
//! hold: the name carries the process id and a per-process counter.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Permission bits of a file anyone may read, as `File::create` uses (the umask applies).
pub const MODE_DEFAULT: u32 = 0o666;
/// Permission bits of a secret: owner only.
pub const MODE_PRIVATE: u32 = 0o600;

/// Replaces `path` with `contents`, created with permission bits `mode` (before the umask):
/// temp file, write, fsync, rename, fsync of the directory. On failure the target is
/// untouched and the temp file is removed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = temp_path(dir, path)?;
    let written = write_temp(&tmp, contents, mode).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the target was not replaced, so the temp file is only litter.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the directory entry is.
    File::open(dir)?.sync_all()
}

/// A temp name next to `path`, hidden, unique among this process's writers, and unlikely
/// to collide with another process's (a collision fails `create_new`, never clobbers).
fn temp_path(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    Ok(dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )))
}

fn write_temp(tmp: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn creates_then_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("addr");
        write_atomic(&path, b"127.0.0.1:1", MODE_DEFAULT).expect("create");
        assert_eq!(std::fs::read(&path).expect("read"), b"127.0.0.1:1");
        write_atomic(&path, b"127.0.0.1:22", MODE_DEFAULT).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"127.0.0.1:22");
        assert_eq!(names(dir.path()), vec!["addr".to_string()]);
    }

    #[test]
    fn private_mode_is_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        write_atomic(&path, b"secret", MODE_PRIVATE).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_failed_replace_keeps_the_target_and_removes_the_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A non-empty directory cannot be replaced by a file: the rename fails.
        let target = dir.path().join("busy");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(target.join("inside"), b"x").expect("fill");
        let err = write_atomic(&target, b"new", MODE_DEFAULT).expect_err("rename must fail");
        assert_ne!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(target.join("inside").exists());
        assert_eq!(names(dir.path()), vec!["busy".to_string()]);
    }

    #[test]
    fn bad_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("no/such/dir/file");
        assert_eq!(
            write_atomic(&missing, b"x", MODE_DEFAULT).map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
        assert_eq!(
            write_atomic(Path::new("/"), b"x", MODE_DEFAULT).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidInput)
        );
        assert!(names(dir.path()).is_empty());
    }
}
