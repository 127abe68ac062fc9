//! The tarpc services and the transport every process speaks.
//!
//! Framing: a 4-byte length prefix (tokio-util `LengthDelimitedCodec`) with an explicit
//! maximum frame on both ends, and bincode bodies. A frame over the limit closes the
//! connection before any allocation of the claimed size. The transport is generic over the
//! byte stream, so TLS wraps the TCP stream without touching the services.

// The tarpc-generated clients take one argument per RPC parameter plus a context; rename
// (with its operation id) has eight, and bundling them would only obscure the contract.
#![allow(clippy::too_many_arguments)]

use crate::types::*;
use crate::{ChunkId, FsError, FsResult, InodeId, NodeId, SessionId, Version};
use futures::Future;
use serde_bytes::ByteBuf;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tarpc::serde_transport::Transport;
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::audit::{Audit, Event as AuditEvent, Peer as AuditPeer};
use crate::error::ROLE_REFUSAL;
use crate::preamble::{self, Service};
use crate::tls::{Identity, Revoked, Role, Tls};
use std::sync::Arc;

/// Sealed 64 KiB blocks one data request may carry: 64 blocks = 4 MiB of file data. Large
/// enough that a 1 MiB FUSE write or a readahead window is one request; small enough that a
/// frame never needs more than [`MAX_FRAME_BYTES`].
pub const MAX_BLOCKS_PER_REQUEST: u32 = 64;
/// The largest frame either end accepts: 4 MiB of blocks plus their seal overhead and
/// bincode framing, with room to spare. Set on both ends (tarpc's default is 8 MiB too, but
/// we never rely on a default for a limit).
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;
/// Longest time an accepted connection may take to complete its TLS handshake: generous for
/// a loaded machine, short enough that idle connections from a scanner do not pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Defines a tarpc service and, next to it, the list of its methods as tarpc names them
/// (`Service.method`), so the authorization table test (`crate::authz`) covers every method
/// of every service: a method added here without a rule fails that test.
macro_rules! service {
    (
        $(#[$attr:meta])*
        pub trait $name:ident (methods: $methods:ident) {
            $(
                $(#[$mattr:meta])*
                async fn $method:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
            )*
        }
    ) => {
        $(#[$attr])*
        #[tarpc::service]
        pub trait $name {
            $(
                $(#[$mattr])*
                async fn $method($($arg: $ty),*) -> $ret;
            )*
        }

        #[doc = concat!("Every method of [`", stringify!($name), "`], as tarpc names its requests.")]
        pub const $methods: &[&str] = &[$(concat!(stringify!($name), ".", stringify!($method))),*];
    };
}

service! {
    /// The master as filesystem clients see it: sessions, the namespace, xattrs, the data
    /// path (chunk maps, write grants, commits), advisory locks, replication goals, and
    /// reports of replicas that failed a client's read.
    pub trait MasterFs (methods: MASTER_FS_METHODS) {
        /// A client mounts: returns the cluster's parameters and a new session.
        async fn hello(client_name: String) -> FsResult<MountInfo>;
        /// Renews a session lease; `NotFound` when the session expired (the client re-hellos).
        async fn keepalive(session: SessionId) -> FsResult<()>;
        async fn goodbye(session: SessionId) -> FsResult<()>;

        async fn lookup(parent: InodeId, name: ByteBuf) -> FsResult<Attr>;
        async fn getattr(ino: InodeId) -> FsResult<Attr>;
        async fn setattr(op: OpId, ino: InodeId, set: SetAttr, caller: Caller) -> FsResult<Attr>;
        /// Creates a file, directory, symlink, fifo, socket or device node.
        async fn create(op: OpId, parent: InodeId, name: ByteBuf, node: NewNode) -> FsResult<Attr>;
        /// [`MasterFs::create`] of a regular file (`node.kind` must be `File`, else `Invalid`)
        /// and [`MasterFs::open`] of it by `op.session`, in one transaction: O_CREAT in one
        /// round trip and one commit.
        async fn create_open(op: OpId, parent: InodeId, name: ByteBuf, node: NewNode)
        -> FsResult<Attr>;
        async fn unlink(op: OpId, parent: InodeId, name: ByteBuf) -> FsResult<()>;
        async fn rmdir(op: OpId, parent: InodeId, name: ByteBuf) -> FsResult<()>;
        async fn rename(
            op: OpId,
            parent: InodeId,
            name: ByteBuf,
            new_parent: InodeId,
            new_name: ByteBuf,
            flags: RenameFlags,
        ) -> FsResult<()>;
        async fn link(op: OpId, ino: InodeId, new_parent: InodeId, new_name: ByteBuf)
        -> FsResult<Attr>;
        async fn readlink(ino: InodeId) -> FsResult<ByteBuf>;
        /// Entries with cookie greater than `after`, in cookie order, at most `limit`.
        async fn readdir(ino: InodeId, after: u64, limit: u32, plus: bool) -> FsResult<DirPage>;
        async fn statfs() -> FsResult<StatFs>;

        async fn getxattr(ino: InodeId, name: ByteBuf) -> FsResult<ByteBuf>;
        async fn setxattr(
            op: OpId,
            ino: InodeId,
            name: ByteBuf,
            value: ByteBuf,
            flags: XattrFlags,
        ) -> FsResult<()>;
        async fn listxattr(ino: InodeId) -> FsResult<Vec<ByteBuf>>;
        async fn removexattr(op: OpId, ino: InodeId, name: ByteBuf) -> FsResult<()>;

        /// Records that `session` holds `ino` open, so an unlinked file keeps its data.
        async fn open(op: OpId, ino: InodeId) -> FsResult<Attr>;
        /// The session's last descriptor of `ino` closed; frees an unlinked inode's data.
        async fn release(op: OpId, ino: InodeId) -> FsResult<()>;

        /// Current replicas of chunks `first..first+count` of a file (missing chunks are holes).
        async fn chunk_map(ino: InodeId, first: u64, count: u64) -> FsResult<Vec<ChunkLoc>>;
        /// Grants writes to chunks of a file at fresh versions, allocating chunks as needed.
        async fn prepare_write(ino: InodeId, indexes: Vec<u64>) -> FsResult<Vec<WriteGrant>>;
        /// Records written chunks, replicas that hold them, the new size and mtime.
        async fn commit_write(commit: CommitWrite) -> FsResult<Attr>;
        /// After a commit at `version`, `nodes` (replicas of the grant that were at `base` and
        /// finished every write of it late) hold the committed data: each becomes current if the
        /// chunk is still at `version` and its replica is still at `base`. Returns the nodes
        /// accepted. Idempotent: a repeat finds them at `version`, not `base`, and changes nothing.
        async fn confirm_replicas(
            chunk: ChunkId,
            base: Version,
            version: Version,
            nodes: Vec<NodeId>,
        ) -> FsResult<Vec<NodeId>>;
        /// A replica failed a client's read (checksum, authentication or version): stop
        /// serving it.
        async fn report_bad_replica(chunk: ChunkId, node: NodeId, reason: String) -> FsResult<()>;

        /// Places, converts or removes an advisory lock of `req.owner` in `session` on `ino`;
        /// a conflicting lock of another owner is `WouldBlock` (the client retries to wait).
        /// Locks live in the master's memory and end with their session.
        async fn setlk(session: SessionId, ino: InodeId, req: LockRequest) -> FsResult<()>;
        /// The lock that would block `req`, or `None` (F_GETLK).
        async fn getlk(
            session: SessionId,
            ino: InodeId,
            req: LockRequest,
        ) -> FsResult<Option<LockInfo>>;

        /// The replication goal of `ino`: its own, or the cluster's N when none was set.
        async fn get_goal(ino: InodeId) -> FsResult<u32>;
        /// Sets the replication goal of `ino` and, for a directory, of everything beneath it
        /// (1..=`MAX_GOAL`, else `Invalid`); the master then re-replicates or trims replicas to
        /// match. Returns how many inodes now carry the goal.
        async fn set_goal(op: OpId, ino: InodeId, goal: u32) -> FsResult<u64>;
    }
}

service! {
    /// The master as storage nodes see it: registration, heartbeats, inventories, and
    /// replicas the node itself found bad.
    pub trait MasterNodes (methods: MASTER_NODES_METHODS) {
        async fn register_node(req: RegisterNode) -> FsResult<Registered>;
        async fn heartbeat(node: NodeId, status: NodeStatus) -> FsResult<HeartbeatReply>;
        /// A node's full inventory; the answer names replicas to delete (stale or unknown).
        async fn report_chunks(node: NodeId, held: Vec<HeldChunk>) -> FsResult<HeartbeatReply>;
        /// A replica failed a read on the node that holds it (checksum, authentication or
        /// version): stop serving it.
        async fn report_bad_replica(chunk: ChunkId, node: NodeId, reason: String) -> FsResult<()>;
    }
}

service! {
    /// The master as administrators and sentinels see it: the cluster summary, what each
    /// node holds, sentinels' health votes, drains and bad-mark clearing.
    pub trait MasterAdmin (methods: MASTER_ADMIN_METHODS) {
        async fn cluster_summary() -> FsResult<ClusterSummary>;
        /// Replicas the master records on `node` with chunk id greater than `after`, in chunk id
        /// order, at most `limit` (capped by the master); a shorter page is the last.
        async fn node_contents(node: NodeId, after: ChunkId, limit: u32) -> FsResult<Vec<NodeReplica>>;
        /// [`MasterAdmin::node_contents`] with the path of each replica's file (see
        /// [`NodeFileChunk::path`]): which files and chunks `node` holds, paged the same way
        /// (chunk id greater than `after`, at most `limit`, a shorter page is the last).
        async fn node_files(node: NodeId, after: ChunkId, limit: u32) -> FsResult<Vec<NodeFileChunk>>;
        /// A sentinel's verdict on a chunkserver: `alive = false` is a vote that it is dead
        /// (repeated every probe round while the sentinel holds it), `alive = true` that it
        /// answers again. The master declares a node dead when `dead_quorum` distinct sentinels
        /// voted so within `dead_vote_window_ms`, and alive again at the first alive report.
        /// Answers the node's condition after the report. Sentinel role only.
        async fn report_node_health(node: NodeId, alive: bool) -> FsResult<NodeCondition>;
        /// An admin's drain (`drain = true`) or undrain of `node` (`mosaic-sentinel drain`): a
        /// draining node takes no new chunks and its chunks are copied to other nodes while its
        /// replicas keep serving; once no chunk needs it the master marks it `Decommissioned`.
        /// Undrain returns a draining or decommissioned node to `Up`. Answers the condition
        /// after the request; `Invalid` for a node declared dead. Sentinel role only.
        async fn set_node_drain(node: NodeId, drain: bool) -> FsResult<NodeCondition>;
        /// An admin's decision after an investigation (`mosaic-sentinel clear-bad`): the replica
        /// of `chunk` on `node` is no longer marked bad, so it counts and serves again, and its
        /// pending deletion is cancelled. `NotFound` when the master records no such replica;
        /// `Ok(false)` when it was not marked bad. Sentinel role only.
        async fn clear_bad_replica(chunk: ChunkId, node: NodeId) -> FsResult<bool>;
        /// Forgets a dead or decommissioned node (`mosaic-sentinel forget`): its registry
        /// entry, condition, votes and replica rows go, and its id can never register again.
        /// Refused while the node is in another condition, still reports in, or holds the last
        /// copy of any chunk. Answers how many replica rows were dropped. Sentinel role only.
        async fn forget_node(node: NodeId) -> FsResult<u64>;
    }
}

service! {
    /// A chunkserver: stores sealed blocks of chunks, verifies them on every read.
    pub trait ChunkServer (methods: CHUNK_SERVER_METHODS) {
        async fn write_blocks(req: WriteBlocks) -> FsResult<()>;
        async fn read_blocks(req: ReadBlocks) -> FsResult<BlockData>;
        /// fdatasync the named chunks (after unsynced writes).
        async fn sync_chunks(chunks: Vec<ChunkId>) -> FsResult<()>;
        async fn delete_chunks(chunks: Vec<ChunkId>) -> FsResult<()>;
        async fn list_chunks() -> FsResult<Vec<HeldChunk>>;
        async fn status() -> FsResult<NodeStatus>;
        /// Makes this node's replica of `chunk` a copy of the one at `source` (another
        /// chunkserver's address) at committed `version`: read there block by block, written
        /// here to a new file that replaces any local replica only once complete and fsynced.
        /// The master drives it to repair bad or stale replicas (and re-replication reuses it).
        async fn copy_from(chunk: ChunkId, source: String, version: Version) -> FsResult<()>;
        /// Reads every stored block of this node's replica of `chunk` and checks its BLAKE3
        /// checksum (a corrupt file is quarantined as on any read), then checks the replica has
        /// seen `version`. The master asks before it marks a replica bad. Master role only.
        async fn verify_replica(chunk: ChunkId, version: Version) -> FsResult<ReplicaCheck>;
    }
}

/// The master's join endpoint (`join_listen`): the one service a peer without a certificate
/// may call, over server-authenticated TLS (see `crate::join`).
#[tarpc::service]
pub trait Join {
    /// Exchanges a one-time join token for a certificate of the token's role and name,
    /// signed by the cluster CA over the public key of `csr_pem` (a PKCS#10 request).
    async fn join(token: String, csr_pem: String) -> FsResult<JoinedCredential>;
}

/// A tarpc context whose deadline is `timeout` from now.
pub fn ctx(timeout: Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = Instant::now() + timeout;
    ctx
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// Wraps any byte stream (TCP, TLS, in-memory duplex) in the framed bincode transport.
pub fn transport<S, Item, SinkItem>(io: S) -> Transport<S, Item, SinkItem, Bincode<Item, SinkItem>>
where
    S: AsyncRead + AsyncWrite,
    Item: for<'de> serde::Deserialize<'de>,
    SinkItem: serde::Serialize,
{
    let framed = tarpc::tokio_util::codec::Framed::new(io, codec());
    tarpc::serde_transport::new(framed, Bincode::default())
}

async fn tcp_connect(addr: &str, timeout: Duration) -> FsResult<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| FsError::TimedOut(format!("connect to {addr}")))?
        .map_err(|e| FsError::Unavailable(format!("connect to {addr}: {e}")))?;
    // Requests are small or already large; Nagle only adds latency.
    stream
        .set_nodelay(true)
        .map_err(|e| FsError::Unavailable(format!("set TCP_NODELAY for {addr}: {e}")))?;
    Ok(stream)
}

/// Dials `addr` and runs the TLS handshake, both within `timeout`, requiring that the far
/// end holds a cluster certificate of role `expect`.
async fn tls_connect(
    addr: &str,
    tls: &Tls,
    expect: Role,
    timeout: Duration,
) -> FsResult<tokio_rustls::client::TlsStream<TcpStream>> {
    let handshake = async {
        let stream = tcp_connect(addr, timeout).await?;
        tls.connect(stream, expect, addr).await
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| FsError::TimedOut(format!("TLS handshake with {addr}")))?
}

/// Dials `addr`, runs the TLS handshake (the far end must hold a certificate of role
/// `expect`) and the protocol preamble asking for `service`, each within `timeout`.
async fn connect_service(
    addr: &str,
    tls: &Tls,
    expect: Role,
    service: Service,
    timeout: Duration,
) -> FsResult<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut stream = tls_connect(addr, tls, expect, timeout).await?;
    preamble::offer(&mut stream, service, addr, timeout).await?;
    Ok(stream)
}

/// Connects to a master's filesystem service over mutual TLS. The returned client
/// multiplexes requests over one connection.
pub async fn connect_master_fs(
    addr: &str,
    tls: &Tls,
    timeout: Duration,
) -> FsResult<MasterFsClient> {
    let stream = connect_service(addr, tls, Role::Master, Service::MasterFs, timeout).await?;
    Ok(MasterFsClient::new(tarpc::client::Config::default(), transport(stream)).spawn())
}

/// Connects to a master's storage-node service over mutual TLS.
pub async fn connect_master_nodes(
    addr: &str,
    tls: &Tls,
    timeout: Duration,
) -> FsResult<MasterNodesClient> {
    let stream = connect_service(addr, tls, Role::Master, Service::MasterNodes, timeout).await?;
    Ok(MasterNodesClient::new(tarpc::client::Config::default(), transport(stream)).spawn())
}

/// Connects to a master's administration service over mutual TLS.
pub async fn connect_master_admin(
    addr: &str,
    tls: &Tls,
    timeout: Duration,
) -> FsResult<MasterAdminClient> {
    let stream = connect_service(addr, tls, Role::Master, Service::MasterAdmin, timeout).await?;
    Ok(MasterAdminClient::new(tarpc::client::Config::default(), transport(stream)).spawn())
}

/// Connects to a chunkserver over mutual TLS.
pub async fn connect_chunkserver(
    addr: &str,
    tls: &Tls,
    timeout: Duration,
) -> FsResult<ChunkServerClient> {
    let stream =
        connect_service(addr, tls, Role::Chunkserver, Service::ChunkServer, timeout).await?;
    Ok(ChunkServerClient::new(tarpc::client::Config::default(), transport(stream)).spawn())
}

/// Which [`Service`] a tarpc request type belongs to, so a server of one service knows what
/// to accept in the preamble.
pub trait ServiceRequest {
    const SERVICE: Service;
}

impl ServiceRequest for MasterFsRequest {
    const SERVICE: Service = Service::MasterFs;
}
impl ServiceRequest for MasterNodesRequest {
    const SERVICE: Service = Service::MasterNodes;
}
impl ServiceRequest for MasterAdminRequest {
    const SERVICE: Service = Service::MasterAdmin;
}
impl ServiceRequest for ChunkServerRequest {
    const SERVICE: Service = Service::ChunkServer;
}

/// The [`Service`] a tarpc server (`MyService.serve()`) serves.
pub fn service_of<S>(_: &S) -> Service
where
    S: tarpc::server::Serve,
    S::Req: ServiceRequest,
{
    S::Req::SERVICE
}

/// Runs the server side of the protocol preamble on an accepted connection: the service
/// the peer asked for when it speaks this build's version and `served` lists the service;
/// `None` (logged and audited, the peer told why) otherwise.
pub async fn accept_preamble(
    stream: &mut ServerStream,
    peer: &Identity,
    served: &[Service],
    audit: &Audit,
) -> Option<Service> {
    match preamble::accept(stream, served, HANDSHAKE_TIMEOUT).await {
        Ok(service) => Some(service),
        Err(refusal) => {
            let addr = stream
                .get_ref()
                .0
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::warn!(addr, %peer, %refusal, "connection refused: protocol preamble");
            audit.record(AuditEvent::ConnectionRefused {
                addr,
                peer: Some(AuditPeer::from(peer)),
                reason: crate::audit::clip(&format!("protocol preamble: {refusal}")),
            });
            None
        }
    }
}

/// Binds a listener; port 0 picks a free port (tests).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))
}

/// An accepted connection after a successful mutual TLS handshake.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Accepts connections on `listener` until `shutdown` resolves. Each connection gets its
/// own task that runs the TLS handshake (bounded by [`HANDSHAKE_TIMEOUT`], so a silent
/// peer holds nothing but its socket), refuses revoked certificates, and hands the stream
/// and the peer's identity to `handle` (usually [`serve_connection!`]). A peer without a
/// certificate of the cluster CA never completes the handshake. A connection whose
/// certificate is revoked while it is open is cut as soon as `revoked` learns of it.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    tls: Tls,
    revoked: Revoked,
    handle: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(ServerStream, Identity) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    F: Clone + Send + 'static,
{
    serve_audited(listener, tls, revoked, Audit::disabled(), handle, shutdown).await
}

/// [`serve`] that also records every accepted, refused and cut connection in `audit`.
pub async fn serve_audited<F, Fut>(
    listener: TcpListener,
    tls: Tls,
    revoked: Revoked,
    audit: Audit,
    handle: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(ServerStream, Identity) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    F: Clone + Send + 'static,
{
    let acceptor = tls.acceptor().clone();
    let on_handshake = {
        let audit = audit.clone();
        move |stream: ServerStream, peer: SocketAddr| {
            let revoked = revoked.clone();
            let handle = handle.clone();
            let audit = audit.clone();
            async move {
                let addr = peer.to_string();
                let identity = match crate::tls::peer_identity(&stream) {
                    Ok(identity) => identity,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "connection refused: unreadable certificate");
                        audit.record(AuditEvent::ConnectionRefused {
                            addr,
                            peer: None,
                            reason: crate::audit::clip(&format!("unreadable certificate: {e}")),
                        });
                        return;
                    }
                };
                if revoked.contains(&identity.serial) {
                    tracing::warn!(%peer, %identity, "connection refused: certificate revoked");
                    audit.record(AuditEvent::ConnectionRefused {
                        addr,
                        peer: Some(AuditPeer::from(&identity)),
                        reason: "certificate revoked".into(),
                    });
                    return;
                }
                tracing::debug!(%peer, %identity, "connection accepted");
                audit.record(AuditEvent::ConnectionAccepted {
                    addr: addr.clone(),
                    peer: AuditPeer::from(&identity),
                });
                let serial = identity.serial.clone();
                let who = AuditPeer::from(&identity);
                // Dropping the connection's future drops its transport: the socket
                // closes and requests in flight get no answer.
                tokio::select! {
                    () = handle(stream, identity) => {}
                    () = revoked.until_revoked(&serial) => {
                        tracing::warn!(%peer, serial, "connection closed: certificate revoked");
                        audit.record(AuditEvent::ConnectionClosed {
                            addr,
                            peer: who,
                            reason: "certificate revoked".into(),
                        });
                    }
                }
            }
        }
    };
    accept_loop(listener, acceptor, audit, on_handshake, shutdown).await
}

