//! The state-query client: repeatedly asks the master which files and chunks each node
//! holds (`cluster_summary`, then every node's `node_files`, page by page: each replica with
//! the path of its file, the same RPC as `mosaic-sentinel status --node N --files`). A small
//! working set is written first so the answers are not empty.

use super::{Better, Config, Figure, Outcome, pattern, per_second};
use crate::stats::Latencies;
use anyhow::{Context as _, anyhow};
use common::ChunkId;
use common::rpc::{connect_master_admin, ctx};
use common::tls::CredentialPaths;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Deadline of one RPC: generous, a loaded master answers in milliseconds.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Replicas asked for per page: several round trips per node on a real cluster, so the
/// paging is exercised, while each answer stays small.
const PAGE: u32 = 1000;
/// Files written before querying, so that every node holds something to list.
const FILES: usize = 8;
const FILE_SIZE: usize = 256 * 1024;

/// One full sweep: the summary, then every node's listing. Returns replicas listed.
async fn sweep(client: &common::rpc::MasterAdminClient) -> anyhow::Result<u64> {
    let summary = client
        .cluster_summary(ctx(RPC_TIMEOUT))
        .await
        .context("cluster_summary RPC")?
        .map_err(|e| anyhow!("cluster_summary: {e}"))?;
    let mut replicas = 0u64;
    for node in &summary.nodes {
        let mut after = ChunkId(0);
        loop {
            let page = client
                .node_files(ctx(RPC_TIMEOUT), node.node, after, PAGE)
                .await
                .context("node_files RPC")?
                .map_err(|e| anyhow!("node_files of {}: {e}", node.node))?;
            replicas += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = last.replica.chunk,
                _ => break,
            }
        }
    }
    Ok(replicas)
}

pub fn run(
    work: &Path,
    config: &Config,
    master: &str,
    credentials: Option<&Path>,
) -> anyhow::Result<Outcome> {
    // Every connection to a master is mutual TLS with a cluster credential.
    let credentials = credentials.ok_or_else(|| {
        anyhow!("state_query needs --credentials DIR (a client or sentinel credential: cert.pem, key.pem, ca.pem)")
    })?;
    let tls = CredentialPaths::in_dir(credentials)
        .load()
        .with_context(|| format!("load the credential in {}", credentials.display()))?;
    let data = pattern(FILE_SIZE, config.seed);
    for i in 0..FILES {
        let p = work.join(format!("q{i}"));
        let mut f = std::fs::File::create(&p).with_context(|| format!("create {}", p.display()))?;
        f.write_all(&data)
            .with_context(|| format!("write {}", p.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", p.display()))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build a tokio runtime")?;
    let limit = Duration::from_secs_f64(config.state_query_seconds);
    let (lat, sweeps, replicas, elapsed) = rt.block_on(async {
        let client = connect_master_admin(master, &tls, RPC_TIMEOUT)
            .await
            .map_err(|e| anyhow!("connect to master {master}: {e}"))?;
        let mut lat = Latencies::new();
        let mut sweeps = 0u64;
        let mut replicas = 0u64;
        let start = Instant::now();
        while start.elapsed() < limit || sweeps == 0 {
            let t = Instant::now();
            replicas = sweep(&client).await?;
            lat.record(t.elapsed());
            sweeps += 1;
        }
        anyhow::Ok((lat, sweeps, replicas, start.elapsed()))
    })?;
    let mut out = Outcome::default();
    out.figures.push(Figure::new(
        "state_query_rate",
        "state queries (summary + every node's files and chunks)",
        "queries/s",
        Better::Higher,
        per_second(sweeps as f64, elapsed),
    ));
    out.figures.push(Figure::new(
        "state_query_replicas",
        "replicas listed per query",
        "replicas",
        Better::Higher,
        replicas as f64,
    ));
    out.figures.extend(Figure::latencies(
        "state_query",
        "state query latency",
        &lat,
    ));
    out.latencies.push(("state_query".into(), lat));
    Ok(out)
}
