//! `mosaic-bench`: see the library ([`bench::run`]) for what it measures.

fn main() -> std::process::ExitCode {
    match bench::run(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mosaic-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
