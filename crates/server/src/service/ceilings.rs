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
//! Ceilings are cached per (tenant, principal) for the ceiling cache lifetime
//! (`--ceiling-cache-secs`, [`CEILING_TTL`] unless set). A role, assignment or
//! principal-status change clears its tenant's entries in this process at once, and announces
//! itself with `NOTIFY bulkhead_ceilings` at commit ([`announce_change`]); every process listens
//! ([`listen_for_changes`]) and drops that tenant's entries, like key revocations. The TTL only
//! bounds a change missed while a listener reconnects (which clears everything anyway).
//!
//! The key a token was issued to (its `client_id`) bounds the token for as long as it lives: a
//! revoked key, one past its expiry or rotation grace, refuses every token minted from it (and
//! every token exchanged with it as the client), and the key's *current* IP allowlist binds them
//! in addition to the one copied into their claims, so narrowing a key binds its tokens at once.
//! A delegated token is bound the same way by every other key it derives from (its
//! `derived_keys` claim: the subject token's client, the actor token's), and by their principals'
//! roles.
//! Every key change also announces a ceiling change (see `bulkhead_store::tenant::api_keys`), so these
//! cached facts drop with the key's verification on every process.

use std::time::Duration;

use bulkhead_core::{
    Actor, AgentId, ApiKeyId, ScopeSet, TenantCache, TenantContext, TenantId, UserId,
};
use bulkhead_store::tenant::api_keys::{self, KeyStatus};
use bulkhead_store::tenant::rbac::{self, Principal};
use bulkhead_store::{Access, Store, StoreError};
use chrono::{DateTime, Utc};
use ipnet::IpNet;

/// How long a ceiling is trusted without reading the roles again, unless the settings say
/// otherwise ([`crate::config::CacheSettings::ceiling_ttl`]).
pub const CEILING_TTL: Duration = crate::config::limits::DEFAULT_CEILING_TTL;

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

/// What is cached per bearer: its ceiling, and for a key, where and until when it may be used.
#[derive(Debug, Clone)]
struct Cached {
    ceiling: Ceiling,
    /// A key's allowlist as it is now (empty: anywhere; other bearers: empty).
    networks: Vec<IpNet>,
    /// A key stops working at this instant (its expiry, or the end of its rotation grace); the
    /// cache must not outlive it, even for the TTL.
    usable_until: Option<DateTime<Utc>>,
}

impl Cached {
    fn plain(ceiling: Ceiling) -> Self {
        Self {
            ceiling,
            networks: Vec::new(),
            usable_until: None,
        }
    }
}

/// A credential's ceiling and the network restrictions its keys impose now.
#[derive(Debug, Clone)]
pub struct Standing {
    /// What its principals' roles allow (or `Refused`).
    pub ceiling: Ceiling,
    /// The current allowlist of every key it comes from that has one: a caller's address must
    /// lie in a network of each.
    pub networks: Vec<Vec<IpNet>>,
}

/// The cache of ceilings. Cheap to share.
pub struct RoleCeilings {
    cache: TenantCache<Bearer, Cached>,
    /// Bumped by every invalidation. A lookup that raced one (read the database before it,
    /// would insert after it) does not cache what it read, so a revoked key or a removed role
    /// is never re-cached as it was for another TTL.
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RoleCeilings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCeilings").finish_non_exhaustive()
    }
}

impl RoleCeilings {
    /// An empty cache whose entries live at most `ttl` (the settings' ceiling lifetime).
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: TenantCache::new(100_000, ttl),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The ceiling of the context's credential: every principal it acts for bounds it (a
    /// delegated token: its subject and its actor).
    pub async fn of(
        &self,
        store: &Store,
        ctx: &TenantContext,
        now: DateTime<Utc>,
    ) -> Result<Ceiling, StoreError> {
        Ok(self.standing(store, ctx, &[], now).await?.ceiling)
    }

