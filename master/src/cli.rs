//! The `mosaic-master` command line: `init` creates a cluster's state directory, CA and data
//! key; `run` serves it; `issue`, `revoke`, `init-pki` and `rotate-key` are the admin's
//! credential and key tools (local file operations: the master need not run). Flags override single fields of the TOML config. Nothing here is
//! needed by tests: they call the library directly.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use common::config::{DEFAULT_CHUNK_SIZE, MasterConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "mosaic-master",
    version,
    about = "MosaicFS metadata server: namespace, chunk placement and versions, node registry",
    long_about = "MosaicFS metadata server.\n\n\
        Create a cluster once with `mosaic-master init --state DIR`, which also writes the \
        cluster's data key (give that file to every client, never to chunkservers), then \
        serve it with `mosaic-master run --state DIR`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at startup: the size of the `run` flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new cluster: the state directory with meta.db and a new random data key.
    Init(InitArgs),
    /// Serve the cluster's metadata until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Sign a TLS credential for a chunkserver, client or sentinel with the cluster CA.
    Issue(IssueArgs),
    /// Revoke every credential issued to NAME (or one, with --serial): the master and the
    /// chunkservers refuse it from then on (within about a second while running).
    Revoke(RevokeArgs),
    /// Create the CA and the master's credential for a cluster made before TLS.
    InitPki(InitPkiArgs),
    /// Add a new data key to the cluster's key file: new writes use it, old blocks stay
    /// readable. Run on the master host with --state: it rewrites the master's copy
    /// (DIR/data.key) and records the new key id, so mounts with an older file are refused.
    RotateKey(RotateKeyArgs),
    /// Make a one-time join token for a chunkserver, client or sentinel: the node redeems
    /// it at the master's join endpoint (`join_listen`) for a credential. Prints the token.
    IssueToken(IssueTokenArgs),
}

#[derive(Debug, Args)]
pub struct IssueTokenArgs {
    /// What the credential will be for: chunkserver, client or sentinel.
    #[arg(value_name = "ROLE")]
    pub role: common::tls::Role,
    /// The name the credential will carry (letters, digits, '-', '_', '.').
    #[arg(value_name = "NAME")]
    pub name: String,
    /// State directory holding the cluster CA (pki/).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// How long the token can be redeemed: seconds, or with a suffix s, m, h, d (`10m`).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
}

/// Parses `90`, `90s`, `10m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 10m, 2h, 1d)"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(scale)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// What the credential is for: chunkserver, client or sentinel.
    #[arg(value_name = "ROLE")]
    pub role: common::tls::Role,
    /// The peer's name, shown in logs and the audit log (letters, digits, '-', '_', '.').
    #[arg(value_name = "NAME")]
    pub name: String,
    /// State directory holding the cluster CA (pki/).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Directory to write cert.pem, key.pem (0600) and ca.pem to; must not hold a key yet.
    /// Default: STATE/credentials/NAME.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The name the credential was issued to.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// State directory holding the cluster CA (pki/).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Revoke only the credential with this serial (hex, as `issue` printed it).
    #[arg(long, value_name = "HEX")]
    pub serial: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitPkiArgs {
    /// State directory of an existing cluster.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
}

#[derive(Debug, Args)]
pub struct RotateKeyArgs {
    /// The data key file to extend (rewritten atomically, mode 0600). Default: DIR/data.key,
    /// the master's copy. Copy the rotated file to every client and remount them: a mount
    /// with an older file is refused.
    #[arg(long, value_name = "FILE", required_unless_present = "state")]
    pub key_file: Option<PathBuf>,
    /// The cluster's state directory: the new key's id and check value are recorded there
    /// (mounts with an older key file are refused) and the rotation in its audit log.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
}

