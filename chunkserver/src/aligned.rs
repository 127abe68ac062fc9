//! Page-aligned I/O buffers, kept in a small pool and reused, for the chunk store's slot
//! reads and writes.
//!
//! O_DIRECT needs memory aligned to the device's logical block; 4096 covers every common
//! one. Reuse matters as much as alignment: memory the process has not touched recently
//! costs a page fault (and, on a VM with free-page reporting, a host fault) on first touch,
//! so a warm buffer from the pool is far cheaper than a fresh allocation per request.
//!
//! A buffer goes back to the pool only when its last holder drops it (a read's buffer may
//! live on inside `Bytes` slices until the reply is sent), so the pool never hands out
//! memory still in use. The pool never blocks: when it is empty a new buffer is allocated,
//! and buffers beyond what it keeps are freed. Buffers are sized to what they were first
//! asked for (a one-block read does not fault in a 4 MiB buffer); a request takes the
//! smallest idle buffer that fits, and a full pool keeps its larger buffers.

use bytemuck::{Pod, Zeroable};
use parking_lot::Mutex;
use std::sync::Arc;

/// Alignment (and size unit) of every buffer: the page size, a multiple of every common
/// logical block size.
pub const PAGE: usize = 4096;

/// One aligned page; a `Vec` of them is aligned memory that bytemuck views as bytes
/// without any unsafe code here.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; PAGE]);

/// A pool of aligned buffers of up to a fixed size.
pub struct BufPool {
    free: Mutex<Vec<Vec<Page>>>,
    /// Pages of the largest buffer.
    pages: usize,
    /// Buffers kept for reuse; more are freed on return.
    keep: usize,
}

impl BufPool {
    /// A pool of buffers of up to `bytes` bytes (rounded up to whole pages), keeping at
    /// most `keep` idle ones.
    pub fn new(bytes: usize, keep: usize) -> Arc<BufPool> {
        Arc::new(BufPool {
            free: Mutex::new(Vec::with_capacity(keep)),
            pages: bytes.div_ceil(PAGE),
            keep,
        })
    }

    /// Largest length a buffer of this pool can have.
    pub fn capacity(&self) -> usize {
        self.pages * PAGE
    }

    /// A buffer of `len` bytes (at most [`BufPool::capacity`]). Its contents are whatever
    /// a previous user left: callers overwrite every byte they use.
    pub fn take(self: &Arc<Self>, len: usize) -> AlignedBuf {
        assert!(
            len <= self.capacity(),
            "buffer of {len} bytes asked of a smaller pool"
        );
        let need = len.div_ceil(PAGE);
        let reused = {
            let mut free = self.free.lock();
            free.iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= need)
                .min_by_key(|(_, b)| b.len())
                .map(|(i, _)| i)
                .map(|i| free.swap_remove(i))
        };
        let pages = reused.unwrap_or_else(|| bytemuck::allocation::zeroed_vec(need));
        AlignedBuf {
            pages,
            len,
            pool: self.clone(),
        }
    }

    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.free.lock().len()
    }
}

/// An aligned buffer of a [`BufPool`]; returns to the pool when dropped.
pub struct AlignedBuf {
    pages: Vec<Page>,
    len: usize,
    pool: Arc<BufPool>,
}

impl AlignedBuf {
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<Page, u8>(&mut self.pages)[..self.len]
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice::<Page, u8>(&self.pages)[..self.len]
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let pages = std::mem::take(&mut self.pages);
        let mut free = self.pool.free.lock();
        if free.len() < self.pool.keep {
            free.push(pages);
        } else if let Some(smallest) = free.iter_mut().min_by_key(|b| b.len()) {
            // Full: keep the larger buffer, so large requests find one too.
            if smallest.len() < pages.len() {
                *smallest = pages;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_reused() {
        let pool = BufPool::new(3 * PAGE + 1, 2);
        assert_eq!(pool.capacity(), 4 * PAGE);
        let mut a = pool.take(4 * PAGE);
        assert_eq!(a.as_mut_slice().len(), 4 * PAGE);
        assert_eq!(a.as_ref().as_ptr() as usize % PAGE, 0);
        a.as_mut_slice()[0] = 7;
        let addr = a.as_ref().as_ptr();
        drop(a);
        assert_eq!(pool.idle(), 1);
        let b = pool.take(PAGE);
        assert_eq!(b.as_ref().as_ptr(), addr, "the idle buffer is reused");
        let (c, d, e) = (pool.take(1), pool.take(1), pool.take(1));
        assert_eq!(pool.idle(), 0);
        drop((b, c, d, e));
        assert_eq!(pool.idle(), 2, "no more than `keep` buffers are kept");
        // The large buffer was kept, and a small request does not take it.
        let small = pool.take(1);
        let large = pool.take(3 * PAGE);
        assert_eq!(large.as_ref().as_ptr(), addr);
        assert_eq!(large.as_ref().len(), 3 * PAGE);
        drop((small, large));
    }

    #[test]
    fn a_buffer_inside_bytes_returns_when_the_last_slice_drops() {
        let pool = BufPool::new(PAGE, 1);
        let mut buf = pool.take(10);
        buf.as_mut_slice().copy_from_slice(b"0123456789");
        let bytes = bytes::Bytes::from_owner(buf);
        let tail = bytes.slice(5..);
        drop(bytes);
        assert_eq!(pool.idle(), 0, "a slice still holds the buffer");
        assert_eq!(&tail[..], b"56789");
        drop(tail);
        assert_eq!(pool.idle(), 1);
    }
}
