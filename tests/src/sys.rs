//! Thin wrappers over the system calls the randomized tests issue against the mount and
//! the local oracle directory: errors come back as the raw errno, so that an outcome on
//! the mount can be compared with the kernel's on a local filesystem. Never retries on an
//! error or hides one: a short read or write is looped only while the call makes progress.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// `p` as a C string (test paths never hold a NUL).
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("test paths have no NUL")
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A libc return value as `Ok(rc)`, or `Err(errno)` when it is negative.
pub fn check(rc: libc::c_int) -> Result<libc::c_int, i32> {
    if rc < 0 { Err(errno()) } else { Ok(rc) }
}

/// Writes all of `data` at `offset`; the count written before a call returned 0.
pub fn pwrite_all(fd: i32, data: &[u8], offset: u64) -> Result<usize, i32> {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: the buffer is valid for `rest.len()` bytes.
        let n = unsafe {
            libc::pwrite(
                fd,
                rest.as_ptr().cast(),
                rest.len(),
                (offset + done as u64) as i64,
            )
        };
        if n < 0 {
            return Err(errno());
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

/// Writes all of `data` at the descriptor's file offset (or its end with O_APPEND).
pub fn write_all(fd: i32, data: &[u8]) -> Result<usize, i32> {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: the buffer is valid for `rest.len()` bytes.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            return Err(errno());
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

/// Reads up to `len` bytes at `offset`, fewer only at the end of the file.
pub fn pread_all(fd: i32, len: usize, offset: u64) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let rest = &mut buf[done..];
        // SAFETY: the buffer is valid for `rest.len()` bytes.
        let n = unsafe {
            libc::pread(
                fd,
                rest.as_mut_ptr().cast(),
                rest.len(),
                (offset + done as u64) as i64,
            )
        };
        if n < 0 {
            return Err(errno());
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    buf.truncate(done);
    Ok(buf)
}

/// The kind of a `st_mode`, as the tests print it.
pub fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        _ => "other",
    }
}
