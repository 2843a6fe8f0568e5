//! Role ceilings: what a credential's principal is allowed by its roles, applied to every
//! request so that a credential's effective permissions are its scopes ∩ its principal's roles.
//!
//! - An API key that belongs to an agent is bounded by the agent's roles; a key without an agent
//!   is a tenant service key, bounded by its scopes alone (whoever minted it held them).
//! - A human's access token is bounded by the user's roles; an agent's token by the agent's roles
//!   (its subject is the agent's id) and by those of the agent owning the key it was issued to; a
//!   delegated token by its subject's roles and its actor's.
//! - A disabled or missing principal refuses the credential outright (401), never "no scopes".
//!
//! Ceilings are cached per (tenant, principal) for [`CEILING_TTL`]. A role, assignment or
//! principal-status change clears its tenant's entries in this process at once, and announces
//! itself with `NOTIFY bulkhead_ceilings` at commit ([`announce_change`]); every process listens
//! ([`listen_for_changes`]) and drops that tenant's entries, like key revocations. The TTL only
//! bounds a change missed while a listener reconnects (which clears everything anyway).

use std::time::Duration;

use bulkhead_core::{
    Actor, AgentId, ApiKeyId, ScopeSet, TenantCache, TenantContext, TenantId, UserId,
};
use bulkhead_store::rbac::{self, Principal};
use bulkhead_store::{Access, Store, StoreError};

/// How long a ceiling is trusted without reading the roles again.
pub const CEILING_TTL: Duration = Duration::from_secs(5);

/// Whose roles bound a credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Bearer {
    /// The agent owning this key, if any.
    Key(ApiKeyId),
    User(UserId),
    Agent(AgentId),
}

/// What a principal's roles allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ceiling {
    /// Nothing beyond the credential's own scopes (a tenant service key).
    Unbounded,
    /// At most these permissions.
    Bounded(ScopeSet),
    /// The principal is disabled or gone: refuse the credential.
    Refused,
}

/// The cache of ceilings. Cheap to share.
pub struct RoleCeilings {
    cache: TenantCache<Bearer, Ceiling>,
}

impl std::fmt::Debug for RoleCeilings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCeilings").finish_non_exhaustive()
    }
}

impl Default for RoleCeilings {
    fn default() -> Self {
        Self {
            cache: TenantCache::new(100_000, CEILING_TTL),
        }
    }
}

impl RoleCeilings {
    /// The ceiling of the context's credential: every principal it acts for bounds it (a
    /// delegated token: its subject and its actor).
    pub async fn of(&self, store: &Store, ctx: &TenantContext) -> Result<Ceiling, StoreError> {
        let mut combined = Ceiling::Unbounded;
        for bearer in bearers(ctx.actor()) {
            combined = match (combined, self.one(store, ctx, bearer).await?) {
                (Ceiling::Refused, _) | (_, Ceiling::Refused) => return Ok(Ceiling::Refused),
                (Ceiling::Unbounded, other) | (other, Ceiling::Unbounded) => other,
                (Ceiling::Bounded(a), Ceiling::Bounded(b)) => Ceiling::Bounded(a.intersection(&b)),
            };
        }
        Ok(combined)
    }

    async fn one(
        &self,
        store: &Store,
        ctx: &TenantContext,
        bearer: Bearer,
    ) -> Result<Ceiling, StoreError> {
        if let Some(ceiling) = self.cache.get(ctx, &bearer).await {
            return Ok(ceiling);
        }
        let mut tx = store.begin(ctx, Access::ReadOnly).await?;
        let principal = match &bearer {
            Bearer::User(user) => Some(Principal::User(*user)),
            Bearer::Agent(agent) => Some(Principal::Agent(*agent)),
            Bearer::Key(key) => match rbac::key_agent(&mut tx, *key).await {
                Ok(agent) => agent.map(Principal::Agent),
                // The key record is gone: nothing may act for it.
                Err(StoreError::NotFound) => {
                    tx.commit().await?;
                    self.cache.insert(ctx, bearer, Ceiling::Refused).await;
                    return Ok(Ceiling::Refused);
                }
                Err(err) => return Err(err),
            },
        };
        let ceiling = match principal {
            None => Ceiling::Unbounded,
            Some(principal) => match rbac::permissions_of(&mut tx, principal).await? {
                Some(held) => Ceiling::Bounded(held),
                None => Ceiling::Refused,
            },
        };
        tx.commit().await?;
        self.cache.insert(ctx, bearer, ceiling.clone()).await;
        Ok(ceiling)
    }

    /// Forgets every ceiling of `tenant` (after a role, assignment or principal change).
    pub fn invalidate_tenant(&self, tenant: TenantId) {
        self.cache.invalidate_tenant(tenant);
    }

