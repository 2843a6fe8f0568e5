//! `grant_type=authorization_code` (OAuth 2.1 §4.1.3): the code names its tenant, which must
//! agree with the host; the client authenticates by its registered method;
//! [`crate::service::oauth::authorization_code`] checks the code, its redirect URI and PKCE
//! verifier, and mints.

use axum::http::header;
use bulkhead_auth::AuthorizationCode;
use bulkhead_core::TenantId;

use super::client_auth::{authenticate_oauth_client, named_oauth_client};
use super::{claimed_tenant, grant_error, issuer, tenant_issuer, GrantRequest, TokenResponse};
use crate::http::error::OAuthError;
use crate::service::oauth::authorization_code::{self, CodeExchange, INVALID_CODE};

pub(super) async fn grant(grant: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    let state = grant.state;
    let form = grant.form;
    let basic = grant.auth.as_ref().is_some_and(|a| a.basic);
    let Some(client_id) = named_oauth_client(grant.auth.as_ref(), form) else {
        return Err(OAuthError::invalid_client(basic));
    };
    let text = form
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let redirect_uri = form
        .get("redirect_uri")
        .ok_or_else(|| OAuthError::invalid_request("redirect_uri is required"))?;
    let code_verifier = form
        .get("code_verifier")
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
    let code =
        AuthorizationCode::parse(text).map_err(|_| OAuthError::invalid_grant(INVALID_CODE))?;
    let claimed = TenantId::from_uuid(uuid::Uuid::from_bytes(code.tenant()));
    let tenant = claimed_tenant(state, claimed, grant.host_tenant, || {
        OAuthError::invalid_grant(INVALID_CODE)
    })
    .await?;
    let client_id = client_id.id_in(tenant.id);
    let client = authenticate_oauth_client(state, &tenant, client_id, grant.auth.as_ref()).await?;
    let tenant_issuer = tenant_issuer(state, &tenant);
    let request = CodeExchange {
        tenant: tenant.id,
        tenant_issuer: &tenant_issuer,
        code: &code,
        client: &client,
        redirect_uri,
        code_verifier,
        resource: form.get("resource"),
        client_ip: grant.client_ip,
        user_agent: grant
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    };
    let (issued, id_token) = authorization_code::exchange(issuer(state), &request)
        .await
        .map_err(|err| grant_error(err, basic))?;
    let mut response = TokenResponse::new(issued, None);
    response.id_token = id_token;
    Ok(response)
}
