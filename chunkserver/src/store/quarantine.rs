//! Quarantine: a chunk file that failed a check is moved to `quarantine/` and reported to
//! the master, so its bytes are never served again.
//!
//! It must never repair, rewrite or delete the damaged file (the master re-replicates the
//! chunk from a good replica) and must never block on the master: reports are queued.

use super::file_io::ChunkState;
use super::{BadReplica, Inner, allocated, sub_saturating};
use common::ChunkId;
use std::fs;
use std::io;

impl Inner {
    /// Moves a damaged chunk file aside so its bytes are never served again, and queues a
    /// report for the master. Called with the chunk's write lock held.
    pub(super) fn quarantine(&self, chunk: ChunkId, state: &mut ChunkState, why: &str) {
        let path = self.chunk_path(chunk);
        let alloc = match &*state {
            ChunkState::Open(open) => open.allocated,
            _ => fs::metadata(&path).map(|m| allocated(&m)).unwrap_or(0),
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let target = self
            .quarantine_dir
            .join(format!("{}.{stamp}", chunk.file_name()));
        match fs::rename(&path, &target) {
            Ok(()) => {
                tracing::error!(chunk = ?chunk, reason = why, moved_to = %target.display(),
                    "corrupt chunk replica quarantined");
                sub_saturating(&self.used_bytes, alloc);
                sub_saturating(&self.chunk_count, 1);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // Still never served: the state below stays Unknown, so every access re-checks
                // the file and fails again.
                tracing::error!(chunk = ?chunk, reason = why, error = %e,
                    "corrupt chunk replica could not be quarantined");
                *state = ChunkState::Unknown;
                self.report(chunk, why);
                return;
            }
        }
        *state = ChunkState::Absent;
        self.report(chunk, why);
    }

    pub(super) fn report(&self, chunk: ChunkId, why: &str) {
        let bad = BadReplica {
            chunk,
            reason: why.to_string(),
        };
        if self.bad_tx.try_send(bad).is_err() {
            tracing::warn!(chunk = ?chunk, "corruption report queue full or closed; report dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::*;

    #[tokio::test]
    async fn flipped_byte_is_quarantined_and_never_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, mut bad) = open_store(dir.path());
        let c = ChunkId(0x2201);
        let blocks = vec![sealed(c, 0, Version(1), 300), sealed(c, 1, Version(1), 300)];
        store
            .write_blocks(write_req(c, 1, 0, blocks))
            .await
            .expect("write");
        flip_slot_byte(&store, c, 1);

        let read = store.read_blocks(read_req(c, 1, 0, 2)).await;
        assert!(matches!(read, Err(FsError::Corrupt(_))), "{read:?}");
        assert!(!store.chunk_path(c).exists(), "file moved away");
        let quarantined: Vec<_> = fs::read_dir(dir.path().join("quarantine"))
            .expect("quarantine dir")
            .collect();
        assert_eq!(quarantined.len(), 1);
        let report = bad.try_recv().expect("corruption reported");
        assert_eq!(report.chunk, c);
        // Never served afterwards, not even the intact block.
        assert_eq!(
            store.read_blocks(read_req(c, 1, 0, 1)).await,
            Err(FsError::NotFound)
        );
        assert_eq!(store.status().chunk_count, 0);
        assert!(store.status().errors >= 1);
    }

    #[tokio::test]
    async fn verify_finds_corruption_anywhere_in_the_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, mut bad) = open_store(dir.path());
        let c = ChunkId(0x4401);
        store
            .write_blocks(write_req(c, 1, 14, vec![sealed(c, 14, Version(1), 200)]))
            .await
            .expect("write");
        store.verify_chunk(c).await.expect("clean chunk verifies");
        flip_slot_byte(&store, c, 14);
        assert!(matches!(
            store.verify_chunk(c).await,
            Err(FsError::Corrupt(_))
        ));
        assert_eq!(bad.try_recv().expect("reported").chunk, c);
        assert_eq!(store.verify_chunk(c).await, Err(FsError::NotFound));
    }

    #[tokio::test]
    async fn torn_write_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let c = ChunkId(0x33);
        store
            .write_blocks(write_req(c, 1, 3, vec![sealed(c, 3, Version(1), 4096)]))
            .await
            .expect("write");
        // A crash after the slot write but before the table update: new slot bytes, old entry.
        let file = OpenOptions::new()
            .write(true)
            .open(store.chunk_path(c))
            .expect("open chunk file");
        let header = Header::new(c, Version(1), 16);
        file.write_all_at(&sealed(c, 3, Version(2), 4096), header.slot_offset(3, 0))
            .expect("rewrite slot");
        drop(store); // a fresh process: nothing cached
        let (store, _bad) = open_store(dir.path());
        let read = store.read_blocks(read_req(c, 1, 3, 1)).await;
        assert!(matches!(read, Err(FsError::Corrupt(_))), "{read:?}");
    }
}
