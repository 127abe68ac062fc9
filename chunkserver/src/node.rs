//! This node's side of the conversation with the master: registration (with back-off while
//! the master is unreachable), the chunk inventory report, the heartbeat loop that carries
//! deletion orders back, and the reporter that tells the master about quarantined replicas.
//!
//! These are workers: they only do I/O and timing, and each stops when the stop signal
//! changes. They never decide what to delete on their own: deletions come from the master.

use crate::identity::{self, NodeIdentity};
use crate::store::{BadReplica, Store};
use anyhow::Context as _;
use common::rpc::{MasterNodesClient, ctx};
use common::types::{HeartbeatReply, RegisterNode, Registered};
use common::{ChunkId, FsError, FsResult, NodeId};
use parking_lot::Mutex;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Deadline of one call to the master.
const RPC_TIMEOUT: Duration = Duration::from_millis(common::config::DEFAULT_RPC_TIMEOUT_MS);
/// Deadline of a TCP connect to the master.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// First retry delay while the master is unreachable: short, since it is often just
/// starting alongside this node.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest retry delay: an outage never becomes a connection storm, and a master that comes
/// back is noticed within seconds.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Shortest heartbeat interval honoured, whatever the master says (0 would make a timer
/// that never waits).
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// How long the farewell heartbeat may take: a stop must not hang on a dead master.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts to deliver one bad-replica report. If all fail, the master still learns of the
/// loss from the next inventory report and from clients that fail to read the replica.
const REPORT_ATTEMPTS: u32 = 3;

/// A reconnecting client of the master.
pub(crate) struct MasterLink {
    addr: String,
    tls: common::tls::Tls,
    client: tokio::sync::Mutex<Option<MasterNodesClient>>,
}

