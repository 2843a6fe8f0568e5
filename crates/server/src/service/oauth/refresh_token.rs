//! The refresh-token grant (RFC 6749 §6) with rotation: each refresh token is good once; the
//! next one is issued with the access token. A rotated token presented again (after the
//! tenant's reuse interval) means the family is compromised: the session ends, audited, and the
//! tenant gets a `security.refresh_token_reuse` event in the same transaction.

use bulkhead_auth::RefreshToken;
use bulkhead_core::{TenantContext, TenantId, UserId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::tokens::{
    self, EndReason, PresentedRefresh, PrincipalType, RefreshStatus,
};
use bulkhead_store::tenant::users::{self, UserStatus};
use bulkhead_store::Access;
use serde_json::json;

use super::{granted_scopes, GrantError, IssuedTokens, Issuer};
use crate::service::audit_line::{AuditLine, Detail};
use crate::service::auth_sessions::{end_audited, Ending};
use crate::service::credentials::VerifiedKey;
use crate::service::tokens::Grant;

/// The one description of every refused refresh token: the answer must not say which check
/// failed.
pub const INVALID_REFRESH: &str = "the refresh token is invalid, expired or revoked";

/// A refresh request whose token's tenant has been checked against the host.
#[derive(Debug)]
pub struct Refresh<'a> {
    /// The presented refresh token.
    pub presented: &'a RefreshToken,
    /// Its tenant (active, the host's when the host names one).
    pub tenant: TenantId,
    /// Its issuer (the tokens' `iss`).
    pub tenant_issuer: &'a str,
    /// The authenticated client, if the caller authenticated. An agent's session needs its key.
    pub client: Option<&'a VerifiedKey>,
    /// The authenticated OAuth client, if the caller authenticated as one. A session started by
    /// an authorization code needs its client.
    pub oauth_client: Option<bulkhead_core::OAuthClientId>,
    /// The `scope` parameter, when sent.
    pub scope: Option<&'a str>,
    /// The `resource` parameter (RFC 8707), if sent: it must name the session's resource (a
    /// refresh keeps the audience, never changes it).
    pub resource: Option<&'a str>,
}

fn invalid() -> GrantError {
    GrantError::InvalidGrant(INVALID_REFRESH.into())
}

