//! `mosaic-master`: the MosaicFS metadata server. It owns the namespace, inodes, xattrs,
//! the chunk table with versions, replica locations, the node registry, client sessions,
//! placement and garbage-collection orders. It never carries file data and never sees a key:
//! it keeps only the data key's check value.
//!
//! Entry points: [`init_cluster`] (the `init` subcommand) creates a state directory;
//! [`start`] opens it and serves until [`RunningMaster::shutdown`]; [`run`] wraps both for a
//! daemon with a shutdown future. Tests call these in-process.

pub mod admission;
pub mod blocking;
pub mod ca;
pub mod cluster;
pub mod evidence;
pub mod keystate;
pub mod locks;
pub mod metrics;
pub mod pki;
pub mod plan;
pub mod registry;
pub mod service;
pub mod sessions;
pub mod space;
pub mod store;
pub mod tokens;

use anyhow::Context as _;
use common::ClusterId;
use common::block::{BLOCK_SIZE, DataKey, KeyRing};
use common::config::MasterConfig;
use common::durable;
use common::rpc::{MasterAdmin, MasterFs, MasterNodes};
use common::types::Timespec;
use service::MasterService;
use std::fs::{DirBuilder, OpenOptions};
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use store::{ClusterRecord, MetaStore, SqliteStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The metadata database's file name inside the state directory.
pub const DB_FILE: &str = "meta.db";
/// Names the state directory's lock file (`mosaic-master.lock`, see `common::dirlock`).
pub const LOCK_NAME: &str = "mosaic-master";
/// The default key file name inside the state directory.
pub const KEY_FILE: &str = "data.key";
/// The largest chunk size `init` accepts: 1 GiB. Larger chunks make each re-replication and
/// each placement decision coarse, and the chunk's block table large, for no gain.
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;
/// Longest pause of the session reaper: an expired lease is acted on within this time.
const REAPER_MAX_PERIOD: Duration = Duration::from_secs(1);
/// Shortest pause of the session reaper, so a tiny test TTL does not make it spin.
const REAPER_MIN_PERIOD: Duration = Duration::from_millis(20);

fn check_chunk_size(chunk_size: u64) -> anyhow::Result<()> {
    if chunk_size == 0 || chunk_size % BLOCK_SIZE as u64 != 0 || chunk_size > MAX_CHUNK_SIZE {
        anyhow::bail!(
            "chunk size {chunk_size} must be a positive multiple of the {BLOCK_SIZE}-byte block \
             size, at most {MAX_CHUNK_SIZE}"
        );
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}

/// Creates a cluster: the state directory (0700) with `meta.db`, the cluster CA and the
/// master's TLS credential in `pki/` (keys 0600), a new random data key in `key_file`
/// (0600, never overwritten) and its check value in the database.
pub fn init_cluster(
    state_dir: &Path,
    key_file: &Path,
    chunk_size: u64,
) -> anyhow::Result<ClusterId> {
    check_chunk_size(chunk_size)?;
    refuse_existing_db(state_dir)?;
    create_state_dir(state_dir)?;
    let keys = KeyRing::single(DataKey::random(0));
    // The key file first, with O_EXCL: overwriting a key would make every file of the
    // cluster that used it unreadable.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_file)
        .with_context(|| {
            format!(
                "create key file {} (it must not exist yet: a key is never overwritten)",
                key_file.display()
            )
        })?;
    let created = file
        .write_all(keys.to_file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write key file {}", key_file.display()))
        .and_then(|()| sync_dir(key_file.parent().unwrap_or(Path::new("."))))
        .and_then(|()| init_cluster_with_keys(state_dir, &keys, chunk_size));
    if created.is_err() {
        // No half-made cluster: without the database the key is useless, and leaving it
        // would make the retry fail on O_EXCL.
        let _ = std::fs::remove_file(key_file);
    }
    created
}

/// Creates a cluster whose key check value comes from `keys` (tests hold the ring in memory).
pub fn init_cluster_with_keys(
    state_dir: &Path,
    keys: &KeyRing,
    chunk_size: u64,
) -> anyhow::Result<ClusterId> {
    check_chunk_size(chunk_size)?;
    refuse_existing_db(state_dir)?;
    create_state_dir(state_dir)?;
    let db = state_dir.join(DB_FILE);
    let tmp = state_dir.join(format!("{DB_FILE}.init-tmp"));
    // A leftover of an init that crashed before publishing: never a live database.
    for leftover in [
        tmp.clone(),
        state_dir.join(format!("{DB_FILE}.init-tmp-journal")),
    ] {
        match std::fs::remove_file(&leftover) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", leftover.display())),
        }
    }
    let cluster = ClusterRecord {
        id: ClusterId::random(),
        chunk_size,
        key_check: keys.key_check().to_vec(),
    };
    // The CA first: a database without one could not serve anyone (every connection is
    // TLS), and `init_pki` refuses to replace an existing CA.
    pki::init_pki(state_dir, &cluster.id.to_string())?;
    SqliteStore::create(&tmp, &cluster, Timespec::now())?;
    // Publish atomically and without clobbering: hard_link fails if meta.db appeared.
    std::fs::hard_link(&tmp, &db)
        .with_context(|| format!("publish {} (does it exist already?)", db.display()))?;
    std::fs::remove_file(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
    sync_dir(state_dir)?;
    Ok(cluster.id)
}

/// Adds a new key to the key file at `path` and returns its id: new blocks are sealed with
/// it, blocks sealed with older keys stay readable (the block header names its key id).
/// The file is replaced atomically (temp file 0600, fsync, rename, fsync the directory),
/// so a crash leaves either the old ring or the new one, never a ring without a key.
pub fn rotate_key_file(path: &Path) -> anyhow::Result<u32> {
    let mut keys = KeyRing::load(path)?;
    let id = keys.rotate();
    durable::write_atomic(path, keys.to_file_text().as_bytes(), durable::MODE_PRIVATE)
        .with_context(|| format!("replace {} with the rotated ring", path.display()))?;
    Ok(id)
}

fn refuse_existing_db(state_dir: &Path) -> anyhow::Result<()> {
    let db = state_dir.join(DB_FILE);
    if db.exists() {
        anyhow::bail!(
            "{} already exists: this state directory already holds a cluster; refusing to \
             overwrite it",
            db.display()
        );
    }
    Ok(())
}

fn create_state_dir(state_dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("create state directory {}", state_dir.display()))
}

/// A master serving in the background. Dropping it also stops it (the tasks see the
/// shutdown channel close), but [`RunningMaster::shutdown`] waits for them to finish.
pub struct RunningMaster {
    pub addr: SocketAddr,
    /// The bound address of the metrics endpoint, when `metrics_addr` is set.
    pub metrics_addr: Option<SocketAddr>,
    _metrics: Option<common::metrics::MetricsServer>,
    /// The join endpoint's address, when `join_listen` is configured.
    pub join_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The state directory's lock: released only after every task has stopped.
    _lock: common::dirlock::DirLock,
}

impl RunningMaster {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!(addr = %self.addr, "master stopped");
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = rx.wait_for(|stop| *stop).await;
}

fn check_config(config: &MasterConfig) -> anyhow::Result<()> {
    config
        .policy()
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid replication policy: {e}"))?;
    for (name, value) in [
        ("session_ttl_ms", config.session_ttl_ms),
        ("heartbeat_interval_ms", config.heartbeat_interval_ms),
        ("node_offline_ms", config.node_offline_ms),
    ] {
        if value == 0 {
            anyhow::bail!("{name} must be at least 1");
        }
    }
    Ok(())
}

/// Opens the state directory and starts serving on `config.listen`. Refuses a missing,
/// foreign, corrupt or newer `meta.db` with a one-line error naming the file and the fix.
pub async fn start(config: MasterConfig) -> anyhow::Result<RunningMaster> {
    check_config(&config)?;
    // Before anything is read: a second master on one state directory would commit to the
    // same database and hand out conflicting versions. Offline admin commands (issue,
    // revoke, issue-token, rotate-key) take no lock: they never open meta.db and only append
    // fsynced lines or rename whole files, which the running master re-reads.
    if !config.state_dir.is_dir() {
        anyhow::bail!(
            "metadata database {} does not exist: run `mosaic-master init --state {}` first",
            config.state_dir.join(DB_FILE).display(),
            config.state_dir.display()
        );
    }
    let lock = common::dirlock::DirLock::acquire(&config.state_dir, LOCK_NAME)
        .context("lock the state directory")?;
    tracing::info!(file = %lock.path().display(), "state directory locked");
    let db = config.state_dir.join(DB_FILE);
    let durable = config.durable_commits;
    let setup_config = config.clone();
    let service = tokio::task::spawn_blocking(move || -> anyhow::Result<MasterService> {
        let store = SqliteStore::open(&db, durable)?;
        let cluster = store.cluster().clone();
        tracing::info!(db = %db.display(), cluster = %cluster.id, chunk_size = cluster.chunk_size,
            durable_commits = durable, "metadata database opened");
        if setup_config.chunk_size != cluster.chunk_size {
            // Not a warning: the config's default differs from most clusters' recorded size.
            tracing::debug!(
                configured = setup_config.chunk_size,
                recorded = cluster.chunk_size,
                "chunk_size in the config is not used: it is fixed at init"
            );
        }
        let store: Arc<dyn MetaStore> = Arc::new(store);
        let freed = store.free_orphans().context("free orphaned inodes")?;
        if freed.inodes > 0 {
            tracing::info!(
                inodes = freed.inodes,
                replicas_queued = freed.replicas_queued,
                "orphaned inodes freed"
            );
        }
        let service =
            MasterService::new(store, &setup_config).context("load nodes and sessions")?;
        Ok(service)
    })
    .await
    .context("open the metadata database")??;

    let audit_config = config.audit();
    let audit = common::audit::Audit::open(audit_config.clone(), "master")?;
    tracing::info!(file = %audit_config.path.display(), max_bytes = audit_config.max_bytes,
        keep = audit_config.keep, "audit log opened");
    let service = service.with_audit(audit.clone());

    let credential = match config.shared.credential_paths()? {
        Some(paths) => paths,
        None => pki::master_credentials(&config.state_dir),
    };
    let tls = credential.load()?;
    if tls.identity().role != common::tls::Role::Master {
        anyhow::bail!(
            "the master's certificate is for a {} ({}): give the master credential from \
             STATE/pki/master",
            tls.identity().role,
            tls.identity().name
        );
    }
    let service = service.with_connector(cluster::worker::connector(tls.clone()));
    let revoked = service.revoked().clone();
    let state_dir = config.state_dir.clone();
    reload_revoked(&state_dir, &revoked).await?;
    tracing::info!(identity = %tls.identity(), revoked = revoked.to_vec().len(), "TLS credential loaded");

    let listener = common::rpc::bind(config.listen).await?;
    let addr = listener.local_addr().context("read the bound address")?;
    let policy = config.policy();
    tracing::info!(%addr, n = policy.n, w = policy.w, r = policy.r, "master listening");

    let metrics = metrics::MasterMetrics::new(service.cluster().repair_metrics());
    let rpc_metrics = metrics.rpc.clone();
    let metrics_server = match config.shared.metrics_addr {
        Some(metrics_addr) => {
            let server =
                common::metrics::serve(metrics_addr, scrape(service.clone(), metrics)).await?;
            tracing::info!(addr = %server.addr, "metrics endpoint listening (GET /metrics)");
            Some(server)
        }
        None => None,
    };

    let (stop, stop_rx) = watch::channel(false);
    let repairer = tokio::spawn(cluster::worker::repair_loop(
        service.cluster(),
        cluster::worker::connector(tls.clone()),
        stop_rx.clone(),
    ));
    let confirmer = tokio::spawn(evidence::confirm_loop(
        service.evidence(),
        cluster::worker::connector(tls.clone()),
        stop_rx.clone(),
    ));
    let server = {
        let svc = service.clone();
        let stop_rx = stop_rx.clone();
        let audit = audit.clone();
        tokio::spawn(common::rpc::serve_audited(
            listener,
            tls,
            revoked.clone(),
            audit.clone(),
            move |mut stream, peer| {
                let svc = svc.for_peer(&peer);
                let metrics = Some(rpc_metrics.clone());
                let audit = audit.clone();
                // One listen address, three services: the caller's preamble names the one
                // it wants; each method is then checked against its role (`common::authz`).
                async move {
                    use common::preamble::Service;
                    let served = [
                        Service::MasterFs,
                        Service::MasterNodes,
                        Service::MasterAdmin,
                    ];
                    let accepted =
                        common::rpc::accept_preamble(&mut stream, &peer, &served, &audit).await;
                    match accepted {
                        Some(Service::MasterFs) => {
                            let serve = MasterFs::serve(svc);
                            common::serve_accepted!(stream, peer, serve, metrics, audit).await
                        }
                        Some(Service::MasterNodes) => {
                            let serve = MasterNodes::serve(svc);
                            common::serve_accepted!(stream, peer, serve, metrics, audit).await
                        }
                        Some(Service::MasterAdmin) => {
                            let serve = MasterAdmin::serve(svc);
                            common::serve_accepted!(stream, peer, serve, metrics, audit).await
                        }
                        // Refused (logged and audited), or a service this listener never
                        // offered.
                        Some(Service::ChunkServer) | None => {}
                    }
                }
            },
            stopped(stop_rx),
        ))
    };
    let poller = {
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let stop = stopped(stop_rx);
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(pki::REVOCATION_POLL) => {
                        if let Err(e) = reload_revoked(&state_dir, &revoked).await {
                            // Keep the last good list: a half-written file must not
                            // un-revoke anyone.
                            tracing::error!(error = %format!("{e:#}"), "revocation list not reloaded");
                        }
                    }
                }
            }
        })
    };
    let mut tasks = vec![server, poller, repairer, confirmer];
    let mut join_addr = None;
    if let Some(join_listen) = config.join_listen {
        let acceptor = credential.join_acceptor()?;
        let listener = common::rpc::bind(join_listen).await?;
        let bound = listener
            .local_addr()
            .context("read the join endpoint's address")?;
        tracing::info!(addr = %bound, "join endpoint listening");
        join_addr = Some(bound);
        tasks.push(tokio::spawn(tokens::serve_join(
            listener,
            acceptor,
            tokens::Redeemer::new(config.state_dir.clone(), audit.clone()),
            stopped(stop_rx.clone()),
        )));
    }
    let period = (Duration::from_millis(config.session_ttl_ms) / 4)
        .clamp(REAPER_MIN_PERIOD, REAPER_MAX_PERIOD);
    let reaper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = stopped(stop_rx);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => service.reap_expired_sessions().await,
            }
        }
    });
    tasks.push(reaper);
    Ok(RunningMaster {
        addr,
        metrics_addr: metrics_server.as_ref().map(|m| m.addr),
        _metrics: metrics_server,
        join_addr,
        stop,
        tasks,
        _lock: lock,
    })
}

