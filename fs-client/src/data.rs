//! The data plane: how the client reaches chunkservers. One narrow trait with a real tarpc
//! implementation (a small pool of connections per node, since more connections rather than
//! more requests on one add throughput) and an in-memory one for tests without processes.

use bytes::Bytes;
use common::rpc::{ChunkServerClient, connect_chunkserver, ctx};
use common::types::{BlockData, NodeAddr, ReadBlocks, WriteBlocks};
use common::{ChunkId, FsError, FsResult, Version};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Connections kept per chunkserver. Two lets a write and a read, or two large writes,
/// proceed without queueing behind each other on one TCP stream.
const CONNECTIONS_PER_NODE: usize = 2;

pub trait DataPlane: Send + Sync + 'static {
    /// Writes blocks to one replica within `timeout` (the write deadline, usually shorter
    /// than the general RPC deadline: a stalled replica is dropped from the write).
    fn write_blocks(
        &self,
        node: &NodeAddr,
        req: WriteBlocks,
        timeout: Duration,
    ) -> BoxFuture<'static, FsResult<()>>;
    fn read_blocks(
        &self,
        node: &NodeAddr,
        req: ReadBlocks,
    ) -> BoxFuture<'static, FsResult<BlockData>>;
    fn sync_chunks(
        &self,
        node: &NodeAddr,
        chunks: Vec<ChunkId>,
    ) -> BoxFuture<'static, FsResult<()>>;
}

/// Chunkservers over tarpc.
pub struct RpcDataPlane {
    tls: common::tls::Tls,
    pools: Mutex<HashMap<String, Vec<Option<ChunkServerClient>>>>,
    next: AtomicUsize,
    rpc_timeout: Duration,
}

impl RpcDataPlane {
    pub fn new(tls: common::tls::Tls, rpc_timeout: Duration) -> Arc<RpcDataPlane> {
        Arc::new(RpcDataPlane {
            tls,
            pools: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            rpc_timeout,
        })
    }

    async fn client(self: &Arc<Self>, addr: &str) -> FsResult<(usize, ChunkServerClient)> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % CONNECTIONS_PER_NODE;
        if let Some(Some(client)) = self.pools.lock().get(addr).map(|pool| pool[slot].clone()) {
            return Ok((slot, client));
        }
        let client = connect_chunkserver(addr, &self.tls, self.rpc_timeout).await?;
        let mut pools = self.pools.lock();
        let pool = pools
            .entry(addr.to_string())
            .or_insert_with(|| vec![None; CONNECTIONS_PER_NODE]);
        pool[slot] = Some(client.clone());
        Ok((slot, client))
    }

    fn forget(&self, addr: &str, slot: usize) {
        if let Some(pool) = self.pools.lock().get_mut(addr) {
            pool[slot] = None;
        }
    }

    /// One call with its deadline; a transport failure drops the connection so the next
    /// call reconnects.
    async fn call<T, F, Fut>(self: Arc<Self>, addr: String, timeout: Duration, f: F) -> FsResult<T>
    where
        F: FnOnce(ChunkServerClient, tarpc::context::Context) -> Fut,
        Fut: std::future::Future<Output = Result<FsResult<T>, tarpc::client::RpcError>>,
    {
        let (slot, client) = self.client(&addr).await?;
        match f(client, ctx(timeout)).await {
            Ok(answer) => answer,
            Err(rpc) => {
                self.forget(&addr, slot);
                Err(match FsError::from(rpc) {
                    FsError::TimedOut(_) => FsError::TimedOut(format!("chunkserver {addr}")),
                    other => FsError::Unavailable(format!("chunkserver {addr}: {other}")),
                })
            }
        }
    }
}

impl DataPlane for Arc<RpcDataPlane> {
    fn write_blocks(
        &self,
        node: &NodeAddr,
        req: WriteBlocks,
        timeout: Duration,
    ) -> BoxFuture<'static, FsResult<()>> {
        let this = self.clone();
        let addr = node.addr.clone();
        Box::pin(this.call(addr, timeout, move |c, cx| async move {
            c.write_blocks(cx, req).await
        }))
    }

    fn read_blocks(
        &self,
        node: &NodeAddr,
        req: ReadBlocks,
    ) -> BoxFuture<'static, FsResult<BlockData>> {
        let this = self.clone();
        let addr = node.addr.clone();
        let timeout = this.rpc_timeout;
        Box::pin(this.call(addr, timeout, move |c, cx| async move {
            c.read_blocks(cx, req).await
        }))
    }

    fn sync_chunks(
        &self,
        node: &NodeAddr,
        chunks: Vec<ChunkId>,
    ) -> BoxFuture<'static, FsResult<()>> {
        let this = self.clone();
        let addr = node.addr.clone();
        let timeout = this.rpc_timeout;
        Box::pin(this.call(addr, timeout, move |c, cx| async move {
            c.sync_chunks(cx, chunks).await
        }))
    }
}

