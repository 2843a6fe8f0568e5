//! Paths found in raw tokens: the bodies of macro calls, which `syn` leaves unparsed.

use proc_macro2::{Spacing, TokenStream, TokenTree};

/// A path written in tokens: its segments (`["crate", "a", "B"]`) and the line of its first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenPath {
    pub(crate) segments: Vec<String>,
    pub(crate) line: usize,
}

/// Every `a::b::c` sequence of two or more identifiers in `tokens`, groups included. A leading
/// `$` (as in `$crate::x`) is dropped, so `$crate::x` reads as `crate::x`.
pub(crate) fn paths_in(tokens: TokenStream) -> Vec<TokenPath> {
    let mut found = Vec::new();
    scan(tokens, &mut found);
    found
}

fn scan(tokens: TokenStream, found: &mut Vec<TokenPath>) {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut index = 0;
    while index < trees.len() {
        match &trees[index] {
            TokenTree::Group(group) => {
                scan(group.stream(), found);
                index += 1;
            }
            TokenTree::Ident(first) => {
                let mut segments = vec![first.to_string()];
                let line = first.span().start().line;
                let mut next = index + 1;
                while let Some(ident) = path_separator_then_ident(&trees, next) {
                    segments.push(ident);
                    next += 3;
                }
                if segments.len() > 1 {
                    found.push(TokenPath { segments, line });
                }
                index = next;
            }
            TokenTree::Punct(_) | TokenTree::Literal(_) => index += 1,
        }
    }
}

/// The identifier after a `::` starting at `at`, if the tokens there are `:` `:` ident.
fn path_separator_then_ident(trees: &[TokenTree], at: usize) -> Option<String> {
    match (trees.get(at), trees.get(at + 1), trees.get(at + 2)) {
        (
            Some(TokenTree::Punct(first)),
            Some(TokenTree::Punct(second)),
            Some(TokenTree::Ident(ident)),
        ) if first.as_char() == ':'
            && first.spacing() == Spacing::Joint
            && second.as_char() == ':' =>
        {
            Some(ident.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments_of(source: &str) -> Vec<Vec<String>> {
        let tokens: TokenStream = source.parse().expect("tokens");
        paths_in(tokens)
            .into_iter()
            .map(|path| path.segments)
            .collect()
    }

    #[test]
    fn finds_paths_inside_groups_and_after_dollar() {
        let found =
            segments_of(r#"("{}", crate::a::f(x), [$crate::b::G], y.z, std::env::var("X"))"#);
        assert_eq!(
            found,
            vec![
                vec!["crate", "a", "f"],
                vec!["crate", "b", "G"],
                vec!["std", "env", "var"],
            ]
        );
    }
}
