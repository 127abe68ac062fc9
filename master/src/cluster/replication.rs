//! What the repair worker asks of the cluster control each round: plans for repair copies,
//! trims, drains and rebalancing moves (run by the pure planners of `crate::plan` over the
//! store's replica rows and the node views), and the bookkeeping of the copies it runs.
//!
//! The worker reaches this room only through [`RepairHost`]. Every store call here is a short query or one re-checked transaction; nothing here does
//! network I/O (the worker dials nodes) and no lock is held across an await.

use super::ClusterControl;
use super::condition::Event;
use super::worker::RepairHost;
use crate::blocking::blocking;
use crate::plan::repair::{CopyOrder, Limits};
use crate::plan::{drain, rebalance, repair};
use common::types::NodeCondition;
use common::{ChunkId, FsResult, NodeId, Version};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tracing::info_span;

/// Chunks examined per round: bounds the query and the plan; the rest wait a round.
pub const REPAIR_SCAN: usize = 256;

impl RepairHost for ClusterControl {
    /// The worker's wake-up signal.
    fn repair_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.repair_wake)
    }

    /// Copy limits and the bandwidth limit (bytes per second, 0 unlimited).
    fn repair_limits(&self) -> (Limits, u64) {
        (self.repair_limits.clone(), self.repair_bytes_per_sec)
    }

    /// Turns every maintenance window that ran out into a dead node.
    async fn expire_maintenance(&self) {
        self.decide_all(Event::Tick).await;
    }

    /// The repair orders for this round (see `plan::repair::plan`), within the copy limits
    /// given what is running. Also refreshes the queued counts of the progress report.
    async fn plan_repairs(&self) -> FsResult<Vec<CopyOrder>> {
        let goal = self.goal;
        let span = tracing::debug_span!("plan_repairs");
        let (chunks, (queued, queued_bytes)) = blocking(&self.store, span, move |s| {
            Ok((
                s.under_goal_chunks(goal, REPAIR_SCAN)?,
                s.under_goal_totals(goal)?,
            ))
        })
        .await?;
        let views = self.views();
        let mut state = self.repair.lock();
        state.progress.queued_chunks = queued;
        state.progress.queued_bytes = queued_bytes;
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        Ok(repair::plan(
            &chunks,
            &views,
            &state.running,
            &self.repair_limits,
        ))
    }

    /// A copy is about to start.
    fn repair_started(&self, order: &CopyOrder) {
        self.repair.lock().running.start(order);
    }

    /// A copy ended (`ok`: done and recorded). Wakes the worker to plan the next ones.
    fn repair_finished(&self, order: &CopyOrder, ok: bool) {
        {
            let mut state = self.repair.lock();
            state.running.finish(order);
            if ok {
                state.progress.done_chunks += 1;
                state.progress.done_bytes += order.length;
                state.meter.record(Instant::now(), order.length);
            } else {
                state.progress.failed += 1;
            }
        }
        if ok {
            self.repair_metrics.copied(order.length);
        } else {
            self.repair_metrics.failed();
        }
        self.repair_wake.notify_one();
    }

    /// Records a finished repair copy.
    async fn record_copy(&self, chunk: ChunkId, node: NodeId, version: Version) -> FsResult<bool> {
        let span = info_span!("record_copy", %chunk, %node);
        blocking(&self.store, span, move |s| {
            s.record_copy(chunk, node, version)
        })
        .await
    }

    /// Removes surplus replicas (see `plan::repair::plan_trims`): each is re-checked in its
    /// own transaction so that no chunk ever drops below its goal.
    async fn trim_surplus(&self) {
        let goal = self.goal;
        let span = tracing::debug_span!("trim_surplus");
        let Ok(chunks) = blocking(&self.store, span, move |s| {
            s.over_goal_chunks(goal, REPAIR_SCAN)
        })
        .await
        else {
            return;
        };
        if chunks.is_empty() {
            return;
        }
        let views = self.views();
        let trims = repair::plan_trims(&chunks, &views, &self.repair.lock().running);
        for trim in trims {
            let span = info_span!("trim_replica", chunk = %trim.chunk, node = %trim.node);
            if let Ok(true) = blocking(&self.store, span.clone(), move |s| {
                s.trim_replica(trim.chunk, trim.node, goal)
            })
            .await
            {
                self.repair.lock().progress.trimmed += 1;
                span.in_scope(|| tracing::info!("surplus replica removed"));
            }
        }
    }

    /// Marks every draining node that no committed chunk needs any more decommissioned
    /// (see `plan::drain::drains_complete`).
    async fn complete_drains(&self) {
        let conditions = self.conditions();
        let draining: Vec<NodeId> = conditions
            .iter()
            .filter(|(_, c)| **c == NodeCondition::Draining)
            .map(|(n, _)| *n)
            .collect();
        if draining.is_empty() {
            return;
        }
        let goal = self.goal;
        let mut remaining = HashMap::new();
        for node in draining {
            let span = tracing::debug_span!("drain_remaining", %node);
            // A failure is logged by `blocking`; the node then waits for the next round.
            if let Ok(n) = blocking(&self.store, span, move |s| s.drain_remaining(node, goal)).await
            {
                remaining.insert(node, n);
            }
        }
        let done = drain::drains_complete(&conditions, &remaining, &self.repair.lock().running);
        for node in done {
            // A failure is logged by `blocking`; the next round tries again.
            let _ = self.decide(node, Event::Drained, 0).await;
        }
    }

    /// This round's rebalancing copies (see `plan::rebalance`): none while repairs are
    /// queued or any copy runs, so that repair always comes first and every move is planned
    /// on records that include the previous ones.
    async fn plan_rebalance(&self) -> Vec<CopyOrder> {
        let threshold = self.rebalance_threshold;
        if threshold == 0 {
            return Vec::new();
        }
        {
            let state = self.repair.lock();
            if state.progress.queued_chunks > 0 || state.running.total() > 0 {
                return Vec::new();
            }
        }
        let span = tracing::debug_span!("plan_rebalance");
        let Ok(used) = blocking(&self.store, span.clone(), |s| s.replica_bytes()).await else {
            return Vec::new();
        };
        let views = self.views();
        let usage = rebalance::eligible(&views, &used);
        let Some(mv) = rebalance::pick_move(&usage, threshold) else {
            return Vec::new();
        };
        let goal = self.goal;
        let Ok(chunks) = blocking(&self.store, span, move |s| {
            s.movable_chunks(mv.from, mv.to, goal, REPAIR_SCAN)
        })
        .await
        else {
            return Vec::new();
        };
        let orders = rebalance::plan_moves(
            &chunks,
            &mv,
            &views,
            &self.repair.lock().running,
            &self.repair_limits,
        );
        if !orders.is_empty() {
            tracing::info!(from = %mv.from, to = %mv.to, bytes = mv.bytes,
                chunks = orders.len(), "rebalancing");
        }
        orders
    }

    /// A rebalancing copy was recorded: removes the source's replica, which the store only
    /// does while the chunk keeps its goal on other counting nodes.
    async fn finish_move(&self, order: &CopyOrder) {
        let goal = self.goal;
        let (chunk, node) = (order.chunk, order.source);
        let span = info_span!("finish_move", %chunk, from = %node, to = %order.target);
        if let Ok(trimmed) = blocking(&self.store, span.clone(), move |s| {
            s.trim_replica(chunk, node, goal)
        })
        .await
        {
            span.in_scope(|| tracing::info!(trimmed, "chunk moved"));
        }
    }

    /// A rebalancing copy ended (its trim done): frees its slot and wakes the worker.
    fn move_finished(&self, order: &CopyOrder) {
        self.repair.lock().running.finish(order);
        self.repair_wake.notify_one();
    }
}
