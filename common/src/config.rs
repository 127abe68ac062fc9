//! Typed configuration of every daemon: TOML files into these structs, then command-line
//! flags override single fields (each binary's `cli.rs`). Unknown keys are an error, so a
//! typo never silently falls back to a default. Secrets are never inline: they are read from
//! the file a `*_file` field names.

use crate::tls::{CredentialPaths, Tls, TlsArgs};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default port of the master.
pub const DEFAULT_MASTER_PORT: u16 = 9420;
/// Default chunk size: 64 MiB as in GFS and MooseFS; a file of up to one chunk costs one
/// placement decision and one replica set.
pub const DEFAULT_CHUNK_SIZE: u64 = 64 * 1024 * 1024;
/// Default RPC deadline for one request.
pub const DEFAULT_RPC_TIMEOUT_MS: u64 = 5_000;
/// Default time an operation keeps retrying an unreachable peer before failing with EIO.
pub const DEFAULT_RETRY_WINDOW_MS: u64 = 15_000;
/// How long a client session lives without a keepalive.
pub const DEFAULT_SESSION_TTL_MS: u64 = 30_000;
/// Chunkserver heartbeat interval.
pub const DEFAULT_HEARTBEAT_MS: u64 = 1_000;
/// A node that has not sent a heartbeat for this long is offline for placement.
pub const DEFAULT_NODE_OFFLINE_MS: u64 = 5_000;
/// Kernel attribute and entry cache time: the window in which another mount's change may
/// be invisible. One second matches NFS's acregmin order of magnitude.
pub const DEFAULT_ATTR_TIMEOUT_MS: u64 = 1_000;

/// Reads a TOML config file into `T`, with errors that name the file.
pub fn load_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "config file {} is invalid: {}",
            path.display(),
            e.to_string().lines().collect::<Vec<_>>().join(" ")
        )
    })
}

fn default_master_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], DEFAULT_MASTER_PORT))
}
fn default_chunk_size() -> u64 {
    DEFAULT_CHUNK_SIZE
}
fn default_n() -> u32 {
    3
}
fn default_w() -> u32 {
    2
}
fn default_r() -> u32 {
    2
}
fn default_session_ttl() -> u64 {
    DEFAULT_SESSION_TTL_MS
}
fn default_heartbeat() -> u64 {
    DEFAULT_HEARTBEAT_MS
}
fn default_node_offline() -> u64 {
    DEFAULT_NODE_OFFLINE_MS
}
fn default_true() -> bool {
    true
}
fn default_rpc_timeout() -> u64 {
    DEFAULT_RPC_TIMEOUT_MS
}
fn default_retry_window() -> u64 {
    DEFAULT_RETRY_WINDOW_MS
}
fn default_attr_timeout() -> u64 {
    DEFAULT_ATTR_TIMEOUT_MS
}

/// The keys every daemon config shares, flattened into each (`#[serde(flatten)]`), so the
/// TOML keys stay top-level: `tls_cert_file`, `tls_key_file`, `tls_ca_file`, `metrics_addr`.
///
/// No `deny_unknown_fields` here: serde hands a flattened struct only the keys it names,
/// and each outer config refuses the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedConfig {
    /// This process's TLS certificate (PEM), issued by `mosaic-master issue`. The master's
    /// default is the credential `init` wrote, `STATE/pki/master/cert.pem` (and `key.pem`,
    /// `ca.pem`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM, mode 0600).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The cluster CA certificate (PEM): only peers it signed are accepted.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Address of the Prometheus metrics endpoint (plain HTTP, `GET /metrics`); port 0
    /// picks a free port. Default: none, no endpoint. It is unauthenticated, so it is only
    /// served where an admin asked for it (a loopback or monitoring-network address).
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
}

