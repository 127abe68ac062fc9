//! Client-side readahead for a sequential reader of one open file.
//!
//! The kernel hands a sequential reader's data to us as many small FUSE reads (128 KiB);
//! answering each with its own chunkserver round trip leaves the network and the
//! chunkservers idle in between. When an open file's reads look sequential, this keeps a
//! window of the blocks just past the reader in flight as large `read_blocks` requests
//! (spawned, so they progress while the reader is busy elsewhere), and reads take their
//! blocks from it.
//!
//! It must never serve bytes a direct read would not. Every fetched run is tagged with the
//! chunk location it was read at (chunk id, committed version, length) and is used only when
//! the reader's current chunk map names exactly that location: the blocks of one committed
//! version never change, so a run is as fresh as a direct read with that map would be, and
//! a commit (ours or another mount's, once the map learns of it) makes older runs unusable.
//! Dirty bytes of this mount are laid over by the caller, as for any read. Memory is bounded
//! per file (the window) and per mount (a byte budget); a random access pattern drops the
//! window, and closing the file drops it too (pending fetches are aborted).

use super::context::IoContext;
use super::fetch::read_chunk_blocks_bytes;
use bytes::Bytes;
use common::block::BLOCK_SIZE;
use common::types::ChunkLoc;
use common::{ChunkId, Version};
use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Blocks kept in flight or ready past the reader's position: 8 MiB. Enough to cover the
/// round trip and decryption of several large requests at ~1 GB/s.
pub(super) const WINDOW_BLOCKS: u64 = 128;
/// Blocks per readahead request: 1 MiB. Large enough that per-request costs vanish, small
/// enough that the first one lands soon and memory is released in small steps.
pub(super) const RUN_BLOCKS: u64 = 16;
/// Blocks kept behind the reader's position, for the kernel's concurrent requests that
/// arrive out of order.
const KEEP_BEHIND_BLOCKS: u64 = 32;
/// A read starting within this distance of where the previous reads ended counts as
/// sequential (the kernel's parallel readahead requests arrive in any order).
const SEQ_SLACK: u64 = 2 * 1024 * 1024;
/// Consecutive sequential reads before reading ahead starts.
const STREAK: u32 = 2;
/// Readahead bytes one mount may hold at once, over all its open files.
pub const MOUNT_BUDGET_BYTES: u64 = 64 * 1024 * 1024;
/// The most one open file's readahead holds: the window past the furthest read, what is
/// kept behind it, and the run straddling that edge.
pub const FILE_MAX_BYTES: u64 =
    (WINDOW_BLOCKS + KEEP_BEHIND_BLOCKS + RUN_BLOCKS + 1) * BLOCK_SIZE as u64;

/// The access pattern after one read: where the reads have got to and how many in a row
/// were sequential.
///
/// The default (a newly opened file) makes a read from the file's start sequential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Pattern {
    pub last_end: u64,
    pub streak: u32,
}

/// The pattern after a read of `[offset, end)`.
pub(super) fn classify(before: Pattern, offset: u64, end: u64) -> Pattern {
    let near = offset.saturating_add(SEQ_SLACK) >= before.last_end
        && offset <= before.last_end.saturating_add(SEQ_SLACK);
    if near {
        Pattern {
            last_end: before.last_end.max(end),
            streak: before.streak.saturating_add(1),
        }
    } else {
        Pattern {
            last_end: end,
            streak: 0,
        }
    }
}

/// The file-block ranges `[from, to)` to start fetching after a read ending before block
/// `read_end`: from the first block not yet asked for up to [`WINDOW_BLOCKS`] past the read,
/// within the file's `file_blocks`, in runs of at most [`RUN_BLOCKS`] that do not cross a
/// chunk. A short run at the window's edge waits until it can be full (unless the file ends
/// there), so requests stay large.
pub(super) fn plan(
    issued_to: u64,
    read_end: u64,
    file_blocks: u64,
    blocks_per_chunk: u64,
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut from = issued_to.max(read_end);
    let limit = read_end.saturating_add(WINDOW_BLOCKS).min(file_blocks);
    while from < limit {
        let chunk_end = (from / blocks_per_chunk + 1) * blocks_per_chunk;
        let to = (from + RUN_BLOCKS).min(chunk_end).min(limit);
        if to == limit && to < file_blocks && to - from < RUN_BLOCKS && to < chunk_end {
            break;
        }
        out.push((from, to));
        from = to;
    }
    out
}

