//! Identifier newtypes. Every id that crosses a process boundary has its own type so that a
//! chunk id can never be passed where an inode id is expected. `Debug` prints short hex so
//! logs stay readable.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{:x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

id_type!(
    /// An inode number. `InodeId::ROOT` (1) is the root directory, as FUSE expects.
    InodeId,
    "i"
);
id_type!(
    /// A chunk: one replicated, fixed-maximum-size piece of one file.
    ChunkId,
    "c"
);
id_type!(
    /// A chunkserver. Assigned by the master at first registration and kept across restarts.
    NodeId,
    "n"
);
id_type!(
    /// A chunk version. The master bumps it for every write grant; replicas whose confirmed
    /// version is lower than the newest confirmed one are stale and never served.
    Version,
    "v"
);
id_type!(
    /// A client mount session, used for open-file references and locks.
    SessionId,
    "s"
);

impl InodeId {
    pub const ROOT: InodeId = InodeId(1);
}

impl NodeId {
    /// Parses the `n<hex>` or plain decimal form an admin may type.
    pub fn parse(text: &str) -> Option<NodeId> {
        match text.strip_prefix('n') {
            Some(hex) => u64::from_str_radix(hex, 16).ok().map(NodeId),
            None => text.parse().ok().map(NodeId),
        }
    }
}

impl ChunkId {
    /// The file name of this chunk on a chunkserver's disk. Derived only from the integer,
    /// so no chunk id can name a path outside the data directory.
    pub fn file_name(self) -> String {
        format!("{:016x}.chunk", self.0)
    }

    /// The fan-out subdirectory (256 of them) so that no directory grows huge.
    pub fn shard_dir(self) -> String {
        format!("{:02x}", self.0 & 0xff)
    }
}

/// A cluster's identity: random 128 bits chosen at `init`. A chunkserver data directory
/// records it so that a disk from another cluster is refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct ClusterId(pub [u8; 16]);

impl ClusterId {
    pub fn random() -> ClusterId {
        ClusterId(rand::random())
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<ClusterId> {
        let text = text.trim();
        if text.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ClusterId(out))
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_short_hex() {
        assert_eq!(format!("{:?}", ChunkId(255)), "cff");
        assert_eq!(format!("{}", NodeId(16)), "n10");
        assert_eq!(ChunkId(0x1234).file_name(), "0000000000001234.chunk");
        assert_eq!(ChunkId(0x1234).shard_dir(), "34");
    }

    #[test]
    fn node_id_parses_both_forms() {
        assert_eq!(NodeId::parse("n1f"), Some(NodeId(31)));
        assert_eq!(NodeId::parse("31"), Some(NodeId(31)));
        assert_eq!(NodeId::parse("x"), None);
    }

    #[test]
    fn cluster_id_hex_round_trip() {
        let id = ClusterId::random();
        assert_eq!(ClusterId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ClusterId::from_hex("zz"), None);
    }
}
