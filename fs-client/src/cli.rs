//! Command line of `mosaic-mount`, in both forms:
//!
//! - `mosaic-mount --master ADDR --key-file FILE [options] MOUNTPOINT` (foreground);
//! - the mount helper form `mosaic-mount ADDR MOUNTPOINT -o key_file=FILE,allow_other,...`, which
//!   `mount -t fuse.mosaic` (and /etc/fstab) uses; it detaches once the mount is live.

use anyhow::{Context as _, bail};
use clap::Parser;
use common::config::{MountConfig, load_toml};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "mosaic-mount",
    version,
    about = "Mount a MosaicFS cluster",
    long_about = "Mount a MosaicFS cluster at MOUNTPOINT.\n\n\
        Examples:\n  mosaic-mount --master 127.0.0.1:9420 --key-file .cluster/master/data.key \
        --credentials .cluster/credentials/client ./mnt\n  \
        mount -t fuse.mosaic 127.0.0.1:9420 /mnt/mosaic -o key_file=/etc/mosaic/data.key,credentials=/etc/mosaic/client,allow_other\n\n\
        The credentials directory comes from `mosaic-master issue client NAME --out DIR`.\n\n\
        After `mosaic-master rotate-key`, reseal old blocks with `mosaic-mount reencrypt` \
        (see `mosaic-mount reencrypt --help`).\n\n\
        Unmount with `fusermount3 -u MOUNTPOINT` or Ctrl-C."
)]
pub struct Cli {
    /// The master's address, host:port.
    #[arg(long)]
    pub master: Option<String>,
    /// The cluster's data key file (made by `mosaic-master init`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// A TOML file with the mount configuration; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Let other users use the mount (needs `user_allow_other` in /etc/fuse.conf unless root).
    #[arg(long)]
    pub allow_other: bool,
    /// Kernel attribute/entry cache time in milliseconds (default 1000).
    #[arg(long)]
    pub attr_timeout_ms: Option<u64>,
    /// Deadline of one RPC in milliseconds (default 5000).
    #[arg(long)]
    pub rpc_timeout_ms: Option<u64>,
    /// How long operations retry unreachable nodes before failing with EIO (default 15000).
    #[arg(long)]
    pub retry_window_ms: Option<u64>,
    /// Deadline of one block write to one replica in milliseconds; a replica missing it is
    /// dropped from that write (default 3000).
    #[arg(long)]
    pub write_timeout_ms: Option<u64>,
    /// Shortest wait in milliseconds before a slow read is also sent to the next replica
    /// (default 20).
    #[arg(long)]
    pub hedge_delay_ms: Option<u64>,
    /// Serve Prometheus metrics (bytes and latency of reads, writes, flushes, fsyncs) over
    /// plain HTTP at http://ADDR/metrics; port 0 picks one. Default: off.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Once the metrics endpoint listens, write its bound address here (atomically).
    #[arg(long, value_name = "PATH", requires = "metrics_addr")]
    pub metrics_addr_file: Option<PathBuf>,
    /// Bypass the kernel page cache (FUSE direct I/O): every read(2)/write(2) reaches the
    /// client as issued; no kernel readahead or read caching. Default: off.
    #[arg(long)]
    pub direct_io: bool,
    /// Mount options, comma separated (helper form): key_file=PATH, credentials=DIR, allow_other,
    /// attr_timeout_ms=N, rpc_timeout_ms=N, retry_window_ms=N, metrics_addr=ADDR, direct_io; generic options such as
    /// rw, defaults, _netdev, noauto, nofail are accepted and ignored.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Detach once mounted (the default of the helper form).
    #[arg(long, conflicts_with = "foreground")]
    pub background: bool,
    /// Stay in the foreground even in the helper form.
    #[arg(long)]
    pub foreground: bool,
    #[command(flatten)]
    pub tls: TlsFlags,
    /// [SOURCE] MOUNTPOINT. SOURCE is the master's address (helper form).
    #[arg(required = true, num_args = 1..=2, value_name = "[SOURCE] MOUNTPOINT")]
    pub paths: Vec<PathBuf>,
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

/// What to do: the configuration, where to mount, and whether to detach.
#[derive(Debug)]
pub struct Plan {
    pub config: MountConfig,
    /// Where to write the metrics endpoint's bound address (`--metrics-addr-file`).
    pub metrics_addr_file: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub background: bool,
}

/// Generic mount(8) options that mean nothing to us.
const IGNORED_OPTIONS: &[&str] = &[
    "rw",
    "defaults",
    "_netdev",
    "noauto",
    "auto",
    "user",
    "nouser",
    "users",
    "nofail",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "default_permissions",
];

impl Cli {
    pub fn plan(self) -> anyhow::Result<Plan> {
        let mut config: Option<MountConfig> = match &self.config {
            Some(path) => Some(load_toml(path)?),
            None => None,
        };
        let (source, mountpoint) = match self.paths.as_slice() {
            [mountpoint] => (None, mountpoint.clone()),
            [source, mountpoint] => (
                Some(source.to_string_lossy().into_owned()),
                mountpoint.clone(),
            ),
            _ => bail!("expected [SOURCE] MOUNTPOINT"),
        };
        let mut master = self.master.or(source);
        let mut key_file = self.key_file;
        let mut tls = self.tls.args();
        let mut allow_other = self.allow_other;
        let mut attr = self.attr_timeout_ms;
        let mut rpc = self.rpc_timeout_ms;
        let mut retry = self.retry_window_ms;
        let mut metrics_addr = self.metrics_addr;
        let mut direct_io = self.direct_io;
        let helper_form = !self.options.is_empty();
        for opt in self.options.iter().flat_map(|o| o.split(',')) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let number = |v: Option<&str>| -> anyhow::Result<u64> {
                v.context(format!("mount option {key} needs a value"))?
                    .parse()
                    .with_context(|| format!("mount option {key} takes a number"))
            };
            match key {
                "" => {}
                "key_file" => {
                    key_file = Some(PathBuf::from(value.context("key_file needs a path")?))
                }
                "credentials" => {
                    tls.credentials = Some(PathBuf::from(
                        value.context("credentials needs a directory")?,
                    ))
                }
                "master" => master = Some(value.context("master needs an address")?.to_string()),
                "allow_other" => allow_other = true,
                "direct_io" => direct_io = true,
                "attr_timeout_ms" => attr = Some(number(value)?),
                "rpc_timeout_ms" => rpc = Some(number(value)?),
                "retry_window_ms" => retry = Some(number(value)?),
                "metrics_addr" => {
                    metrics_addr = Some(
                        value
                            .context("metrics_addr needs an address")?
                            .parse()
                            .context("mount option metrics_addr takes HOST:PORT")?,
                    )
                }
                k if IGNORED_OPTIONS.contains(&k) => {}
                other => bail!("unknown mount option {other:?} (see mosaic-mount --help)"),
            }
        }
        if config.is_none() {
            let master = master
                .clone()
                .context("no master given: use --master ADDR (or SOURCE)")?;
            let key_file = key_file
                .clone()
                .context("no key file given: use --key-file FILE (or -o key_file=FILE)")?;
            config = Some(MountConfig::for_cli(master, key_file));
        }
        let mut config = config.context("no configuration")?;
        if let Some(master) = master {
            config.master = master;
        }
        if let Some(key_file) = key_file {
            config.key_file = key_file;
        }
        config.allow_other |= allow_other;
        config.direct_io |= direct_io;
        config.shared.apply_tls_flags(&tls);
        if let Some(v) = attr {
            config.attr_timeout_ms = v;
        }
        if let Some(v) = rpc {
            config.rpc_timeout_ms = v;
        }
        if let Some(v) = retry {
            config.retry_window_ms = v;
        }
        if let Some(v) = self.write_timeout_ms {
            config.write_timeout_ms = v;
        }
        if let Some(v) = self.hedge_delay_ms {
            config.hedge_delay_ms = v;
        }
        if let Some(addr) = metrics_addr {
            config.shared.metrics_addr = Some(addr);
        }
        let background = self.background || (helper_form && !self.foreground);
        Ok(Plan {
            config,
            metrics_addr_file: self.metrics_addr_file,
            mountpoint,
            background,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        Cli::try_parse_from(std::iter::once("mosaic-mount").chain(args.iter().copied()))?.plan()
    }

    #[test]
    fn flag_form() {
        let p = plan(&["--master", "h:1", "--key-file", "/k", "/mnt"]).expect("plan");
        assert_eq!(p.config.master, "h:1");
        assert_eq!(p.mountpoint, PathBuf::from("/mnt"));
        assert!(!p.background);
        assert!(!p.config.allow_other);
        assert!(!p.config.direct_io, "direct I/O is off unless asked for");
    }

    #[test]
    fn direct_io_option_and_flag() {
        let p = plan(&["h:1", "/mnt", "-o", "key_file=/k,direct_io"]).expect("plan");
        assert!(p.config.direct_io);
        let p =
            plan(&["--master", "h:1", "--key-file", "/k", "--direct-io", "/mnt"]).expect("plan");
        assert!(p.config.direct_io);
    }

    #[test]
    fn helper_form() {
        let p = plan(&[
            "h:1",
            "/mnt",
            "-o",
            "rw,key_file=/k,allow_other,attr_timeout_ms=5,_netdev",
        ])
        .expect("plan");
        assert_eq!(p.config.master, "h:1");
        assert_eq!(p.config.key_file, PathBuf::from("/k"));
        assert!(p.config.allow_other);
        assert_eq!(p.config.attr_timeout_ms, 5);
        assert!(p.background);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(plan(&["h:1", "/mnt", "-o", "bogus"]).is_err());
        assert!(plan(&["/mnt"]).is_err(), "no master");
        assert!(plan(&["--master", "h:1", "/mnt"]).is_err(), "no key");
        assert!(plan(&["h:1", "/mnt", "-o", "key_file=/k,attr_timeout_ms=x"]).is_err());
    }
}