/// The location a run was fetched at; it serves only readers whose map says the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LocKey {
    chunk: ChunkId,
    version: Version,
    length: u64,
}

impl LocKey {
    fn of(loc: &ChunkLoc) -> LocKey {
        LocKey {
            chunk: loc.chunk,
            version: loc.version,
            length: loc.length,
        }
    }
}

/// Plaintext blocks of a run, or `None` when the fetch failed (the reader then reads
/// directly, with the usual retries and error reporting).
type RunData = Shared<BoxFuture<'static, Option<Arc<Vec<Bytes>>>>>;

struct Run {
    key: LocKey,
    /// Blocks `[first, end)` of the file.
    end: u64,
    data: RunData,
    abort: tokio::task::AbortHandle,
    _budget: Budget,
}

impl Drop for Run {
    fn drop(&mut self) {
        // Nobody will read it any more: stop fetching.
        self.abort.abort();
    }
}

/// Readahead bytes held, returned to the mount's budget when dropped.
struct Budget {
    held: Arc<AtomicU64>,
    bytes: u64,
}

impl Budget {
    fn take(held: &Arc<AtomicU64>, bytes: u64) -> Option<Budget> {
        held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now + bytes <= MOUNT_BUDGET_BYTES).then_some(now + bytes)
        })
        .ok()?;
        Some(Budget {
            held: held.clone(),
            bytes,
        })
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct State {
    pattern: Pattern,
    /// File blocks below this have been asked for (or were holes or not worth it).
    issued_to: u64,
    /// Runs by first file block.
    runs: BTreeMap<u64, Run>,
}

impl State {
    fn drop_window(&mut self) {
        self.runs.clear();
        self.issued_to = 0;
    }
}

/// The readahead of one open file.
#[derive(Default)]
pub(super) struct Readahead {
    st: Mutex<State>,
}

impl Readahead {
    /// Notes a read of `[offset, end)` and says whether the reader is sequential enough to
    /// read ahead for. A random access drops the window; runs far behind the reader go.
    pub fn observe(&self, offset: u64, end: u64) -> bool {
        let mut st = self.st.lock();
        st.pattern = classify(st.pattern, offset, end);
        if st.pattern.streak == 0 {
            st.drop_window();
            return false;
        }
        let behind = (st.pattern.last_end / BLOCK_SIZE as u64).saturating_sub(KEEP_BEHIND_BLOCKS);
        st.runs.retain(|_, run| run.end > behind);
        st.pattern.streak >= STREAK
    }

    /// Prefetched plaintext of file blocks `[file_first, file_first + count)`, all in the
    /// chunk at `loc`: per block, its bytes, or `None` when no usable run holds it. A run
    /// fetched at another location is stale: the whole window goes, to be refilled from the
    /// current map.
    pub async fn take(&self, loc: &ChunkLoc, file_first: u64, count: u64) -> Vec<Option<Bytes>> {
        let key = LocKey::of(loc);
        let mut wanted: Vec<(u64, RunData)> = Vec::new();
        {
            let mut st = self.st.lock();
            let mut stale = false;
            for (&first, run) in st.runs.range(..file_first + count).rev() {
                if run.end <= file_first {
                    break;
                }
                if run.key == key {
                    wanted.push((first, run.data.clone()));
                } else {
                    stale = true;
                }
            }
            if stale {
                st.drop_window();
            }
        }
        let mut out: Vec<Option<Bytes>> = vec![None; count as usize];
        for (first, data) in wanted {
            let Some(blocks) = data.await else { continue };
            for (i, block) in blocks.iter().enumerate() {
                let b = first + i as u64;
                if (file_first..file_first + count).contains(&b) {
                    out[(b - file_first) as usize] = Some(block.clone());
                }
            }
        }
        out
    }

