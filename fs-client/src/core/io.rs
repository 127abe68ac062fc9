//! File data: the write-behind buffer of an open file, flushing it to chunkservers, and
//! reading blocks back.
//!
//! Write path: `write` copies into the dirty map and returns. Past `flush_threshold` a
//! background flush starts; past twice that, writers wait. A flush takes the whole dirty
//! map, asks the master for write grants (cached until the file closes), seals blocks
//! (reading the old block first when a block is only partly written), sends them to every
//! replica in parallel in requests of up to 4 MiB, and commits. Only one flush per file runs
//! at a time, so writes reach chunkservers in the order the application made them.
//!
//! Read path: chunk locations come from the master (cached until the file is reopened or
//! written); blocks are read from the least-loaded current replica, verified and decrypted,
//! and this mount's unflushed bytes are laid over them.

use super::ClientCore;
use super::buffer::{DirtyBlock, DirtyMap};
use bytes::Bytes;
use common::block::{BLOCK_SIZE, ChunkSealer};
use common::rpc::MAX_BLOCKS_PER_REQUEST;
use common::types::*;
use common::{ChunkId, FsError, FsResult, InodeId, NodeId, Version};
use futures::StreamExt as _;
use futures::future::join_all;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Attempts per replica request before that replica is dropped from a write. Only a
/// dropped connection is retried; a replica that missed its deadline is dropped at once,
/// so a stalled node costs one `write_timeout`, not several.
const WRITE_ATTEMPTS: usize = 2;
/// How long a replica that failed a read is tried last: long enough to skip it for the
/// rest of a burst of reads, short enough that a restarted node is used again soon.
const FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(5);
/// A replica's read is hedged after this many times its recent mean latency (or the
/// configured floor, whichever is longer): a healthy replica is almost never hedged.
const HEDGE_FACTOR: u32 = 3;
/// The longest a read waits before hedging, whatever the latency history says.
const HEDGE_CAP: std::time::Duration = std::time::Duration::from_millis(500);
/// Weight of a new latency sample in the moving average, as 1/N.
const EWMA_WEIGHT: u64 = 4;
/// Re-grants after a `StaleVersion` (another writer raced us) before giving up.
const REGRANT_ATTEMPTS: usize = 3;
/// How long a new grant of a chunk waits for the previous grant's late replicas to finish
/// and be reported current: a healthy replica a few milliseconds behind (queueing, a short
/// pause) makes it and stays in the replica set; a stalled one costs the writer this, not a
/// whole `write_timeout`, and is left stale for repair.
const STRAGGLER_GRACE: std::time::Duration = std::time::Duration::from_millis(250);
/// Per-replica write tasks of one grant: each answers its node and whether it took every
/// request.
type ReplicaWrites =
    futures::stream::FuturesUnordered<tokio::task::JoinHandle<(NodeId, FsResult<()>)>>;
/// Chunks asked for in one `chunk_map` call beyond what a read needs: sequential readers
/// then need one master round trip per this many chunks.
const MAP_PREFETCH: u64 = 16;

#[derive(Clone, Debug)]
struct GrantState {
    grant: WriteGrant,
    /// Replicas that acknowledged every write under this grant so far.
    ok: Vec<NodeId>,
    /// End of the bytes written under this grant, relative to the chunk.
    written_end: u64,
    /// Written since the last fdatasync of the replicas.
    unsynced: bool,
    /// Replicas that finished every write after the quorum answered.
    late: Late,
}

/// The replicas of a grant that finished every write after the quorum had answered, and
/// whether all its late writes have ended; shared with the task that follows them. They
/// hold the grant's data as fully as the acknowledging ones, so an fsync may count them.
#[derive(Clone, Debug, Default)]
struct Late {
    nodes: Arc<Mutex<Vec<NodeAddr>>>,
    ended: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Late {
    /// `acked` and the late replicas known so far.
    fn with(&self, mut acked: Vec<NodeAddr>) -> Vec<NodeAddr> {
        for node in self.nodes.lock().iter() {
            if !acked.iter().any(|a| a.node == node.node) {
                acked.push(node.clone());
            }
        }
        acked
    }
}

impl GrantState {
    fn ok_addrs(&self) -> Vec<NodeAddr> {
        self.grant
            .replicas
            .iter()
            .filter(|r| self.ok.contains(&r.node))
            .cloned()
            .collect()
    }
}

struct FileState {
    handles: u32,
    /// The master's latest attributes.
    attr: Attr,
    dirty: DirtyMap,
    /// Blocks a flush is shipping right now; reads lay them under `dirty`.
    flushing: Option<Arc<DirtyMap>>,
    /// File size including unflushed writes.
    size: u64,
    /// mtime of the latest unflushed write.
    mtime: Option<Timespec>,
    clear_suid: bool,
    grants: HashMap<u64, GrantState>,
    /// Chunk locations by index; `None` is a hole.
    map: HashMap<u64, Option<ChunkLoc>>,
    /// Bumped whenever `map` entries are invalidated, so a `chunk_map` answer fetched before
    /// an invalidation is never cached after it.
    map_generation: u64,
    /// Per chunk index: the replicas of the latest commit that has not been fdatasynced
    /// yet. A grant is spent by its commit (the next flush gets a new version), so this
    /// outlives the grant until an fsync makes those writes durable.
    /// With each, the acknowledgements it needs (the grant's quorum).
    unsynced_commits: HashMap<u64, (ChunkId, Vec<NodeAddr>, u32, Late)>,
    /// Per chunk index: set when the late replicas of its last grant have finished and been
    /// reported (see `follow_stragglers`); the next grant waits for it a little.
    stragglers: HashMap<u64, tokio::sync::watch::Receiver<bool>>,
    /// An error from a background flush, reported by the next flush/fsync/close.
    error: Option<FsError>,
    background: bool,
}

impl FileState {
    fn pending(&self) -> bool {
        !self.dirty.is_empty() || self.flushing.is_some() || self.mtime.is_some()
    }
}

/// One file open in this mount (any number of handles).
pub struct OpenFile {
    ino: InodeId,
    state: Mutex<FileState>,
    flush_lock: tokio::sync::Mutex<()>,
    /// Blocks fetched ahead of a sequential reader.
    readahead: super::readahead::Readahead,
}

impl OpenFile {
    pub fn new(attr: Attr) -> OpenFile {
        OpenFile {
            ino: attr.ino,
            state: Mutex::new(FileState {
                handles: 0,
                size: attr.size,
                attr,
                dirty: DirtyMap::default(),
                flushing: None,
                mtime: None,
                clear_suid: false,
                grants: HashMap::new(),
                map: HashMap::new(),
                map_generation: 0,
                unsynced_commits: HashMap::new(),
                stragglers: HashMap::new(),
                error: None,
                background: false,
            }),
            flush_lock: tokio::sync::Mutex::new(()),
            readahead: super::readahead::Readahead::default(),
        }
    }