/// The audit log the admin commands append to: the master's default, `STATE/audit.log`.
/// Admin commands only append (the running master rotates).
fn admin_audit(state: &std::path::Path) -> common::audit::Audit {
    let config = common::audit::AuditConfig {
        path: state.join(common::audit::AUDIT_FILE),
        max_bytes: u64::MAX,
        keep: 1,
    };
    match common::audit::Audit::open(config, "admin") {
        Ok(audit) => audit,
        Err(e) => {
            // The action itself succeeded or is about to; say loudly that it is unaudited.
            eprintln!("mosaic-master: warning: not audited: {e:#}");
            common::audit::Audit::disabled()
        }
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// State directory to create (mode 0700); must not hold a meta.db yet.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Where to write the new data key (mode 0600, never overwritten). Default: DIR/data.key.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Chunk size in bytes: a positive multiple of 65536, fixed for the cluster's lifetime.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file (fields of MasterConfig: listen, state_dir, replicas, ...).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory made by `init` (overrides state_dir).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:9420; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Copies of every chunk (N).
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,
    /// Acknowledgements a write needs (W).
    #[arg(long, value_name = "W")]
    pub write_quorum: Option<u32>,
    /// Current replicas a read needs (R); W + R must exceed N.
    #[arg(long, value_name = "R")]
    pub read_quorum: Option<u32>,
    /// Once listening, write the bound address here (atomically): a readiness signal.
    #[arg(long, value_name = "PATH")]
    pub addr_file: Option<PathBuf>,
    /// TLS credential directory (cert.pem, key.pem, ca.pem); default STATE/pki/master.
    #[arg(long, value_name = "DIR")]
    pub credentials: Option<PathBuf>,
    /// Serve Prometheus metrics over plain HTTP at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9421; port 0 picks one). Default: off.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Once the metrics endpoint listens, write its bound address here (atomically).
    #[arg(long, value_name = "PATH", requires = "metrics_addr")]
    pub metrics_addr_file: Option<PathBuf>,
    /// Distinct sentinels that must vote a node dead before it is [config default: 1].
    #[arg(long, value_name = "N")]
    pub dead_quorum: Option<u32>,
    /// Life of a sentinel's dead vote, in milliseconds [config default: 10000].
    #[arg(long, value_name = "MS")]
    pub dead_vote_window_ms: Option<u64>,
    /// How long a gracefully stopped node keeps its replicas counted before it is treated
    /// as dead, in milliseconds [config default: 300000].
    #[arg(long, value_name = "MS")]
    pub maintenance_window_ms: Option<u64>,
    /// Re-replication copies at once, cluster-wide [config default: 8].
    #[arg(long, value_name = "N")]
    pub repair_max_copies: Option<u32>,
    /// Re-replication copies one node takes part in at once [config default: 4].
    #[arg(long, value_name = "N")]
    pub repair_max_copies_per_node: Option<u32>,
    /// Re-replication bandwidth in bytes per second, 0 unlimited [config default: 256 MiB/s].
    #[arg(long, value_name = "BYTES")]
    pub repair_bytes_per_sec: Option<u64>,
    /// Serve the join endpoint (one-time tokens from `issue-token`) on this address
    /// (overrides join_listen); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub join_listen: Option<SocketAddr>,
    /// Once listening, write the join endpoint's bound address here (atomically).
    #[arg(long, value_name = "PATH")]
    pub join_addr_file: Option<PathBuf>,
    /// Rebalance while up nodes' used percentages differ by more than this many points, 0
    /// off [config default: 10].
    #[arg(long, value_name = "PERCENT")]
    pub rebalance_threshold_percent: Option<u32>,
}

impl RunArgs {
    /// The config file (or defaults) with the flags applied.
    pub fn config(&self) -> anyhow::Result<MasterConfig> {
        let mut config = match (&self.config, &self.state) {
            (Some(path), _) => common::config::load_toml::<MasterConfig>(path)?,
            (None, Some(state)) => {
                // Deserialize a minimal table so the defaults are exactly the config file's.
                let mut table = toml::Table::new();
                let state = state
                    .to_str()
                    .with_context(|| format!("state directory {} is not UTF-8", state.display()))?;
                table.insert("state_dir".into(), toml::Value::String(state.into()));
                toml::Value::Table(table)
                    .try_into()
                    .context("build the default configuration")?
            }
            (None, None) => anyhow::bail!("give --state DIR or --config FILE"),
        };
        if let Some(state) = &self.state {
            config.state_dir = state.clone();
        }
        common::apply_flags!(config, self;
            listen, replicas, write_quorum, read_quorum, dead_quorum, dead_vote_window_ms,
            maintenance_window_ms, repair_max_copies, repair_max_copies_per_node,
            repair_bytes_per_sec, rebalance_threshold_percent;
            optional: join_listen);
        if let Some(addr) = self.metrics_addr {
            config.shared.metrics_addr = Some(addr);
        }
        if let Some(dir) = &self.credentials {
            config
                .shared
                .set_credentials(common::tls::CredentialPaths::in_dir(dir));
        }
        Ok(config)
    }
}

pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    let key_file = args
        .key_file
        .clone()
        .unwrap_or_else(|| args.state.join(master::KEY_FILE));
    let cluster = master::init_cluster(&args.state, &key_file, args.chunk_size)?;
    println!("cluster id: {cluster}");
    println!("data key:   {}", key_file.display());
    println!(
        "cluster CA: {} (issue credentials with `mosaic-master issue ROLE NAME --state {}`)",
        master::pki::pki_dir(&args.state).display(),
        args.state.display()
    );
    Ok(())
}

