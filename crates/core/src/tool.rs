//! Tool names: the one spelling a tenant's tool has in paths, scopes and audit events.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest tool name, in bytes (all ASCII).
pub const MAX_TOOL_NAME_LEN: usize = 64;

/// A tool's name: `^[a-z][a-z0-9_-]{0,63}$`.
///
/// Invariant: the text is ASCII, 1 to [`MAX_TOOL_NAME_LEN`] bytes, starts with a lowercase
/// letter and holds only lowercase letters, digits, `_` and `-`. There is one spelling of each
/// name: nothing is case-folded or normalised, so a name never contains `:` or `*` and the scope
/// `tools:call:<name>` is unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ToolName(String);

/// A tool name that breaks the grammar. The message never echoes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a tool name has 1 to 64 characters a-z, 0-9, `_`, `-`, starting with a letter")]
pub struct ToolNameError;

impl ToolName {
    /// Strict parse.
    pub fn parse(text: &str) -> Result<ToolName, ToolNameError> {
        let b = text.as_bytes();
        let valid = !b.is_empty()
            && b.len() <= MAX_TOOL_NAME_LEN
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'));
        if valid {
            Ok(ToolName(text.to_owned()))
        } else {
            Err(ToolNameError)
        }
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ToolName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ToolName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ToolName::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_is_strict() {
        for ok in ["a", "search", "get-weather", "db_query2", &"a".repeat(64)] {
            assert!(ToolName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "1abc",
            "-a",
            "a:b",
            "*",
            "a*",
            "a b",
            "ａ",
            "é",
            &"a".repeat(65),
            "a/b",
            "a.b",
        ] {
            assert!(ToolName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
