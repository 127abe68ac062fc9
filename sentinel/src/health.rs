//! Node health: HEALTHY / SUSPECT / DEAD as a pure function of one node's probe history and
//! an injected `now`.
//!
//! Nothing here does I/O or reads a clock: the worker ([`crate::monitor`]) and the one-shot
//! `status` command record probes and pass the time in, so every rule is table-tested below.
//! The rules, in words:
//! - a node is HEALTHY when its newest probe answered, recently, and its error counter did
//!   not rise since the answer before;
//! - it is SUSPECT when its newest probe failed, its information is stale, or it reports new
//!   errors;
//! - it is DEAD when its newest probe failed *and* nothing has shown it alive for
//!   `dead_after`. A sentinel that itself stalled (no probe at all for a while) never declares
//!   a node dead: a failed probe must confirm the silence;
//! - it is DEAD at once, without waiting for `dead_after`, when its newest
//!   [`REFUSED_TO_DEAD`] probes were all *refused*: the connection was refused outright (no
//!   process listens on its port: it crashed or exited), confirmed by the next probe. A
//!   paused (SIGSTOPped) or overloaded node still accepts connections in the kernel and
//!   only times out, so it waits for the full `dead_after`: a pause is never a crash.

use common::FsError;
use common::config::SentinelConfig;
use common::types::NodeStatus;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Probes kept per node. Only the newest two answered probes matter to the rules; the rest
/// is context for logs and a later flapping detector, and bounds memory per node.
pub const HISTORY_LEN: usize = 16;

/// Refused probes in a row that declare a node DEAD before `dead_after`: the refusal and
/// one confirming probe an interval later (a process restarting in place would answer).
pub const REFUSED_TO_DEAD: usize = 2;

/// How many probe intervals may pass without a fresh answer before a node's information is
/// too old to call it healthy: one missed probe is jitter, two in a row are not.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// A node's health as the sentinel judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Healthy,
    Suspect,
    Dead,
    /// Stopped gracefully and announced it: the master keeps its replicas counted for its
    /// maintenance window. Set from the master's record, never by [`assess`].
    Maintenance,
    /// An admin drains it: its chunks are being copied to other nodes. From the master's
    /// record, never by [`assess`].
    Draining,
    /// Drained: no chunk needs it any more; it may be stopped (or already is). From the
    /// master's record, never by [`assess`].
    Decommissioned,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Healthy => "HEALTHY",
            NodeState::Suspect => "SUSPECT",
            NodeState::Dead => "DEAD",
            NodeState::Maintenance => "MAINTENANCE",
            NodeState::Draining => "DRAINING",
            NodeState::Decommissioned => "DECOMMISSIONED",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one probe of a chunkserver's `status()` RPC gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The node answered in time with its self-report.
    Answered(NodeStatus),
    /// Connect, transport, deadline or server error, with no sign that the process is gone
    /// (a timeout may be a pause).
    Failed(FsError),
    /// The probe failed and a fresh TCP connection to the node's port was refused: nothing
    /// listens there (the process crashed or exited).
    Refused(FsError),
}

/// One probe and the moment its outcome was known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub at: Instant,
    pub outcome: ProbeOutcome,
}

/// The thresholds the rules use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// An answer older than this no longer makes a node HEALTHY.
    pub stale_after: Duration,
    /// Silence (no answer, no heartbeat) after which a failing node is DEAD.
    pub dead_after: Duration,
}

impl HealthPolicy {
    pub fn from_config(config: &SentinelConfig) -> HealthPolicy {
        HealthPolicy {
            stale_after: Duration::from_millis(config.probe_interval_ms)
                .saturating_mul(STALE_AFTER_INTERVALS),
            dead_after: Duration::from_millis(config.dead_after_ms),
        }
    }
}

/// One node's recent probes, plus the latest moment it was known to be alive (which may
/// predate the window, or come from the master's heartbeat record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeHistory {
    watching_since: Instant,
    last_alive: Option<Instant>,
    recent: VecDeque<Probe>,
}

impl ProbeHistory {
    /// A node first seen at `watching_since`, with no evidence of life yet.
    pub fn new(watching_since: Instant) -> ProbeHistory {
        ProbeHistory {
            watching_since,
            last_alive: None,
            recent: VecDeque::with_capacity(HISTORY_LEN),
        }
    }

