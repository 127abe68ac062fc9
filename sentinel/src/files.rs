//! `mosaic-sentinel status --node N --files`: which files and chunks one node holds, as the
//! master records them (the paper's state-query client).
//!
//! [`NodeFiles`] is the typed report; [`build`] (grouping the master's answer by file) and
//! [`render_table`] / [`render_json`] are pure and snapshot-tested; [`fetch`] is the only
//! part that talks to the network (the master's `node_files`, page by page). The listing is
//! the master's view: what the node reports holding is in its status row; this never asks
//! the node itself and never changes anything.

use common::types::NodeFileChunk;
use common::{ChunkId, FsError, InodeId, NodeId, Version, rpc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Replicas asked for per `node_files` page: a few hundred KiB of answer at most (paths
/// included), many round trips fewer than one per file.
pub const FILES_PAGE: u32 = 1000;

/// One chunk replica of a file on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkOnNode {
    pub chunk: ChunkId,
    /// The chunk's index in its file (chunk `i` covers bytes `[i·C, (i+1)·C)`).
    pub index: u64,
    /// The newest version this replica confirmed (0: written, never committed).
    pub version: Version,
    /// Serves reads: at the chunk's committed version and not reported bad.
    pub current: bool,
}

/// One file with at least one chunk replica on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOnNode {
    /// One absolute path (names as UTF-8, invalid bytes replaced; a hard-linked file shows
    /// one of its names); `None` when the file has no name left (unlinked while open).
    pub path: Option<String>,
    pub ino: InodeId,
    /// Its replicas on the node, by index.
    pub chunks: Vec<ChunkOnNode>,
}

/// What `status --node N --files` shows; rendering is a pure function of this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFiles {
    /// The node in its `n<hex>` form.
    #[serde(with = "crate::status::node_id_text")]
    pub node: NodeId,
    /// The node's address as the master knows it.
    pub addr: String,
    /// Chunk replicas the master records on the node.
    pub replicas: u64,
    /// Of those, replicas that are not current (stale or reported bad).
    pub stale: u64,
    /// Files by path (unnamed ones last), each with its replicas on the node.
    pub files: Vec<FileOnNode>,
}

/// Groups the master's answer by file. Pure.
pub fn build(node: NodeId, addr: &str, entries: &[NodeFileChunk]) -> NodeFiles {
    let mut by_file: BTreeMap<InodeId, FileOnNode> = BTreeMap::new();
    for entry in entries {
        let r = &entry.replica;
        let file = by_file.entry(r.ino).or_insert_with(|| FileOnNode {
            path: entry
                .path
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            ino: r.ino,
            chunks: Vec::new(),
        });
        file.chunks.push(ChunkOnNode {
            chunk: r.chunk,
            index: r.index,
            version: r.version,
            current: r.current,
        });
    }
    let mut files: Vec<FileOnNode> = by_file.into_values().collect();
    for file in &mut files {
        file.chunks.sort_by_key(|c| c.index);
    }
    // Named files by path, then unnamed ones by inode.
    files.sort_by(|a, b| {
        (a.path.is_none(), &a.path, a.ino).cmp(&(b.path.is_none(), &b.path, b.ino))
    });
    NodeFiles {
        node,
        addr: addr.to_string(),
        replicas: entries.len() as u64,
        stale: entries.iter().filter(|e| !e.replica.current).count() as u64,
        files,
    }
}

/// The report as pretty JSON with a trailing newline.
pub fn render_json(report: &NodeFiles) -> String {
    // Plain structs of strings and numbers always serialize; never panic if that changes.
    let mut out = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        format!(
            "{{\"node\": \"{}\", \"error\": \"cannot serialize: {e}\"}}",
            report.node
        )
    });
    out.push('\n');
    out
}

