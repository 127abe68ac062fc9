//! The MosaicFS end-to-end test harness.
//!
//! [`TestCluster`] starts a real cluster as child processes (one `mosaic-master`, N
//! `mosaic-chunkserver`s) on `127.0.0.1:0` in a temporary directory, and [`Mount`] runs a real
//! `mosaic-mount` FUSE client against it. Child processes are used rather than in-process
//! servers because the failure tests need real fault injection: `kill -9`, SIGSTOP/SIGCONT, a
//! restart that reopens the same data directory.
//!
//! Rules the harness keeps, and that tests built on it may rely on:
//! - every wait has a deadline and panics with a message naming what it waited for, plus the
//!   tail of the relevant log ([`wait_until`], [`wait_for`]);
//! - nothing leaks between tests: dropping a [`Mount`] or a [`TestCluster`] — also while
//!   unwinding from a failed assertion — unmounts (lazily if it must), kills and reaps every
//!   child; children also die with the test thread that spawned them (`PR_SET_PDEATHSIG`);
//! - only loopback addresses are used.
//!
//! The binaries are not built by `cargo test -p mosaic-tests` (cargo builds only the binaries
//! of the package under test): run `cargo build --workspace --bins` first, or use
//! `cargo test --workspace`, which builds the binaries of every member. See [`bins`].

pub mod bins;
pub mod cluster;
pub mod mem_nodes;
pub mod mount;
mod process;
pub mod shell;
pub mod sys;
pub mod tree;
pub mod wait;

pub use cluster::{ClusterOptions, TestCluster};
pub use mount::{FuseGuard, Mount, MountFailed, MountOptions, MountedCluster, require_fuse};
pub use shell::{sh, sh_in, sh_output};
pub use wait::{log_tail, wait_for, wait_until, wait_until_logged};

/// The chunk size test clusters use unless told otherwise: 1 MiB, so that a file of a few
/// MiB crosses several chunk boundaries cheaply.
pub const TEST_CHUNK_SIZE: u64 = 1024 * 1024;
