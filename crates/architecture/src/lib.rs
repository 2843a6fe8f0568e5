//! Checks that keep Bulkhead's workspace in the shape `docs/architecture.md` describes.
//!
//! The rooms of a crate only stay rooms if nothing quietly undoes them, so these rules are checked
//! on every `cargo test --workspace` (the integration test `tests/workspace.rs`) rather than left
//! to review. The checker parses every `.rs` file under `crates/*/src` with `syn`; it walks the
//! workspace and knows no module by name, except the allowed settings files below.
//!
//! 1. **No import cycle between sibling modules** ([`cycles`]). For every module of every crate
//!    target, its direct child modules are the nodes (a child stands for its whole subtree, file
//!    and inline modules alike). An edge A → B exists when code inside A names an item inside B
//!    through a `crate::`, `super::` or `self::` path: in `use` items (groups included), in
//!    expressions, types and patterns, and in the tokens of macro calls. Re-exports are followed
//!    (`use crate::X` where the root does `pub use a::X` is a use of `a`), and so are glob
//!    imports (`use super::*`) for names the glob's module defines or imports. The parent's own
//!    code is not a node: a parent using its children, and children using `super::helper`, is
//!    layering, not a cycle. A strongly connected component of two or more siblings is a
//!    violation, reported with one example reference (file:line) per edge, which is where to cut.
//!    Why: a cycle means neither module can be understood, tested or moved without the other;
//!    issue 18 found three of them hiding the server's and the store's structure.
//! 2. **No source file over [`MAX_FILE_LINES`] lines** ([`file_length`]). Why: a file that long
//!    holds more than one job, and the rooms are meant to show the jobs.
//! 3. **Environment variables are read only in the settings module** ([`env_reads`]): a call or
//!    mention of `std::env::var`, `var_os`, `vars` or `vars_os`, however imported, outside
//!    [`env_reads::ALLOWED_FILES`]. `env!` and `option_env!` are compile time and fine; clap's
//!    `env = "…"` attributes are declarations, not reads. Why: one place reads and validates every
//!    setting, so a user can find them all and a typo fails at start, not on first use.
//! 4. **Route handlers do not mint a system context** ([`system_contexts`]): no file under
//!    `http/routes/` names `TenantContext::for_system`. Why: a handler acts for a caller, and a
//!    system context holds every scope; the contexts a handler works in are made by resolution
//!    (issue 18: seven were built in route handlers).
//!
//! Code under `#[cfg(test)]` is not part of the module graph (test modules import what they test
//! across the tree, which is not a dependency of the product); it still counts for the other
//! rules.
//!
//! # The baseline
//!
//! `crates/architecture/known-violations.txt` lists today's violations, one stable key a line
//! (no line numbers, so unrelated edits do not disturb it). The test fails on any violation not
//! listed and on any listed line that no longer occurs, so the list can only shrink: fixing a
//! violation means deleting its line in the same change. To print the current violations in the
//! file's format (header included), run
//!
//! ```text
//! cargo run -q -p bulkhead-architecture > crates/architecture/known-violations.txt
//! cargo run -q -p bulkhead-architecture -- --details   # every violation with its evidence
//! ```
//!
//! and review the diff: lines may go, and a new line needs a reason in the commit message.
//!
//! Limits, by design of a syntactic check: paths that do not start with `crate`, `super` or
//! `self` are followed only through glob imports; macro bodies are scanned as tokens, so a
//! `macro_rules!` body counts where it is written.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod cycles;
pub mod env_reads;
pub mod file_length;
mod modules;
pub mod system_contexts;
mod tokens;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use file_length::MAX_FILE_LINES;

/// Why the checker could not run (as opposed to a violation it found).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A directory or file of the workspace could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// What was being read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A source file is not valid Rust for `syn`.
    #[error("parsing {path}:{line}: {message}")]
    Parse {
        /// The file, relative to the workspace root.
        path: String,
        /// Where `syn` stopped.
        line: usize,
        /// What `syn` said.
        message: String,
    },
    /// A `mod name;` declaration whose file does not exist.
    #[error("{declared_in}: `mod {name};` has no file (looked for {candidates})")]
    MissingModule {
        /// The file holding the declaration.
        declared_in: String,
        /// The module's name.
        name: String,
        /// The paths that were tried.
        candidates: String,
    },
}

