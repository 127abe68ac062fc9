//! `mosaic-mount reencrypt`: the background pass that reseals every block still sealed with
//! an older data key, after `mosaic-master rotate-key` (docs/SECURITY.md, "Key rotation").
//!
//! It runs where the key file is (keys never leave clients): it connects like a mount, but
//! without FUSE, walks the namespace through the master (paged readdir, each inode once),
//! asks each file's chunk map and hands every chunk to [`ClientCore::reseal_chunk`], which
//! rewrites old blocks through the versioned write protocol (its module header has the
//! safety argument). It is idempotent: a chunk with only current blocks costs one raw read
//! and is never rewritten, so running it again after an interruption finishes the job and a
//! run on a done cluster writes nothing. It must never write without a grant, never change
//! a file's contents or size, and never hold more than one chunk in memory.

use crate::ClientCore;
use crate::core::reseal::Resealed;
use common::config::MountConfig;
use common::types::FileKind;
use common::{FsResult, InodeId};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Chunks asked for in one `chunk_map` call.
const MAP_PAGE: u64 = 64;
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(clap::Parser, Debug)]
#[command(
    name = "mosaic-mount reencrypt",
    bin_name = "mosaic-mount reencrypt",
    about = "Reseal every block still sealed with an older data key (after rotate-key)",
    long_about = "Reseal every block still sealed with an older data key.\n\n\
        Run it after `mosaic-master rotate-key`, with the rotated key file, on any client:\n  \
        mosaic-mount reencrypt --master 127.0.0.1:9420 --key-file data.key \
        --credentials .cluster/credentials/client --rate 50000000\n\n\
        Safe next to running mounts; run it again after an interruption to finish."
)]
pub struct ReencryptCli {
    /// The master's address, host:port.
    #[arg(long)]
    pub master: Option<String>,
    /// The cluster's data key file, after `mosaic-master rotate-key`.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// A TOML mount configuration file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Most plaintext bytes rewritten per second (default: unlimited).
    #[arg(long, value_name = "BYTES")]
    pub rate: Option<u64>,
    #[command(flatten)]
    pub tls: crate::cli::TlsFlags,
}

impl ReencryptCli {
    /// The mount configuration to connect with, and the rate limit.
    pub fn plan(self) -> anyhow::Result<(MountConfig, Option<u64>)> {
        use anyhow::Context as _;
        let mut config = match &self.config {
            Some(path) => common::config::load_toml(path)?,
            None => MountConfig::for_cli(
                self.master
                    .clone()
                    .context("no master given: use --master ADDR")?,
                self.key_file
                    .clone()
                    .context("no key file given: use --key-file FILE")?,
            ),
        };
        if let Some(master) = self.master {
            config.master = master;
        }
        if let Some(key_file) = self.key_file {
            config.key_file = key_file;
        }
        config.shared.apply_tls_flags(&self.tls.args());
        if self.rate == Some(0) {
            anyhow::bail!("--rate must be at least 1 byte per second");
        }
        Ok((config, self.rate))
    }
}

/// Counts of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub chunks: u64,
    pub chunks_rewritten: u64,
    pub blocks_rewritten: u64,
    pub bytes_rewritten: u64,
    /// Chunks another writer kept busy: left for the next run.
    pub chunks_busy: u64,
}

impl Summary {
    /// Whether the run left nothing under an older key (as far as it could see).
    pub fn complete(&self) -> bool {
        self.chunks_busy == 0
    }

    fn line(&self) -> String {
        format!(
            "{} files, {} chunks scanned; {} chunks ({} blocks, {} bytes) resealed; {} busy",
            self.files,
            self.chunks,
            self.chunks_rewritten,
            self.blocks_rewritten,
            self.bytes_rewritten,
            self.chunks_busy
        )
    }
}

/// How long to pause so that `bytes` written since `started` stay under `rate` bytes/s.
pub fn pace_delay(bytes: u64, elapsed: Duration, rate: Option<u64>) -> Duration {
    let Some(rate) = rate.filter(|r| *r > 0) else {
        return Duration::ZERO;
    };
    let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
    due.saturating_sub(elapsed)
}

