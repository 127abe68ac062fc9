//! Dirty block buffers: bytes written by this mount that are not yet on chunkservers.
//!
//! Writes land here and return at once; a flush seals and ships them. Each dirty block keeps
//! a full 64 KiB image plus the byte ranges actually written, so a flush knows whether it
//! must read the old block first (read-modify-write) and a read can overlay exactly the bytes
//! this mount wrote on top of what the chunkservers hold.
//!
//! Block images come from a small pool of reused 64 KiB buffers: on this kind of VM a
//! fresh allocation costs a host page fault and zeroing per page, a reused warm buffer
//! nothing. A reused buffer must never show another file's bytes, so every byte of `data`
//! outside `ranges` is kept zero (a sealed image of a partly written block includes its
//! gaps): the bytes a new block's first write does not cover are zeroed when it is taken
//! from the pool, and a truncate zeroes what it cuts off.

use common::block::BLOCK_SIZE;
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// Block buffers kept for reuse: 32 MiB, twice what one file may buffer at the default
/// flush threshold (writers wait at 2 × 8 MiB), so a streaming writer never allocates in
/// steady state, while a burst of many open files does not pin memory forever.
const POOL_BLOCKS: usize = 512;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A BLOCK_SIZE buffer whose bytes outside `[keep.0, keep.1)` are zero; the bytes inside
/// are unspecified (the caller overwrites them at once).
fn take_buffer(keep: (usize, usize)) -> Vec<u8> {
    match POOL.lock().pop() {
        Some(mut data) => {
            data[..keep.0].fill(0);
            data[keep.1..].fill(0);
            data
        }
        None => vec![0; BLOCK_SIZE],
    }
}

/// One block's pending bytes. `data` is BLOCK_SIZE long; only `ranges` are meaningful, and
/// every byte outside them is zero (the block image of a partly written block).
#[derive(Debug)]
pub struct DirtyBlock {
    pub data: Vec<u8>,
    /// Sorted, disjoint, non-adjacent [start, end) ranges of written bytes.
    pub ranges: Vec<(usize, usize)>,
}

impl Clone for DirtyBlock {
    fn clone(&self) -> DirtyBlock {
        let mut data = take_buffer((0, BLOCK_SIZE));
        data.copy_from_slice(&self.data);
        DirtyBlock {
            data,
            ranges: self.ranges.clone(),
        }
    }
}

impl Drop for DirtyBlock {
    fn drop(&mut self) {
        if self.data.len() == BLOCK_SIZE {
            let mut pool = POOL.lock();
            if pool.len() < POOL_BLOCKS {
                pool.push(std::mem::take(&mut self.data));
            }
        }
    }
}

impl DirtyBlock {
    /// A block with nothing written: a read-modify-write of it only rewrites the old bytes.
    pub fn empty() -> DirtyBlock {
        DirtyBlock::new()
    }

    fn new() -> DirtyBlock {
        DirtyBlock::with_range(0, 0)
    }

    /// A block about to get its first write at `[start, end)`: zero everywhere else.
    fn with_range(start: usize, end: usize) -> DirtyBlock {
        DirtyBlock {
            data: take_buffer((start, end)),
            ranges: Vec::new(),
        }
    }

    pub fn is_full(&self) -> bool {
        self.ranges == [(0, BLOCK_SIZE)]
    }

    /// The end of the last written byte.
    pub fn end(&self) -> usize {
        self.ranges.last().map_or(0, |r| r.1)
    }

    fn add_range(&mut self, start: usize, end: usize) {
        let mut merged = Vec::with_capacity(self.ranges.len() + 1);
        let (mut s, mut e) = (start, end);
        let mut placed = false;
        for &(rs, re) in &self.ranges {
            if re < s {
                merged.push((rs, re));
            } else if rs > e {
                if !placed {
                    merged.push((s, e));
                    placed = true;
                }
                merged.push((rs, re));
            } else {
                s = s.min(rs);
                e = e.max(re);
            }
        }
        if !placed {
            merged.push((s, e));
        }
        self.ranges = merged;
    }

    /// Copies this block's written bytes over `target` (which may be shorter than a block:
    /// it is extended with zeros as needed).
    pub fn overlay(&self, target: &mut Vec<u8>) {
        let end = self.end();
        if target.len() < end {
            target.resize(end, 0);
        }
        for &(s, e) in &self.ranges {
            target[s..e].copy_from_slice(&self.data[s..e]);
        }
    }
}

/// Dirty blocks of one file, keyed by the file-wide block number.
#[derive(Default, Debug)]
pub struct DirtyMap {
    pub blocks: BTreeMap<u64, DirtyBlock>,
    pub bytes: u64,
}

