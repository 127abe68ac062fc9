//! Command line of `mosaic-sentinel`: `run` (the health worker) and `status` (one report, or
//! a redrawn one with `--watch`). Flags override the TOML config file field by field.
//!
//! Exit statuses are part of the interface: `status` exits 0 when HEALTHY, 1 when DEGRADED,
//! 2 when UNAVAILABLE or the master is unreachable; `run` exits 1 on a startup error.

use crate::render::{render_json, render_table};
use crate::status::{self, Verdict};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use common::NodeId;
use common::config::{DEFAULT_HEARTBEAT_MS, SentinelConfig, load_toml};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How often `status --watch` redraws.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(
    name = "mosaic-sentinel",
    version,
    about = "Watch a MosaicFS cluster: probe chunkservers, judge their health, show the cluster's state",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe every chunkserver continuously and log every health change (HEALTHY, SUSPECT,
    /// DEAD). Runs until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Show the cluster's state: a verdict, its reasons, a table of nodes, chunk counts.
    /// Exit status: 0 HEALTHY, 1 DEGRADED, 2 UNAVAILABLE or master unreachable.
    Status(StatusArgs),
    /// Drain a chunkserver: it gets no new chunks and the master copies its chunks to other
    /// nodes (never dropping below goal); when none needs it any more, `status` shows it
    /// DECOMMISSIONED and it may be stopped. Exit status 0, 2 on failure.
    Drain(DrainArgs),
    /// Cancel a drain (or bring a decommissioned node back): the node takes chunks again
    /// and its replicas count again (surplus copies are trimmed). Exit status 0, 2 on failure.
    Undrain(DrainArgs),
    /// After an investigation, clear the bad mark of NODE's replica of CHUNK (as the master
    /// logs them: `c1f n2`): the master first asks the node to verify every block of it and
    /// clears the mark only if the node vouches for it; the replica then serves and counts
    /// again. Exit status 0 (also when it was not marked), 2 on failure or refusal.
    ClearBad(ClearBadArgs),
    /// Forget a node for good: `status` no longer lists it and its id can never register
    /// again. Only for a node that is DEAD or DECOMMISSIONED, stopped, and holds the last
    /// copy of nothing (the master refuses otherwise, saying why). The end of "drain,
    /// revoke, stop, forget". Exit status 0, 2 on failure or refusal.
    Forget(DrainArgs),
}

#[derive(Debug, Args)]
struct ClearBadArgs {
    /// The chunk, as the master's log shows it (`c1f`) or as a decimal id.
    #[arg(value_name = "CHUNK", value_parser = parse_chunk)]
    chunk: common::ChunkId,
    #[command(flatten)]
    target: DrainArgs,
}

#[derive(Debug, Args)]
struct DrainArgs {
    /// The node, as status shows it (`n1f`) or as a decimal id.
    #[arg(value_name = "NODE", value_parser = parse_node)]
    node: NodeId,
    /// The master's address (host:port).
    #[arg(
        long,
        env = "MOSAIC_MASTER",
        value_name = "ADDR",
        default_value = "127.0.0.1:9420"
    )]
    master: String,
    /// A sentinel credential: `mosaic-master issue sentinel NAME --out DIR`.
    #[command(flatten)]
    tls: TlsFlags,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The master's address (host:port). Overrides `master` in the config file.
    #[arg(long, env = "MOSAIC_MASTER", value_name = "ADDR")]
    master: Option<String>,
    /// Time between two probes of a node, in milliseconds [config default: 1000].
    #[arg(long, value_name = "MS")]
    probe_interval_ms: Option<u64>,
    /// Silence after which a node that fails its probes is DEAD, in milliseconds
    /// [config default: 10000].
    #[arg(long, value_name = "MS")]
    dead_after_ms: Option<u64>,
    /// Probe node N at ADDR instead of its registered address (repeatable), e.g.
    /// `--probe-addr n2=10.1.0.2:9430`: for a sentinel on another network, or to make a
    /// sentinel that cannot reach a node (a closed port) when testing quorums.
    #[arg(long, value_name = "NODE=ADDR")]
    probe_addr: Vec<String>,
    /// Only watch and log: never report verdicts to the master (no re-replication).
    #[arg(long)]
    no_report: bool,
    /// Readiness file: once the master has answered and the node list is known, the master
    /// address the sentinel watches is written here (atomically).
    #[arg(long, value_name = "PATH")]
    addr_file: Option<PathBuf>,
    /// TOML config file (`master`, `probe_interval_ms`, `dead_after_ms`, `tls_*_file`);
    /// flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics over plain HTTP at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9422; port 0 picks one). Default: off.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Once the metrics endpoint listens, write its bound address here (atomically).
    #[arg(long, value_name = "PATH", requires = "metrics_addr")]
    metrics_addr_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsFlags,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The master's address (host:port).
    #[arg(
        long,
        env = "MOSAIC_MASTER",
        value_name = "ADDR",
        default_value = "127.0.0.1:9420"
    )]
    master: String,
    /// Print JSON (a stable contract: `verdict`, `chunks.{total,under_replicated,lost}`,
    /// `nodes[].{id,addr,state}`) instead of a table.
    #[arg(long)]
    json: bool,
    /// Redraw every second until Ctrl-C; the exit status is that of the last report.
    #[arg(long, conflicts_with = "files")]
    watch: bool,
    /// With --files: the node to list, as status shows it (`n1f`) or as a decimal id.
    #[arg(long, value_name = "NODE", requires = "files", value_parser = parse_node)]
    node: Option<NodeId>,
    /// List the files and chunk replicas the master records on --node (one row per
    /// replica; --json for scripts) instead of the cluster report. Exit status 0, or 2
    /// when the master is unreachable or does not know the node.
    #[arg(long, requires = "node")]
    files: bool,
    /// A sentinel (or client) credential: `mosaic-master issue sentinel NAME --out DIR`.
    #[command(flatten)]
    tls: TlsFlags,
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

