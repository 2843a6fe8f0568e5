//! `POST /oauth/introspect` (RFC 7662): what a token of the client's own tenant is.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bulkhead_auth::RefreshToken;
use bulkhead_core::RequestId;
use serde_json::json;

use super::client_auth::{authenticate_client, client_auth};
use super::form::{Form, FormRequest};
use super::{issuer, oauth_host_tenant, request_ip};
use crate::http::error::{no_store, ApiError, OAuthError};
use crate::http::resolve::is_access_token;
use crate::http::state::AppState;
use crate::service::oauth::introspection::{refresh_token_standing, registered_resource};
use crate::service::tokens::scope_text;

pub(super) async fn introspect(State(state): State<AppState>, request: FormRequest) -> Response {
    match introspect_inner(&state, &request).await {
        Ok(value) => {
            let mut response = axum::Json(value).into_response();
            no_store(response.headers_mut());
            response
        }
        Err(err) => err.into_response(),
    }
}

/// RFC 7662: what a token is, for a client of the same tenant (authenticated with its API key).
/// Another tenant's token, and any token that is invalid, expired or revoked, is
/// `{"active": false}` and nothing else.
async fn introspect_inner(
    state: &AppState,
    request: &FormRequest,
) -> Result<serde_json::Value, OAuthError> {
    let (peer, headers) = (request.peer, &request.headers);
    let form = Form::parse(headers, &request.body)?;
    let host = oauth_host_tenant(state, headers).await?;
    let Some(auth) = client_auth(headers, &form)? else {
        return Err(OAuthError::invalid_client(false));
    };
    let client_ip = request_ip(state, peer, headers);
    let (key, tenant) = authenticate_client(state, &auth, host, client_ip).await?;
    let text = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let inactive = json!({ "active": false });
    if is_access_token(text) {
        // A token for a protected resource (RFC 8707 `aud`) is judged for that resource, which
        // must be registered in the client's tenant; any other `aud` must be Bulkhead's own
        // API's. The claim read here only picks the expectation: the verifier checks it.
        let claimed_aud = bulkhead_auth::token::unverified_claims(text)
            .and_then(|claims| claims.get("aud")?.as_str().map(str::to_owned));
        let resource = match claimed_aud {
            Some(aud) if aud != state.config().tokens.audience => {
                match registered_resource(issuer(state), tenant.id, &key, &aud).await? {
                    Some(resource) => Some(resource),
                    None => return Ok(inactive),
                }
            }
            _ => None,
        };
        // Exactly the resolver's decision (crate::http::resolve::authorize_access_token): a token the
        // API would refuse is inactive here, and the scope reported is what it may do now.
        let standing = match crate::http::resolve::authorize_access_token(
            state,
            text,
            Some(tenant.clone()),
            crate::http::resolve::TokenUse::Introspection(
                resource.as_ref().map(|r| r.identifier.as_str()),
            ),
            RequestId::new(),
        )
        .await
        {
            Ok(standing) => standing,
            Err(ApiError::Unavailable) => return Err(OAuthError::unavailable()),
            Err(_) => return Ok(inactive),
        };
        // A resource's token may do no more than the resource accepts now.
        let effective = standing
            .ctx
            .actor()
            .scopes()
            .map(|scopes| match &resource {
                Some(resource) => scope_text(&scopes.intersection(&resource.scope_set())),
                None => scope_text(scopes),
            })
            .unwrap_or_default();
        let c = &standing.token.claims;
        let mut answer = json!({
            "active": true,
            "token_type": "Bearer",
            "scope": effective,
            "client_id": c.client_id,
            "sub": c.sub,
            "sub_type": c.sub_type,
            "aud": c.aud,
            "iss": c.iss,
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "jti": c.jti,
            "tenant_id": c.tenant_id,
            "sid": c.sid,
            "act": c.act,
            "resource_prefix": c.resource_prefix,
        });
        // A resource server enforces the network restrictions of the keys the token comes from
        // as the API does: its caller's address must lie in a network of every list. Those
        // copied at mint, and the keys' allowlists as they are now (a narrowed key binds).
        let mut networks = c.allowed_networks.clone();
        for list in &standing.networks {
            let list: Vec<String> = list.iter().map(ToString::to_string).collect();
            if !networks.contains(&list) {
                networks.push(list);
            }
        }
        if !networks.is_empty() {
            answer["allowed_networks"] = json!(networks);
        }
        return Ok(answer);
    }
    let Ok(presented) = RefreshToken::parse(text) else {
        return Ok(inactive);
    };
    if presented.tenant() != *tenant.id.uuid().as_bytes() {
        return Ok(inactive);
    }
    let Some((s, effective)) =
        refresh_token_standing(issuer(state), tenant.id, &key, &presented).await?
    else {
        return Ok(inactive);
    };
    Ok(json!({
        "active": true,
        "token_type": "refresh_token",
        "scope": scope_text(&effective),
        "client_id": s.client_id,
        "sub": s.principal_id,
        "exp": s.expires_at.min(s.idle_expires_at).timestamp(),
        "iat": s.created_at.timestamp(),
        "tenant_id": tenant.id.to_string(),
        "sid": s.id.to_string(),
    }))
}