impl MasterLink {
    pub(crate) fn new(addr: String, tls: common::tls::Tls) -> MasterLink {
        MasterLink {
            addr,
            tls,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// Calls the master over the cached connection, connecting first if needed. A transport
    /// failure drops the connection so the next call reconnects.
    async fn call<T, F, Fut>(&self, f: F) -> FsResult<T>
    where
        F: FnOnce(MasterNodesClient) -> Fut,
        Fut: Future<Output = Result<FsResult<T>, tarpc::client::RpcError>>,
    {
        let client = {
            let mut slot = self.client.lock().await;
            match &*slot {
                Some(client) => client.clone(),
                None => {
                    let client =
                        common::rpc::connect_master_nodes(&self.addr, &self.tls, CONNECT_TIMEOUT)
                            .await?;
                    *slot = Some(client.clone());
                    client
                }
            }
        };
        match f(client).await {
            Ok(answer) => answer,
            Err(e) => {
                *self.client.lock().await = None;
                Err(e.into())
            }
        }
    }
}

/// The registered node: identity, master link and store.
pub(crate) struct Agent {
    master: MasterLink,
    store: Store,
    data_dir: PathBuf,
    addr: String,
    identity: Mutex<Option<NodeIdentity>>,
    node: AtomicU64,
    heartbeat_ms: AtomicU64,
    /// Revoked certificate serials from the master's heartbeat replies; the accept loop
    /// refuses peers that present one.
    revoked: common::tls::Revoked,
}

impl Agent {
    pub(crate) fn new(
        master: String,
        store: Store,
        addr: String,
        identity: Option<NodeIdentity>,
        tls: common::tls::Tls,
        revoked: common::tls::Revoked,
    ) -> Agent {
        Agent {
            master: MasterLink::new(master, tls),
            revoked,
            data_dir: store.data_dir().to_path_buf(),
            store,
            addr,
            node: AtomicU64::new(identity.map_or(0, |i| i.node.0)),
            identity: Mutex::new(identity),
            heartbeat_ms: AtomicU64::new(common::config::DEFAULT_HEARTBEAT_MS),
        }
    }

    pub(crate) fn node(&self) -> NodeId {
        NodeId(self.node.load(Ordering::Relaxed))
    }

    fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed)).max(MIN_HEARTBEAT)
    }

    /// Registers (retrying with capped back-off while the master is unreachable), records
    /// the identity in `node.toml`, adopts the cluster's chunk size, reports the inventory
    /// and deletes what the master names. Fails only on what a retry cannot fix: another
    /// cluster, or a data directory that cannot be written.
    pub(crate) async fn join(&self) -> anyhow::Result<()> {
        let registered = self.register().await?;
        let existing = *self.identity.lock();
        let identity = identity::after_registration(
            &self.data_dir,
            existing,
            registered.node,
            registered.cluster,
        )?;
        if existing != Some(identity) {
            let dir = self.data_dir.clone();
            tokio::task::spawn_blocking(move || identity::save(&dir, &identity))
                .await
                .context("join node.toml writer")??;
        }
        *self.identity.lock() = Some(identity);
        self.node.store(identity.node.0, Ordering::Relaxed);
        self.heartbeat_ms
            .store(registered.heartbeat_interval_ms, Ordering::Relaxed);
        self.store
            .set_chunk_size(registered.chunk_size)
            .context("adopt the cluster's chunk size")?;
        tracing::info!(node = ?identity.node, cluster = %identity.cluster,
            chunk_size = registered.chunk_size, heartbeat_ms = registered.heartbeat_interval_ms,
            "registered with the master");

        let held = self.store.list_chunks().await.context("list chunks")?;
        let node = identity.node;
        let reply = self
            .retry("report chunks", || {
                let held = held.clone();
                self.master.call(move |c| async move {
                    c.report_chunks(ctx(RPC_TIMEOUT), node, held).await
                })
            })
            .await?;
        tracing::info!(
            chunks = held.len(),
            to_delete = reply.delete.len(),
            "chunk inventory reported"
        );
        self.apply_revocations(&reply.revoked);
        self.apply_deletes(reply.delete).await;
        Ok(())
    }

    async fn register(&self) -> anyhow::Result<Registered> {
        let attempt = || {
            let identity = *self.identity.lock();
            let req = RegisterNode {
                node: identity.map(|i| i.node),
                cluster: identity.map(|i| i.cluster),
                addr: self.addr.clone(),
                status: self.store.status(),
            };
            self.master
                .call(move |c| async move { c.register_node(ctx(RPC_TIMEOUT), req).await })
        };
        self.retry("register with the master", attempt).await
    }

    /// Retries `attempt` with capped exponential back-off until it succeeds, logging each
    /// failure once. `WrongCluster` is final: this directory must not join that master.
    async fn retry<T, F, Fut>(&self, what: &str, mut attempt: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = FsResult<T>>,
    {
        let mut delay = RETRY_FIRST;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(FsError::WrongCluster(why)) => anyhow::bail!(
                    "refusing data directory {}: the master at {} rejects it: {why}",
                    self.data_dir.display(),
                    self.master.addr
                ),
                Err(e) => {
                    tracing::warn!(master = %self.master.addr, error = %e, retry_in = ?delay,
                        "cannot {what}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Adopts the master's revocation list (the whole list comes with every reply).
    fn apply_revocations(&self, serials: &[String]) {
        if self.revoked.replace(serials.iter().cloned().collect()) {
            tracing::info!(
                revoked = serials.len(),
                "revocation list updated by the master"
            );
        }
    }

    async fn apply_deletes(&self, chunks: Vec<ChunkId>) {
        if chunks.is_empty() {
            return;
        }
        let count = chunks.len();
        match self.store.delete_chunks(chunks).await {
            Ok(()) => tracing::info!(count, "deleted replicas the master released"),
            // The master repeats the order in a later heartbeat or inventory answer.
            Err(e) => tracing::warn!(count, error = %e, "deleting released replicas failed"),
        }
    }

    async fn heartbeat(&self, timeout: Duration) -> FsResult<HeartbeatReply> {
        let node = self.node();
        let status = self.store.status();
        self.master
            .call(move |c| async move { c.heartbeat(ctx(timeout), node, status).await })
            .await
    }

    /// Sends heartbeats until `stop` changes, then one last heartbeat marked draining.
    /// Returns an error only when re-registration finds the directory must be refused.
    pub(crate) async fn heartbeat_loop(
        &self,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut ticker = new_ticker(self.heartbeat_interval());
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = ticker.tick() => {}
            }
            match self.heartbeat(RPC_TIMEOUT).await {
                Ok(reply) => {
                    if failing {
                        tracing::info!("master reachable again");
                        failing = false;
                    }
                    self.apply_revocations(&reply.revoked);
                    self.apply_deletes(reply.delete).await;
                    if reply.reregister {
                        tracing::info!("the master does not know this node; registering again");
                        tokio::select! {
                            joined = self.join() => joined?,
                            _ = stop.changed() => break,
                        }
                        ticker = new_ticker(self.heartbeat_interval());
                    }
                }
                Err(e) => {
                    // Logged once per outage; the loop keeps trying every interval.
                    if !failing {
                        tracing::warn!(error = %e, "heartbeat to the master failed");
                        failing = true;
                    }
                }
            }
        }
        self.farewell().await;
        Ok(())
    }

    /// The graceful-stop announcement: planned maintenance, not a crash.
    async fn farewell(&self) {
        self.store.stats().set_draining();
        match tokio::time::timeout(FAREWELL_TIMEOUT, self.heartbeat(FAREWELL_TIMEOUT)).await {
            Ok(Ok(_)) => tracing::info!("told the master this node is draining"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not tell the master this node is draining")
            }
            Err(_) => tracing::warn!("the master did not answer the draining heartbeat in time"),
        }
    }

    /// Forwards quarantined replicas to the master until `stop` changes.
    pub(crate) async fn report_bad_loop(
        self: Arc<Self>,
        mut bad: mpsc::Receiver<BadReplica>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let report = tokio::select! {
                _ = stop.changed() => return,
                report = bad.recv() => match report {
                    Some(report) => report,
                    None => return,
                },
            };
            let node = self.node();
            let mut delay = RETRY_FIRST;
            for attempt in 1..=REPORT_ATTEMPTS {
                let reason = report.reason.clone();
                let chunk = report.chunk;
                let sent = self
                    .master
                    .call(move |c| async move {
                        c.report_bad_replica(ctx(RPC_TIMEOUT), chunk, node, reason)
                            .await
                    })
                    .await;
                match sent {
                    Ok(()) => {
                        tracing::info!(chunk = ?chunk, "reported a bad replica to the master");
                        break;
                    }
                    Err(e) if attempt == REPORT_ATTEMPTS => {
                        tracing::warn!(chunk = ?chunk, error = %e,
                            "could not report a bad replica; the next inventory report shows it missing");
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    }
}

fn new_ticker(every: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(every);
    // After a slow heartbeat, send the next one an interval later, not a burst.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}
