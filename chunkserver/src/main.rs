//! `mosaic-chunkserver` entry point: parse flags, set up logging, run the library on a
//! multi-threaded runtime. All behaviour lives in the library (`chunkserver::cli`).

use clap::Parser as _;

fn main() {
    let cli = chunkserver::cli::Cli::parse();
    common::telemetry::init("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chunkserver")
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(cli.execute()),
        Err(e) => Err(anyhow::Error::new(e).context("build the tokio runtime")),
    };
    if let Err(e) = result {
        // One line: the context chain, not a backtrace.
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}
