//! CPU time and memory of the MosaicFS processes, read from `/proc`.
//!
//! CPU seconds are `utime + stime` summed over the accounted processes, sampled before and
//! after a workload; the difference is what the workload cost the filesystem (client,
//! master, chunkservers, sentinel together). A process that starts or exits in between is
//! only partly counted; the daemons of a running cluster do neither. Peak memory is the
//! client's `VmHWM` (the kernel's high-water mark of its resident set since it started).
//! Parsing is pure and tested; reading `/proc` is a thin layer over it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which processes are MosaicFS processes.
#[derive(Clone, Debug)]
pub enum Accounted {
    /// Every process whose name starts with `mosaic-`, except this benchmark.
    ByName,
    /// Exactly these pids (e.g. the cluster `scripts/bench.sh` started, so that other
    /// clusters on a shared machine are not counted).
    Pids(Vec<u32>),
}

/// Fields of `/proc/PID/stat` the benchmark uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub comm: String,
    /// User plus system time in clock ticks.
    pub ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may itself contain
/// spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15), numbered from 1 with pid
    // as 1 and comm as 2; `rest[0]` is field 3.
    let utime: u64 = rest.get(14 - 3)?.parse().ok()?;
    let stime: u64 = rest.get(15 - 3)?.parse().ok()?;
    Some(ProcStat {
        comm,
        ticks: utime + stime,
    })
}

/// `VmHWM` of a `/proc/PID/status` text, in bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next()? {
        "kB" => value.checked_mul(1024),
        _ => None,
    }
}

/// The mountpoint a `mosaic-mount` command line mounts: its last argument that is not an
/// option (`mosaic-mount [--flags...] MOUNTPOINT`; the fstab helper form puts the
/// mountpoint second, before `-o OPTIONS`).
pub fn mountpoint_of(cmdline: &[String]) -> Option<PathBuf> {
    let args: Vec<&String> = cmdline.iter().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a.as_str() == "-o")
        && pos >= 2
    {
        return Some(PathBuf::from(args[pos - 1]));
    }
    args.last()
        .filter(|a| !a.starts_with('-'))
        .map(|a| PathBuf::from(a.as_str()))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn read_cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// `true` for a MosaicFS daemon or client (comm is cut to 15 bytes: `mosaic-chunkser`).
fn is_mosaic(comm: &str) -> bool {
    comm.starts_with("mosaic-") && !comm.starts_with("mosaic-bench")
}

impl Accounted {
    /// Current pids and CPU ticks of the accounted processes.
    fn sample(&self) -> BTreeMap<u32, ProcStat> {
        let pids = match self {
            Accounted::ByName => all_pids(),
            Accounted::Pids(p) => p.clone(),
        };
        pids.into_iter()
            .filter_map(|pid| Some((pid, read_stat(pid)?)))
            .filter(|(_, s)| matches!(self, Accounted::Pids(_)) || is_mosaic(&s.comm))
            .collect()
    }

    /// CPU seconds the accounted processes have used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks: u64 = self.sample().values().map(|s| s.ticks).sum();
        ticks as f64 / clock_ticks_per_second()
    }

    /// The `mosaic-mount` process serving `dir`: the one whose mountpoint is `dir` or an
    /// ancestor of it (the deepest such, if mounts nest).
    pub fn client_for(&self, dir: &Path) -> Option<u32> {
        let dir = dir.canonicalize().ok()?;
        self.sample()
            .into_iter()
            .filter(|(_, s)| s.comm.starts_with("mosaic-mount"))
            .filter_map(|(pid, _)| {
                let mnt = mountpoint_of(&read_cmdline(pid))?;
                let mnt = std::fs::canonicalize(&mnt).unwrap_or(mnt);
                dir.starts_with(&mnt)
                    .then_some((mnt.components().count(), pid))
            })
            .max()
            .map(|(_, pid)| pid)
    }
}

/// Peak resident set of `pid` in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names() {
        let line = "4242 (mosaic-chunkser) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                comm: "mosaic-chunkser".into(),
                ticks: 325
            })
        );
        let line = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                comm: "a) b (c)".into(),
                ticks: 7
            })
        );
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn vm_hwm_in_bytes() {
        let status =
            "Name:\tmosaic-mount\nVmPeak:\t  900 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(51200 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tkthreadd\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t12 MB\n"), None);
    }

    #[test]
    fn mountpoints_of_command_lines() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            mountpoint_of(&args(
                "mosaic-mount --master 127.0.0.1:9420 --key-file k --allow-other /mnt/m"
            )),
            Some(PathBuf::from("/mnt/m"))
        );
        assert_eq!(
            mountpoint_of(&args(
                "/sbin/mount.fuse.mosaic 127.0.0.1:9420 /mnt/m -o key_file=k"
            )),
            Some(PathBuf::from("/mnt/m"))
        );
        assert_eq!(mountpoint_of(&args("mosaic-mount --help")), None);
    }

    #[test]
    fn names_that_count() {
        assert!(is_mosaic("mosaic-mount"));
        assert!(is_mosaic("mosaic-chunkser"));
        assert!(!is_mosaic("mosaic-bench"));
        assert!(!is_mosaic("bash"));
    }
}
