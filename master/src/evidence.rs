//! Bad-replica evidence: a report that a replica is bad (`report_bad_replica` of `MasterFs`
//! from a client's read, or of `MasterNodes` from a node's own quarantine) is only a
//! suspicion. The master asks the node that holds the replica to verify it
//! (`ChunkServer::verify_replica`: every stored block's BLAKE3 checksum, read on the node)
//! and marks the replica bad only on the node's own verdict. So a client with an
//! out-of-date key, a bug or a forged credential can never make the master drop a good
//! replica (docs/SECURITY.md, "Bad replicas").
//!
//! [`Suspects`] (the bounded queue of reports, with an injected clock) and [`verdict`] are
//! pure and table-tested; [`confirm_loop`] only dials nodes and records answers. Nothing
//! here deletes a replica: a confirmed bad mark goes through the store's
//! `mark_bad_replica`, which never removes the last current copy. The same node check
//! guards the admin's `clear_bad_replica`.

use crate::cluster::ClusterControl;
use crate::cluster::worker::{Connector, RepairHost as _};
use crate::store::{MetaStore, ReplicaRecord};
use common::rpc::ctx;
use common::types::ReplicaCheck;
use common::{ChunkId, FsError, FsResult, NodeId, Version};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tracing::{Span, info_span};

/// What the confirmation worker and the admin's clear work with: the suspects queue and its
/// wake-up, the store and the cluster control (node addresses, the repair worker's wake-up).
/// The service holds one and queues reports into it; this module never sees the service.
pub struct Evidence {
    suspects: Mutex<Suspects>,
    wake: Notify,
    store: Arc<dyn MetaStore>,
    cluster: Arc<ClusterControl>,
}

impl Evidence {
    pub fn new(store: Arc<dyn MetaStore>, cluster: Arc<ClusterControl>) -> Evidence {
        Evidence {
            suspects: Mutex::new(Suspects::default()),
            wake: Notify::new(),
            store,
            cluster,
        }
    }

    /// Queues a report against `replica` for its node's verdict and wakes the worker.
    pub fn report(&self, replica: Replica) -> Admission {
        let admitted = self.suspects.lock().add(replica, Instant::now());
        self.wake.notify_one();
        admitted
    }

    fn node_addr(&self, node: NodeId) -> Option<String> {
        self.cluster
            .views()
            .into_iter()
            .find(|v| v.node == node)
            .map(|v| v.addr)
    }

    async fn store<T: Send + 'static>(
        &self,
        span: Span,
        f: impl FnOnce(&dyn MetaStore) -> FsResult<T> + Send + 'static,
    ) -> FsResult<T> {
        crate::blocking::blocking(&self.store, span, f).await
    }
}

/// Reports waiting for their node's verdict. Bounds the memory and disk reads a flood of
/// reports (forged, or one per block of a large failing read) can cost: past it, reports
/// are dropped (logged) until the queue drains; a node's own quarantine reports again at
/// its next scrub or read.
pub const MAX_SUSPECTS: usize = 4096;
/// After a node vouched for a replica, reports against it are ignored this long: a client
/// that keeps failing to open it (a wrong key) must not make the node re-read the chunk at
/// every read.
pub const VOUCHED_FOR: Duration = Duration::from_secs(60);
/// Verifications run at once: each reads a whole chunk on its node.
pub const VERIFY_CONCURRENCY: usize = 2;
/// Deadline of one verification: a 64 MiB chunk read and checksummed on a slow, busy disk.
pub const VERIFY_DEADLINE: Duration = Duration::from_secs(120);
/// A report whose node could not answer (unreachable, busy) is asked again after this.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

type Replica = (ChunkId, NodeId);

/// What [`Suspects::add`] did with a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Queued for its node's verdict.
    Queued,
    /// Already queued: one verification answers both.
    Pending,
    /// Its node vouched for it within [`VOUCHED_FOR`].
    Vouched,
    /// The queue is full ([`MAX_SUSPECTS`]).
    Full,
}

/// The queue of suspected replicas, in report order, each at most once.
#[derive(Debug, Default)]
pub struct Suspects {
    queue: VecDeque<(Replica, Instant)>,
    queued: HashSet<Replica>,
    /// When a node last vouched for a replica.
    vouched: HashMap<Replica, Instant>,
}

impl Suspects {
    pub fn add(&mut self, replica: Replica, now: Instant) -> Admission {
        self.vouched
            .retain(|_, at| now.saturating_duration_since(*at) < VOUCHED_FOR);
        if self.vouched.contains_key(&replica) {
            return Admission::Vouched;
        }
        if self.queued.contains(&replica) {
            return Admission::Pending;
        }
        if self.queue.len() >= MAX_SUSPECTS {
            return Admission::Full;
        }
        self.queued.insert(replica);
        self.queue.push_back((replica, now));
        Admission::Queued
    }

