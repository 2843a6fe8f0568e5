//! Source files longer than [`MAX_FILE_LINES`] lines.

use crate::{Violation, Workspace};

/// The longest a file under `crates/*/src` may be (issue 18): beyond it a file holds more than
/// one job.
pub const MAX_FILE_LINES: usize = 800;

/// One violation per file over the limit, keyed `long-file <path>` (the count is in the detail,
/// so the key survives edits that keep the file too long).
pub(crate) fn check(workspace: &Workspace) -> Vec<Violation> {
    workspace
        .files()
        .iter()
        .filter_map(|(path, text)| {
            let lines = text.lines().count();
            (lines > MAX_FILE_LINES).then(|| Violation {
                key: format!("long-file {path}"),
                detail: format!("  {path}: {lines} lines (limit {MAX_FILE_LINES})\n"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_over_the_limit_are_reported() {
        let at_limit = "x\n".repeat(MAX_FILE_LINES);
        let over = "x\n".repeat(MAX_FILE_LINES + 1);
        let workspace = Workspace::from_sources([
            ("crates/demo/src/fits.rs", at_limit),
            ("crates/demo/src/long.rs", over),
        ]);
        let keys: Vec<String> = check(&workspace).into_iter().map(|v| v.key).collect();
        assert_eq!(keys, vec!["long-file crates/demo/src/long.rs"]);
    }
}
