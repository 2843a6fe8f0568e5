//! The authorization-code grant (OAuth 2.1 §4.1) with PKCE: issuing a code once the user has
//! consented, and exchanging it at the token endpoint.
//!
//! A code is good once, for [`CODE_LIFETIME_SECS`], for exactly the client, redirect URI, PKCE
//! challenge, user and scopes it was issued with; only its SHA-256 is stored. Its exchange
//! starts an auth session (the existing refresh-token family, so refresh rotation and reuse
//! detection apply unchanged) whose `client_id` is the OAuth client's id: a refresh of it needs
//! that client. A code presented again after its exchange ends that session, so every token
//! issued from the code stops working (OAuth 2.1 §4.1.3), audited as
//! `security.authorization_code_reuse` in the same transaction.

use std::net::IpAddr;

use bulkhead_auth::code::pkce_s256_matches;
use bulkhead_auth::{AuthorizationCode, RefreshToken};
use bulkhead_core::{Clock, ScopeSet, TenantContext, TenantId, UserId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::oauth::{self, NewCode, OAuthClient};
use bulkhead_store::tenant::oauth_grants::{self, OAuthGrant};
use bulkhead_store::tenant::oauth_resources;
use bulkhead_store::tenant::tokens::{self, EndReason, NewAuthSession, PrincipalType};
use bulkhead_store::tenant::users::{self, UserStatus};
use bulkhead_store::{Access, Store, StoreError, TenantTx};
use serde_json::json;

use super::oidc::{self, IdTokenFor, Identity};
use super::{GrantError, IssuedTokens, Issuer};
use crate::service::audit_line::{AuditLine, Detail};
use crate::service::auth_sessions::{end_audited, Ending};
use crate::service::tokens::Grant;

/// How long a code is good for.
pub const CODE_LIFETIME_SECS: i64 = 60;

/// The one description of every refused code: the answer must not say which check failed.
pub const INVALID_CODE: &str = "the authorization code is invalid, expired or already used";

/// What a user may grant now: its stored scopes ∩ its roles' permissions; `None` if the user is
/// missing or disabled.
pub async fn user_grantable(
    tx: &mut TenantTx,
    user: UserId,
) -> Result<Option<ScopeSet>, StoreError> {
    let record = match users::get(tx, user).await {
        Ok(record) => record,
        Err(StoreError::NotFound) => return Ok(None),
        Err(err) => return Err(err),
    };
    if record.status != UserStatus::Active {
        return Ok(None);
    }
    let Some(stored) = record.scopes else {
        return Ok(None);
    };
    let held = bulkhead_store::tenant::rbac::permissions_of(
        tx,
        bulkhead_store::tenant::rbac::Principal::User(user),
    )
    .await?;
    Ok(held.map(|held| stored.intersection(&held)))
}

/// A consented authorization request.
#[derive(Debug)]
pub struct Consented<'a> {
    /// The tenant.
    pub tenant: TenantId,
    /// The client, as registered.
    pub client: &'a OAuthClient,
    /// The redirect URI the code goes to (matched against the registered ones).
    pub redirect_uri: &'a str,
    /// The S256 challenge.
    pub code_challenge: &'a str,
    /// The user.
    pub user: UserId,
    /// What the user ticked, before the server's own cut.
    pub ticked: &'a ScopeSet,
    /// What the client asked for.
    pub requested: &'a ScopeSet,
    /// The protected resource the code is for (RFC 8707; [`OWN_API`]: Bulkhead's own API).
    pub resource: &'a str,
    /// The user's remembered consent that covers the request, when the consent page was skipped;
    /// `None` when the user consented on the page (the consent is then remembered).
    pub remembered: Option<&'a OAuthGrant>,
    /// The OpenID Connect side: identity scopes ticked (∩ asked), `nonce`, sign-in time.
    pub oidc: ConsentedOidc<'a>,
}

/// The OpenID Connect part of a consent.
#[derive(Debug, Clone, Copy)]
pub struct ConsentedOidc<'a> {
    /// The identity scopes asked for and ticked (asked, when the page was skipped).
    pub identity: &'a Identity,
    /// The authorization request's `nonce`.
    pub nonce: Option<&'a str>,
    /// When the user signed in.
    pub auth_time: chrono::DateTime<chrono::Utc>,
}

/// The resource of a grant without an RFC 8707 indicator: the tenant's own API.
pub const OWN_API: &str = "";