/// Rotates the refresh token and issues an access token, audited as `auth.token_refresh`.
pub async fn refresh(
    issuer: Issuer<'_>,
    request: &Refresh<'_>,
) -> Result<IssuedTokens, GrantError> {
    let tenant = request.tenant;
    let ctx = TenantContext::for_system(tenant, "oauth");
    let now = issuer.clock.now();
    let mut tx = issuer.store.begin(&ctx, Access::ReadWrite).await?;
    let Some(found) = tokens::find_refresh_for_update(&mut tx, &request.presented.hash()).await?
    else {
        audit_refresh_failure(&mut tx, None, "unknown_token").await?;
        tx.commit().await?;
        return Err(invalid());
    };
    // An agent's session belongs to its API key: refreshing it needs that key too, so a stolen
    // refresh token alone is not enough, and revoking the key ends its sessions' refreshes.
    // A session an OAuth client's code started belongs to that client the same way.
    let session_client_ok = match bulkhead_core::OAuthClientId::parse(&found.session.client_id) {
        Ok(owner) => request.oauth_client == Some(owner),
        Err(_) => {
            request.oauth_client.is_none()
                && match (request.client, found.session.principal_type) {
                    (Some(key), _) => key.key_id.to_string() == found.session.client_id,
                    (None, PrincipalType::User) => true,
                    (None, PrincipalType::Agent) => false,
                }
        }
    };
    if !session_client_ok {
        audit_refresh_failure(&mut tx, Some(&found), "client_mismatch").await?;
        tx.commit().await?;
        return Err(GrantError::InvalidClient);
    }
    match found.status {
        RefreshStatus::Active => {
            // A refresh is a use: it keeps a dynamically registered client alive.
            if let Some(client) = request.oauth_client {
                bulkhead_store::tenant::oauth::touch_client(&mut tx, client, now).await?;
            }
        }
        RefreshStatus::Revoked => {
            audit_refresh_failure(&mut tx, Some(&found), "revoked").await?;
            tx.commit().await?;
            return Err(invalid());
        }
        RefreshStatus::Rotated(at) => {
            let policy = tokens::token_policy(&mut tx).await?;
            let race = now - at
                <= chrono::Duration::seconds(i64::from(policy.refresh_reuse_interval_seconds));
            if race && policy.refresh_reuse_interval_seconds > 0 {
                audit_refresh_failure(&mut tx, Some(&found), "reused_within_interval").await?;
                tx.commit().await?;
                return Err(invalid());
            }
            // A rotated token presented again: whoever holds it, the family is compromised.
            let session = found.session.id;
            let ending = Ending {
                reason: EndReason::ReuseDetected,
                action: "security.refresh_token_reuse",
                outcome: Outcome::Blocked,
                meta: json!({
                    "principal_id": found.session.principal_id,
                    "client_id": found.session.client_id,
                    "rotated_at": at,
                }),
            };
            end_audited(issuer.tokens, issuer.clock, &mut tx, session, ending).await?;
            // The tenant's security alert, in the same transaction: no alert without the
            // revocation, no revocation without the alert.
            bulkhead_store::tenant::webhooks::enqueue_platform_event(
                &mut tx,
                "security.refresh_token_reuse",
                json!({
                    "session_id": session.to_string(),
                    "principal_id": found.session.principal_id,
                    "client_id": found.session.client_id,
                    "rotated_at": at,
                    "detected_at": now,
                    "action_taken": "session_revoked",
                }),
            )
            .await?;
            tx.commit().await?;
            issuer.tokens.deny_session_locally(tenant, session);
            AuditLine::blocked("security.refresh_token_reuse")
                .tenant(tenant)
                .actor(&found.session.principal_id)
                .with(Detail::Resource, session)
                .warn("refresh token reuse: session revoked");
            return Err(invalid());
        }
    }
    if !found.session.is_live(now) {
        audit_refresh_failure(&mut tx, Some(&found), "session_ended").await?;
        tx.commit().await?;
        return Err(invalid());
    }
    if found.session.principal_type == PrincipalType::User {
        let user_ok = match UserId::parse(&found.session.principal_id) {
            Ok(id) => users::get(&mut tx, id)
                .await
                .map(|u| u.status == UserStatus::Active)
                .or_else(|e| match e {
                    bulkhead_store::StoreError::NotFound => Ok(false),
                    other => Err(other),
                })?,
            Err(_) => false,
        };
        if !user_ok {
            audit_refresh_failure(&mut tx, Some(&found), "user_disabled").await?;
            tx.commit().await?;
            return Err(invalid());
        }
    }
    // What the session may grant now: its scopes cut to its principals' roles (a user's role
    // narrowed since login narrows the next access token, not only its use).
    let Some(session_scopes) =
        crate::service::ceilings::session_scopes(&mut tx, &found.session, issuer.clock.now())
            .await?
    else {
        audit_refresh_failure(&mut tx, Some(&found), "principal_inactive").await?;
        tx.commit().await?;
        return Err(invalid());
    };
    // The audience stays the session's: a resource's session refreshes for that resource only,
    // with at most what the resource accepts now; Bulkhead's own API's sessions name none.
    let link =
        bulkhead_store::tenant::oauth_grants::session_link(&mut tx, found.session.id).await?;
    let (grant_id, resource) = (link.grant, link.resource);
    // The issuer names Bulkhead's own API (the session's resource `None`).
    let deployment = &issuer.tokens.settings().issuer;
    let own_api = |asked: &str| super::is_own_api(deployment, request.tenant_issuer, asked);
    if request.resource.is_some_and(|asked| {
        if own_api(asked) {
            resource.is_some()
        } else {
            Some(asked) != resource.as_deref()
        }
    }) {
        tx.rollback().await?;
        return Err(GrantError::InvalidTarget(
            "a refresh keeps the audience it was issued for".into(),
        ));
    }
    let session_scopes = match &resource {
        Some(identifier) => {
            match bulkhead_store::tenant::oauth_resources::by_identifier(&mut tx, identifier)
                .await?
            {
                Some(registered) => session_scopes.intersection(&registered.scope_set()),
                None => {
                    audit_refresh_failure(&mut tx, Some(&found), "resource_gone").await?;
                    tx.commit().await?;
                    return Err(invalid());
                }
            }
        }
        None => session_scopes,
    };
    // A session started under a remembered consent refreshes with at most what the consent
    // holds now (narrowing it reaches the family); a revoked consent ends the family.
    // A consent holding `openid` keeps a family alive without permissions (it serves userinfo).
    let mut openid = false;
    let session_scopes = match grant_id {
        None => session_scopes,
        Some(id) => match bulkhead_store::tenant::oauth_grants::get_key_share(&mut tx, id).await? {
            Some(grant) => {
                openid = super::oidc::granted_now(
                    &grant.identity_scopes,
                    link.identity_scopes.as_deref(),
                )
                .openid();
                if link.identity_scopes.is_none() {
                    bulkhead_store::tenant::oauth_grants::settle_session_identity_scopes(
                        &mut tx,
                        found.session.id,
                        &grant.identity_scopes,
                    )
                    .await?;
                }
                session_scopes.intersection(&grant.scope_set())
            }
            None => {
                let session = found.session.id;
                let ending = Ending {
                    reason: EndReason::Revoked,
                    action: "auth.session_end",
                    outcome: Outcome::Success,
                    meta: json!({ "reason": "grant_revoked", "grant_id": id }),
                };
                end_audited(issuer.tokens, issuer.clock, &mut tx, session, ending).await?;
                audit_refresh_failure(&mut tx, Some(&found), "grant_revoked").await?;
                tx.commit().await?;
                issuer.tokens.deny_session_locally(tenant, session);
                return Err(invalid());
            }
        },
    };
    if session_scopes.is_empty() && !openid {
        audit_refresh_failure(&mut tx, Some(&found), "nothing_granted").await?;
        tx.commit().await?;
        return Err(invalid());
    }
    let scopes = match granted_scopes(request.scope, &session_scopes) {
        Ok(scopes) => scopes,
        Err(err) => {
            tx.rollback().await?;
            return Err(err);
        }
    };
    tokens::mark_rotated(&mut tx, &found, now).await?;
    let next = RefreshToken::generate(*tenant.uuid().as_bytes());
    tokens::insert_refresh_token(&mut tx, found.session.id, &next.hash(), now).await?;
    let issued = issuer
        .tokens
        .issue_for(
            &Grant {
                tenant_id: tenant,
                issuer: request.tenant_issuer,
                subject: &found.session.principal_id,
                human: found.session.principal_type == PrincipalType::User,
                client_id: &found.session.client_id,
                scopes: &scopes,
                session_id: Some(found.session.id),
                act: None,
                resource_prefix: None,
                not_after: None,
                delegated_from: Vec::new(),
                // An agent's session is refreshed with its key: the key's allowlist binds the token.
                allowed_networks: request
                    .client
                    .map(|key| vec![key.allowed_ips.clone()])
                    .unwrap_or_default(),
                derived_keys: Vec::new(),
            },
            resource.as_deref(),
        )
        .map_err(|_| GrantError::Unavailable)?;
    audit::record(
        &mut tx,
        "auth.token_refresh",
        Some(&found.session.id.to_string()),
        Outcome::Success,
        json!({ "principal_id": found.session.principal_id, "jti": issued.claims.jti }),
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedTokens {
        access: issued,
        refresh: Some(next),
        scopes,
        session_id: Some(found.session.id),
    })
}

async fn audit_refresh_failure(
    tx: &mut bulkhead_store::TenantTx,
    found: Option<&PresentedRefresh>,
    reason: &'static str,
) -> Result<(), bulkhead_store::StoreError> {
    audit::record(
        tx,
        "auth.token_refresh",
        found.map(|f| f.session.id.to_string()).as_deref(),
        Outcome::Failure,
        json!({ "reason": reason }),
    )
    .await?;
    Ok(())
}