/// The one TLS accept loop, for the mutual-TLS RPC endpoints ([`serve_audited`]) and the
/// master's server-authenticated join endpoint alike: accepts on `listener` until
/// `shutdown` resolves, and gives each connection its own task that runs the `acceptor`'s
/// handshake, bounded by [`HANDSHAKE_TIMEOUT`] so a silent peer holds nothing but its
/// socket. A failed handshake is logged and recorded in `audit`; a completed one goes to
/// `on_handshake` with the peer's address. What differs between endpoints (client
/// certificates, revocation, which service runs) is the acceptor's configuration and
/// `on_handshake`. Open connections are dropped when the loop ends.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    audit: Audit,
    on_handshake: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(ServerStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    F: Clone + Send + 'static,
{
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let on_handshake = on_handshake.clone();
                let audit = audit.clone();
                connections.spawn(async move {
                    let refuse = |reason: String| {
                        audit.record(AuditEvent::ConnectionRefused {
                            addr: peer.to_string(),
                            peer: None,
                            reason: crate::audit::clip(&reason),
                        });
                    };
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "connection refused: TLS handshake failed");
                            refuse(format!("TLS handshake failed: {e}"));
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "connection refused: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                            refuse(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"));
                            return;
                        }
                    };
                    on_handshake(stream, peer).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