pub fn issue(args: &IssueArgs) -> anyhow::Result<()> {
    if args.role == common::tls::Role::Master {
        anyhow::bail!(
            "the master's credential is made by `init`; issue chunkserver, client or sentinel"
        );
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.state.join("credentials").join(&args.name));
    let issued = master::pki::issue(&args.state, args.role, &args.name, &out)?;
    admin_audit(&args.state).record(common::audit::Event::CredentialIssued {
        role: args.role.to_string(),
        name: args.name.clone(),
        serial: issued.serial.clone(),
        via: "admin".into(),
    });
    println!(
        "issued {} credential {:?} (serial {}) in {}",
        args.role,
        args.name,
        issued.serial,
        out.display()
    );
    Ok(())
}

pub fn revoke(args: &RevokeArgs) -> anyhow::Result<()> {
    let revoked = master::pki::revoke(&args.state, &args.name, args.serial.as_deref())?;
    if revoked.is_empty() {
        println!("{:?} was already revoked", args.name);
    }
    let audit = admin_audit(&args.state);
    for r in revoked {
        println!("revoked {} {:?} (serial {})", r.role, r.name, r.serial);
        audit.record(common::audit::Event::CredentialRevoked {
            role: r.role,
            name: r.name,
            serial: r.serial,
        });
    }
    Ok(())
}

pub fn init_pki(args: &InitPkiArgs) -> anyhow::Result<()> {
    let db = args.state.join(master::DB_FILE);
    if !db.exists() {
        anyhow::bail!(
            "{} does not exist: create the cluster with `mosaic-master init`",
            db.display()
        );
    }
    master::pki::init_pki(&args.state, "existing")?;
    println!(
        "cluster CA: {}",
        master::pki::pki_dir(&args.state).display()
    );
    Ok(())
}

pub fn rotate_key(args: &RotateKeyArgs) -> anyhow::Result<()> {
    let key_file = match (&args.key_file, &args.state) {
        (Some(file), _) => file.clone(),
        (None, Some(state)) => state.join(master::KEY_FILE),
        (None, None) => anyhow::bail!("give --state DIR (the master's copy) or --key-file FILE"),
    };
    let id = master::rotate_key_file(&key_file)?;
    println!(
        "added data key {id} to {}: new writes use it; copy this file to every client and \
         remount them",
        key_file.display()
    );
    match &args.state {
        Some(state) => {
            let ring = common::block::KeyRing::load(&key_file)?;
            master::keystate::record(state, &ring)?;
            admin_audit(state).record(common::audit::Event::KeyRotated {
                key_file: key_file.display().to_string(),
                key_id: id,
            });
            println!(
                "recorded key {id} as the cluster's current key in {}: mounts with an older \
                 key file are refused",
                master::keystate::path(state).display()
            );
            let masters_copy = state.join(master::KEY_FILE);
            if masters_copy != key_file && masters_copy.exists() {
                eprintln!(
                    "note: {} (the master's copy) still holds the old keys: distribute {} and \
                     replace the master's copy with it",
                    masters_copy.display(),
                    key_file.display()
                );
            }
        }
        None => eprintln!(
            "warning: without --state the master does not learn of key {id}: mounts with an \
             older key file are not refused, and the master host's copy is unchanged; run \
             `mosaic-master rotate-key --state DIR` on the master host instead"
        ),
    }
    Ok(())
}

