//! The client-credentials grant (RFC 6749 §4.4): an API key, authenticated by the caller, gets
//! an access token bounded by its agent's roles, and a refresh token when the tenant's policy
//! gives agents sessions. With an RFC 8707 `resource` naming a protected resource the tenant
//! registered, the token is for that resource (`aud`) and holds only scopes it accepts.

use std::net::IpAddr;

use bulkhead_core::{Credential, RequestId, TenantContext, TenantId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::oauth_resources;
use bulkhead_store::tenant::tokens::{self, NewAuthSession, PrincipalType};
use bulkhead_store::{Access, TenantTx};
use serde_json::json;

use super::{granted_scopes, GrantError, IssuedTokens, Issuer};
use crate::service::credentials::VerifiedKey;
use crate::service::tokens::Grant;

/// A client-credentials request from an authenticated client.
#[derive(Debug)]
pub struct ClientCredentials<'a> {
    /// The client's key, verified against the host's tenant.
    pub key: &'a VerifiedKey,
    /// The key's tenant.
    pub tenant: TenantId,
    /// Its issuer (the tokens' `iss`).
    pub tenant_issuer: &'a str,
    /// The `scope` parameter, when sent.
    pub scope: Option<&'a str>,
    /// The `resource` parameter (RFC 8707), when sent: a protected resource registered in the
    /// key's tenant, or the issuer (Bulkhead's own API, as without it).
    pub resource: Option<&'a str>,
    /// The caller's address.
    pub client_ip: Option<IpAddr>,
    /// The caller's `User-Agent`, recorded with the session.
    pub user_agent: Option<&'a str>,
}

/// Issues the tokens, audited as `auth.token_issue` whether granted or refused.
pub async fn issue(
    issuer: Issuer<'_>,
    request: &ClientCredentials<'_>,
) -> Result<IssuedTokens, GrantError> {
    let key = request.key;
    let ctx = TenantContext::for_credential(
        request.tenant,
        Credential::ApiKey {
            key_id: key.key_id,
            scopes: key.scopes.clone(),
        },
        RequestId::new(),
    );
    // The key's agent's roles bound what the token may hold, as they bound the key itself.
    let held = crate::service::ceilings::key_scopes(
        issuer.ceilings,
        issuer.store,
        issuer.clock.now(),
        key,
    )
    .await
    .map_err(|_| GrantError::Unavailable)?;
    let mut tx = issuer.store.begin(&ctx, Access::ReadWrite).await?;
    let Some(held) = held else {
        return refused(tx, key, "principal_inactive", GrantError::InvalidClient).await;
    };
    // The audience: a registered resource of this tenant (looked up under its row-level
    // security, so another tenant's identifier is as unknown as one never registered), or
    // Bulkhead's own API. The token then holds only what the resource accepts.
    let target = match request.resource {
        None => None,
        Some(asked)
            if super::is_own_api(
                &issuer.tokens.settings().issuer,
                request.tenant_issuer,
                asked,
            ) =>
        {
            None
        }
        Some(asked) if super::is_malformed_resource(asked) => {
            return refused(tx, key, "invalid_target", unknown_resource()).await;
        }
        Some(asked) => match oauth_resources::by_identifier(&mut tx, asked).await? {
            Some(resource) => Some(resource),
            None => return refused(tx, key, "invalid_target", unknown_resource()).await,
        },
    };
    let held = match &target {
        Some(resource) => {
            let shared = held.intersection(&resource.scope_set());
            if shared.is_empty() {
                let err = GrantError::InvalidScope(
                    "the client holds no scope the resource accepts".into(),
                );
                return refused(tx, key, "no_common_scope", err).await;
            }
            shared
        }
        None => held,
    };
    let audience = target.as_ref().map(|r| r.identifier.as_str());
    let scopes = match granted_scopes(request.scope, &held) {
        Ok(scopes) => scopes,
        Err(err) => return refused(tx, key, "invalid_scope", err).await,
    };
    let client_id = key.key_id.to_string();
    // A key of an agent issues tokens whose subject is the agent itself: its roles then bound
    // the token (and every token delegated from it) at each use.
    let subject = match bulkhead_store::tenant::rbac::key_agent(&mut tx, key.key_id).await? {
        Some(agent) => agent.to_string(),
        None => key.principal.clone(),
    };
    let now = issuer.clock.now();
    let policy = tokens::token_policy(&mut tx).await?;
    let (session_id, refresh) = if policy.agent_refresh_tokens {
        let (session, refresh) = crate::service::auth_sessions::start(
            &mut tx,
            &NewAuthSession {
                principal_type: PrincipalType::Agent,
                principal_id: &key.principal,
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
        // Its refreshes keep the audience; deleting the resource ends the session.
        if let Some(resource) = audience {
            bulkhead_store::tenant::oauth_grants::set_session_resource(
                &mut tx, session.id, resource,
            )
            .await?;
        }
        (Some(session.id), Some(refresh))
    } else {
        (None, None)
    };
    let issued = issuer
        .tokens
        .issue_for(
            &Grant {
                tenant_id: request.tenant,
                issuer: request.tenant_issuer,
                subject: &subject,
                human: false,
                client_id: &client_id,
                scopes: &scopes,
                session_id,
                act: None,
                resource_prefix: None,
                not_after: None,
                delegated_from: Vec::new(),
                // The key's allowlist binds every token minted from it, and every token derived
                // from those (refresh, exchange).
                allowed_networks: vec![key.allowed_ips.clone()],
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
            "grant_type": "client_credentials",
            "scope": issued.claims.scope,
            "session_id": session_id.map(|s| s.to_string()),
            "resource": audience,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedTokens {
        access: issued,
        refresh,
        scopes,
        session_id,
    })
}

/// One refusal for a `resource` that is malformed, unknown, or another tenant's.
fn unknown_resource() -> GrantError {
    GrantError::InvalidTarget("resource is not a protected resource of this organisation".into())
}

/// A refused grant: its `auth.token_issue` failure event is committed before `err` is answered.
async fn refused(
    mut tx: TenantTx,
    key: &VerifiedKey,
    reason: &str,
    err: GrantError,
) -> Result<IssuedTokens, GrantError> {
    audit::record(
        &mut tx,
        "auth.token_issue",
        Some(&key.key_id.to_string()),
        Outcome::Failure,
        json!({ "grant_type": "client_credentials", "reason": reason }),
    )
    .await?;
    tx.commit().await?;
    Err(err)
}
