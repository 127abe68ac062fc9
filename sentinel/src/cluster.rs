//! The sentinel's one network boundary: what it asks the master and each chunkserver.
//!
//! [`Cluster`] is narrow on purpose (a summary from the master, a status probe of a node), so
//! the worker and the status command run unchanged against the real tarpc implementation
//! ([`RpcCluster`]) or an in-memory one in tests. This module never judges health; it only
//! reports what the peers answered, with deadlines on every call.

use crate::health::ProbeOutcome;
use common::types::{ClusterSummary, NodeCondition};
use common::{FsError, FsResult, NodeId, rpc};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// What the sentinel needs from the cluster.
pub trait Cluster: Send + Sync {
    /// The master's `cluster_summary`: nodes, counts of files and chunks.
    fn summary(&self) -> impl Future<Output = FsResult<ClusterSummary>> + Send;
    /// One `status()` probe of the chunkserver `node` at `addr`. Never hangs past the
    /// implementation's probe deadline.
    fn probe(&self, node: NodeId, addr: &str) -> impl Future<Output = ProbeOutcome> + Send;
    /// Tells the master this sentinel's verdict on `node` (`MasterAdmin::report_node_health`):
    /// a dead vote or "alive again". Answers the node's condition at the master.
    fn report(
        &self,
        node: NodeId,
        alive: bool,
    ) -> impl Future<Output = FsResult<NodeCondition>> + Send;
}

/// Deadline of the confirming TCP connect after a failed probe: a closed port on a live
/// host answers with a reset within a round trip; a paused process's port is still open.
pub const CONFIRM_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether a plain TCP connect to `addr` is refused right now (nothing listens there). Any
/// other outcome (accepted, timed out, unreachable network) is not evidence of a crash.
pub async fn connection_refused(addr: &str) -> bool {
    match tokio::time::timeout(
        CONFIRM_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// The real cluster over tarpc. Keeps one connection per peer and reconnects after any
/// failure, so a steady probe loop does not open a TCP connection per probe.
pub struct RpcCluster {
    master_addr: String,
    tls: common::tls::Tls,
    master_timeout: Duration,
    probe_timeout: Duration,
    master: tokio::sync::Mutex<Option<rpc::MasterAdminClient>>,
    nodes: Mutex<HashMap<NodeId, (String, rpc::ChunkServerClient)>>,
}

impl RpcCluster {
    /// `master_timeout` bounds connect + `cluster_summary`; `probe_timeout` bounds connect +
    /// `status()` of one node.
    pub fn new(
        master_addr: String,
        tls: common::tls::Tls,
        master_timeout: Duration,
        probe_timeout: Duration,
    ) -> Self {
        RpcCluster {
            master_addr,
            tls,
            master_timeout,
            probe_timeout,
            master: tokio::sync::Mutex::new(None),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    pub fn master_addr(&self) -> &str {
        &self.master_addr
    }

    fn cached_node(&self, node: NodeId, addr: &str) -> Option<rpc::ChunkServerClient> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match nodes.get(&node) {
            // A node that restarted on another address gets a fresh connection.
            Some((cached_addr, client)) if cached_addr == addr => Some(client.clone()),
            _ => None,
        }
    }

    fn set_node(&self, node: NodeId, entry: Option<(String, rpc::ChunkServerClient)>) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match entry {
            Some(entry) => nodes.insert(node, entry),
            None => nodes.remove(&node),
        };
    }

    async fn probe_inner(&self, node: NodeId, addr: &str) -> FsResult<common::types::NodeStatus> {
        let client = match self.cached_node(node, addr) {
            Some(client) => client,
            None => {
                let client = rpc::connect_chunkserver(addr, &self.tls, self.probe_timeout).await?;
                self.set_node(node, Some((addr.to_string(), client.clone())));
                client
            }
        };
        client.status(rpc::ctx(self.probe_timeout)).await?
    }
}

impl Cluster for RpcCluster {
    async fn summary(&self) -> FsResult<ClusterSummary> {
        self.master_call(|client| async move {
            match client.cluster_summary(rpc::ctx(self.master_timeout)).await {
                Ok(answer) => answer,
                Err(rpc_err) => Err(FsError::from(rpc_err)),
            }
        })
        .await
    }

    async fn report(&self, node: NodeId, alive: bool) -> FsResult<NodeCondition> {
        self.master_call(|client| async move {
            match client
                .report_node_health(rpc::ctx(self.master_timeout), node, alive)
                .await
            {
                Ok(answer) => answer,
                Err(rpc_err) => Err(FsError::from(rpc_err)),
            }
        })
        .await
    }

    async fn probe(&self, node: NodeId, addr: &str) -> ProbeOutcome {
        // The outer timeout is a backstop: connect and the RPC each carry their own deadline.
        let bound = self.probe_timeout.saturating_mul(2);
        let result = tokio::time::timeout(bound, self.probe_inner(node, addr))
            .await
            .unwrap_or_else(|_| Err(FsError::TimedOut(format!("probe of {addr}"))));
        match result {
            Ok(status) => ProbeOutcome::Answered(status),
            Err(err) => {
                self.set_node(node, None);
                // The confirming probe: is the port closed, or is the node merely slow?
                if connection_refused(addr).await {
                    ProbeOutcome::Refused(err)
                } else {
                    ProbeOutcome::Failed(err)
                }
            }
        }
    }
}

impl RpcCluster {
    /// Runs one call on the (cached) master connection; a retryable failure drops the
    /// connection so the next call dials again.
    async fn master_call<T, F, Fut>(&self, call: F) -> FsResult<T>
    where
        F: FnOnce(rpc::MasterAdminClient) -> Fut,
        Fut: Future<Output = FsResult<T>>,
    {
        // Holding the async lock across the call is fine: master calls are made one at a
        // time by a single worker or the status command.
        let mut master = self.master.lock().await;
        let client = match master.as_ref() {
            Some(client) => client.clone(),
            None => {
                let client =
                    rpc::connect_master_admin(&self.master_addr, &self.tls, self.master_timeout)
                        .await?;
                *master = Some(client.clone());
                client
            }
        };
        let result = call(client).await;
        if matches!(result, Err(ref e) if e.is_retryable()) {
            // The connection may be broken: start over next time.
            *master = None;
        }
        result
    }
}
