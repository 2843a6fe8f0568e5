//! Permission scopes carried by credentials.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::tool::ToolName;

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

/// In the OpenAPI document a scope is its text form: one of [`Scope::ALL`] or a tool-call grant.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        // The fixed permissions, or a tool-call grant (`tools:call:<tool>`, `tools:call:*`).
        let fixed: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        let pattern = format!(
            "^({}|tools:call:(\\*|[a-z][a-z0-9_-]{{0,63}}))$",
            fixed.join("|")
        );
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .description(Some(
                "A permission in its text form: a fixed permission, or `tools:call:<tool>` / `tools:call:*`",
            ))
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

/// Text prefix of tool-call scopes: `tools:call:<name>` for one tool, `tools:call:*` for all.
pub const TOOL_CALL_PREFIX: &str = "tools:call:";
/// The text form of the scope to call every tool of the tenant.
pub const TOOL_CALL_ALL: &str = "tools:call:*";

/// The scopes a credential holds: the fixed [`Scope`]s plus the tools it may call.
///
/// Invariant: when `all_tools` is set, `tools` is empty (the wildcard already holds every name),
/// so equal authority has one representation and `==` means "the same grants".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    scopes: BTreeSet<Scope>,
    /// `tools:call:<name>` grants.
    tools: BTreeSet<ToolName>,
    /// `tools:call:*`.
    all_tools: bool,
}

impl ScopeSet {
    /// Every scope, `tools:call:*` included.
    pub fn all() -> Self {
        Self {
            scopes: Scope::ALL.iter().copied().collect(),
            tools: BTreeSet::new(),
            all_tools: true,
        }
    }

    /// Whether `scope` is held.
    pub fn contains(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the tool `name` may be called (`tools:call:<name>` or `tools:call:*`).
    pub fn may_call_tool(&self, name: &ToolName) -> bool {
        self.all_tools || self.tools.contains(name)
    }

    /// Whether `tools:call:*` is held.
    pub fn calls_all_tools(&self) -> bool {
        self.all_tools
    }

    /// The tools named one by one (empty when [`ScopeSet::calls_all_tools`]).
    pub fn callable_tools(&self) -> impl Iterator<Item = &ToolName> + '_ {
        self.tools.iter()
    }

    /// Whether every grant of `other` is held here: the test for "may not mint anything
    /// stronger". The wildcard holds every named tool; named tools never hold the wildcard.
    pub fn is_superset(&self, other: &ScopeSet) -> bool {
        self.scopes.is_superset(&other.scopes)
            && (self.all_tools || (!other.all_tools && self.tools.is_superset(&other.tools)))
    }

    /// What both hold (delegation: the subject's grants as far as the actor holds them too).
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        let scopes = self.scopes.intersection(&other.scopes).copied().collect();
        let (tools, all_tools) = match (self.all_tools, other.all_tools) {
            (true, true) => (BTreeSet::new(), true),
            (true, false) => (other.tools.clone(), false),
            (false, true) => (self.tools.clone(), false),
            (false, false) => (
                self.tools.intersection(&other.tools).cloned().collect(),
                false,
            ),
        };
        ScopeSet {
            scopes,
            tools,
            all_tools,
        }
    }

    /// Whether nothing at all is held.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty() && self.tools.is_empty() && !self.all_tools
    }

    /// The text forms, for storage: fixed scopes first (stable order), then `tools:call:*` or
    /// the named tool scopes in name order.
    pub fn to_strings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.scopes.iter().map(|s| s.as_str().to_owned()).collect();
        if self.all_tools {
            out.push(TOOL_CALL_ALL.to_owned());
        }
        out.extend(
            self.tools
                .iter()
                .map(|t| format!("{TOOL_CALL_PREFIX}{}", t.as_str())),
        );
        out
    }

    /// Parses stored or presented text forms; any unknown name (or a malformed tool name) fails
    /// the whole set.
    pub fn parse_all<I, S>(names: I) -> Result<Self, UnknownScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = ScopeSet::default();
        for name in names {
            let name = name.as_ref();
            if let Some(tool) = name.strip_prefix(TOOL_CALL_PREFIX) {
                if tool == "*" {
                    set.all_tools = true;
                } else {
                    set.tools
                        .insert(ToolName::parse(tool).map_err(|_| UnknownScope)?);
                }
            } else {
                set.scopes.insert(Scope::parse(name)?);
            }
        }
        if set.all_tools {
            set.tools.clear();
        }
        Ok(set)
    }

    /// Everything either holds (the permissions of several roles together).
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        let all_tools = self.all_tools || other.all_tools;
        ScopeSet {
            scopes: self.scopes.union(&other.scopes).copied().collect(),
            tools: if all_tools {
                BTreeSet::new()
            } else {
                self.tools.union(&other.tools).cloned().collect()
            },
            all_tools,
        }
    }

    /// Adds `tools:call:*` (for role definitions: a role that may call tools holds the
    /// wildcard, and the credential's own grants narrow it).
    pub fn with_all_tools(mut self) -> Self {
        self.all_tools = true;
        self.tools.clear();
        self
    }

    /// Adds a grant to call one tool.
    pub fn with_tool(mut self, name: ToolName) -> Self {
        if !self.all_tools {
            self.tools.insert(name);
        }
        self
    }

    /// Iterates the fixed scopes in a stable order (tool-call grants are not [`Scope`]s: see
    /// [`ScopeSet::may_call_tool`]).
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.scopes.iter().copied()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        Self {
            scopes: iter.into_iter().collect(),
            ..Self::default()
        }
    }
}

