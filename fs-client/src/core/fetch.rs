//! The read path of one chunk: blocks from its replicas, hedged, verified and decrypted.
//! Used by file reads, by the readahead, by the write path (the old bytes of a partly
//! written block) and by re-encryption.
//!
//! A replica that serves corrupt, stale or missing data is reported to the master
//! ([`report_bad`]); this module must never return bytes that failed verification.

use super::context::IoContext;
use bytes::Bytes;
use common::block::BLOCK_SIZE;
use common::rpc::MAX_BLOCKS_PER_REQUEST;
use common::types::*;
use common::{ChunkId, FsError, FsResult, NodeId};

/// Reads and decrypts `count` blocks from `first` of a chunk. Replicas are tried in the
/// order [`order_replicas`] gives; when the current one has not answered within its hedge
/// delay, the next one is asked too, and the first good answer wins. A replica that answers
/// with corrupt, stale or missing data is reported to the master. Each returned block is
/// its plaintext cut at the chunk's length (empty for a hole).
pub(crate) async fn read_chunk_blocks(
    io: &IoContext,
    loc: &ChunkLoc,
    first: u32,
    count: u32,
) -> FsResult<Vec<Vec<u8>>> {
    let blocks = read_chunk_blocks_bytes(io, loc, first, count).await?;
    Ok(blocks.into_iter().map(Vec::from).collect())
}

/// [`read_chunk_blocks`] without copying: each block's plaintext is a view into the buffer
/// it arrived in (decrypted in place).
pub(crate) async fn read_chunk_blocks_bytes(
    io: &IoContext,
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
    let stats = &io.replicas;
    let order = stats.order(&loc.replicas);
    let floor = io.config.hedge_delay;
    let mut pending = futures::stream::FuturesUnordered::new();
    let attempt = |replica: &NodeAddr| {
        let replica = replica.clone();
        async move {
            let started = std::time::Instant::now();
            let result = read_from_replica(io, &replica, loc, first, count).await;
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
                            report_bad(io, loc.chunk, replica.node, failure.error()).await;
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
async fn report_bad(io: &IoContext, chunk: ChunkId, node: NodeId, err: &FsError) {
    let reason = err.to_string();
    tracing::warn!(?chunk, ?node, %reason, "bad replica; reporting it");
    let _ = io.meta.report_bad_replica(chunk, node, reason).await;
}

async fn read_from_replica(
    io: &IoContext,
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
        let answer = io
            .data
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
                plain = common::block::open_bytes(&io.keys, loc.chunk, index, sealed)
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
pub(crate) fn runs(blocks: &[u32]) -> Vec<(u32, u32)> {
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
    fn runs_split_gaps_and_limits() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[1, 2, 3, 7, 8]), vec![(1, 3), (7, 2)]);
        let long: Vec<u32> = (0..130).collect();
        assert_eq!(runs(&long), vec![(0, 64), (64, 64), (128, 2)]);
    }
}
