//! [`TestCluster`]: a master and N chunkservers as child processes on loopback, in a temp dir.
//!
//! Layout of the temp dir (kept after the test when `MOSAIC_KEEP_TMP=1`):
//! ```text
//! state/            the master's state dir (meta.db, data.key, pki/)
//! creds/<name>/     TLS credentials issued for the test: cs<i>, client, sentinel
//! cs<i>/            chunkserver i's data dir
//! logs/<name>.log   stdout+stderr of every child, appended across restarts
//! *.addr            address files the daemons write when ready
//! mnt-<k>/          mountpoints
//! ```
//! Restarts reuse the previous listening address, as a real daemon restarted on its host
//! would, so clients and chunkservers find a restarted master where they left it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::types::{ClusterSummary, NodeReplica};
use common::{ChunkId, FsError, FsResult, NodeId};
use tempfile::TempDir;

use crate::bins::{self, bin};
use crate::mount::{Mount, MountFailed, MountOptions};
use crate::process::Daemon;
use crate::shell::{CmdOutput, run, try_run};
use crate::wait::{POLL_INTERVAL, log_tail, wait_for};

/// How long a daemon may take to write its address file: a master opens SQLite, a
/// chunkserver scans its data dir and registers. Seconds normally; generous for CI.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline of one RPC the harness makes.
pub const RPC_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline of `mosaic-master init` and `mosaic-sentinel status`.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);

/// What cluster to start.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of chunkservers. Default 3.
    pub chunkservers: usize,
    /// Replicas per chunk (N); default min(3, chunkservers).
    pub replicas: Option<u32>,
    /// Write quorum (W); default a majority of N.
    pub write_quorum: Option<u32>,
    /// Read quorum (R); default N + 1 - W.
    pub read_quorum: Option<u32>,
    /// Chunk size fixed at `init`. Default [`crate::TEST_CHUNK_SIZE`] (1 MiB).
    pub chunk_size: u64,
    /// `--capacity` of every chunkserver; default: the disk's free space.
    pub capacity_bytes: Option<u64>,
    /// `--scrub-rate` and `--scrub-period-ms` of every chunkserver; default: the daemon's.
    pub scrub: Option<(u64, u64)>,
    /// Serve Prometheus metrics on loopback (a free port each) from the master and every
    /// chunkserver; [`TestCluster::master_metrics_addr`] and
    /// [`TestCluster::chunkserver_metrics_addr`] say where. Default false.
    pub metrics: bool,
    /// More flags for `mosaic-master run` (e.g. `--dead-quorum 2`).
    pub master_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            chunkservers: 3,
            replicas: None,
            write_quorum: None,
            read_quorum: None,
            chunk_size: crate::TEST_CHUNK_SIZE,
            capacity_bytes: None,
            scrub: None,
            metrics: false,
            master_args: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// N, W, R: by default a majority writes and W + R = N + 1 (3/2/2 with 3 nodes), as the
    /// master's own defaults.
    fn policy(&self) -> (u32, u32, u32) {
        let n = self
            .replicas
            .unwrap_or_else(|| self.chunkservers.clamp(1, 3) as u32);
        let w = self.write_quorum.unwrap_or(n / 2 + 1);
        (n, w, self.read_quorum.unwrap_or(n + 1 - w))
    }
}

struct Node {
    daemon: Daemon,
    data_dir: PathBuf,
    addr_file: PathBuf,
    addr: SocketAddr,
}

/// A running cluster. Dropping it kills and reaps every daemon.
pub struct TestCluster {
    root: Arc<TempDir>,
    opts: ClusterOptions,
    state_dir: PathBuf,
    key_file: PathBuf,
    master: Daemon,
    master_addr: SocketAddr,
    master_addr_file: PathBuf,
    nodes: Vec<Node>,
    next_mount: usize,
    /// `mosaic-sentinel run` daemons started by [`TestCluster::start_sentinel`].
    sentinels: Vec<Daemon>,
}

/// Runs `fut` to completion on a fresh single-threaded tokio runtime in a helper thread, so
/// that it works from plain tests and from inside another runtime alike.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a tokio runtime")
                .block_on(fut)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Waits for `daemon` to write a socket address to `file`; panics with its log if it exits
