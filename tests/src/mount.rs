//! A real FUSE mount: a `mosaic-mount` child process and its mountpoint.
//!
//! A mount is ready when its mountpoint shows in `/proc/self/mountinfo`. Dropping a [`Mount`]
//! always leaves no mount behind, also while a failed test unwinds: `fusermount3 -u`, and if
//! that does not work (a stopped or wedged client), abort the FUSE connection and detach
//! lazily (`fusermount3 -uz`), then kill and reap the client.
//!
//! Mount tests call [`require_fuse`] first: it skips the test (with a printed reason) on a
//! machine without FUSE, unless `CI=true` or `MOSAIC_REQUIRE_FUSE=1` make FUSE mandatory, and
//! it serializes mount tests across test threads and test binaries with a file lock, because
//! several clusters plus FUSE clients at once overload a 2-core machine into timeouts.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::Daemon;
use crate::shell::try_run;
use crate::wait::{POLL_INTERVAL, log_tail, wait_until};

/// How long a client may take to mount: a hello to the master and the FUSE handshake; the
/// margin covers a debug build on a loaded CI machine.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(30);
/// How long `fusermount3 -u` plus the client's exit may take.
pub const UNMOUNT_DEADLINE: Duration = Duration::from_secs(30);
/// How long a mount test waits for the other mount tests to finish (they run one at a time).
const FUSE_LOCK_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Options of one mount.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// `--attr-timeout-ms`; the client's default when `None`.
    pub attr_timeout_ms: Option<u64>,
    /// Mount with this key file instead of the cluster's own.
    pub key_file: Option<PathBuf>,
    /// Mount with this TLS credential directory instead of the cluster's client credential.
    pub credentials: Option<PathBuf>,
    /// Further flags passed to `mosaic-mount` before the mountpoint.
    pub extra_args: Vec<String>,
}

/// A mount attempt that ended without a mount.
#[derive(Debug)]
pub struct MountFailed {
    /// The client's exit status (`None` if it had to be killed).
    pub status: Option<ExitStatus>,
    /// The client's whole log.
    pub log: String,
}

/// A running `mosaic-mount` and its mountpoint.
pub struct Mount {
    path: PathBuf,
    daemon: Daemon,
    mounted: bool,
    /// Keeps the cluster's temp dir (which holds the mountpoint) alive until the mount is
    /// gone, whatever order the test drops things in: removing a directory tree through a
    /// live mount would delete the cluster's files, or hang.
    _root: Arc<TempDir>,
}

/// One line of `/proc/self/mountinfo`, the fields the harness needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// `major:minor` of the mounted filesystem; for FUSE the minor is the connection number.
    pub dev: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\')
            .then(|| bytes.get(i + 1..i + 4))
            .flatten()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountInfo {
                dev: fields.get(2)?.to_string(),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fs_type: fields.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

/// The mount at exactly `path`, if any (the last one, as mounts stack).
pub fn mount_at(path: &Path) -> Option<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
}

fn fusermount() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("fusermount3"))
        .find(|p| p.is_file())
}

/// Why FUSE mounts cannot run here, or `None` when they can.
pub fn fuse_unavailable_reason() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("cannot open /dev/fuse: {e}"));
    }
    if fusermount().is_none() {
        return Some("fusermount3 is not installed (apt-get install fuse3)".into());
    }
    None
}

/// Held by a mount test while it runs: mount tests run one at a time.
pub struct FuseGuard {
    _lock: File,
}

fn fuse_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("MOSAIC_REQUIRE_FUSE").is_ok_and(|v| v == "1")
}

/// Call first in every test that mounts. `None` means "skip this test" (the reason is
/// printed); with `CI=true` or `MOSAIC_REQUIRE_FUSE=1` a missing FUSE fails the test instead.
pub fn require_fuse(test: &str) -> Option<FuseGuard> {
    if let Some(reason) = fuse_unavailable_reason() {
        if fuse_required() {
            panic!("{test}: FUSE is required (CI=true or MOSAIC_REQUIRE_FUSE=1) but {reason}");
        }
        eprintln!("SKIPPED {test}: {reason} (set MOSAIC_REQUIRE_FUSE=1 to make this a failure)");
        return None;
    }
    let path = std::env::temp_dir().join("mosaic-tests-fuse.lock");
    let lock = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    wait_until(
        FUSE_LOCK_DEADLINE,
        "the other mount tests to finish",
        || {
            // SAFETY: flock on a descriptor we own; LOCK_NB so the wait keeps its deadline.
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
        },
    );
    Some(FuseGuard { _lock: lock })
}

