//! `POST /oauth/revoke` (RFC 7009): revokes an access or refresh token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bulkhead_auth::{RefreshToken, TokenError};

use super::client_auth::{authenticate_client, client_auth};
use super::form::{Form, FormRequest};
use super::{issuer, oauth_host_tenant, refresh_tenant, request_ip};
use crate::http::error::{no_store, OAuthError};
use crate::http::resolve::is_access_token;
use crate::http::state::AppState;
use crate::service::oauth::revocation;
use crate::service::tokens::TokenRefusal;

fn ok_no_store() -> Response {
    let mut response = StatusCode::OK.into_response();
    no_store(response.headers_mut());
    response
}

pub(super) async fn revoke(State(state): State<AppState>, request: FormRequest) -> Response {
    match revoke_inner(&state, &request).await {
        Ok(()) => ok_no_store(),
        Err(err) => err.into_response(),
    }
}

/// RFC 7009: revokes an access or refresh token. Possession suffices (revoking only ever takes
/// authority away); a client that authenticates must do so correctly. An unknown, invalid or
/// already revoked token is not an error (§2.2): the answer is 200 either way, so the endpoint
/// tells nobody whether a token existed.
async fn revoke_inner(state: &AppState, request: &FormRequest) -> Result<(), OAuthError> {
    let (peer, headers) = (request.peer, &request.headers);
    let form = Form::parse(headers, &request.body)?;
    let text = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let host = oauth_host_tenant(state, headers).await?;
    if let Some(auth) = client_auth(headers, &form)? {
        let client_ip = request_ip(state, peer, headers);
        authenticate_client(state, &auth, host.clone(), client_ip).await?;
    }
    if is_access_token(text) {
        // A token for a protected resource (its `aud` a resource's identifier) is revoked like
        // one for Bulkhead's own API: its signature and every other claim still verify, and its
        // audience needs no registration check, since revoking only takes authority away.
        let verified = match state.tokens().verify(text) {
            Err(TokenRefusal::Invalid(TokenError::Audience)) => {
                let aud = bulkhead_auth::token::unverified_claims(text)
                    .and_then(|claims| claims.get("aud")?.as_str().map(str::to_owned));
                aud.map_or(Err(TokenRefusal::Invalid(TokenError::Audience)), |aud| {
                    state.tokens().verify_for(text, Some(&aud))
                })
            }
            other => other,
        };
        let Ok(token) = verified else {
            return Ok(());
        };
        // Another tenant's token (its `tenant_id`, or its issuer) is not revoked from here.
        let other_tenant = |t: &bulkhead_store::placement::registry::Tenant| {
            t.id != token.tenant_id || token.claims.iss != super::tenant_issuer(state, t)
        };
        if host.as_ref().is_some_and(other_tenant) {
            return Ok(());
        }
        revocation::revoke_access_token(issuer(state), &token).await?;
        return Ok(());
    }
    let Ok(presented) = RefreshToken::parse(text) else {
        return Ok(());
    };
    let Ok(tenant) = refresh_tenant(state, &presented, host).await else {
        return Ok(());
    };
    revocation::revoke_refresh_token(issuer(state), tenant.id, &presented).await?;
    Ok(())
}
