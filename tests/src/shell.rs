//! Running ordinary tools (cp, tar, diff, dd, ...) with a deadline.
//!
//! Each command runs in its own process group so that a deadline kills the whole pipeline,
//! not just the shell; output is collected by reader threads so that a chatty command can
//! never block on a full pipe while we poll for its exit.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::wait::POLL_INTERVAL;

/// Deadline of one shell command: generous, because a `cp -a` of a thousand files through a
/// debug-built FUSE client on a loaded 2-core CI machine takes tens of seconds.
pub const SHELL_DEADLINE: Duration = Duration::from_secs(300);

/// What a finished command produced.
#[derive(Debug)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CmdOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `cmd` to completion; kills its process group and panics after `deadline`.
pub fn run(cmd: Command, deadline: Duration) -> CmdOutput {
    try_run(cmd, deadline).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`run`], but a spawn failure or a missed deadline is an `Err` describing it (for
/// cleanup code, which must never panic).
pub fn try_run(mut cmd: Command, deadline: Duration) -> Result<CmdOutput, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let described = format!("{cmd:?}");
    let mut child = cmd.spawn().map_err(|e| format!("spawn {described}: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("wait for {described}: {e}")),
        }
        if start.elapsed() >= deadline {
            // SAFETY: plain syscall; the group id is our child's pid (process_group(0)).
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            return Err(format!(
                "timed out after {deadline:?} waiting for {described} to finish\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    Ok(CmdOutput {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

fn shell(dir: Option<&Path>, script: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    // -e: the first failing tool fails the script; -u: a typo in a variable name too.
    cmd.arg("-euc").arg(script);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd
}

/// Runs a shell script (with `set -eu`) and returns its result without judging it.
pub fn sh_output(script: &str) -> CmdOutput {
    run(shell(None, script), SHELL_DEADLINE)
}

/// Runs a shell script (with `set -eu`); panics with its output unless it exits 0.
/// Returns its stdout.
pub fn sh(script: &str) -> String {
    checked(script, run(shell(None, script), SHELL_DEADLINE))
}

/// [`sh`] with the working directory set to `dir`.
pub fn sh_in(dir: &Path, script: &str) -> String {
    checked(script, run(shell(Some(dir), script), SHELL_DEADLINE))
}

fn checked(script: &str, out: CmdOutput) -> String {
    if !out.status.success() {
        panic!(
            "command failed ({}): {script}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            out.stdout_text(),
            out.stderr_text()
        );
    }
    out.stdout_text()
}

/// Quotes `path` for a shell script.
pub fn q(path: &Path) -> String {
    let text = path.to_string_lossy();
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        assert_eq!(sh("echo hello; echo oops >&2"), "hello\n");
        let out = sh_output("echo err >&2; exit 3");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stderr_text(), "err\n");
    }

    #[test]
    fn a_failing_script_panics_with_its_output() {
        let result = std::panic::catch_unwind(|| sh("echo visible; false"));
        let payload = result.expect_err("must panic");
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("visible"), "{message}");
    }

    #[test]
    fn a_hung_pipeline_is_killed_at_the_deadline() {
        let start = Instant::now();
        let result = std::panic::catch_unwind(|| {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c").arg("sleep 30 | cat");
            run(cmd, Duration::from_millis(200))
        });
        assert!(result.is_err(), "the deadline must fail the command");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn quoting_survives_odd_names() {
        let path = Path::new("/tmp/it's a file");
        assert_eq!(sh(&format!("printf %s {}", q(path))), "/tmp/it's a file");
    }
}
