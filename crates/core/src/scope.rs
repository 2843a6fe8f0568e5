//! Permission scopes carried by credentials.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One permission. The text form (`sessions:read`) is what credentials and the API carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Scope {
    /// Read agent sessions.
    #[serde(rename = "sessions:read")]
    SessionsRead,
    /// Create, update and delete agent sessions.
    #[serde(rename = "sessions:write")]
    SessionsWrite,
    /// Create, rotate and revoke API keys.
    #[serde(rename = "keys:manage")]
    KeysManage,
    /// Manage webhook endpoints.
    #[serde(rename = "webhooks:manage")]
    WebhooksManage,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// List the tenant's tools.
    #[serde(rename = "tools:list")]
    ToolsList,
    /// Create, update and disable the tenant's tools.
    #[serde(rename = "tools:manage")]
    ToolsManage,
    /// Read the tenant's users.
    #[serde(rename = "users:read")]
    UsersRead,
    /// Create, update and disable users.
    #[serde(rename = "users:write")]
    UsersWrite,
    /// Read the tenant's agents.
    #[serde(rename = "agents:read")]
    AgentsRead,
    /// Create, update and disable agents.
    #[serde(rename = "agents:write")]
    AgentsWrite,
    /// Read roles and role assignments.
    #[serde(rename = "roles:read")]
    RolesRead,
    /// Create custom roles and assign roles (role administration).
    #[serde(rename = "roles:manage")]
    RolesManage,
    /// Read billing data (reserved for the embedding platform's billing routes).
    #[serde(rename = "billing:read")]
    BillingRead,
    /// Change billing (reserved for the embedding platform's billing routes).
    #[serde(rename = "billing:manage")]
    BillingManage,
}

impl Scope {
    /// Every scope, in a stable order. A tenant's bootstrap admin key holds all of them.
    pub const ALL: &'static [Scope] = &[
        Scope::SessionsRead,
        Scope::SessionsWrite,
        Scope::KeysManage,
        Scope::WebhooksManage,
        Scope::AuditRead,
        Scope::ToolsList,
        Scope::ToolsManage,
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::AgentsRead,
        Scope::AgentsWrite,
        Scope::RolesRead,
        Scope::RolesManage,
        Scope::BillingRead,
        Scope::BillingManage,
    ];

    /// The text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::SessionsRead => "sessions:read",
            Scope::SessionsWrite => "sessions:write",
            Scope::KeysManage => "keys:manage",
            Scope::WebhooksManage => "webhooks:manage",
            Scope::AuditRead => "audit:read",
            Scope::ToolsList => "tools:list",
            Scope::ToolsManage => "tools:manage",
            Scope::UsersRead => "users:read",
            Scope::UsersWrite => "users:write",
            Scope::AgentsRead => "agents:read",
            Scope::AgentsWrite => "agents:write",
            Scope::RolesRead => "roles:read",
            Scope::RolesManage => "roles:manage",
            Scope::BillingRead => "billing:read",
            Scope::BillingManage => "billing:manage",
        }
    }

    /// Strict parse of the text form.
    pub fn parse(text: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == text)
            .ok_or(UnknownScope)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// In the OpenAPI document a scope is its text form, one of [`Scope::ALL`].
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Scope::ALL.iter().map(|s| s.as_str())))
            .description(Some("A permission, in its text form"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Scope {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Scope")
    }
}

/// A scope name that Bulkhead does not know. Unknown scopes are refused, never ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope")]
pub struct UnknownScope;

/// The scopes a credential holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Every scope.
    pub fn all() -> Self {
        Self(Scope::ALL.iter().copied().collect())
    }

    /// Whether `scope` is held.
    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    /// Whether every scope of `other` is held here: the test for "may not mint anything stronger".
    pub fn is_superset(&self, other: &ScopeSet) -> bool {
        self.0.is_superset(&other.0)
    }

    /// The text forms, for storage.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|s| s.as_str().to_owned()).collect()
    }

    /// Parses stored or presented text forms; any unknown name fails the whole set.
    pub fn parse_all<I, S>(names: I) -> Result<Self, UnknownScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        names
            .into_iter()
            .map(|n| Scope::parse(n.as_ref()))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }

    /// Iterates the scopes in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_unknown_names_fail_the_set() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Ok(*s));
        }
        assert!(ScopeSet::parse_all(["sessions:read", "sessions:*"]).is_err());
        assert!(ScopeSet::parse_all(["SESSIONS:READ"]).is_err());
        let read = ScopeSet::parse_all(["sessions:read"]).unwrap();
        assert!(ScopeSet::all().is_superset(&read));
        assert!(!read.is_superset(&ScopeSet::all()));
    }
}
