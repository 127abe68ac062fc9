//! `mosaic-master` binary: parses the command line, sets up logging and a tokio runtime,
//! and hands over to the library (`cli.rs` for the subcommands).

mod cli;

use anyhow::Context as _;
use clap::Parser as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    common::telemetry::init("info");
    let result = match &cli.command {
        cli::Command::Init(args) => cli::init(args),
        cli::Command::Issue(args) => cli::issue(args),
        cli::Command::Revoke(args) => cli::revoke(args),
        cli::Command::InitPki(args) => cli::init_pki(args),
        cli::Command::RotateKey(args) => cli::rotate_key(args),
        cli::Command::IssueToken(args) => cli::issue_token(args),
        cli::Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("mosaic-master")
            .build()
            .context("build the tokio runtime")
            .and_then(|rt| rt.block_on(cli::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its context chain, naming the file and the fix.
            eprintln!("mosaic-master: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