    /// A new handle: revalidate from the master's fresh attributes.
    pub fn opened(&self, attr: &Attr) {
        let mut st = self.state.lock();
        st.handles += 1;
        // Close-to-open: forget cached locations, another mount may have written.
        st.map.clear();
        st.map_generation += 1;
        if st.pending() {
            st.size = st.size.max(attr.size);
        } else {
            st.size = attr.size;
            st.grants.clear();
        }
        st.attr = attr.clone();
    }

    pub fn handles(&self) -> u32 {
        self.state.lock().handles
    }

    /// A handle closed; true when it was the last.
    pub fn closed(&self) -> bool {
        let mut st = self.state.lock();
        st.handles = st.handles.saturating_sub(1);
        st.handles == 0
    }

    pub fn adjust_attr(&self, attr: &mut Attr) {
        let st = self.state.lock();
        if st.pending() {
            attr.size = attr.size.max(st.size);
            if let Some(mtime) = st.mtime {
                attr.mtime = mtime;
                attr.ctime = attr.ctime.max(mtime);
            }
        }
    }

    pub fn last_attr(&self) -> Option<Attr> {
        let mut attr = self.state.lock().attr.clone();
        self.adjust_attr(&mut attr);
        Some(attr)
    }

    pub fn after_setattr(&self, attr: &Attr, size_changed: bool) {
        let mut st = self.state.lock();
        st.attr = attr.clone();
        if size_changed {
            st.size = attr.size;
            st.dirty.truncate(attr.size);
            // Grants carry chunk lengths from before the truncate.
            st.grants.clear();
            st.map.clear();
            st.map_generation += 1;
        }
    }

    /// Buffers a write if there is room; `None` when the writer must wait for a flush.
    pub fn try_buffer(
        self: &Arc<Self>,
        core: &Arc<ClientCore>,
        append: bool,
        offset: u64,
        data: &[u8],
        caller_uid: u32,
    ) -> Option<FsResult<u32>> {
        let threshold = core.config().flush_threshold;
        let mut st = self.state.lock();
        if st.dirty.bytes >= threshold.saturating_mul(2) {
            return None;
        }
        let offset = if append { st.size } else { offset };
        let end = match offset.checked_add(data.len() as u64) {
            Some(end) if end <= MAX_FILE_SIZE => end,
            _ => return Some(Err(FsError::FileTooBig)),
        };
        st.dirty.write(offset, data);
        st.size = st.size.max(end);
        st.mtime = Some(Timespec::now());
        if caller_uid != 0 && u32::from(st.attr.perm) & (libc::S_ISUID | libc::S_ISGID) != 0 {
            st.clear_suid = true;
        }
        if st.dirty.bytes >= threshold && !st.background {
            st.background = true;
            let (file, core) = (self.clone(), core.clone());
            tokio::spawn(async move {
                let result = file.flush_inner(&core, false).await;
                let mut st = file.state.lock();
                st.background = false;
                if let Err(e) = result {
                    tracing::warn!(ino = ?file.ino, error = %e, "background flush failed");
                    st.error = Some(e);
                }
            });
        }
        Some(Ok(data.len() as u32))
    }

    pub async fn write(
        self: &Arc<Self>,
        core: &Arc<ClientCore>,
        append: bool,
        offset: u64,
        data: &[u8],
        caller_uid: u32,
    ) -> FsResult<u32> {
        loop {
            if let Some(result) = self.try_buffer(core, append, offset, data, caller_uid) {
                return result;
            }
            self.flush_inner(core, false).await?;
        }
    }

