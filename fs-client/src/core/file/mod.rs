//! One file open in this mount (any number of handles): its write-behind buffer, its
//! cached chunk map and write grants, and the two data paths over them.
//!
//! `write.rs` is the write path: `write` copies into the dirty map and returns. Past
//! `flush_threshold` a background flush starts; past twice that, writers wait. A flush takes
//! the whole dirty map, asks the master for write grants (cached until the file closes),
//! seals blocks (reading the old block first when a block is only partly written), sends
//! them to every replica in parallel in requests of up to 4 MiB, and commits. Only one flush
//! per file runs at a time, so writes reach chunkservers in the order the application made
//! them.
//!
//! `read.rs` is the read path: chunk locations come from the master (cached until the file
//! is reopened or written); blocks are read through the readahead window or directly
//! (`fetch`), and this mount's unflushed bytes are laid over them.
//!
//! An open file holds everything it needs (`IoContext`) from its creation; it never reaches
//! back into the `ClientCore`.

mod read;
mod write;

use super::buffer::DirtyMap;
use super::context::IoContext;
use super::readahead::Readahead;
use common::types::*;
use common::{ChunkId, FsError, InodeId, NodeId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

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
    io: Arc<IoContext>,
    state: Mutex<FileState>,
    flush_lock: tokio::sync::Mutex<()>,
    /// Blocks fetched ahead of a sequential reader.
    readahead: Readahead,
}

impl OpenFile {
    pub(crate) fn new(attr: Attr, io: Arc<IoContext>) -> OpenFile {
        OpenFile {
            ino: attr.ino,
            io,
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
            readahead: Readahead::default(),
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
}
