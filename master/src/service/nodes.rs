//! Handlers of the storage nodes' service (`common::rpc::MasterNodes`): registration,
//! heartbeats, inventories and bad replicas a node found. Node conditions are decided in
//! `cluster`, never here.

use super::*;
use common::rpc::MasterNodes;

impl MasterNodes for MasterService {
    async fn register_node(self, _: Context, req: RegisterNode) -> FsResult<Registered> {
        let span = info_span!("register_node", node = ?req.node, addr = %req.addr);
        let cluster = self.inner.store.cluster().id;
        if let Some(theirs) = req.cluster.filter(|&theirs| theirs != cluster) {
            return Err(FsError::WrongCluster(format!(
                "this chunkserver's data directory belongs to cluster {theirs}, but this master \
                 serves cluster {cluster}: point it at its own master or give it an empty data \
                 directory"
            )));
        }
        if req.addr.is_empty() || req.addr.len() > ADDR_MAX {
            return Err(FsError::Invalid(format!(
                "chunkserver address must be 1..={ADDR_MAX} bytes"
            )));
        }
        let addr = req.addr.clone();
        let requested = req.node;
        let node = self
            .blocking(span.clone(), move |s| {
                s.register_node(requested, &addr, Timespec::now())
            })
            .await?;
        span.in_scope(|| tracing::info!(%node, "chunkserver registered"));
        self.inner
            .cluster
            .registered(node, req.addr, req.status)
            .instrument(span)
            .await;
        Ok(Registered {
            node,
            cluster,
            heartbeat_interval_ms: self.inner.heartbeat_interval_ms,
            chunk_size: self.inner.store.cluster().chunk_size,
        })
    }

    async fn heartbeat(
        self,
        _: Context,
        node: NodeId,
        status: NodeStatus,
    ) -> FsResult<HeartbeatReply> {
        if !self.inner.cluster.heartbeat(node, status).await {
            return Ok(HeartbeatReply {
                delete: Vec::new(),
                reregister: true,
                revoked: Vec::new(),
            });
        }
        let span = info_span!("heartbeat", %node);
        let delete = self
            .blocking(span.clone(), move |s| s.take_gc(node, GC_BATCH))
            .await?;
        if !delete.is_empty() {
            span.in_scope(|| tracing::debug!(deletions = delete.len(), "garbage handed out"));
        }
        Ok(HeartbeatReply {
            delete,
            reregister: false,
            revoked: self.inner.revoked.to_vec(),
        })
    }

    async fn report_chunks(
        self,
        _: Context,
        node: NodeId,
        held: Vec<HeldChunk>,
    ) -> FsResult<HeartbeatReply> {
        if !self.inner.cluster.knows(node) {
            return Ok(HeartbeatReply {
                delete: Vec::new(),
                reregister: true,
                revoked: Vec::new(),
            });
        }
        let span = info_span!("report_chunks", %node, held = held.len());
        let delete = self
            .blocking(span.clone(), move |s| s.reconcile_chunks(node, &held))
            .await?;
        span.in_scope(|| tracing::info!(deletions = delete.len(), "chunk inventory reconciled"));
        Ok(HeartbeatReply {
            delete,
            reregister: false,
            revoked: self.inner.revoked.to_vec(),
        })
    }

    async fn report_bad_replica(
        self,
        _: Context,
        chunk: ChunkId,
        node: NodeId,
        reason: String,
    ) -> FsResult<()> {
        self.suspect_replica(chunk, node, reason);
        Ok(())
    }
}