    /// A node the master last heard a heartbeat from at `last_heard`: that counts as the
    /// latest evidence of life until a probe answers. This lets a node that has been gone
    /// for an hour be DEAD at its first failed probe instead of `dead_after` later.
    pub fn seeded(last_heard: Instant) -> ProbeHistory {
        ProbeHistory {
            watching_since: last_heard,
            last_alive: Some(last_heard),
            recent: VecDeque::with_capacity(HISTORY_LEN),
        }
    }

    /// Appends a probe (callers record in time order) and forgets the oldest past
    /// [`HISTORY_LEN`].
    pub fn record(&mut self, probe: Probe) {
        if matches!(probe.outcome, ProbeOutcome::Answered(_))
            && self.last_alive.is_none_or(|t| t < probe.at)
        {
            self.last_alive = Some(probe.at);
        }
        if self.recent.len() == HISTORY_LEN {
            self.recent.pop_front();
        }
        self.recent.push_back(probe);
    }

    pub fn latest(&self) -> Option<&Probe> {
        self.recent.back()
    }

    pub fn last_alive(&self) -> Option<Instant> {
        self.last_alive
    }

    /// The newest self-report the node answered with, if any is in the window.
    pub fn latest_status(&self) -> Option<&NodeStatus> {
        self.answered().next().map(|(_, status)| status)
    }

    /// Consecutive failed probes at the end of the window.
    pub fn failures_in_a_row(&self) -> usize {
        self.recent
            .iter()
            .rev()
            .take_while(|p| !matches!(p.outcome, ProbeOutcome::Answered(_)))
            .count()
    }

    /// Consecutive refused probes at the end of the window.
    pub fn refused_in_a_row(&self) -> usize {
        self.recent
            .iter()
            .rev()
            .take_while(|p| matches!(p.outcome, ProbeOutcome::Refused(_)))
            .count()
    }

    /// Answered probes, newest first.
    fn answered(&self) -> impl Iterator<Item = (Instant, &NodeStatus)> {
        self.recent.iter().rev().filter_map(|p| match &p.outcome {
            ProbeOutcome::Answered(status) => Some((p.at, status)),
            ProbeOutcome::Failed(_) | ProbeOutcome::Refused(_) => None,
        })
    }
}

/// A judgement and the reason for it (empty when HEALTHY).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: NodeState,
    pub reason: String,
}

impl Health {
    fn healthy() -> Health {
        Health {
            state: NodeState::Healthy,
            reason: String::new(),
        }
    }

    fn suspect(reason: String) -> Health {
        Health {
            state: NodeState::Suspect,
            reason,
        }
    }
}

/// Judges one node. Pure: the same history, policy and `now` always give the same answer.
pub fn assess(history: &ProbeHistory, policy: &HealthPolicy, now: Instant) -> Health {
    let silent_for =
        now.saturating_duration_since(history.last_alive.unwrap_or(history.watching_since));
    let Some(latest) = history.latest() else {
        return Health::suspect("not probed yet".to_string());
    };
    match &latest.outcome {
        ProbeOutcome::Failed(err) | ProbeOutcome::Refused(err) => {
            let in_a_row = history.failures_in_a_row();
            let probes = if in_a_row == 1 { "probe" } else { "probes" };
            let refused = history.refused_in_a_row();
            if refused >= REFUSED_TO_DEAD {
                Health {
                    state: NodeState::Dead,
                    reason: format!("connection refused on {refused} probes in a row: {err}"),
                }
            } else if silent_for >= policy.dead_after {
                Health {
                    state: NodeState::Dead,
                    reason: format!(
                        "no answer for {} ({in_a_row} failed {probes}): {err}",
                        human_duration(silent_for)
                    ),
                }
            } else {
                Health::suspect(format!("{in_a_row} failed {probes}: {err}"))
            }
        }
        ProbeOutcome::Answered(status) => {
            let age = now.saturating_duration_since(latest.at);
            if age >= policy.stale_after {
                return Health::suspect(format!("no probe answer for {}", human_duration(age)));
            }
            let previous = history.answered().nth(1).map(|(_, s)| s.errors);
            match previous {
                Some(before) if status.errors > before => Health::suspect(format!(
                    "error counter rose from {before} to {}",
                    status.errors
                )),
                _ => Health::healthy(),
            }
        }
    }
}

