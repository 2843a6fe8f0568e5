//! The tenant context every tenant-data operation carries.

use crate::id::{AccessTokenId, ApiKeyId, AuthSessionId, RequestId, TenantId};
use crate::prefix::Namespace;
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
    /// A caller authenticated by an access token (a JWT) issued for the tenant.
    Token {
        /// The token's subject: a `user_…` id or an agent's principal.
        subject: String,
        /// Whether the subject is a human user (else an agent).
        human: bool,
        /// The client the token was issued to.
        client_id: String,
        /// The token's `jti`.
        token_id: AccessTokenId,
        /// The auth session the token was minted from, if any.
        session_id: Option<AuthSessionId>,
        /// What the token may do.
        scopes: ScopeSet,
        /// The namespace the token is confined to, if any.
        resource_prefix: Option<Namespace>,
        /// The delegation chain, outermost actor first (empty when not delegated).
        delegation: Vec<String>,
        /// The other API keys the token derives from by delegation (its `derived_keys`
        /// claim): standing grants made with the token (an audit subscription) must name them
        /// too, so that revoking any of them ends the grant.
        derived_keys: Vec<ApiKeyId>,
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
            Actor::Token { subject, .. } => subject.clone(),
            Actor::System { component } => format!("system:{component}"),
        }
    }

    /// The scopes a credential holds; `None` for the system actor, which holds every scope.
    pub fn scopes(&self) -> Option<&ScopeSet> {
        match self {
            Actor::ApiKey { scopes, .. } | Actor::Token { scopes, .. } => Some(scopes),
            Actor::System { .. } => None,
        }
    }

    /// The same actor holding only the scopes also in `bound` (a role ceiling). The system actor
    /// is not narrowed.
    pub fn narrowed(mut self, bound: &ScopeSet) -> Actor {
        if let Actor::ApiKey { scopes, .. } | Actor::Token { scopes, .. } = &mut self {
            *scopes = scopes.intersection(bound);
        }
        self
    }

    /// The namespace the credential is confined to; `None` reaches the whole tenant.
    pub fn resource_prefix(&self) -> Option<&Namespace> {
        match self {
            Actor::Token {
                resource_prefix, ..
            } => resource_prefix.as_ref(),
            _ => None,
        }
    }

    /// The delegation chain of a delegated credential (outermost actor first); `None` when the
    /// credential is not delegated.
    pub fn delegation(&self) -> Option<&[String]> {
        match self {
            Actor::Token { delegation, .. } if !delegation.is_empty() => Some(delegation),
            _ => None,
        }
    }

    /// The actor type recorded in audit events.
    pub fn audit_type(&self) -> &'static str {
        match self {
            Actor::ApiKey { .. } => "api_key",
            Actor::Token { human: true, .. } => "human",
            Actor::Token { human: false, .. } => "agent",
            Actor::System { .. } => "system",
        }
    }
}

/// A credential the tenant issued, verified by resolution: the actors a context may be made for
/// on a caller's behalf. Bulkhead itself (the system actor) is not a credential, so a context
/// made from one never holds every scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key of the tenant (fields as in [`Actor::ApiKey`]).
    ApiKey {
        /// The key record (never the key).
        key_id: ApiKeyId,
        /// What the key may do.
        scopes: ScopeSet,
    },
    /// An access token issued for the tenant (fields as in [`Actor::Token`]).
    Token {
        /// The token's subject: a `user_…` id or an agent's principal.
        subject: String,
        /// Whether the subject is a human user (else an agent).
        human: bool,
        /// The client the token was issued to.
        client_id: String,
        /// The token's `jti`.
        token_id: AccessTokenId,
        /// The auth session the token was minted from, if any.
        session_id: Option<AuthSessionId>,
        /// What the token may do.
        scopes: ScopeSet,
        /// The namespace the token is confined to, if any.
        resource_prefix: Option<Namespace>,
        /// The delegation chain, outermost actor first (empty when not delegated).
        delegation: Vec<String>,
        /// The other API keys the token derives from by delegation.
        derived_keys: Vec<ApiKeyId>,
    },
}

impl From<Credential> for Actor {
    fn from(credential: Credential) -> Self {
        match credential {
            Credential::ApiKey { key_id, scopes } => Actor::ApiKey { key_id, scopes },
            Credential::Token {
                subject,
                human,
                client_id,
                token_id,
                session_id,
                scopes,
                resource_prefix,
                delegation,
                derived_keys,
            } => Actor::Token {
                subject,
                human,
                client_id,
                token_id,
                session_id,
                scopes,
                resource_prefix,
                delegation,
                derived_keys,
            },
        }
    }
}

/// Proof-carrying handle: "this work is done for this one tenant, by this actor, in this request".
///
/// Invariant: `tenant` was active in the registry when the context was made, and, for an API-key
/// actor, the key belongs to `tenant`. The fields are private and there is no general
/// constructor: each named constructor below is one kind of decision, and the crate doc lists
/// who makes each.
#[derive(Debug, Clone)]
pub struct TenantContext {
    tenant: TenantId,
    actor: Actor,
    request_id: RequestId,
}

impl TenantContext {
    /// A context for a caller whose `credential` resolution verified for `tenant` (the tenant
    /// and the credential agree, the tenant is active).
    pub fn for_credential(tenant: TenantId, credential: Credential, request_id: RequestId) -> Self {
        Self {
            tenant,
            actor: credential.into(),
            request_id,
        }
    }

    /// A context for Bulkhead itself acting in `tenant` as `component` (a job, an operator
    /// command, a lifecycle step, an authentication endpoint before any credential exists), under
    /// a fresh request id. Call only once the tenant is known to be active (or, for the operator
    /// paths, named by the operator). The system actor holds every scope.
    pub fn for_system(tenant: TenantId, component: &'static str) -> Self {
        Self {
            tenant,
            actor: Actor::System { component },
            request_id: RequestId::new(),
        }
    }

    /// The same tenant and request with the actor's scopes cut to `bound` (a role ceiling). The
    /// actor stays who it is; the system actor is not narrowed.
    pub fn narrowed(self, bound: &ScopeSet) -> Self {
        Self {
            actor: self.actor.narrowed(bound),
            ..self
        }
    }

    /// Any context, for tests and benchmarks only: behind the `testing` feature, which only
    /// dev-dependencies (through `bulkhead-test-support`) enable.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_test(tenant: TenantId, actor: Actor, request_id: RequestId) -> Self {
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
            Actor::ApiKey { scopes, .. } | Actor::Token { scopes, .. } => scopes.contains(scope),
            Actor::System { .. } => true,
        }
    }

    /// Whether the actor may call the tool `name` (`tools:call:<name>` or `tools:call:*`). The
    /// system actor may call every tool.
    pub fn may_call_tool(&self, name: &crate::tool::ToolName) -> bool {
        match &self.actor {
            Actor::ApiKey { scopes, .. } | Actor::Token { scopes, .. } => {
                scopes.may_call_tool(name)
            }
            Actor::System { .. } => true,
        }
    }
}
