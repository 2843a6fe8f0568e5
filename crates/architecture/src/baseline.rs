//! The list of known violations (`crates/architecture/known-violations.txt`), which may only
//! shrink.

use std::collections::BTreeSet;

use crate::Violation;

/// The header written above the keys; lines starting with `#` and blank lines are not keys.
pub const HEADER: &str = "\
# Known violations of the architecture checks (crates/architecture). This list may only shrink.
#
# One violation a line; `cargo test -p bulkhead-architecture` fails on a violation missing here
# and on a line here that no longer occurs, so fixing a violation means deleting its line in the
# same change. Never add a line to make a new violation pass: fix it instead. To regenerate after
# moving files (review the diff: lines may only go away, or be renamed with the files):
#   cargo run -q -p bulkhead-architecture > crates/architecture/known-violations.txt
# To see every violation with its evidence (file:line):
#   cargo run -q -p bulkhead-architecture -- --details
";

/// The keys listed in a baseline file's text.
pub fn parse(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The baseline file for `violations`: [`HEADER`], then one key a line.
pub fn render(violations: &[Violation]) -> String {
    let mut text = String::from(HEADER);
    let keys: BTreeSet<&str> = violations.iter().map(|v| v.key.as_str()).collect();
    for key in keys {
        text.push_str(key);
        text.push('\n');
    }
    text
}

/// How the violations found differ from the baseline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Violations that the baseline does not list: to be fixed.
    pub new: Vec<Violation>,
    /// Baseline lines that no longer occur: to be deleted from the file.
    pub gone: Vec<String>,
}

impl Comparison {
    /// Whether the violations are exactly the listed ones.
    pub fn is_clean(&self) -> bool {
        self.new.is_empty() && self.gone.is_empty()
    }
}

/// Compares the violations found with the listed keys.
pub fn compare(violations: &[Violation], listed: &BTreeSet<String>) -> Comparison {
    let found: BTreeSet<&str> = violations.iter().map(|v| v.key.as_str()).collect();
    Comparison {
        new: violations
            .iter()
            .filter(|violation| !listed.contains(&violation.key))
            .cloned()
            .collect(),
        gone: listed
            .iter()
            .filter(|key| !found.contains(key.as_str()))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(key: &str) -> Violation {
        Violation {
            key: key.to_owned(),
            detail: String::new(),
        }
    }

    #[test]
    fn the_rendered_file_parses_back_to_its_keys() {
        let violations = [violation("long-file b.rs"), violation("env-read a.rs X")];
        let listed = parse(&render(&violations));
        assert_eq!(
            listed.into_iter().collect::<Vec<_>>(),
            vec!["env-read a.rs X", "long-file b.rs"]
        );
    }

    #[test]
    fn new_violations_and_stale_lines_both_show() {
        let listed = parse("# header\n\nlong-file a.rs\nlong-file fixed.rs\n");
        let comparison = compare(
            &[violation("long-file a.rs"), violation("long-file b.rs")],
            &listed,
        );
        assert_eq!(comparison.new, vec![violation("long-file b.rs")]);
        assert_eq!(comparison.gone, vec!["long-file fixed.rs".to_owned()]);
        assert!(!comparison.is_clean());
        assert!(compare(&[violation("long-file a.rs")], &parse("long-file a.rs")).is_clean());
    }
}
