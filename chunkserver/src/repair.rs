//! Copying a replica in from another chunkserver (`ChunkServer::copy_from`): the data path
//! of repair and re-replication. Blocks travel chunkserver to chunkserver as the sealed
//! bytes they are; this node never sees a key. The copy is read from the source at the
//! committed version the master names (so a write in progress there is not copied), written
//! to a temp file, and installed only once complete and fsynced.

use crate::store::Store;
use common::rpc::{ChunkServerClient, MAX_BLOCKS_PER_REQUEST, ctx};
use common::types::ReadBlocks;
use common::{ChunkId, FsError, FsResult, Version};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Deadline of one 4 MiB read from the source: a repair is background work on a possibly
/// busy node, so more generous than a client's.
const COPY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a connection to another chunkserver (plain TCP or TLS, as the node is set up).
pub type PeerConnector =
    Arc<dyn Fn(String) -> BoxFuture<'static, FsResult<ChunkServerClient>> + Send + Sync>;

/// Deadline of a connect to another chunkserver for a copy.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connector a node uses to reach its peers.
pub fn peer_connector(tls: common::tls::Tls) -> PeerConnector {
    Arc::new(move |addr: String| {
        let tls = tls.clone();
        Box::pin(async move {
            common::rpc::connect_chunkserver(&addr, &tls, PEER_CONNECT_TIMEOUT).await
        })
    })
}

/// Copies `chunk` at `version` from `source` into `store`, replacing any local replica.
pub async fn copy_from(
    store: &Store,
    source: &ChunkServerClient,
    chunk: ChunkId,
    version: Version,
) -> FsResult<u64> {
    let mut installer = store.begin_install(chunk, version).await?;
    let blocks = installer.blocks();
    let mut bytes = 0u64;
    for first in (0..blocks).step_by(MAX_BLOCKS_PER_REQUEST as usize) {
        let count = (blocks - first).min(MAX_BLOCKS_PER_REQUEST);
        let data = source
            .read_blocks(
                ctx(COPY_READ_TIMEOUT),
                ReadBlocks {
                    chunk,
                    min_version: version,
                    first_block: first,
                    count,
                },
            )
            .await
            .map_err(|e| FsError::Unavailable(format!("copy source: {e}")))??;
        if data.blocks.len() != count as usize {
            return Err(FsError::Corrupt(format!(
                "copy source sent {} blocks for {count}",
                data.blocks.len()
            )));
        }
        bytes += data
            .blocks
            .iter()
            .flatten()
            .map(|b| b.len() as u64)
            .sum::<u64>();
        let (back, ()) =
            Store::on_installer(installer, move |i| i.write_batch(first, &data.blocks)).await?;
        installer = back;
    }
    Store::finish_install(installer).await?;
    Ok(bytes)
}
