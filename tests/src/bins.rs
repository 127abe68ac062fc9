//! Locating the MosaicFS binaries the tests run.
//!
//! Test executables live in `target/<profile>/deps/`; the workspace binaries are built into
//! `target/<profile>/`, so the binaries are looked up next to the test executable's parent
//! directory. `MOSAIC_BIN_DIR` overrides the directory (e.g. to test a release build).
//! A missing binary is a panic that says how to build it, never a confusing spawn error.

use std::path::PathBuf;

pub const MASTER: &str = "mosaic-master";
pub const CHUNKSERVER: &str = "mosaic-chunkserver";
pub const MOUNT: &str = "mosaic-mount";
pub const SENTINEL: &str = "mosaic-sentinel";

/// The directory holding the workspace binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MOSAIC_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable's own path");
    let dir = exe.parent().expect("the test executable has a directory");
    // `target/<profile>/deps/<test>` -> `target/<profile>`; a test run from elsewhere (e.g. a
    // copied executable) looks beside itself.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of binary `name`; panics with the build command when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "binary {name} not found at {}: build the binaries first: cargo build --workspace --bins",
            path.display()
        );
    }
    path
}
