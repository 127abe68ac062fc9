//! `mosaic-sentinel` binary: all logic is in the library (`sentinel::cli`).

fn main() -> std::process::ExitCode {
    sentinel::cli::main()
}
