//! `grant_type=client_credentials` (RFC 6749 §4.4): the client authenticates with its API key;
//! [`crate::service::oauth::client_credentials`] decides and mints.

use axum::http::header;

use super::client_auth::authenticate_client;
use super::{issuer, tenant_issuer, GrantRequest, TokenResponse};
use crate::http::error::OAuthError;
use crate::service::oauth::client_credentials::{self, ClientCredentials};

pub(super) async fn grant(request: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    let GrantRequest {
        state,
        form,
        auth,
        host_tenant,
        client_ip,
        headers,
    } = request;
    let Some(auth) = auth else {
        return Err(OAuthError::invalid_client(false));
    };
    let (key, tenant) = authenticate_client(state, &auth, host_tenant, client_ip).await?;
    let tenant_issuer = tenant_issuer(state, &tenant);
    let request = ClientCredentials {
        key: &key,
        tenant: tenant.id,
        tenant_issuer: &tenant_issuer,
        scope: form.get("scope"),
        resource: form.get("resource"),
        client_ip,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    };
    // An inactive principal is `invalid_client` without a Basic challenge, however the client
    // authenticated.
    let issued = client_credentials::issue(issuer(state), &request).await?;
    Ok(TokenResponse::new(issued, None))
}
