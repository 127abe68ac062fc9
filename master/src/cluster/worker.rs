//! The repair worker: every round it has the cluster control expire maintenance windows,
//! plan repair copies, trims and drains, then runs the copies it is given: the target node
//! copies the chunk from the source (`ChunkServer::copy_from`, chunkserver to chunkserver),
//! and the result is recorded. In rounds with no repair to do it runs rebalancing moves.
//! Copies share the limits of `plan::repair::Limits` and one bandwidth [`Pacer`].
//!
//! The worker does I/O and timing only; it decides nothing. Every plan comes from the
//! cluster control, which runs the pure planners of `crate::plan`. Nothing here deletes a
//! replica: trims and moves are re-checked by the store in their own transactions.

use crate::plan::repair::{CopyOrder, Limits};
use common::rpc::{ChunkServerClient, ctx};
use common::{ChunkId, FsError, FsResult, NodeId, Version};
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// How often the master looks for chunks to repair when nothing wakes it earlier (a node
/// declared dead or a finished copy replan at once).
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(1);
/// Deadline of one copy: a 64 MiB chunk at a slow 10 MB/s, with room. A copy to a stalled
/// node fails after this and is planned again.
pub const COPY_DEADLINE: Duration = Duration::from_secs(120);
/// Deadline of connecting to the copy's target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The bandwidth limit lets copies start up to this far ahead of their byte budget, so a
/// round can start several small copies at once instead of one per tick.
pub const PACER_BURST: Duration = Duration::from_secs(1);

/// The bandwidth limit: copies may start while the bytes already started are within
/// [`PACER_BURST`] of what `bytes_per_sec` allows. Pure over the `now` it is given.
#[derive(Clone, Debug)]
pub struct Pacer {
    bytes_per_sec: u64,
    /// When the bytes admitted so far will have been "paid" at the limit.
    paid_until: Option<Instant>,
}

impl Pacer {
    /// `bytes_per_sec` 0 means unlimited.
    pub fn new(bytes_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec,
            paid_until: None,
        }
    }

    /// Whether a copy of `bytes` may start at `now`; if so, it is charged.
    pub fn admit(&mut self, now: Instant, bytes: u64) -> bool {
        if self.bytes_per_sec == 0 {
            return true;
        }
        let paid = self.paid_until.map_or(now, |t| t.max(now));
        if paid > now + PACER_BURST {
            return false;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        self.paid_until = Some(paid + cost);
        true
    }
}

/// What the worker needs of the cluster control (`super::ClusterControl` implements it):
/// this round's plans, the bookkeeping of running copies, and the record of a finished one.
/// The worker sees nothing else of the master.
pub trait RepairHost: Send + Sync + 'static {
    /// Wakes the worker before its next tick (a node declared dead, a copy done).
    fn repair_wake(&self) -> Arc<Notify>;
    /// Copy limits and the bandwidth limit (bytes per second, 0 unlimited).
    fn repair_limits(&self) -> (Limits, u64);
    /// Turns every maintenance window that ran out into a dead node.
    fn expire_maintenance(&self) -> impl Future<Output = ()> + Send;
    /// This round's repair copies, within the limits given what is running.
    fn plan_repairs(&self) -> impl Future<Output = FsResult<Vec<CopyOrder>>> + Send;
    /// A copy (repair or move) is about to start.
    fn repair_started(&self, order: &CopyOrder);
    /// A repair copy ended (`ok`: done and recorded).
    fn repair_finished(&self, order: &CopyOrder, ok: bool);
    /// Records that `node` now holds `chunk` at `version`.
    fn record_copy(
        &self,
        chunk: ChunkId,
        node: NodeId,
        version: Version,
    ) -> impl Future<Output = FsResult<bool>> + Send;
    /// Removes surplus replicas, each re-checked by the store.
    fn trim_surplus(&self) -> impl Future<Output = ()> + Send;
    /// Decommissions the draining nodes no chunk needs any more.
    fn complete_drains(&self) -> impl Future<Output = ()> + Send;
    /// This round's rebalancing copies (none while repairs are queued or copies run).
    fn plan_rebalance(&self) -> impl Future<Output = Vec<CopyOrder>> + Send;
    /// A move's copy was recorded: trims the source's replica if the goal allows.
    fn finish_move(&self, order: &CopyOrder) -> impl Future<Output = ()> + Send;
    /// A move ended (its trim done or its copy failed).
    fn move_finished(&self, order: &CopyOrder);
}