impl SharedConfig {
    /// The three `tls_*_file` fields as one credential; all three or none.
    pub fn credential_paths(&self) -> anyhow::Result<Option<CredentialPaths>> {
        match (&self.tls_cert_file, &self.tls_key_file, &self.tls_ca_file) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(CredentialPaths {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            (None, None, None) => Ok(None),
            _ => anyhow::bail!(
                "tls_cert_file, tls_key_file and tls_ca_file go together: give all three \
                 (or --credentials DIR)"
            ),
        }
    }

    /// Loads the configured credential; `what` names the process in the error that says
    /// how to get one when none is configured.
    pub fn load_tls(&self, what: &str) -> anyhow::Result<Tls> {
        let paths = self.credential_paths()?.ok_or_else(|| {
            anyhow::anyhow!(
                "{what} has no TLS credential: give --credentials DIR (made by `mosaic-master \
                 issue ROLE NAME --out DIR`) or tls_cert_file, tls_key_file and tls_ca_file"
            )
        })?;
        paths.load()
    }

    /// Writes the TLS flags over the `tls_*_file` fields: `--credentials DIR` first, then
    /// any single-file flag over it. An absent flag leaves the file's value alone.
    pub fn apply_tls_flags(&mut self, flags: &TlsArgs) {
        if let Some(dir) = &flags.credentials {
            self.set_credentials(CredentialPaths::in_dir(dir));
        }
        for (flag, field) in [
            (&flags.cert, &mut self.tls_cert_file),
            (&flags.key, &mut self.tls_key_file),
            (&flags.ca, &mut self.tls_ca_file),
        ] {
            if let Some(path) = flag {
                *field = Some(path.clone());
            }
        }
    }

    /// Points the three `tls_*_file` fields at one credential.
    pub fn set_credentials(&mut self, paths: CredentialPaths) {
        self.tls_cert_file = Some(paths.cert);
        self.tls_key_file = Some(paths.key);
        self.tls_ca_file = Some(paths.ca);
    }
}

/// `mosaic-master` configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// Address to listen on. Default 127.0.0.1:9420.
    #[serde(default = "default_master_listen")]
    pub listen: SocketAddr,
    /// Directory holding `meta.db` (SQLite, WAL mode). Created by `mosaic-master init`.
    pub state_dir: PathBuf,
    /// Chunk size in bytes, fixed at `init` (a multiple of the 64 KiB block size).
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u64,
    /// Copies of every chunk (N). Default 3.
    #[serde(default = "default_n")]
    pub replicas: u32,
    /// Acknowledgements a write needs (W). Default 2: one node failing never stops writes.
    #[serde(default = "default_w")]
    pub write_quorum: u32,
    /// Read quorum (R); W + R must exceed N. Default 2. What it means in this design
    /// (the master's committed version fences every read) is in docs/PROTOCOL.md.
    #[serde(default = "default_r")]
    pub read_quorum: u32,
    /// Client session lease in milliseconds. Default 30000.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_ms: u64,
    /// Heartbeat interval chunkservers are told to use, in milliseconds. Default 1000.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_ms: u64,
    /// Silence after which a node gets no new chunks, in milliseconds. Default 5000.
    #[serde(default = "default_node_offline")]
    pub node_offline_ms: u64,
    /// fsync the SQLite WAL at every commit (`synchronous=FULL`). Default true: an
    /// acknowledged operation survives power loss, not just a crash of the master.
    #[serde(default = "default_true")]
    pub durable_commits: bool,
    /// The TLS credential files and the metrics endpoint: the keys every daemon shares.
    #[serde(flatten)]
    pub shared: SharedConfig,
    /// Distinct sentinels that must vote a node dead (within `dead_vote_window_ms`) before
    /// the master declares it dead and re-replicates its chunks. Default 1 (one sentinel);
    /// with several, a sentinel with a broken link alone cannot start a replication storm.
    #[serde(default = "default_dead_quorum")]
    pub dead_quorum: u32,
    /// How long a sentinel's dead vote stays valid, in milliseconds; sentinels repeat their
    /// vote every probe round. Default 10000.
    #[serde(default = "default_dead_vote_window")]
    pub dead_vote_window_ms: u64,
    /// How long a gracefully stopped node (planned maintenance) keeps its replicas counted
    /// before it is treated as dead, in milliseconds. Default 300000 (5 minutes).
    #[serde(default = "default_maintenance_window")]
    pub maintenance_window_ms: u64,
    /// Re-replication copies running at once, cluster-wide. Default 8.
    #[serde(default = "default_repair_copies")]
    pub repair_max_copies: u32,
    /// Re-replication copies one node takes part in at once (as source or target).
    /// Default 4.
    #[serde(default = "default_repair_copies_per_node")]
    pub repair_max_copies_per_node: u32,
    /// Re-replication bandwidth, cluster-wide, in bytes per second (0: unlimited).
    /// Default 256 MiB/s.
    #[serde(default = "default_repair_bandwidth")]
    pub repair_bytes_per_sec: u64,
    /// The audit log (JSON lines, docs/SECURITY.md). Default: `STATE/audit.log`.
    #[serde(default)]
    pub audit_file: Option<PathBuf>,
    /// Size in bytes at which the audit log is rotated. Default 64 MiB.
    #[serde(default = "default_audit_max_bytes")]
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (`audit.log.1` newest .. `audit.log.K`). Default 8.
    #[serde(default = "default_audit_keep")]
    pub audit_keep: u32,
    /// Address of the join endpoint, where a node holding a one-time join token (from
    /// `mosaic-master issue-token`) gets its credential. Server-authenticated TLS only: the
    /// joiner has no certificate yet. Default: none (tokens cannot be redeemed).
    #[serde(default)]
    pub join_listen: Option<SocketAddr>,
    /// The rebalancer moves chunks from the fullest to the emptiest up node while their used
    /// percentages (bytes of the replicas the master records over capacity) differ by more
    /// than this many percentage points; 0 turns it off. Default 10.
    #[serde(default = "default_rebalance_threshold")]
    pub rebalance_threshold_percent: u32,
}