impl Mount {
    /// Starts `mosaic-mount` on `path` and waits until the mount is in place.
    pub(crate) fn start(
        root: Arc<TempDir>,
        path: PathBuf,
        master: &str,
        key_file: &Path,
        credentials: &Path,
        opts: &MountOptions,
        log: &Path,
    ) -> Result<Mount, MountFailed> {
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create mountpoint {}: {e}", path.display()));
        let mut cmd = Command::new(crate::bins::bin(crate::bins::MOUNT));
        cmd.arg("--master")
            .arg(master)
            .arg("--key-file")
            .arg(key_file)
            .arg("--credentials")
            .arg(credentials);
        if let Some(ms) = opts.attr_timeout_ms {
            cmd.arg("--attr-timeout-ms").arg(ms.to_string());
        }
        cmd.args(&opts.extra_args).arg(&path);
        let daemon = Daemon::spawn("mosaic-mount", cmd, log);
        let mut mount = Mount {
            path,
            daemon,
            mounted: false,
            _root: root,
        };
        let start = Instant::now();
        loop {
            if mount_at(&mount.path).is_some_and(|m| m.fs_type.starts_with("fuse")) {
                mount.mounted = true;
                return Ok(mount);
            }
            if let Some(status) = mount.daemon.exited() {
                return Err(MountFailed {
                    status: Some(status),
                    log: std::fs::read_to_string(log).unwrap_or_default(),
                });
            }
            if start.elapsed() >= MOUNT_DEADLINE {
                panic!(
                    "timed out after {MOUNT_DEADLINE:?} waiting for {} to be mounted\n--- tail of {} ---\n{}",
                    mount.path.display(),
                    log.display(),
                    log_tail(log)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The client's log file.
    pub fn log(&self) -> &Path {
        self.daemon.log()
    }

    /// This mount's line of mountinfo; panics if it is not mounted.
    pub fn info(&self) -> MountInfo {
        mount_at(&self.path).unwrap_or_else(|| panic!("{} is not mounted", self.path.display()))
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- tail of {} ---\n{}",
            self.log().display(),
            log_tail(self.log())
        )
    }

    fn wait_gone_and_exited(&mut self, how: &str) -> ExitStatus {
        let start = Instant::now();
        while mount_at(&self.path).is_some() {
            if start.elapsed() >= UNMOUNT_DEADLINE {
                self.fail(&format!(
                    "{} still mounted after {how}",
                    self.path.display()
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        self.mounted = false;
        let left = UNMOUNT_DEADLINE.saturating_sub(start.elapsed());
        match self.daemon.wait_exit(left) {
            Some(status) => status,
            None => self.fail(&format!(
                "mosaic-mount did not exit within {UNMOUNT_DEADLINE:?} after {how}"
            )),
        }
    }

    /// Unmounts with `fusermount3 -u` and waits for the client to exit; returns its exit
    /// status (tests assert it is a success).
    pub fn unmount(mut self) -> ExitStatus {
        let fusermount = fusermount().expect("fusermount3 (checked by require_fuse)");
        let mut cmd = Command::new(fusermount);
        cmd.arg("-u").arg(&self.path);
        match try_run(cmd, UNMOUNT_DEADLINE) {
            Ok(out) if out.status.success() => {}
            Ok(out) => self.fail(&format!(
                "fusermount3 -u {} failed ({}): {}",
                self.path.display(),
                out.status,
                out.stderr_text()
            )),
            Err(e) => self.fail(&e),
        }
        self.wait_gone_and_exited("fusermount3 -u")
    }

    /// Unmounts by SIGTERM to the client (as Ctrl-C or a service manager would) and waits for
    /// the mount to go and the client to exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.daemon.signal(libc::SIGTERM);
        self.wait_gone_and_exited("SIGTERM")
    }

    /// Kills the client with SIGKILL and waits for the mount to disappear, as the client's
    /// auto-unmount promises. Returns the client's exit status.
    pub fn kill_client(mut self) -> ExitStatus {
        self.daemon.signal(libc::SIGKILL);
        self.wait_gone_and_exited("SIGKILL of the client")
    }

    /// Best-effort removal of the mount, for Drop: never panics.
    fn force_unmount(&mut self) {
        let Some(info) = mount_at(&self.path) else {
            return;
        };
        let Some(fusermount) = fusermount() else {
            return;
        };
        let mut cmd = Command::new(&fusermount);
        cmd.arg("-u").arg(&self.path);
        let clean = try_run(cmd, Duration::from_secs(10)).is_ok_and(|o| o.status.success());
        if clean {
            return;
        }
        // The client is stopped or wedged: abort the FUSE connection so that no process can
        // block on it, then detach the mountpoint lazily.
        if let Some((_, minor)) = info.dev.split_once(':') {
            let abort = Path::new("/sys/fs/fuse/connections")
                .join(minor)
                .join("abort");
            let _ = std::fs::write(abort, b"1");
        }
        let mut cmd = Command::new(&fusermount);
        cmd.arg("-uz").arg(&self.path);
        let _ = try_run(cmd, Duration::from_secs(10));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted || mount_at(&self.path).is_some() {
            self.force_unmount();
        }
        self.daemon.terminate();
        if std::thread::panicking() {
            eprintln!(
                "--- tail of {} ---\n{}",
                self.daemon.log().display(),
                log_tail(self.daemon.log())
            );
        }
    }
}

/// What most mount tests start from: the FUSE lock, a default cluster and one mount.
/// Fields drop in declaration order: the mount first, then the cluster, then the lock.
pub struct MountedCluster {
    pub mount: Mount,
    pub cluster: crate::TestCluster,
    pub fuse: FuseGuard,
}

impl MountedCluster {
    /// `None` when FUSE is unavailable and not required (the test then returns early).
    pub fn start(test: &str, opts: crate::ClusterOptions) -> Option<MountedCluster> {
        let fuse = require_fuse(test)?;
        let mut cluster = crate::TestCluster::start(opts);
        let mount = cluster.mount(MountOptions::default());
        Some(MountedCluster {
            mount,
            cluster,
            fuse,
        })
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    50 36 0:52 / /tmp/x/mnt-0 rw,nosuid,nodev,relatime shared:1 - fuse.mosaic mosaic rw,user_id=0\n";
        let infos = parse_mountinfo(text);
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(infos[0].fs_type, "ext3");
        assert_eq!(infos[1].dev, "0:52");
        assert_eq!(infos[1].fs_type, "fuse.mosaic");
    }

    #[test]
    fn the_root_filesystem_is_mounted() {
        assert!(mount_at(Path::new("/")).is_some());
        assert!(mount_at(Path::new("/definitely/not/a/mount")).is_none());
    }
}