/// A duration for people: "850ms", "12.3s", "4m05s", "2h10m".
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}.{}s", ms / 1_000, (ms % 1_000) / 100)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1_000)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HealthPolicy = HealthPolicy {
        stale_after: Duration::from_millis(3_000),
        dead_after: Duration::from_millis(10_000),
    };

    fn ok(errors: u64) -> ProbeOutcome {
        ProbeOutcome::Answered(NodeStatus {
            errors,
            ..NodeStatus::default()
        })
    }

    fn failed() -> ProbeOutcome {
        ProbeOutcome::Failed(FsError::Unavailable("connection refused".into()))
    }

    fn refused() -> ProbeOutcome {
        ProbeOutcome::Refused(FsError::Unavailable("connection refused".into()))
    }

    fn timed_out() -> ProbeOutcome {
        ProbeOutcome::Failed(FsError::TimedOut("probe".into()))
    }

    /// How the history starts: plain, or seeded by a heartbeat at an offset in ms.
    #[derive(Clone, Copy)]
    enum Start {
        Fresh,
        Heartbeat(u64),
    }

    #[test]
    fn health_table() {
        use NodeState::*;
        // (case, start, probes as (ms, outcome), now in ms, expected state, reason contains)
        type Row = (
            &'static str,
            Start,
            Vec<(u64, ProbeOutcome)>,
            u64,
            NodeState,
            &'static str,
        );
        let table: Vec<Row> = vec![
            (
                "never probed",
                Start::Fresh,
                vec![],
                0,
                Suspect,
                "not probed yet",
            ),
            (
                "never probed, long watched: still no failed probe",
                Start::Fresh,
                vec![],
                60_000,
                Suspect,
                "not probed yet",
            ),
            (
                "one fresh answer",
                Start::Fresh,
                vec![(0, ok(0))],
                500,
                Healthy,
                "",
            ),
            (
                "answer just under stale",
                Start::Fresh,
                vec![(0, ok(0))],
                2_999,
                Healthy,
                "",
            ),
            (
                "answer is stale: the sentinel did not probe",
                Start::Fresh,
                vec![(0, ok(0))],
                3_000,
                Suspect,
                "no probe answer for 3.0s",
            ),
            (
                "long stall without a failed probe is never DEAD",
                Start::Fresh,
                vec![(0, ok(0))],
                60_000,
                Suspect,
                "no probe answer",
            ),
            (
                "one failure after answers",
                Start::Fresh,
                vec![(0, ok(0)), (1_000, ok(0)), (2_000, failed())],
                2_000,
                Suspect,
                "1 failed probe: unavailable: connection refused",
            ),
            (
                "failures just under dead_after",
                Start::Fresh,
                vec![(0, ok(0)), (5_000, failed()), (9_999, failed())],
                9_999,
                Suspect,
                "2 failed probes",
            ),
            (
                "failures reach dead_after",
                Start::Fresh,
                vec![(0, ok(0)), (5_000, failed()), (10_000, failed())],
                10_000,
                Dead,
                "no answer for 10.0s (2 failed probes)",
            ),
            (
                "never answered, watched for dead_after",
                Start::Fresh,
                vec![(1_000, failed()), (10_000, failed())],
                10_000,
                Dead,
                "no answer for 10.0s",
            ),
            (
                "recovery after failures",
                Start::Fresh,
                vec![(0, failed()), (1_000, failed()), (2_000, ok(0))],
                2_100,
                Healthy,
                "",
            ),
            (
                "recovery after DEAD",
                Start::Fresh,
                vec![(0, ok(0)), (20_000, failed()), (21_000, ok(0))],
                21_000,
                Healthy,
                "",
            ),
            (
                "error counter rises",
                Start::Fresh,
                vec![(0, ok(2)), (1_000, ok(5))],
                1_000,
                Suspect,
                "error counter rose from 2 to 5",
            ),
            (
                "error counter rose across a failed probe",
                Start::Fresh,
                vec![(0, ok(2)), (1_000, failed()), (2_000, ok(3))],
                2_000,
                Suspect,
                "rose from 2 to 3",
            ),
            (
                "errors steady (old errors are not new ones)",
                Start::Fresh,
                vec![(0, ok(7)), (1_000, ok(7))],
                1_000,
                Healthy,
                "",
            ),
            (
                "error counter reset by a restart",
                Start::Fresh,
                vec![(0, ok(7)), (1_000, ok(0))],
                1_000,
                Healthy,
                "",
            ),
            (
                "heartbeat long ago, first probe fails: DEAD at once",
                Start::Heartbeat(0),
                vec![(60_000, failed())],
                60_000,
                Dead,
                "no answer for 1m00s (1 failed probe)",
            ),
            // A crash: the port is closed. One refusal is SUSPECT (a restart may be quick),
            // the confirming one is DEAD long before dead_after.
            (
                "one refused probe: SUSPECT",
                Start::Fresh,
                vec![(0, ok(0)), (1_000, refused())],
                1_000,
                Suspect,
                "1 failed probe",
            ),
            (
                "refused and confirmed: DEAD at once",
                Start::Fresh,
                vec![(0, ok(0)), (1_000, refused()), (2_000, refused())],
                2_000,
                Dead,
                "connection refused on 2 probes in a row",
            ),
            // A pause (SIGSTOP): connections are accepted by the kernel and time out. Only
            // the full dead_after makes it DEAD.
            (
                "paused: timeouts wait for dead_after",
                Start::Fresh,
                vec![
                    (0, ok(0)),
                    (1_000, timed_out()),
                    (2_000, timed_out()),
                    (5_000, timed_out()),
                    (9_000, timed_out()),
                ],
                9_000,
                Suspect,
                "4 failed probes",
            ),
            (
                "paused past dead_after: DEAD",
                Start::Fresh,
                vec![(0, ok(0)), (5_000, timed_out()), (10_000, timed_out())],
                10_000,
                Dead,
                "no answer for 10.0s",
            ),
            // Refusals interrupted by a timeout are not a confirmed crash.
            (
                "refused, timeout, refused: not confirmed",
                Start::Fresh,
                vec![
                    (0, ok(0)),
                    (1_000, refused()),
                    (2_000, timed_out()),
                    (3_000, refused()),
                ],
                3_000,
                Suspect,
                "3 failed probes",
            ),
            // A node that answers after refusals (restarted in place) is healthy again.
            (
                "refused then answers",
                Start::Fresh,
                vec![(0, refused()), (1_000, refused()), (2_000, ok(0))],
                2_000,
                Healthy,
                "",
            ),
            (
                "recent heartbeat, first probe fails: SUSPECT",
                Start::Heartbeat(58_000),
                vec![(60_000, failed())],
                60_000,
                Suspect,
                "1 failed probe",
            ),
        ];
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for (case, start, probes, now, state, reason) in table {
            let mut history = match start {
                Start::Fresh => ProbeHistory::new(t0),
                Start::Heartbeat(ms) => ProbeHistory::seeded(at(ms)),
            };
            for (ms, outcome) in probes {
                history.record(Probe {
                    at: at(ms),
                    outcome,
                });
            }
            let health = assess(&history, &POLICY, at(now));
            assert_eq!(health.state, state, "{case}: {health:?}");
            assert!(health.reason.contains(reason), "{case}: {health:?}");
            if state == Healthy {
                assert!(health.reason.is_empty(), "{case}: {health:?}");
            }
        }
    }

    #[test]
    fn history_is_bounded_and_keeps_last_alive() {
        let t0 = Instant::now();
        let mut history = ProbeHistory::new(t0);
        history.record(Probe {
            at: t0,
            outcome: ok(1),
        });
        for i in 1..=(HISTORY_LEN as u64 * 2) {
            history.record(Probe {
                at: t0 + Duration::from_secs(i),
                outcome: failed(),
            });
        }
        assert_eq!(history.recent.len(), HISTORY_LEN);
        assert_eq!(history.failures_in_a_row(), HISTORY_LEN);
        assert_eq!(
            history.last_alive(),
            Some(t0),
            "last_alive outlives the window"
        );
        assert_eq!(history.latest_status(), None);
        let health = assess(&history, &POLICY, t0 + Duration::from_secs(32));
        assert_eq!(health.state, NodeState::Dead);
    }

    #[test]
    fn policy_from_config() {
        let config = SentinelConfig {
            master: "127.0.0.1:1".into(),
            probe_interval_ms: 500,
            dead_after_ms: 7_000,
            shared: common::config::SharedConfig::default(),
            probe_addrs: Default::default(),
            report: true,
        };
        let policy = HealthPolicy::from_config(&config);
        assert_eq!(policy.stale_after, Duration::from_millis(1_500));
        assert_eq!(policy.dead_after, Duration::from_millis(7_000));
    }

    #[test]
    fn durations_for_people() {
        let table = [
            (0, "0ms"),
            (850, "850ms"),
            (1_000, "1.0s"),
            (12_345, "12.3s"),
            (245_000, "4m05s"),
            (7_800_000, "2h10m"),
        ];
        for (ms, text) in table {
            assert_eq!(human_duration(Duration::from_millis(ms)), text);
        }
    }
}