/// Default sentinel quorum for declaring a node dead: one sentinel is the default setup.
pub const DEFAULT_DEAD_QUORUM: u32 = 1;
/// Default life of a dead vote: ten probe rounds at the default interval, so a vote from
/// a sentinel that stopped voting expires within seconds.
pub const DEFAULT_DEAD_VOTE_WINDOW_MS: u64 = 10_000;
/// Default maintenance window: long enough for a restart or a kernel update, short enough
/// that a node that never comes back costs minutes, not MooseFS's half hour.
pub const DEFAULT_MAINTENANCE_WINDOW_MS: u64 = 300_000;
/// Default cluster-wide copies in flight: enough to fill a LAN link with 64 MiB chunks
/// while leaving room for client I/O.
pub const DEFAULT_REPAIR_MAX_COPIES: u32 = 8;
/// Default copies one node serves or receives at once: one node's disk is the bottleneck.
pub const DEFAULT_REPAIR_MAX_COPIES_PER_NODE: u32 = 4;
/// Default re-replication bandwidth: about a quarter of a 10 GbE link.
pub const DEFAULT_REPAIR_BYTES_PER_SEC: u64 = 256 * 1024 * 1024;

fn default_dead_quorum() -> u32 {
    DEFAULT_DEAD_QUORUM
}
fn default_dead_vote_window() -> u64 {
    DEFAULT_DEAD_VOTE_WINDOW_MS
}
fn default_maintenance_window() -> u64 {
    DEFAULT_MAINTENANCE_WINDOW_MS
}
fn default_repair_copies() -> u32 {
    DEFAULT_REPAIR_MAX_COPIES
}
fn default_repair_copies_per_node() -> u32 {
    DEFAULT_REPAIR_MAX_COPIES_PER_NODE
}
fn default_repair_bandwidth() -> u64 {
    DEFAULT_REPAIR_BYTES_PER_SEC
}
/// Default rebalance threshold: a tenth of every disk may differ, so a cluster that is
/// merely uneven by a few chunks never moves data.
pub const DEFAULT_REBALANCE_THRESHOLD_PERCENT: u32 = 10;
fn default_rebalance_threshold() -> u32 {
    DEFAULT_REBALANCE_THRESHOLD_PERCENT
}

fn default_audit_max_bytes() -> u64 {
    crate::audit::DEFAULT_AUDIT_MAX_BYTES
}
fn default_audit_keep() -> u32 {
    crate::audit::DEFAULT_AUDIT_KEEP
}

impl MasterConfig {
    pub fn for_tests(state_dir: PathBuf) -> MasterConfig {
        MasterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir,
            chunk_size: 1024 * 1024,
            replicas: 3,
            write_quorum: 2,
            read_quorum: 2,
            session_ttl_ms: 10_000,
            heartbeat_interval_ms: 200,
            node_offline_ms: 2_000,
            durable_commits: false,
            shared: SharedConfig::default(),
            dead_quorum: DEFAULT_DEAD_QUORUM,
            dead_vote_window_ms: DEFAULT_DEAD_VOTE_WINDOW_MS,
            maintenance_window_ms: DEFAULT_MAINTENANCE_WINDOW_MS,
            repair_max_copies: DEFAULT_REPAIR_MAX_COPIES,
            repair_max_copies_per_node: DEFAULT_REPAIR_MAX_COPIES_PER_NODE,
            repair_bytes_per_sec: DEFAULT_REPAIR_BYTES_PER_SEC,
            audit_file: None,
            audit_max_bytes: default_audit_max_bytes(),
            audit_keep: default_audit_keep(),
            join_listen: None,
            rebalance_threshold_percent: DEFAULT_REBALANCE_THRESHOLD_PERCENT,
        }
    }

    /// The audit log's rotation policy: `audit_file` or `STATE/audit.log`.
    pub fn audit(&self) -> crate::audit::AuditConfig {
        crate::audit::AuditConfig {
            path: self
                .audit_file
                .clone()
                .unwrap_or_else(|| self.state_dir.join(crate::audit::AUDIT_FILE)),
            max_bytes: self.audit_max_bytes,
            keep: self.audit_keep,
        }
    }

    pub fn policy(&self) -> crate::types::ReplicationPolicy {
        crate::types::ReplicationPolicy {
            n: self.replicas,
            w: self.write_quorum,
            r: self.read_quorum,
        }
    }
}