/// Wraps a tarpc service so that each request is first checked against the caller's role
/// ([`crate::authz::allowed`]). A refused call is answered with a server error whose text
/// starts with [`ROLE_REFUSAL`], which the caller sees as [`FsError::NotPermitted`], and is
/// logged and audited.
#[derive(Clone)]
pub struct RoleGuard<S> {
    pub inner: S,
    pub peer: Arc<Identity>,
    /// Where answered calls' latencies go, per method (`None`: not recorded).
    pub metrics: Option<crate::metrics::RpcMetrics>,
    pub audit: Audit,
}

impl<S> tarpc::server::Serve for RoleGuard<S>
where
    S: tarpc::server::Serve,
{
    type Req = S::Req;
    type Resp = S::Resp;

    async fn serve(
        self,
        ctx: tarpc::context::Context,
        req: Self::Req,
    ) -> Result<Self::Resp, tarpc::ServerError> {
        use tarpc::RequestName as _;
        let method = req.name();
        if !crate::authz::allowed(self.peer.role, method) {
            tracing::warn!(peer = %self.peer, method, "call refused: not allowed for this role");
            self.audit.record(AuditEvent::PermissionDenied {
                peer: AuditPeer::from(&*self.peer),
                method: method.to_owned(),
            });
            return Err(tarpc::ServerError::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{ROLE_REFUSAL}{method} is not allowed for a {} certificate",
                    self.peer.role
                ),
            ));
        }
        let Some(metrics) = self.metrics else {
            return self.inner.serve(ctx, req).await;
        };
        // The name borrows the request, which the service consumes.
        let method = method.to_owned();
        let started = Instant::now();
        let answer = self.inner.serve(ctx, req).await;
        metrics.observe(&method, started.elapsed());
        answer
    }
}

