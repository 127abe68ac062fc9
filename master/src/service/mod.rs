//! The master's tarpc services, split by caller: `fs` (filesystem clients), `nodes`
//! (storage nodes) and `admin` (administrators and sentinels), one struct implementing the
//! three traits; this module holds the state and helpers they share. Handlers only. Each
//! request gets one tracing span with its ids, runs its store call on a blocking thread
//! (SQLite blocks; only single-row reads, which never wait for a writer, run in place:
//! `read_now`), and answers only after the store's transaction committed. No rule lives
//! here: filesystem validation and semantics are in `store` (and its engine-independent
//! `rules`); node liveness, conditions, votes, drains and repair in `cluster`; placement in
//! `plan`; session leases in `sessions`; advisory locks in `locks`; who may call what in
//! `common::authz`. A handler translates a request and delegates.

use crate::cluster::ClusterControl;
use crate::locks::LockTable;
use crate::plan::NodeView;
use crate::sessions::Leases;
use crate::store::{Freed, GC_BATCH, MetaStore};
use common::audit::{Audit, Event, Mutation};
use common::config::MasterConfig;
use common::tls::Identity;
use common::types::{
    Attr, Caller, ChunkLoc, ClusterSummary, CommitWrite, DirPage, HeartbeatReply, HeldChunk,
    MountInfo, NewNode, NodeCondition, NodeInfo, NodeReplica, NodeStatus, RegisterNode, Registered,
    RenameFlags, ReplicationPolicy, SetAttr, StatFs, Timespec, WriteGrant, XattrFlags,
};
use common::types::{LockInfo, LockRequest, OpId};
use common::{ChunkId, FsError, FsResult, InodeId, NodeId, SessionId, Version};
use parking_lot::Mutex;
use serde_bytes::ByteBuf;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tarpc::context::Context;
use tracing::{Instrument as _, Span, info_span};

/// statfs block size: the unit `df` counts in; independent of the 64 KiB data block.
const STATFS_BLOCK_SIZE: u32 = 4096;
/// Longest chunkserver address accepted at registration (a host name and port).
const ADDR_MAX: usize = 512;
/// Longest client-supplied reason logged with a bad-replica report.
const REASON_MAX: usize = 256;

struct Inner {
    store: Arc<dyn MetaStore>,
    /// Nodes, their conditions and votes, drains and the repair state.
    cluster: Arc<ClusterControl>,
    leases: Mutex<Leases>,
    /// Advisory locks of every session, served from memory and persisted with every change
    /// (see `locks`). Held across the store write, so the database sees changes in order.
    locks: Mutex<LockTable>,
    policy: ReplicationPolicy,
    session_ttl_ms: u64,
    heartbeat_interval_ms: u64,
    /// Serials of revoked certificates, kept current from `STATE/pki/revoked` by the
    /// master's poller; sent to chunkservers with every heartbeat reply.
    revoked: common::tls::Revoked,
    /// Reported replicas waiting for their node's verdict (see `evidence`), and the wake-up
    /// of the worker that asks.
    evidence: Arc<crate::evidence::Evidence>,
    /// Where `rotate-key --state` records the cluster's current key (`keystate`).
    state_dir: std::path::PathBuf,
    /// New chunks refused for lack of space, for the log, the metrics and the summary.
    space: Mutex<crate::space::SpaceRefusals>,
}

#[derive(Clone)]
pub struct MasterService {
    inner: Arc<Inner>,
    /// Where namespace mutations are recorded (disabled unless [`Self::with_audit`]).
    audit: Audit,
    /// The certificate holder of the connection this copy serves ([`Self::for_peer`]).
    peer: Option<Arc<Identity>>,
    /// Dials chunkservers for the admin's `clear_bad_replica` ([`Self::with_connector`]).
    connect: Option<crate::cluster::worker::Connector>,
}

