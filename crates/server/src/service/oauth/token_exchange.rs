//! Delegation by OAuth 2.0 Token Exchange (RFC 8693), at `POST /oauth/token` with
//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`. Who the actor is, and how the
//! subject token is checked, is the HTTP side's (`http/routes/oauth/token_exchange.rs`); this
//! module narrows, audits and mints.
//!
//! # Every hop only narrows
//! The issued token's authority is at most the intersection of:
//! - the subject token's scopes (the delegating principal's effective authority),
//! - the actor's own credential's scopes (an agent can never pass on more than it holds),
//! - the `scope` asked for;
//!
//! its `resource_prefix` is the subject's or one inside it; it expires no later than the subject
//! token (and the actor's token, when the actor presents one); its `act` claim records the chain,
//! at most [`TokenSettings::max_delegation_depth`](crate::service::tokens::TokenSettings) actors deep;
//! `delegated_from` lists every token it derives from, so revoking any of them (or ending the
//! subject's session, whose `sid` it inherits) revokes it; `derived_keys` lists every API key
//! it derives from besides its `client_id` (the subject token's client, the actor token's), so
//! revoking any of those keys, or narrowing its allowlist, binds it as well. Subject, actor and host must be one
//! tenant. Anything that would widen authority is refused (`invalid_scope`, `invalid_target`)
//! and audited.
//!
//! # Audiences (RFC 8707)
//! The new token is for the subject token's audience, never another: a protected resource's
//! token exchanges into a token for that same resource (its scopes already cut to what the
//! resource accepts now), Bulkhead's own API's into one for the API. A `resource` (or an
//! `audience` that names no actor) that names anything else is `invalid_target`, audited.

use bulkhead_auth::ActClaim;
use bulkhead_core::{ApiKeyId, Namespace, ScopeSet, TenantContext, TenantId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::oauth_resources::{self, OAuthResource};
use bulkhead_store::{Access, StoreError};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{GrantError, IssuedTokens, Issuer};
use crate::service::tokens::{parse_scope_param, Grant, VerifiedToken};

/// Who acts in a delegation, and what they hold themselves.
#[derive(Debug)]
pub struct Delegate {
    /// The actor's principal: it becomes the outermost `act`.
    pub principal: String,
    /// The client the new token is issued to; `None` keeps the subject token's.
    pub client_id: Option<String>,
    /// `None`: no credential of its own was presented (an `audience`), so it adds no bound.
    pub scopes: Option<ScopeSet>,
    /// The actor's own access token, when it presented one.
    pub token: Option<VerifiedToken>,
    /// The network restrictions of its credential (its key's allowlist, its token's).
    pub networks: Vec<Vec<ipnet::IpNet>>,
}

/// A token-exchange request whose subject and actor have been authenticated.
#[derive(Debug)]
pub struct Exchange<'a> {
    /// The subject token, its `scopes` already cut to its principal's effective authority.
    pub subject: &'a VerifiedToken,
    /// The actor.
    pub actor: &'a Delegate,
    /// The tenant of subject, actor and host.
    pub tenant: TenantId,
    /// Its issuer (the tokens' `iss`).
    pub tenant_issuer: &'a str,
    /// The `scope` parameter, when sent.
    pub scope: Option<&'a str>,
    /// The `resource_prefix` parameter, when sent.
    pub resource_prefix: Option<&'a str>,
    /// The longest `act` chain allowed.
    pub max_delegation_depth: usize,
    /// The identifier of the protected resource the subject token is for (its `aud`, found
    /// registered in `tenant`); `None`: Bulkhead's own API.
    pub subject_resource: Option<&'a str>,
    /// The `resource` parameter (RFC 8707), when sent.
    pub resource: Option<&'a str>,
    /// The `audience` parameter, when sent (an actor's name, or the subject's resource).
    pub audience: Option<&'a str>,
}

