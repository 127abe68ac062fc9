//! In-memory chunkservers for in-process client-core tests: registers `n` nodes with a real
//! master and keeps them heartbeating, so placement sees them online as it would real
//! chunkservers. The data itself lives in `fs_client::data::MemDataPlane`; this never
//! serves blocks.

use common::rpc::{connect_master, ctx};
use common::tls::Tls;
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
    let admin = connect_master(addr, tls, rpc_timeout)
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
