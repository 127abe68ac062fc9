//! Handlers of the filesystem clients' service (`common::rpc::MasterFs`): sessions, the
//! namespace, the data path, locks and goals. Handlers translate and delegate to the store,
//! `sessions` and `locks`; they never decide node conditions or placement.

use super::*;
use common::rpc::MasterFs;

impl MasterFs for MasterService {
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
}