fn parse_chunk(text: &str) -> Result<common::ChunkId, String> {
    let id = match text.strip_prefix('c') {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    };
    id.map(common::ChunkId)
        .ok_or_else(|| format!("{text:?} is not a chunk id (c1f or 31)"))
}

fn parse_node(text: &str) -> Result<NodeId, String> {
    NodeId::parse(text).ok_or_else(|| format!("{text:?} is not a node id (n1f or 31)"))
}

/// Parses the command line and runs the chosen subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            common::telemetry::init("info");
            match run_command(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("mosaic-sentinel: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status(args) => {
            // Logs would interleave with the table; RUST_LOG still turns them on.
            common::telemetry::init("off");
            ExitCode::from(status_command(args))
        }
        Command::Drain(args) => {
            common::telemetry::init("off");
            ExitCode::from(drain_command(args, true))
        }
        Command::Undrain(args) => {
            common::telemetry::init("off");
            ExitCode::from(drain_command(args, false))
        }
        Command::ClearBad(args) => {
            common::telemetry::init("off");
            ExitCode::from(clear_bad_command(args))
        }
        Command::Forget(args) => {
            common::telemetry::init("off");
            ExitCode::from(forget_command(args))
        }
    }
}

/// Runs one call on the master's admin service for an admin subcommand: loads the sentinel
/// credential from `target`'s flags, starts a runtime, connects within `deadline` and hands
/// the client to `call`. `Err` carries the message for a failure before the call (no
/// credential, no runtime); the call's own result, connection errors included, is `Ok`.
fn admin_call<T, F, Fut>(
    target: &DrainArgs,
    deadline: Duration,
    call: F,
) -> Result<common::FsResult<T>, String>
where
    F: FnOnce(common::rpc::MasterAdminClient, tarpc::context::Context) -> Fut,
    Fut: std::future::Future<Output = Result<common::FsResult<T>, tarpc::client::RpcError>>,
{
    let mut shared = common::config::SharedConfig::default();
    shared.apply_tls_flags(&target.tls.args());
    let tls = shared
        .load_tls("mosaic-sentinel")
        .map_err(|err| format!("{err:#}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))?;
    Ok(runtime.block_on(async {
        let client = common::rpc::connect_master_admin(&target.master, &tls, deadline).await?;
        call(client, common::rpc::ctx(deadline))
            .await
            .map_err(common::FsError::from)?
    }))
}

/// The exit status and message of an admin subcommand's failure: `NotFound` is said as
/// `not_found`, anything else names the command (`what`) and the master.
fn admin_failure(target: &DrainArgs, what: &str, not_found: &str, err: common::FsError) -> u8 {
    match err {
        common::FsError::NotFound => {
            eprintln!(
                "mosaic-sentinel: the master at {} {not_found}",
                target.master
            )
        }
        err => eprintln!("mosaic-sentinel: {what}: master {}: {err}", target.master),
    }
    ADMIN_FAILED
}

/// Exit status of an admin subcommand the master refused or that could not reach it.
const ADMIN_FAILED: u8 = 2;

/// `clear-bad`: one `MasterAdmin::clear_bad_replica` call (the master checks with the node).
fn clear_bad_command(args: ClearBadArgs) -> u8 {
    let ClearBadArgs { chunk, target } = args;
    let node = target.node;
    // The node reads and checks the whole chunk before the master answers.
    let deadline = crate::STATUS_MASTER_DEADLINE + CLEAR_BAD_VERIFY_ALLOWANCE;
    let result = admin_call(&target, deadline, |c, cx| async move {
        c.clear_bad_replica(cx, chunk, node).await
    });
    match result {
        Err(msg) => {
            eprintln!("mosaic-sentinel: {msg}");
            ADMIN_FAILED
        }
        Ok(Ok(true)) => {
            emit(
                &format!("{chunk} on {node}: bad mark cleared (the node vouched for it)\n"),
                "",
            );
            0
        }
        Ok(Ok(false)) => {
            emit(&format!("{chunk} on {node}: was not marked bad\n"), "");
            0
        }
        Ok(Err(err)) => admin_failure(
            &target,
            &format!("clear-bad {chunk} {node}"),
            &format!("records no replica of {chunk} on {node}"),
            err,
        ),
    }
}

/// Time `clear-bad` allows the node to read and checksum a whole chunk (64 MiB on a slow,
/// busy disk), on top of the usual master deadline.
const CLEAR_BAD_VERIFY_ALLOWANCE: Duration = Duration::from_secs(120);

/// `drain` / `undrain`: one `MasterAdmin::set_node_drain` call; prints the node's condition.
fn drain_command(args: DrainArgs, drain: bool) -> u8 {
    let verb = if drain { "drain" } else { "undrain" };
    let node = args.node;
    let result = admin_call(&args, crate::STATUS_MASTER_DEADLINE, |c, cx| async move {
        c.set_node_drain(cx, node, drain).await
    });
    match result {
        Err(msg) => {
            eprintln!("mosaic-sentinel: {msg}");
            ADMIN_FAILED
        }
        Ok(Ok(condition)) => {
            emit(&format!("node {node}: {}\n", condition.as_str()), "");
            0
        }
        Ok(Err(err)) => admin_failure(
            &args,
            &format!("{verb} {node}"),
            &format!("knows no node {node}"),
            err,
        ),
    }
}

/// `forget`: one `MasterAdmin::forget_node` call (the master checks the node may go).
fn forget_command(args: DrainArgs) -> u8 {
    let node = args.node;
    let result = admin_call(&args, crate::STATUS_MASTER_DEADLINE, |c, cx| async move {
        c.forget_node(cx, node).await
    });
    match result {
        Err(msg) => {
            eprintln!("mosaic-sentinel: {msg}");
            ADMIN_FAILED
        }
        Ok(Ok(replicas)) => {
            emit(
                &format!("node {node}: forgotten ({replicas} replica records dropped)\n"),
                "",
            );
            0
        }
        Ok(Err(err)) => admin_failure(
            &args,
            &format!("forget {node}"),
            &format!("knows no node {node}"),
            err,
        ),
    }
}

/// Merges the config file (if any) and the flags into one configuration.
fn run_config(args: &RunArgs) -> anyhow::Result<SentinelConfig> {
    let mut config = match &args.config {
        Some(path) => load_toml::<SentinelConfig>(path)?,
        None => SentinelConfig {
            master: args.master.clone().ok_or_else(|| {
                anyhow::anyhow!("--master ADDR is required (or a --config file that sets `master`)")
            })?,
            probe_interval_ms: DEFAULT_HEARTBEAT_MS,
            dead_after_ms: crate::STATUS_DEAD_AFTER_MS,
            shared: common::config::SharedConfig::default(),
            probe_addrs: Default::default(),
            report: true,
        },
    };
    config.shared.apply_tls_flags(&args.tls.args());
    if let Some(master) = &args.master {
        config.master = master.clone();
    }
    if let Some(ms) = args.probe_interval_ms {
        config.probe_interval_ms = ms;
    }
    if let Some(ms) = args.dead_after_ms {
        config.dead_after_ms = ms;
    }
    if let Some(addr) = args.metrics_addr {
        config.shared.metrics_addr = Some(addr);
    }
    for pair in &args.probe_addr {
        let (node, addr) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--probe-addr {pair:?}: expected NODE=ADDR"))?;
        config
            .probe_addrs
            .insert(node.trim().to_string(), addr.trim().to_string());
    }
    if args.no_report {
        config.report = false;
    }
    Ok(config)
}

fn run_command(args: RunArgs) -> anyhow::Result<()> {
    args.tls
        .args()
        .join_if_asked_blocking(common::tls::Role::Sentinel)?;
    let config = run_config(&args)?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async move {
        let sentinel = crate::sentinel(&config)?;
        let metrics = crate::serve_metrics(&config, &sentinel).await?;
        if let (Some(path), Some(server)) = (&args.metrics_addr_file, &metrics) {
            write_atomically(path, &format!("{}\n", server.addr))
                .with_context(|| format!("write metrics addr file {}", path.display()))?;
        }
        tracing::info!(
            master = %config.master,
            probe_interval_ms = config.probe_interval_ms,
            dead_after_ms = config.dead_after_ms,
            "sentinel started"
        );
        let mut view = sentinel.view();
        let announce = async {
            if let Some(path) = &args.addr_file {
                // Err only when the worker is gone, which the other branch reports.
                if view.wait_for(|v| v.master_reached).await.is_ok() {
                    write_atomically(path, &format!("{}\n", config.master))
                        .with_context(|| format!("write addr file {}", path.display()))?;
                    tracing::info!(path = %path.display(), "ready");
                }
            }
            std::future::pending::<anyhow::Result<()>>().await
        };
        tokio::select! {
            _ = sentinel.run(shutdown_signal()) => Ok(()),
            err = announce => err,
        }
    })
}

/// Writes `text` to `path` atomically ([`common::durable::write_atomic`]), so a reader
/// never sees a half-written file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    common::durable::write_atomic(path, text.as_bytes(), common::durable::MODE_DEFAULT)
}