// The serde form is the list of text forms, as it was when a set held only fixed scopes.
impl Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_strings().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        ScopeSet::parse_all(names).map_err(serde::de::Error::custom)
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

    fn set(names: &[&str]) -> ScopeSet {
        ScopeSet::parse_all(names).unwrap()
    }

    #[test]
    fn tool_call_scopes_parse_round_trip_and_refuse_bad_names() {
        let s = set(&["tools:list", "tools:call:search", "tools:call:get-weather"]);
        assert_eq!(
            s.to_strings(),
            ["tools:list", "tools:call:get-weather", "tools:call:search"]
        );
        assert_eq!(ScopeSet::parse_all(s.to_strings()).unwrap(), s);
        assert!(s.may_call_tool(&ToolName::parse("search").unwrap()));
        assert!(!s.may_call_tool(&ToolName::parse("other").unwrap()));
        for bad in [
            "tools:call:",
            "tools:call:Search",
            "tools:call:a:b",
            "tools:call:**",
            "tools:call:a*",
        ] {
            assert!(ScopeSet::parse_all([bad]).is_err(), "{bad}");
        }
        // The wildcard absorbs named grants: one representation of one authority.
        assert_eq!(
            set(&["tools:call:*", "tools:call:x"]),
            set(&["tools:call:*"])
        );
        assert_eq!(set(&["tools:call:*"]).to_strings(), ["tools:call:*"]);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ScopeSet>(&json).unwrap(), s);
    }

    #[test]
    fn the_wildcard_holds_every_name_but_no_name_holds_the_wildcard() {
        let all = set(&["tools:call:*"]);
        let one = set(&["tools:call:search"]);
        assert!(all.is_superset(&one));
        assert!(!one.is_superset(&all));
        assert!(ScopeSet::all().is_superset(&one));
        assert!(ScopeSet::all().is_superset(&all));
        assert!(ScopeSet::all().may_call_tool(&ToolName::parse("anything").unwrap()));
        assert_eq!(all.intersection(&one), one);
        assert_eq!(one.intersection(&all), one);
        assert!(set(&["tools:call:a"])
            .intersection(&set(&["tools:call:b"]))
            .is_empty());
        assert!(!one.is_empty());
        let fixed: ScopeSet = [Scope::ToolsList].into_iter().collect();
        assert!(!fixed.calls_all_tools(), "fixed scopes alone call no tool");
        let role = fixed.with_all_tools();
        assert_eq!(role.to_strings(), ["tools:list", "tools:call:*"]);
        assert_eq!(one.intersection(&role), one);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn grant() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(Scope::ALL.to_vec()).prop_map(|s| s.as_str().to_owned()),
                Just(TOOL_CALL_ALL.to_owned()),
                "[a-c]{1,2}".prop_map(|n| format!("{TOOL_CALL_PREFIX}{n}")),
            ]
        }

        fn scope_set() -> impl Strategy<Value = ScopeSet> {
            proptest::collection::vec(grant(), 0..8).prop_map(|v| ScopeSet::parse_all(v).unwrap())
        }

        proptest! {
            /// Adding grants never makes a set hold less; removing never more.
            #[test]
            fn superset_is_monotone(a in scope_set(), extra in proptest::collection::vec(grant(), 0..4)) {
                let mut names = a.to_strings();
                names.extend(extra);
                let bigger = ScopeSet::parse_all(names).unwrap();
                prop_assert!(bigger.is_superset(&a));
                prop_assert!(bigger.is_superset(&bigger));
                if !a.is_superset(&bigger) {
                    prop_assert_ne!(&a, &bigger);
                }
            }

            /// The intersection is held by both, and is the largest such set on the tool part.
            #[test]
            fn intersection_is_held_by_both(a in scope_set(), b in scope_set()) {
                let i = a.intersection(&b);
                prop_assert!(a.is_superset(&i));
                prop_assert!(b.is_superset(&i));
                prop_assert_eq!(&i, &b.intersection(&a));
                // Superset is transitive through the intersection.
                if a.is_superset(&b) {
                    prop_assert_eq!(&i, &b);
                }
            }

            /// Text forms round-trip.
            #[test]
            fn text_round_trips(a in scope_set()) {
                prop_assert_eq!(ScopeSet::parse_all(a.to_strings()).unwrap(), a);
            }
        }
    }
}
