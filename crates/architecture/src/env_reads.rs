//! Environment variables read outside the settings module.
//!
//! A read is any path that reaches `std::env::var`, `var_os`, `vars` or `vars_os`, however it was
//! imported (`std::env::var`, `env::var` after `use std::env`, `var` after `use std::env::var`,
//! an alias), called or passed as a function (`.map(env::var)`), also inside macro calls.
//! `env!` and `option_env!` read the build's environment at compile time and are not reads;
//! neither are clap's `env = "…"` declarations (clap does the reading, inside the settings
//! module's parser).

use std::collections::BTreeMap;

use syn::visit::Visit;

use crate::modules::{flatten_use, UseName};
use crate::{tokens, Parsed, Violation};

/// The files that may read the environment: the server's settings module (today `config.rs`;
/// `settings.rs` or a `settings/` directory once it is renamed) and the test harness. An entry
/// ending in `/` allows everything below it.
pub const ALLOWED_FILES: &[&str] = &[
    "crates/server/src/config.rs",
    "crates/server/src/settings.rs",
    "crates/server/src/settings/",
    "crates/test-support/src/",
];

/// The functions of `std::env` that read a variable.
const READING_FUNCTIONS: &[&str] = &["var", "var_os", "vars", "vars_os"];

/// Whether `path` (relative to the workspace root) may read the environment.
pub fn is_allowed(path: &str) -> bool {
    ALLOWED_FILES.iter().any(|allowed| {
        if allowed.ends_with('/') {
            path.starts_with(allowed)
        } else {
            path == *allowed
        }
    })
}