/// The metrics endpoint's render: the persistent metrics plus a snapshot of the cluster
/// summary, taken at each scrape. A summary that fails (database error) leaves the scrape
/// with the persistent metrics only; the failure is logged by the service.
fn scrape(service: MasterService, metrics: metrics::MasterMetrics) -> common::metrics::Render {
    let metrics = Arc::new(metrics);
    Arc::new(move || {
        let service = service.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            let ctx = common::rpc::ctx(Duration::from_secs(30));
            match service.cluster_summary(ctx).await {
                Ok(summary) => {
                    let snapshot = metrics::summary_snapshot(&summary);
                    common::metrics::encode(&[&metrics.registry, snapshot.registry()])
                }
                Err(_) => common::metrics::encode(&[&metrics.registry]),
            }
        })
    })
}

/// Re-reads `STATE/pki/revoked` into `revoked`, logging what changed.
async fn reload_revoked(state_dir: &Path, revoked: &common::tls::Revoked) -> anyhow::Result<()> {
    let dir = state_dir.to_owned();
    let serials = tokio::task::spawn_blocking(move || pki::revoked_serials(&dir))
        .await
        .context("read the revocation list")??;
    let count = serials.len();
    if revoked.replace(serials) {
        tracing::info!(revoked = count, "revocation list loaded");
    }
    Ok(())
}

/// Serves until `shutdown` resolves, then stops cleanly.
pub async fn run(config: MasterConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let master = start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    master.shutdown().await;
    Ok(())
}

/// Writes `addr` to `path` atomically ([`durable::write_atomic`]), so a reader never sees a
/// partial address: scripts and tests poll this file as the readiness signal.
pub fn write_addr_file(path: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    durable::write_atomic(path, addr.to_string().as_bytes(), durable::MODE_DEFAULT)
        .with_context(|| format!("write address file {}", path.display()))
}

#[cfg(test)]
mod tests;