    /// The ceiling of the context's credential, and the current allowlists of the keys it
    /// comes from: its own (a key, or a token's `client_id`) and `derived_keys` (the other
    /// keys a delegated token derives from), each of which must still be usable.
    pub async fn standing(
        &self,
        store: &Store,
        ctx: &TenantContext,
        derived_keys: &[ApiKeyId],
        now: DateTime<Utc>,
    ) -> Result<Standing, StoreError> {
        let mut combined = Ceiling::Unbounded;
        let mut networks = Vec::new();
        let mut all = bearers(ctx.actor());
        for key in derived_keys {
            let bearer = Bearer::Key(*key);
            if !all.contains(&bearer) {
                all.push(bearer);
            }
        }
        for bearer in all {
            let cached = self.one(store, ctx, bearer, now).await?;
            if !cached.networks.is_empty() {
                networks.push(cached.networks);
            }
            combined = match (combined, cached.ceiling) {
                (Ceiling::Refused, _) | (_, Ceiling::Refused) => Ceiling::Refused,
                (Ceiling::Unbounded, other) | (other, Ceiling::Unbounded) => other,
                (Ceiling::Bounded(a), Ceiling::Bounded(b)) => Ceiling::Bounded(a.intersection(&b)),
            };
            if combined == Ceiling::Refused {
                break;
            }
        }
        Ok(Standing {
            ceiling: combined,
            networks,
        })
    }