#[doc(hidden)]
pub mod __private {
    pub use futures;
    pub use tarpc;
    pub use tokio;
}

/// Serves one connection with a concrete tarpc service (`MyService.serve()`) for the peer
/// `Identity`: first the protocol preamble (a peer of another version, or one asking for
/// another service, is refused), then every request, each checked against the peer's role
/// (`crate::authz`) and run in its own task so that blocking disk or CPU work on one never
/// stalls the others. The stream must be a [`ServerStream`].
/// With a fourth argument, an `Option<RpcMetrics>`, every answered call's latency is
/// recorded per method; with a fifth (an [`Audit`]), refused calls are also audited.
/// A macro because the service futures are only provably `Send` at the concrete type.
#[macro_export]
macro_rules! serve_connection {
    ($stream:expr, $peer:expr, $serve:expr) => {
        $crate::serve_connection!(
            $stream,
            $peer,
            $serve,
            None,
            $crate::audit::Audit::disabled()
        )
    };
    ($stream:expr, $peer:expr, $serve:expr, $metrics:expr) => {
        $crate::serve_connection!(
            $stream,
            $peer,
            $serve,
            $metrics,
            $crate::audit::Audit::disabled()
        )
    };
    ($stream:expr, $peer:expr, $serve:expr, $metrics:expr, $audit:expr) => {{
        let mut stream: $crate::rpc::ServerStream = $stream;
        let peer: $crate::tls::Identity = $peer;
        let serve = $serve;
        let metrics = $metrics;
        let audit: $crate::audit::Audit = $audit;
        async move {
            let service = $crate::rpc::service_of(&serve);
            if $crate::rpc::accept_preamble(&mut stream, &peer, &[service], &audit)
                .await
                .is_some()
            {
                $crate::serve_accepted!(stream, peer, serve, metrics, audit).await
            }
        }
    }};
}

