//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): delegation. This
//! side checks the subject token and finds out who the actor is;
//! [`crate::service::oauth::token_exchange`] narrows (every hop only narrows: see its doc),
//! audits and mints.
//!
//! # Who the actor is
//! - `actor_token` with `actor_token_type` `urn:ietf:params:oauth:token-type:access_token` (the
//!   sub-agent's own access token) or `urn:bulkhead:params:oauth:token-type:api_key` (its key);
//! - else the authenticated client (HTTP Basic or body credentials: the sub-agent's API key);
//! - else `audience`: the principal name of a sub-agent that holds no credential here; then only
//!   the subject's authority bounds the token (it can only shrink, never be pooled with anyone
//!   else's). For a protected resource's subject token, an `audience` equal to the resource's
//!   identifier only confirms the audience and names no actor.
//!
//! # A protected resource's token as subject (RFC 8707)
//! A subject token whose `aud` is not Bulkhead's own API is verified for that audience, which
//! must be a protected resource registered in the token's tenant now (else `invalid_grant`,
//! as for any unusable subject token); its scopes are cut to the resource's current ones. The
//! exchanged token is for the same resource: the service refuses any other target.

use std::net::IpAddr;

use bulkhead_core::{RequestId, ScopeSet};
use bulkhead_store::placement::registry::Tenant;

use super::client_auth::{authenticate_client, ClientAuth};
use super::form::Form;
use super::{issuer, GrantRequest, TokenResponse};
use crate::http::error::{ApiError, OAuthError};
use crate::http::resolve::authenticate_api_key;
use crate::http::state::AppState;
use crate::service::oauth::token_exchange::{self, Delegate, Exchange};
use crate::service::tokens::VerifiedToken;

/// RFC 8693 token type of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Bulkhead's token type for an API key presented as `actor_token`.
pub const API_KEY_TYPE: &str = "urn:bulkhead:params:oauth:token-type:api_key";

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
    resource: Option<&str>,
    what: &'static str,
) -> Result<(VerifiedToken, ScopeSet, Tenant), OAuthError> {
    let used = match resource {
        Some(resource) => crate::http::resolve::TokenUse::ResourceSubject(client_ip, resource),
        None => crate::http::resolve::TokenUse::Request(client_ip),
    };
    match crate::http::resolve::authorize_access_token(state, text, tenant, used, RequestId::new())
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

/// The actor's effective scopes when it presents an API key (as client or as `actor_token`).
async fn key_scopes(
    state: &AppState,
    key: &crate::service::credentials::VerifiedKey,
) -> Result<ScopeSet, OAuthError> {
    effective_or_refuse(
        crate::service::ceilings::key_scopes(
            state.ceilings(),
            state.store(),
            state.clock().now(),
            key,
        )
        .await,
    )
}

/// Who acts: see the module doc.
async fn delegate(
    state: &AppState,
    form: &Form,
    audience: Option<&str>,
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
                    None,
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
                let scopes = key_scopes(state, &key).await?;
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
        let scopes = key_scopes(state, &key).await?;
        return Ok(Delegate {
            principal: key.principal,
            client_id: Some(key.key_id.to_string()),
            scopes: Some(scopes),
            token: None,
            networks: vec![key.allowed_ips],
        });
    }
    match audience {
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

pub(super) async fn grant(request: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    let GrantRequest {
        state,
        form,
        auth,
        host_tenant: host,
        client_ip,
        ..
    } = request;
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
    // A token for a protected resource is judged for that resource: the claim read here only
    // picks the expectation, the verifier checks it.
    let claimed_aud = bulkhead_auth::token::unverified_claims(subject_text)
        .and_then(|claims| claims.get("aud")?.as_str().map(str::to_owned))
        .filter(|aud| *aud != state.config().tokens.audience);
    let (mut subject, scopes, tenant) = authorize_token(
        state,
        subject_text,
        host,
        client_ip,
        claimed_aud.as_deref(),
        "subject token",
    )
    .await?;
    // The verified `aud` must still be a resource of the token's tenant.
    let subject_resource = match claimed_aud {
        None => None,
        Some(_) => match token_exchange::subject_resource(issuer(state), tenant.id, &subject).await
        {
            Ok(Some(resource)) => Some(resource),
            Ok(None) => {
                return Err(OAuthError::invalid_grant(
                    "the subject token is invalid, expired or revoked, or not of this tenant",
                ))
            }
            Err(_) => return Err(OAuthError::unavailable()),
        },
    };
    // A resource's token may pass on no more than the resource accepts now.
    subject.scopes = match &subject_resource {
        Some(resource) => scopes.intersection(&resource.scope_set()),
        None => scopes,
    };
    let identifier = subject_resource.as_ref().map(|r| r.identifier.as_str());
    // An `audience` that repeats the resource's identifier confirms the audience: no actor name.
    let actor_name = form.get("audience").filter(|a| Some(*a) != identifier);
    let actor = delegate(state, form, actor_name, auth, &tenant, client_ip).await?;
    let tenant_issuer = super::tenant_issuer(state, &tenant);
    let request = Exchange {
        subject: &subject,
        actor: &actor,
        tenant: tenant.id,
        tenant_issuer: &tenant_issuer,
        scope: form.get("scope"),
        resource_prefix: form.get("resource_prefix"),
        max_delegation_depth: state.config().tokens.max_delegation_depth,
        subject_resource: identifier,
        resource: form.get("resource"),
        audience: form.get("audience"),
    };
    let issued = token_exchange::exchange(issuer(state), &request).await?;
    Ok(TokenResponse::new(issued, Some(ACCESS_TOKEN_TYPE)))
}
