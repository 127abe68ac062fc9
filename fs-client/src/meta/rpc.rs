//! [`Metadata`] over tarpc: one multiplexed connection to the master, re-established on
//! failure, with every call retried inside the configured retry window.
//!
//! A call that cannot reach the master within the window fails with `Unavailable` (EIO) or
//! `TimedOut`; a mount never hangs forever. Application errors (`NotFound`, `Exists`, ...) are
//! returned at once; `Unavailable` answers from the master (e.g. too few chunkservers online)
//! are retried, because they usually pass when a node comes back.

use super::{MetaFuture, Metadata};
use common::rpc::{MasterFsClient, connect_master_fs, ctx};
use common::types::*;
use common::{ChunkId, FsError, FsResult, InodeId, NodeId, SessionId, Version};
use parking_lot::Mutex;
use serde_bytes::ByteBuf;
use std::future::Future;
use std::time::{Duration, Instant};
use tarpc::client::RpcError;
use tarpc::context::Context;

/// First pause between retries; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between retries: short enough to notice a returning master quickly.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

pub struct MetaConn {
    addr: String,
    /// The mount's client credential; `None` only for an in-process client (tests), which
    /// cannot reconnect.
    tls: Option<common::tls::Tls>,
    client: Mutex<Option<MasterFsClient>>,
    rpc_timeout: Duration,
    retry_window: Duration,
}

impl MetaConn {
    pub fn new(
        addr: String,
        tls: common::tls::Tls,
        rpc_timeout: Duration,
        retry_window: Duration,
    ) -> MetaConn {
        MetaConn {
            addr,
            tls: Some(tls),
            client: Mutex::new(None),
            rpc_timeout,
            retry_window,
        }
    }

    /// Uses an existing client (tests: an in-process channel).
    pub fn with_client(
        client: MasterFsClient,
        rpc_timeout: Duration,
        retry_window: Duration,
    ) -> MetaConn {
        MetaConn {
            addr: String::from("in-process"),
            tls: None,
            client: Mutex::new(Some(client)),
            rpc_timeout,
            retry_window,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn client(&self) -> FsResult<MasterFsClient> {
        if let Some(client) = self.client.lock().clone() {
            return Ok(client);
        }
        let tls = self.tls.as_ref().ok_or_else(|| {
            FsError::Unavailable("the in-process master connection is gone".into())
        })?;
        let client = connect_master_fs(&self.addr, tls, self.rpc_timeout).await?;
        *self.client.lock() = Some(client.clone());
        Ok(client)
    }

    fn drop_client(&self) {
        *self.client.lock() = None;
    }

    /// Calls the master, retrying transport failures and `Unavailable` answers until the
    /// retry window has passed.
    async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> FsResult<T>
    where
        F: Fn(MasterFsClient, Context) -> Fut,
        Fut: Future<Output = Result<FsResult<T>, RpcError>>,
    {
        let give_up = Instant::now() + self.retry_window;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let err = match self.client().await {
                Ok(client) => match f(client, ctx(self.rpc_timeout)).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(FsError::Unavailable(msg))) => FsError::Unavailable(msg),
                    Ok(Err(err)) => return Err(err),
                    Err(rpc) => {
                        self.drop_client();
                        FsError::from(rpc)
                    }
                },
                Err(err) => err,
            };
            if Instant::now() + backoff >= give_up {
                tracing::warn!(what, error = %err, "master call failed after the retry window");
                return Err(match err {
                    FsError::TimedOut(m) => FsError::TimedOut(m),
                    other => FsError::Unavailable(format!("master {}: {other}", self.addr)),
                });
            }
            tracing::debug!(what, error = %err, "master call failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

impl Metadata for MetaConn {
    fn hello(&self, client_name: String) -> MetaFuture<'_, MountInfo> {
        Box::pin(self.call("hello", move |c, cx| {
            let name = client_name.clone();
            async move { c.hello(cx, name).await }
        }))
    }

    fn keepalive(&self, session: SessionId) -> MetaFuture<'_, ()> {
        Box::pin(self.call("keepalive", move |c, cx| async move {
            c.keepalive(cx, session).await
        }))
    }

    fn goodbye(&self, session: SessionId) -> MetaFuture<'_, ()> {
        Box::pin(self.call("goodbye", move |c, cx| async move {
            c.goodbye(cx, session).await
        }))
    }

