//! Handlers of the administration and sentinel service (`common::rpc::MasterAdmin`): the
//! cluster summary, node contents, health votes, drains and bad-mark clearing. Votes and
//! drains are decided in `cluster`, bad marks in `evidence`; handlers only delegate.

use super::*;
use common::rpc::MasterAdmin;

impl MasterAdmin for MasterService {
    async fn cluster_summary(self, _: Context) -> FsResult<ClusterSummary> {
        let span = info_span!("cluster_summary");
        let views = self.inner.cluster.views();
        // Replicas count where the node is up and not declared dead: a draining node's
        // replicas are present and serve reads (its chunks are never below goal while they
        // are copied elsewhere).
        let online: HashSet<NodeId> = views
            .iter()
            .filter(|v| v.online && v.condition.serves())
            .map(|v| v.node)
            .collect();
        let goal = self.inner.policy.n;
        let counts = self
            .blocking(span, move |s| s.summary(&online, goal))
            .await?;
        let nodes = views
            .into_iter()
            .map(|v| NodeInfo {
                replicas: counts.replicas_per_node.get(&v.node).copied().unwrap_or(0),
                node: v.node,
                addr: v.addr,
                // Never heard since the master started: as long ago as can be said.
                last_seen_ms: v.last_seen.map_or(u64::MAX, |d| {
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
                }),
                online: v.online,
                status: v.status,
                condition: v.condition,
            })
            .collect();
        let repair = self.inner.cluster.repair_progress();
        let (writes_refused_no_space, notices) = {
            let space = self.inner.space.lock();
            (
                space.total(),
                space.notice(Instant::now()).into_iter().collect(),
            )
        };
        Ok(ClusterSummary {
            cluster_id: self.inner.store.cluster().id,
            replication: self.inner.policy,
            files: counts.files,
            dirs: counts.dirs,
            chunks: counts.chunks,
            under_replicated: counts.under_replicated,
            lost: counts.lost,
            logical_bytes: counts.logical_bytes,
            nodes,
            repair,
            writes_refused_no_space,
            notices,
        })
    }

    async fn node_contents(
        self,
        _: Context,
        node: NodeId,
        after: ChunkId,
        limit: u32,
    ) -> FsResult<Vec<NodeReplica>> {
        let span = info_span!("node_contents", %node, after = after.0, limit);
        self.blocking(span, move |s| s.node_contents(node, after, limit))
            .await
    }

    async fn node_files(
        self,
        _: Context,
        node: NodeId,
        after: ChunkId,
        limit: u32,
    ) -> FsResult<Vec<common::types::NodeFileChunk>> {
        let span = info_span!("node_files", %node, after = after.0, limit);
        self.blocking(span, move |s| s.node_files(node, after, limit))
            .await
    }

    async fn report_node_health(
        self,
        _: Context,
        node: NodeId,
        alive: bool,
    ) -> FsResult<NodeCondition> {
        let voter = self.peer_name();
        let span = info_span!("report_node_health", %node, alive, sentinel = %voter);
        self.inner
            .cluster
            .report_health(node, voter, alive)
            .instrument(span)
            .await
    }

    async fn set_node_drain(
        self,
        _: Context,
        node: NodeId,
        drain: bool,
    ) -> FsResult<NodeCondition> {
        let admin = self.peer_name();
        let span = info_span!("set_node_drain", %node, drain, admin = %admin);
        let cluster = &self.inner.cluster;
        if !cluster.knows(node) {
            return Err(FsError::NotFound);
        }
        let current = cluster.condition_of(node);
        if drain && matches!(current, NodeCondition::Up | NodeCondition::Maintenance) {
            let default_goal = self.inner.policy.n;
            let goal = self
                .blocking(span.clone(), move |s| s.drain_goal(node, default_goal))
                .await?;
            if let Err(e) = crate::admission::check_drain(node, goal, &self.members()) {
                span.in_scope(|| tracing::warn!(error = %e, "drain refused"));
                return Err(e);
            }
        }
        cluster.set_drain(node, drain).instrument(span).await
    }

    // Bad-replica evidence (issue 12)

    async fn clear_bad_replica(self, _: Context, chunk: ChunkId, node: NodeId) -> FsResult<bool> {
        crate::evidence::clear_bad(&self.inner.evidence, self.connect.as_ref(), chunk, node).await
    }

    // Node administration (issue 12, forget)
    async fn forget_node(self, _: Context, node: NodeId) -> FsResult<u64> {
        let admin = self.peer_name();
        let span = info_span!("forget_node", %node, admin = %admin);
        let result = self
            .inner
            .cluster
            .forget(node)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            span.in_scope(|| tracing::warn!(error = %e, "forget refused"));
        }
        self.audit.record(Event::NodeForgotten {
            node: node.to_string(),
            peer: self.peer.as_deref().map(Into::into),
            replicas: *result.as_ref().unwrap_or(&0),
            result: match &result {
                Ok(_) => "ok".to_owned(),
                Err(e) => common::audit::clip(&e.to_string()),
            },
        });
        result
    }
}
