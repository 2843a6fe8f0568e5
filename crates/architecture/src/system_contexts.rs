//! System contexts minted by route handlers.
//!
//! `TenantContext::for_system` makes a context whose actor holds every scope. Route handlers act
//! for a caller, so theirs comes from resolution (the credential it verified, or the login's
//! tenant it named); a handler that minted a system context would skip the caller's scopes. Any
//! path that names `TenantContext::for_system`, in code or inside a macro call, under a
//! [`ROUTE_DIRECTORY`], is a violation.

use std::collections::BTreeMap;

use syn::visit::Visit;

use crate::{tokens, Parsed, Violation};

/// Where route handlers live: every file whose path contains this.
pub const ROUTE_DIRECTORY: &str = "/src/http/routes/";

/// One violation per file, keyed `system-context <path>`.
pub(crate) fn check(parsed: &Parsed) -> Vec<Violation> {
    let mut by_key: BTreeMap<String, String> = BTreeMap::new();
    for (path, file) in parsed {
        if !path.contains(ROUTE_DIRECTORY) {
            continue;
        }
        let mut finder = MintFinder::default();
        finder.visit_file(file);
        for line in finder.lines {
            by_key
                .entry(format!("system-context {path}"))
                .or_default()
                .push_str(&format!("  {path}:{line} TenantContext::for_system\n"));
        }
    }
    by_key
        .into_iter()
        .map(|(key, mut detail)| {
            detail.push_str(
                "  take the context resolution made (an extractor), or make it in http::resolve\n",
            );
            Violation { key, detail }
        })
        .collect()
}

fn names_system_constructor(segments: &[String]) -> bool {
    segments
        .windows(2)
        .any(|pair| pair[0] == "TenantContext" && pair[1] == "for_system")
}

#[derive(Debug, Default)]
struct MintFinder {
    lines: Vec<usize>,
}

impl<'ast> Visit<'ast> for MintFinder {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path
            .segments
            .iter()
            .map(|segment| segment.ident.to_string())
            .collect();
        if names_system_constructor(&segments) {
            let line = path
                .segments
                .first()
                .map_or(0, |segment| segment.ident.span().start().line);
            self.lines.push(line);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        for path in tokens::paths_in(mac.tokens.clone()) {
            if names_system_constructor(&path.segments) {
                self.lines.push(path.line);
            }
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
    fn only_route_handlers_minting_a_system_context_are_reported() {
        let mint = "fn f(t: T) { let _ = bulkhead_core::TenantContext::for_system(t, \"x\"); }\n";
        let in_macro = "fn f(t: T) { g!(TenantContext::for_system(t, \"x\")); }\n";
        let found = keys(&[
            ("crates/server/src/http/routes/keys.rs", mint),
            ("crates/server/src/http/routes/deep/pages.rs", in_macro),
            ("crates/server/src/http/resolve.rs", mint),
            ("crates/server/src/service/worker.rs", mint),
            (
                "crates/server/src/http/routes/fine.rs",
                "fn f(c: &TenantContext) -> bool { matches!(c.actor(), Actor::System { .. }) }\n",
            ),
        ]);
        assert_eq!(
            found,
            vec![
                "system-context crates/server/src/http/routes/deep/pages.rs",
                "system-context crates/server/src/http/routes/keys.rs",
            ]
        );
    }
}
