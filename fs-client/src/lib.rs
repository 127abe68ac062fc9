//! `mosaic-mount`: the MosaicFS FUSE client.
//!
//! `core` holds the logic as plain async methods (tested without a kernel); `fuse` is the thin
//! adapter; `meta` and `data` are the connections to the master and the chunkservers; `cli`
//! parses the command line (including the `mount -t fuse.mosaic` helper form); `reencrypt` is
//! the key-rotation pass (`mosaic-mount reencrypt`).

pub mod cli;
pub mod core;
pub mod data;
pub mod fuse;
pub mod meta;
pub mod metrics;
pub mod reencrypt;

use anyhow::{Context as _, bail};
use common::FsError;
use common::block::KeyRing;
use common::config::MountConfig;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use crate::core::{ClientCore, CoreConfig};

/// Connects to the cluster: loads the key, says hello, checks the key against the cluster.
pub async fn connect(config: &MountConfig) -> anyhow::Result<Arc<ClientCore>> {
    let keys = KeyRing::load(&config.key_file)?;
    let tls = config.shared.load_tls("mosaic-mount")?;
    if tls.identity().role != common::tls::Role::Client {
        bail!(
            "the credential given to mosaic-mount is a {} certificate ({}): issue one with \
             `mosaic-master issue client NAME`",
            tls.identity().role,
            tls.identity().name
        );
    }
    let rpc_timeout = Duration::from_millis(config.rpc_timeout_ms);
    let retry_window = Duration::from_millis(config.retry_window_ms);
    let meta: Arc<dyn meta::Metadata> = Arc::new(meta::MetaConn::new(
        config.master.clone(),
        tls.clone(),
        rpc_timeout,
        retry_window,
    ));
    let data: Arc<dyn data::DataPlane> = Arc::new(data::RpcDataPlane::new(tls, rpc_timeout));
    let core_config = CoreConfig {
        rpc_timeout,
        retry_window,
        flush_threshold: config
            .flush_threshold_bytes
            .max(common::block::BLOCK_SIZE as u64),
        write_timeout: Duration::from_millis(config.write_timeout_ms.max(1)),
        hedge_delay: Duration::from_millis(config.hedge_delay_ms),
    };
    let name = format!("mosaic-mount pid {}", std::process::id());
    match ClientCore::connect(meta, data, keys, core_config, name).await {
        Ok(core) => Ok(core),
        Err(FsError::WrongCluster(why)) => bail!(
            "refusing to mount: key file {} does not belong to the cluster at {}: {why}; use the data key made by `mosaic-master init` for this cluster",
            config.key_file.display(),
            config.master
        ),
        Err(e) => bail!("cannot reach the master at {}: {e}", config.master),
    }
}

/// Mounts and serves until unmounted (fusermount3 -u, umount, or SIGINT/SIGTERM).
/// `ready` is called once the mount is live. With `config.shared.metrics_addr`, the metrics
/// endpoint's bound address is written to `metrics_addr_file` (when given) before mounting.
pub fn mount(
    config: MountConfig,
    mountpoint: &Path,
    metrics_addr_file: Option<&Path>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mosaic-client")
        .build()
        .context("start the async runtime")?;
    let core = runtime.block_on(connect(&config))?;
    let _metrics = match config.shared.metrics_addr {
        Some(addr) => {
            let server = runtime.block_on(common::metrics::serve(addr, core.metrics().render()))?;
            tracing::info!(addr = %server.addr, "metrics endpoint listening (GET /metrics)");
            if let Some(path) = metrics_addr_file {
                write_file_atomically(path, &format!("{}\n", server.addr))
                    .with_context(|| format!("write metrics addr file {}", path.display()))?;
            }
            Some(server)
        }
        None => None,
    };
    let _keepalive = {
        let _in_runtime = runtime.enter();
        crate::core::spawn_keepalive(&core)
    };
    let ttl = Duration::from_millis(config.attr_timeout_ms);
    let fs =
        fuse::MosaicFs::new(core, runtime.handle().clone(), ttl).with_direct_io(config.direct_io);
    let notifier_slot = fs.notifier_slot();

    let is_root = effective_uid_is_root();
    let mut options = vec![
        fuser::MountOption::FSName(format!("mosaic@{}", config.master)),
        fuser::MountOption::Subtype("mosaic".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    let acl = if config.allow_other {
        fuser::SessionACL::All
    } else if is_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    // A killed client must not leave a dead mount behind; fusermount3 can only watch for
    // that when the mount allows other users (or we are root).
    if acl != fuser::SessionACL::Owner {
        options.push(fuser::MountOption::AutoUnmount);
    }
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = options;
    fuse_config.acl = acl;
    let session = fuser::Session::new(fs, mountpoint, &fuse_config)
        .with_context(|| format!("mount at {}", mountpoint.display()))?;
    let _ = notifier_slot.set(session.notifier());
    let mountpoint_owned = mountpoint.to_path_buf();
    runtime.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers; unmount with fusermount3 -u");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received; unmounting");
        unmount(&mountpoint_owned).await;
    });
    tracing::info!(mountpoint = %mountpoint.display(), master = %config.master, "mounted");
    ready();
    session.run().context("serve the FUSE session")?;
    tracing::info!("unmounted");
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Unmounts through fusermount3, as `fusermount3 -u` from a shell would: the kernel then
/// ends the FUSE session and `Session::run` returns. (fuser's own unmount with auto_unmount
/// only closes the socket of fusermount3's watcher, which does not unmount while we run.)
/// A busy mount is detached lazily: a stop request must not be refused.
async fn unmount(mountpoint: &Path) {
    for args in [["-u", "--"].as_slice(), ["-u", "-z", "--"].as_slice()] {
        match tokio::process::Command::new("fusermount3")
            .args(args)
            .arg(mountpoint)
            .status()
            .await
        {
            Ok(status) if status.success() => return,
            Ok(status) => tracing::warn!(?args, %status, "fusermount3 failed"),
            Err(e) => tracing::warn!(error = %e, "cannot run fusermount3"),
        }
    }
}

fn effective_uid_is_root() -> bool {
    // /proc/self/status has the effective uid as the second field of the Uid: line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Writes `text` to `path` through a temp file and a rename, so a reader never sees a
/// half-written file.
fn write_file_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
