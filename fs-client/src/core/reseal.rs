//! Re-encryption of one chunk under the newest data key (the `mosaic-mount reencrypt` pass).
//!
//! A chunk whose served blocks carry an older key id is rewritten through the ordinary
//! versioned write protocol: a grant from the master, the same plaintext resealed at the
//! grant's version on every replica of the grant, then a commit. It must never put stale
//! bytes over a newer write, so it only ever writes the plaintext of its own grant's base
//! (the committed state when the grant was made) and only under a *quiet* grant:
//!
//! - A writer granted after us has a higher version. If its blocks reach a replica first,
//!   ours are refused there (`StaleVersion`) and we give up the chunk; if ours come first,
//!   its blocks overwrite our copy and its commit (confirmed only grows) makes them visible.
//!   Either way its data wins, and blocks it did not touch read the base's plaintext, which
//!   is exactly what we wrote.
//! - A writer granted before us and not committed yet is the danger: its blocks may already
//!   sit on a replica as the scratch copy our write would replace, and its commit would then
//!   expose our (older) bytes. The master bumps a chunk's version by one per grant, so our
//!   grant is quiet when `version == base + 1`: no grant was made between the last commit
//!   and ours. Otherwise we give that grant up unused, wait [`settle_time`] (longer than any
//!   writer takes from its last block to its commit), and take one more grant: it is quiet
//!   when it directly follows the one we gave up (older grants have committed or are dead
//!   by then; a dead writer that retries later re-sends all its blocks, which replicas that
//!   saw our version refuse, so it re-grants on top of our commit).
//!
//! Each replica keeps two copies of a block (docs/PROTOCOL.md, "No partial state"); the
//! first rewrite leaves the old copy as scratch space, still sealed with the old key. So a
//! chunk is rewritten twice: the second commit overwrites that scratch copy too.
//!
//! It never writes a block that was a hole, never changes a file's size, and never writes
//! without a grant: the master's versions order it like any other writer.

use super::ClientCore;
use super::fetch::{read_chunk_blocks, runs};
use super::replicas::send_with_retry;
use bytes::Bytes;
use common::block::{BLOCK_SIZE, ChunkSealer};
use common::rpc::MAX_BLOCKS_PER_REQUEST;
use common::types::*;
use common::{FsError, FsResult, InodeId, Version};
use futures::future::join_all;
use std::time::Duration;

/// Rewrites of a chunk with old blocks: the first makes the served copy current, the
/// second overwrites the scratch copy the first left behind.
const REWRITES: usize = 2;

/// What happened to one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resealed {
    /// Every served block already carries the newest key id.
    Current,
    /// These many blocks (and this many plaintext bytes) were resealed.
    Rewritten { blocks: u32, bytes: u64 },
    /// Another writer holds or raced a grant: left for the next run.
    Busy,
}

/// Block indexes (counted from `first`) of served blocks sealed with a key other than
/// `current`. Holes (`None`) are not listed: they stay holes. A block too short to carry
/// a header is listed too, so that reading it reports the corruption instead of skipping it.
pub fn old_blocks(first: u32, blocks: &[Option<Bytes>], current: u32) -> Vec<u32> {
    blocks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let sealed = b.as_ref()?;
            match common::block::header(sealed) {
                Ok(h) if h.key_id == current => None,
                _ => Some(first + i as u32),
            }
        })
        .collect()
}

/// Whether a grant directly follows the chunk's last commit (no other grant in between),
/// or directly follows `previous`, a grant of ours given up unused.
pub fn grant_is_quiet(grant: &WriteGrant, previous: Option<Version>) -> bool {
    let after = previous.unwrap_or(grant.base);
    grant.base.0 > 0 && after.0.checked_add(1) == Some(grant.version.0)
}

/// Longer than a writer can take between its last block write and its commit: its write
/// attempts, then the commit retried over the retry window.
pub fn settle_time(config: &super::CoreConfig) -> Duration {
    config.write_timeout * 3 + config.retry_window + config.rpc_timeout
}

