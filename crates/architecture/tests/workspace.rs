//! Runs the architecture checks on this workspace and compares them with
//! `known-violations.txt`, so `cargo test --workspace` enforces them.

use std::path::{Path, PathBuf};

use bulkhead_architecture::{baseline, check, Workspace};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_workspace_has_exactly_the_known_violations() {
    let root = workspace_root();
    let workspace = Workspace::read(&root).expect("read crates/*/src");
    let violations = check(&workspace).expect("the checks run");
    let baseline_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("known-violations.txt");
    let listed_text = std::fs::read_to_string(&baseline_path).expect("read known-violations.txt");
    let comparison = baseline::compare(&violations, &baseline::parse(&listed_text));
    if comparison.is_clean() {
        return;
    }
    let mut message = String::new();
    if !comparison.new.is_empty() {
        message.push_str("New architecture violations (fix them; see crates/architecture/src/lib.rs for the rules):\n");
        for violation in &comparison.new {
            message.push_str(&format!("{violation}\n"));
        }
    }
    if !comparison.gone.is_empty() {
        message.push_str(
            "Fixed violations still listed in crates/architecture/known-violations.txt (delete these lines):\n",
        );
        for key in &comparison.gone {
            message.push_str(&format!("  {key}\n"));
        }
    }
    message.push_str(
        "After moving files, regenerate the list and review its diff:\n  \
         cargo run -q -p bulkhead-architecture > crates/architecture/known-violations.txt\n",
    );
    panic!("{message}");
}

/// A walker that found nothing would pass the test above without checking anything.
#[test]
fn the_checker_sees_the_whole_workspace() {
    let workspace = Workspace::read(&workspace_root()).expect("read crates/*/src");
    let files = workspace.files();
    for expected in [
        "crates/architecture/src/lib.rs",
        "crates/core/src/lib.rs",
        "crates/server/src/main.rs",
    ] {
        assert!(files.contains_key(expected), "{expected} not read");
    }
    assert!(files.len() > 50, "only {} files read", files.len());
}