/// Dials a chunkserver (over the master's TLS credential).
pub type Connector =
    Arc<dyn Fn(String) -> BoxFuture<'static, FsResult<ChunkServerClient>> + Send + Sync>;

/// The connector the master uses for repairs.
pub fn connector(tls: common::tls::Tls) -> Connector {
    Arc::new(move |addr: String| {
        let tls = tls.clone();
        Box::pin(
            async move { common::rpc::connect_chunkserver(&addr, &tls, CONNECT_TIMEOUT).await },
        )
    })
}

/// Plans and runs repairs every [`REPAIR_INTERVAL`], or at once when the cluster control wakes it
/// (a node declared dead, a copy finished), until `stop` changes. The worker only
/// times, dials and records: every decision is the cluster control's (and its planners').
pub async fn repair_loop<H: RepairHost>(
    control: Arc<H>,
    connect: Connector,
    mut stop: watch::Receiver<bool>,
) {
    let wake = control.repair_wake();
    let mut pacer = Pacer::new(control.repair_limits().1);
    let mut tick = tokio::time::interval(REPAIR_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        control.expire_maintenance().await;
        let orders = match control.plan_repairs().await {
            Ok(orders) => orders,
            // Logged by the store wrapper (`crate::blocking`).
            Err(_) => continue,
        };
        let repairing = !orders.is_empty();
        for order in orders {
            if !pacer.admit(Instant::now(), order.length) {
                // Over the bandwidth budget: the rest waits for a later round.
                break;
            }
            control.repair_started(&order);
            let (control, connect) = (Arc::clone(&control), connect.clone());
            tokio::spawn(async move {
                let ok = run_copy(&*control, &connect, &order).await;
                control.repair_finished(&order, ok);
            });
        }
        control.trim_surplus().await;
        control.complete_drains().await;
        if repairing {
            continue;
        }
        // Rebalancing moves share the limits and the bandwidth budget, after repairs.
        for order in control.plan_rebalance().await {
            if !pacer.admit(Instant::now(), order.length) {
                break;
            }
            control.repair_started(&order);
            let (control, connect) = (Arc::clone(&control), connect.clone());
            tokio::spawn(async move {
                if run_copy(&*control, &connect, &order).await {
                    control.finish_move(&order).await;
                }
                control.move_finished(&order);
            });
        }
    }
}

async fn run_copy<H: RepairHost>(control: &H, connect: &Connector, order: &CopyOrder) -> bool {
    let started = std::time::Instant::now();
    let copied = async {
        let client = connect(order.target_addr.clone()).await?;
        client
            .copy_from(
                ctx(COPY_DEADLINE),
                order.chunk,
                order.source_addr.clone(),
                order.version,
            )
            .await
            .map_err(FsError::from)?
    }
    .await;
    match copied {
        Ok(()) => {
            let recorded = control
                .record_copy(order.chunk, order.target, order.version)
                .await;
            tracing::info!(chunk = %order.chunk, source = %order.source, target = %order.target,
                version = ?order.version, seconds = started.elapsed().as_secs_f64(),
                recorded = ?recorded, "replica repaired");
            recorded.is_ok()
        }
        Err(e) => {
            tracing::warn!(chunk = %order.chunk, source = %order.source,
                target = %order.target, error = %e, "replica repair failed; planned again later");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_limits_bandwidth() {
        let t0 = Instant::now();
        let mib = 1 << 20;
        // 1 MiB/s with a 1 s burst: two 1 MiB copies at once, a third must wait.
        let mut p = Pacer::new(mib);
        assert!(p.admit(t0, mib));
        assert!(p.admit(t0, mib));
        assert!(!p.admit(t0, mib));
        assert!(!p.admit(t0 + Duration::from_millis(900), mib));
        assert!(p.admit(t0 + Duration::from_millis(1_000), mib));
        // Unlimited.
        let mut free = Pacer::new(0);
        assert!((0..1000).all(|_| free.admit(t0, u64::MAX)));
    }
}
