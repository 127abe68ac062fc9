//! The `ChunkServer` RPC service: a thin adapter from tarpc to the [`Store`]. One tracing
//! span per request carrying the chunk id; every request is counted in flight and timed for
//! the load figure. No storage logic lives here.

use crate::repair::PeerConnector;
use crate::store::Store;
use common::rpc::ChunkServer;
use common::types::{BlockData, HeldChunk, NodeStatus, ReadBlocks, ReplicaCheck, WriteBlocks};
use common::{ChunkId, FsResult, Version};
use std::future::Future;
use tarpc::context::Context;
use tokio::net::TcpListener;
use tracing::Instrument as _;

#[derive(Clone)]
pub struct ChunkService {
    store: Store,
    peers: PeerConnector,
}

impl ChunkService {
    /// `peers` connects to other chunkservers, for `copy_from`.
    pub fn new(store: Store, peers: PeerConnector) -> ChunkService {
        ChunkService { store, peers }
    }
}

fn log_outcome<T>(result: &FsResult<T>) {
    if let Err(e) = result {
        // The caller handles the error (retries another replica, re-grants); corruption is
        // logged by the store where it is found.
        tracing::debug!(error = %e, "request failed");
    }
}

impl ChunkServer for ChunkService {
    async fn write_blocks(self, _: Context, req: WriteBlocks) -> FsResult<()> {
        let span = tracing::debug_span!("write_blocks", chunk = ?req.chunk,
            version = ?req.version, first = req.first_block, count = req.blocks.len());
        let _req = self.store.begin_request();
        async {
            let result = self.store.write_blocks(req).await;
            log_outcome(&result);
            result
        }
        .instrument(span)
        .await
    }

    async fn read_blocks(self, _: Context, req: ReadBlocks) -> FsResult<BlockData> {
        let span = tracing::debug_span!("read_blocks", chunk = ?req.chunk,
            min_version = ?req.min_version, first = req.first_block, count = req.count);
        let _req = self.store.begin_request();
        async {
            let result = self.store.read_blocks(req).await;
            log_outcome(&result);
            result
        }
        .instrument(span)
        .await
    }

    async fn sync_chunks(self, _: Context, chunks: Vec<ChunkId>) -> FsResult<()> {
        let span = tracing::debug_span!("sync_chunks", chunks = ?chunks);
        let _req = self.store.begin_request();
        async {
            let result = self.store.sync_chunks(chunks).await;
            log_outcome(&result);
            result
        }
        .instrument(span)
        .await
    }

    async fn delete_chunks(self, _: Context, chunks: Vec<ChunkId>) -> FsResult<()> {
        let span = tracing::debug_span!("delete_chunks", chunks = ?chunks);
        let _req = self.store.begin_request();
        async {
            let result = self.store.delete_chunks(chunks).await;
            log_outcome(&result);
            result
        }
        .instrument(span)
        .await
    }

    async fn list_chunks(self, _: Context) -> FsResult<Vec<HeldChunk>> {
        let _req = self.store.begin_request();
        let result = self
            .store
            .list_chunks()
            .instrument(tracing::debug_span!("list_chunks"))
            .await;
        log_outcome(&result);
        result
    }

    async fn copy_from(
        self,
        _: Context,
        chunk: ChunkId,
        source: String,
        version: Version,
    ) -> FsResult<()> {
        let span = tracing::info_span!("copy_from", chunk = ?chunk, source = %source,
            version = ?version);
        let _req = self.store.begin_request();
        async {
            let started = std::time::Instant::now();
            let result = async {
                let client = (self.peers)(source.clone()).await?;
                crate::repair::copy_from(&self.store, &client, chunk, version).await
            }
            .await;
            match &result {
                Ok(bytes) => tracing::info!(
                    bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "replica copied in"
                ),
                Err(e) => tracing::warn!(error = %e, "replica copy failed"),
            }
            result.map(|_| ())
        }
        .instrument(span)
        .await
    }

    async fn status(self, _: Context) -> FsResult<NodeStatus> {
        // Not counted as a request: probes must not move the load figure they measure.
        Ok(self.store.status())
    }