/// What a mutation touched, for its audit record.
#[derive(Default)]
struct Target {
    caller: Option<Caller>,
    ino: Option<InodeId>,
    parent: Option<InodeId>,
    name: Option<String>,
    new_parent: Option<InodeId>,
    new_name: Option<String>,
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl MasterService {
    /// Builds the service over an opened store: known nodes start offline until they
    /// heartbeat, and every persisted session gets a fresh lease (clients that were alive
    /// before a master restart keep their open files). Blocking: reads the store.
    pub fn new(store: Arc<dyn MetaStore>, config: &MasterConfig) -> FsResult<MasterService> {
        let now = Instant::now();
        let cluster = Arc::new(ClusterControl::new(Arc::clone(&store), config)?);
        let mut leases = Leases::new(Duration::from_millis(config.session_ttl_ms));
        for session in store.list_sessions()? {
            leases.grant(session, now);
        }
        // Locks of the sessions that were alive keep holding: clients reconnect to the same
        // session after a master restart and expect their locks to be there.
        let locks = LockTable::restore(&store.load_locks()?);
        let evidence = Arc::new(crate::evidence::Evidence::new(
            Arc::clone(&store),
            Arc::clone(&cluster),
        ));
        Ok(MasterService {
            inner: Arc::new(Inner {
                store,
                cluster,
                leases: Mutex::new(leases),
                locks: Mutex::new(locks),
                policy: config.policy(),
                session_ttl_ms: config.session_ttl_ms,
                heartbeat_interval_ms: config.heartbeat_interval_ms,
                revoked: common::tls::Revoked::default(),
                evidence,
                state_dir: config.state_dir.clone(),
                space: Mutex::default(),
            }),
            audit: Audit::disabled(),
            peer: None,
            connect: None,
        })
    }

    /// This service recording namespace mutations in `audit`.
    pub fn with_audit(mut self, audit: Audit) -> MasterService {
        self.audit = audit;
        self
    }

    /// This service dialing chunkservers through `connect` (the admin's clear of a bad
    /// mark asks the node first).
    pub fn with_connector(mut self, connect: crate::cluster::worker::Connector) -> MasterService {
        self.connect = Some(connect);
        self
    }

    /// Bad-replica evidence (issue 12): the suspects queue the confirmation worker drains.
    pub fn evidence(&self) -> Arc<crate::evidence::Evidence> {
        Arc::clone(&self.inner.evidence)
    }

    /// A copy serving the connection of `peer`: its mutations are audited under its name.
    pub fn for_peer(&self, peer: &Identity) -> MasterService {
        MasterService {
            peer: Some(Arc::new(peer.clone())),
            ..self.clone()
        }
    }

    /// The path an audit record names: `parent`'s path joined with `name`, else `ino`'s own
    /// path. One short read of the dentry chain per mutation, paid only with auditing on.
    fn audit_path(
        &self,
        parent: Option<InodeId>,
        ino: Option<InodeId>,
        name: Option<&str>,
    ) -> Option<String> {
        let (base, name) = match (parent, name, ino) {
            (Some(parent), Some(name), _) => (parent, Some(name)),
            (_, _, Some(ino)) => (ino, None),
            _ => return None,
        };
        // A failed read leaves the record without a path rather than failing the mutation.
        let dir = self.inner.store.path(base).ok().flatten()?;
        let mut path = String::from_utf8_lossy(&dir).into_owned();
        if let Some(name) = name {
            if !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(name);
        }
        Some(path)
    }

    /// Records a namespace mutation and its outcome; passes the result through.
    fn audited<T>(&self, op: &str, target: Target, result: FsResult<T>) -> FsResult<T> {
        if self.audit.is_enabled() {
            let path = self.audit_path(target.parent, target.ino, target.name.as_deref());
            let new_path = self.audit_path(target.new_parent, None, target.new_name.as_deref());
            self.audit.record(Event::Mutation(Mutation {
                op: op.to_owned(),
                peer: self.peer.as_deref().map(Into::into),
                uid: target.caller.as_ref().map(|c| c.uid),
                gid: target.caller.as_ref().map(|c| c.gid),
                ino: target.ino.map(|i| i.0),
                parent: target.parent.map(|i| i.0),
                name: target.name,
                new_parent: target.new_parent.map(|i| i.0),
                path,
                new_path,
                new_name: target.new_name,
                result: match &result {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => common::audit::clip(&e.to_string()),
                },
            }));
        }
        result
    }

    /// Runs a store call on a blocking thread inside `span`. Database failures are logged
    /// here, once; ordinary answers (ENOENT and friends) are not errors of the master.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        span: Span,
        f: impl FnOnce(&dyn MetaStore) -> FsResult<T> + Send + 'static,
    ) -> FsResult<T> {
        crate::blocking::blocking(&self.inner.store, span, f).await
    }