/// Chunkservers in memory, with the same version rules as the real ones. For tests.
#[derive(Default)]
pub struct MemDataPlane {
    chunks: Mutex<HashMap<(String, ChunkId), MemChunk>>,
    /// Nodes (by address) that fail every request, to test failure paths.
    pub down: Mutex<Vec<String>>,
    /// Writes that asked for an fdatasync before the answer (`WriteBlocks::sync`).
    pub synced_writes: AtomicUsize,
    /// `sync_chunks` calls (one per node and fsync round).
    pub sync_calls: AtomicUsize,
}

#[derive(Default)]
struct MemChunk {
    version: Version,
    /// Two copies per block, each with the version that wrote it (an empty one is a
    /// cleared block), as in the chunkserver's format (docs/PROTOCOL.md, "No partial state").
    blocks: HashMap<u32, [Option<(Version, Bytes)>; 2]>,
}

impl MemChunk {
    /// The copy a reader at `at` gets: the newest at or below it.
    fn served(copies: &[Option<(Version, Bytes)>; 2], at: Version) -> Option<usize> {
        (0..2)
            .filter(|&c| copies[c].as_ref().is_some_and(|(v, _)| *v <= at))
            .max_by_key(|&c| copies[c].as_ref().map(|(v, _)| *v))
    }
}

impl MemDataPlane {
    fn check_up(&self, node: &NodeAddr) -> FsResult<()> {
        if self.down.lock().contains(&node.addr) {
            return Err(FsError::Unavailable(format!("{} is down", node.addr)));
        }
        Ok(())
    }

    /// Every stored sealed block, for ciphertext checks.
    pub fn all_blocks(&self) -> Vec<Bytes> {
        self.chunks
            .lock()
            .values()
            .flat_map(|c| c.blocks.values())
            .flat_map(|copies| copies.iter().flatten())
            .map(|(_, bytes)| bytes.clone())
            .filter(|bytes| !bytes.is_empty())
            .collect()
    }
}

impl DataPlane for Arc<MemDataPlane> {
    fn write_blocks(
        &self,
        node: &NodeAddr,
        req: WriteBlocks,
        _timeout: Duration,
    ) -> BoxFuture<'static, FsResult<()>> {
        let result = self.check_up(node).and_then(|()| {
            let mut chunks = self.chunks.lock();
            let chunk = chunks.entry((node.addr.clone(), req.chunk)).or_default();
            if req.version < chunk.version {
                return Err(FsError::StaleVersion {
                    held: chunk.version,
                    used: req.version,
                });
            }
            chunk.version = req.version;
            if req.sync {
                self.synced_writes.fetch_add(1, Ordering::Relaxed);
            }
            for (i, block) in req.blocks.into_iter().enumerate() {
                let index = req.first_block + i as u32;
                // Never the copy a reader at the base gets; else the older one (an empty
                // block clears it to a hole, as on a real chunkserver).
                let copies = chunk.blocks.entry(index).or_default();
                let keep = MemChunk::served(copies, req.base);
                let target = match keep {
                    Some(c) => 1 - c,
                    None => (0..2)
                        .min_by_key(|&c| copies[c].as_ref().map(|(v, _)| *v))
                        .unwrap_or(0),
                };
                copies[target] = Some((req.version, block));
            }
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn read_blocks(
        &self,
        node: &NodeAddr,
        req: ReadBlocks,
    ) -> BoxFuture<'static, FsResult<BlockData>> {
        let result = self.check_up(node).and_then(|()| {
            let chunks = self.chunks.lock();
            let chunk = chunks
                .get(&(node.addr.clone(), req.chunk))
                .ok_or(FsError::NotFound)?;
            if chunk.version < req.min_version {
                return Err(FsError::StaleVersion {
                    held: chunk.version,
                    used: req.min_version,
                });
            }
            Ok(BlockData {
                version: chunk.version,
                blocks: (req.first_block..req.first_block + req.count)
                    .map(|b| {
                        let copies = chunk.blocks.get(&b)?;
                        let c = MemChunk::served(copies, req.min_version)?;
                        copies[c]
                            .as_ref()
                            .map(|(_, bytes)| bytes.clone())
                            .filter(|bytes| !bytes.is_empty())
                    })
                    .collect(),
            })
        });
        Box::pin(async move { result })
    }

    fn sync_chunks(
        &self,
        node: &NodeAddr,
        _chunks: Vec<ChunkId>,
    ) -> BoxFuture<'static, FsResult<()>> {
        self.sync_calls.fetch_add(1, Ordering::Relaxed);
        let result = self.check_up(node);
        Box::pin(async move { result })
    }
}
