//! `DATA/node.toml`: which node this data directory is and which cluster it belongs to.
//!
//! Written (durably) after the first registration, read at every start. It keeps a node's id
//! across restarts and stops a disk of one cluster from being attached to another: a
//! directory whose file names another cluster, or whose file is unreadable, is refused with
//! one line naming the directory, never silently re-registered.

use anyhow::Context as _;
use common::{ClusterId, NodeId, durable};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

pub const FILE_NAME: &str = "node.toml";

/// A registered data directory's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node: NodeId,
    pub cluster: ClusterId,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    /// The node id the master assigned.
    node: u64,
    /// The cluster id in hex.
    cluster: String,
}

/// Reads `node.toml`; `None` for a directory never registered.
pub fn load(dir: &Path) -> anyhow::Result<Option<NodeIdentity>> {
    let path = dir.join(FILE_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!(
            "refusing data directory {}: cannot read {FILE_NAME}: {e}",
            dir.display()
        ),
    };
    let unreadable = |why: String| {
        anyhow::anyhow!(
            "refusing data directory {}: {FILE_NAME} is unreadable ({why}); \
             it does not look like a MosaicFS chunkserver directory",
            dir.display()
        )
    };
    let file: NodeFile = toml::from_str(&text)
        .map_err(|e| unreadable(e.to_string().lines().next().unwrap_or("").to_string()))?;
    let cluster = ClusterId::from_hex(&file.cluster).ok_or_else(|| {
        unreadable(format!(
            "cluster id {:?} is not 32 hex digits",
            file.cluster
        ))
    })?;
    Ok(Some(NodeIdentity {
        node: NodeId(file.node),
        cluster,
    }))
}

/// Writes `node.toml` durably: temp file, fsync, rename, fsync the directory.
pub fn save(dir: &Path, id: &NodeIdentity) -> anyhow::Result<()> {
    let text = format!(
        "# MosaicFS chunkserver identity, written at registration. Do not edit.\n{}",
        toml::to_string(&NodeFile {
            node: id.node.0,
            cluster: id.cluster.to_hex(),
        })
        .context("encode node.toml")?
    );
    let path = dir.join(FILE_NAME);
    durable::write_atomic(&path, text.as_bytes(), durable::MODE_DEFAULT)
        .with_context(|| format!("write {}", path.display()))
}

/// The identity after a registration: refuses a directory that belongs to another cluster.
pub fn after_registration(
    dir: &Path,
    existing: Option<NodeIdentity>,
    node: NodeId,
    cluster: ClusterId,
) -> anyhow::Result<NodeIdentity> {
    if let Some(old) = existing.filter(|old| old.cluster != cluster) {
        anyhow::bail!(
            "refusing data directory {}: it belongs to cluster {}, but the master serves cluster {}",
            dir.display(),
            old.cluster,
            cluster
        );
    }
    Ok(NodeIdentity { node, cluster })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
        let id = NodeIdentity {
            node: NodeId(42),
            cluster: ClusterId::random(),
        };
        save(dir.path(), &id).expect("save");
        assert_eq!(load(dir.path()).expect("load"), Some(id));
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(FILE_NAME)],
            "no temp file left"
        );
    }

    #[test]
    fn unreadable_file_is_refused_naming_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [
            "garbage",
            "node = 1\ncluster = 'xyz'\n",
            "node = 1\n",
            "node = 1\ncluster = '00000000000000000000000000000000'\nextra = 2\n",
        ] {
            fs::write(dir.path().join(FILE_NAME), bad).expect("write");
            let err = load(dir.path()).expect_err(bad).to_string();
            assert!(err.contains(&dir.path().display().to_string()), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn another_cluster_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mine = NodeIdentity {
            node: NodeId(3),
            cluster: ClusterId([1; 16]),
        };
        let err = after_registration(dir.path(), Some(mine), NodeId(3), ClusterId([2; 16]))
            .expect_err("other cluster")
            .to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert_eq!(
            after_registration(dir.path(), Some(mine), NodeId(4), mine.cluster).expect("same"),
            NodeIdentity {
                node: NodeId(4),
                cluster: mine.cluster
            }
        );
        assert!(after_registration(dir.path(), None, NodeId(1), ClusterId([2; 16])).is_ok());
    }
}
