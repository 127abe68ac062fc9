//! The cluster's current data key as `mosaic-master rotate-key --state` recorded it: its id
//! and check value (never the key) in `STATE/data-key.current`, so that the master can tell
//! a mount which key it must hold and a mount with an older key file is refused
//! (docs/SECURITY.md, "Key rotation"). No file: the cluster was never rotated that way.
//!
//! This module only reads and writes that one small file; it never holds or logs a key.

use anyhow::Context as _;
use common::block::KeyRing;
use common::types::KeyStamp;
use serde_bytes::ByteBuf;
use std::path::{Path, PathBuf};

/// The file in the state directory.
pub const CURRENT_KEY_FILE: &str = "data-key.current";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(CURRENT_KEY_FILE)
}

/// Records `ring`'s newest key as the cluster's current key (atomically: a temp file,
/// fsync, rename, fsync of the directory).
pub fn record(state_dir: &Path, ring: &KeyRing) -> anyhow::Result<KeyStamp> {
    let id = ring.current().id;
    let check = ring
        .check_of(id)
        .context("the ring's current key is in the ring")?;
    let text = format!("{id} {}\n", hex(&check));
    let target = path(state_dir);
    common::durable::write_atomic(&target, text.as_bytes(), common::durable::MODE_PRIVATE)
        .with_context(|| format!("replace {}", target.display()))?;
    Ok(KeyStamp {
        id,
        check: ByteBuf::from(check.to_vec()),
    })
}

/// The recorded current key; `None` when no rotation was recorded.
pub fn load(state_dir: &Path) -> anyhow::Result<Option<KeyStamp>> {
    let file = path(state_dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
    };
    parse(&text).map(Some).with_context(|| {
        format!(
            "{} is damaged: run `mosaic-master rotate-key --state` again \
            or remove it",
            file.display()
        )
    })
}

fn parse(text: &str) -> anyhow::Result<KeyStamp> {
    let (id, check) = text
        .trim()
        .split_once(' ')
        .context("expected \"<key id> <check value in hex>\"")?;
    let id = id.parse().context("key id is not a number")?;
    let check = unhex(check).context("check value is not 64 hex digits")?;
    Ok(KeyStamp {
        id,
        check: ByteBuf::from(check),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::block::DataKey;

    #[test]
    fn records_and_loads_the_current_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("no file"), None);
        let mut ring = KeyRing::single(DataKey::random(0));
        ring.rotate();
        let stamp = record(dir.path(), &ring).expect("record");
        assert_eq!(stamp.id, 1);
        assert_eq!(load(dir.path()).expect("load"), Some(stamp.clone()));
        ring.check_current(stamp.id, &stamp.check)
            .expect("the ring has it");
        std::fs::write(path(dir.path()), "1 zz\n").expect("damage");
        let e = load(dir.path()).expect_err("damaged");
        assert!(format!("{e:#}").contains("damaged"), "{e:#}");
    }
}