    /// Forgets every ceiling (a listener that may have missed changes).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}

/// Announces a change of the transaction's tenant's roles, assignments or principals to every
/// process, at commit. Call it in the transaction of the change.
pub async fn announce_change(tx: &mut bulkhead_store::TenantTx) -> Result<(), StoreError> {
    rbac::notify_ceiling_change(tx).await
}

/// Drops a tenant's cached ceilings whenever any process announces a change of its roles,
/// assignments or principals. Runs for the life of the server; reconnects on failure, clearing
/// everything whenever it may have missed a notification.
pub async fn listen_for_changes(store: Store, ceilings: std::sync::Arc<RoleCeilings>) {
    loop {
        let mut listener = match store.listen_ceiling_changes().await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "ceiling change listener cannot connect; retrying");
                ceilings.invalidate_all();
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Anything cached before we were listening may be stale.
        ceilings.invalidate_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match uuid::Uuid::parse_str(notification.payload()) {
                    Ok(id) => ceilings.invalidate_tenant(TenantId::from_uuid(id)),
                    Err(_) => ceilings.invalidate_all(),
                },
                // The connection was lost and re-established: changes may have been missed.
                Ok(None) => ceilings.invalidate_all(),
                Err(err) => {
                    tracing::warn!(error = %err, "ceiling change listener failed; reconnecting");
                    ceilings.invalidate_all();
                    break;
                }
            }
        }
    }
}

fn bearers(actor: &Actor) -> Vec<Bearer> {
    match actor {
        Actor::ApiKey { key_id, .. } => vec![Bearer::Key(*key_id)],
        Actor::Token {
            human,
            subject,
            client_id,
            ..
        } => {
            let mut bearers = Vec::with_capacity(2);
            // The subject: a user, or an agent (tokens of an agent's key name the agent).
            if *human {
                bearers.extend(UserId::parse(subject).ok().map(Bearer::User));
            } else {
                bearers.extend(AgentId::parse(subject).ok().map(Bearer::Agent));
            }
            // The client the token was issued to: for a delegated token, the actor's key.
            bearers.extend(ApiKeyId::parse(client_id).ok().map(Bearer::Key));
            bearers
        }
        _ => Vec::new(),
    }
}

/// The actor with its scopes cut to the ceiling; `None` if the ceiling refuses it.
pub fn narrow(actor: Actor, ceiling: &Ceiling) -> Option<Actor> {
    match ceiling {
        Ceiling::Unbounded => Some(actor),
        Ceiling::Bounded(bound) => Some(actor.narrowed(bound)),
        Ceiling::Refused => None,
    }
}

/// The effective scopes of an API key outside the request pipeline (token issue and exchange);
/// `None` if its principal is inactive.
pub(crate) async fn key_scopes(
    state: &crate::state::AppState,
    key: &crate::credentials::VerifiedKey,
) -> Result<Option<ScopeSet>, StoreError> {
    let actor = Actor::ApiKey {
        key_id: key.key_id,
        scopes: key.scopes.clone(),
    };
    effective(state, key.tenant_id, actor).await
}

async fn effective(
    state: &crate::state::AppState,
    tenant: TenantId,
    actor: Actor,
) -> Result<Option<ScopeSet>, StoreError> {
    let ctx = TenantContext::new(tenant, actor, bulkhead_core::RequestId::new());
    let ceiling = state.ceilings().of(state.store(), &ctx).await?;
    Ok(narrow(ctx.actor().clone(), &ceiling).and_then(|a| a.scopes().cloned()))
}

/// The effective scopes of an auth session (what a refresh would grant now), read in `tx` (the
/// caller holds the session's row lock; a second connection could wait on it): its scopes cut
/// to the roles of its user, or of the agent owning the key it was issued to; `None` if that
/// principal is inactive, the key is gone, or the stored scopes are unreadable.
pub(crate) async fn session_scopes(
    tx: &mut bulkhead_store::TenantTx,
    session: &bulkhead_store::tokens::AuthSession,
) -> Result<Option<ScopeSet>, StoreError> {
    let Some(scopes) = session.scopes.clone() else {
        return Ok(None);
    };
    let mut principals = Vec::with_capacity(2);
    if session.principal_type == bulkhead_store::tokens::PrincipalType::User {
        match UserId::parse(&session.principal_id) {
            Ok(user) => principals.push(Principal::User(user)),
            Err(_) => return Ok(None),
        }
    }
    if let Ok(key) = ApiKeyId::parse(&session.client_id) {
        match rbac::key_agent(tx, key).await {
            Ok(agent) => principals.extend(agent.map(Principal::Agent)),
            Err(StoreError::NotFound) => return Ok(None),
            Err(err) => return Err(err),
        }
    }
    let mut effective = scopes;
    for principal in principals {
        match rbac::permissions_of(tx, principal).await? {
            Some(held) => effective = effective.intersection(&held),
            None => return Ok(None),
        }
    }
    Ok(Some(effective))
}