/// first or misses the deadline.
fn wait_addr(daemon: &mut Daemon, file: &Path) -> SocketAddr {
    let start = Instant::now();
    loop {
        // The file may be seen half-written: only a complete address parses.
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(addr) = text.trim().parse::<SocketAddr>()
        {
            return addr;
        }
        if let Some(status) = daemon.exited() {
            panic!(
                "{} exited ({status}) before writing its address to {}\n--- tail of {} ---\n{}",
                daemon.name(),
                file.display(),
                daemon.log().display(),
                log_tail(daemon.log())
            );
        }
        if start.elapsed() >= START_DEADLINE {
            panic!(
                "timed out after {START_DEADLINE:?} waiting for {} to write its address to {}\n--- tail of {} ---\n{}",
                daemon.name(),
                file.display(),
                daemon.log().display(),
                log_tail(daemon.log())
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

impl TestCluster {
    /// Initializes and starts a cluster; returns once the master and every chunkserver have
    /// written their address files (the chunkservers are registered and serving).
    pub fn start(opts: ClusterOptions) -> TestCluster {
        let keep = std::env::var("MOSAIC_KEEP_TMP").is_ok_and(|v| v == "1");
        let root = tempfile::Builder::new()
            .prefix("mosaic-test-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("create the cluster temp dir");
        if keep {
            eprintln!(
                "MOSAIC_KEEP_TMP=1: cluster files stay in {}",
                root.path().display()
            );
        }
        let state_dir = root.path().join("state");
        std::fs::create_dir_all(root.path().join("logs")).expect("create logs dir");
        let key_file = state_dir.join("data.key");

        let mut init = Command::new(bin(bins::MASTER));
        init.arg("init")
            .arg("--state")
            .arg(&state_dir)
            .arg("--chunk-size")
            .arg(opts.chunk_size.to_string());
        let out = run(init, TOOL_DEADLINE);
        assert!(
            out.status.success(),
            "mosaic-master init failed ({}):\n{}{}",
            out.status,
            out.stdout_text(),
            out.stderr_text()
        );
        assert!(
            key_file.is_file(),
            "mosaic-master init made no key file at {}",
            key_file.display()
        );

        for (role, name) in [("client", CLIENT), ("sentinel", SENTINEL)] {
            issue_credential(root.path(), &state_dir, role, name);
        }
        for i in 0..opts.chunkservers {
            issue_credential(root.path(), &state_dir, "chunkserver", &format!("cs{i}"));
        }

        let master_addr_file = root.path().join("master.addr");
        let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut master = spawn_master(root.path(), &state_dir, &master_addr_file, listen, &opts);
        let master_addr = wait_addr(&mut master, &master_addr_file);

        let mut cluster = TestCluster {
            root: Arc::new(root),
            opts,
            state_dir,
            key_file,
            master,
            master_addr,
            master_addr_file,
            nodes: Vec::new(),
            next_mount: 0,
            sentinels: Vec::new(),
        };
        // Start every chunkserver before waiting for any: they register in parallel.
        let mut pending = Vec::new();
        for i in 0..cluster.opts.chunkservers {
            let data_dir = cluster.root.path().join(format!("cs{i}"));
            std::fs::create_dir_all(&data_dir).expect("create chunkserver data dir");
            let addr_file = cluster.root.path().join(format!("cs{i}.addr"));
            let daemon = cluster.spawn_chunkserver(i, &data_dir, &addr_file, listen);
            pending.push((daemon, data_dir, addr_file));
        }
        for (mut daemon, data_dir, addr_file) in pending {
            let addr = wait_addr(&mut daemon, &addr_file);
            cluster.nodes.push(Node {
                daemon,
                data_dir,
                addr_file,
                addr,
            });
        }
        cluster
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.root.path().join("logs").join(format!("{name}.log"))
    }

    fn spawn_chunkserver(
        &self,
        i: usize,
        data_dir: &Path,
        addr_file: &Path,
        listen: SocketAddr,
    ) -> Daemon {
        let _ = std::fs::remove_file(addr_file);
        let mut cmd = Command::new(bin(bins::CHUNKSERVER));
        cmd.arg("--master")
            .arg(self.master_addr.to_string())
            .arg("--data")
            .arg(data_dir)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--addr-file")
            .arg(addr_file)
            .arg("--credentials")
            .arg(self.credentials(&format!("cs{i}")));
        if let Some(capacity) = self.opts.capacity_bytes {
            cmd.arg("--capacity").arg(capacity.to_string());
        }
        if self.opts.metrics {
            let file = self.root.path().join(format!("cs{i}.metrics.addr"));
            let _ = std::fs::remove_file(&file);
            cmd.arg("--metrics-addr")
                .arg("127.0.0.1:0")
                .arg("--metrics-addr-file")
                .arg(file);
        }
        if let Some((rate, period_ms)) = self.opts.scrub {
            cmd.arg("--scrub-rate")
                .arg(rate.to_string())
                .arg("--scrub-period-ms")
                .arg(period_ms.to_string());
        }
        Daemon::spawn(
            &format!("mosaic-chunkserver {i}"),
            cmd,
            &self.log_path(&format!("chunkserver-{i}")),
        )
    }

    /// The master's join endpoint (one-time tokens), written by the master once listening.
    pub fn join_addr(&self) -> String {
        let path = self.root.path().join(JOIN_ADDR_FILE);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read the join address {}: {e}", path.display()))
    }

    /// The master's audit log (the default, `STATE/audit.log`).
    pub fn audit_log(&self) -> PathBuf {
        self.state_dir.join(common::audit::AUDIT_FILE)
    }

    /// The credential directory issued to `name` (`cs<i>`, `client`, `sentinel` or one made
    /// by [`Self::issue`]).
    pub fn credentials(&self, name: &str) -> PathBuf {
        self.root.path().join("creds").join(name)
    }

    /// Issues a new credential with `mosaic-master issue ROLE NAME`; returns its directory.
    pub fn issue(&self, role: &str, name: &str) -> PathBuf {
        issue_credential(self.root.path(), &self.state_dir, role, name)
    }

    /// Runs `mosaic-master revoke NAME`; the running master picks it up within about a
    /// second (it polls the revocation file): callers wait for the effect with a deadline.
    pub fn revoke(&self, name: &str) {
        let mut cmd = Command::new(bin(bins::MASTER));
        cmd.arg("revoke")
            .arg(name)
            .arg("--state")
            .arg(&self.state_dir);
        let out = run(cmd, TOOL_DEADLINE);
        assert!(
            out.status.success(),
            "mosaic-master revoke {name} failed ({}):\n{}{}",
            out.status,
            out.stdout_text(),
            out.stderr_text()
        );
    }

    /// The harness's own client credential, loaded (for RPCs the tests make).
    pub fn client_tls(&self) -> common::tls::Tls {
        common::tls::CredentialPaths::in_dir(&self.credentials(CLIENT))
            .load()
            .unwrap_or_else(|e| panic!("load the test client credential: {e:#}"))
    }

    /// The temp dir holding everything of this cluster.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The master's address, `127.0.0.1:PORT`.
    pub fn master_addr(&self) -> String {
        self.master_addr.to_string()
    }

    /// The cluster's data key file (made by `mosaic-master init`).
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The master's state dir (meta.db).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The running master's pid (what a refused second master names as the holder).
    pub fn master_pid(&self) -> Option<i32> {
        self.master.pid()
    }

    /// Chunkserver `i`'s pid while it runs.
    pub fn chunkserver_pid(&self, i: usize) -> Option<i32> {
        self.nodes[i].daemon.pid()
    }

    pub fn master_log(&self) -> PathBuf {
        self.log_path("master")
    }

    pub fn chunkserver_count(&self) -> usize {
        self.nodes.len()
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes
            .get(i)
            .unwrap_or_else(|| panic!("no chunkserver {i}: the cluster has {}", self.nodes.len()))
    }

    fn node_mut(&mut self, i: usize) -> &mut Node {
        let count = self.nodes.len();
        self.nodes
            .get_mut(i)
            .unwrap_or_else(|| panic!("no chunkserver {i}: the cluster has {count}"))
    }

    /// Chunkserver `i`'s address, `127.0.0.1:PORT`.
    pub fn chunkserver_addr(&self, i: usize) -> String {
        self.node(i).addr.to_string()
    }

    /// Chunkserver `i`'s data dir.
    pub fn chunkserver_data_dir(&self, i: usize) -> &Path {
        &self.node(i).data_dir
    }

    pub fn chunkserver_log(&self, i: usize) -> PathBuf {
        self.node(i).daemon.log().to_path_buf()
    }

    /// Whether chunkserver `i`'s process is alive (running or paused).
    pub fn chunkserver_running(&mut self, i: usize) -> bool {
        self.node_mut(i).daemon.is_running()
    }

    /// SIGKILL chunkserver `i` (a crash) and reap it.
    pub fn kill_chunkserver(&mut self, i: usize) {
        self.node_mut(i).daemon.kill();
    }

    /// SIGTERM chunkserver `i` (a graceful stop) and wait for it to exit; panics if it does
    /// not exit within the grace period. Returns its exit status.
    pub fn stop_chunkserver(&mut self, i: usize) -> ExitStatus {
        let daemon = &mut self.node_mut(i).daemon;
        let (status, clean) = daemon.terminate();
        if !clean {
            panic!(
                "{} did not exit within {:?} of SIGTERM (killed)\n--- tail of {} ---\n{}",
                daemon.name(),
                crate::process::TERM_GRACE,
                daemon.log().display(),
                log_tail(daemon.log())
            );
        }
        status.expect("a reaped child has a status")
    }

    /// SIGSTOP chunkserver `i`: it keeps its sockets but answers nothing.
    pub fn pause_chunkserver(&mut self, i: usize) {
        self.node_mut(i).daemon.signal(libc::SIGSTOP);
    }

    /// SIGCONT a paused chunkserver.
    pub fn resume_chunkserver(&mut self, i: usize) {
        self.node_mut(i).daemon.signal(libc::SIGCONT);
    }

    /// Starts chunkserver `i` again on its data dir and address (stopping it with SIGTERM
    /// first if it still runs); returns once it is registered and serving.
    pub fn restart_chunkserver(&mut self, i: usize) {
        if self.chunkserver_running(i) {
            self.stop_chunkserver(i);
        }
        let (data_dir, addr_file, addr) = {
            let node = self.node(i);
            (node.data_dir.clone(), node.addr_file.clone(), node.addr)
        };
        let mut daemon = self.spawn_chunkserver(i, &data_dir, &addr_file, addr);
        let new_addr = wait_addr(&mut daemon, &addr_file);
        let node = self.node_mut(i);
        node.daemon = daemon;
        node.addr = new_addr;
    }

    /// SIGKILL the master (a crash) and reap it.
    pub fn kill_master(&mut self) {
        self.master.kill();
    }

    /// SIGTERM the master and wait for it to exit; panics if it does not.
    pub fn stop_master(&mut self) -> ExitStatus {
        let (status, clean) = self.master.terminate();
        if !clean {
            panic!(
                "mosaic-master did not exit within {:?} of SIGTERM (killed)\n--- tail of {} ---\n{}",
                crate::process::TERM_GRACE,
                self.master.log().display(),
                log_tail(self.master.log())
            );
        }
        status.expect("a reaped child has a status")
    }

    /// SIGSTOP the master.
    pub fn pause_master(&mut self) {
        self.master.signal(libc::SIGSTOP);
    }

    /// SIGCONT the master.
    pub fn resume_master(&mut self) {
        self.master.signal(libc::SIGCONT);
    }

    /// Starts the master again on its state dir and previous address (stopping it with
    /// SIGTERM first if it still runs); returns once it listens.
    pub fn restart_master(&mut self) {
        if self.master.is_running() {
            self.stop_master();
        }
        let mut master = spawn_master(
            self.root.path(),
            &self.state_dir,
            &self.master_addr_file,
            self.master_addr,
            &self.opts,
        );
        let addr = wait_addr(&mut master, &self.master_addr_file);
        assert_eq!(
            addr, self.master_addr,
            "the restarted master must listen where it did before"
        );
        self.master = master;
    }

    /// Paths of chunk files (`*.chunk`) under chunkserver `i`'s data dir, sorted.
    pub fn chunk_files(&self, i: usize) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = files_under(&self.node(i).data_dir.join("chunks"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "chunk"))
            .collect();
        files.sort();
        files
    }

    /// Every regular file under chunkserver `i`'s data dir, sorted.
    pub fn data_files(&self, i: usize) -> Vec<PathBuf> {
        let mut files = files_under(&self.node(i).data_dir);
        files.sort();
        files
    }

    /// Mounts the filesystem with a new `mosaic-mount` process; panics (with the client's
    /// log) if it does not mount.
    pub fn mount(&mut self, opts: MountOptions) -> Mount {
        match self.try_mount(opts) {
            Ok(mount) => mount,
            Err(failed) => panic!(
                "mosaic-mount exited ({:?}) without mounting; its log:\n{}",
                failed.status, failed.log
            ),
        }
    }

    /// Tries to mount; `Err` when the client exits without mounting (e.g. a wrong key).
    pub fn try_mount(&mut self, opts: MountOptions) -> Result<Mount, MountFailed> {
        let k = self.next_mount;
        self.next_mount += 1;
        let path = self.root.path().join(format!("mnt-{k}"));
        let key_file = opts
            .key_file
            .clone()
            .unwrap_or_else(|| self.key_file.clone());
        let log = self.log_path(&format!("mount-{k}"));
        let credentials = opts
            .credentials
            .clone()
            .unwrap_or_else(|| self.credentials(CLIENT));
        Mount::start(
            Arc::clone(&self.root),
            path,
            &self.master_addr(),
            &key_file,
            &credentials,
            &opts,
            &log,
        )
    }

    /// Runs `mosaic-sentinel status --master ADDR --json` and parses its output. The exit
    /// status is not judged (it is non-zero when the cluster is degraded).
    pub fn try_sentinel_status(&self) -> Result<serde_json::Value, String> {
        let mut cmd = Command::new(bin(bins::SENTINEL));
        cmd.arg("status")
            .arg("--master")
            .arg(self.master_addr())
            .arg("--credentials")
            .arg(self.credentials(SENTINEL))
            .arg("--json");
        let out: CmdOutput = try_run(cmd, TOOL_DEADLINE)?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "mosaic-sentinel status --json printed no JSON ({e}; exit {}):\nstdout:\n{}\nstderr:\n{}",
                out.status,
                out.stdout_text(),
                out.stderr_text()
            )
        })
    }

    /// [`Self::try_sentinel_status`], panicking on failure.
    pub fn sentinel_status(&self) -> serde_json::Value {
        self.try_sentinel_status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Where the master serves metrics (the cluster must have been started with
    /// [`ClusterOptions::metrics`]); the file is written before the master's address file.
    pub fn master_metrics_addr(&self) -> SocketAddr {
        read_metrics_addr(&self.root.path().join("master.metrics.addr"))
    }

    /// Where chunkserver `i` serves metrics (see [`Self::master_metrics_addr`]).
    pub fn chunkserver_metrics_addr(&self, i: usize) -> SocketAddr {
        read_metrics_addr(&self.root.path().join(format!("cs{i}.metrics.addr")))
    }

    /// Starts `mosaic-sentinel run` against this cluster with its metrics endpoint on a free
    /// loopback port; returns once the endpoint listens and the master has answered. The
    /// process is killed when the returned handle drops.
    pub fn start_sentinel_with_metrics(&self, probe_interval_ms: u64) -> SentinelProcess {
        let name = format!("sentinel-{}", self.next_mount);
        let file = self.root.path().join(format!("{name}.metrics.addr"));
        let ready = self.root.path().join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(bin(bins::SENTINEL));
        cmd.arg("run")
            .arg("--master")
            .arg(self.master_addr())
            .arg("--credentials")
            .arg(self.credentials(SENTINEL))
            .arg("--probe-interval-ms")
            .arg(probe_interval_ms.to_string())
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .arg("--metrics-addr-file")
            .arg(&file)
            .arg("--addr-file")
            .arg(&ready);
        let mut daemon = Daemon::spawn("mosaic-sentinel", cmd, &self.log_path(&name));
        // The sentinel writes the master's address once it answered, after the endpoint
        // file: both are there when this returns.
        wait_addr(&mut daemon, &ready);
        let metrics_addr = read_metrics_addr(&file);
        SentinelProcess {
            _daemon: daemon,
            metrics_addr,
        }
    }

    /// Runs `mosaic-sentinel status --node NODE --files --json` and parses its output;
    /// `Err` with the output when it fails or prints no JSON.
    pub fn try_sentinel_node_files(&self, node: &str) -> Result<serde_json::Value, String> {
        let mut cmd = Command::new(bin(bins::SENTINEL));
        cmd.arg("status")
            .arg("--master")
            .arg(self.master_addr())
            .arg("--credentials")
            .arg(self.credentials(SENTINEL))
            .arg("--node")
            .arg(node)
            .arg("--files")
            .arg("--json");
        let out: CmdOutput = try_run(cmd, TOOL_DEADLINE)?;
        if !out.status.success() {
            return Err(format!(
                "mosaic-sentinel status --node {node} --files exited {}:\n{}{}",
                out.status,
                out.stdout_text(),
                out.stderr_text()
            ));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("no JSON ({e}):\n{}", out.stdout_text()))
    }

    /// The master's cluster summary over RPC.
    pub fn master_summary(&self) -> FsResult<ClusterSummary> {
        let addr = self.master_addr();
        let tls = self.client_tls();
        block_on(async move {
            let client = common::rpc::connect_master_admin(&addr, &tls, RPC_DEADLINE).await?;
            client
                .cluster_summary(common::rpc::ctx(RPC_DEADLINE))
                .await
                .map_err(FsError::from)?
        })
    }

    /// Waits until the master counts no chunk below its goal. With acknowledgement at W a
    /// write or fsync returns before the last replica holds its copy; a test that looks at
    /// every chunkserver's disk must wait for that copy.
    pub fn wait_fully_replicated(&self, deadline: Duration) {
        crate::wait::wait_until(deadline, "every chunk at its replication goal", || {
            self.master_summary()
                .map(|s| s.under_replicated == 0)
                .unwrap_or(false)
        });
    }

    /// Starts `mosaic-sentinel run` with a new sentinel credential `name` and `extra` flags
    /// (e.g. `--probe-interval-ms`, `--probe-addr n2=127.0.0.1:1`); returns once it reached
    /// the master. It is stopped with the cluster.
    pub fn start_sentinel(&mut self, name: &str, extra: &[&str]) {
        let creds = self.issue("sentinel", name);
        let addr_file = self.root.path().join(format!("sentinel-{name}.ready"));
        let mut cmd = Command::new(bin(bins::SENTINEL));
        cmd.arg("run")
            .arg("--master")
            .arg(self.master_addr())
            .arg("--credentials")
            .arg(creds)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(extra);
        let mut daemon = Daemon::spawn(
            &format!("mosaic-sentinel {name}"),
            cmd,
            &self.log_path(&format!("sentinel-{name}")),
        );
        wait_addr(&mut daemon, &addr_file);
        self.sentinels.push(daemon);
    }

    /// The log of the sentinel started as `name`.
    pub fn sentinel_log(&self, name: &str) -> PathBuf {
        self.log_path(&format!("sentinel-{name}"))
    }

    /// The node id the master gave chunkserver `i` (found by its address).
    pub fn chunkserver_node(&self, i: usize) -> NodeId {
        let addr = self.chunkserver_addr(i);
        let summary = self
            .master_summary()
            .unwrap_or_else(|e| panic!("cluster summary: {e}"));
        summary
            .nodes
            .iter()
            .find(|n| n.addr == addr)
            .map(|n| n.node)
            .unwrap_or_else(|| panic!("no node with address {addr} in {:?}", summary.nodes))
    }

    /// Every replica the master records on `node` (all pages of `node_contents`).
    pub fn node_contents(&self, node: NodeId) -> FsResult<Vec<NodeReplica>> {
        let addr = self.master_addr();
        let tls = self.client_tls();
        block_on(async move {
            let client = common::rpc::connect_master_admin(&addr, &tls, RPC_DEADLINE).await?;
            let mut out: Vec<NodeReplica> = Vec::new();
            loop {
                let after = out.last().map_or(ChunkId(0), |r| r.chunk);
                let page = client
                    .node_contents(common::rpc::ctx(RPC_DEADLINE), node, after, 10_000)
                    .await
                    .map_err(FsError::from)??;
                let last = page.len() < 10_000;
                out.extend(page);
                if last {
                    return Ok(out);
                }
            }
        })
    }

    /// Waits until the master sees every chunkserver online (after restarts).
    pub fn wait_all_nodes_online(&self, deadline: Duration) -> ClusterSummary {
        let want = self.nodes.len();
        let log = self.master_log();
        let what = format!("the master to see all {want} chunkservers online");
        wait_for(deadline, &what, Some(&log), || {
            self.master_summary()
                .ok()
                .filter(|s| s.nodes.iter().filter(|n| n.online).count() >= want)
        })
    }

    /// Runs `mosaic-sentinel drain NODE` (or `undrain` when `drain` is false); returns its
    /// output, `Err` with the output when it fails.
    pub fn sentinel_drain(&self, node: NodeId, drain: bool) -> Result<String, String> {
        let mut cmd = Command::new(bin(bins::SENTINEL));
        cmd.arg(if drain { "drain" } else { "undrain" })
            .arg(node.to_string())
            .arg("--master")
            .arg(self.master_addr())
            .arg("--credentials")
            .arg(self.credentials(SENTINEL));
        let out: CmdOutput = try_run(cmd, TOOL_DEADLINE)?;
        if !out.status.success() {
            return Err(format!(
                "mosaic-sentinel drain exited {}:\n{}{}",
                out.status,
                out.stdout_text(),
                out.stderr_text()
            ));
        }
        Ok(out.stdout_text())
    }

    /// Runs `mosaic-sentinel ARGS... --master ADDR --credentials SENTINEL` (an admin
    /// command: `forget n3`, `status`); returns its stdout, `Err` with its output when it
    /// exits non-zero.
    pub fn sentinel_admin(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(bin(bins::SENTINEL));
        cmd.args(args)
            .arg("--master")
            .arg(self.master_addr())
            .arg("--credentials")
            .arg(self.credentials(SENTINEL));
        let out: CmdOutput = try_run(cmd, TOOL_DEADLINE)?;
        if !out.status.success() {
            return Err(format!(
                "mosaic-sentinel {args:?} exited {}:\n{}{}",
                out.status,
                out.stdout_text(),
                out.stderr_text()
            ));
        }
        Ok(out.stdout_text())
    }
}

/// A `mosaic-sentinel run` process ([`TestCluster::start_sentinel_with_metrics`]); killed
/// on drop.
pub struct SentinelProcess {
    _daemon: Daemon,
    /// Where its metrics endpoint listens.
    pub metrics_addr: SocketAddr,
}

/// Name of the client credential every harness mount and RPC uses.
const CLIENT: &str = "client";
/// Name of the sentinel credential `sentinel status` uses.
const SENTINEL: &str = "sentinel";

/// `mosaic-master issue ROLE NAME --state STATE --out ROOT/creds/NAME`; panics on failure.
fn issue_credential(root: &Path, state_dir: &Path, role: &str, name: &str) -> PathBuf {
    let out_dir = root.join("creds").join(name);
    let mut cmd = Command::new(bin(bins::MASTER));
    cmd.arg("issue")
        .arg(role)
        .arg(name)
        .arg("--state")
        .arg(state_dir)
        .arg("--out")
        .arg(&out_dir);
    let out = run(cmd, TOOL_DEADLINE);
    assert!(
        out.status.success(),
        "mosaic-master issue {role} {name} failed ({}):\n{}{}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    out_dir
}

/// Where the master announces its join endpoint (inside the cluster's temp dir).
const JOIN_ADDR_FILE: &str = "join.addr";

fn spawn_master(
    root: &Path,
    state_dir: &Path,
    addr_file: &Path,
    listen: SocketAddr,
    opts: &ClusterOptions,
) -> Daemon {
    let _ = std::fs::remove_file(addr_file);
    let (n, w, r) = opts.policy();
    let mut cmd = Command::new(bin(bins::MASTER));
    cmd.arg("run")
        .arg("--state")
        .arg(state_dir)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--addr-file")
        .arg(addr_file)
        .arg("--replicas")
        .arg(n.to_string())
        .arg("--write-quorum")
        .arg(w.to_string())
        .arg("--read-quorum")
        .arg(r.to_string())
        .args(&opts.master_args)
        .arg("--join-listen")
        .arg("127.0.0.1:0")
        .arg("--join-addr-file")
        .arg(root.join(JOIN_ADDR_FILE));
    if opts.metrics {
        let file = root.join("master.metrics.addr");
        let _ = std::fs::remove_file(&file);
        cmd.arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .arg("--metrics-addr-file")
            .arg(file);
    }
    Daemon::spawn("mosaic-master", cmd, &root.join("logs").join("master.log"))
}

/// The address in a metrics address file, which the daemon wrote before its main address
/// file (so it is complete once the daemon counts as started).
fn read_metrics_addr(file: &Path) -> SocketAddr {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| {
        panic!(
            "no metrics address in {} ({e}): start the cluster with ClusterOptions::metrics",
            file.display()
        )
    });
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}: {text:?}", file.display()))
}

/// Every regular file under `dir` (recursively); empty if `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else {
                continue;
            };
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.daemon.kill();
        }
        self.master.kill();
        if std::thread::panicking() {
            let mut logs = vec![self.master.log().to_path_buf()];
            logs.extend(self.nodes.iter().map(|n| n.daemon.log().to_path_buf()));
            for log in logs {
                eprintln!("--- tail of {} ---\n{}", log.display(), log_tail(&log));
            }
        }
    }
}
