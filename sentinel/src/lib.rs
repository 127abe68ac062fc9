//! `mosaic-sentinel`: watches a MosaicFS cluster's chunkservers and reports its health.
//!
//! - [`monitor`]: the worker behind `mosaic-sentinel run` (probe loop, transitions);
//! - [`health`]: the pure node-health rules (HEALTHY / SUSPECT / DEAD);
//! - [`status`]: the typed status report and the cluster verdict behind `status`;
//! - [`render`]: the table and JSON renderings of a report;
//! - [`files`]: `status --node N --files`, which files and chunks a node holds;
//! - [`metrics`]: the Prometheus endpoint of `run` (`--metrics-addr`);
//! - [`cluster`]: the narrow network boundary (master summary, node probes);
//! - [`cli`]: flags and the two subcommands; `main.rs` only calls [`cli::main`].
//!
//! The sentinel never carries file data and never copies or deletes anything itself: it
//! observes, reports, and votes. Its only influence is `MasterAdmin::report_node_health` (a dead
//! vote, or "alive again"); the master decides, with a quorum of sentinels, to re-replicate.

pub mod cli;
pub mod cluster;
pub mod files;
pub mod health;
pub mod metrics;
pub mod monitor;
pub mod render;
pub mod status;

use anyhow::Context as _;
use common::config::SentinelConfig;
use std::future::Future;
use std::time::Duration;

pub use cluster::{Cluster, RpcCluster};
pub use health::{HealthPolicy, NodeState};
pub use monitor::{HealthView, Sentinel, Transition};
pub use status::{StatusReport, Verdict};

/// Deadline for the master's summary in `status`: long enough for a busy master, short
/// enough that an admin is not left staring at a hung command.
pub const STATUS_MASTER_DEADLINE: Duration = Duration::from_secs(3);

/// Silence after which `status` calls a failing node DEAD: the default of
/// `SentinelConfig::dead_after_ms`, so `status` and `run` agree out of the box.
pub const STATUS_DEAD_AFTER_MS: u64 = 10_000;

/// The worker for `config`, talking to the real cluster. Subscribe to its outputs, then
/// call [`Sentinel::run`].
pub fn sentinel(config: &SentinelConfig) -> anyhow::Result<Sentinel<RpcCluster>> {
    let interval = Duration::from_millis(config.probe_interval_ms);
    let tls = config.shared.load_tls("mosaic-sentinel")?;
    let cluster = RpcCluster::new(
        config.master.clone(),
        tls,
        monitor::MASTER_DEADLINE,
        monitor::probe_deadline(interval),
    );
    Sentinel::new(config, cluster).context("check sentinel configuration")
}

/// Runs the health worker until `shutdown` resolves.
pub async fn run(config: SentinelConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let sentinel = sentinel(&config)?;
    let _metrics = serve_metrics(&config, &sentinel).await?;
    tracing::info!(
        master = %config.master,
        probe_interval_ms = config.probe_interval_ms,
        dead_after_ms = config.dead_after_ms,
        "sentinel started"
    );
    sentinel.run(shutdown).await;
    Ok(())
}

/// Starts the metrics endpoint over `sentinel`'s view when `config.shared.metrics_addr` is set;
/// it serves until the returned server is dropped.
pub async fn serve_metrics<C: Cluster>(
    config: &SentinelConfig,
    sentinel: &Sentinel<C>,
) -> anyhow::Result<Option<common::metrics::MetricsServer>> {
    let Some(addr) = config.shared.metrics_addr else {
        return Ok(None);
    };
    let server = common::metrics::serve(addr, metrics::render(sentinel.view())).await?;
    tracing::info!(addr = %server.addr, "metrics endpoint listening (GET /metrics)");
    Ok(Some(server))
}

/// One status report of the cluster behind `master`: its summary plus one short probe of
/// every node. `Err` means the master could not be reached (verdict UNAVAILABLE).
pub async fn status(master: &str, tls: &common::tls::Tls) -> Result<StatusReport, common::FsError> {
    let config = SentinelConfig {
        master: master.to_string(),
        probe_interval_ms: common::config::DEFAULT_HEARTBEAT_MS,
        dead_after_ms: STATUS_DEAD_AFTER_MS,
        shared: common::config::SharedConfig::default(),
        probe_addrs: Default::default(),
        report: true,
    };
    let interval = Duration::from_millis(config.probe_interval_ms);
    let cluster = RpcCluster::new(
        master.to_string(),
        tls.clone(),
        STATUS_MASTER_DEADLINE,
        monitor::probe_deadline(interval),
    );
    status::fetch_report(&cluster, master, &HealthPolicy::from_config(&config)).await
}

/// The clock every judgement uses: tokio's, so tests with paused time control it.
pub(crate) fn clock() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
