//! `grant_type=refresh_token` (RFC 6749 §6): the refresh token names its tenant, which must
//! agree with the host; an agent's session also needs its key as the client.
//! [`crate::service::oauth::refresh_token`] rotates and mints.

use bulkhead_auth::RefreshToken;

use super::client_auth::{authenticate_client, authenticate_oauth_client, named_oauth_client};
use super::{grant_error, issuer, refresh_tenant, tenant_issuer, GrantRequest, TokenResponse};
use crate::http::error::OAuthError;
use crate::service::oauth::refresh_token::{self, Refresh, INVALID_REFRESH};

pub(super) async fn grant(grant: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    let state = grant.state;
    let text = grant
        .form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    let presented =
        RefreshToken::parse(text).map_err(|_| OAuthError::invalid_grant(INVALID_REFRESH))?;
    let tenant = refresh_tenant(state, &presented, grant.host_tenant).await?;
    // A session an OAuth client's code started is refreshed by that client only, authenticated
    // by its registered method (a public client by its id alone, as OAuth 2.1 §4.3 allows).
    let oauth_client = match named_oauth_client(grant.auth.as_ref(), grant.form) {
        Some(id) => Some(
            authenticate_oauth_client(state, &tenant, id.id_in(tenant.id), grant.auth.as_ref())
                .await?
                .id,
        ),
        None => None,
    };
    let client = match &grant.auth {
        Some(_) if oauth_client.is_some() => None,
        Some(auth) => Some(
            authenticate_client(state, auth, Some(tenant.clone()), grant.client_ip)
                .await?
                .0,
        ),
        None => None,
    };
    let tenant_issuer = tenant_issuer(state, &tenant);
    let request = Refresh {
        presented: &presented,
        tenant: tenant.id,
        tenant_issuer: &tenant_issuer,
        client: client.as_ref(),
        oauth_client,
        scope: grant.form.get("scope"),
        resource: grant.form.get("resource"),
    };
    let basic = grant.auth.as_ref().is_some_and(|a| a.basic);
    let issued = refresh_token::refresh(issuer(state), &request)
        .await
        .map_err(|err| grant_error(err, basic))?;
    Ok(TokenResponse::new(issued, None))
}
