//! Delegation by OAuth 2.0 Token Exchange (RFC 8693), at `POST /oauth/token` with
//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`.
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
//! # Who the actor is
//! - `actor_token` with `actor_token_type` `urn:ietf:params:oauth:token-type:access_token` (the
//!   sub-agent's own access token) or `urn:bulkhead:params:oauth:token-type:api_key` (its key);
//! - else the authenticated client (HTTP Basic or body credentials: the sub-agent's API key);
//! - else `audience`: the principal name of a sub-agent that holds no credential here; then only
//!   the subject's authority bounds the token (it can only shrink, never be pooled with anyone
//!   else's).

use std::net::IpAddr;

use bulkhead_auth::ActClaim;
use bulkhead_core::{Actor, ApiKeyId, Namespace, RequestId, ScopeSet, TenantContext};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::Access;
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::http::error::{ApiError, OAuthError};
use crate::http::resolve::authenticate_api_key;
use crate::http::routes::auth::TokenResponse;
use crate::http::routes::oauth::{authenticate_client, ClientAuth, Form};
use crate::http::state::AppState;
use crate::service::tokens::{parse_scope_param, scope_text, Grant, VerifiedToken};

/// RFC 8693 token type of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Bulkhead's token type for an API key presented as `actor_token`.
pub const API_KEY_TYPE: &str = "urn:bulkhead:params:oauth:token-type:api_key";

/// Who acts in a delegation, and what they hold themselves.
struct Delegate {
    principal: String,
    client_id: Option<String>,
    /// `None`: no credential of its own was presented (an `audience`), so it adds no bound.
    scopes: Option<ScopeSet>,
    token: Option<VerifiedToken>,
    /// The network restrictions of its credential (its key's allowlist, its token's).
    networks: Vec<Vec<ipnet::IpNet>>,
}

