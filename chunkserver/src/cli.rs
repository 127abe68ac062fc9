//! Command line of `mosaic-chunkserver`: flags override the TOML config file, then the node
//! runs until SIGINT/SIGTERM. Once registered and serving it writes its advertised address
//! to `--addr-file` (atomically), the readiness signal scripts and tests wait for.

use anyhow::Context as _;
use clap::Parser;
use common::config::ChunkserverConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// MosaicFS chunkserver: stores sealed (encrypted) blocks with a checksum each.
///
/// The node registers with the master, keeps its identity in DATA/node.toml and serves block
/// reads and writes. It never sees keys or plaintext. Example:
///
///   mosaic-chunkserver --master 10.0.0.1:9420 --data /srv/mosaic/cs1 --listen 0.0.0.0:9430
///       --advertise 10.0.0.2:9430 --credentials /etc/mosaic/cs1
///
/// The credential directory comes from `mosaic-master issue chunkserver cs1 --out DIR`.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(name = "mosaic-chunkserver", version, verbatim_doc_comment)]
pub struct Cli {
    /// TOML config file (keys: master, data_dir, listen, advertise, capacity_bytes,
    /// sync_every_write, scrub_bytes_per_sec, scrub_period_ms, direct_io). Flags override
    /// its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The master's address, HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub master: Option<String>,
    /// Data directory: chunks, quarantine and node.toml. Created if missing.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port. Default 127.0.0.1:0.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address clients and other nodes use to reach this one. Default: the bound address.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<String>,
    /// Bytes this node offers (suffixes K, M, G, T for powers of 1024). Default: what it
    /// stores plus the free space of the data directory's filesystem.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub capacity: Option<u64>,
    /// fdatasync every write before acknowledging it (default: only writes the client
    /// flags as sync, i.e. its fsync and close).
    #[arg(long)]
    pub sync_every_write: bool,
    /// Background scrub pace in bytes per second (suffixes K, M, G); 0 turns scrubbing off.
    /// Default 16M.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub scrub_rate: Option<u64>,
    /// Shortest time between the starts of two scrub cycles, in milliseconds. Default
    /// 3600000 (one hour).
    #[arg(long, value_name = "MS")]
    pub scrub_period_ms: Option<u64>,
    /// Once registered and serving, write the advertised address to this file.
    #[arg(long, value_name = "PATH")]
    pub addr_file: Option<PathBuf>,
    /// Serve Prometheus metrics over plain HTTP at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9431; port 0 picks one). Default: off.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Once the metrics endpoint listens, write its bound address here (atomically).
    #[arg(long, value_name = "PATH", requires = "metrics_addr")]
    pub metrics_addr_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsFlags,
    /// Block slot I/O with O_DIRECT, bypassing the page cache (true or false). Default
    /// true; a filesystem that refuses O_DIRECT gets buffered I/O (logged once).
    #[arg(long, value_name = "BOOL")]
    pub direct_io: Option<bool>,
}

/// The TLS and join flags (`#[command(flatten)]`), handed to `common` as a plain
/// [`common::tls::TlsArgs`]. Every binary that dials the cluster declares this same set:
/// the wire crate carries no command-line parser.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// Credential directory holding cert.pem, key.pem and ca.pem (from `mosaic-master issue`).
    #[arg(long, value_name = "DIR")]
    pub credentials: Option<PathBuf>,
    /// This process's certificate (PEM); overrides DIR/cert.pem.
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM, mode 0600); overrides DIR/key.pem.
    #[arg(long = "tls-key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The cluster CA certificate (PEM); overrides DIR/ca.pem.
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A one-time join token (from `mosaic-master issue-token`): when --credentials DIR holds
    /// no certificate yet, redeem it at --join and write the credential there first.
    /// Prefer --join-token-file: a command line is visible to other local users.
    #[arg(long, value_name = "TOKEN", requires = "join")]
    pub join_token: Option<String>,
    /// A file holding the join token (read, then used as --join-token).
    #[arg(
        long,
        value_name = "FILE",
        requires = "join",
        conflicts_with = "join_token"
    )]
    pub join_token_file: Option<PathBuf>,
    /// The master's join endpoint (its `join_listen` address) for --join-token.
    #[arg(long, value_name = "ADDR")]
    pub join: Option<String>,
}

impl TlsFlags {
    /// The flags as `common` takes them.
    pub fn args(&self) -> common::tls::TlsArgs {
        common::tls::TlsArgs {
            credentials: self.credentials.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
            join_token: self.join_token.clone(),
            join_token_file: self.join_token_file.clone(),
            join: self.join.clone(),
        }
    }
}