    async fn one(
        &self,
        store: &Store,
        ctx: &TenantContext,
        bearer: Bearer,
        now: DateTime<Utc>,
    ) -> Result<Cached, StoreError> {
        if let Some(mut cached) = self.cache.get(ctx, &bearer).await {
            if cached.usable_until.is_some_and(|until| until <= now) {
                cached.ceiling = Ceiling::Refused;
            }
            return Ok(cached);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let mut tx = store.begin(ctx, Access::ReadOnly).await?;
        let mut key_facts = (Vec::new(), None);
        let principal = match &bearer {
            Bearer::User(user) => Some(Principal::User(*user)),
            Bearer::Agent(agent) => Some(Principal::Agent(*agent)),
            Bearer::Key(key) => match api_keys::get(&mut tx, *key, now).await {
                Ok(record) => {
                    // Revoked, expired or past its grace: nothing minted from it may act.
                    let networks: Option<Vec<IpNet>> =
                        record.allowed_ips.iter().map(|n| n.parse().ok()).collect();
                    let (true, Some(networks)) = (record.usable_at(now), networks) else {
                        tx.commit().await?;
                        let refused = Cached::plain(Ceiling::Refused);
                        self.remember(ctx, bearer, &refused, generation).await;
                        return Ok(refused);
                    };
                    let grace = (record.status_at(now) == KeyStatus::Rotating)
                        .then_some(record.grace_until)
                        .flatten();
                    let until = [record.expires_at, grace].into_iter().flatten().min();
                    key_facts = (networks, until);
                    record.agent_id.map(Principal::Agent)
                }
                // The key record is gone: nothing may act for it.
                Err(StoreError::NotFound) => {
                    tx.commit().await?;
                    let refused = Cached::plain(Ceiling::Refused);
                    self.remember(ctx, bearer, &refused, generation).await;
                    return Ok(refused);
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
        let cached = Cached {
            ceiling,
            networks: key_facts.0,
            usable_until: key_facts.1,
        };
        self.remember(ctx, bearer, &cached, generation).await;
        Ok(cached)
    }

    /// Caches what a lookup read, unless an invalidation happened since it began reading (the
    /// check follows the insert, so an invalidation between the two removes the entry too).
    async fn remember(
        &self,
        ctx: &TenantContext,
        bearer: Bearer,
        cached: &Cached,
        generation: u64,
    ) {
        use std::sync::atomic::Ordering;
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        self.cache.insert(ctx, bearer.clone(), cached.clone()).await;
        if self.generation.load(Ordering::SeqCst) != generation {
            self.cache.invalidate(ctx, &bearer).await;
        }
    }

    /// Forgets every ceiling of `tenant` (after a role, assignment or principal change).
    pub fn invalidate_tenant(&self, tenant: TenantId) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.invalidate_tenant(tenant);
    }

    /// Forgets every ceiling (a listener that may have missed changes).
    pub fn invalidate_all(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.invalidate_all();
    }
}

/// Announces a change of the transaction's tenant's roles, assignments or principals to every
/// process, at commit. Call it in the transaction of the change.
pub async fn announce_change(tx: &mut bulkhead_store::TenantTx) -> Result<(), StoreError> {
    rbac::notify_ceiling_change(tx).await
}

/// Drops a tenant's cached ceilings whenever any process announces a change of its roles,
/// assignments or principals, and its opened data key too (a purge announces on this channel:
/// a purged tenant's key leaves every serving process's memory at once). Runs for the life of
/// the server; reconnects on failure, clearing everything whenever it may have missed a
/// notification.
///
/// `ceilings` is `None` in a process that serves no requests (`bulkhead worker`) but opens
/// tenants' sealed secrets: it drops its opened data keys all the same, so a purged tenant's key
/// leaves its memory at once (crypto-shredding), not when the key cache's lifetime ends.
pub async fn listen_for_changes(store: Store, ceilings: Option<std::sync::Arc<RoleCeilings>>) {
    crate::service::invalidation::follow(
        "ceiling",
        || store.listen_ceiling_changes(),
        |id| {
            let tenant = TenantId::from_uuid(id);
            if let Some(ceilings) = &ceilings {
                ceilings.invalidate_tenant(tenant);
            }
            store.forget_data_key(tenant);
        },
        || {
            if let Some(ceilings) = &ceilings {
                ceilings.invalidate_all();
            }
            store.forget_all_data_keys();
        },
    )
    .await;
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

/// The effective scopes of an API key outside the request pipeline (token issue and exchange),
/// as of `now`; `None` if its principal is inactive.
pub(crate) async fn key_scopes(
    ceilings: &RoleCeilings,
    store: &Store,
    now: DateTime<Utc>,
    key: &crate::service::credentials::VerifiedKey,
) -> Result<Option<ScopeSet>, StoreError> {
    let credential = bulkhead_core::Credential::ApiKey {
        key_id: key.key_id,
        scopes: key.scopes.clone(),
    };
    let ctx =
        TenantContext::for_credential(key.tenant_id, credential, bulkhead_core::RequestId::new());
    let ceiling = ceilings.of(store, &ctx, now).await?;
    Ok(narrow(ctx.actor().clone(), &ceiling).and_then(|a| a.scopes().cloned()))
}

/// The effective scopes of an auth session (what a refresh would grant now), read in `tx` (the
/// caller holds the session's row lock; a second connection could wait on it): its scopes cut
/// to the roles of its user, or of the agent owning the key it was issued to; `None` if that
/// principal is inactive, the key is gone, revoked or expired, or the stored scopes are
/// unreadable.
pub(crate) async fn session_scopes(
    tx: &mut bulkhead_store::TenantTx,
    session: &bulkhead_store::tenant::tokens::AuthSession,
    now: DateTime<Utc>,
) -> Result<Option<ScopeSet>, StoreError> {
    let Some(scopes) = session.scopes.clone() else {
        return Ok(None);
    };
    let mut principals = Vec::with_capacity(2);
    if session.principal_type == bulkhead_store::tenant::tokens::PrincipalType::User {
        match UserId::parse(&session.principal_id) {
            Ok(user) => principals.push(Principal::User(user)),
            Err(_) => return Ok(None),
        }
    }
    if let Ok(key) = ApiKeyId::parse(&session.client_id) {
        // A revoked or expired key refreshes nothing, like it mints nothing.
        match api_keys::get(tx, key, now).await {
            Ok(record) if record.usable_at(now) => {
                principals.extend(record.agent_id.map(Principal::Agent))
            }
            Ok(_) | Err(StoreError::NotFound) => return Ok(None),
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