fn valid_principal(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A credential's effective scopes, or `invalid_grant` when its principal is disabled or gone.
fn effective_or_refuse(
    effective: Result<Option<ScopeSet>, bulkhead_store::StoreError>,
) -> Result<ScopeSet, OAuthError> {
    match effective {
        Ok(Some(scopes)) => Ok(scopes),
        Ok(None) => Err(OAuthError::invalid_grant(
            "a credential of the delegation belongs to a disabled principal",
        )),
        Err(_) => Err(OAuthError::unavailable()),
    }
}

/// [`crate::http::resolve::authorize_access_token`] for a token presented to the exchange: the token
/// and its effective scopes, or `invalid_grant` (whatever the reason: the answer must not say
/// which check failed).
async fn authorize_token(
    state: &AppState,
    text: &str,
    tenant: Option<Tenant>,
    client_ip: Option<IpAddr>,
    what: &'static str,
) -> Result<(VerifiedToken, ScopeSet, Tenant), OAuthError> {
    match crate::http::resolve::authorize_access_token(
        state,
        text,
        tenant,
        crate::http::resolve::TokenUse::Request(client_ip),
        RequestId::new(),
    )
    .await
    {
        Ok(standing) => {
            let scopes = standing.ctx.actor().scopes().cloned().unwrap_or_default();
            Ok((standing.token, scopes, standing.tenant))
        }
        Err(ApiError::Unavailable) => Err(OAuthError::unavailable()),
        Err(_) => Err(OAuthError::invalid_grant(format!(
            "the {what} is invalid, expired or revoked, or not of this tenant"
        ))),
    }
}

async fn delegate(
    state: &AppState,
    form: &Form,
    auth: Option<ClientAuth>,
    tenant: &Tenant,
    client_ip: Option<IpAddr>,
) -> Result<Delegate, OAuthError> {
    if let Some(actor_token) = form.get("actor_token") {
        // A client that authenticates must do so correctly (RFC 6749 §3.2.1), whoever the actor
        // is.
        if let Some(auth) = &auth {
            authenticate_client(state, auth, Some(tenant.clone()), client_ip).await?;
        }
        return match form.get("actor_token_type") {
            Some(ACCESS_TOKEN_TYPE) => {
                let (token, scopes, _) = authorize_token(
                    state,
                    actor_token,
                    Some(tenant.clone()),
                    client_ip,
                    "actor token",
                )
                .await?;
                Ok(Delegate {
                    principal: token.claims.sub.clone(),
                    client_id: Some(token.claims.client_id.clone()),
                    scopes: Some(scopes),
                    networks: token.allowed_networks.clone(),
                    token: Some(token),
                })
            }
            Some(API_KEY_TYPE) => {
                let (key, _) =
                    authenticate_api_key(state, actor_token, Some(tenant.clone()), client_ip)
                        .await
                        .map_err(|err| match err {
                            ApiError::Unavailable => OAuthError::unavailable(),
                            _ => OAuthError::invalid_grant(
                                "the actor key is invalid or not of the subject's tenant",
                            ),
                        })?;
                state.verifier().record_use(&key, client_ip);
                let scopes = effective_or_refuse(
                    crate::service::ceilings::key_scopes(
                        state.ceilings(),
                        state.store(),
                        state.clock().now(),
                        &key,
                    )
                    .await,
                )?;
                Ok(Delegate {
                    principal: key.principal,
                    client_id: Some(key.key_id.to_string()),
                    scopes: Some(scopes),
                    token: None,
                    networks: vec![key.allowed_ips],
                })
            }
            _ => Err(OAuthError::invalid_request(
                "actor_token_type must be an access token or a Bulkhead API key",
            )),
        };
    }
    if let Some(auth) = auth {
        let (key, _) = authenticate_client(state, &auth, Some(tenant.clone()), client_ip).await?;
        let scopes = effective_or_refuse(
            crate::service::ceilings::key_scopes(
                state.ceilings(),
                state.store(),
                state.clock().now(),
                &key,
            )
            .await,
        )?;
        return Ok(Delegate {
            principal: key.principal,
            client_id: Some(key.key_id.to_string()),
            scopes: Some(scopes),
            token: None,
            networks: vec![key.allowed_ips],
        });
    }
    match form.get("audience") {
        Some(audience) if valid_principal(audience) => Ok(Delegate {
            principal: audience.to_owned(),
            client_id: None,
            scopes: None,
            token: None,
            networks: Vec::new(),
        }),
        Some(_) => Err(OAuthError::invalid_target(
            "audience is not a valid principal name",
        )),
        None => Err(OAuthError::invalid_request(
            "name the actor: actor_token, client authentication, or audience",
        )),
    }
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

fn narrow(
    state: &AppState,
    form: &Form,
    subject: &VerifiedToken,
    actor: &Delegate,
) -> Result<Narrowed, (OAuthError, &'static str)> {
    // The intersection covers tool-call grants too (`tools:call:*` ∩ `tools:call:x` = `x`).
    let ceiling: ScopeSet = match &actor.scopes {
        Some(actor_scopes) => subject.scopes.intersection(actor_scopes),
        None => subject.scopes.clone(),
    };
    let scopes = match form.get("scope") {
        None => ceiling,
        Some(text) => {
            let requested = parse_scope_param(text).map_err(|_| {
                (
                    OAuthError::invalid_scope("a requested scope does not exist"),
                    "unknown_scope",
                )
            })?;
            if !ceiling.is_superset(&requested) {
                return Err((
                    OAuthError::invalid_scope(
                        "the requested scope exceeds what both the subject and the actor hold",
                    ),
                    "scope_widening",
                ));
            }
            requested
        }
    };
    if scopes.is_empty() {
        return Err((
            OAuthError::invalid_scope("the subject and the actor share no scope"),
            "no_common_scope",
        ));
    }
    let prefix = match (form.get("resource_prefix"), &subject.resource_prefix) {
        (None, inherited) => inherited.clone(),
        (Some(text), inherited) => {
            let asked = Namespace::parse(text).map_err(|_| {
                (
                    OAuthError::invalid_target("resource_prefix is not a valid namespace"),
                    "bad_prefix",
                )
            })?;
            if inherited
                .as_ref()
                .is_some_and(|outer| !outer.contains(&asked))
            {
                return Err((
                    OAuthError::invalid_target(
                        "resource_prefix must be inside the subject's prefix",
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
    if depth > state.config().tokens.max_delegation_depth {
        return Err((
            OAuthError::invalid_grant("the delegation chain is at its maximum depth"),
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

/// The token-exchange grant. See the module doc.
pub(crate) async fn exchange(
    state: &AppState,
    form: &Form,
    auth: Option<ClientAuth>,
    host: Option<Tenant>,
    client_ip: Option<IpAddr>,
) -> Result<TokenResponse, OAuthError> {
    let subject_text = form
        .get("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
    if form.get("subject_token_type") != Some(ACCESS_TOKEN_TYPE) {
        return Err(OAuthError::invalid_request(
            "subject_token_type must be urn:ietf:params:oauth:token-type:access_token",
        ));
    }
    if let Some(kind) = form.get("requested_token_type") {
        if kind != ACCESS_TOKEN_TYPE {
            return Err(OAuthError::invalid_request("only access tokens are issued"));
        }
    }
    // The subject delegates its effective authority (its roles bound it), not its token's text;
    // its tenant agrees with the host's and is active.
    let (mut subject, scopes, tenant) =
        authorize_token(state, subject_text, host, client_ip, "subject token").await?;
    subject.scopes = scopes;
    let actor = delegate(state, form, auth, &tenant, client_ip).await?;

    let ctx = TenantContext::new(
        tenant.id,
        Actor::System { component: "oauth" },
        RequestId::new(),
    );
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let narrowed = match narrow(state, form, &subject, &actor) {
        Ok(narrowed) => narrowed,
        Err((err, reason)) => {
            audit::record(
                &mut tx,
                "auth.token_exchange",
                Some(&subject.claims.jti),
                Outcome::Blocked,
                json!({ "reason": reason, "subject": subject.claims.sub, "actor": actor.principal }),
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(
                target: "bulkhead::audit",
                action = "auth.token_exchange",
                outcome = "blocked",
                reason,
                tenant_id = %tenant.id,
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
    let derived_keys = derived_keys(&subject, actor.token.as_ref(), &client_id);
    let issued = state
        .tokens()
        .issue(&Grant {
            tenant_id: tenant.id,
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
        })
        .map_err(|_| OAuthError::unavailable())?;
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
            }),
            ..audit::NewEvent::new("auth.token_exchange", Outcome::Success)
        },
    )
    .await?;
    tx.commit().await?;
    Ok(TokenResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        refresh_token: None,
        scope: scope_text(&narrowed.scopes),
        session_id: None,
        issued_token_type: Some(ACCESS_TOKEN_TYPE),
    })
}
