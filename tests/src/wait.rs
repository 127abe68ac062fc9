//! Waiting with a deadline.
//!
//! Tests never sleep for readiness: they poll a condition every [`POLL_INTERVAL`] until a
//! deadline, and a missed deadline is a panic naming what was awaited, with the tail of the
//! log that most likely explains why.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often conditions are polled: short enough that waits end promptly, long enough that
/// polling (often a file read or a `/proc` scan) costs nothing measurable.
pub const POLL_INTERVAL: Duration = Duration::from_millis(15);

/// Lines of a log shown when a wait fails.
pub const LOG_TAIL_LINES: usize = 40;

/// Polls `cond` until it is true; panics after `deadline` naming `what`.
pub fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(deadline, what, None, || cond().then_some(()))
}

/// Like [`wait_until`], and the panic message carries the tail of `log`.
pub fn wait_until_logged(
    deadline: Duration,
    what: &str,
    log: &Path,
    mut cond: impl FnMut() -> bool,
) {
    wait_for(deadline, what, Some(log), || cond().then_some(()))
}

/// Polls `f` until it yields a value and returns it; panics after `deadline` naming `what`
/// and showing the tail of `log` when one is given.
pub fn wait_for<T>(
    deadline: Duration,
    what: &str,
    log: Option<&Path>,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        if start.elapsed() >= deadline {
            let tail = log
                .map(|log| format!("\n--- tail of {} ---\n{}", log.display(), log_tail(log)))
                .unwrap_or_default();
            panic!("timed out after {deadline:?} waiting for {what}{tail}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The last [`LOG_TAIL_LINES`] lines of a log file, or why it could not be read.
pub fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[from..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_returns_the_value_once_ready() {
        let mut calls = 0;
        let got = wait_for(Duration::from_secs(5), "the third call", None, || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, 3);
    }

    #[test]
    fn a_missed_deadline_names_what_and_shows_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("daemon.log");
        std::fs::write(&log, "first line\nthe reason it failed\n").expect("write log");
        let result = std::panic::catch_unwind(|| {
            wait_until_logged(Duration::from_millis(50), "the moon", &log, || false)
        });
        let payload = result.expect_err("the wait must panic");
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("waiting for the moon"), "{message}");
        assert!(message.contains("the reason it failed"), "{message}");
    }

    #[test]
    fn log_tail_keeps_only_the_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("long.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).expect("write log");
        let tail = log_tail(&log);
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.ends_with("line 99"));
        assert!(log_tail(&dir.path().join("missing")).contains("cannot read"));
    }
}