/// `mosaic-chunkserver` configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkserverConfig {
    /// Address to listen on; port 0 picks a free port. Default 127.0.0.1:0.
    #[serde(default = "default_any_port")]
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this one; default: the bound address.
    #[serde(default)]
    pub advertise: Option<String>,
    /// The master's address.
    pub master: String,
    /// Where chunks live. Holds `node.toml` (node and cluster id) after first registration.
    pub data_dir: PathBuf,
    /// Bytes this node offers; default: the free space of the data directory's filesystem.
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
    /// fdatasync every write before acknowledging it, not only writes flagged `sync`.
    /// Default false: writes are in the page cache (safe from a crash of the process) and
    /// made durable by the client's fsync/close, as on a local filesystem.
    #[serde(default)]
    pub sync_every_write: bool,
    /// Background scrub rate in bytes per second: every stored block is re-read and its
    /// checksum verified at this pace. 0 turns scrubbing off. Default 16 MiB/s.
    #[serde(default = "default_scrub_rate")]
    pub scrub_bytes_per_sec: u64,
    /// Shortest time from the start of one scrub cycle to the start of the next, in
    /// milliseconds: an idle node does not re-read its disk more often. Default 1 hour.
    #[serde(default = "default_scrub_period")]
    pub scrub_period_ms: u64,
    /// The TLS credential files and the metrics endpoint: the keys every daemon shares.
    #[serde(flatten)]
    pub shared: SharedConfig,
    /// Read and write block slots with O_DIRECT, bypassing the page cache: large aligned
    /// requests from reused buffers instead of copies into fresh page-cache pages. A
    /// filesystem that refuses O_DIRECT gets buffered I/O instead (logged once). Chunk
    /// headers and block tables always use the page cache. Default true.
    #[serde(default = "default_direct_io")]
    pub direct_io: bool,
}

/// Default of `direct_io`: on; it falls back by itself where the filesystem refuses it.
pub const DEFAULT_DIRECT_IO: bool = true;

fn default_direct_io() -> bool {
    DEFAULT_DIRECT_IO
}

/// Default scrub pace: a few percent of one disk's sequential bandwidth, so client I/O
/// barely notices; 1 TiB takes about 18 hours.
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 16 * 1024 * 1024;
/// Default scrub period: a full cycle at most once an hour.
pub const DEFAULT_SCRUB_PERIOD_MS: u64 = 3_600_000;

fn default_scrub_rate() -> u64 {
    DEFAULT_SCRUB_BYTES_PER_SEC
}
fn default_scrub_period() -> u64 {
    DEFAULT_SCRUB_PERIOD_MS
}

fn default_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl ChunkserverConfig {
    pub fn for_tests(master: String, data_dir: PathBuf) -> ChunkserverConfig {
        ChunkserverConfig {
            shared: SharedConfig::default(),
            listen: default_any_port(),
            advertise: None,
            master,
            data_dir,
            capacity_bytes: Some(1 << 30),
            sync_every_write: false,
            scrub_bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
            scrub_period_ms: DEFAULT_SCRUB_PERIOD_MS,
            direct_io: DEFAULT_DIRECT_IO,
        }
    }
}