/// Runs the pass over the whole namespace; `progress` gets a line now and then.
pub async fn run(
    core: &ClientCore,
    rate: Option<u64>,
    mut progress: impl FnMut(&str),
) -> FsResult<Summary> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut summary = Summary::default();
    let mut seen: HashSet<InodeId> = HashSet::new();
    let mut dirs = vec![InodeId::ROOT];
    while let Some(dir) = dirs.pop() {
        let mut after = 0;
        loop {
            let page = core.readdir(dir, after, false).await?;
            for entry in &page.entries {
                after = entry.cookie;
                if entry.name.as_slice() == b"." || entry.name.as_slice() == b".." {
                    continue;
                }
                // Hard links name an inode more than once.
                if !seen.insert(entry.ino) {
                    continue;
                }
                match entry.kind {
                    FileKind::Dir => dirs.push(entry.ino),
                    FileKind::File => {
                        summary.files += 1;
                        reseal_file(core, entry.ino, &mut summary, rate, started).await?;
                    }
                    _ => {}
                }
                if last_report.elapsed() >= PROGRESS_EVERY {
                    last_report = Instant::now();
                    progress(&format!("progress: {}", summary.line()));
                }
            }
            if page.end || page.entries.is_empty() {
                break;
            }
        }
    }
    let verdict = if summary.chunks_rewritten == 0 && summary.chunks_busy == 0 {
        "nothing to reseal: every block carries the newest key".to_string()
    } else if summary.complete() {
        "done: every block carries the newest key".to_string()
    } else {
        format!(
            "{} chunks were busy with other writers; run again to finish",
            summary.chunks_busy
        )
    };
    progress(&format!(
        "summary: {} in {:.1} s; {verdict}",
        summary.line(),
        started.elapsed().as_secs_f64()
    ));
    Ok(summary)
}

async fn reseal_file(
    core: &ClientCore,
    ino: InodeId,
    summary: &mut Summary,
    rate: Option<u64>,
    started: Instant,
) -> FsResult<()> {
    let mut from = 0;
    loop {
        let locs = match core.chunk_map(ino, from, MAP_PAGE).await {
            Ok(locs) => locs,
            // Deleted while we walked: nothing left to reseal.
            Err(common::FsError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        for loc in &locs {
            summary.chunks += 1;
            match core.reseal_chunk(ino, loc).await {
                Ok(Resealed::Current) => {}
                Ok(Resealed::Rewritten { blocks, bytes }) => {
                    summary.chunks_rewritten += 1;
                    summary.blocks_rewritten += u64::from(blocks);
                    summary.bytes_rewritten += bytes;
                }
                Ok(Resealed::Busy) => summary.chunks_busy += 1,
                Err(common::FsError::NotFound) => return Ok(()),
                Err(e) => return Err(e),
            }
            tokio::time::sleep(pace_delay(summary.bytes_rewritten, started.elapsed(), rate)).await;
        }
        // The map lists only chunks that exist; a page may end before the file does (holes).
        let size = core.getattr(ino).await?.size;
        from += MAP_PAGE;
        if from.saturating_mul(core.mount_info().chunk_size) >= size {
            return Ok(());
        }
    }
}

/// `mosaic-mount reencrypt`: connect, run the pass, print the summary.
pub fn main(config: MountConfig, rate: Option<u64>) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mosaic-reencrypt")
        .build()?;
    runtime.block_on(async {
        let core = crate::connect(&config).await?;
        let _keepalive = crate::core::spawn_keepalive(&core);
        let result = run(&core, rate, |line| println!("{line}")).await;
        core.goodbye().await;
        Ok(result?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_delay_table() {
        let s = Duration::from_secs;
        // (bytes, elapsed, rate, pause)
        let cases = [
            (0, s(0), Some(100), s(0)),
            (100, s(0), None, s(0)),
            (100, s(0), Some(100), s(1)),
            (300, s(1), Some(100), s(2)),
            (100, s(5), Some(100), s(0)),
        ];
        for (bytes, elapsed, rate, want) in cases {
            assert_eq!(
                pace_delay(bytes, elapsed, rate),
                want,
                "{bytes} {elapsed:?} {rate:?}"
            );
        }
    }

    #[test]
    fn flags_and_bad_input() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            ReencryptCli::try_parse_from(std::iter::once("reencrypt").chain(args.iter().copied()))
                .map_err(anyhow::Error::from)
                .and_then(|c| c.plan())
        };
        let (config, rate) =
            parse(&["--master", "h:1", "--key-file", "/k", "--rate", "10"]).expect("plan");
        assert_eq!(config.master, "h:1");
        assert_eq!(rate, Some(10));
        assert!(parse(&["--key-file", "/k"]).is_err(), "no master");
        assert!(parse(&["--master", "h:1"]).is_err(), "no key");
        assert!(parse(&["--master", "h:1", "--key-file", "/k", "--rate", "0"]).is_err());
    }
}
