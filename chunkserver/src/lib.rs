//! `mosaic-chunkserver`: stores AES-GCM-sealed blocks as opaque bytes with a BLAKE3
//! checksum each, verified on every read. It never sees keys or plaintext and never decides
//! placement: the master tells it what to delete, clients tell it what to write.
//!
//! Start-up reads as one phase per log line: open the data directory, bind, register with
//! the master, record `node.toml`, report the inventory, then serve and heartbeat.
//! [`start`] returns once the node is registered and serving; [`run`] also waits for a
//! shutdown signal and stops gracefully (a last heartbeat marked draining, then stop
//! serving). The store and the RPC service can be built without a master
//! ([`store::Store::open`], [`service::ChunkService::new`]) for tests.

mod aligned;
pub mod cli;
pub mod identity;
pub mod metrics;
mod node;
pub mod repair;
pub mod scrub;
pub mod service;
pub mod stats;
pub mod store;
pub mod verify;

use anyhow::Context as _;
use common::NodeId;
use common::config::ChunkserverConfig;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Names the data directory's lock file (`mosaic-chunkserver.lock`, see `common::dirlock`).
pub const LOCK_NAME: &str = "mosaic-chunkserver";

/// A started chunkserver: registered with the master and serving.
pub struct RunningChunkserver {
    /// The advertised address clients connect to.
    pub addr: String,
    /// The node id the master assigned (kept across restarts in `node.toml`).
    pub node: NodeId,
    /// The bound address of the metrics endpoint, when `metrics_addr` is set.
    pub metrics_addr: Option<std::net::SocketAddr>,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningChunkserver {
    /// Graceful stop: a last heartbeat with `draining`, then stop serving. Errors are
    /// logged; use [`RunningChunkserver::stop`] to receive them.
    pub async fn shutdown(self) {
        if let Err(e) = self.stop().await {
            tracing::error!(error = %format!("{e:#}"), "chunkserver stopped with an error");
        }
    }

    /// Graceful stop, returning how the node's workers ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_tx.send(true);
        joined(self.task.await)
    }

    /// Serves until `shutdown` resolves (then stops gracefully) or the node fails.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let RunningChunkserver {
            stop_tx, mut task, ..
        } = self;
        tokio::select! {
            _ = shutdown => {}
            ended = &mut task => return joined(ended),
        }
        let _ = stop_tx.send(true);
        joined(task.await)
    }
}

fn joined(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.context("chunkserver task failed")?
}