pub fn issue_token(args: &IssueTokenArgs) -> anyhow::Result<()> {
    let (token, record) = master::tokens::issue_token(
        &args.state,
        args.role,
        &args.name,
        args.ttl,
        common::tls::unix_now(),
    )?;
    admin_audit(&args.state).record(common::audit::Event::TokenIssued {
        token: record.id.clone(),
        role: record.role.to_string(),
        name: record.name.clone(),
        expires_unix: record.expires_unix,
    });
    eprintln!(
        "join token {} for {} {:?}, single use, valid {} s; redeem with --join-token at the \
         master's join endpoint (join_listen)",
        record.id,
        record.role,
        record.name,
        args.ttl.as_secs()
    );
    // Alone on stdout, so `TOKEN=$(mosaic-master issue-token ...)` works.
    println!("{}", token.secret_text());
    Ok(())
}

/// Serves until SIGINT or SIGTERM; announces the bound address in `--addr-file`.
pub async fn run(args: &RunArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let config = args.config()?;
    // Signal handlers first, so a SIGTERM right after readiness is never lost.
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let master = master::start(config).await?;
    if let (Some(path), Some(addr)) = (&args.metrics_addr_file, master.metrics_addr) {
        master::write_addr_file(path, addr)?;
    }
    if let Some(path) = &args.addr_file {
        master::write_addr_file(path, master.addr)?;
    }
    match (&args.join_addr_file, master.join_addr) {
        (Some(path), Some(addr)) => master::write_addr_file(path, addr)?,
        (Some(_), None) => anyhow::bail!("--join-addr-file needs --join-listen (or join_listen)"),
        _ => {}
    }
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    master.shutdown().await;
    for path in [&args.addr_file, &args.join_addr_file]
        .into_iter()
        .flatten()
    {
        // The address is no longer served: readiness must not outlive the process.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from([&["mosaic-master", "run"], args].concat()).expect("parse");
        match cli.command {
            Command::Run(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("master.toml");
        std::fs::write(
            &file,
            "state_dir = '/from/file'\nreplicas = 5\nwrite_quorum = 3\nread_quorum = 3\n",
        )
        .expect("write");
        let file_arg = file.to_str().expect("utf-8");
        let config = run_args(&["--config", file_arg]).config().expect("config");
        assert_eq!(config.state_dir, PathBuf::from("/from/file"));
        assert_eq!(
            (config.replicas, config.write_quorum, config.read_quorum),
            (5, 3, 3)
        );
        let config = run_args(&[
            "--config",
            file_arg,
            "--state",
            "/flag",
            "--listen",
            "127.0.0.1:0",
            "--replicas",
            "3",
            "--write-quorum",
            "2",
            "--read-quorum",
            "2",
        ])
        .config()
        .expect("config");
        assert_eq!(config.state_dir, PathBuf::from("/flag"));
        assert_eq!(config.listen.port(), 0);
        assert_eq!(
            (config.replicas, config.write_quorum, config.read_quorum),
            (3, 2, 2)
        );
    }

    #[test]
    fn defaults_without_a_config_file() {
        let config = run_args(&["--state", "/s"]).config().expect("config");
        assert_eq!(config.state_dir, PathBuf::from("/s"));
        assert_eq!(config.listen.port(), common::config::DEFAULT_MASTER_PORT);
        assert!(config.durable_commits);
        let err = run_args(&[]).config().expect_err("needs a state dir");
        assert!(err.to_string().contains("--state"), "{err}");
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("10m", 600),
            ("2h", 7200),
            ("1d", 86_400),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "m", "10x", "-1m", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn init_defaults() {
        let cli = Cli::try_parse_from(["mosaic-master", "init", "--state", "/s"]).expect("parse");
        match cli.command {
            Command::Init(args) => {
                assert_eq!(args.chunk_size, DEFAULT_CHUNK_SIZE);
                assert_eq!(args.key_file, None);
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