/// `mosaic-mount` configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// The master's address.
    pub master: String,
    /// File with the cluster's data key(s), made by `mosaic-master init`.
    pub key_file: PathBuf,
    /// Deadline of one RPC, in milliseconds. Default 5000.
    #[serde(default = "default_rpc_timeout")]
    pub rpc_timeout_ms: u64,
    /// How long an operation retries unreachable peers before failing with EIO. Default 15000.
    #[serde(default = "default_retry_window")]
    pub retry_window_ms: u64,
    /// Kernel attribute/entry cache time in milliseconds. Default 1000.
    #[serde(default = "default_attr_timeout")]
    pub attr_timeout_ms: u64,
    /// Let other users access the mount (needs `user_allow_other` for non-root mounters).
    #[serde(default)]
    pub allow_other: bool,
    /// Dirty bytes per open file buffered before a background flush starts. Default 8 MiB.
    #[serde(default = "default_flush_threshold")]
    pub flush_threshold_bytes: u64,
    /// Deadline of one block write to one replica, in milliseconds. A replica that misses
    /// it (stalled, paused, overloaded) is dropped from that write, which completes with
    /// the others if they are at least W. Default 3000.
    #[serde(default = "default_write_timeout")]
    pub write_timeout_ms: u64,
    /// Shortest wait for a read answer before the same read is also sent to the next
    /// replica (hedging); the first answer wins. Default 20.
    #[serde(default = "default_hedge_delay")]
    pub hedge_delay_ms: u64,
    /// The TLS credential files and the metrics endpoint: the keys every daemon shares.
    #[serde(flatten)]
    pub shared: SharedConfig,
    /// Open files with FUSE's direct I/O (`-o direct_io`): reads and writes bypass the
    /// kernel page cache of the mount (no copy into fresh cache pages, but no kernel
    /// readahead or read caching either). Default: off.
    #[serde(default)]
    pub direct_io: bool,
}

/// Default per-replica write deadline: long enough for a 4 MiB request to a busy disk,
/// short enough that a stalled node costs an application a few seconds at most.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 3_000;
/// Default hedge delay floor: above a healthy loopback or LAN read of 4 MiB, far below a
/// stalled node's deadline.
pub const DEFAULT_HEDGE_DELAY_MS: u64 = 20;

fn default_write_timeout() -> u64 {
    DEFAULT_WRITE_TIMEOUT_MS
}
fn default_hedge_delay() -> u64 {
    DEFAULT_HEDGE_DELAY_MS
}

fn default_flush_threshold() -> u64 {
    8 * 1024 * 1024
}

impl MountConfig {
    /// Defaults for everything but the two required fields.
    pub fn for_cli(master: String, key_file: PathBuf) -> MountConfig {
        MountConfig {
            shared: SharedConfig::default(),
            master,
            key_file,
            rpc_timeout_ms: DEFAULT_RPC_TIMEOUT_MS,
            retry_window_ms: DEFAULT_RETRY_WINDOW_MS,
            attr_timeout_ms: DEFAULT_ATTR_TIMEOUT_MS,
            allow_other: false,
            flush_threshold_bytes: default_flush_threshold(),
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
            hedge_delay_ms: DEFAULT_HEDGE_DELAY_MS,
            direct_io: false,
        }
    }

    pub fn for_tests(master: String, key_file: PathBuf) -> MountConfig {
        MountConfig {
            shared: SharedConfig::default(),
            master,
            key_file,
            rpc_timeout_ms: 2_000,
            retry_window_ms: 5_000,
            attr_timeout_ms: 1_000,
            allow_other: false,
            flush_threshold_bytes: default_flush_threshold(),
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
            hedge_delay_ms: DEFAULT_HEDGE_DELAY_MS,
            direct_io: false,
        }
    }
}

/// `mosaic-sentinel` configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The master's address.
    pub master: String,
    /// Probe interval in milliseconds. Default 1000.
    #[serde(default = "default_heartbeat")]
    pub probe_interval_ms: u64,
    /// Silence after which a node is DEAD, in milliseconds. Default 10000.
    #[serde(default = "default_dead_after")]
    pub dead_after_ms: u64,
    /// The TLS credential files and the metrics endpoint: the keys every daemon shares.
    #[serde(flatten)]
    pub shared: SharedConfig,
    /// Probe these nodes at another address than the one they registered with, keyed by
    /// node id (`"n2" = "10.1.0.2:9430"`): for a sentinel that reaches a node through
    /// another network. Pointing one at a closed port is how tests make a sentinel that
    /// cannot reach a node. Default: none.
    #[serde(default)]
    pub probe_addrs: std::collections::BTreeMap<String, String>,
    /// Report verdicts to the master (dead votes, alive again), so it re-replicates the
    /// chunks of dead nodes. Default true; false makes a watch-only sentinel.
    #[serde(default = "default_true")]
    pub report: bool,
}