/// Opens the data directory, binds, registers with the master (waiting for it as long as it
/// takes), reports the inventory and starts serving. Returns once clients can connect.
pub async fn start(config: ChunkserverConfig) -> anyhow::Result<RunningChunkserver> {
    // Cached chunk files hold up to two descriptors each, on top of every connection: take
    // the hard limit rather than fail with EMFILE under load at the usual soft 1024.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
    let dir = config.data_dir.clone();
    let opts = store::StoreOptions {
        data_dir: dir.clone(),
        capacity_bytes: config.capacity_bytes,
        sync_every_write: config.sync_every_write,
        chunk_size: None,
        direct_io: config.direct_io,
    };
    let (lock, identity, (store, bad_rx)) = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("create data directory {}", opts.data_dir.display()))?;
        // Before the directory is read: two chunkservers on one data directory would write
        // the same chunk files and report them as two nodes' replicas.
        let lock = common::dirlock::DirLock::acquire(&opts.data_dir, LOCK_NAME)
            .context("lock the data directory")?;
        let identity = identity::load(&opts.data_dir)?;
        anyhow::Ok((lock, identity, store::Store::open(opts)?))
    })
    .await
    .context("join data directory opener")??;
    let status = store.status();
    tracing::info!(dir = %dir.display(), node = ?identity.map(|i| i.node),
        chunks = status.chunk_count, used_bytes = status.used_bytes,
        capacity_bytes = status.capacity_bytes, "data directory opened");

    let tls = config.shared.load_tls("mosaic-chunkserver")?;
    if tls.identity().role != common::tls::Role::Chunkserver {
        anyhow::bail!(
            "the credential given to this chunkserver is a {} certificate ({}): issue one with \
             `mosaic-master issue chunkserver NAME`",
            tls.identity().role,
            tls.identity().name
        );
    }
    tracing::info!(identity = %tls.identity(), "TLS credential loaded");
    let revoked = common::tls::Revoked::default();

    let listener = common::rpc::bind(config.listen).await?;
    let bound = listener.local_addr().context("read the bound address")?;
    let addr = config
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());
    tracing::info!(listen = %bound, advertise = %addr, "listening");

    let agent = Arc::new(node::Agent::new(
        config.master.clone(),
        store.clone(),
        addr.clone(),
        identity,
        tls.clone(),
        revoked.clone(),
    ));
    tracing::info!(master = %config.master, "registering");
    agent.join().await?;

    let metrics = metrics::ChunkserverMetrics::new();
    let rpc_metrics = metrics.rpc.clone();
    let metrics_server = match config.shared.metrics_addr {
        Some(metrics_addr) => {
            let server =
                common::metrics::serve(metrics_addr, scrape(store.clone(), metrics)).await?;
            tracing::info!(addr = %server.addr, "metrics endpoint listening (GET /metrics)");
            Some(server)
        }
        None => None,
    };
    let metrics_addr = metrics_server.as_ref().map(|m| m.addr);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (serve_stop_tx, serve_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service::serve(
        listener,
        tls.clone(),
        revoked,
        service::ChunkService::new(store.clone(), repair::peer_connector(tls)),
        Some(rpc_metrics),
        async {
            let _ = serve_stop_rx.await;
        },
    ));
    let reporter = tokio::spawn(agent.clone().report_bad_loop(bad_rx, stop_rx.clone()));
    let scrubber = tokio::spawn(scrub::scrub_loop(
        store.clone(),
        scrub::ScrubPace {
            bytes_per_sec: config.scrub_bytes_per_sec,
            period: std::time::Duration::from_millis(config.scrub_period_ms),
        },
        stop_rx.clone(),
    ));
    let node = agent.node();
    let task = tokio::spawn(async move {
        // The heartbeat loop ends on stop (after the draining heartbeat) or when the node
        // must be refused; either way serving stops after it.
        let ended = agent.heartbeat_loop(stop_rx).await;
        let _ = serve_stop_tx.send(());
        let _ = server.await;
        reporter.abort();
        let _ = reporter.await;
        scrubber.abort();
        let _ = scrubber.await;
        drop(metrics_server);
        tracing::info!("chunkserver stopped");
        // Released last, once nothing of this node touches the data directory.
        drop(lock);
        ended
    });
    tracing::info!(node = ?node, addr = %addr, "serving");
    Ok(RunningChunkserver {
        addr,
        node,
        metrics_addr,
        stop_tx,
        task,
    })
}

/// The metrics endpoint's render: the persistent metrics plus a snapshot of the store's
/// status (in-memory counters and at most one `statvfs`, on a blocking thread).
fn scrape(store: store::Store, metrics: metrics::ChunkserverMetrics) -> common::metrics::Render {
    let metrics = Arc::new(metrics);
    Arc::new(move || {
        let store = store.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || store.status()).await {
                Ok(status) => {
                    let snapshot = metrics::status_snapshot(&status);
                    common::metrics::encode(&[&metrics.registry, snapshot.registry()])
                }
                Err(_) => common::metrics::encode(&[&metrics.registry]),
            }
        })
    })
}

/// [`start`], then serve until `shutdown` resolves and stop gracefully.
pub async fn run(
    config: ChunkserverConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    // A shutdown while still waiting for the master ends the start-up, too.
    let running = tokio::select! {
        started = start(config) => started?,
        _ = &mut shutdown => return Ok(()),
    };
    running.run_until(shutdown).await
}
