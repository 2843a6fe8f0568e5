//! Tenant slugs: the DNS label a tenant is reached under (`acme.<base-domain>`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Names that are never a tenant's slug: they are, or could be mistaken for, platform hosts.
pub const RESERVED_SLUGS: &[&str] = &[
    "www",
    "api",
    "admin",
    "app",
    "auth",
    "login",
    "oauth",
    "sso",
    "id",
    "account",
    "accounts",
    "billing",
    "status",
    "docs",
    "help",
    "support",
    "mail",
    "email",
    "smtp",
    "static",
    "assets",
    "cdn",
    "internal",
    "system",
    "root",
    "bulkhead",
    "metrics",
    "health",
    "webhooks",
    "localhost",
    "dashboard",
    "console",
    "security",
    "test",
    "staging",
    "dev",
    "prod",
];

/// Longest slug accepted. A DNS label may have 63 octets; we keep room for prefixes such as
/// `t_<slug>` schema names in the schema-per-tenant tier (PostgreSQL identifiers stop at 63).
pub const MAX_SLUG_LEN: usize = 48;
/// Shortest slug accepted: very short names are easy to squat and to confuse.
pub const MIN_SLUG_LEN: usize = 3;

/// Why a slug was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlugError {
    /// Too short or too long.
    #[error("a tenant slug has {MIN_SLUG_LEN} to {MAX_SLUG_LEN} characters")]
    Length,
    /// A character outside `a-z`, `0-9` and `-`.
    #[error("a tenant slug uses only lowercase letters a-z, digits and hyphens")]
    Character,
    /// Starts or ends with a hyphen, or has two hyphens in a row (`xn--` punycode look-alikes).
    #[error(
        "a tenant slug starts and ends with a letter or digit and has no two hyphens in a row"
    )]
    Hyphen,
    /// Starts with a digit: keeps slugs distinct from IP-address-like labels.
    #[error("a tenant slug starts with a letter")]
    LeadingDigit,
    /// One of the reserved names.
    #[error("`{0}` is reserved for the platform and cannot be a tenant slug")]
    Reserved(String),
}

/// A validated tenant slug. Invariant: matches `[a-z][a-z0-9-]{1,46}[a-z0-9]`, has no `--`, and
/// is not in [`RESERVED_SLUGS`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantSlug(String);

impl TenantSlug {
    /// Validates a slug. No case folding or trimming: `Acme` is refused, not repaired.
    pub fn parse(text: &str) -> Result<Self, SlugError> {
        let bytes = text.as_bytes();
        if bytes.len() < MIN_SLUG_LEN || bytes.len() > MAX_SLUG_LEN {
            return Err(SlugError::Length);
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        {
            return Err(SlugError::Character);
        }
        if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' || text.contains("--") {
            return Err(SlugError::Hyphen);
        }
        if bytes[0].is_ascii_digit() {
            return Err(SlugError::LeadingDigit);
        }
        if RESERVED_SLUGS.contains(&text) {
            return Err(SlugError::Reserved(text.to_owned()));
        }
        Ok(Self(text.to_owned()))
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantSlug({})", self.0)
    }
}

impl std::str::FromStr for TenantSlug {
    type Err = SlugError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for TenantSlug {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantSlug {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "acme",
            "acme-corp",
            "a1b",
            "globex-2024",
            &"x".repeat(MAX_SLUG_LEN),
        ] {
            assert!(TenantSlug::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_dns_or_we_do_not_allow() {
        let cases: &[(&str, SlugError)] = &[
            ("ab", SlugError::Length),
            (&"x".repeat(MAX_SLUG_LEN + 1), SlugError::Length),
            ("Acme", SlugError::Character),
            ("acme.corp", SlugError::Character),
            ("acme_corp", SlugError::Character),
            ("acmé", SlugError::Character),
            (" acme", SlugError::Character),
            ("-acme", SlugError::Hyphen),
            ("acme-", SlugError::Hyphen),
            ("xn--acme", SlugError::Hyphen),
            ("1acme", SlugError::LeadingDigit),
            ("www", SlugError::Reserved("www".into())),
            ("api", SlugError::Reserved("api".into())),
            ("admin", SlugError::Reserved("admin".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &TenantSlug::parse(input).unwrap_err(),
                expected,
                "{input:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn accepted_slugs_satisfy_the_invariant(s in "\\PC{0,60}") {
            if let Ok(slug) = TenantSlug::parse(&s) {
                let t = slug.as_str();
                prop_assert!(t.len() >= MIN_SLUG_LEN && t.len() <= MAX_SLUG_LEN);
                prop_assert!(t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(t.as_bytes()[0].is_ascii_lowercase());
                prop_assert!(!t.ends_with('-') && !t.contains("--"));
                prop_assert!(!RESERVED_SLUGS.contains(&t));
            }
        }
    }
}
