//! What the data paths of every open file share, made once per mount and handed to each
//! open file when it is created: the connections, the key ring, the tunables, this mount's
//! replica statistics, metrics and readahead budget.
//!
//! Plain data and handles only: no logic lives here, and it never refers back to the
//! `ClientCore` that owns it (it imports nothing from the core but the replica statistics).

use super::replicas::ReplicaStats;
use crate::data::DataPlane;
use crate::meta::Metadata;
use crate::metrics::ClientMetrics;
use common::block::KeyRing;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Tunables of the core, from the mount configuration.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub rpc_timeout: Duration,
    pub retry_window: Duration,
    /// Dirty bytes per file before a background flush starts; twice this blocks writers.
    pub flush_threshold: u64,
    /// Deadline of one block write to one replica; a replica missing it is dropped from
    /// that write.
    pub write_timeout: Duration,
    /// Shortest wait before a slow read is also sent to the next replica.
    pub hedge_delay: Duration,
}

pub(crate) struct IoContext {
    pub meta: Arc<dyn Metadata>,
    pub data: Arc<dyn DataPlane>,
    pub keys: KeyRing,
    pub config: CoreConfig,
    /// The cluster's chunk size (fixed when the cluster is made).
    pub chunk_size: u64,
    /// Read latency and failures per replica, for read order and hedging.
    pub replicas: ReplicaStats,
    /// Bytes and latencies of file operations, for the metrics endpoint.
    pub metrics: ClientMetrics,
    /// Bytes the open files' readahead windows hold or have asked for (bounded by
    /// `readahead::MOUNT_BUDGET_BYTES`).
    pub readahead_held: Arc<AtomicU64>,
}