/// [`serve_connection!`] after the preamble: for a listener that serves several services
/// and chose one with [`accept_preamble`]. Arguments as [`serve_connection!`]'s five.
#[macro_export]
macro_rules! serve_accepted {
    ($stream:expr, $peer:expr, $serve:expr, $metrics:expr, $audit:expr) => {{
        use $crate::rpc::__private::futures::StreamExt as _;
        use $crate::rpc::__private::tarpc::server::Channel as _;
        $crate::rpc::__private::tarpc::server::BaseChannel::with_defaults($crate::rpc::transport(
            $crate::clean_eof::CleanEof::new($stream),
        ))
        .execute($crate::rpc::RoleGuard {
            inner: $serve,
            peer: ::std::sync::Arc::new($peer),
            metrics: $metrics,
            audit: $audit,
        })
        .for_each(|request| async move {
            $crate::rpc::__private::tokio::spawn(request);
        })
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tarpc::tokio_serde::Deserializer as _;

    /// Decodes `bytes` as one frame body the way the server does; must never panic.
    fn decode<T: for<'de> serde::Deserialize<'de> + Unpin>(bytes: &[u8]) -> bool {
        let mut codec = Bincode::<T, ()>::default();
        std::pin::Pin::new(&mut codec)
            .deserialize(&bytes::BytesMut::from(bytes))
            .is_ok()
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<tarpc::ClientMessage<MasterFsRequest>>(&bytes);
            let _ = decode::<tarpc::ClientMessage<MasterNodesRequest>>(&bytes);
            let _ = decode::<tarpc::ClientMessage<MasterAdminRequest>>(&bytes);
            let _ = decode::<tarpc::ClientMessage<ChunkServerRequest>>(&bytes);
            let _ = decode::<tarpc::Response<MasterFsResponse>>(&bytes);
            let _ = decode::<tarpc::Response<MasterNodesResponse>>(&bytes);
            let _ = decode::<tarpc::Response<MasterAdminResponse>>(&bytes);
            let _ = decode::<tarpc::Response<ChunkServerResponse>>(&bytes);
        }
    }

    #[test]
    fn a_huge_claimed_length_is_an_error_not_an_allocation() {
        // Every field read after the variant tag claims a length or count near 2^62..2^64:
        // decoding must fail on the missing bytes, never reserve the claimed size (an
        // allocation that large would abort the process).
        let mut frame = vec![0u8; 4];
        frame.extend(u64::MAX.to_le_bytes());
        frame.extend((1u64 << 62).to_le_bytes());
        assert!(!decode::<tarpc::ClientMessage<MasterFsRequest>>(&frame));
        assert!(!decode::<tarpc::ClientMessage<MasterNodesRequest>>(&frame));
        assert!(!decode::<tarpc::ClientMessage<MasterAdminRequest>>(&frame));
        assert!(!decode::<tarpc::ClientMessage<ChunkServerRequest>>(&frame));
    }
}
