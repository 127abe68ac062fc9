//! One child process of the harness (a daemon or a mount client) with its log file.
//!
//! The child's stdout and stderr are appended to a log file so that a failed wait can show
//! them. Dropping a [`Daemon`] always kills and reaps the child: no test may leak a process
//! into the next. The child is also given `PR_SET_PDEATHSIG = SIGKILL`, so that it dies if
//! the test itself is killed (a CI timeout) before any destructor runs. That signal fires when
//! the *thread* that spawned the child exits, so spawn from the thread that owns the cluster
//! (the test thread), never from a short-lived helper thread.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::wait::{POLL_INTERVAL, log_tail};

/// How long a child gets to exit after SIGTERM before it is killed: daemons flush and close
/// their stores on SIGTERM, which takes well under a second; the margin is for a loaded CI box.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(10);

pub(crate) struct Daemon {
    name: String,
    log: PathBuf,
    child: Option<Child>,
    /// Exit status once reaped.
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Spawns `cmd` with its output appended to `log` (a header line marks each start).
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Daemon {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        let _ = writeln!(file, "===== harness: starting {name}: {cmd:?}");
        let err: File = file.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err));
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            cmd.env("RUST_BACKTRACE", "1");
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Daemon {
            name: name.to_string(),
            log: log.to_path_buf(),
            child: Some(child),
            status: None,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    pub(crate) fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// The exit status if the child has exited (reaping it), `None` while it runs.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.status {
            return Some(status);
        }
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                self.child = None;
                Some(status)
            }
            Ok(None) => None,
            Err(e) => panic!("wait for {}: {e}", self.name),
        }
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.exited().is_none() && self.child.is_some()
    }

    /// Sends `sig` to the running child; panics if it is not running.
    pub(crate) fn signal(&mut self, sig: i32) {
        let pid = match self.pid() {
            Some(pid) if self.exited().is_none() => pid,
            _ => panic!(
                "{} is not running (status {:?}); cannot send signal {sig}\n--- tail of {} ---\n{}",
                self.name,
                self.status,
                self.log.display(),
                log_tail(&self.log)
            ),
        };
        // SAFETY: plain syscall on a pid we own and have not reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            panic!(
                "kill({pid}, {sig}) for {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
    }

    /// Waits up to `deadline` for the child to exit.
    pub(crate) fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGKILL and reap. Safe to call on a child that already exited.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let mut child = self.child.take()?;
        // A stopped process dies of SIGKILL too; no SIGCONT needed.
        let _ = child.kill();
        let status = child.wait().ok();
        self.status = status;
        status
    }

    /// SIGTERM, wait up to [`TERM_GRACE`], then SIGKILL. Returns the exit status and whether
    /// the child exited on its own within the grace period.
    pub(crate) fn terminate(&mut self) -> (Option<ExitStatus>, bool) {
        if let Some(status) = self.exited() {
            return (Some(status), true);
        }
        if let Some(pid) = self.pid() {
            // SAFETY: plain syscalls on a pid we own and have not reaped yet. SIGCONT first so
            // that a paused child can act on the SIGTERM.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGTERM);
            }
        }
        match self.wait_exit(TERM_GRACE) {
            Some(status) => (Some(status), true),
            None => (self.kill(), false),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