/// One violation per file and variable, keyed `env-read <path> <VARIABLE>`; a variable whose
/// name is not a string literal is `(computed)`, and `vars()` reads `(all)`.
pub(crate) fn check(parsed: &Parsed) -> Vec<Violation> {
    let mut by_key: BTreeMap<String, String> = BTreeMap::new();
    for (path, file) in parsed {
        if is_allowed(path) {
            continue;
        }
        for read in reads_in(file) {
            let detail = by_key
                .entry(format!("env-read {path} {}", read.variable))
                .or_default();
            detail.push_str(&format!("  {path}:{} {}\n", read.line, read.written));
        }
    }
    by_key
        .into_iter()
        .map(|(key, mut detail)| {
            detail.push_str("  read it in the settings module and pass the value in\n");
            Violation { key, detail }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    variable: String,
    line: usize,
    /// The path as written (`env::var`).
    written: String,
}

fn reads_in(file: &syn::File) -> Vec<Read> {
    let mut imports = ImportCollector::default();
    imports.visit_file(file);
    let mut finder = ReadFinder {
        aliases: imports.aliases,
        reads: Vec::new(),
    };
    finder.visit_file(file);
    finder.reads
}

/// Names that `use` items anywhere in the file bind to `std::env` or something in it. Scopes are
/// not told apart: a file that imports `std::env::var` and also defines its own `var` is rare
/// enough to read twice.
#[derive(Debug, Default)]
struct ImportCollector {
    aliases: BTreeMap<String, Vec<String>>,
}

impl<'ast> Visit<'ast> for ImportCollector {
    fn visit_item_use(&mut self, item_use: &'ast syn::ItemUse) {
        for leaf in flatten_use(&item_use.tree, item_use.leading_colon.is_some()) {
            if let UseName::Named(name) = leaf.name {
                if leaf
                    .segments
                    .starts_with(&["std".to_owned(), "env".to_owned()])
                {
                    self.aliases.insert(name, leaf.segments);
                }
            }
        }
    }
}

struct ReadFinder {
    aliases: BTreeMap<String, Vec<String>>,
    reads: Vec<Read>,
}

impl ReadFinder {
    /// The `std::env` function a path reaches, if it is one that reads.
    fn reading_function(&self, segments: &[String]) -> Option<String> {
        let first = segments.first()?;
        let mut canonical = match self.aliases.get(first) {
            Some(target) => target.clone(),
            None if first == "std" => vec![first.clone()],
            None => return None,
        };
        canonical.extend_from_slice(&segments[1..]);
        match canonical.as_slice() {
            [std, env, function]
                if std == "std"
                    && env == "env"
                    && READING_FUNCTIONS.contains(&function.as_str()) =>
            {
                Some(function.clone())
            }
            _ => None,
        }
    }

    fn record(&mut self, segments: &[String], line: usize, variable: Option<String>) -> bool {
        let Some(function) = self.reading_function(segments) else {
            return false;
        };
        let variable = match (function.as_str(), variable) {
            ("vars" | "vars_os", _) => "(all)".to_owned(),
            (_, Some(name)) => name,
            (_, None) => "(computed)".to_owned(),
        };
        self.reads.push(Read {
            variable,
            line,
            written: segments.join("::"),
        });
        true
    }
}

fn path_segments(path: &syn::Path) -> Vec<String> {
    path.segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect()
}

fn path_line(path: &syn::Path) -> usize {
    path.segments
        .first()
        .map_or(0, |segment| segment.ident.span().start().line)
}

impl<'ast> Visit<'ast> for ReadFinder {
    fn visit_item_use(&mut self, _item_use: &'ast syn::ItemUse) {
        // An import is not a read; its uses are.
    }

    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let syn::Expr::Path(function) = &*call.func {
            let variable = match call.args.first() {
                Some(syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(text),
                    ..
                })) => Some(text.value()),
                _ => None,
            };
            let path = &function.path;
            if self.record(&path_segments(path), path_line(path), variable) {
                for argument in &call.args {
                    self.visit_expr(argument);
                }
                return;
            }
        }
        syn::visit::visit_expr_call(self, call);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.record(&path_segments(path), path_line(path), None);
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        for path in tokens::paths_in(mac.tokens.clone()) {
            self.record(&path.segments, path.line, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(sources: &[(&str, &str)]) -> Vec<String> {
        crate::violation_keys(sources, check)
    }

    #[test]
    fn reads_are_found_however_imported() {
        let found = keys(&[(
            "crates/demo/src/a.rs",
            r#"
use std::env;
use std::env::{var_os, vars as all_vars};
use std::env::var as read;
fn f(name: &str) {
    let _ = std::env::var("FULL");
    let _ = env::var("SHORT");
    let _ = var_os("OS");
    let _ = read(name);
    let _ = all_vars();
    let _ = ["LATER"].map(env::var);
    println!("{:?}", ::std::env::var("IN_MACRO"));
}
"#,
        )]);
        assert_eq!(
            found,
            vec![
                "env-read crates/demo/src/a.rs (all)",
                "env-read crates/demo/src/a.rs (computed)",
                "env-read crates/demo/src/a.rs FULL",
                "env-read crates/demo/src/a.rs OS",
                "env-read crates/demo/src/a.rs SHORT",
            ]
        );
    }

    #[test]
    fn compile_time_env_clap_attributes_and_allowed_files_are_fine() {
        let found = keys(&[
            (
                "crates/demo/src/a.rs",
                r#"
#[derive(clap::Parser)]
struct Flags {
    #[arg(long, env = "DEMO_LISTEN")]
    listen: String,
}
const DIR: &str = env!("CARGO_MANIFEST_DIR");
const OPT: Option<&str> = option_env!("DEMO");
fn paths() { let _ = std::env::temp_dir(); let _ = std::env::split_paths("a:b"); }
"#,
            ),
            (
                "crates/server/src/config.rs",
                "fn f() { let _ = std::env::var(\"DATABASE_URL\"); }\n",
            ),
            (
                "crates/server/src/settings.rs",
                "fn f() { let _ = std::env::var(\"DATABASE_URL\"); }\n",
            ),
            (
                "crates/test-support/src/deep/harness.rs",
                "fn f() { let _ = std::env::var_os(\"PATH\"); }\n",
            ),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }
}
