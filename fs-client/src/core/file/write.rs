//! The write path of an open file: buffering writes, flushing them to the replicas of
//! fresh write grants, committing them with the master, and making them durable on fsync.
//! It never serves a read (a partly written block's old bytes come from `fetch`).

use super::super::buffer::{DirtyBlock, DirtyMap};
use super::super::fetch::{read_chunk_blocks, runs};
use super::super::replicas::{Retry, WRITE_ATTEMPTS, send_with_retry};
use super::{GrantState, Late, OpenFile};
use bytes::Bytes;
use common::block::{BLOCK_SIZE, ChunkSealer};
use common::types::*;
use common::{ChunkId, FsError, FsResult, NodeId, Version};
use futures::StreamExt as _;
use futures::future::join_all;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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

impl OpenFile {
    /// Buffers a write if there is room; `None` when the writer must wait for a flush.
    pub fn try_buffer(
        self: &Arc<Self>,
        append: bool,
        offset: u64,
        data: &[u8],
        caller_uid: u32,
    ) -> Option<FsResult<u32>> {
        let threshold = self.io.config.flush_threshold;
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
            let file = self.clone();
            tokio::spawn(async move {
                let result = file.flush_inner(false).await;
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
        append: bool,
        offset: u64,
        data: &[u8],
        caller_uid: u32,
    ) -> FsResult<u32> {
        loop {
            if let Some(result) = self.try_buffer(append, offset, data, caller_uid) {
                return result;
            }
            self.flush_inner(false).await?;
        }
    }

    /// Pushes and commits everything buffered; with `sync`, replicas fdatasync first.
    /// Reports a background flush's failure if there was one.
    pub async fn flush(&self, sync: bool) -> FsResult<()> {
        self.flush_inner(sync).await?;
        match self.state.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn flush_inner(&self, sync: bool) -> FsResult<()> {
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
        let result = self.push(&snapshot, sync, size, mtime, clear_suid).await;
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
        snapshot: &DirtyMap,
        sync: bool,
        size: u64,
        mtime: Option<Timespec>,
        clear_suid: bool,
    ) -> FsResult<(Attr, Vec<u64>)> {
        let chunk_size = self.io.chunk_size;
        let blocks_per_chunk = chunk_size / BLOCK_SIZE as u64;
        let mut by_chunk: BTreeMap<u64, Vec<(u32, &DirtyBlock)>> = BTreeMap::new();
        for (block, dirty) in &snapshot.blocks {
            by_chunk
                .entry(block / blocks_per_chunk)
                .or_default()
                .push(((block % blocks_per_chunk) as u32, dirty));
        }
        let indexes: Vec<u64> = by_chunk.keys().copied().collect();
        self.ensure_grants(&indexes).await?;
        // Tells late replicas this flush committed (dropped unsent when it failed).
        let (committed_tx, committed) = tokio::sync::watch::channel(false);
        let commits = join_all(
            by_chunk
                .iter()
                .map(|(index, blocks)| self.write_chunk(*index, blocks, &committed, sync)),
        )
        .await
        .into_iter()
        .collect::<FsResult<Vec<ChunkCommit>>>()?;
        if sync {
            let syncing = std::time::Instant::now();
            self.sync_replicas().await?;
            self.io.metrics.phase("sync", syncing.elapsed());
        }
        let committing = std::time::Instant::now();
        let commit = CommitWrite {
            ino: self.ino,
            chunks: commits,
            size,
            mtime: mtime.unwrap_or_else(Timespec::now),
            clear_suid,
        };
        let attr = self.io.meta.commit_write(commit).await?;
        self.io.metrics.phase("commit", committing.elapsed());
        let _ = committed_tx.send(true);
        Ok((attr, indexes))
    }

    async fn ensure_grants(&self, indexes: &[u64]) -> FsResult<()> {
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
                self.io.metrics.straggler_grace_expired();
            }
            self.io.metrics.phase("straggler_wait", waiting.elapsed());
        }
        let ino = self.ino;
        let granting = std::time::Instant::now();
        let grants = self.io.meta.prepare_write(ino, missing).await?;
        self.io.metrics.phase("prepare_write", granting.elapsed());
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
        index: u64,
        blocks: &[(u32, &DirtyBlock)],
        committed: &tokio::sync::watch::Receiver<bool>,
        sync: bool,
    ) -> FsResult<ChunkCommit> {
        let mut attempt = 0;
        let mut retry = Retry::new(self.io.config.retry_window);
        loop {
            attempt += 1;
            match self.write_chunk_once(index, blocks, committed, sync).await {
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
            self.ensure_grants(&[index]).await?;
        }
    }

    /// One attempt at writing one chunk's dirty blocks under its current grant: plan the
    /// blocks, read the old bytes a partial block builds on, seal, send to every replica of
    /// the grant, and wait for the write quorum. Returns what the commit records.
    async fn write_chunk_once(
        &self,
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
        let bases = self.read_bases(&gs, index, valid_len, &work).await?;
        let sealing = std::time::Instant::now();
        let (sealed, written_end) = self.seal_blocks(&gs, &work, bases);
        self.io.metrics.phase("seal", sealing.elapsed());
        let (requests, synced_in_write) = write_requests(grant, &sealed, sync);
        let sending = std::time::Instant::now();
        let mut running = self.send_to_replicas(&gs, requests);
        let ok = self.await_quorum(grant, &mut running).await?;
        self.io.metrics.phase("replicas", sending.elapsed());
        let late = if running.is_empty() {
            Late::default()
        } else {
            self.follow_stragglers(index, grant, running, committed.clone())
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
            version: grant.version,
            written_end,
            ok_nodes: ok,
        })
    }

    /// The committed plaintext of the blocks in `work` that are only partly written and
    /// overlap existing data: a sealed block is whole, so the write builds on these bytes.
    async fn read_bases(
        &self,
        gs: &GrantState,
        index: u64,
        valid_len: u64,
        work: &[(u32, Option<&DirtyBlock>)],
    ) -> FsResult<HashMap<u32, Vec<u8>>> {
        let need_base: Vec<u32> = work
            .iter()
            .filter_map(|(b, d)| d.map(|d| (*b, d)))
            .filter(|(b, d)| !d.is_full() && u64::from(*b) * (BLOCK_SIZE as u64) < valid_len)
            .map(|(b, _)| b)
            .collect();
        let mut bases: HashMap<u32, Vec<u8>> = HashMap::new();
        if need_base.is_empty() {
            return Ok(bases);
        }
        let loc = ChunkLoc {
            index,
            chunk: gs.grant.chunk,
            // The committed copy: what this write builds on.
            version: gs.grant.base,
            length: valid_len,
            replicas: gs.ok_addrs(),
        };
        for run in runs(&need_base) {
            let plain = read_chunk_blocks(&self.io, &loc, run.0, run.1).await?;
            for (i, data) in plain.into_iter().enumerate() {
                bases.insert(run.0 + i as u32, data);
            }
        }
        Ok(bases)
    }

    /// Seals every block of `work` at the grant's version (a `None` block is cleared: an
    /// empty block). Returns the sealed blocks in order and the chunk's written end after
    /// them.
    fn seal_blocks(
        &self,
        gs: &GrantState,
        work: &[(u32, Option<&DirtyBlock>)],
        mut bases: HashMap<u32, Vec<u8>>,
    ) -> (Vec<(u32, Bytes)>, u64) {
        let version = gs.grant.version;
        let sealer = ChunkSealer::new(self.io.keys.current(), gs.grant.chunk);
        let mut written_end = gs.written_end;
        let mut sealed: Vec<(u32, Bytes)> = Vec::with_capacity(work.len());
        for (b, dirty) in work {
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
        (sealed, written_end)
    }

    /// Starts one task per replica of the grant sending every request: when the quorum has
    /// answered, the others finish in the background instead of holding up the flush
    /// (docs/PROTOCOL.md, "Acknowledgement at W").
    fn send_to_replicas(&self, gs: &GrantState, requests: Vec<WriteBlocks>) -> ReplicaWrites {
        let timeout = self.io.config.write_timeout;
        gs.ok_addrs()
            .into_iter()
            .map(|node| {
                let (data, requests) = (self.io.data.clone(), requests.clone());
                tokio::spawn(async move {
                    let sends = requests
                        .into_iter()
                        .map(|req| send_with_retry(&data, timeout, &node, req));
                    let results = join_all(sends).await;
                    let result = results.into_iter().collect::<FsResult<Vec<()>>>();
                    (node.node, result.map(|_| ()))
                })
            })
            .collect()
    }

    /// Waits until the grant's write quorum of replicas acknowledged every request; the
    /// rest stay in `running`. A replica that failed is dropped from this write; a
    /// `StaleVersion` (another writer's newer grant) ends it at once.
    async fn await_quorum(
        &self,
        grant: &WriteGrant,
        running: &mut ReplicaWrites,
    ) -> FsResult<Vec<NodeId>> {
        let needed = grant.quorum as usize;
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
        Ok(ok)
    }

    /// Lets the replicas of a grant still writing after the quorum answered finish in the
    /// background. Each that took every request is reported to the master
    /// (`confirm_replicas`) once the grant has committed, so that it stays current instead
    /// of being left stale; the master accepts it only if the chunk is still at this
    /// version. The next grant of this chunk waits for the report up to
    /// [`STRAGGLER_GRACE`], so a replica that is merely a little behind stays in it.
    fn follow_stragglers(
        &self,
        index: u64,
        grant: &WriteGrant,
        mut running: ReplicaWrites,
        mut committed: tokio::sync::watch::Receiver<bool>,
    ) -> Late {
        let meta = self.io.meta.clone();
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
            let answer = meta
                .confirm_replicas(chunk, base, version, late.clone())
                .await;
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
    async fn sync_replicas(&self) -> FsResult<()> {
        let Err(e) = self.sync_replicas_once().await else {
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
        let bound = self.io.config.write_timeout * (WRITE_ATTEMPTS as u32 + 1);
        let _ = tokio::time::timeout(bound, ended).await;
        self.sync_replicas_once().await
    }

    /// One round of [`Self::sync_replicas`] over the replicas known to hold the writes.
    async fn sync_replicas_once(&self) -> FsResult<()> {
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
            let result = self.io.data.sync_chunks(&node, list).await;
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
}

/// The write requests of one chunk's sealed blocks: one per run of consecutive blocks, and
/// whether the replicas fdatasync inside the write (`sync` with a single request).
///
/// An fsync whose write of this chunk is one request has the replicas fdatasync before they
/// answer: each acknowledgement is then durable, and the separate sync_chunks round trip is
/// not needed for it (fdatasync covers the whole chunk file, earlier writes under this grant
/// included). A chunk written in several requests keeps the separate round: its requests run
/// in parallel, so one request's fdatasync could finish before another's pwrite.
fn write_requests(
    grant: &WriteGrant,
    sealed: &[(u32, Bytes)],
    sync: bool,
) -> (Vec<WriteBlocks>, bool) {
    let mut requests: Vec<WriteBlocks> = runs(&sealed.iter().map(|(b, _)| *b).collect::<Vec<_>>())
        .into_iter()
        .map(|(first, count)| {
            let start = sealed.iter().position(|(b, _)| *b == first).unwrap_or(0);
            WriteBlocks {
                chunk: grant.chunk,
                version: grant.version,
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
    let synced_in_write = sync && requests.len() == 1;
    if synced_in_write {
        requests[0].sync = true;
    }
    (requests, synced_in_write)
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
}
