//! The MosaicFS wire contract and shared primitives.
//!
//! Everything two MosaicFS processes must agree on lives here: identifier newtypes, the tarpc
//! service traits and their request/response types, the typed RPC error with its errno mapping,
//! the sealed block format (AES-256-GCM + BLAKE3), daemon configuration types and telemetry
//! setup. This crate must never depend on `fuser` or `rusqlite`: it is linked into every process.

pub mod audit;
pub mod authz;
pub mod block;
pub mod clean_eof;
pub mod config;
pub mod dirlock;
pub mod durable;
pub mod error;
pub mod ids;
pub mod join;
pub mod metrics;
pub mod preamble;
pub mod rpc;
pub mod telemetry;
pub mod tls;
pub mod types;

pub use error::{FsError, FsResult};
pub use ids::{ChunkId, ClusterId, InodeId, NodeId, SessionId, Version};
