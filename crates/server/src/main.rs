//! The `bulkhead` binary.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    bulkhead_server::cli::main()
}
