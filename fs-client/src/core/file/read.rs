//! The read path of an open file: the bytes at an offset, from the cached chunk map, the
//! readahead window or the replicas, with this mount's unflushed writes laid over them.
//! It never writes to a replica and never commits anything.

use super::super::buffer::DirtyBlock;
use super::super::fetch::{read_chunk_blocks_bytes, runs};
use super::super::readahead::WINDOW_BLOCKS;
use super::super::replicas::Retry;
use super::OpenFile;
use bytes::Bytes;
use common::block::BLOCK_SIZE;
use common::types::*;
use common::{FsError, FsResult};
use futures::future::join_all;
use std::collections::HashMap;

/// Chunks asked for in one `chunk_map` call beyond what a read needs: sequential readers
/// then need one master round trip per this many chunks.
const MAP_PREFETCH: u64 = 16;

impl OpenFile {
    /// Reads `size` bytes at `offset`, this mount's unflushed writes included. Retries with
    /// fresh chunk locations while replicas are unreachable, up to the retry window.
    pub async fn read(&self, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let mut retry = Retry::new(self.io.config.retry_window);
        loop {
            match self.read_once(offset, size).await {
                Err(e) if e.is_retryable() => {
                    retry.wait_or_fail(e).await?;
                    let mut st = self.state.lock();
                    st.map.clear();
                    st.map_generation += 1;
                }
                other => return other,
            }
        }
    }

    async fn read_once(&self, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let file_size = self.state.lock().size;
        if offset >= file_size || size == 0 {
            return Ok(Vec::new());
        }
        let end = file_size.min(offset + u64::from(size));
        let chunk_size = self.io.chunk_size;
        let blocks_per_chunk = chunk_size / BLOCK_SIZE as u64;
        let first_chunk = offset / chunk_size;
        let last_chunk = (end - 1) / chunk_size;
        let first_file_block = offset / BLOCK_SIZE as u64;
        let last_file_block = (end - 1) / BLOCK_SIZE as u64;
        // Locations and this mount's pending bytes are taken together, under one lock: a
        // flush that commits in between must not leave a block neither in the map (stale)
        // nor in the overlay (already shipped).
        let sequential = self.readahead.observe(offset, end);
        let (locs, flushing, dirty) = loop {
            self.ensure_map(first_chunk, last_chunk).await?;
            let st = self.state.lock();
            if (first_chunk..=last_chunk).any(|i| !st.map.contains_key(&i)) {
                continue;
            }
            let locs: Vec<(u64, Option<ChunkLoc>)> = (first_chunk..=last_chunk)
                .map(|i| (i, st.map.get(&i).cloned().flatten()))
                .collect();
            let dirty: HashMap<u64, DirtyBlock> = st
                .dirty
                .blocks
                .range(first_file_block..=last_file_block)
                .map(|(b, d)| (*b, d.clone()))
                .collect();
            if sequential {
                // Start the window before waiting for this read's own blocks.
                let ahead_end = end + WINDOW_BLOCKS * BLOCK_SIZE as u64;
                let ahead: HashMap<u64, Option<ChunkLoc>> = (last_chunk
                    ..=(ahead_end - 1) / chunk_size)
                    .filter_map(|i| st.map.get(&i).map(|loc| (i, loc.clone())))
                    .collect();
                self.readahead
                    .fill(&self.io, end, st.size, chunk_size, &ahead);
            }
            break (locs, st.flushing.clone(), dirty);
        };
        let fetched = join_all(locs.iter().map(|(index, loc)| {
            let chunk_start = index * chunk_size;
            let from = offset.max(chunk_start) - chunk_start;
            let to = end.min(chunk_start + chunk_size) - chunk_start;
            let first_block = (from / BLOCK_SIZE as u64) as u32;
            let last_block = ((to - 1) / BLOCK_SIZE as u64) as u32;
            let count = last_block - first_block + 1;
            async move {
                let blocks = match loc {
                    Some(loc) => {
                        let file_first = index * blocks_per_chunk + u64::from(first_block);
                        let mut blocks =
                            self.readahead.take(loc, file_first, u64::from(count)).await;
                        // What the window did not hold, read directly.
                        let missing: Vec<u32> = (0..count)
                            .filter(|&i| blocks[i as usize].is_none())
                            .map(|i| first_block + i)
                            .collect();
                        for (run_first, run_count) in runs(&missing) {
                            let got = read_chunk_blocks_bytes(&self.io, loc, run_first, run_count)
                                .await?;
                            for (i, block) in got.into_iter().enumerate() {
                                blocks[(run_first - first_block) as usize + i] = Some(block);
                            }
                        }
                        blocks.into_iter().map(Option::unwrap_or_default).collect()
                    }
                    None => vec![Bytes::new(); count as usize],
                };
                Ok::<_, FsError>((*index, first_block, blocks))
            }
        }))
        .await;
        let mut out = vec![0u8; (end - offset) as usize];
        for result in fetched {
            let (index, first_block, blocks) = result?;
            for (i, image) in blocks.into_iter().enumerate() {
                let file_block = index * blocks_per_chunk + u64::from(first_block) + i as u64;
                let under = flushing.as_ref().and_then(|f| f.blocks.get(&file_block));
                let over = dirty.get(&file_block);
                // Only a block with pending bytes of this mount is copied to lay them over.
                let image: std::borrow::Cow<[u8]> = if under.is_some() || over.is_some() {
                    let mut owned = image.to_vec();
                    for d in under.into_iter().chain(over) {
                        d.overlay(&mut owned);
                    }
                    std::borrow::Cow::Owned(owned)
                } else {
                    std::borrow::Cow::Borrowed(&image)
                };
                let block_start = file_block * BLOCK_SIZE as u64;
                let copy_from = offset.max(block_start);
                let copy_to = end.min(block_start + BLOCK_SIZE as u64);
                let src_from = (copy_from - block_start) as usize;
                let src_to = ((copy_to - block_start) as usize).min(image.len());
                if src_from < src_to {
                    let dst = (copy_from - offset) as usize;
                    out[dst..dst + (src_to - src_from)].copy_from_slice(&image[src_from..src_to]);
                }
            }
        }
        Ok(out)
    }

    /// Fills the cached chunk map for chunks `first..=last` (and some beyond).
    async fn ensure_map(&self, first: u64, last: u64) -> FsResult<()> {
        let (missing_from, generation) = {
            let st = self.state.lock();
            (
                (first..=last).find(|i| !st.map.contains_key(i)),
                st.map_generation,
            )
        };
        let Some(from) = missing_from else {
            return Ok(());
        };
        let count = (last - from + 1).max(MAP_PREFETCH);
        let locs = self.io.meta.chunk_map(self.ino, from, count).await?;
        let mut st = self.state.lock();
        if st.map_generation != generation {
            // Invalidated while we asked: this answer may predate a commit. Ask again.
            return Ok(());
        }
        for i in from..from + count {
            st.map.entry(i).or_insert(None);
        }
        for loc in locs {
            st.map.insert(loc.index, Some(loc));
        }
        Ok(())
    }
}