/// The report as a table: one row per replica, so it greps by path or chunk id.
pub fn render_table(report: &NodeFiles) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} {}: {} files, {} chunk replicas ({} not current)",
        report.node,
        report.addr,
        report.files.len(),
        report.replicas,
        report.stale
    );
    if report.files.is_empty() {
        out.push_str("no chunk replicas recorded on this node\n");
        return out;
    }
    out.push('\n');
    let header = ["PATH", "INODE", "INDEX", "CHUNK", "VERSION", "CURRENT"].map(String::from);
    let mut rows = Vec::new();
    for file in &report.files {
        let path = file.path.clone().unwrap_or_else(|| "(unlinked)".into());
        for c in &file.chunks {
            rows.push([
                path.clone(),
                file.ino.to_string(),
                c.index.to_string(),
                c.chunk.to_string(),
                c.version.0.to_string(),
                if c.current { "yes" } else { "no" }.to_string(),
            ]);
        }
    }
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Fetches the node's address (from the master's summary) and every page of its
/// `node_files`, each call within `deadline`. `NotFound` when the master does not know
/// the node.
pub async fn fetch(
    master: &str,
    tls: &common::tls::Tls,
    node: NodeId,
    deadline: Duration,
) -> Result<NodeFiles, FsError> {
    let client = rpc::connect_master_admin(master, tls, deadline).await?;
    let summary = client.cluster_summary(rpc::ctx(deadline)).await??;
    let Some(info) = summary.nodes.iter().find(|n| n.node == node) else {
        return Err(FsError::NotFound);
    };
    let mut entries = Vec::new();
    let mut after = ChunkId(0);
    loop {
        let page = client
            .node_files(rpc::ctx(deadline), node, after, FILES_PAGE)
            .await??;
        let full = page.len() == FILES_PAGE as usize;
        if let Some(last) = page.last() {
            after = last.replica.chunk;
        }
        entries.extend(page);
        if !full {
            break;
        }
    }
    Ok(build(node, &info.addr, &entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::types::NodeReplica;
    use serde_bytes::ByteBuf;

    fn entry(
        chunk: u64,
        ino: u64,
        index: u64,
        version: u64,
        current: bool,
        path: Option<&str>,
    ) -> NodeFileChunk {
        NodeFileChunk {
            replica: NodeReplica {
                chunk: ChunkId(chunk),
                ino: InodeId(ino),
                index,
                version: Version(version),
                current,
            },
            path: path.map(|p| ByteBuf::from(p.as_bytes().to_vec())),
        }
    }

    fn report() -> NodeFiles {
        build(
            NodeId(2),
            "127.0.0.1:40002",
            &[
                entry(0x10, 7, 1, 3, true, Some("/dir/big.bin")),
                entry(0x11, 9, 0, 2, false, None),
                entry(0x0f, 7, 0, 3, true, Some("/dir/big.bin")),
                entry(0x12, 5, 0, 1, true, Some("/a.txt")),
            ],
        )
    }

    #[test]
    fn build_groups_by_file_and_sorts() {
        let r = report();
        assert_eq!((r.replicas, r.stale), (4, 1));
        let files: Vec<(Option<&str>, u64, Vec<u64>)> = r
            .files
            .iter()
            .map(|f| {
                (
                    f.path.as_deref(),
                    f.ino.0,
                    f.chunks.iter().map(|c| c.index).collect(),
                )
            })
            .collect();
        assert_eq!(
            files,
            vec![
                (Some("/a.txt"), 5, vec![0]),
                (Some("/dir/big.bin"), 7, vec![0, 1]),
                (None, 9, vec![0]),
            ]
        );
    }

    #[test]
    fn table_snapshot() {
        let expected = "\
node n2 127.0.0.1:40002: 3 files, 4 chunk replicas (1 not current)

PATH          INODE  INDEX  CHUNK  VERSION  CURRENT
/a.txt        i5     0      c12    1        yes
/dir/big.bin  i7     0      cf     3        yes
/dir/big.bin  i7     1      c10    3        yes
(unlinked)    i9     0      c11    2        no
";
        assert_eq!(render_table(&report()), expected);
        let empty = build(NodeId(3), "127.0.0.1:1", &[]);
        assert_eq!(
            render_table(&empty),
            "node n3 127.0.0.1:1: 0 files, 0 chunk replicas (0 not current)\n\
             no chunk replicas recorded on this node\n"
        );
    }

    #[test]
    fn json_snapshot_and_round_trip() {
        let r = build(
            NodeId(2),
            "127.0.0.1:40002",
            &[
                entry(0x12, 5, 0, 1, true, Some("/a.txt")),
                entry(0x11, 9, 0, 2, false, None),
            ],
        );
        let expected = r#"{
  "node": "n2",
  "addr": "127.0.0.1:40002",
  "replicas": 2,
  "stale": 1,
  "files": [
    {
      "path": "/a.txt",
      "ino": 5,
      "chunks": [
        {
          "chunk": 18,
          "index": 0,
          "version": 1,
          "current": true
        }
      ]
    },
    {
      "path": null,
      "ino": 9,
      "chunks": [
        {
          "chunk": 17,
          "index": 0,
          "version": 2,
          "current": false
        }
      ]
    }
  ]
}
"#;
        let json = render_json(&r);
        assert_eq!(json, expected);
        let back: NodeFiles = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, r);
    }
}
