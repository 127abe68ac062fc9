//! Writes refused for lack of space: the master logs each refusal with the numbers behind
//! it, counts them for the metrics endpoint, and while refusals are recent the cluster
//! summary carries a notice so `mosaic-sentinel status` is not HEALTHY. Pure bookkeeping
//! over an injected clock, table-tested; it never decides placement (`placement.rs` does)
//! and never does I/O.

use crate::plan::NodeView;
use common::types::ClusterNotice;
use std::time::{Duration, Instant};

/// How long after the last refusal the summary keeps saying writes are being refused:
/// long enough for an admin's `status` (or a monitoring poll) to see a burst of refusals,
/// short enough that the notice clears soon after space is freed.
pub const REFUSAL_NOTICE: Duration = Duration::from_secs(60);

/// Refusals since the master started and the last one's numbers.
#[derive(Debug, Default)]
pub struct SpaceRefusals {
    total: u64,
    last: Option<(Instant, String)>,
}

impl SpaceRefusals {
    /// Records one refused placement described by `detail` (see [`describe`]).
    pub fn refused(&mut self, now: Instant, detail: String) {
        self.total += 1;
        self.last = Some((now, detail));
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The notice for the summary, while the last refusal is within [`REFUSAL_NOTICE`].
    pub fn notice(&self, now: Instant) -> Option<ClusterNotice> {
        let (at, detail) = self.last.as_ref()?;
        let ago = now.saturating_duration_since(*at);
        (ago < REFUSAL_NOTICE).then(|| ClusterNotice::WritesRefused {
            refusals: self.total,
            last_ms: u64::try_from(ago.as_millis()).unwrap_or(u64::MAX),
            detail: detail.clone(),
        })
    }
}

/// The numbers of a refused placement: how many nodes a new chunk needed with how much
/// free, and what each node had (free space counts reservations not yet reported).
pub fn describe(needed: usize, footprint: u64, views: &[NodeView]) -> String {
    let nodes: Vec<String> = views
        .iter()
        .map(|v| {
            let state = if !v.online {
                " (offline)"
            } else if v.status.draining {
                " (draining)"
            } else {
                ""
            };
            format!(
                "{} {} of {} free{state}",
                v.node,
                mib(v.free_bytes()),
                mib(v.status.capacity_bytes)
            )
        })
        .collect();
    format!(
        "a new chunk needs {needed} nodes with {} free; {}",
        mib(footprint),
        if nodes.is_empty() {
            "no node is registered".to_string()
        } else {
            nodes.join(", ")
        }
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::NodeId;
    use common::types::NodeStatus;

    #[test]
    fn a_notice_lasts_a_window_after_the_last_refusal() {
        let t0 = Instant::now();
        let mut r = SpaceRefusals::default();
        assert_eq!(r.notice(t0), None);
        r.refused(t0, "first".into());
        r.refused(t0 + Duration::from_secs(10), "second".into());
        assert_eq!(r.total(), 2);
        // (seconds after t0) -> notice (last_ms) or none
        let table = [
            (10, Some(0)),
            (30, Some(20_000)),
            (69, Some(59_000)),
            (70, None),
        ];
        for (at, want) in table {
            let got = r.notice(t0 + Duration::from_secs(at));
            match (got, want) {
                (
                    Some(ClusterNotice::WritesRefused {
                        refusals,
                        last_ms,
                        detail,
                    }),
                    Some(ms),
                ) => {
                    assert_eq!((refusals, last_ms, detail.as_str()), (2, ms, "second"));
                }
                (None, None) => {}
                (got, want) => panic!("at {at}s: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn the_description_has_the_numbers() {
        let view = |id, online, used| NodeView {
            node: NodeId(id),
            addr: String::new(),
            online,
            last_seen: None,
            condition: common::types::NodeCondition::Up,
            status: NodeStatus {
                capacity_bytes: 256 << 20,
                used_bytes: used,
                ..NodeStatus::default()
            },
        };
        let text = describe(2, 128 << 10, &[view(1, true, 256 << 20), view(2, false, 0)]);
        assert_eq!(
            text,
            "a new chunk needs 2 nodes with 0.1 MiB free; n1 0.0 MiB of 256.0 MiB free, \
             n2 256.0 MiB of 256.0 MiB free (offline)"
        );
        assert!(describe(1, 1, &[]).ends_with("no node is registered"));
    }
}
