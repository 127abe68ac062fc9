//! The master's tarpc service: handlers only. Each request gets one tracing span with its
//! ids, runs its store call on a blocking thread (SQLite blocks; only single-row reads,
//! which never wait for a writer, run in place: `read_now`), and answers only after the
//! store's transaction committed. No rule lives here: filesystem validation and semantics
//! are in `store` (and its engine-independent `rules`); node liveness, conditions, votes,
//! drains and repair in `cluster`; placement in `plan`; session leases in `sessions`;
//! advisory locks in `locks`. A handler translates a request and delegates.

use crate::cluster::ClusterControl;
use crate::locks::LockTable;
use crate::plan::NodeView;
use crate::sessions::Leases;
use crate::store::{Freed, GC_BATCH, MetaStore};
use common::audit::{Audit, Event, Mutation};
use common::config::MasterConfig;
use common::rpc::Master;
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
    suspects: Mutex<crate::evidence::Suspects>,
    suspects_wake: Arc<tokio::sync::Notify>,
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
                suspects: Mutex::new(crate::evidence::Suspects::default()),
                suspects_wake: Arc::new(tokio::sync::Notify::new()),
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

    /// Bad-replica evidence (issue 12): the suspects queue, its worker's wake-up and the
    /// address a node registered with, for `evidence`.
    pub(crate) fn suspects(&self) -> &Mutex<crate::evidence::Suspects> {
        &self.inner.suspects
    }

    pub(crate) fn suspects_wake(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.inner.suspects_wake)
    }

    pub(crate) fn node_addr(&self, node: NodeId) -> Option<String> {
        self.inner
            .cluster
            .views()
            .into_iter()
            .find(|v| v.node == node)
            .map(|v| v.addr)
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

impl Master for MasterService {
    async fn hello(self, _: Context, client_name: String) -> FsResult<MountInfo> {
        let span = info_span!("hello", client = %client_name);
        let session = self
            .blocking(span.clone(), move |s| {
                s.create_session(&client_name, Timespec::now())
            })
            .await?;
        self.inner.leases.lock().grant(session, Instant::now());
        span.in_scope(|| tracing::info!(%session, "session opened"));
        let cluster = self.inner.store.cluster();
        // Read at every hello: `rotate-key --state` runs as another process.
        let state_dir = self.inner.state_dir.clone();
        let current_key = tokio::task::spawn_blocking(move || crate::keystate::load(&state_dir))
            .await
            .map_err(|e| FsError::internal(format!("key state task failed: {e}")))?
            .map_err(|e| {
                span.in_scope(
                    || tracing::error!(error = %format!("{e:#}"), "current key unreadable"),
                );
                FsError::internal(format!("{e:#}"))
            })?;
        Ok(MountInfo {
            cluster_id: cluster.id,
            session,
            session_ttl_ms: self.inner.session_ttl_ms,
            chunk_size: cluster.chunk_size,
            key_check: ByteBuf::from(cluster.key_check.clone()),
            replication: self.inner.policy,
            current_key,
        })
    }

    async fn keepalive(self, _: Context, session: SessionId) -> FsResult<()> {
        if self.inner.leases.lock().renew(session, Instant::now()) {
            Ok(())
        } else {
            Err(FsError::NotFound)
        }
    }

    async fn goodbye(self, _: Context, session: SessionId) -> FsResult<()> {
        let span = info_span!("goodbye", %session);
        self.inner.leases.lock().remove(session);
        self.inner.locks.lock().drop_session(session);
        self.blocking(span, move |s| s.end_session(session)).await?;
        Ok(())
    }

    async fn lookup(self, _: Context, parent: InodeId, name: ByteBuf) -> FsResult<Attr> {
        let span = info_span!("lookup", %parent, name = %lossy(&name));
        self.read_now(span, move |s| s.lookup(parent, &name))
    }

    async fn getattr(self, _: Context, ino: InodeId) -> FsResult<Attr> {
        let span = info_span!("getattr", %ino);
        self.read_now(span, move |s| s.getattr(ino))
    }

    async fn setattr(
        self,
        _: Context,
        op: OpId,
        ino: InodeId,
        set: SetAttr,
        caller: Caller,
    ) -> FsResult<Attr> {
        // Permission checks are the kernel's (default_permissions); the master applies.
        let span = info_span!("setattr", %ino, uid = caller.uid, gid = caller.gid);
        let result = self
            .blocking_once(span, op, move |s| s.setattr(ino, &set, Timespec::now()))
            .await;
        let target = Target {
            caller: Some(caller),
            ino: Some(ino),
            ..Target::default()
        };
        self.audited("setattr", target, result)
    }

    async fn create(
        self,
        _: Context,
        op: OpId,
        parent: InodeId,
        name: ByteBuf,
        node: NewNode,
    ) -> FsResult<Attr> {
        let span = info_span!("create", %parent, name = %lossy(&name), kind = node.kind.as_str(),
            uid = node.caller.uid);
        let target = Target {
            caller: Some(node.caller.clone()),
            parent: Some(parent),
            name: Some(lossy(&name)),
            ..Target::default()
        };
        let op_name = node.kind.as_str();
        let result = self
            .blocking_once(span, op, move |s| {
                s.create(parent, &name, &node, Timespec::now())
            })
            .await;
        self.audited(&format!("create_{op_name}"), target, result)
    }

    async fn unlink(self, _: Context, op: OpId, parent: InodeId, name: ByteBuf) -> FsResult<()> {
        let span = info_span!("unlink", %parent, name = %lossy(&name));
        let target = Target {
            parent: Some(parent),
            name: Some(lossy(&name)),
            ..Target::default()
        };
        let result = self
            .blocking_once(span, op, move |s| s.unlink(parent, &name, Timespec::now()))
            .await;
        self.audited("unlink", target, result)
    }

    async fn rmdir(self, _: Context, op: OpId, parent: InodeId, name: ByteBuf) -> FsResult<()> {
        let span = info_span!("rmdir", %parent, name = %lossy(&name));
        let target = Target {
            parent: Some(parent),
            name: Some(lossy(&name)),
            ..Target::default()
        };
        let result = self
            .blocking_once(span, op, move |s| s.rmdir(parent, &name, Timespec::now()))
            .await;
        self.audited("rmdir", target, result)
    }

    async fn rename(
        self,
        _: Context,
        op: OpId,
        parent: InodeId,
        name: ByteBuf,
        new_parent: InodeId,
        new_name: ByteBuf,
        flags: RenameFlags,
    ) -> FsResult<()> {
        let span = info_span!("rename", %parent, name = %lossy(&name), %new_parent,
            new_name = %lossy(&new_name), ?flags);
        let target = Target {
            parent: Some(parent),
            name: Some(lossy(&name)),
            new_parent: Some(new_parent),
            new_name: Some(lossy(&new_name)),
            ..Target::default()
        };
        let result = self
            .blocking_once(span, op, move |s| {
                s.rename(parent, &name, new_parent, &new_name, flags, Timespec::now())
            })
            .await;
        self.audited("rename", target, result)
    }

    async fn link(
        self,
        _: Context,
        op: OpId,
        ino: InodeId,
        new_parent: InodeId,
        new_name: ByteBuf,
    ) -> FsResult<Attr> {
        let span = info_span!("link", %ino, %new_parent, new_name = %lossy(&new_name));
        let target = Target {
            ino: Some(ino),
            new_parent: Some(new_parent),
            new_name: Some(lossy(&new_name)),
            ..Target::default()
        };
        let result = self
            .blocking_once(span, op, move |s| {
                s.link(ino, new_parent, &new_name, Timespec::now())
            })
            .await;
        self.audited("link", target, result)
    }

    async fn readlink(self, _: Context, ino: InodeId) -> FsResult<ByteBuf> {
        let span = info_span!("readlink", %ino);
        self.read_now(span, move |s| s.readlink(ino).map(ByteBuf::from))
    }

    async fn readdir(
        self,
        _: Context,
        ino: InodeId,
        after: u64,
        limit: u32,
        plus: bool,
    ) -> FsResult<DirPage> {
        let span = info_span!("readdir", %ino, after, limit, plus);
        self.blocking(span, move |s| s.readdir(ino, after, limit, plus))
            .await
    }

    async fn statfs(self, _: Context) -> FsResult<StatFs> {
        let span = info_span!("statfs");
        let views = self.inner.cluster.views();
        let files = self.blocking(span, |s| s.inode_count()).await?;
        let online = views.iter().filter(|v| v.online);
        let (total_bytes, free_bytes) = online.fold((0u64, 0u64), |(t, f), v| {
            (
                t.saturating_add(v.status.capacity_bytes),
                f.saturating_add(v.free_bytes()),
            )
        });
        Ok(StatFs {
            total_bytes,
            free_bytes,
            files,
            name_max: common::types::NAME_MAX as u32,
            block_size: STATFS_BLOCK_SIZE,
        })
    }

    async fn getxattr(self, _: Context, ino: InodeId, name: ByteBuf) -> FsResult<ByteBuf> {
        let span = info_span!("getxattr", %ino, name = %lossy(&name));
        self.read_now(span, move |s| s.getxattr(ino, &name).map(ByteBuf::from))
    }

    async fn setxattr(
        self,
        _: Context,
        op: OpId,
        ino: InodeId,
        name: ByteBuf,
        value: ByteBuf,
        flags: XattrFlags,
    ) -> FsResult<()> {
        let span = info_span!("setxattr", %ino, name = %lossy(&name), len = value.len(), ?flags);
        let target = Target {
            ino: Some(ino),
            name: Some(lossy(&name)),
            ..Target::default()
        };
        let result = self
            .blocking_once(span, op, move |s| {
                s.setxattr(ino, &name, &value, flags, Timespec::now())
            })
            .await;
        self.audited("setxattr", target, result)
    }

    async fn listxattr(self, _: Context, ino: InodeId) -> FsResult<Vec<ByteBuf>> {
        let span = info_span!("listxattr", %ino);
        self.blocking(span, move |s| {
            s.listxattr(ino)
                .map(|names| names.into_iter().map(ByteBuf::from).collect())
        })
        .await
    }

    async fn removexattr(self, _: Context, op: OpId, ino: InodeId, name: ByteBuf) -> FsResult<()> {
        let span = info_span!("removexattr", %ino, name = %lossy(&name));
        let target = Target {
            ino: Some(ino),
            name: Some(lossy(&name)),
            ..Target::default()
        };
        let result = self
            .blocking_once(span, op, move |s| {
                s.removexattr(ino, &name, Timespec::now())
            })
            .await;
        self.audited("removexattr", target, result)
    }

    async fn open(self, _: Context, op: OpId, ino: InodeId) -> FsResult<Attr> {
        let session = op.session;
        let span = info_span!("open", %session, %ino);
        self.blocking_once(span, op, move |s| s.open(session, ino))
            .await
    }

    async fn release(self, _: Context, op: OpId, ino: InodeId) -> FsResult<()> {
        let session = op.session;
        let span = info_span!("release", %session, %ino);
        self.blocking_once(span, op, move |s| s.release(session, ino))
            .await
    }

    async fn chunk_map(
        self,
        _: Context,
        ino: InodeId,
        first: u64,
        count: u64,
    ) -> FsResult<Vec<ChunkLoc>> {
        let span = info_span!("chunk_map", %ino, first, count);
        let views = self.inner.cluster.views();
        self.blocking(span, move |s| s.chunk_map(ino, first, count, &views))
            .await
    }

    async fn prepare_write(
        self,
        _: Context,
        ino: InodeId,
        indexes: Vec<u64>,
    ) -> FsResult<Vec<WriteGrant>> {
        let span = info_span!("prepare_write", %ino, chunks = indexes.len());
        // A node that is not up takes no writes and no new chunks, even while the registry
        // still counts it online (its last heartbeat is recent).
        let views = self.inner.cluster.write_views();
        let policy = self.inner.policy;
        let refused_views = views.clone();
        let grants = self
            .blocking(span, move |s| {
                s.prepare_write(ino, &indexes, &views, policy)
            })
            .await;
        if grants == Err(FsError::NoSpace) {
            self.space_refused(ino, &refused_views);
        }
        let grants = grants?;
        // A never-committed chunk is new on its replicas: count its footprint as used there
        // until their next heartbeats, so that the placements in between see the space going.
        let mut registry = self.inner.cluster.registry();
        for grant in grants.iter().filter(|g| g.base == Version(0)) {
            for replica in &grant.replicas {
                registry.reserve(replica.node, crate::plan::placement::NEW_CHUNK_FOOTPRINT);
            }
        }
        drop(registry);
        Ok(grants)
    }

    async fn commit_write(self, _: Context, commit: CommitWrite) -> FsResult<Attr> {
        let span = info_span!("commit_write", ino = %commit.ino, chunks = commit.chunks.len(),
            size = commit.size);
        let quorum = self.inner.policy.w;
        let target = Target {
            ino: Some(commit.ino),
            ..Target::default()
        };
        let result = self
            .blocking(span, move |s| {
                s.commit_write(&commit, quorum, Timespec::now())
            })
            .await;
        self.audited("write", target, result)
    }

    async fn report_bad_replica(
        self,
        _: Context,
        chunk: ChunkId,
        node: NodeId,
        reason: String,
    ) -> FsResult<()> {
        // Only a suspicion: the replica is marked bad once its node confirms it
        // (`evidence`), never on the reporter's word.
        let reason: String = reason.chars().take(REASON_MAX).collect();
        let span = info_span!("report_bad_replica", %chunk, %node);
        let admitted = self
            .inner
            .suspects
            .lock()
            .add((chunk, node), Instant::now());
        self.inner.suspects_wake.notify_one();
        let peer = self.peer.as_deref().map(ToString::to_string);
        span.in_scope(|| {
            tracing::warn!(?peer, reason = %reason, ?admitted,
            "replica reported bad; its node is asked to verify it")
        });
        Ok(())
    }

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

    async fn setlk(
        self,
        _: Context,
        session: SessionId,
        ino: InodeId,
        req: LockRequest,
    ) -> FsResult<()> {
        // Only a live session may hold locks: an expired one's locks were dropped, and a lock
        // placed now would never be. A lock request also counts as a sign of life.
        if !self.inner.leases.lock().renew(session, Instant::now()) {
            return Err(FsError::NotFound);
        }
        let span = info_span!("setlk", %session, ino = ino.0);
        let inner = Arc::clone(&self.inner);
        self.blocking(span, move |store| {
            // The table stays locked until the change is persisted: two changes to one inode
            // reach the database in the order they were made.
            let mut locks = inner.locks.lock();
            let before = locks.records(ino);
            locks.set(session, ino, &req)?;
            let after = locks.records(ino);
            if after == before {
                return Ok(());
            }
            // Answer only what is persisted: a lock the database does not hold would vanish
            // with a restart while its holder relies on it.
            store.save_locks(ino, &after).inspect_err(|_| {
                locks.replace(ino, &before);
            })
        })
        .await
    }

    async fn getlk(
        self,
        _: Context,
        session: SessionId,
        ino: InodeId,
        req: LockRequest,
    ) -> FsResult<Option<LockInfo>> {
        Ok(self.inner.locks.lock().test(session, ino, &req))
    }

    async fn get_goal(self, _: Context, ino: InodeId) -> FsResult<u32> {
        let span = info_span!("get_goal", %ino);
        let n = self.inner.policy.n;
        self.blocking(span, move |s| s.goal(ino).map(|g| g.unwrap_or(n)))
            .await
    }

    async fn set_goal(self, _: Context, op: OpId, ino: InodeId, goal: u32) -> FsResult<u64> {
        let span = info_span!("set_goal", %ino, goal);
        // Checked here too, so that a bad value is refused before touching the store.
        common::types::check_goal(goal)?;
        if let Err(e) = crate::admission::check_goal(goal, &self.members()) {
            span.in_scope(|| tracing::warn!(error = %e, "replication goal refused"));
            return Err(e);
        }
        let set = self
            .blocking_once(span, op, move |s| s.set_goal(ino, goal))
            .await?;
        tracing::info!(%ino, goal, inodes = set, "replication goal set; repair converges the replicas");
        Ok(set)
    }

    async fn confirm_replicas(
        self,
        _: Context,
        chunk: ChunkId,
        base: common::Version,
        version: common::Version,
        nodes: Vec<NodeId>,
    ) -> FsResult<Vec<NodeId>> {
        let span = info_span!("confirm_replicas", %chunk, ?version, late = nodes.len());
        self.blocking(span, move |s| {
            s.confirm_replicas(chunk, base, version, &nodes)
        })
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
        crate::evidence::clear_bad(&self, self.connect.as_ref(), chunk, node).await
    }

    async fn create_open(
        self,
        _: Context,
        op: OpId,
        parent: InodeId,
        name: ByteBuf,
        node: NewNode,
    ) -> FsResult<Attr> {
        let session = op.session;
        let span = info_span!("create_open", %session, %parent, name = %lossy(&name),
            uid = node.caller.uid);
        let target = Target {
            caller: Some(node.caller.clone()),
            parent: Some(parent),
            name: Some(lossy(&name)),
            ..Target::default()
        };
        let op_name = node.kind.as_str();
        let result = self
            .blocking_once(span, op, move |s| {
                s.create_open(session, parent, &name, &node, Timespec::now())
            })
            .await;
        // The same record as a create: the open is not a namespace mutation.
        self.audited(&format!("create_{op_name}"), target, result)
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