impl Cli {
    /// The config file (if any) with the flags applied over it.
    pub fn config(&self) -> anyhow::Result<ChunkserverConfig> {
        let mut config = match &self.config {
            Some(path) => common::config::load_toml::<ChunkserverConfig>(path)?,
            // Without a file, the same defaults a file without those keys gets.
            None => ChunkserverConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                advertise: None,
                master: self.master.clone().ok_or_else(|| {
                    anyhow::anyhow!("--master ADDR is required (or `master` in a --config file)")
                })?,
                data_dir: self.data.clone().ok_or_else(|| {
                    anyhow::anyhow!("--data DIR is required (or `data_dir` in a --config file)")
                })?,
                capacity_bytes: None,
                sync_every_write: false,
                scrub_bytes_per_sec: common::config::DEFAULT_SCRUB_BYTES_PER_SEC,
                scrub_period_ms: common::config::DEFAULT_SCRUB_PERIOD_MS,
                shared: common::config::SharedConfig::default(),
                direct_io: common::config::DEFAULT_DIRECT_IO,
            },
        };
        config.shared.apply_tls_flags(&self.tls.args());
        if let Some(master) = &self.master {
            config.master = master.clone();
        }
        if let Some(data) = &self.data {
            config.data_dir = data.clone();
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(advertise) = &self.advertise {
            config.advertise = Some(advertise.clone());
        }
        if let Some(capacity) = self.capacity {
            config.capacity_bytes = Some(capacity);
        }
        if let Some(rate) = self.scrub_rate {
            config.scrub_bytes_per_sec = rate;
        }
        if let Some(period) = self.scrub_period_ms {
            config.scrub_period_ms = period;
        }
        if self.sync_every_write {
            config.sync_every_write = true;
        }
        if let Some(addr) = self.metrics_addr {
            config.shared.metrics_addr = Some(addr);
        }
        if let Some(direct) = self.direct_io {
            config.direct_io = direct;
        }
        Ok(config)
    }

    /// Runs the chunkserver until SIGINT or SIGTERM.
    pub async fn execute(self) -> anyhow::Result<()> {
        self.tls
            .args()
            .join_if_asked(common::tls::Role::Chunkserver)
            .await?;
        let config = self.config()?;
        let mut signals = Signals::new()?;
        let running = tokio::select! {
            started = crate::start(config) => started?,
            _ = signals.recv() => {
                tracing::info!("stopped before registration completed");
                return Ok(());
            }
        };
        if let (Some(path), Some(addr)) = (&self.metrics_addr_file, running.metrics_addr) {
            write_addr_file(path, &addr.to_string())?;
        }
        if let Some(path) = &self.addr_file {
            write_addr_file(path, &running.addr)?;
        }
        running.run_until(async move { signals.recv().await }).await
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("install SIGINT handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: stopping gracefully"),
            _ = self.int.recv() => tracing::info!("SIGINT: stopping gracefully"),
        }
    }
}

/// Writes `addr` to `path` atomically ([`common::durable::write_atomic`]), so a reader
/// never sees a partial address.
pub fn write_addr_file(path: &Path, addr: &str) -> anyhow::Result<()> {
    common::durable::write_atomic(path, addr.as_bytes(), common::durable::MODE_DEFAULT)
        .with_context(|| format!("write address file {}", path.display()))
}

/// Parses a byte count: digits with an optional K, M, G or T suffix (powers of 1024).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix {c:?}; use K, M, G or T")),
            };
            (&text[..i], shift)
        }
        _ => (text, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (e.g. 500G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("123"), Ok(123));
        assert_eq!(parse_bytes("2K"), Ok(2048));
        assert_eq!(parse_bytes("3g"), Ok(3 << 30));
        assert!(parse_bytes("3X").is_err());
        assert!(parse_bytes("G").is_err());
        assert!(parse_bytes("99999999999T").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn flags_alone_make_a_config() {
        let cli = Cli::parse_from(["mosaic-chunkserver", "--master", "m:1", "--data", "/d"]);
        let config = cli.config().expect("config");
        assert_eq!(config.master, "m:1");
        assert_eq!(config.data_dir, PathBuf::from("/d"));
        assert_eq!(config.capacity_bytes, None);
        assert!(!config.sync_every_write);
        assert!(config.direct_io, "O_DIRECT is on by default");
        let cli = Cli::parse_from(["mosaic-chunkserver", "--data", "/d"]);
        assert!(
            cli.config()
                .expect_err("no master")
                .to_string()
                .contains("--master")
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cs.toml");
        std::fs::write(
            &file,
            "master = 'a:1'\ndata_dir = '/x'\ncapacity_bytes = 5\nlisten = '127.0.0.1:7000'\n",
        )
        .expect("write");
        let cli = Cli::parse_from([
            "mosaic-chunkserver",
            "--config",
            file.to_str().expect("utf8"),
            "--master",
            "b:2",
            "--capacity",
            "1M",
            "--sync-every-write",
            "--direct-io",
            "false",
        ]);
        let config = cli.config().expect("config");
        assert_eq!(config.master, "b:2");
        assert_eq!(config.data_dir, PathBuf::from("/x"));
        assert_eq!(config.capacity_bytes, Some(1 << 20));
        assert_eq!(config.listen.port(), 7000);
        assert!(config.sync_every_write);
        assert!(!config.direct_io);
    }

    #[test]
    fn addr_file_is_replaced_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("addr");
        write_addr_file(&path, "127.0.0.1:1").expect("first");
        write_addr_file(&path, "127.0.0.1:2").expect("second");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "127.0.0.1:2");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }
}
