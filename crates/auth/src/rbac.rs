//! Roles: named permission sets, and the rules that keep authority from growing.
//!
//! Invariants:
//! - a principal's authority is the union of its roles' permissions; a credential's *effective*
//!   permissions are that union ∩ the credential's own scopes (∩ every delegation hop's scopes);
//! - the built-in roles are defined here, by the binary, and are the same in every tenant;
//! - [`may_grant`] is the one escalation check: nobody creates a role, assigns a role or mints a
//!   credential holding a permission they do not hold themselves.

use bulkhead_core::{Scope, ScopeSet};

/// The roles every tenant has. Their permissions cannot be edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltInRole {
    /// Everything in the tenant.
    Admin,
    /// Read and write, but no billing and no role administration.
    Developer,
    /// Only agent sessions and tools; narrowed further by the scopes of the agent's credentials.
    Agent,
    /// Read-only.
    Viewer,
}

impl BuiltInRole {
    /// Every built-in role, in the order the documentation lists them.
    pub const ALL: [BuiltInRole; 4] = [
        BuiltInRole::Admin,
        BuiltInRole::Developer,
        BuiltInRole::Agent,
        BuiltInRole::Viewer,
    ];

    /// The role's name (reserved: no custom role may take it).
    pub const fn name(self) -> &'static str {
        match self {
            BuiltInRole::Admin => "admin",
            BuiltInRole::Developer => "developer",
            BuiltInRole::Agent => "agent",
            BuiltInRole::Viewer => "viewer",
        }
    }

    /// What the role is for, as shown to administrators.
    pub const fn description(self) -> &'static str {
        match self {
            BuiltInRole::Admin => "everything in the tenant",
            BuiltInRole::Developer => "read and write, no billing, no role administration",
            BuiltInRole::Agent => "only the session and tool permissions granted to it",
            BuiltInRole::Viewer => "read-only",
        }
    }

    /// The built-in role of this name, if any.
    pub fn by_name(name: &str) -> Option<BuiltInRole> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// What the role allows.
    pub fn permissions(self) -> ScopeSet {
        match self {
            BuiltInRole::Admin => ScopeSet::all(),
            BuiltInRole::Developer => ScopeSet::all()
                .iter()
                .filter(|s| {
                    !matches!(
                        s,
                        Scope::RolesManage | Scope::BillingRead | Scope::BillingManage
                    )
                })
                .collect::<ScopeSet>()
                .with_all_tools(),
            BuiltInRole::Agent => [Scope::SessionsRead, Scope::SessionsWrite, Scope::ToolsList]
                .into_iter()
                .collect::<ScopeSet>()
                .with_all_tools(),
            BuiltInRole::Viewer => ScopeSet::all()
                .iter()
                .filter(|s| is_read_only(*s))
                .collect(),
        }
    }
}

/// Whether a permission only reads. Keys and webhook endpoints have no read-only permission
/// (their listings show credentials' metadata and delivery targets), so viewers do not see them.
fn is_read_only(scope: Scope) -> bool {
    matches!(
        scope,
        Scope::SessionsRead
            | Scope::AuditRead
            | Scope::ToolsList
            | Scope::UsersRead
            | Scope::AgentsRead
            | Scope::RolesRead
            | Scope::BillingRead
    )
}

/// The escalation check: a caller whose effective permissions are `held` may grant `granted`
/// (in a new role, a role assignment or a new credential) only if it holds all of it.
pub fn may_grant(held: &ScopeSet, granted: &ScopeSet) -> bool {
    held.is_superset(granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_roles_are_ordered_by_strength() {
        let admin = BuiltInRole::Admin.permissions();
        let developer = BuiltInRole::Developer.permissions();
        let viewer = BuiltInRole::Viewer.permissions();
        let agent = BuiltInRole::Agent.permissions();
        assert!(may_grant(&admin, &developer));
        assert!(!may_grant(&developer, &admin));
        assert!(!developer.contains(Scope::RolesManage));
        assert!(!developer.contains(Scope::BillingManage));
        assert!(!developer.contains(Scope::BillingRead));
        assert!(developer.contains(Scope::KeysManage));
        assert!(viewer
            .iter()
            .all(|s| s.as_str().ends_with(":read") || s == Scope::ToolsList));
        assert!(!agent.contains(Scope::KeysManage));
        assert!(may_grant(&developer, &agent));
        assert!(agent.calls_all_tools() && developer.calls_all_tools() && admin.calls_all_tools());
        assert!(!viewer.calls_all_tools());
        for role in BuiltInRole::ALL {
            assert_eq!(BuiltInRole::by_name(role.name()), Some(role));
        }
        assert_eq!(BuiltInRole::by_name("Admin"), None);
    }
}