/// The protected resource of `tenant` whose identifier is exactly the verified `subject`
/// token's `aud`; `None` when the tenant has none such (deleted since), a refusal audited as
/// `auth.token_exchange` (`blocked`, reason `resource_gone`).
pub async fn subject_resource(
    issuer: Issuer<'_>,
    tenant: TenantId,
    subject: &VerifiedToken,
) -> Result<Option<OAuthResource>, StoreError> {
    let ctx = TenantContext::for_system(tenant, "oauth");
    let mut tx = issuer.store.begin(&ctx, Access::ReadWrite).await?;
    let found = oauth_resources::by_identifier(&mut tx, &subject.claims.aud).await?;
    if found.is_none() {
        audit::record(
            &mut tx,
            "auth.token_exchange",
            Some(&subject.claims.jti),
            Outcome::Blocked,
            json!({ "reason": "resource_gone", "subject": subject.claims.sub }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(found)
}

/// The exchange keeps the subject token's audience: see the module doc. `issuer` is the
/// deployment's issuer, the tenant's issuer and `own_audience` `--token-audience` the names of
/// Bulkhead's own API.
fn keeps_audience(
    request: &Exchange<'_>,
    issuer: &str,
    own_audience: &str,
) -> Result<(), (GrantError, &'static str)> {
    let changes = || {
        Err((
            GrantError::InvalidTarget(
                "a token exchange keeps the subject token's audience; it cannot name another"
                    .into(),
            ),
            "audience_change",
        ))
    };
    let names_own_api =
        |name: &str| name == own_audience || super::is_own_api(issuer, request.tenant_issuer, name);
    match request.subject_resource {
        Some(identifier) => {
            if request.resource.is_some_and(|asked| asked != identifier) {
                return changes();
            }
            // `audience` may confirm the resource or, when no credential names the actor, be the
            // actor's name; anything else names a target.
            if let Some(asked) = request.audience {
                let names_actor =
                    request.actor.client_id.is_none() && request.actor.principal == asked;
                if asked != identifier && (!names_actor || names_own_api(asked)) {
                    return changes();
                }
            }
        }
        None => {
            if request.resource.is_some_and(|asked| !names_own_api(asked)) {
                return changes();
            }
        }
    }
    Ok(())
}

/// What a delegation would grant, or the refusal (with the reason to audit).
struct Narrowed {
    scopes: ScopeSet,
    prefix: Option<Namespace>,
    act: ActClaim,
    not_after: DateTime<Utc>,
    delegated_from: Vec<String>,
    /// Every restriction of the subject's token and of the actor's credential: the new token is
    /// usable only where all of them allow.
    networks: Vec<Vec<ipnet::IpNet>>,
}

fn narrow(request: &Exchange<'_>) -> Result<Narrowed, (GrantError, &'static str)> {
    let (subject, actor) = (request.subject, request.actor);
    // The intersection covers tool-call grants too (`tools:call:*` ∩ `tools:call:x` = `x`).
    let ceiling: ScopeSet = match &actor.scopes {
        Some(actor_scopes) => subject.scopes.intersection(actor_scopes),
        None => subject.scopes.clone(),
    };
    let scopes = match request.scope {
        None => ceiling,
        Some(text) => {
            let requested = parse_scope_param(text).map_err(|_| {
                (
                    GrantError::InvalidScope("a requested scope does not exist".into()),
                    "unknown_scope",
                )
            })?;
            if !ceiling.is_superset(&requested) {
                return Err((
                    GrantError::InvalidScope(
                        "the requested scope exceeds what both the subject and the actor hold"
                            .into(),
                    ),
                    "scope_widening",
                ));
            }
            requested
        }
    };
    if scopes.is_empty() {
        return Err((
            GrantError::InvalidScope("the subject and the actor share no scope".into()),
            "no_common_scope",
        ));
    }
    let prefix = match (request.resource_prefix, &subject.resource_prefix) {
        (None, inherited) => inherited.clone(),
        (Some(text), inherited) => {
            let asked = Namespace::parse(text).map_err(|_| {
                (
                    GrantError::InvalidTarget("resource_prefix is not a valid namespace".into()),
                    "bad_prefix",
                )
            })?;
            if inherited
                .as_ref()
                .is_some_and(|outer| !outer.contains(&asked))
            {
                return Err((
                    GrantError::InvalidTarget(
                        "resource_prefix must be inside the subject's prefix".into(),
                    ),
                    "prefix_widening",
                ));
            }
            Some(asked)
        }
    };
    // The actor's own delegation counts too: a delegated actor cannot reset the chain.
    let actor_depth = actor
        .token
        .as_ref()
        .and_then(|t| t.claims.act.as_ref())
        .map_or(0, ActClaim::depth);
    let depth = subject.claims.act.as_ref().map_or(0, ActClaim::depth) + 1 + actor_depth;
    if depth > request.max_delegation_depth {
        return Err((
            GrantError::InvalidGrant("the delegation chain is at its maximum depth".into()),
            "depth_exceeded",
        ));
    }
    let mut not_after = subject.expires_at;
    let mut delegated_from = subject.claims.delegated_from.clone();
    delegated_from.push(subject.claims.jti.clone());
    if let Some(actor_token) = &actor.token {
        // The new token dies with the actor's token, everything that one derives from, and the
        // actor's session (the subject's session is inherited as `sid`).
        not_after = not_after.min(actor_token.expires_at);
        for ancestor in &actor_token.claims.delegated_from {
            if !delegated_from.contains(ancestor) {
                delegated_from.push(ancestor.clone());
            }
        }
        if let Some(sid) = &actor_token.claims.sid {
            if subject.claims.sid.as_ref() != Some(sid) && !delegated_from.contains(sid) {
                delegated_from.push(sid.clone());
            }
        }
        delegated_from.push(actor_token.claims.jti.clone());
    }
    // The actor acts for the subject (and for whoever already acts for it); when the actor's own
    // token is delegated, whoever holds it acts for the actor: that chain goes outermost, so the
    // current actor stays the outermost `act` and no hop is dropped.
    let hop = ActClaim {
        sub: actor.principal.clone(),
        act: subject.claims.act.clone().map(Box::new),
    };
    let act = match actor.token.as_ref().and_then(|t| t.claims.act.clone()) {
        Some(actor_chain) => graft(actor_chain, hop),
        None => hop,
    };
    let mut networks = subject.allowed_networks.clone();
    for list in &actor.networks {
        if !list.is_empty() && !networks.contains(list) {
            networks.push(list.clone());
        }
    }
    Ok(Narrowed {
        scopes,
        prefix,
        act,
        not_after,
        delegated_from,
        networks,
    })
}

/// Every API key the new token derives from besides its `client_id`: the clients of the subject
/// token and of the actor's token, and the keys those derive from in turn. Each binds the new
/// token on every use ([`crate::service::ceilings`]): revoking the subject's key, or narrowing its
/// allowlist, reaches the tokens exchanged from it whoever the actor is.
fn derived_keys(
    subject: &VerifiedToken,
    actor: Option<&VerifiedToken>,
    client_id: &str,
) -> Vec<ApiKeyId> {
    let client = ApiKeyId::parse(client_id).ok();
    let mut keys: Vec<ApiKeyId> = Vec::new();
    for token in std::iter::once(subject).chain(actor) {
        // Login tokens name `bulkhead-login` as their client: no key.
        let own = ApiKeyId::parse(&token.claims.client_id).ok();
        for key in token.derived_keys.iter().copied().chain(own) {
            if Some(key) != client && !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// `outer` with `inner` nested under its innermost actor.
fn graft(mut outer: ActClaim, inner: ActClaim) -> ActClaim {
    outer.act = Some(Box::new(match outer.act.take() {
        Some(next) => graft(*next, inner),
        None => inner,
    }));
    outer
}

/// Narrows, audits (`auth.token_exchange`, refused or granted) and mints. See the module doc.
pub async fn exchange(
    issuer: Issuer<'_>,
    request: &Exchange<'_>,
) -> Result<IssuedTokens, GrantError> {
    let (subject, actor, tenant) = (request.subject, request.actor, request.tenant);
    let ctx = TenantContext::for_system(tenant, "oauth");
    let mut tx = issuer.store.begin(&ctx, Access::ReadWrite).await?;
    let settings = issuer.tokens.settings();
    let checked = keeps_audience(request, &settings.issuer, &settings.audience)
        .and_then(|()| narrow(request));
    let narrowed = match checked {
        Ok(narrowed) => narrowed,
        Err((err, reason)) => {
            audit::record(
                &mut tx,
                "auth.token_exchange",
                Some(&subject.claims.jti),
                Outcome::Blocked,
                json!({
                    "reason": reason,
                    "subject": subject.claims.sub,
                    "actor": actor.principal,
                    "resource": request.subject_resource,
                }),
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(
                target: "bulkhead::audit",
                action = "auth.token_exchange",
                outcome = "blocked",
                reason,
                tenant_id = %tenant,
                actor_id = %actor.principal,
                "delegation refused"
            );
            return Err(err);
        }
    };
    let client_id = actor
        .client_id
        .clone()
        .unwrap_or_else(|| subject.claims.client_id.clone());
    let derived_keys = derived_keys(subject, actor.token.as_ref(), &client_id);
    let issued = issuer
        .tokens
        .issue_for(
            &Grant {
                tenant_id: tenant,
                issuer: request.tenant_issuer,
                subject: &subject.claims.sub,
                human: subject.claims.sub_type == "user",
                client_id: &client_id,
                scopes: &narrowed.scopes,
                session_id: subject.session_id,
                act: Some(narrowed.act.clone()),
                resource_prefix: narrowed.prefix.as_ref().map(|p| p.to_string()),
                not_after: Some(narrowed.not_after),
                delegated_from: narrowed.delegated_from,
                allowed_networks: narrowed.networks,
                derived_keys,
            },
            request.subject_resource,
        )
        .map_err(|_| GrantError::Unavailable)?;
    // The event's `delegation` is the new token's whole chain, as every event of its use will be.
    let jti = issued.claims.jti.clone();
    audit::record_event(
        &mut tx,
        &audit::NewEvent {
            resource_id: Some(&jti),
            delegation: Some(narrowed.act.actors()),
            metadata: json!({
                "subject": subject.claims.sub,
                "delegation_chain": narrowed.act.actors(),
                "act": narrowed.act,
                "scope": issued.claims.scope,
                "resource_prefix": issued.claims.resource_prefix,
                "derived_from": issued.claims.delegated_from,
                "resource": request.subject_resource,
            }),
            ..audit::NewEvent::new("auth.token_exchange", Outcome::Success)
        },
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedTokens {
        access: issued,
        refresh: None,
        scopes: narrowed.scopes,
        session_id: None,
    })
}