/// The sources the checks run on: every `.rs` file under `crates/*/src`, keyed by its path
/// relative to the workspace root with `/` separators (`crates/server/src/lib.rs`).
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    files: BTreeMap<String, String>,
}

impl Workspace {
    /// Reads every `.rs` file under `<root>/crates/*/src`.
    pub fn read(root: &Path) -> Result<Self, Error> {
        let mut files = BTreeMap::new();
        for crate_dir in sorted_entries(&root.join("crates"))? {
            let src = crate_dir.join("src");
            if src.is_dir() {
                collect_rust_files(root, &src, &mut files)?;
            }
        }
        Ok(Self { files })
    }

    /// A workspace made of the given sources (for tests): paths as [`Workspace::read`] keys them.
    pub fn from_sources<P: Into<String>, T: Into<String>>(
        sources: impl IntoIterator<Item = (P, T)>,
    ) -> Self {
        let files = sources
            .into_iter()
            .map(|(path, text)| (path.into(), text.into()))
            .collect();
        Self { files }
    }

    /// The files, by relative path.
    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_error = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        entries.push(entry.map_err(read_error)?.path());
    }
    entries.sort();
    Ok(entries)
}

fn collect_rust_files(
    root: &Path,
    dir: &Path,
    files: &mut BTreeMap<String, String>,
) -> Result<(), Error> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            collect_rust_files(root, &path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            files.insert(relative_key(root, &path), text);
        }
    }
    Ok(())
}

fn relative_key(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The stable one-line key the baseline lists (no line numbers).
    pub key: String,
    /// What a developer needs to fix it: counts, file:line evidence.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.key, self.detail)
    }
}

/// Runs every check and returns the violations sorted by key, one per key.
pub fn check(workspace: &Workspace) -> Result<Vec<Violation>, Error> {
    let parsed = parse_all(workspace)?;
    let mut violations = Vec::new();
    violations.extend(cycles::check(&parsed)?);
    violations.extend(file_length::check(workspace));
    violations.extend(env_reads::check(&parsed));
    violations.extend(system_contexts::check(&parsed));
    violations.sort();
    violations.dedup_by(|later, earlier| later.key == earlier.key);
    Ok(violations)
}

/// Every file of the workspace, parsed.
type Parsed = BTreeMap<String, syn::File>;

fn parse_all(workspace: &Workspace) -> Result<Parsed, Error> {
    workspace
        .files
        .iter()
        .map(|(path, text)| {
            syn::parse_file(text)
                .map(|file| (path.clone(), file))
                .map_err(|error| Error::Parse {
                    path: path.clone(),
                    line: error.span().start().line,
                    message: error.to_string(),
                })
        })
        .collect()
}

/// The keys of the violations one check finds in a workspace made of `sources` (tests of the
/// checks).
#[cfg(test)]
fn violation_keys(
    sources: &[(&str, &str)],
    check: impl Fn(&Parsed) -> Vec<Violation>,
) -> Vec<String> {
    let workspace = Workspace::from_sources(sources.iter().copied());
    let parsed = parse_all(&workspace).expect("sources parse");
    check(&parsed).into_iter().map(|v| v.key).collect()
}

/// Whether the attributes hold `#[cfg(test)]` (alone; `cfg(all(test, …))` counts too).
fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg") && {
            let mut mentions_test = false;
            let _ignored = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("test") {
                    mentions_test = true;
                } else if meta.path.is_ident("all") {
                    meta.parse_nested_meta(|inner| {
                        if inner.path.is_ident("test") {
                            mentions_test = true;
                        }
                        skip_meta_value(&inner)
                    })?;
                } else {
                    skip_meta_value(&meta)?;
                }
                Ok(())
            });
            mentions_test
        }
    })
}

/// Consumes `= value` or `(…)` after a nested meta path so parsing can go on.
fn skip_meta_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _value: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_meta_value(&inner))?;
    }
    Ok(())
}
