//! The operator's vocabulary: the permissions of the control plane's keys (`bk_op_…`).
//!
//! Operator scopes are a closed set of their own, disjoint from the tenant [`crate::Scope`]s: an
//! operator key names no tenant and holds no tenant permission, and a tenant credential holds no
//! operator scope, so neither can be mistaken for the other by a scope check.

use std::collections::BTreeSet;
use std::fmt;

use crate::scope::UnknownScope;

/// One permission of the operator API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OperatorScope {
    /// List and read tenants.
    TenantsRead,
    /// Create tenants, change their plan, suspend and activate them.
    TenantsWrite,
    /// Delete tenants (reserved for the deletion routes).
    TenantsDelete,
    /// Create, list and revoke operator keys.
    OperatorsManage,
}

impl OperatorScope {
    /// Every operator scope, in a stable order.
    pub const ALL: &'static [OperatorScope] = &[
        OperatorScope::TenantsRead,
        OperatorScope::TenantsWrite,
        OperatorScope::TenantsDelete,
        OperatorScope::OperatorsManage,
    ];

    /// The text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            OperatorScope::TenantsRead => "tenants:read",
            OperatorScope::TenantsWrite => "tenants:write",
            OperatorScope::TenantsDelete => "tenants:delete",
            OperatorScope::OperatorsManage => "operators:manage",
        }
    }

    /// Strict parse of the text form.
    pub fn parse(text: &str) -> Result<OperatorScope, UnknownScope> {
        OperatorScope::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == text)
            .ok_or(UnknownScope)
    }
}

impl fmt::Display for OperatorScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes an operator key holds. Never empty when made by [`OperatorScopes::parse_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorScopes(BTreeSet<OperatorScope>);

impl OperatorScopes {
    /// Parses every name; one unknown name refuses the whole set (an unknown scope is never
    /// ignored), and so does an empty list (a key that may do nothing is a mistake).
    pub fn parse_all<S: AsRef<str>>(names: &[S]) -> Result<OperatorScopes, UnknownScope> {
        let set = names
            .iter()
            .map(|n| OperatorScope::parse(n.as_ref()))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if set.is_empty() {
            return Err(UnknownScope);
        }
        Ok(OperatorScopes(set))
    }

    /// Whether `scope` is held.
    pub fn contains(&self, scope: OperatorScope) -> bool {
        self.0.contains(&scope)
    }

    /// The text forms, in the stable order.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|s| s.as_str().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_strict_and_round_trips() {
        for scope in OperatorScope::ALL {
            assert_eq!(OperatorScope::parse(scope.as_str()), Ok(*scope));
        }
        for bad in [
            "Tenants:read",
            "tenants:read ",
            "sessions:read",
            "tenants:*",
            "",
        ] {
            assert!(OperatorScope::parse(bad).is_err(), "{bad:?}");
        }
        assert!(OperatorScopes::parse_all::<&str>(&[]).is_err());
        assert!(OperatorScopes::parse_all(&["tenants:read", "keys:manage"]).is_err());
        let set = OperatorScopes::parse_all(&["tenants:write", "tenants:read", "tenants:read"])
            .expect("valid");
        assert_eq!(set.to_strings(), ["tenants:read", "tenants:write"]);
        assert!(set.contains(OperatorScope::TenantsRead));
        assert!(!set.contains(OperatorScope::OperatorsManage));
    }
}