impl ClientCore {
    /// Locations of the existing chunks of `ino` among `count` from index `first`.
    pub async fn chunk_map(&self, ino: InodeId, first: u64, count: u64) -> FsResult<Vec<ChunkLoc>> {
        self.meta().chunk_map(ino, first, count).await
    }

    /// Re-encrypts chunk `loc` of file `ino` if any block it serves carries an older key
    /// id. See the module header for why this is safe next to other writers.
    pub async fn reseal_chunk(&self, ino: InodeId, loc: &ChunkLoc) -> FsResult<Resealed> {
        let chunk_size = self.mount_info().chunk_size;
        let blocks = loc.length.min(chunk_size).div_ceil(BLOCK_SIZE as u64) as u32;
        let old = self.scan_old_blocks(loc, blocks).await?;
        if old.is_empty() {
            return Ok(Resealed::Current);
        }
        let mut bytes = 0;
        for _ in 0..REWRITES {
            match self.rewrite_blocks(ino, loc.index, &old).await? {
                Some(n) => bytes = n,
                None => return Ok(Resealed::Busy),
            }
        }
        Ok(Resealed::Rewritten {
            blocks: old.len() as u32,
            bytes,
        })
    }

    /// The served blocks sealed with an older key, read raw from the first replica that
    /// answers (every current replica holds the same sealed bytes).
    async fn scan_old_blocks(&self, loc: &ChunkLoc, blocks: u32) -> FsResult<Vec<u32>> {
        let current = self.io.keys.current().id;
        let mut last = FsError::Unavailable(format!("chunk {:?} has no replica", loc.chunk));
        'replicas: for replica in &loc.replicas {
            let mut old = Vec::new();
            let mut first = 0;
            while first < blocks {
                let count = (blocks - first).min(MAX_BLOCKS_PER_REQUEST);
                let req = ReadBlocks {
                    chunk: loc.chunk,
                    min_version: loc.version,
                    first_block: first,
                    count,
                };
                match self.io.data.read_blocks(replica, req).await {
                    Ok(answer) => old.extend(old_blocks(first, &answer.blocks, current)),
                    Err(e) => {
                        last = e;
                        continue 'replicas;
                    }
                }
                first += count;
            }
            return Ok(old);
        }
        Err(last)
    }

    /// A quiet grant of chunk `index` (see the module header), or `None` when other
    /// writers keep it busy.
    async fn quiet_grant(&self, ino: InodeId, index: u64) -> FsResult<Option<WriteGrant>> {
        let first = self.grant(ino, index).await?;
        if grant_is_quiet(&first, None) {
            return Ok(Some(first));
        }
        tracing::info!(?ino, index, version = ?first.version, base = ?first.base,
            "an older grant of this chunk is outstanding; waiting for it to settle");
        tokio::time::sleep(settle_time(&self.io.config)).await;
        let second = self.grant(ino, index).await?;
        Ok(grant_is_quiet(&second, Some(first.version)).then_some(second))
    }

    async fn grant(&self, ino: InodeId, index: u64) -> FsResult<WriteGrant> {
        let mut grants = self.meta().prepare_write(ino, vec![index]).await?;
        grants
            .pop()
            .ok_or_else(|| FsError::internal("prepare_write answered no grant"))
    }

    /// One versioned rewrite of `blocks` of chunk `index` with the newest key. Returns the
    /// plaintext bytes written, or `None` when another writer got in the way.
    async fn rewrite_blocks(
        &self,
        ino: InodeId,
        index: u64,
        blocks: &[u32],
    ) -> FsResult<Option<u64>> {
        let Some(grant) = self.quiet_grant(ino, index).await? else {
            return Ok(None);
        };
        // The committed state the grant builds on: exactly what readers get now.
        let base = ChunkLoc {
            index,
            chunk: grant.chunk,
            version: grant.base,
            length: grant.length,
            replicas: grant.replicas.clone(),
        };
        let sealer = ChunkSealer::new(self.io.keys.current(), grant.chunk);
        let mut requests = Vec::new();
        let mut bytes = 0u64;
        for (first, count) in runs(blocks) {
            let plain = read_chunk_blocks(&self.io, &base, first, count).await?;
            // A hole or a block past the (possibly truncated) end stays as it is; runs
            // split around it.
            let mut sealed: Vec<(u32, Bytes)> = Vec::new();
            for (i, data) in plain.iter().enumerate() {
                if data.is_empty() {
                    continue;
                }
                let b = first + i as u32;
                bytes += data.len() as u64;
                sealed.push((b, sealer.seal(b, grant.version, data)));
            }
            let numbers: Vec<u32> = sealed.iter().map(|(b, _)| *b).collect();
            let mut at = 0;
            for (run_first, run_count) in runs(&numbers) {
                requests.push(WriteBlocks {
                    chunk: grant.chunk,
                    version: grant.version,
                    base: grant.base,
                    first_block: run_first,
                    blocks: sealed[at..at + run_count as usize]
                        .iter()
                        .map(|(_, s)| s.clone())
                        .collect(),
                    sync: false,
                });
                at += run_count as usize;
            }
        }
        if requests.is_empty() {
            return Ok(Some(0));
        }
        let timeout = self.io.config.write_timeout;
        let results = join_all(grant.replicas.iter().map(|node| {
            let requests = requests.clone();
            async move {
                for req in requests {
                    send_with_retry(&self.io.data, timeout, node, req).await?;
                }
                // Durable before the commit: the old copy may be dropped once it commits.
                self.io.data.sync_chunks(node, vec![grant.chunk]).await?;
                Ok::<_, FsError>(node.node)
            }
        }))
        .await;
        let mut ok = Vec::new();
        for result in results {
            match result {
                Ok(node) => ok.push(node),
                Err(FsError::StaleVersion { .. }) => return Ok(None),
                Err(e) => tracing::warn!(?ino, index, error = %e, "replica failed a reseal write"),
            }
        }
        if ok.len() < grant.quorum as usize {
            return Err(FsError::Unavailable(format!(
                "chunk {:?}: only {} of {} required replicas took the rewrite",
                grant.chunk,
                ok.len(),
                grant.quorum
            )));
        }
        // The file's size and mtime stay: size is kept as the larger, mtime is the current.
        let attr = self.getattr(ino).await?;
        let commit = CommitWrite {
            ino,
            chunks: vec![ChunkCommit {
                index,
                chunk: grant.chunk,
                version: grant.version,
                written_end: grant.length,
                ok_nodes: ok,
            }],
            size: 0,
            mtime: attr.mtime,
            clear_suid: false,
        };
        self.meta().commit_write(commit).await?;
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(key_id: u32) -> Option<Bytes> {
        let key = common::block::DataKey::new(key_id, [7; 32]);
        Some(common::block::seal(
            &key,
            common::ChunkId(3),
            0,
            Version(1),
            b"x",
        ))
    }

    #[test]
    fn old_blocks_lists_only_older_keys_and_never_holes() {
        let cases: Vec<(Vec<Option<Bytes>>, u32, Vec<u32>)> = vec![
            (vec![], 1, vec![]),
            (vec![None, None], 1, vec![]),
            (vec![sealed(0), None, sealed(1), sealed(0)], 1, vec![10, 13]),
            (vec![sealed(1), sealed(1)], 1, vec![]),
            (vec![Some(Bytes::from_static(b"ab"))], 1, vec![10]),
        ];
        for (blocks, current, want) in cases {
            assert_eq!(old_blocks(10, &blocks, current), want, "{blocks:?}");
        }
    }

    #[test]
    fn quiet_grant_table() {
        let grant = |version, base| WriteGrant {
            index: 0,
            chunk: common::ChunkId(1),
            version: Version(version),
            base: Version(base),
            length: 0,
            replicas: vec![],
            quorum: 1,
        };
        // (version, base, previous grant given up, quiet)
        let cases = [
            (5, 4, None, true),
            (6, 4, None, false),
            (7, 4, Some(6), true),
            (8, 4, Some(6), false),
            (1, 0, None, false),
        ];
        for (version, base, previous, quiet) in cases {
            assert_eq!(
                grant_is_quiet(&grant(version, base), previous.map(Version)),
                quiet,
                "v{version} base {base} after {previous:?}"
            );
        }
    }
}