/// Resolves at SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let int = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = term => {}
        _ = int => {}
    }
    tracing::info!("shutdown requested");
}

fn status_command(args: StatusArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mosaic-sentinel: cannot start the async runtime: {err}");
            return Verdict::Unavailable.exit_code();
        }
    };
    runtime.block_on(async {
        if let (true, Some(node)) = (args.files, args.node) {
            let (out, err, code) = files_report(&args, node).await;
            emit(&out, &err);
            return code;
        }
        if !args.watch {
            let (out, err, verdict) = one_status(&args).await;
            emit(&out, &err);
            return verdict.exit_code();
        }
        loop {
            let (out, err, verdict) = one_status(&args).await;
            if args.json {
                emit(&out, &err);
            } else {
                // Clear the screen and home the cursor, then draw the whole report.
                let footer = format!(
                    "\n(refreshing every {}s; Ctrl-C to quit)\n",
                    WATCH_INTERVAL.as_secs()
                );
                emit(&format!("\x1b[H\x1b[2J{out}{err}{footer}"), "");
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                _ = tokio::signal::ctrl_c() => break verdict.exit_code(),
            }
        }
    })
}

/// `status --node N --files`: (stdout text, stderr text, exit status).
async fn files_report(args: &StatusArgs, node: NodeId) -> (String, String, u8) {
    let failed = Verdict::Unavailable.exit_code();
    let mut shared = common::config::SharedConfig::default();
    shared.apply_tls_flags(&args.tls.args());
    let tls = match shared.load_tls("mosaic-sentinel status") {
        Ok(tls) => tls,
        Err(err) => return (String::new(), format!("mosaic-sentinel: {err:#}\n"), failed),
    };
    match crate::files::fetch(&args.master, &tls, node, crate::STATUS_MASTER_DEADLINE).await {
        Ok(report) => {
            let out = if args.json {
                crate::files::render_json(&report)
            } else {
                crate::files::render_table(&report)
            };
            (out, String::new(), 0)
        }
        Err(common::FsError::NotFound) => (
            String::new(),
            format!(
                "mosaic-sentinel: the master at {} knows no node {node}\n",
                args.master
            ),
            failed,
        ),
        Err(err) => (
            String::new(),
            format!("mosaic-sentinel: master {}: {err}\n", args.master),
            failed,
        ),
    }
}