    /// The oldest suspect that is due at `now` (a retry waits [`RETRY_AFTER`]); it stays
    /// "pending" until [`Suspects::done`].
    pub fn next_due(&mut self, now: Instant) -> Option<Replica> {
        let due = self.queue.iter().position(|(_, at)| *at <= now)?;
        self.queue.remove(due).map(|(replica, _)| replica)
    }

    /// The verification of `replica` ended: `vouched` when its node found it intact;
    /// `retry` when the node could not answer (asked again after [`RETRY_AFTER`]).
    pub fn done(&mut self, replica: Replica, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Retry => self.queue.push_back((replica, now + RETRY_AFTER)),
            Outcome::Vouched => {
                self.queued.remove(&replica);
                self.vouched.insert(replica, now);
            }
            Outcome::Settled => {
                self.queued.remove(&replica);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// How one verification ended, for [`Suspects::done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Vouched,
    Settled,
    Retry,
}

/// The version to verify a suspected replica at, or `None` when there is nothing to decide:
/// no such replica, already marked bad, or not current (never served, so never dropped on
/// a read's word; the node's inventory report settles stale replicas).
pub fn to_verify(record: Option<ReplicaRecord>) -> Option<Version> {
    let r = record?;
    (!r.bad && r.version == r.confirmed).then_some(r.version)
}

/// The node's answer as a decision: `Some(reason)` marks the replica bad.
pub fn verdict(check: &ReplicaCheck) -> Option<String> {
    match check {
        ReplicaCheck::Intact => None,
        ReplicaCheck::Corrupt(why) => Some(format!("the node found it corrupt: {why}")),
        ReplicaCheck::Missing => Some("the node holds no replica of the chunk".into()),
        ReplicaCheck::Stale { have } => Some(format!("the node holds an older version {have:?}")),
    }
}

/// Asks `node` for its verdict on its replica of `chunk` at `version`.
async fn ask_node(
    ev: &Evidence,
    connect: &Connector,
    chunk: ChunkId,
    node: NodeId,
    version: Version,
) -> FsResult<ReplicaCheck> {
    let addr = ev
        .node_addr(node)
        .ok_or_else(|| FsError::Unavailable(format!("node {node} is not registered")))?;
    let client = connect(addr).await?;
    client
        .verify_replica(ctx(VERIFY_DEADLINE), chunk, version)
        .await
        .map_err(FsError::from)?
}

/// Verifies one suspect and records a confirmed bad mark.
async fn confirm(ev: &Evidence, connect: &Connector, (chunk, node): Replica) -> Outcome {
    let span = info_span!("confirm_bad_replica", %chunk, %node);
    let record = ev
        .store(span.clone(), move |s| s.replica_record(chunk, node))
        .await;
    let version = match record {
        Ok(record) => match to_verify(record) {
            Some(version) => version,
            None => {
                span.in_scope(|| {
                    tracing::info!(?record, "nothing to verify: not a current replica")
                });
                return Outcome::Settled;
            }
        },
        // Logged by the store wrapper.
        Err(_) => return Outcome::Retry,
    };
    let check = match ask_node(ev, connect, chunk, node, version).await {
        Ok(check) => check,
        Err(e) => {
            span.in_scope(|| {
                tracing::warn!(error = %e, "node could not verify its replica; the replica \
                    stays and is asked about again")
            });
            return Outcome::Retry;
        }
    };
    let Some(reason) = verdict(&check) else {
        span.in_scope(|| tracing::info!("node vouches for its replica: the report is ignored"));
        return Outcome::Vouched;
    };
    match ev
        .store(span.clone(), move |s| s.mark_bad_replica(chunk, node))
        .await
    {
        Ok(known) => {
            span.in_scope(|| tracing::warn!(known, %reason, "replica confirmed bad by its node"));
            ev.cluster.repair_wake().notify_one();
            Outcome::Settled
        }
        Err(_) => Outcome::Retry,
    }
}

/// Verifies reported replicas ([`VERIFY_CONCURRENCY`] at a time) as they arrive, until
/// `stop` changes.
pub async fn confirm_loop(ev: Arc<Evidence>, connect: Connector, mut stop: watch::Receiver<bool>) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < VERIFY_CONCURRENCY {
            let Some(replica) = ev.suspects.lock().next_due(Instant::now()) else {
                break;
            };
            let (ev, connect) = (Arc::clone(&ev), connect.clone());
            running.spawn(async move {
                let outcome = confirm(&ev, &connect, replica).await;
                ev.suspects.lock().done(replica, outcome, Instant::now());
            });
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = ev.wake.notified() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            // Retries come due without a new report.
            _ = tokio::time::sleep(RETRY_AFTER) => {}
        }
    }
    running.abort_all();
}