    // Bad-replica evidence (issue 12)
    async fn verify_replica(
        self,
        _: Context,
        chunk: ChunkId,
        version: Version,
    ) -> FsResult<ReplicaCheck> {
        let span = tracing::info_span!("verify_replica", chunk = ?chunk, version = ?version);
        let _req = self.store.begin_request();
        async {
            let result = crate::verify::verify_replica(&self.store, chunk, version).await;
            match &result {
                Ok(check) => tracing::info!(?check, "replica verified for the master"),
                Err(e) => tracing::warn!(error = %e, "replica could not be verified"),
            }
            result
        }
        .instrument(span)
        .await
    }
}

/// Serves the chunk service on `listener` until `shutdown` resolves.
/// Serves the chunk service on `listener` until `shutdown` resolves: mutual TLS with `tls`,
/// refusing certificates in `revoked`.
pub async fn serve(
    listener: TcpListener,
    tls: common::tls::Tls,
    revoked: common::tls::Revoked,
    service: ChunkService,
    rpc_metrics: Option<common::metrics::RpcMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    common::rpc::serve(
        listener,
        tls,
        revoked,
        move |stream, peer| {
            common::serve_connection!(stream, peer, service.clone().serve(), rpc_metrics.clone())
        },
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use common::block::{DataKey, KeyRing, seal};
    use common::{FsError, Version};
    use std::time::Duration;

    const DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn write_and_read_over_tcp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = Store::open(StoreOptions {
            data_dir: dir.path().to_path_buf(),
            capacity_bytes: None,
            sync_every_write: false,
            chunk_size: Some(1024 * 1024),
            direct_io: true,
        })
        .expect("store");
        let listener = common::rpc::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ca = master::ca::Ca::generate("test").expect("CA");
        let tls = |role, name| {
            ca.issue(role, name)
                .expect("issue")
                .tls()
                .expect("credential")
        };
        let node_tls = tls(common::tls::Role::Chunkserver, "cs");
        let server = tokio::spawn(serve(
            listener,
            node_tls.clone(),
            common::tls::Revoked::default(),
            ChunkService::new(store, crate::repair::peer_connector(node_tls)),
            None,
            async {
                let _ = stop_rx.await;
            },
        ));

        let client_tls = tls(common::tls::Role::Client, "client");
        let client = common::rpc::connect_chunkserver(&addr, &client_tls, DEADLINE)
            .await
            .expect("connect");
        let keys = KeyRing::single(DataKey::new(0, [9u8; 32]));
        let chunk = ChunkId(0xabc);
        let blocks: Vec<_> = (0..4u32)
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
        client
            .write_blocks(
                common::rpc::ctx(DEADLINE),
                WriteBlocks {
                    chunk,
                    version: Version(2),
                    base: Version(1),
                    first_block: 0,
                    blocks: blocks.clone(),
                    sync: true,
                },
            )
            .await
            .expect("rpc")
            .expect("write");
        let data = client
            .read_blocks(
                common::rpc::ctx(DEADLINE),
                ReadBlocks {
                    chunk,
                    min_version: Version(2),
                    first_block: 0,
                    count: 5,
                },
            )
            .await
            .expect("rpc")
            .expect("read");
        assert_eq!(data.version, Version(2));
        assert_eq!(
            data.blocks[..4],
            blocks.into_iter().map(Some).collect::<Vec<_>>()[..]
        );
        assert_eq!(data.blocks[4], None);

        // Typed errors cross the wire.
        let stale = client
            .read_blocks(
                common::rpc::ctx(DEADLINE),
                ReadBlocks {
                    chunk,
                    min_version: Version(3),
                    first_block: 0,
                    count: 1,
                },
            )
            .await
            .expect("rpc");
        assert_eq!(
            stale,
            Err(FsError::StaleVersion {
                held: Version(2),
                used: Version(3)
            })
        );
        let held = client
            .list_chunks(common::rpc::ctx(DEADLINE))
            .await
            .expect("rpc")
            .expect("list");
        assert_eq!(held.len(), 1);
        let status = client
            .status(common::rpc::ctx(DEADLINE))
            .await
            .expect("rpc")
            .expect("status");
        assert_eq!(status.writes, 1);
        assert_eq!(status.reads, 1);
        assert_eq!(status.errors, 1);
        assert_eq!(status.in_flight, 0);
        assert!(status.latency_us > 0);

        let _ = stop_tx.send(());
        tokio::time::timeout(DEADLINE, server)
            .await
            .expect("server stops in time")
            .expect("server task");
    }
}
