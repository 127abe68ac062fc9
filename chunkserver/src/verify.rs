//! This node's own verdict on one of its replicas (`ChunkServer::verify_replica`): the
//! evidence the master asks for before it marks a replica bad, so that no client's word
//! alone ever drops a replica (docs/SECURITY.md, "Bad replicas").
//!
//! It reads only through the store's verifying paths: every stored block's BLAKE3 checksum,
//! then the replica's version. It never deletes or repairs anything itself; a file that
//! fails its checksum is quarantined and reported by the store exactly as on any read.

use crate::store::Store;
use common::types::{ReadBlocks, ReplicaCheck};
use common::{ChunkId, FsError, FsResult, Version};

/// Verifies every stored block of this node's replica of `chunk`, then that the replica has
/// seen `version`.
pub async fn verify_replica(
    store: &Store,
    chunk: ChunkId,
    version: Version,
) -> FsResult<ReplicaCheck> {
    if let Err(e) = store.verify_chunk(chunk).await {
        return classify(e);
    }
    // One block is enough for the version: the store answers `StaleVersion` for a replica
    // that has not seen `version` before it looks at any block.
    let probe = ReadBlocks {
        chunk,
        min_version: version,
        first_block: 0,
        count: 1,
    };
    match store.read_blocks(probe).await {
        Ok(_) => Ok(ReplicaCheck::Intact),
        Err(e) => classify(e),
    }
}

/// Which store errors are the replica's own fault (a verdict) and which say nothing about it
/// (the request failed: the master keeps the replica and may ask again).
fn classify(e: FsError) -> FsResult<ReplicaCheck> {
    match e {
        FsError::NotFound => Ok(ReplicaCheck::Missing),
        FsError::StaleVersion { held, .. } => Ok(ReplicaCheck::Stale { have: held }),
        FsError::Corrupt(why) => Ok(ReplicaCheck::Corrupt(why)),
        // The node's own read of its file failed: the replica cannot be served from here.
        FsError::Io(why) => Ok(ReplicaCheck::Corrupt(format!(
            "read failed on the node: {why}"
        ))),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use common::block::{DataKey, KeyRing, seal};
    use common::types::WriteBlocks;
    use std::os::unix::fs::FileExt as _;

    #[test]
    fn classify_table() {
        let table: &[(FsError, Option<ReplicaCheck>)] = &[
            (FsError::NotFound, Some(ReplicaCheck::Missing)),
            (
                FsError::StaleVersion {
                    held: Version(3),
                    used: Version(4),
                },
                Some(ReplicaCheck::Stale { have: Version(3) }),
            ),
            (
                FsError::Corrupt("checksum".into()),
                Some(ReplicaCheck::Corrupt("checksum".into())),
            ),
            (
                FsError::Io("EIO".into()),
                Some(ReplicaCheck::Corrupt("read failed on the node: EIO".into())),
            ),
            // Says nothing about the replica: an error, never a verdict.
            (FsError::Unavailable("busy".into()), None),
            (FsError::TimedOut("slow".into()), None),
            (FsError::Internal("bug".into()), None),
        ];
        for (error, want) in table {
            assert_eq!(classify(error.clone()).ok(), *want, "{error}");
        }
    }

    fn chunk_file(dir: &std::path::Path) -> std::path::PathBuf {
        let mut stack = vec![dir.join("chunks")];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    return path;
                }
            }
        }
        panic!("no chunk file under {}", dir.display());
    }

    #[tokio::test]
    async fn intact_stale_missing_and_corrupt_replicas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = Store::open(StoreOptions {
            data_dir: dir.path().to_path_buf(),
            capacity_bytes: None,
            sync_every_write: false,
            chunk_size: Some(1024 * 1024),
            direct_io: false,
        })
        .expect("store");
        let keys = KeyRing::single(DataKey::new(0, [9u8; 32]));
        let chunk = ChunkId(0xabc);
        let blocks = (0..3u32)
            .map(|i| {
                seal(
                    keys.current(),
                    chunk,
                    i,
                    Version(2),
                    &vec![i as u8; common::block::BLOCK_SIZE],
                )
            })
            .collect();
        store
            .write_blocks(WriteBlocks {
                chunk,
                version: Version(2),
                base: Version(1),
                first_block: 0,
                blocks,
                sync: true,
            })
            .await
            .expect("write");
        let check = |version| verify_replica(&store, chunk, version);
        assert_eq!(check(Version(2)).await, Ok(ReplicaCheck::Intact));
        assert_eq!(
            check(Version(3)).await,
            Ok(ReplicaCheck::Stale { have: Version(2) })
        );
        assert_eq!(
            verify_replica(&store, ChunkId(0xdef), Version(1)).await,
            Ok(ReplicaCheck::Missing)
        );

        // Flip one byte inside the first block's slot (past the 4 KiB header and the
        // block table).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(chunk_file(dir.path()))
            .expect("open chunk file");
        let at = 8192 + 100;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, at).expect("read byte");
        b[0] ^= 0x20;
        file.write_all_at(&b, at).expect("flip byte");
        drop(file);
        assert!(
            matches!(check(Version(2)).await, Ok(ReplicaCheck::Corrupt(_))),
            "a flipped byte is found by the node"
        );
        // Quarantined: the node no longer holds it.
        assert_eq!(check(Version(2)).await, Ok(ReplicaCheck::Missing));
    }
}