    /// Starts fetching what the window lacks after a sequential read that ended at byte
    /// `end`. `locs` are the map's entries for the chunks ahead (`None`: a hole); a chunk
    /// not in it stops the window there (the reader's own read fetches its location).
    pub fn fill(
        &self,
        io: &Arc<IoContext>,
        end: u64,
        file_size: u64,
        chunk_size: u64,
        locs: &HashMap<u64, Option<ChunkLoc>>,
    ) {
        let block = BLOCK_SIZE as u64;
        let blocks_per_chunk = chunk_size / block;
        let mut st = self.st.lock();
        let read_end = end.div_ceil(block);
        for (from, to) in plan(
            st.issued_to,
            read_end,
            file_size.div_ceil(block),
            blocks_per_chunk,
        ) {
            let index = from / blocks_per_chunk;
            let Some(loc) = locs.get(&index) else { break };
            let Some(loc) = loc else {
                // A hole reads as zeros without a fetch.
                st.issued_to = to;
                continue;
            };
            let Some(budget) = Budget::take(&io.readahead_held, (to - from) * block) else {
                break;
            };
            let first_in_chunk = (from - index * blocks_per_chunk) as u32;
            let count = (to - from) as u32;
            let (io, loc2) = (io.clone(), loc.clone());
            let task = tokio::spawn(async move {
                read_chunk_blocks_bytes(&io, &loc2, first_in_chunk, count)
                    .await
                    .ok()
                    .map(Arc::new)
            });
            let abort = task.abort_handle();
            let data = async move { task.await.ok().flatten() }.boxed().shared();
            st.runs.insert(
                from,
                Run {
                    key: LocKey::of(loc),
                    end: to,
                    data,
                    abort,
                    _budget: budget,
                },
            );
            st.issued_to = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let mib = 1024 * 1024;
        let p = |last_end, streak| Pattern { last_end, streak };
        // (before, offset, end, after)
        let cases = [
            (Pattern::default(), 0, mib, p(mib, 1)),
            (p(mib, 1), mib, 2 * mib, p(2 * mib, 2)),
            // Out of order within the slack: still sequential, the end does not go back.
            (p(4 * mib, 3), 3 * mib, 3 * mib + 4096, p(4 * mib, 4)),
            (p(4 * mib, 3), 5 * mib, 5 * mib + 4096, p(5 * mib + 4096, 4)),
            // A jump: random.
            (
                p(4 * mib, 3),
                100 * mib,
                100 * mib + 4096,
                p(100 * mib + 4096, 0),
            ),
            (p(100 * mib, 3), 0, 4096, p(4096, 0)),
        ];
        for (before, offset, end, after) in cases {
            assert_eq!(
                classify(before, offset, end),
                after,
                "{before:?} {offset} {end}"
            );
        }
    }

    #[test]
    fn plan_table() {
        // (issued_to, read_end, file_blocks, blocks_per_chunk, runs)
        type Case = (u64, u64, u64, u64, Vec<(u64, u64)>);
        let cases: Vec<Case> = vec![
            // Fresh window in a big chunk: 8 full runs.
            (
                0,
                2,
                10_000,
                1024,
                (0..8).map(|i| (2 + 16 * i, 18 + 16 * i)).collect(),
            ),
            // Topping up: only whole runs.
            (130, 4, 10_000, 1024, vec![]),
            (130, 20, 10_000, 1024, vec![(130, 146)]),
            // Chunk boundaries cut runs.
            (0, 10, 40, 16, vec![(10, 16), (16, 32), (32, 40)]),
            // The file's end allows a short last run.
            (0, 0, 20, 1024, vec![(0, 16), (16, 20)]),
            // Nothing past the end.
            (20, 20, 20, 1024, vec![]),
        ];
        for (issued, read_end, file_blocks, bpc, want) in cases {
            assert_eq!(
                plan(issued, read_end, file_blocks, bpc),
                want,
                "{issued} {read_end} {file_blocks} {bpc}"
            );
        }
    }
}