/// The user's remembered consent to the client that covers all of `requested` and the identity
/// scopes `identity`, if any.
pub async fn covering_grant(
    store: &Store,
    (tenant, user): (TenantId, UserId),
    client: &OAuthClient,
    resource: &str,
    (requested, identity): (&ScopeSet, &Identity),
) -> Result<Option<OAuthGrant>, StoreError> {
    let ctx = TenantContext::for_system(tenant, "oauth");
    let mut tx = store.begin(&ctx, Access::ReadOnly).await?;
    let grant = oauth_grants::find(&mut tx, user, client.id, resource).await?;
    tx.commit().await?;
    let asks_something = !requested.is_empty() || identity.openid();
    Ok(grant.filter(|g| {
        asks_something
            && g.scope_set().is_superset(requested)
            && Identity::from_names(&g.identity_scopes).is_superset(identity)
    }))
}

/// Why a consent produced no code.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The user may not grant anything asked (disabled since the page, or nothing held).
    #[error("nothing may be granted")]
    NothingGranted,
    /// A client named by its metadata document would be one client too many for the tenant.
    #[error("the tenant has as many clients as it may")]
    ClientLimit,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A client named by its metadata document is stored when a user consents to it (or refreshed
/// from the document), counted in the tenant's self-registered cap when new, audited `oauth_client.register`.
async fn store_metadata_client(
    tx: &mut TenantTx,
    client: &OAuthClient,
    url: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ConsentError> {
    let cap = oauth::MAX_SELF_REGISTERED_CLIENTS;
    let count = oauth::count_clients_locked(tx, true).await?;
    let new = oauth::upsert_metadata_client(tx, client, url, now).await?;
    if new && count >= cap {
        return Err(ConsentError::ClientLimit);
    }
    if new {
        let meta = json!({ "registered_by": "metadata_document", "scopes": client.scopes });
        let id = client.id.to_string();
        audit::record(
            tx,
            "oauth_client.register",
            Some(&id),
            Outcome::Success,
            meta,
        )
        .await?;
    }
    Ok(())
}

/// Issues a code for what the user may grant of what was ticked: ticked ∩ requested ∩ the
/// client's scopes ∩ the user's current permissions (∩ the remembered consent's scopes when the
/// page was skipped). A consent given on the page is remembered (`oauth.grant`, its scopes
/// replacing any earlier consent of the user to the client). Audited as `oauth.authorize`.
pub async fn issue_code(
    store: &Store,
    clock: &Clock,
    consented: &Consented<'_>,
) -> Result<(AuthorizationCode, ScopeSet), ConsentError> {
    let ctx = TenantContext::for_system(consented.tenant, "oauth");
    let mut tx = store.begin(&ctx, Access::ReadWrite).await?;
    if let Some(url) = &consented.client.metadata_url {
        store_metadata_client(&mut tx, consented.client, url, clock.now()).await?;
    }
    let grantable = user_grantable(&mut tx, consented.user)
        .await?
        .unwrap_or_default();
    let mut granted = consented
        .ticked
        .intersection(consented.requested)
        .intersection(&consented.client.scope_set())
        .intersection(&grantable);
    let mut identity = consented.oidc.identity.clone();
    if let Some(grant) = consented.remembered {
        granted = granted.intersection(&grant.scope_set());
        identity = identity.intersection(&Identity::from_names(&grant.identity_scopes));
    }
    if granted.is_empty() && !identity.openid() {
        audit::record(
            &mut tx,
            "oauth.authorize",
            Some(&consented.client.id.to_string()),
            Outcome::Failure,
            json!({ "reason": "nothing_granted", "user_id": consented.user }),
        )
        .await?;
        tx.commit().await?;
        return Err(ConsentError::NothingGranted);
    }
    let now = clock.now();
    let grant_id = match consented.remembered {
        Some(grant) => grant.id,
        None => {
            let (id, created) = oauth_grants::remember(
                &mut tx,
                (consented.user, consented.client.id, consented.resource),
                &granted,
                &identity.to_strings(),
                now,
            )
            .await?;
            audit::record(
                &mut tx,
                "oauth.grant",
                Some(&id.to_string()),
                Outcome::Success,
                json!({
                    "user_id": consented.user,
                    "client_id": consented.client.id,
                    "scopes": granted.to_strings(),
                    "identity_scopes": identity.to_strings(),
                    "resource": consented.resource,
                    "created": created,
                }),
            )
            .await?;
            id
        }
    };
    let code = AuthorizationCode::generate(*consented.tenant.uuid().as_bytes());
    oauth::touch_client(&mut tx, consented.client.id, now).await?;
    oauth::insert_code(
        &mut tx,
        &NewCode {
            code_hash: code.hash(),
            client_id: consented.client.id,
            redirect_uri: consented.redirect_uri,
            code_challenge: consented.code_challenge,
            user_id: consented.user,
            scopes: &granted,
            resource: consented.resource,
            identity_scopes: &identity.to_strings(),
            nonce: consented.oidc.nonce,
            auth_time: consented.oidc.auth_time,
            now,
            expires_at: now + chrono::Duration::seconds(CODE_LIFETIME_SECS),
        },
    )
    .await?;
    audit::record(
        &mut tx,
        "oauth.authorize",
        Some(&consented.client.id.to_string()),
        Outcome::Success,
        json!({
            "user_id": consented.user,
            "redirect_uri": consented.redirect_uri,
            "requested": consented.requested.to_strings(),
            "granted": granted.to_strings(),
            "identity_scopes": identity.to_strings(),
            "grant_id": grant_id,
            "remembered": consented.remembered.is_some(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok((code, granted))
}

/// A token request with `grant_type=authorization_code` from an authenticated client.
#[derive(Debug)]
pub struct CodeExchange<'a> {
    /// The tenant the code names (active, the host's when the host names one).
    pub tenant: TenantId,
    /// Its issuer (the tokens' `iss`).
    pub tenant_issuer: &'a str,
    /// The presented code.
    pub code: &'a AuthorizationCode,
    /// The client, authenticated by its registered method.
    pub client: &'a OAuthClient,
    /// The `redirect_uri` parameter.
    pub redirect_uri: &'a str,
    /// The `code_verifier` parameter.
    pub code_verifier: &'a str,
    /// The `resource` parameter (RFC 8707), if sent: it must name the code's resource.
    pub resource: Option<&'a str>,
    /// The caller's address.
    pub client_ip: Option<IpAddr>,
    /// The caller's `User-Agent`.
    pub user_agent: Option<&'a str>,
}

fn invalid() -> GrantError {
    GrantError::InvalidGrant(INVALID_CODE.into())
}

/// Exchanges a code: checks it, starts its auth session and mints the tokens (and an ID token
/// when `openid` was granted), audited as `auth.token_issue` whether granted or refused.
pub async fn exchange(
    issuer: Issuer<'_>,
    request: &CodeExchange<'_>,
) -> Result<(IssuedTokens, Option<String>), GrantError> {
    let tenant = request.tenant;
    let ctx = TenantContext::for_system(tenant, "oauth");
    let now = issuer.clock.now();
    let mut tx = issuer.store.begin(&ctx, Access::ReadWrite).await?;
    let Some(code) = oauth::find_code_for_update(&mut tx, &request.code.hash()).await? else {
        return refused(tx, request, "unknown_code").await;
    };
    if let Some(used_at) = code.used_at {
        // A code presented again: whoever holds it, what it was exchanged for is compromised.
        if let Some(session) = code.session_id {
            let ending = Ending {
                reason: EndReason::ReuseDetected,
                action: "security.authorization_code_reuse",
                outcome: Outcome::Blocked,
                meta: json!({
                    "client_id": request.client.id,
                    "user_id": code.user_id,
                    "used_at": used_at,
                }),
            };
            end_audited(issuer.tokens, issuer.clock, &mut tx, session, ending).await?;
            tx.commit().await?;
            issuer.tokens.deny_session_locally(tenant, session);
            AuditLine::blocked("security.authorization_code_reuse")
                .tenant(tenant)
                .actor(request.client.id)
                .with(Detail::Resource, session)
                .warn("authorization code reuse: the tokens issued from it are revoked");
            return Err(invalid());
        }
        return refused(tx, request, "code_reused").await;
    }
    if code.client_id != request.client.id {
        return refused(tx, request, "client_mismatch").await;
    }
    if code.expires_at <= now {
        return refused(tx, request, "code_expired").await;
    }
    if code.redirect_uri != request.redirect_uri {
        return refused(tx, request, "redirect_uri_mismatch").await;
    }
    if !pkce_s256_matches(request.code_verifier, &code.code_challenge) {
        return refused(tx, request, "pkce_mismatch").await;
    }
    oauth::touch_client(&mut tx, request.client.id, now).await?;
    // What the code carries, cut to what the user and the client may hold now.
    let Some(grantable) = user_grantable(&mut tx, code.user_id).await? else {
        return refused(tx, request, "user_inactive").await;
    };
    // The resource may be named again, but not changed (RFC 8707 §2.2). The issuer names
    // Bulkhead's own API.
    let issuer_url = &issuer.tokens.settings().issuer;
    let asked = request.resource.map(|r| {
        if super::is_own_api(issuer_url, request.tenant_issuer, r) {
            OWN_API
        } else {
            r
        }
    });
    if asked.is_some_and(|r| r != code.resource) {
        if let Err(GrantError::Store(err)) = refused::<()>(tx, request, "resource_mismatch").await {
            return Err(err.into());
        }
        return Err(GrantError::InvalidTarget(
            "resource is not the one the code was issued for".into(),
        ));
    }
    // The consent it was issued under must still stand (revoking it refuses its codes too).
    // Locked until the session is linked to it: a revocation waits, then ends that session too.
    let Some(grant) =
        oauth_grants::find_key_share(&mut tx, code.user_id, request.client.id, &code.resource)
            .await?
    else {
        return refused(tx, request, "grant_revoked").await;
    };
    let mut scopes = code
        .scopes
        .clone()
        .unwrap_or_default()
        .intersection(&request.client.scope_set())
        .intersection(&grant.scope_set())
        .intersection(&grantable);
    // A token for a resource carries only what the resource accepts now.
    if code.resource != OWN_API {
        let Some(resource) = oauth_resources::by_identifier(&mut tx, &code.resource).await? else {
            return refused(tx, request, "resource_gone").await;
        };
        scopes = scopes.intersection(&resource.scope_set());
    }
    // The identity scopes the code carries, as far as the consent still holds them.
    let identity = Identity::from_names(&code.oidc.identity_scopes)
        .intersection(&Identity::from_names(&grant.identity_scopes));
    if scopes.is_empty() && !identity.openid() {
        return refused(tx, request, "nothing_granted").await;
    }
    let policy = tokens::token_policy(&mut tx).await?;
    let subject = code.user_id.to_string();
    let client_id = request.client.id.to_string();
    let (session, refresh): (_, RefreshToken) = crate::service::auth_sessions::start(
        &mut tx,
        &NewAuthSession {
            principal_type: PrincipalType::User,
            principal_id: &subject,
            client_id: &client_id,
            scopes: &scopes,
            now,
            absolute: chrono::Duration::seconds(i64::from(policy.session_absolute_seconds)),
            idle: chrono::Duration::seconds(i64::from(policy.session_idle_seconds)),
            client_ip: request.client_ip,
            user_agent: request.user_agent,
        },
    )
    .await?;
    oauth::mark_code_used(&mut tx, code.id, now, session.id).await?;
    oauth_grants::link_session(
        &mut tx,
        session.id,
        grant.id,
        &code.resource,
        &identity.to_strings(),
    )
    .await?;
    let audience = (code.resource != OWN_API).then_some(code.resource.as_str());
    let issued = issuer
        .tokens
        .issue_for(
            &Grant {
                tenant_id: tenant,
                issuer: request.tenant_issuer,
                subject: &subject,
                human: true,
                client_id: &client_id,
                scopes: &scopes,
                session_id: Some(session.id),
                act: None,
                resource_prefix: None,
                not_after: None,
                delegated_from: Vec::new(),
                allowed_networks: Vec::new(),
                derived_keys: Vec::new(),
            },
            audience,
        )
        .map_err(|_| GrantError::Unavailable)?;
    audit::record(
        &mut tx,
        "auth.token_issue",
        Some(&issued.claims.jti),
        Outcome::Success,
        json!({
            "grant_type": "authorization_code",
            "client_id": client_id,
            "user_id": subject,
            "scope": issued.claims.scope,
            "session_id": session.id.to_string(),
            "grant_id": grant.id,
            "resource": code.resource,
            "id_token": identity.openid(),
        }),
    )
    .await?;
    let id_token = if identity.openid() {
        let user = users::get(&mut tx, code.user_id).await?;
        // The ID token's audience is the client_id the client itself knows: for a client
        // identified by its metadata document that is the document's URL, not the row's id
        // (OIDC Core §2; its library compares `aud` with the URL it sent).
        let audience_client = request.client.metadata_url.as_deref().unwrap_or(&client_id);
        let of = IdTokenFor {
            tenant,
            issuer: request.tenant_issuer,
            user: &user,
            client_id: audience_client,
            identity: &identity,
            nonce: code.oidc.nonce.as_deref(),
            auth_time: code.oidc.auth_time.unwrap_or(now).timestamp(),
            expires_in: issued.expires_in,
        };
        let now = now.timestamp();
        Some(oidc::id_token(issuer.tokens, now, &of).map_err(|_| GrantError::Unavailable)?)
    } else {
        None
    };
    tx.commit().await?;
    let tokens = IssuedTokens {
        access: issued,
        refresh: Some(refresh),
        scopes,
        session_id: Some(session.id),
    };
    Ok((tokens, id_token))
}

/// A refused exchange: its `auth.token_issue` failure event is committed before the answer.
async fn refused<T>(
    mut tx: TenantTx,
    request: &CodeExchange<'_>,
    reason: &str,
) -> Result<T, GrantError> {
    audit::record(
        &mut tx,
        "auth.token_issue",
        Some(&request.client.id.to_string()),
        Outcome::Failure,
        json!({ "grant_type": "authorization_code", "reason": reason }),
    )
    .await?;
    tx.commit().await?;
    Err(invalid())
}