impl DirtyMap {
    /// Records `data` written at file offset `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = offset + pos as u64;
            let block = abs / BLOCK_SIZE as u64;
            let within = (abs % BLOCK_SIZE as u64) as usize;
            let n = (BLOCK_SIZE - within).min(data.len() - pos);
            let entry = self.blocks.entry(block).or_insert_with(|| {
                self.bytes += BLOCK_SIZE as u64;
                DirtyBlock::with_range(within, within + n)
            });
            entry.data[within..within + n].copy_from_slice(&data[pos..pos + n]);
            entry.add_range(within, within + n);
            pos += n;
        }
    }

    /// The end offset of the last dirty byte in the file.
    #[cfg(test)]
    pub fn end(&self) -> u64 {
        self.blocks
            .iter()
            .next_back()
            .map_or(0, |(b, d)| b * BLOCK_SIZE as u64 + d.end() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Lays `newer` over these blocks: blocks only in `newer` move in; where both have a
    /// block, `newer`'s bytes win.
    pub fn absorb_newer(&mut self, newer: DirtyMap) {
        for (b, block) in newer.blocks {
            match self.blocks.get_mut(&b) {
                Some(old) => {
                    for &(s, e) in &block.ranges {
                        old.data[s..e].copy_from_slice(&block.data[s..e]);
                        old.add_range(s, e);
                    }
                }
                None => {
                    self.bytes += BLOCK_SIZE as u64;
                    self.blocks.insert(b, block);
                }
            }
        }
    }

    /// Drops dirty bytes at or past `size` (truncate).
    pub fn truncate(&mut self, size: u64) {
        let first_dropped = size.div_ceil(BLOCK_SIZE as u64);
        let dropped = self.blocks.split_off(&first_dropped);
        self.bytes -= dropped.len() as u64 * BLOCK_SIZE as u64;
        let within = (size % BLOCK_SIZE as u64) as usize;
        if within != 0
            && let Some(last) = self.blocks.get_mut(&(size / BLOCK_SIZE as u64))
        {
            // Cut bytes must not come back as the gap of a later write past them.
            last.data[within..].fill(0);
            last.ranges = last
                .ranges
                .iter()
                .filter(|r| r.0 < within)
                .map(|&(s, e)| (s, e.min(within)))
                .collect();
            if last.ranges.is_empty() {
                self.blocks.remove(&(size / BLOCK_SIZE as u64));
                self.bytes -= BLOCK_SIZE as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        let mut b = DirtyBlock::new();
        b.add_range(10, 20);
        b.add_range(30, 40);
        assert_eq!(b.ranges, vec![(10, 20), (30, 40)]);
        b.add_range(20, 30);
        assert_eq!(b.ranges, vec![(10, 40)]);
        b.add_range(0, 5);
        b.add_range(50, 60);
        assert_eq!(b.ranges, vec![(0, 5), (10, 40), (50, 60)]);
        b.add_range(3, 55);
        assert_eq!(b.ranges, vec![(0, 60)]);
    }

    #[test]
    fn write_spans_blocks_and_overlay() {
        let mut m = DirtyMap::default();
        let data: Vec<u8> = (0..BLOCK_SIZE + 100).map(|i| (i % 251) as u8).collect();
        m.write(BLOCK_SIZE as u64 - 50, &data);
        assert_eq!(m.blocks.len(), 3);
        assert_eq!(m.end(), BLOCK_SIZE as u64 - 50 + data.len() as u64);
        assert!(m.blocks[&1].is_full());
        let mut target = vec![9u8; 10];
        m.blocks[&2].overlay(&mut target);
        assert_eq!(target.len(), 50);
        assert_eq!(target[0], data[50 + BLOCK_SIZE]);
    }

    #[test]
    fn absorb_newer_keeps_newest_bytes() {
        let mut old = DirtyMap::default();
        old.write(0, &[1u8; 100]);
        let mut newer = DirtyMap::default();
        newer.write(50, &[2u8; 10]);
        newer.write(BLOCK_SIZE as u64, &[3u8; 5]);
        old.absorb_newer(newer);
        assert_eq!(old.blocks.len(), 2);
        assert_eq!(old.bytes, 2 * BLOCK_SIZE as u64);
        let mut image = Vec::new();
        old.blocks[&0].overlay(&mut image);
        assert_eq!(
            &image[45..65],
            &[[1u8; 5], [2u8; 5], [2u8; 5], [1u8; 5]].concat()[..]
        );
    }

    /// A reused buffer never carries another file's bytes: whatever was in the pool, the
    /// bytes of a new block outside what was written to it are zero.
    #[test]
    fn pooled_buffers_never_show_old_bytes() {
        for _ in 0..4 {
            let mut secret = DirtyMap::default();
            secret.write(0, &vec![0xAB; 8 * BLOCK_SIZE]);
            // Back to the pool (other tests share it, so how many stay there is theirs too).
            drop(secret);
            let mut m = DirtyMap::default();
            m.write(100, &[1u8; 10]);
            m.write(3 * BLOCK_SIZE as u64 + BLOCK_SIZE as u64 - 5, &[2u8; 5]);
            for block in m.blocks.values() {
                let written: usize = block.ranges.iter().map(|r| r.1 - r.0).sum();
                let nonzero = block.data.iter().filter(|b| **b != 0).count();
                assert_eq!(nonzero, written, "only written bytes are non-zero");
            }
            let clone = m.blocks[&0].clone();
            assert_eq!(clone.data, m.blocks[&0].data);
        }
    }

    /// Bytes a truncate cut off do not come back in the gap of a later write.
    #[test]
    fn truncated_bytes_stay_gone() {
        let mut m = DirtyMap::default();
        m.write(0, &[5u8; 300]);
        m.truncate(150);
        m.write(280, &[6u8; 10]);
        let b = &m.blocks[&0];
        assert_eq!(b.ranges, vec![(0, 150), (280, 290)]);
        assert!(b.data[150..280].iter().all(|x| *x == 0));
    }

    #[test]
    fn truncate_drops_tail() {
        let mut m = DirtyMap::default();
        m.write(0, &vec![1u8; 3 * BLOCK_SIZE]);
        m.truncate(BLOCK_SIZE as u64 + 10);
        assert_eq!(m.blocks.len(), 2);
        assert_eq!(m.end(), BLOCK_SIZE as u64 + 10);
        assert_eq!(m.bytes, 2 * BLOCK_SIZE as u64);
        m.truncate(BLOCK_SIZE as u64);
        assert_eq!(m.blocks.len(), 1);
        m.truncate(0);
        assert!(m.is_empty());
        assert_eq!(m.bytes, 0);
    }
}