/// One report: (stdout text, stderr text, verdict).
async fn one_status(args: &StatusArgs) -> (String, String, Verdict) {
    let mut shared = common::config::SharedConfig::default();
    shared.apply_tls_flags(&args.tls.args());
    let tls = match shared.load_tls("mosaic-sentinel status") {
        Ok(tls) => tls,
        Err(err) => {
            return (
                String::new(),
                format!("mosaic-sentinel: {err:#}\n"),
                Verdict::Unavailable,
            );
        }
    };
    match crate::status(&args.master, &tls).await {
        Ok(report) => {
            let out = if args.json {
                render_json(&report)
            } else {
                render_table(&report)
            };
            (out, String::new(), report.verdict)
        }
        Err(err) => {
            let (verdict, reasons) = status::verdict(
                Some(&format!("{} ({err})", args.master)),
                &status::ChunkCounts::default(),
                &[],
            );
            let line = format!(
                "mosaic-sentinel: {}: {}\n",
                verdict.as_str(),
                reasons.join("; ")
            );
            (String::new(), line, verdict)
        }
    }
}

/// Writes to stdout and stderr, ignoring a closed pipe (`status | head` must not panic).
fn emit(out: &str, err: &str) {
    if !out.is_empty() {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
    if !err.is_empty() {
        let _ = std::io::stderr().write_all(err.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).expect("valid command line")
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_override_defaults() {
        let Command::Run(args) = parse(&[
            "mosaic-sentinel",
            "run",
            "--master",
            "10.0.0.1:9420",
            "--probe-interval-ms",
            "250",
        ])
        .command
        else {
            panic!("run expected");
        };
        let config = run_config(&args).expect("valid");
        assert_eq!(config.master, "10.0.0.1:9420");
        assert_eq!(config.probe_interval_ms, 250);
        assert_eq!(config.dead_after_ms, 10_000);
    }

    #[test]
    fn run_flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("sentinel-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("sentinel.toml");
        std::fs::write(&file, "master = 'a:1'\ndead_after_ms = 30000\n").expect("write");
        let Command::Run(args) = parse(&[
            "mosaic-sentinel",
            "run",
            "--config",
            file.to_str().expect("utf-8 path"),
            "--dead-after-ms",
            "5000",
        ])
        .command
        else {
            panic!("run expected");
        };
        let config = run_config(&args).expect("valid");
        assert_eq!(config.master, "a:1");
        assert_eq!(config.probe_interval_ms, 1_000);
        assert_eq!(config.dead_after_ms, 5_000);

        std::fs::write(&file, "master = 'a:1'\nbogus = 1\n").expect("write");
        let err = run_config(&args).expect_err("unknown key refused");
        assert!(err.to_string().contains("bogus"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn run_needs_a_master() {
        // Only meaningful when the environment does not provide one.
        if std::env::var_os("MOSAIC_MASTER").is_some() {
            return;
        }
        let Command::Run(args) = parse(&["mosaic-sentinel", "run"]).command else {
            panic!("run expected");
        };
        let err = run_config(&args).expect_err("master required");
        assert!(err.to_string().contains("--master"), "{err}");
    }

    #[test]
    fn status_defaults_to_the_local_master() {
        if std::env::var_os("MOSAIC_MASTER").is_some() {
            return;
        }
        let Command::Status(args) = parse(&["mosaic-sentinel", "status", "--json"]).command else {
            panic!("status expected");
        };
        assert_eq!(args.master, "127.0.0.1:9420");
        assert!(args.json && !args.watch);
    }

    #[test]
    fn files_needs_a_node_and_parses_both_id_forms() {
        for (text, id) in [("n1f", 31), ("31", 31)] {
            let Command::Status(args) =
                parse(&["mosaic-sentinel", "status", "--node", text, "--files"]).command
            else {
                panic!("status expected");
            };
            assert_eq!((args.node, args.files), (Some(NodeId(id)), true));
        }
        for bad in [
            &["mosaic-sentinel", "status", "--files"][..],
            &["mosaic-sentinel", "status", "--node", "n1"],
            &["mosaic-sentinel", "status", "--node", "bogus", "--files"],
            &[
                "mosaic-sentinel",
                "status",
                "--node",
                "n1",
                "--files",
                "--watch",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