    /// Pushes and commits everything buffered; with `sync`, replicas fdatasync first.
    /// Reports a background flush's failure if there was one.
    pub async fn flush(&self, core: &ClientCore, sync: bool) -> FsResult<()> {
        self.flush_inner(core, sync).await?;
        match self.state.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn flush_inner(&self, core: &ClientCore, sync: bool) -> FsResult<()> {
        let _one_at_a_time = self.flush_lock.lock().await;
        let (snapshot, size, mtime, clear_suid) = {
            let mut st = self.state.lock();
            let needs_sync =
                sync && (st.grants.values().any(|g| g.unsynced) || !st.unsynced_commits.is_empty());
            if !st.pending() && !needs_sync {
                return Ok(());
            }
            let snapshot = Arc::new(std::mem::take(&mut st.dirty));
            st.flushing = Some(snapshot.clone());
            (snapshot, st.size, st.mtime, st.clear_suid)
        };
        let result = self
            .push(core, &snapshot, sync, size, mtime, clear_suid)
            .await;
        let mut st = self.state.lock();
        st.flushing = None;
        match result {
            Ok((attr, written)) => {
                for index in written {
                    st.map.remove(&index);
                    // One grant, one version, one commit: the next flush of this chunk
                    // writes at a new version on top of this one, so replicas keep this
                    // commit's copy until that next write commits (docs/PROTOCOL.md).
                    if let Some(gs) = st.grants.remove(&index)
                        && !sync
                    {
                        st.unsynced_commits.insert(
                            index,
                            (gs.grant.chunk, gs.ok_addrs(), gs.grant.quorum, gs.late),
                        );
                    }
                }
                if sync {
                    // push() fdatasynced every replica named there before committing.
                    st.unsynced_commits.clear();
                }
                st.map_generation += 1;
                if st.dirty.is_empty() {
                    st.mtime = None;
                }
                if clear_suid {
                    st.clear_suid = false;
                }
                st.size = st.size.max(attr.size);
                st.attr = attr;
                Ok(())
            }
            Err(e) => {
                // Keep the bytes: a later flush may succeed when the replicas are back.
                // Newer writes win over the failed snapshot's.
                let newer = std::mem::take(&mut st.dirty);
                let mut restored = Arc::try_unwrap(snapshot).unwrap_or_else(|a| DirtyMap {
                    blocks: a.blocks.clone(),
                    bytes: a.bytes,
                });
                restored.absorb_newer(newer);
                st.dirty = restored;
                Err(e)
            }
        }
    }

    /// Ships `snapshot` and commits it. Returns the committed attributes and the chunk
    /// indexes written.
    async fn push(
        &self,
        core: &ClientCore,
        snapshot: &DirtyMap,
        sync: bool,
        size: u64,
        mtime: Option<Timespec>,
        clear_suid: bool,
    ) -> FsResult<(Attr, Vec<u64>)> {
        let chunk_size = core.mount_info().chunk_size;
        let blocks_per_chunk = chunk_size / BLOCK_SIZE as u64;
        let mut by_chunk: BTreeMap<u64, Vec<(u32, &DirtyBlock)>> = BTreeMap::new();
        for (block, dirty) in &snapshot.blocks {
            by_chunk
                .entry(block / blocks_per_chunk)
                .or_default()
                .push(((block % blocks_per_chunk) as u32, dirty));
        }
        let indexes: Vec<u64> = by_chunk.keys().copied().collect();
        self.ensure_grants(core, &indexes).await?;
        // Tells late replicas this flush committed (dropped unsent when it failed).
        let (committed_tx, committed) = tokio::sync::watch::channel(false);
        let commits = join_all(
            by_chunk
                .iter()
                .map(|(index, blocks)| self.write_chunk(core, *index, blocks, &committed, sync)),
        )
        .await
        .into_iter()
        .collect::<FsResult<Vec<ChunkCommit>>>()?;
        if sync {
            let syncing = std::time::Instant::now();
            self.sync_replicas(core).await?;
            core.metrics().phase("sync", syncing.elapsed());
        }
        let committing = std::time::Instant::now();
        let commit = CommitWrite {
            ino: self.ino,
            chunks: commits,
            size,
            mtime: mtime.unwrap_or_else(Timespec::now),
            clear_suid,
        };
        let attr = core
            .meta()
            .call("commit_write", |c, cx| {
                let commit = commit.clone();
                async move { c.commit_write(cx, commit).await }
            })
            .await?;
        core.metrics().phase("commit", committing.elapsed());
        let _ = committed_tx.send(true);
        Ok((attr, indexes))
    }

    async fn ensure_grants(&self, core: &ClientCore, indexes: &[u64]) -> FsResult<()> {
        let missing: Vec<u64> = {
            let st = self.state.lock();
            indexes
                .iter()
                .copied()
                .filter(|i| !st.grants.contains_key(i))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let late: Vec<tokio::sync::watch::Receiver<bool>> = {
            let mut st = self.state.lock();
            missing
                .iter()
                .filter_map(|i| st.stragglers.remove(i))
                .collect()
        };
        if !late.is_empty() {
            let reported = join_all(late.into_iter().map(|mut rx| async move {
                let _ = rx.wait_for(|done| *done).await;
            }));
            // Past the grace the grant goes to the replicas current now.
            let waiting = std::time::Instant::now();
            if tokio::time::timeout(STRAGGLER_GRACE, reported)
                .await
                .is_err()
            {
                core.metrics().straggler_grace_expired();
            }
            core.metrics().phase("straggler_wait", waiting.elapsed());
        }
        let ino = self.ino;
        let granting = std::time::Instant::now();
        let grants = core
            .meta()
            .call("prepare_write", |c, cx| {
                let missing = missing.clone();
                async move { c.prepare_write(cx, ino, missing).await }
            })
            .await?;
        core.metrics().phase("prepare_write", granting.elapsed());
        let mut st = self.state.lock();
        for grant in grants {
            let ok = grant.replicas.iter().map(|r| r.node).collect();
            st.grants.insert(
                grant.index,
                GrantState {
                    grant,
                    ok,
                    written_end: 0,
                    unsynced: false,
                    late: Late::default(),
                },
            );
        }
        Ok(())
    }

    /// Seals and sends one chunk's dirty blocks to every replica of its grant.
    async fn write_chunk(
        &self,
        core: &ClientCore,
        index: u64,
        blocks: &[(u32, &DirtyBlock)],
        committed: &tokio::sync::watch::Receiver<bool>,
        sync: bool,
    ) -> FsResult<ChunkCommit> {
        let mut attempt = 0;
        let mut retry = Retry::new(core);
        loop {
            attempt += 1;
            match self
                .write_chunk_once(core, index, blocks, committed, sync)
                .await
            {
                Err(FsError::StaleVersion { held, used }) if attempt < REGRANT_ATTEMPTS => {
                    tracing::debug!(ino = ?self.ino, index, ?held, ?used, "grant outdated; asking again");
                }
                Err(e @ (FsError::Unavailable(_) | FsError::TimedOut(_))) => {
                    // Too few replicas took the write. Wait and ask the master again: it
                    // grants only replicas that are current and online.
                    retry.wait_or_fail(e).await?;
                }
                other => return other,
            }
            self.state.lock().grants.remove(&index);
            self.ensure_grants(core, &[index]).await?;
        }
    }

    async fn write_chunk_once(
        &self,
        core: &ClientCore,
        index: u64,
        blocks: &[(u32, &DirtyBlock)],
        committed: &tokio::sync::watch::Receiver<bool>,
        sync: bool,
    ) -> FsResult<ChunkCommit> {
        let gs = self
            .state
            .lock()
            .grants
            .get(&index)
            .cloned()
            .ok_or_else(|| FsError::internal("write grant vanished"))?;
        let grant = &gs.grant;
        let valid_len = grant.length.max(gs.written_end);
        let work = extension_plan(blocks, valid_len, grant.version);
        // Partly written blocks that overlap existing data need the old bytes first.
        let need_base: Vec<u32> = work
            .iter()
            .filter_map(|(b, d)| d.map(|d| (*b, d)))
            .filter(|(b, d)| !d.is_full() && u64::from(*b) * (BLOCK_SIZE as u64) < valid_len)
            .map(|(b, _)| b)
            .collect();
        let mut bases: HashMap<u32, Vec<u8>> = HashMap::new();
        if !need_base.is_empty() {
            let loc = ChunkLoc {
                index,
                chunk: grant.chunk,
                // The committed copy: what this write builds on.
                version: grant.base,
                length: valid_len,
                replicas: gs.ok_addrs(),
            };
            for run in runs(&need_base) {
                let plain = read_chunk_blocks(core, &loc, run.0, run.1).await?;
                for (i, data) in plain.into_iter().enumerate() {
                    bases.insert(run.0 + i as u32, data);
                }
            }
        }
        let version = grant.version;
        let sealing = std::time::Instant::now();
        let sealer = ChunkSealer::new(core.keys().current(), grant.chunk);
        let mut written_end = gs.written_end;
        let mut sealed: Vec<(u32, Bytes)> = Vec::with_capacity(work.len());
        for (b, dirty) in &work {
            let Some(dirty) = dirty else {
                // A block a truncate left behind, now inside the chunk again: clear it.
                sealed.push((*b, Bytes::new()));
                continue;
            };
            // Sealing copies the plaintext into the sealed block, so the buffered image is
            // sealed where it lies (its gaps are zero, see buffer.rs) instead of copied first.
            let merged;
            let image: &[u8] = match bases.remove(b) {
                Some(mut base) => {
                    dirty.overlay(&mut base);
                    merged = base;
                    &merged
                }
                None if dirty.is_full() => &dirty.data,
                None => &dirty.data[..dirty.end()],
            };
            written_end = written_end.max(u64::from(*b) * BLOCK_SIZE as u64 + image.len() as u64);
            sealed.push((*b, sealer.seal(*b, version, image)));
        }
        core.metrics().phase("seal", sealing.elapsed());
        let requests: Vec<WriteBlocks> = runs(&sealed.iter().map(|(b, _)| *b).collect::<Vec<_>>())
            .into_iter()
            .map(|(first, count)| {
                let start = sealed.iter().position(|(b, _)| *b == first).unwrap_or(0);
                WriteBlocks {
                    chunk: grant.chunk,
                    version,
                    base: grant.base,
                    first_block: first,
                    blocks: sealed[start..start + count as usize]
                        .iter()
                        .map(|(_, bytes)| bytes.clone())
                        .collect(),
                    sync: false,
                }
            })
            .collect();
        // An fsync whose write of this chunk is one request has the replicas fdatasync
        // before they answer (`sync`): each acknowledgement is then durable, and the
        // separate sync_chunks round trip is not needed for it (fdatasync covers the whole
        // chunk file, earlier writes under this grant included). A chunk written in several
        // requests keeps the separate round: its requests run in parallel, so one
        // request's fdatasync could finish before another's pwrite.
        let synced_in_write = sync && requests.len() == 1;
        let mut requests = requests;
        if synced_in_write {
            requests[0].sync = true;
        }
        // One task per replica: when the quorum has answered, the others finish in the
        // background instead of holding up the flush (docs/PROTOCOL.md, "Acknowledgement
        // at W").
        let timeout = core.config().write_timeout;
        let mut running: ReplicaWrites = gs
            .ok_addrs()
            .into_iter()
            .map(|node| {
                let (data, requests) = (core.data().clone(), requests.clone());
                tokio::spawn(async move {
                    let sends = requests
                        .into_iter()
                        .map(|req| send_with_retry(&data, timeout, &node, req));
                    let results = join_all(sends).await;
                    let result = results.into_iter().collect::<FsResult<Vec<()>>>();
                    (node.node, result.map(|_| ()))
                })
            })
            .collect();
        let needed = grant.quorum as usize;
        let sending = std::time::Instant::now();
        let mut ok = Vec::new();
        // A replica out of space makes the write fail with ENOSPC rather than EIO when the
        // quorum is missed: the application can act on "disk full".
        let mut out_of_space = false;
        while ok.len() < needed {
            let Some(joined) = running.next().await else {
                break;
            };
            let (node, result) =
                joined.map_err(|e| FsError::internal(format!("replica write task failed: {e}")))?;
            match result {
                Ok(()) => ok.push(node),
                Err(e @ FsError::StaleVersion { .. }) => return Err(e),
                Err(e) => {
                    out_of_space |= e == FsError::NoSpace;
                    tracing::warn!(ino = ?self.ino, chunk = ?grant.chunk, ?node, error = %e, "replica failed a write; dropping it from this write");
                }
            }
        }
        if ok.len() < needed && out_of_space {
            tracing::warn!(ino = ?self.ino, chunk = ?grant.chunk, acknowledged = ok.len(), needed,
                "write refused: replicas out of space");
            return Err(FsError::NoSpace);
        }
        if ok.len() < needed {
            return Err(FsError::Unavailable(format!(
                "chunk {:?}: only {} of {} required replicas acknowledged the write",
                grant.chunk,
                ok.len(),
                needed
            )));
        }
        core.metrics().phase("replicas", sending.elapsed());
        let late = if running.is_empty() {
            Late::default()
        } else {
            self.follow_stragglers(core, index, grant, running, committed.clone())
                .await
        };
        let mut st = self.state.lock();
        if let Some(live) = st.grants.get_mut(&index) {
            live.ok = ok.clone();
            live.written_end = written_end;
            // Every acknowledging replica fdatasynced the chunk file when asked to.
            live.unsynced = !synced_in_write;
            live.late = late;
        }
        Ok(ChunkCommit {
            index,
            chunk: grant.chunk,
            version,
            written_end,
            ok_nodes: ok,
        })
    }

    /// Lets the replicas of a grant still writing after the quorum answered finish in the
    /// background. Each that took every request is reported to the master
    /// (`confirm_replicas`) once the grant has committed, so that it stays current instead
    /// of being left stale; the master accepts it only if the chunk is still at this
    /// version. The next grant of this chunk waits for the report up to
    /// [`STRAGGLER_GRACE`], so a replica that is merely a little behind stays in it.
    async fn follow_stragglers(
        &self,
        core: &ClientCore,
        index: u64,
        grant: &WriteGrant,
        mut running: ReplicaWrites,
        mut committed: tokio::sync::watch::Receiver<bool>,
    ) -> Late {
        let master = core.meta().handle().await.ok();
        let (done, done_rx) = tokio::sync::watch::channel(false);
        self.state.lock().stragglers.insert(index, done_rx);
        let (ended, ended_rx) = tokio::sync::watch::channel(false);
        let holders = Late {
            nodes: Arc::default(),
            ended: Some(ended_rx),
        };
        let sink = holders.nodes.clone();
        let addrs = grant.replicas.clone();
        let (ino, chunk, base, version) = (self.ino, grant.chunk, grant.base, grant.version);
        let rpc_timeout = core.config().rpc_timeout;
        tokio::spawn(async move {
            let mut late = Vec::new();
            while let Some(joined) = running.next().await {
                match joined {
                    Ok((node, Ok(()))) => {
                        late.push(node);
                        if let Some(addr) = addrs.iter().find(|a| a.node == node) {
                            sink.lock().push(addr.clone());
                        }
                    }
                    Ok((node, Err(e))) => {
                        tracing::warn!(?ino, ?chunk, ?node, error = %e, "late replica failed the write; it stays stale");
                    }
                    Err(e) => tracing::warn!(?ino, ?chunk, error = %e, "replica write task failed"),
                }
            }
            let _ = ended.send(true);
            // Only a committed version can be current: wait for this flush's commit (a
            // failed flush drops the sender, and the late copies are scratch).
            if late.is_empty() || committed.wait_for(|c| *c).await.is_err() {
                return;
            }
            let Some(master) = master else {
                return;
            };
            let answer = master
                .confirm_replicas(
                    common::rpc::ctx(rpc_timeout),
                    chunk,
                    base,
                    version,
                    late.clone(),
                )
                .await
                .map_err(FsError::from)
                .and_then(|r| r);
            match answer {
                Ok(accepted) => {
                    tracing::debug!(?ino, ?chunk, ?late, ?accepted, "late replicas reported")
                }
                // Best effort: an unreported replica is stale and repair copies it.
                Err(e) => {
                    tracing::warn!(?ino, ?chunk, ?late, error = %e, "could not report late replicas")
                }
            }
            let _ = done.send(true);
        });
        holders
    }

    /// fdatasync the replicas holding unsynced writes of this file, one request per node.
    /// Succeeds when every chunk has at least W replicas that synced: a replica that cannot
    /// sync is not counted as durable, and one missing replica does not fail the fsync.
    async fn sync_replicas(&self, core: &ClientCore) -> FsResult<()> {
        let Err(e) = self.sync_replicas_once(core).await else {
            return Ok(());
        };
        // Too few of the acknowledging replicas made it (one died since): replicas still
        // finishing late may make up the count. Their requests are bounded by the write
        // deadline; wait for them, then try once more.
        let pending: Vec<tokio::sync::watch::Receiver<bool>> = {
            let st = self.state.lock();
            st.unsynced_commits
                .values()
                .map(|u| &u.3)
                .chain(st.grants.values().map(|g| &g.late))
                .filter_map(|l| l.ended.clone())
                .collect()
        };
        if pending.is_empty() {
            return Err(e);
        }
        let ended = join_all(pending.into_iter().map(|mut rx| async move {
            let _ = rx.wait_for(|e| *e).await;
        }));
        let bound = core.config().write_timeout * (WRITE_ATTEMPTS as u32 + 1);
        let _ = tokio::time::timeout(bound, ended).await;
        self.sync_replicas_once(core).await
    }

    /// One round of [`Self::sync_replicas`] over the replicas known to hold the writes.
    async fn sync_replicas_once(&self, core: &ClientCore) -> FsResult<()> {
        let mut chunks: HashMap<u64, (ChunkId, Vec<NodeAddr>, u32)> = HashMap::new();
        let mut synced = Vec::new();
        {
            let st = self.state.lock();
            for (index, (chunk, nodes, quorum, late)) in &st.unsynced_commits {
                chunks.insert(*index, (*chunk, late.with(nodes.clone()), *quorum));
            }
            for (index, gs) in &st.grants {
                if gs.unsynced {
                    synced.push(*index);
                    // Written under a grant not committed yet: its replicas are the newest.
                    chunks.insert(
                        *index,
                        (gs.grant.chunk, gs.late.with(gs.ok_addrs()), gs.grant.quorum),
                    );
                }
            }
        }
        let mut per_node: HashMap<NodeId, (NodeAddr, Vec<ChunkId>)> = HashMap::new();
        for (chunk, nodes, _) in chunks.values() {
            for node in nodes {
                per_node
                    .entry(node.node)
                    .or_insert_with(|| (node.clone(), Vec::new()))
                    .1
                    .push(*chunk);
            }
        }
        let results = join_all(per_node.into_values().map(|(node, list)| async move {
            let result = core.data().sync_chunks(&node, list).await;
            if let Err(e) = &result {
                tracing::warn!(node = ?node.node, error = %e, "replica failed to fdatasync");
            }
            (node.node, result.is_ok())
        }))
        .await;
        let ok: std::collections::HashSet<NodeId> = results
            .into_iter()
            .filter_map(|(node, ok)| ok.then_some(node))
            .collect();
        for (chunk, nodes, quorum) in chunks.values() {
            let needed = *quorum as usize;
            let durable = nodes.iter().filter(|n| ok.contains(&n.node)).count();
            if durable < needed {
                return Err(FsError::Unavailable(format!(
                    "chunk {chunk:?}: only {durable} of {needed} required replicas made the data durable"
                )));
            }
        }
        let mut st = self.state.lock();
        for index in synced {
            if let Some(gs) = st.grants.get_mut(&index) {
                gs.unsynced = false;
            }
        }
        Ok(())
    }

    /// Reads `size` bytes at `offset`, this mount's unflushed writes included. Retries with
    /// fresh chunk locations while replicas are unreachable, up to the retry window.
    pub async fn read(
        &self,
        core: &Arc<ClientCore>,
        ino: InodeId,
        offset: u64,
        size: u32,
    ) -> FsResult<Vec<u8>> {
        let mut retry = Retry::new(core);
        loop {
            match self.read_once(core, ino, offset, size).await {
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

    async fn read_once(
        &self,
        core: &Arc<ClientCore>,
        ino: InodeId,
        offset: u64,
        size: u32,
    ) -> FsResult<Vec<u8>> {
        let file_size = self.state.lock().size;
        if offset >= file_size || size == 0 {
            return Ok(Vec::new());
        }
        let end = file_size.min(offset + u64::from(size));
        let chunk_size = core.mount_info().chunk_size;
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
            self.ensure_map(core, ino, first_chunk, last_chunk).await?;
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
                let ahead_end = end + super::readahead::WINDOW_BLOCKS * BLOCK_SIZE as u64;
                let ahead: HashMap<u64, Option<ChunkLoc>> = (last_chunk
                    ..=(ahead_end - 1) / chunk_size)
                    .filter_map(|i| st.map.get(&i).map(|loc| (i, loc.clone())))
                    .collect();
                self.readahead.fill(core, end, st.size, chunk_size, &ahead);
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
                            let got =
                                read_chunk_blocks_bytes(core, loc, run_first, run_count).await?;
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

    async fn ensure_map(
        &self,
        core: &ClientCore,
        ino: InodeId,
        first: u64,
        last: u64,
    ) -> FsResult<()> {
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
        let locs = core
            .meta()
            .call("chunk_map", |c, cx| async move {
                c.chunk_map(cx, ino, from, count).await
            })
            .await?;
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

/// The blocks a chunk write must touch: the dirty ones, plus, when the write extends the
/// chunk past `valid_len`, the blocks between that a truncate may have left stale data in.
/// Bytes at or past a chunk's length read as zeros only while the length stays put; once a
/// write moves it further, the old bytes would show again. So the block holding the old end
/// is rewritten with its tail zeroed (`Some(empty)`: read-modify-write with nothing new) and
/// whole blocks in the gap are cleared (`None`). A chunk at its first version never held data.
fn extension_plan<'a>(
    blocks: &[(u32, &'a DirtyBlock)],
    valid_len: u64,
    version: Version,
) -> Vec<(u32, Option<&'a DirtyBlock>)> {
    let mut work: Vec<(u32, Option<&DirtyBlock>)> =
        blocks.iter().map(|(b, d)| (*b, Some(*d))).collect();
    let last = match blocks.last() {
        Some((b, _)) => *b,
        None => return work,
    };
    let block = BLOCK_SIZE as u64;
    let extends = (u64::from(last) + 1) * block > valid_len.div_ceil(block) * block
        || u64::from(last) * block >= valid_len;
    if version <= Version(1) || !extends {
        return work;
    }
    let present: std::collections::HashSet<u32> = blocks.iter().map(|(b, _)| *b).collect();
    let tail = (valid_len / block) as u32;
    if valid_len % block != 0 && !present.contains(&tail) && tail < last {
        work.push((tail, Some(&EMPTY_BLOCK)));
    }
    for b in valid_len.div_ceil(block) as u32..last {
        if !present.contains(&b) {
            work.push((b, None));
        }
    }
    work.sort_by_key(|(b, _)| *b);
    work
}

static EMPTY_BLOCK: std::sync::LazyLock<DirtyBlock> = std::sync::LazyLock::new(DirtyBlock::empty);

/// Back-off between attempts of one operation, bounded by the mount's retry window.
struct Retry {
    give_up: std::time::Instant,
    backoff: std::time::Duration,
}

/// First pause before retrying a data operation; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);
/// Longest pause: a returning node is noticed within about this long.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_millis(1000);

impl Retry {
    fn new(core: &ClientCore) -> Retry {
        Retry {
            give_up: std::time::Instant::now() + core.config().retry_window,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Sleeps before the next attempt, or returns `err` when the window is used up.
    async fn wait_or_fail(&mut self, err: FsError) -> FsResult<()> {
        if std::time::Instant::now() + self.backoff >= self.give_up {
            return Err(err);
        }
        tracing::debug!(error = %err, backoff = ?self.backoff, "retrying");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}

/// Sends one write request, retrying a transient failure once.
pub(super) async fn send_with_retry(
    data: &Arc<dyn crate::data::DataPlane>,
    timeout: std::time::Duration,
    node: &NodeAddr,
    req: WriteBlocks,
) -> FsResult<()> {
    let mut last = FsError::internal("no attempt made");
    for _ in 0..WRITE_ATTEMPTS {
        match data.write_blocks(node, req.clone(), timeout).await {
            Ok(()) => return Ok(()),
            Err(e @ FsError::TimedOut(_)) => return Err(e),
            Err(e) if e.is_retryable() => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Reads and decrypts `count` blocks from `first` of a chunk. Replicas are tried in the
/// order [`order_replicas`] gives; when the current one has not answered within its hedge
/// delay, the next one is asked too, and the first good answer wins. A replica that answers
/// with corrupt, stale or missing data is reported to the master. Each returned block is
/// its plaintext cut at the chunk's length (empty for a hole).
pub(super) async fn read_chunk_blocks(
    core: &ClientCore,
    loc: &ChunkLoc,
    first: u32,
    count: u32,
) -> FsResult<Vec<Vec<u8>>> {
    let blocks = read_chunk_blocks_bytes(core, loc, first, count).await?;
    Ok(blocks.into_iter().map(Vec::from).collect())
}

/// [`read_chunk_blocks`] without copying: each block's plaintext is a view into the buffer
/// it arrived in (decrypted in place).
pub(super) async fn read_chunk_blocks_bytes(
    core: &ClientCore,
    loc: &ChunkLoc,
    first: u32,
    count: u32,
) -> FsResult<Vec<Bytes>> {
    use futures::StreamExt as _;
    if loc.replicas.is_empty() {
        return Err(FsError::Unavailable(format!(
            "chunk {:?} has no current replica",
            loc.chunk
        )));
    }
    let stats = core.replica_stats();
    let order = stats.order(&loc.replicas);
    let floor = core.config().hedge_delay;
    let mut pending = futures::stream::FuturesUnordered::new();
    let attempt = |replica: &NodeAddr| {
        let replica = replica.clone();
        async move {
            let started = std::time::Instant::now();
            let result = read_from_replica(core, &replica, loc, first, count).await;
            (replica, started.elapsed(), result)
        }
    };
    let mut next = 1;
    pending.push(attempt(&order[0]));
    let mut hedge = stats.hedge_delay(order[0].node, floor);
    let mut last_err = FsError::internal("no replica tried");
    loop {
        tokio::select! {
            done = pending.next() => {
                let Some((replica, elapsed, result)) = done else { break };
                stats.record(replica.node, elapsed, result.is_ok());
                match result {
                    Ok(blocks) => return Ok(blocks),
                    Err(failure) => {
                        if super::evidence::against_replica(&failure) {
                            report_bad(core, loc.chunk, replica.node, failure.error()).await;
                        } else if let super::evidence::ReadFailure::Local(e) = &failure {
                            // Our key ring or decryption: the replica is not blamed.
                            tracing::warn!(chunk = ?loc.chunk, node = ?replica.node, error = %e, "cannot open a block of this replica (is this mount's key file current?); not reporting it");
                        } else {
                            tracing::debug!(chunk = ?loc.chunk, node = ?replica.node, error = ?failure, "replica read failed; trying the next");
                        }
                        last_err = failure.into_error();
                        if next < order.len() {
                            pending.push(attempt(&order[next]));
                            hedge = stats.hedge_delay(order[next].node, floor);
                            next += 1;
                        } else if pending.is_empty() {
                            break;
                        }
                    }
                }
            }
            _ = tokio::time::sleep(hedge), if next < order.len() => {
                tracing::debug!(chunk = ?loc.chunk, node = ?order[next].node, ?hedge, "slow replica; hedging the read");
                pending.push(attempt(&order[next]));
                hedge = stats.hedge_delay(order[next].node, floor);
                next += 1;
            }
        }
    }
    Err(match last_err {
        e @ FsError::TimedOut(_) => e,
        e => FsError::Unavailable(format!(
            "chunk {:?}: no replica could serve the read: {e}",
            loc.chunk
        )),
    })
}

/// Tells the master a replica's node said its copy is bad (or missing), so the master asks
/// the node to verify it and repairs it if confirmed. Best effort: the chunkserver reports
/// what it quarantines too.
async fn report_bad(core: &ClientCore, chunk: ChunkId, node: NodeId, err: &FsError) {
    let reason = err.to_string();
    tracing::warn!(?chunk, ?node, %reason, "bad replica; reporting it");
    let _ = core
        .meta()
        .call("report_bad_replica", |c, cx| {
            let reason = reason.clone();
            async move { c.report_bad_replica(cx, chunk, node, reason).await }
        })
        .await;
}

/// What this mount has seen of one replica's reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Observed {
    /// Moving average of read latency, microseconds.
    ewma_us: u64,
    /// When a read from it last failed.
    failed_at: Option<std::time::Instant>,
}

/// Read latencies and failures per replica, measured by this mount: together with the
/// master's load figures they decide which replica to read first and when to hedge.
#[derive(Default)]
pub(crate) struct ReplicaStats {
    seen: Mutex<HashMap<NodeId, Observed>>,
}

impl ReplicaStats {
    fn record(&self, node: NodeId, elapsed: std::time::Duration, ok: bool) {
        let mut seen = self.seen.lock();
        let o = seen.entry(node).or_default();
        if ok {
            let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            o.ewma_us = if o.ewma_us == 0 {
                us
            } else {
                (o.ewma_us * (EWMA_WEIGHT - 1) + us) / EWMA_WEIGHT
            };
        } else {
            o.failed_at = Some(std::time::Instant::now());
        }
    }

    fn order(&self, replicas: &[NodeAddr]) -> Vec<NodeAddr> {
        order_replicas(replicas, &self.seen.lock(), std::time::Instant::now())
    }

    fn hedge_delay(&self, node: NodeId, floor: std::time::Duration) -> std::time::Duration {
        hedge_delay(self.seen.lock().get(&node).map(|o| o.ewma_us), floor)
    }
}

/// Read order: replicas that failed within [`FAILURE_MEMORY`] last; the rest by the
/// master's load figure plus this mount's measured latency (an unmeasured replica counts
/// as fast, so it gets measured), ties kept in the master's order.
fn order_replicas(
    replicas: &[NodeAddr],
    seen: &HashMap<NodeId, Observed>,
    now: std::time::Instant,
) -> Vec<NodeAddr> {
    let mut out = replicas.to_vec();
    out.sort_by_key(|r| {
        let o = seen.get(&r.node).copied().unwrap_or_default();
        let failed = o
            .failed_at
            .is_some_and(|t| now.saturating_duration_since(t) < FAILURE_MEMORY);
        (failed, r.load.saturating_add(o.ewma_us))
    });
    out
}

/// How long to wait for a replica before hedging: [`HEDGE_FACTOR`] times its recent mean
/// latency, at least `floor`, at most [`HEDGE_CAP`].
fn hedge_delay(ewma_us: Option<u64>, floor: std::time::Duration) -> std::time::Duration {
    let typical = std::time::Duration::from_micros(ewma_us.unwrap_or(0)) * HEDGE_FACTOR;
    typical.max(floor).min(HEDGE_CAP.max(floor))
}

async fn read_from_replica(
    core: &ClientCore,
    replica: &NodeAddr,
    loc: &ChunkLoc,
    first: u32,
    count: u32,
) -> Result<Vec<Bytes>, super::evidence::ReadFailure> {
    use super::evidence::ReadFailure;
    let mut out = Vec::with_capacity(count as usize);
    let mut next = first;
    while next < first + count {
        let n = (first + count - next).min(MAX_BLOCKS_PER_REQUEST);
        let answer = core
            .data()
            .read_blocks(
                replica,
                ReadBlocks {
                    chunk: loc.chunk,
                    min_version: loc.version,
                    first_block: next,
                    count: n,
                },
            )
            .await
            .map_err(ReadFailure::Node)?;
        if answer.blocks.len() != n as usize {
            return Err(ReadFailure::Local(FsError::Corrupt(format!(
                "asked for {n} blocks, got {}",
                answer.blocks.len()
            ))));
        }
        for (i, block) in answer.blocks.into_iter().enumerate() {
            let index = next + i as u32;
            let block_start = u64::from(index) * BLOCK_SIZE as u64;
            let valid = loc
                .length
                .saturating_sub(block_start)
                .min(BLOCK_SIZE as u64) as usize;
            let mut plain = Bytes::new();
            if let Some(sealed) = block
                && valid > 0
            {
                plain = common::block::open_bytes(core.keys(), loc.chunk, index, sealed)
                    .map_err(ReadFailure::Local)?
                    .1;
                plain.truncate(valid);
            }
            out.push(plain);
        }
        next += n;
    }
    Ok(out)
}

/// Splits sorted block numbers into runs of consecutive numbers, each at most
/// `MAX_BLOCKS_PER_REQUEST` long: (first, count).
pub(super) fn runs(blocks: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some((first, count)) if *first + *count == b && *count < MAX_BLOCKS_PER_REQUEST => {
                *count += 1
            }
            _ => out.push((b, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_plan_clears_stale_gap() {
        let mut map = DirtyMap::default();
        map.write(5 * BLOCK_SIZE as u64 + 10, b"x");
        let blocks: Vec<(u32, &DirtyBlock)> =
            map.blocks.iter().map(|(b, d)| (*b as u32, d)).collect();
        let plan = |valid: u64, v: u64| {
            extension_plan(&blocks, valid, Version(v))
                .into_iter()
                .map(|(b, d)| (b, d.map(|d| d.ranges.is_empty())))
                .collect::<Vec<_>>()
        };
        // Fresh chunk: nothing stale can exist.
        assert_eq!(plan(100, 1), vec![(5, Some(false))]);
        // Old end inside block 0: rewrite its tail, clear blocks 1..=4.
        assert_eq!(
            plan(100, 3),
            vec![
                (0, Some(true)),
                (1, None),
                (2, None),
                (3, None),
                (4, None),
                (5, Some(false))
            ]
        );
        // Old end block-aligned at block 3: clear 3 and 4 only.
        assert_eq!(
            plan(3 * BLOCK_SIZE as u64, 3),
            vec![(3, None), (4, None), (5, Some(false))]
        );
        // The write does not extend the chunk: nothing extra.
        assert_eq!(plan(8 * BLOCK_SIZE as u64, 3), vec![(5, Some(false))]);
    }

    fn addr(node: u64, load: u64) -> NodeAddr {
        NodeAddr {
            node: NodeId(node),
            addr: format!("n{node}"),
            load,
        }
    }

    #[test]
    fn replica_order_table() {
        let now = std::time::Instant::now();
        let seen = |list: &[(u64, u64, bool)]| -> HashMap<NodeId, Observed> {
            list.iter()
                .map(|&(n, ewma_us, failed)| {
                    let failed_at = failed.then_some(now);
                    (NodeId(n), Observed { ewma_us, failed_at })
                })
                .collect()
        };
        let order = |replicas: &[NodeAddr], s: &HashMap<NodeId, Observed>| -> Vec<u64> {
            order_replicas(replicas, s, now)
                .iter()
                .map(|r| r.node.0)
                .collect()
        };
        let master = [addr(1, 0), addr(2, 100), addr(3, 5000)];
        // Nothing measured: the master's order (least loaded first).
        assert_eq!(order(&master, &seen(&[])), vec![1, 2, 3]);
        // Node 1 measured slow by this mount: it goes behind the others.
        assert_eq!(order(&master, &seen(&[(1, 20_000, false)])), vec![2, 3, 1]);
        // A recent failure sends a replica last, whatever its latency.
        assert_eq!(order(&master, &seen(&[(2, 10, true)])), vec![1, 3, 2]);
        // ...but only for a while.
        let old = HashMap::from([(
            NodeId(2),
            Observed {
                ewma_us: 10,
                failed_at: now.checked_sub(FAILURE_MEMORY * 2),
            },
        )]);
        assert_eq!(order(&master, &old), vec![1, 2, 3]);
    }

    #[test]
    fn hedge_delay_table() {
        let ms = std::time::Duration::from_millis;
        // (recent mean latency in µs, floor) -> delay before the second request
        assert_eq!(hedge_delay(None, ms(20)), ms(20));
        assert_eq!(hedge_delay(Some(1_000), ms(20)), ms(20));
        assert_eq!(hedge_delay(Some(10_000), ms(20)), ms(30));
        // A very slow history never delays the hedge past the cap...
        assert_eq!(hedge_delay(Some(10_000_000), ms(20)), HEDGE_CAP);
        // ...unless the configured floor is larger.
        assert_eq!(hedge_delay(Some(10_000_000), ms(900)), ms(900));
    }

    #[test]
    fn runs_split_gaps_and_limits() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[1, 2, 3, 7, 8]), vec![(1, 3), (7, 2)]);
        let long: Vec<u32> = (0..130).collect();
        assert_eq!(runs(&long), vec![(0, 64), (64, 64), (128, 2)]);
    }
}
