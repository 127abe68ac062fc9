//! fallocate(2) on top of the ordinary write and truncate paths.
//!
//! Chunks are allocated on first write and holes read as zeros, so there is nothing to
//! reserve: mode 0 only extends the size, KEEP_SIZE alone changes nothing, and
//! PUNCH_HOLE|KEEP_SIZE writes zeros over the part of the range inside the file (the space
//! is not returned; the data is gone, which is what callers rely on). Other modes are
//! EOPNOTSUPP, which callers such as `cp` and databases handle by falling back.

use super::ClientCore;
use common::types::{Caller, MAX_FILE_SIZE, SetAttr};
use common::{FsError, FsResult};
use std::sync::Arc;

const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
/// Zeros written per request while punching: the size of a large FUSE write.
const ZERO_STEP: u64 = 1024 * 1024;

impl ClientCore {
    pub async fn fallocate(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
    ) -> FsResult<()> {
        let ino = self.handle(fh)?.0.ino;
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        if len == 0 {
            return Err(FsError::Invalid("fallocate of an empty range".into()));
        }
        match mode {
            0 => {
                let size = self.getattr(ino).await?.size;
                if end > size {
                    let set = SetAttr {
                        size: Some(end),
                        ..SetAttr::default()
                    };
                    self.setattr(ino, set, caller).await?;
                }
                Ok(())
            }
            KEEP_SIZE => Ok(()),
            m if m == PUNCH_HOLE | KEEP_SIZE => {
                let size = self.getattr(ino).await?.size;
                let stop = end.min(size);
                let zeros = vec![0u8; ZERO_STEP.min(stop.saturating_sub(offset)) as usize];
                let mut at = offset;
                while at < stop {
                    let n = (stop - at).min(ZERO_STEP) as usize;
                    let written = self.write(fh, at, &zeros[..n], caller.uid).await?;
                    at += u64::from(written);
                }
                Ok(())
            }
            // PUNCH_HOLE without KEEP_SIZE is refused by the kernel before it reaches us;
            // ZERO_RANGE, COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE are not offered.
            _ => Err(FsError::NotSupported),
        }
    }
}
