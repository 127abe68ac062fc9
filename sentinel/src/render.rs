//! Rendering of a [`StatusReport`]: an aligned table for people and JSON for scripts.
//!
//! Pure functions of the report: no clock, no I/O, no judgement (every state and reason is
//! already in the report), so the snapshots below pin the exact output.
//!
//! The JSON is a stable contract: a top-level `verdict` string, an object `chunks` with
//! integer `total`, `under_replicated` and `lost`, and a list `nodes` whose items carry `id`
//! (`n<hex>`), `addr` and `state`. Fields may be added, never renamed or removed.

use crate::health::human_duration;
use crate::status::StatusReport;
use std::fmt::Write as _;
use std::time::Duration;

/// The report as pretty JSON with a trailing newline.
pub fn render_json(report: &StatusReport) -> String {
    // Serializing plain structs of strings and numbers cannot fail; fall back to a minimal
    // object rather than panic if that ever changes.
    let mut out = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        format!(
            "{{\"verdict\": \"{}\", \"error\": \"cannot serialize report: {e}\"}}",
            report.verdict.as_str()
        )
    });
    out.push('\n');
    out
}

/// The report as a table for a terminal.
pub fn render_table(report: &StatusReport) -> String {
    let mut out = String::new();
    let policy = report.replication;
    let _ = writeln!(
        out,
        "MosaicFS cluster {}  master {}  replication n={} w={} r={}",
        report.cluster_id, report.master, policy.n, policy.w, policy.r
    );
    let _ = writeln!(out, "verdict: {}", report.verdict.as_str());
    for reason in &report.reasons {
        let _ = writeln!(out, "  - {reason}");
    }
    out.push('\n');

    let header = [
        "NODE",
        "STATE",
        "ADDRESS",
        "LAST SEEN",
        "CAPACITY",
        "USED",
        "CHUNKS",
        "LOAD",
        "ERRORS",
        "REASON",
    ];
    let rows: Vec<[String; 10]> = report
        .nodes
        .iter()
        .map(|n| {
            [
                n.id.to_string(),
                n.state.to_string(),
                n.addr.clone(),
                format!(
                    "{} ago",
                    human_duration(Duration::from_millis(n.last_seen_ms))
                ),
                human_bytes(n.capacity_bytes),
                format!("{:.1}%", n.used_percent),
                n.chunks.to_string(),
                n.load.to_string(),
                n.errors.to_string(),
                n.reason.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no chunkservers registered\n");
    } else {
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        push_row(&mut out, &header.map(String::from), &widths);
        for row in &rows {
            push_row(&mut out, row, &widths);
        }
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "files {}  dirs {}  data {}",
        report.files,
        report.dirs,
        human_bytes(report.logical_bytes)
    );
    let _ = writeln!(
        out,
        "chunks {}  under-replicated {}  lost {}",
        report.chunks.total, report.chunks.under_replicated, report.chunks.lost
    );
    let r = &report.repair;
    if r.queued_chunks > 0 || r.in_flight > 0 || r.done_chunks > 0 || r.trimmed > 0 {
        let _ = writeln!(
            out,
            "re-replication: {} chunks ({}) to copy, {} running, {} done ({}), {}/s, {} failed, {} surplus removed",
            r.queued_chunks,
            human_bytes(r.queued_bytes),
            r.in_flight,
            r.done_chunks,
            human_bytes(r.done_bytes),
            human_bytes(r.bytes_per_sec),
            r.failed,
            r.trimmed
        );
    }
    out
}

/// One row, columns padded to `widths` and separated by two spaces; the last column is not
/// padded, so no line ends in blanks.
fn push_row(out: &mut String, cells: &[String; 10], widths: &[usize; 10]) {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            let _ = write!(line, "{cell:<width$}  ");
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Bytes for people, binary units with one decimal: "512 B", "1.5 KiB", "64.0 GiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::NodeState;
    use crate::status::{ChunkCounts, NodeReport, Verdict};
    use common::NodeId;
    use common::types::{RepairProgress, ReplicationPolicy};

    fn report() -> StatusReport {
        StatusReport {
            verdict: Verdict::Degraded,
            reasons: vec![
                "node n2 is SUSPECT".into(),
                "3 chunks under-replicated".into(),
            ],
            master: "127.0.0.1:9420".into(),
            cluster_id: "00112233445566778899aabbccddeeff".into(),
            replication: ReplicationPolicy { n: 3, w: 3, r: 1 },
            files: 12,
            dirs: 3,
            logical_bytes: 5 * 1024 * 1024 + 512 * 1024,
            chunks: ChunkCounts {
                total: 40,
                under_replicated: 3,
                lost: 0,
            },
            nodes: vec![
                NodeReport {
                    id: NodeId(1),
                    addr: "127.0.0.1:40001".into(),
                    state: NodeState::Healthy,
                    reason: String::new(),
                    reachable: true,
                    last_seen_ms: 120,
                    capacity_bytes: 1 << 30,
                    used_bytes: 1 << 28,
                    used_percent: 25.0,
                    chunks: 40,
                    load: 1200,
                    errors: 0,
                },
                NodeReport {
                    id: NodeId(2),
                    addr: "127.0.0.1:40002".into(),
                    state: NodeState::Suspect,
                    reason: "1 failed probe: timed out: rpc deadline".into(),
                    reachable: false,
                    last_seen_ms: 4_500,
                    capacity_bytes: 1 << 30,
                    used_bytes: 0,
                    used_percent: 0.0,
                    chunks: 37,
                    load: 0,
                    errors: 2,
                },
            ],
            repair: RepairProgress {
                queued_chunks: 3,
                queued_bytes: 3 << 20,
                in_flight: 2,
                done_chunks: 5,
                done_bytes: 5 << 20,
                failed: 0,
                bytes_per_sec: 1 << 20,
                trimmed: 0,
            },
        }
    }

    #[test]
    fn table_snapshot() {
        let expected = "\
MosaicFS cluster 00112233445566778899aabbccddeeff  master 127.0.0.1:9420  replication n=3 w=3 r=1
verdict: DEGRADED
  - node n2 is SUSPECT
  - 3 chunks under-replicated

NODE  STATE    ADDRESS          LAST SEEN  CAPACITY  USED   CHUNKS  LOAD  ERRORS  REASON
n1    HEALTHY  127.0.0.1:40001  120ms ago  1.0 GiB   25.0%  40      1200  0
n2    SUSPECT  127.0.0.1:40002  4.5s ago   1.0 GiB   0.0%   37      0     2       1 failed probe: timed out: rpc deadline

files 12  dirs 3  data 5.5 MiB
chunks 40  under-replicated 3  lost 0
re-replication: 3 chunks (3.0 MiB) to copy, 2 running, 5 done (5.0 MiB), 1.0 MiB/s, 0 failed, 0 surplus removed
";
        assert_eq!(render_table(&report()), expected);
    }

    #[test]
    fn table_without_nodes() {
        let mut r = report();
        r.nodes.clear();
        r.verdict = Verdict::Unavailable;
        r.reasons = vec!["no chunkserver registered".into()];
        let text = render_table(&r);
        assert!(text.contains("verdict: UNAVAILABLE\n  - no chunkserver registered\n"));
        assert!(text.contains("\nno chunkservers registered\n"), "{text}");
    }

    #[test]
    fn json_snapshot() {
        let expected = r#"{
  "verdict": "DEGRADED",
  "reasons": [
    "node n2 is SUSPECT",
    "3 chunks under-replicated"
  ],
  "master": "127.0.0.1:9420",
  "cluster_id": "00112233445566778899aabbccddeeff",
  "replication": {
    "n": 3,
    "w": 3,
    "r": 1
  },
  "files": 12,
  "dirs": 3,
  "logical_bytes": 5767168,
  "chunks": {
    "total": 40,
    "under_replicated": 3,
    "lost": 0
  },
  "nodes": [
    {
      "id": "n1",
      "addr": "127.0.0.1:40001",
      "state": "HEALTHY",
      "reason": "",
      "reachable": true,
      "last_seen_ms": 120,
      "capacity_bytes": 1073741824,
      "used_bytes": 268435456,
      "used_percent": 25.0,
      "chunks": 40,
      "load": 1200,
      "errors": 0
    },
    {
      "id": "n2",
      "addr": "127.0.0.1:40002",
      "state": "SUSPECT",
      "reason": "1 failed probe: timed out: rpc deadline",
      "reachable": false,
      "last_seen_ms": 4500,
      "capacity_bytes": 1073741824,
      "used_bytes": 0,
      "used_percent": 0.0,
      "chunks": 37,
      "load": 0,
      "errors": 2
    }
  ],
  "repair": {
    "queued_chunks": 3,
    "queued_bytes": 3145728,
    "in_flight": 2,
    "done_chunks": 5,
    "done_bytes": 5242880,
    "failed": 0,
    "bytes_per_sec": 1048576,
    "trimmed": 0
  }
}
"#;
        assert_eq!(render_json(&report()), expected);
    }

    #[test]
    fn json_round_trips_and_keeps_the_contract() {
        let json = render_json(&report());
        let back: StatusReport = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, report());
        let value: serde_json::Value = serde_json::from_str(&json).expect("parses");
        assert_eq!(value["verdict"], "DEGRADED");
        assert!(value["chunks"]["total"].is_u64());
        assert!(value["chunks"]["under_replicated"].is_u64());
        assert!(value["chunks"]["lost"].is_u64());
        assert_eq!(value["nodes"][1]["id"], "n2");
        assert_eq!(value["nodes"][1]["addr"], "127.0.0.1:40002");
        assert_eq!(value["nodes"][1]["state"], "SUSPECT");
    }

    #[test]
    fn bytes_for_people() {
        let table = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (64 << 30, "64.0 GiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (bytes, text) in table {
            assert_eq!(human_bytes(bytes), text);
        }
    }
}
