//! The tenant context every tenant-data operation carries.

use crate::id::{ApiKeyId, RequestId, TenantId};
use crate::scope::{Scope, ScopeSet};

/// Who is acting. Audit events and logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Actor {
    /// A caller authenticated by an API key of the tenant.
    ApiKey {
        /// The key record (never the key).
        key_id: ApiKeyId,
        /// What the key may do.
        scopes: ScopeSet,
    },
    /// Bulkhead itself: the job worker or an operator command.
    System {
        /// What is acting, e.g. `worker` or `cli`.
        component: &'static str,
    },
}

impl Actor {
    /// The actor's id as written to audit events and logs.
    pub fn audit_id(&self) -> String {
        match self {
            Actor::ApiKey { key_id, .. } => key_id.to_string(),
            Actor::System { component } => format!("system:{component}"),
        }
    }

    /// The actor type recorded in audit events.
    pub fn audit_type(&self) -> &'static str {
        match self {
            Actor::ApiKey { .. } => "api_key",
            Actor::System { .. } => "system",
        }
    }
}

/// Proof-carrying handle: "this work is done for this one tenant, by this actor, in this request".
///
/// Invariant: `tenant` was active in the registry when the context was made, and, for an API-key
/// actor, the key belongs to `tenant`. See the crate doc for who may construct one.
#[derive(Debug, Clone)]
pub struct TenantContext {
    tenant: TenantId,
    actor: Actor,
    request_id: RequestId,
}

impl TenantContext {
    /// Makes a context. Call only after the checks named in the type's invariant.
    pub fn new(tenant: TenantId, actor: Actor, request_id: RequestId) -> Self {
        Self {
            tenant,
            actor,
            request_id,
        }
    }

    /// The one tenant this work is for.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// Who acts.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Correlates logs and audit events of one request or job run.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// Whether the actor holds `scope`. The system actor holds every scope.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.actor {
            Actor::ApiKey { scopes, .. } => scopes.contains(scope),
            Actor::System { .. } => true,
        }
    }
}