/// The admin's clear of a bad mark (`MasterAdmin::clear_bad_replica`): only when the node now
/// vouches for its replica (every block's checksum verified there), so a clear can never
/// put a damaged copy back into service. `Ok(false)` when it was not marked bad.
pub async fn clear_bad(
    ev: &Evidence,
    connect: Option<&Connector>,
    chunk: ChunkId,
    node: NodeId,
) -> FsResult<bool> {
    let span = info_span!("clear_bad_replica", %chunk, %node);
    let record = ev
        .store(span.clone(), move |s| s.replica_record(chunk, node))
        .await?
        .ok_or(FsError::NotFound)?;
    if !record.bad {
        return Ok(false);
    }
    let connect = connect.ok_or_else(|| {
        FsError::Unavailable("this master has no credential to reach chunkservers".into())
    })?;
    let check = ask_node(ev, connect, chunk, node, record.version).await?;
    if let Some(reason) = verdict(&check) {
        return Err(FsError::Invalid(format!(
            "node {node} does not vouch for its replica of chunk {chunk} ({reason}): the bad \
             mark stays"
        )));
    }
    let cleared = ev
        .store(span.clone(), move |s| s.clear_bad_replica(chunk, node))
        .await?
        .ok_or(FsError::NotFound)?;
    span.in_scope(|| {
        tracing::warn!(
            cleared,
            "bad mark cleared by an admin; the node vouched for the replica"
        )
    });
    ev.cluster.repair_wake().notify_one();
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(chunk: u64, node: u64) -> Replica {
        (ChunkId(chunk), NodeId(node))
    }

    #[test]
    fn suspects_queue_each_replica_once_and_remember_vouched_ones() {
        let t0 = Instant::now();
        let mut s = Suspects::default();
        assert_eq!(s.add(r(1, 1), t0), Admission::Queued);
        assert_eq!(s.add(r(1, 1), t0), Admission::Pending);
        assert_eq!(s.add(r(1, 2), t0), Admission::Queued);
        assert_eq!(s.next_due(t0), Some(r(1, 1)));
        // Taken but not done: still pending.
        assert_eq!(s.add(r(1, 1), t0), Admission::Pending);
        s.done(r(1, 1), Outcome::Vouched, t0);
        assert_eq!(s.add(r(1, 1), t0 + VOUCHED_FOR / 2), Admission::Vouched);
        assert_eq!(s.add(r(1, 1), t0 + VOUCHED_FOR), Admission::Queued);
        // A retry waits its turn.
        assert_eq!(s.next_due(t0), Some(r(1, 2)));
        s.done(r(1, 2), Outcome::Retry, t0);
        assert_eq!(s.add(r(1, 2), t0), Admission::Pending);
        assert_eq!(s.next_due(t0 + VOUCHED_FOR), Some(r(1, 1)));
        assert_eq!(s.next_due(t0), None, "the retry is not due yet");
        assert_eq!(s.next_due(t0 + RETRY_AFTER), Some(r(1, 2)));
        s.done(r(1, 2), Outcome::Settled, t0);
        assert!(s.is_empty());
        assert_eq!(s.add(r(1, 2), t0), Admission::Queued);
    }

    #[test]
    fn suspects_are_bounded() {
        let t0 = Instant::now();
        let mut s = Suspects::default();
        for chunk in 0..MAX_SUSPECTS as u64 {
            assert_eq!(s.add(r(chunk, 1), t0), Admission::Queued);
        }
        assert_eq!(s.add(r(u64::MAX, 1), t0), Admission::Full);
        assert_eq!(s.len(), MAX_SUSPECTS);
    }

    #[test]
    fn what_is_verified_table() {
        let rec = |confirmed, version, bad| ReplicaRecord {
            confirmed: Version(confirmed),
            version: Version(version),
            bad,
        };
        let table = [
            (None, None),
            (Some(rec(3, 3, false)), Some(Version(3))),
            // Already bad, or not current (never served): nothing to decide.
            (Some(rec(3, 3, true)), None),
            (Some(rec(3, 2, false)), None),
        ];
        for (record, want) in table {
            assert_eq!(to_verify(record), want, "{record:?}");
        }
    }

    #[test]
    fn only_the_nodes_own_evidence_marks_a_replica_bad() {
        assert_eq!(verdict(&ReplicaCheck::Intact), None);
        for check in [
            ReplicaCheck::Corrupt("checksum".into()),
            ReplicaCheck::Missing,
            ReplicaCheck::Stale { have: Version(1) },
        ] {
            assert!(verdict(&check).is_some(), "{check:?}");
        }
    }
}
