//! Replica selection, hedging, read statistics and retries: what both data paths (and the
//! readahead) use to choose a replica and to decide when to try again.
//!
//! A leaf: it knows nothing of open files, chunk maps or the master. The decisions
//! ([`order_replicas`], [`hedge_delay`]) are pure functions of what this mount observed and
//! an injected `now`; [`ReplicaStats`] only records observations for them.

use crate::data::DataPlane;
use common::types::{NodeAddr, WriteBlocks};
use common::{FsError, FsResult, NodeId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Attempts per replica request before that replica is dropped from a write. Only a
/// dropped connection is retried; a replica that missed its deadline is dropped at once,
/// so a stalled node costs one `write_timeout`, not several.
pub(crate) const WRITE_ATTEMPTS: usize = 2;
/// How long a replica that failed a read is tried last: long enough to skip it for the
/// rest of a burst of reads, short enough that a restarted node is used again soon.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);
/// A replica's read is hedged after this many times its recent mean latency (or the
/// configured floor, whichever is longer): a healthy replica is almost never hedged.
const HEDGE_FACTOR: u32 = 3;
/// The longest a read waits before hedging, whatever the latency history says.
const HEDGE_CAP: Duration = Duration::from_millis(500);
/// Weight of a new latency sample in the moving average, as 1/N.
const EWMA_WEIGHT: u64 = 4;

/// What this mount has seen of one replica's reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Observed {
    /// Moving average of read latency, microseconds.
    ewma_us: u64,
    /// When a read from it last failed.
    failed_at: Option<Instant>,
}

/// Read latencies and failures per replica, measured by this mount: together with the
/// master's load figures they decide which replica to read first and when to hedge.
#[derive(Default)]
pub(crate) struct ReplicaStats {
    seen: Mutex<HashMap<NodeId, Observed>>,
}

impl ReplicaStats {
    pub(crate) fn record(&self, node: NodeId, elapsed: Duration, ok: bool) {
        let mut seen = self.seen.lock();
        let o = seen.entry(node).or_default();
        if ok {
            let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            o.ewma_us = if o.ewma_us == 0 {
                us
            } else {
                (o.ewma_us * (EWMA_WEIGHT - 1) + us) / EWMA_WEIGHT
            };
        } else {
            o.failed_at = Some(Instant::now());
        }
    }

    pub(crate) fn order(&self, replicas: &[NodeAddr]) -> Vec<NodeAddr> {
        order_replicas(replicas, &self.seen.lock(), Instant::now())
    }

    pub(crate) fn hedge_delay(&self, node: NodeId, floor: Duration) -> Duration {
        hedge_delay(self.seen.lock().get(&node).map(|o| o.ewma_us), floor)
    }
}

/// Read order: replicas that failed within [`FAILURE_MEMORY`] last; the rest by the
/// master's load figure plus this mount's measured latency (an unmeasured replica counts
/// as fast, so it gets measured), ties kept in the master's order.
fn order_replicas(
    replicas: &[NodeAddr],
    seen: &HashMap<NodeId, Observed>,
    now: Instant,
) -> Vec<NodeAddr> {
    let mut out = replicas.to_vec();
    out.sort_by_key(|r| {
        let o = seen.get(&r.node).copied().unwrap_or_default();
        let failed = o
            .failed_at
            .is_some_and(|t| now.saturating_duration_since(t) < FAILURE_MEMORY);
        (failed, r.load.saturating_add(o.ewma_us))
    });
    out
}

/// How long to wait for a replica before hedging: [`HEDGE_FACTOR`] times its recent mean
/// latency, at least `floor`, at most [`HEDGE_CAP`].
fn hedge_delay(ewma_us: Option<u64>, floor: Duration) -> Duration {
    let typical = Duration::from_micros(ewma_us.unwrap_or(0)) * HEDGE_FACTOR;
    typical.max(floor).min(HEDGE_CAP.max(floor))
}

/// Back-off between attempts of one operation, bounded by the mount's retry window.
pub(crate) struct Retry {
    give_up: Instant,
    backoff: Duration,
}

/// First pause before retrying a data operation; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause: a returning node is noticed within about this long.
const MAX_BACKOFF: Duration = Duration::from_millis(1000);

impl Retry {
    /// Attempts until `window` from now.
    pub(crate) fn new(window: Duration) -> Retry {
        Retry {
            give_up: Instant::now() + window,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Sleeps before the next attempt, or returns `err` when the window is used up.
    pub(crate) async fn wait_or_fail(&mut self, err: FsError) -> FsResult<()> {
        if Instant::now() + self.backoff >= self.give_up {
            return Err(err);
        }
        tracing::debug!(error = %err, backoff = ?self.backoff, "retrying");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}

/// Sends one write request, retrying a transient failure once.
pub(crate) async fn send_with_retry(
    data: &Arc<dyn DataPlane>,
    timeout: Duration,
    node: &NodeAddr,
    req: WriteBlocks,
) -> FsResult<()> {
    let mut last = FsError::internal("no attempt made");
    for _ in 0..WRITE_ATTEMPTS {
        match data.write_blocks(node, req.clone(), timeout).await {
            Ok(()) => return Ok(()),
            Err(e @ FsError::TimedOut(_)) => return Err(e),
            Err(e) if e.is_retryable() => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(node: u64, load: u64) -> NodeAddr {
        NodeAddr {
            node: NodeId(node),
            addr: format!("n{node}"),
            load,
        }
    }

    #[test]
    fn replica_order_table() {
        let now = Instant::now();
        let seen = |list: &[(u64, u64, bool)]| -> HashMap<NodeId, Observed> {
            list.iter()
                .map(|&(n, ewma_us, failed)| {
                    let failed_at = failed.then_some(now);
                    (NodeId(n), Observed { ewma_us, failed_at })
                })
                .collect()
        };
        let order = |replicas: &[NodeAddr], s: &HashMap<NodeId, Observed>| -> Vec<u64> {
            order_replicas(replicas, s, now)
                .iter()
                .map(|r| r.node.0)
                .collect()
        };
        let master = [addr(1, 0), addr(2, 100), addr(3, 5000)];
        // Nothing measured: the master's order (least loaded first).
        assert_eq!(order(&master, &seen(&[])), vec![1, 2, 3]);
        // Node 1 measured slow by this mount: it goes behind the others.
        assert_eq!(order(&master, &seen(&[(1, 20_000, false)])), vec![2, 3, 1]);
        // A recent failure sends a replica last, whatever its latency.
        assert_eq!(order(&master, &seen(&[(2, 10, true)])), vec![1, 3, 2]);
        // ...but only for a while.
        let old = HashMap::from([(
            NodeId(2),
            Observed {
                ewma_us: 10,
                failed_at: now.checked_sub(FAILURE_MEMORY * 2),
            },
        )]);
        assert_eq!(order(&master, &old), vec![1, 2, 3]);
    }

    #[test]
    fn hedge_delay_table() {
        let ms = Duration::from_millis;
        // (recent mean latency in µs, floor) -> delay before the second request
        assert_eq!(hedge_delay(None, ms(20)), ms(20));
        assert_eq!(hedge_delay(Some(1_000), ms(20)), ms(20));
        assert_eq!(hedge_delay(Some(10_000), ms(20)), ms(30));
        // A very slow history never delays the hedge past the cap...
        assert_eq!(hedge_delay(Some(10_000_000), ms(20)), HEDGE_CAP);
        // ...unless the configured floor is larger.
        assert_eq!(hedge_delay(Some(10_000_000), ms(900)), ms(900));
    }
}
