//! Prints the architecture checks' current violations: in the baseline file's format (header
//! included) by default, so the output can replace `known-violations.txt`; with `--details`,
//! every violation with its evidence. See the library's documentation for the checks.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let details = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--details") => true,
        Some(other) => {
            eprintln!("unknown argument {other:?}; usage: bulkhead-architecture [--details]");
            return ExitCode::from(2);
        }
    };
    // The workspace this binary was built from: crates/architecture/../..
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let violations = match bulkhead_architecture::Workspace::read(&root)
        .and_then(|workspace| bulkhead_architecture::check(&workspace))
    {
        Ok(violations) => violations,
        Err(error) => {
            eprintln!("architecture check could not run: {error}");
            return ExitCode::FAILURE;
        }
    };
    if details {
        for violation in &violations {
            println!("{violation}");
        }
    } else {
        print!("{}", bulkhead_architecture::baseline::render(&violations));
    }
    ExitCode::SUCCESS
}
