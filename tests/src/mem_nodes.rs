//! In-memory chunkservers for in-process client-core tests: registers `n` nodes with a real
//! master and keeps them heartbeating, so placement sees them online as it would real
//! chunkservers. The data itself lives in `fs_client::data::MemDataPlane`; this never
//! serves blocks. [`start_mem_cluster`] sets up the whole rig: a real master in this process
//! with credentials and the in-memory nodes.

use common::block::KeyRing;
use common::config::MasterConfig;
use common::rpc::{connect_master_nodes, ctx};
use common::tls::{CredentialPaths, Role, Tls};
use common::types::{NodeStatus, RegisterNode};
use std::time::Duration;

/// How often the in-memory nodes heartbeat: well inside any test master's offline timeout.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

/// Registers `n` nodes named `mem-0..` (1 GiB capacity each) over `tls`, a chunkserver
/// credential, and heartbeats them until the returned task is dropped or aborted.
pub async fn register_mem_nodes(
    addr: &str,
    tls: &Tls,
    n: u32,
    rpc_timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    let admin = connect_master_nodes(addr, tls, rpc_timeout)
        .await
        .expect("connect");
    let status = NodeStatus {
        capacity_bytes: 1 << 30,
        ..NodeStatus::default()
    };
    let mut nodes = Vec::new();
    for i in 0..n {
        let registered = admin
            .register_node(
                ctx(rpc_timeout),
                RegisterNode {
                    node: None,
                    cluster: None,
                    addr: format!("mem-{i}"),
                    status: status.clone(),
                },
            )
            .await
            .expect("rpc")
            .expect("register");
        nodes.push(registered.node);
    }
    tokio::spawn(async move {
        loop {
            for node in &nodes {
                let _ = admin
                    .heartbeat(ctx(rpc_timeout), *node, status.clone())
                    .await;
            }
            tokio::time::sleep(HEARTBEAT_EVERY).await;
        }
    })
}

/// A real master in this process (temp-dir SQLite) with in-memory chunkservers registered
/// and heartbeating, and a client credential for client cores to connect with.
pub struct MemCluster {
    /// The master's address.
    pub addr: String,
    /// A client-role credential issued by the cluster CA.
    pub client_tls: Tls,
    pub master: master::RunningMaster,
    /// Heartbeats the in-memory nodes; the test's runtime stops it.
    pub heartbeats: tokio::task::JoinHandle<()>,
    /// The master's state directory, removed on drop.
    pub dir: tempfile::TempDir,
}

/// Starts a master with `keys` and `chunk`-byte chunks, `nodes` in-memory chunkservers, and
/// `configure` applied to the test config (replicas = `nodes` before it runs).
pub async fn start_mem_cluster(
    keys: &KeyRing,
    chunk: u64,
    nodes: u32,
    rpc_timeout: Duration,
    configure: impl FnOnce(&mut MasterConfig),
) -> MemCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    master::init_cluster_with_keys(dir.path(), keys, chunk).expect("init");
    let mut config = MasterConfig::for_tests(dir.path().to_path_buf());
    config.replicas = nodes;
    configure(&mut config);
    let master = master::start(config).await.expect("start master");
    let addr = master.addr.to_string();
    // The in-memory chunkservers register and heartbeat with a chunkserver credential; the
    // client cores speak with a client one, as the role checks require.
    let credential = |role, name: &str| {
        let out = dir.path().join("creds").join(name);
        master::pki::issue(dir.path(), role, name, &out).expect("issue");
        CredentialPaths::in_dir(&out)
            .load()
            .expect("load credential")
    };
    let node_tls = credential(Role::Chunkserver, "mem");
    let client_tls = credential(Role::Client, "client");
    let heartbeats = register_mem_nodes(&addr, &node_tls, nodes, rpc_timeout).await;
    MemCluster {
        addr,
        client_tls,
        master,
        heartbeats,
        dir,
    }
}