    fn lookup(&self, parent: InodeId, name: ByteBuf) -> MetaFuture<'_, Attr> {
        Box::pin(self.call("lookup", move |c, cx| {
            let name = name.clone();
            async move { c.lookup(cx, parent, name).await }
        }))
    }

    fn getattr(&self, ino: InodeId) -> MetaFuture<'_, Attr> {
        Box::pin(self.call(
            "getattr",
            move |c, cx| async move { c.getattr(cx, ino).await },
        ))
    }

    fn setattr(
        &self,
        op: OpId,
        ino: InodeId,
        set: SetAttr,
        caller: Caller,
    ) -> MetaFuture<'_, Attr> {
        Box::pin(self.call("setattr", move |c, cx| {
            let (set, caller) = (set.clone(), caller.clone());
            async move { c.setattr(cx, op, ino, set, caller).await }
        }))
    }

    fn create(
        &self,
        op: OpId,
        parent: InodeId,
        name: ByteBuf,
        node: NewNode,
    ) -> MetaFuture<'_, Attr> {
        Box::pin(self.call("create", move |c, cx| {
            let (name, node) = (name.clone(), node.clone());
            async move { c.create(cx, op, parent, name, node).await }
        }))
    }

    fn create_open(
        &self,
        op: OpId,
        parent: InodeId,
        name: ByteBuf,
        node: NewNode,
    ) -> MetaFuture<'_, Attr> {
        Box::pin(self.call("create_open", move |c, cx| {
            let (name, node) = (name.clone(), node.clone());
            async move { c.create_open(cx, op, parent, name, node).await }
        }))
    }

    fn unlink(&self, op: OpId, parent: InodeId, name: ByteBuf) -> MetaFuture<'_, ()> {
        Box::pin(self.call("unlink", move |c, cx| {
            let name = name.clone();
            async move { c.unlink(cx, op, parent, name).await }
        }))
    }

    fn rmdir(&self, op: OpId, parent: InodeId, name: ByteBuf) -> MetaFuture<'_, ()> {
        Box::pin(self.call("rmdir", move |c, cx| {
            let name = name.clone();
            async move { c.rmdir(cx, op, parent, name).await }
        }))
    }

    fn rename(
        &self,
        op: OpId,
        parent: InodeId,
        name: ByteBuf,
        new_parent: InodeId,
        new_name: ByteBuf,
        flags: RenameFlags,
    ) -> MetaFuture<'_, ()> {
        Box::pin(self.call("rename", move |c, cx| {
            let (name, new_name) = (name.clone(), new_name.clone());
            async move {
                c.rename(cx, op, parent, name, new_parent, new_name, flags)
                    .await
            }
        }))
    }

    fn link(
        &self,
        op: OpId,
        ino: InodeId,
        new_parent: InodeId,
        new_name: ByteBuf,
    ) -> MetaFuture<'_, Attr> {
        Box::pin(self.call("link", move |c, cx| {
            let new_name = new_name.clone();
            async move { c.link(cx, op, ino, new_parent, new_name).await }
        }))
    }

    fn readlink(&self, ino: InodeId) -> MetaFuture<'_, ByteBuf> {
        Box::pin(self.call(
            "readlink",
            move |c, cx| async move { c.readlink(cx, ino).await },
        ))
    }

    fn readdir(&self, ino: InodeId, after: u64, limit: u32, plus: bool) -> MetaFuture<'_, DirPage> {
        Box::pin(self.call("readdir", move |c, cx| async move {
            c.readdir(cx, ino, after, limit, plus).await
        }))
    }

    fn statfs(&self) -> MetaFuture<'_, StatFs> {
        Box::pin(self.call("statfs", |c, cx| async move { c.statfs(cx).await }))
    }

    fn getxattr(&self, ino: InodeId, name: ByteBuf) -> MetaFuture<'_, ByteBuf> {
        Box::pin(self.call("getxattr", move |c, cx| {
            let name = name.clone();
            async move { c.getxattr(cx, ino, name).await }
        }))
    }

    fn setxattr(
        &self,
        op: OpId,
        ino: InodeId,
        name: ByteBuf,
        value: ByteBuf,
        flags: XattrFlags,
    ) -> MetaFuture<'_, ()> {
        Box::pin(self.call("setxattr", move |c, cx| {
            let (name, value) = (name.clone(), value.clone());
            async move { c.setxattr(cx, op, ino, name, value, flags).await }
        }))
    }

    fn listxattr(&self, ino: InodeId) -> MetaFuture<'_, Vec<ByteBuf>> {
        Box::pin(self.call("listxattr", move |c, cx| async move {
            c.listxattr(cx, ino).await
        }))
    }

    fn removexattr(&self, op: OpId, ino: InodeId, name: ByteBuf) -> MetaFuture<'_, ()> {
        Box::pin(self.call("removexattr", move |c, cx| {
            let name = name.clone();
            async move { c.removexattr(cx, op, ino, name).await }
        }))
    }

    fn get_goal(&self, ino: InodeId) -> MetaFuture<'_, u32> {
        Box::pin(self.call(
            "get_goal",
            move |c, cx| async move { c.get_goal(cx, ino).await },
        ))
    }

    fn set_goal(&self, op: OpId, ino: InodeId, goal: u32) -> MetaFuture<'_, u64> {
        Box::pin(self.call("set_goal", move |c, cx| async move {
            c.set_goal(cx, op, ino, goal).await
        }))
    }

    fn open(&self, op: OpId, ino: InodeId) -> MetaFuture<'_, Attr> {
        Box::pin(self.call(
            "open",
            move |c, cx| async move { c.open(cx, op, ino).await },
        ))
    }

    fn release(&self, op: OpId, ino: InodeId) -> MetaFuture<'_, ()> {
        Box::pin(self.call("release", move |c, cx| async move {
            c.release(cx, op, ino).await
        }))
    }

    fn setlk(&self, session: SessionId, ino: InodeId, req: LockRequest) -> MetaFuture<'_, ()> {
        Box::pin(self.call("setlk", move |c, cx| async move {
            c.setlk(cx, session, ino, req).await
        }))
    }

    fn getlk(
        &self,
        session: SessionId,
        ino: InodeId,
        req: LockRequest,
    ) -> MetaFuture<'_, Option<LockInfo>> {
        Box::pin(self.call("getlk", move |c, cx| async move {
            c.getlk(cx, session, ino, req).await
        }))
    }

    fn chunk_map(&self, ino: InodeId, first: u64, count: u64) -> MetaFuture<'_, Vec<ChunkLoc>> {
        Box::pin(self.call("chunk_map", move |c, cx| async move {
            c.chunk_map(cx, ino, first, count).await
        }))
    }

    fn prepare_write(&self, ino: InodeId, indexes: Vec<u64>) -> MetaFuture<'_, Vec<WriteGrant>> {
        Box::pin(self.call("prepare_write", move |c, cx| {
            let indexes = indexes.clone();
            async move { c.prepare_write(cx, ino, indexes).await }
        }))
    }

    fn commit_write(&self, commit: CommitWrite) -> MetaFuture<'_, Attr> {
        Box::pin(self.call("commit_write", move |c, cx| {
            let commit = commit.clone();
            async move { c.commit_write(cx, commit).await }
        }))
    }

    fn report_bad_replica(
        &self,
        chunk: ChunkId,
        node: NodeId,
        reason: String,
    ) -> MetaFuture<'_, ()> {
        Box::pin(self.call("report_bad_replica", move |c, cx| {
            let reason = reason.clone();
            async move { c.report_bad_replica(cx, chunk, node, reason).await }
        }))
    }

    fn confirm_replicas(
        &self,
        chunk: ChunkId,
        base: Version,
        version: Version,
        nodes: Vec<NodeId>,
    ) -> MetaFuture<'_, Vec<NodeId>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .confirm_replicas(ctx(self.rpc_timeout), chunk, base, version, nodes)
                .await
                .map_err(FsError::from)?
        })
    }
}
