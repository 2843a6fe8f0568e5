//! Hierarchical resource namespaces (`marketing/campaigns`) and the prefixes credentials are
//! confined to.
//!
//! Invariant: a [`Namespace`] is one to eight segments joined by `/`, each segment 1–63 of
//! `a-z 0-9 . _ -`, starting with a letter or digit, and never `.` or `..`. There is no
//! normalisation: anything else (upper case, percent-encoding, empty segments, a leading or
//! trailing slash, `..`, non-ASCII look-alikes) is refused, so one namespace has exactly one
//! spelling and a prefix check on the parsed value cannot be talked around. Containment is by
//! whole segments: `mark` does not contain `marketing`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most segments in a namespace.
pub const MAX_SEGMENTS: usize = 8;
/// Longest segment.
pub const MAX_SEGMENT_LEN: usize = 63;

/// Why a namespace was refused. Never echoes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a namespace is 1 to 8 segments of a-z, 0-9, '.', '_' and '-' (each starting with a letter \
     or digit, never '.' or '..') joined by '/'"
)]
pub struct NamespaceError;

/// A resource's place in the tenant's hierarchy, and the prefix a credential may be confined to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Namespace(String);

impl Namespace {
    /// Strict parse; see the module doc.
    pub fn parse(text: &str) -> Result<Namespace, NamespaceError> {
        if text.is_empty() || text.len() > MAX_SEGMENTS * (MAX_SEGMENT_LEN + 1) {
            return Err(NamespaceError);
        }
        let mut count = 0;
        for segment in text.split('/') {
            count += 1;
            let bytes = segment.as_bytes();
            let valid = !bytes.is_empty()
                && bytes.len() <= MAX_SEGMENT_LEN
                && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
                && bytes.iter().all(|&b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                });
            if !valid || count > MAX_SEGMENTS {
                return Err(NamespaceError);
            }
        }
        Ok(Namespace(text.to_owned()))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this namespace or inside it, by whole segments.
    pub fn contains(&self, other: &Namespace) -> bool {
        other.0 == self.0
            || (other.0.len() > self.0.len()
                && other.0.starts_with(&self.0)
                && other.0.as_bytes()[self.0.len()] == b'/')
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Namespace::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ns(text: &str) -> Namespace {
        Namespace::parse(text).unwrap()
    }

    #[test]
    fn containment_is_by_whole_segments() {
        let marketing = ns("marketing");
        assert!(marketing.contains(&ns("marketing")));
        assert!(marketing.contains(&ns("marketing/campaigns")));
        assert!(marketing.contains(&ns("marketing/campaigns/q3")));
        assert!(!marketing.contains(&ns("marketingx")));
        assert!(!marketing.contains(&ns("finance")));
        assert!(!ns("mark").contains(&marketing));
        assert!(!ns("marketing/campaigns").contains(&marketing));
    }

    #[test]
    fn every_bypass_spelling_is_refused() {
        for bad in [
            "",
            "/",
            "marketing/",
            "/marketing",
            "marketing//campaigns",
            "marketing/../finance",
            "marketing/./finance",
            "..",
            ".",
            "marketing%2F..%2Ffinance",
            "marketing%2ffinance",
            "Marketing",
            "marketing\\finance",
            "marketing/ finance",
            "marketing\u{2215}finance", // DIVISION SLASH
            "marketing\u{ff0f}finance", // FULLWIDTH SOLIDUS
            "mаrketing",                // Cyrillic a
            "marketing\u{0}",
            "-marketing",
            "a/b/c/d/e/f/g/h/i",
        ] {
            assert_eq!(Namespace::parse(bad), Err(NamespaceError), "{bad:?}");
        }
        assert!(Namespace::parse(&"a".repeat(63)).is_ok());
        assert!(Namespace::parse(&"a".repeat(64)).is_err());
        assert!(Namespace::parse("a/b/c/d/e/f/g/h").is_ok());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_its_own_spelling(text in "\\PC{0,80}") {
            if let Ok(parsed) = Namespace::parse(&text) {
                prop_assert_eq!(parsed.as_str(), text.as_str());
                prop_assert!(!text.split('/').any(|s| s == ".." || s == "." || s.is_empty()));
            }
        }

        #[test]
        fn a_prefix_contains_exactly_its_segment_descendants(
            a in "[a-z]{1,4}(/[a-z]{1,4}){0,2}",
            b in "[a-z]{1,4}(/[a-z]{1,4}){0,2}",
        ) {
            let (pa, pb) = (ns(&a), ns(&b));
            let segments_a: Vec<&str> = a.split('/').collect();
            let segments_b: Vec<&str> = b.split('/').collect();
            let expected = segments_b.len() >= segments_a.len() && segments_b[..segments_a.len()] == segments_a[..];
            prop_assert_eq!(pa.contains(&pb), expected);
        }
    }
}