fn default_dead_after() -> u64 {
    10_000
}

/// Copies every command-line flag that was given over the config field of the same name:
/// `apply_flags!(config, flags; a, b; optional: c)` sets `config.a = flags.a` when the flag is
/// `Some`, and `config.c = Some(flags.c)` for config fields that are themselves optional.
/// One rule for every daemon: a flag beats the file, an absent flag leaves it alone.
#[macro_export]
macro_rules! apply_flags {
    ($config:expr, $flags:expr; $($field:ident),* $(,)? $(; optional: $($opt:ident),* $(,)?)?) => {
        $(
            if let Some(value) = $flags.$field.clone() {
                $config.$field = value;
            }
        )*
        $($(
            if let Some(value) = $flags.$opt.clone() {
                $config.$opt = Some(value);
            }
        )*)?
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<MasterConfig>("state_dir = '/x'\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn a_config_file_with_unknown_keys_is_refused_naming_the_file_and_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.toml");
        std::fs::write(&path, "state_dir = '/x'\nrepilcas = 3\n").expect("write");
        let err = load_toml::<MasterConfig>(&path).expect_err("unknown key");
        let text = format!("{err:#}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("repilcas"), "{text}");
        assert_eq!(text.lines().count(), 1, "one line: {text}");
    }

    #[test]
    fn defaults_apply() {
        let cfg: MasterConfig = toml::from_str("state_dir = '/x'\n").expect("parses");
        assert_eq!(cfg.listen.port(), DEFAULT_MASTER_PORT);
        assert_eq!(cfg.chunk_size, DEFAULT_CHUNK_SIZE);
        assert!(cfg.policy().validate().is_ok());
        let cfg: MountConfig = toml::from_str("master = 'a:1'\nkey_file = '/k'\n").expect("parses");
        assert_eq!(cfg.attr_timeout_ms, DEFAULT_ATTR_TIMEOUT_MS);
    }

    #[test]
    fn the_shared_keys_stay_top_level_and_unknown_keys_are_still_refused() {
        let cfg: SentinelConfig = toml::from_str(
            "master = 'a:1'\ntls_cert_file = '/c'\ntls_key_file = '/k'\ntls_ca_file = '/a'\n\
             metrics_addr = '127.0.0.1:9'\n",
        )
        .expect("parses");
        assert_eq!(cfg.shared.tls_cert_file.as_deref(), Some(Path::new("/c")));
        assert_eq!(cfg.shared.tls_ca_file.as_deref(), Some(Path::new("/a")));
        assert_eq!(cfg.shared.metrics_addr, Some(([127, 0, 0, 1], 9).into()));
        for text in [
            "state_dir = '/x'\ntls_cert_fil = '/c'\n",
            "state_dir = '/x'\nmetrics_addr = '127.0.0.1:9'\nbogus = 1\n",
        ] {
            let err = toml::from_str::<MasterConfig>(text).expect_err(text);
            assert!(err.to_string().contains("unknown field"), "{err}");
        }
        let err = toml::from_str::<ChunkserverConfig>(
            "master = 'a:1'\ndata_dir = '/d'\nmetrics_addr = 'nowhere'\n",
        )
        .expect_err("bad address");
        assert!(
            err.to_string().contains("metrics_addr") || err.to_string().contains("address"),
            "{err}"
        );
    }

    #[test]
    fn tls_flags_override_the_file_and_go_together() {
        let mut shared = SharedConfig {
            tls_cert_file: Some("/file/cert.pem".into()),
            ..SharedConfig::default()
        };
        assert!(
            shared.credential_paths().is_err(),
            "one of three is an error"
        );
        shared.apply_tls_flags(&TlsArgs {
            credentials: Some("/dir".into()),
            ca: Some("/other/ca.pem".into()),
            ..TlsArgs::default()
        });
        let paths = shared.credential_paths().expect("all three").expect("some");
        assert_eq!(paths.cert, Path::new("/dir/cert.pem"));
        assert_eq!(paths.key, Path::new("/dir/key.pem"));
        assert_eq!(paths.ca, Path::new("/other/ca.pem"));
        assert!(
            SharedConfig::default()
                .credential_paths()
                .expect("none")
                .is_none()
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_config_text_never_panics(text in "(?s).{0,300}") {
            let _ = toml::from_str::<MasterConfig>(&text);
            let _ = toml::from_str::<ChunkserverConfig>(&text);
            let _ = toml::from_str::<MountConfig>(&text);
        }
    }
}
