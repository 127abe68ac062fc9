//! `mosaic-mount` entry point: parse, optionally detach, mount; or run `reencrypt`.

use clap::Parser;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

fn main() {
    common::telemetry::init("info");
    // `mosaic-mount reencrypt ...`: the key-rotation pass, no FUSE (a mount's first
    // argument is a mountpoint or a source, never this word alone).
    if std::env::args_os().nth(1).is_some_and(|a| a == "reencrypt") {
        let cli = fs_client::reencrypt::ReencryptCli::parse_from(std::env::args_os().skip(1));
        if let Err(e) = cli
            .tls
            .args()
            .join_if_asked_blocking(common::tls::Role::Client)
        {
            eprintln!("mosaic-mount reencrypt: {e:#}");
            std::process::exit(2);
        }
        let (config, rate) = match cli.plan() {
            Ok(plan) => plan,
            Err(e) => {
                eprintln!("mosaic-mount reencrypt: {e:#}");
                std::process::exit(2);
            }
        };
        match fs_client::reencrypt::main(config, rate) {
            Ok(summary) if summary.complete() => return,
            Ok(_) => std::process::exit(3),
            Err(e) => {
                eprintln!("mosaic-mount reencrypt: {e:#}");
                std::process::exit(1);
            }
        }
    }
    let cli = fs_client::cli::Cli::parse();
    // Before the fork: a join token is redeemed in the foreground, its errors on stderr.
    if let Err(e) = cli
        .tls
        .args()
        .join_if_asked_blocking(common::tls::Role::Client)
    {
        eprintln!("mosaic-mount: {e:#}");
        std::process::exit(2);
    }
    let plan = match cli.plan() {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("mosaic-mount: {e:#}");
            std::process::exit(2);
        }
    };
    let ready_pipe = if plan.background { detach() } else { None };
    let metrics_addr_file = plan.metrics_addr_file.clone();
    let result = fs_client::mount(
        plan.config,
        &plan.mountpoint,
        metrics_addr_file.as_deref(),
        || {
            if let Some(fd) = &ready_pipe {
                let mut pipe = std::fs::File::from(fd.try_clone().expect("dup the ready pipe"));
                let _ = pipe.write_all(b"1");
            }
        },
    );
    if let Err(e) = result {
        eprintln!("mosaic-mount: {e:#}");
        std::process::exit(1);
    }
}

/// Forks before any thread exists. The parent waits until the child reports the mount live
/// (exit 0) or dies (exit 1), as mount(8) expects of a helper; the child continues.
fn detach() -> Option<OwnedFd> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe() writes two descriptors into the array we own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        eprintln!("mosaic-mount: cannot create a pipe to detach; staying in the foreground");
        return None;
    }
    // SAFETY: the descriptors were just created and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: called from main before the runtime or any other thread starts.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("mosaic-mount: fork failed; staying in the foreground");
            None
        }
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory-safety preconditions.
            unsafe { libc::setsid() };
            Some(write_end)
        }
        _child => {
            drop(write_end);
            let mut byte = [0u8; 1];
            let mounted = matches!(std::fs::File::from(read_end).read(&mut byte), Ok(1));
            std::process::exit(if mounted { 0 } else { 1 });
        }
    }
}