    /// Runs a short read-only store call (one or two indexed rows) right here on the async
    /// worker. Reads run on the store's read connections and never wait for a writer's
    /// commit (see `store::sqlite`), so they take tens of microseconds; a hop to a blocking
    /// thread and back would cost more than the read (two thread wake-ups on a loaded
    /// machine). Anything that may scan many rows or wait for a write goes to
    /// [`Self::blocking`].
    fn read_now<T>(
        &self,
        span: Span,
        f: impl FnOnce(&dyn MetaStore) -> FsResult<T>,
    ) -> FsResult<T> {
        let _entered = span.enter();
        let result = f(&*self.inner.store);
        if let Err(err @ (FsError::Io(_) | FsError::Internal(_))) = &result {
            tracing::error!(error = %err, "metadata store failure");
        }
        result
    }

    /// [`Self::blocking`] for a mutating client request: applied at most once per `op`, so
    /// a client retrying after a lost reply (a master crash right after commit, a broken
    /// connection) gets the first answer rather than a second application.
    async fn blocking_once<T: Send + 'static>(
        &self,
        span: Span,
        op: OpId,
        f: impl FnOnce(&dyn MetaStore) -> FsResult<T> + Send + 'static,
    ) -> FsResult<T> {
        self.blocking(span, move |s| crate::store::with_op(op, || f(s)))
            .await
    }

    /// The revocation set this service reports to chunkservers; the accept loop checks the
    /// same set.
    pub fn revoked(&self) -> &common::tls::Revoked {
        &self.inner.revoked
    }

    /// The cluster control: the repair worker and the metrics endpoint share it.
    pub fn cluster(&self) -> Arc<ClusterControl> {
        Arc::clone(&self.inner.cluster)
    }

    /// Records a placement refused for lack of space; logs the first of a burst with the
    /// numbers (the rest are counted, and shown by `status` while they last).
    fn space_refused(&self, ino: InodeId, views: &[NodeView]) {
        let now = Instant::now();
        let detail = crate::space::describe(
            self.inner.policy.w as usize,
            crate::plan::placement::NEW_CHUNK_FOOTPRINT,
            views,
        );
        let mut space = self.inner.space.lock();
        if space.notice(now).is_none() {
            tracing::warn!(%ino, %detail, "write refused for lack of space (ENOSPC); further \
                refusals are counted in mosaic_master_writes_refused_no_space_total");
        } else {
            tracing::debug!(%ino, %detail, "write refused for lack of space (ENOSPC)");
        }
        space.refused(now, detail);
    }

    /// Every known node with its condition and liveness, for `admission`.
    fn members(&self) -> Vec<crate::admission::Member> {
        self.inner
            .cluster
            .views()
            .into_iter()
            .map(|v| crate::admission::Member {
                node: v.node,
                condition: v.condition,
                online: v.online,
            })
            .collect()
    }

    /// The caller's certificate name, for spans and vote counting ("in-process" for a
    /// master embedded in a test without TLS).
    fn peer_name(&self) -> String {
        self.peer
            .as_ref()
            .map_or_else(|| "in-process".to_string(), |p| p.name.clone())
    }

    /// Ends every session whose lease ran out: releases its open files and frees inodes
    /// that were only kept for it. Called periodically by the reaper task.
    /// A report that a replica is bad, from a client or from its own node: only a
    /// suspicion. The replica is marked bad once its node confirms it (`evidence`), never
    /// on the reporter's word.
    fn suspect_replica(&self, chunk: ChunkId, node: NodeId, reason: String) {
        let reason: String = reason.chars().take(REASON_MAX).collect();
        let span = info_span!("report_bad_replica", %chunk, %node);
        let admitted = self.inner.evidence.report((chunk, node));
        let peer = self.peer.as_deref().map(ToString::to_string);
        span.in_scope(|| {
            tracing::warn!(?peer, reason = %reason, ?admitted,
            "replica reported bad; its node is asked to verify it")
        });
    }

    pub async fn reap_expired_sessions(&self) {
        let expired = self.inner.leases.lock().take_expired(Instant::now());
        for session in expired {
            let locks = self.inner.locks.lock().drop_session(session);
            if locks > 0 {
                tracing::info!(%session, locks, "expired session's locks dropped");
            }
            let span = info_span!("session_expired", %session);
            // A failure is logged by `blocking`; the session row then stays and gets a fresh
            // lease (and a second chance to expire) at the next master start.
            if let Ok(Freed {
                inodes,
                replicas_queued,
            }) = self.blocking(span, move |s| s.end_session(session)).await
            {
                tracing::info!(%session, inodes, replicas_queued, "session lease expired");
            }
        }
    }
}

mod admin;
mod fs;
mod nodes;
