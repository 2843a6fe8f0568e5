//! Client authentication (RFC 6749 §2.3): HTTP Basic (`client_id` = the API key's id,
//! `client_secret` = the key) or `client_id`/`client_secret` in the body, never both. A client
//! is an API key of the host's tenant.

use std::net::IpAddr;

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bulkhead_store::placement::registry::Tenant;
use zeroize::Zeroizing;

use super::form::Form;
use crate::http::error::{ApiError, OAuthError};
use crate::http::resolve::authenticate_api_key;
use crate::http::state::AppState;
use crate::service::audit_line::{AuditLine, Detail};
use crate::service::credentials::VerifiedKey;

/// Client credentials as presented.
pub(crate) struct ClientAuth {
    client_id: Option<String>,
    secret: Zeroizing<String>,
    /// Sent with HTTP Basic: then `invalid_client` answers with a Basic challenge.
    pub(crate) basic: bool,
}

fn form_decode(text: &str) -> Zeroizing<String> {
    let encoded = Zeroizing::new(format!("v={text}"));
    Zeroizing::new(
        form_urlencoded::parse(encoded.as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default(),
    )
}

/// HTTP Basic (RFC 6749 §2.3.1: both parts form-encoded) or body parameters, never both.
pub(crate) fn client_auth(
    headers: &HeaderMap,
    form: &Form,
) -> Result<Option<ClientAuth>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let header_value = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let body_secret = form.get("client_secret");
    match header_value {
        Some(value) => {
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            let text = value
                .to_str()
                .map_err(|_| OAuthError::invalid_client(true))?;
            let Some((scheme, encoded)) = text.split_once(' ') else {
                return Err(OAuthError::invalid_client(true));
            };
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::invalid_client(true));
            }
            let decoded = Zeroizing::new(
                STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| OAuthError::invalid_client(true))?,
            );
            let decoded =
                std::str::from_utf8(&decoded).map_err(|_| OAuthError::invalid_client(true))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| OAuthError::invalid_client(true))?;
            let id = form_decode(id);
            if form
                .get("client_id")
                .is_some_and(|body_id| body_id != id.as_str())
            {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the Basic credentials",
                ));
            }
            Ok(Some(ClientAuth {
                client_id: Some(id.to_string()),
                secret: form_decode(secret),
                basic: true,
            }))
        }
        None => Ok(body_secret.map(|secret| ClientAuth {
            client_id: form.get("client_id").map(str::to_owned),
            secret: Zeroizing::new(secret.to_owned()),
            basic: false,
        })),
    }
}

/// Authenticates a client by its API key: the key must verify, agree with the host's tenant,
/// and be the key `client_id` names (when it names one).
pub(crate) async fn authenticate_client(
    state: &AppState,
    auth: &ClientAuth,
    host_tenant: Option<Tenant>,
    client_ip: Option<IpAddr>,
) -> Result<(VerifiedKey, Tenant), OAuthError> {
    let (key, tenant) = authenticate_api_key(state, &auth.secret, host_tenant, client_ip)
        .await
        .map_err(|err| match err {
            ApiError::Unavailable => OAuthError::unavailable(),
            ApiError::TenantSuspended => OAuthError::unauthorized_client("the tenant is suspended"),
            _ => OAuthError::invalid_client(auth.basic),
        })?;
    if auth
        .client_id
        .as_deref()
        .is_some_and(|id| id != key.key_id.to_string())
    {
        AuditLine::failure("auth.failure")
            .tenant(tenant.id)
            .actor(key.key_id)
            .with(Detail::Reason, "ClientIdMismatch")
            .warn("client_id does not name the presented key");
        return Err(OAuthError::invalid_client(auth.basic));
    }
    state.verifier().record_use(&key, client_ip);
    Ok((key, tenant))
}

/// An OAuth client as a token request names it.
#[derive(Debug, Clone)]
pub(crate) enum NamedClient {
    /// By its `oac_…` id.
    Id(bulkhead_core::OAuthClientId),
    /// By the URL of its client ID metadata document.
    Document(String),
}

impl NamedClient {
    /// Its id in `tenant` (a document's is derived from the tenant and the URL).
    pub(crate) fn id_in(&self, tenant: bulkhead_core::TenantId) -> bulkhead_core::OAuthClientId {
        match self {
            NamedClient::Id(id) => *id,
            NamedClient::Document(url) => {
                crate::service::oauth::metadata_document::client_id_for(tenant, url)
            }
        }
    }
}

/// The OAuth client a token request names (HTTP Basic's id, else the body's `client_id`), if it
/// names one by an `oac_…` id or a metadata document's URL rather than an API key. The token
/// endpoint never fetches a document: the client was stored when the user consented.
pub(crate) fn named_oauth_client(auth: Option<&ClientAuth>, form: &Form) -> Option<NamedClient> {
    use crate::service::oauth::metadata_document::check_url;
    let id = match auth.and_then(|a| a.client_id.as_deref()) {
        Some(id) => id,
        None => form.get("client_id")?,
    };
    match bulkhead_core::OAuthClientId::parse(id) {
        Ok(id) => Some(NamedClient::Id(id)),
        Err(_) => check_url(id)
            .ok()
            .map(|_| NamedClient::Document(id.to_owned())),
    }
}

/// Authenticates a registered OAuth client of `tenant` by its registered method: a public client
/// (`none`) presents no secret at all; a confidential one presents its secret exactly the way it
/// registered (Basic or body), checked against the stored HMAC in constant time. Another
/// tenant's client is an unknown one. Every refusal is `invalid_client`, audited.
pub(crate) async fn authenticate_oauth_client(
    state: &AppState,
    tenant: &Tenant,
    id: bulkhead_core::OAuthClientId,
    auth: Option<&ClientAuth>,
) -> Result<bulkhead_store::tenant::oauth::OAuthClient, OAuthError> {
    use bulkhead_store::tenant::oauth::{client_with_secret, ClientAuthMethod, RegisteredBy};
    use bulkhead_store::tenant::oauth_settings;
    let basic = auth.is_some_and(|a| a.basic);
    let ctx = crate::http::resolve::oauth_context(tenant.id);
    let mut tx = state
        .store()
        .begin(&ctx, bulkhead_store::Access::ReadOnly)
        .await?;
    let found = match client_with_secret(&mut tx, id).await {
        Ok(found) => Some(found),
        Err(bulkhead_store::StoreError::NotFound) => None,
        Err(err) => return Err(err.into()),
    };
    // A document's client is accepted only while the tenant accepts documents.
    let documents_off = match &found {
        Some((client, _)) if client.registered_by == RegisteredBy::MetadataDocument => {
            !oauth_settings::get(&mut tx)
                .await?
                .client_id_metadata_documents
        }
        _ => false,
    };
    tx.commit().await?;
    let refused = |reason: &'static str| {
        AuditLine::failure("auth.failure")
            .tenant(tenant.id)
            .actor(id)
            .with(Detail::Reason, reason)
            .warn("OAuth client authentication failed");
        OAuthError::invalid_client(basic)
    };
    let Some((client, stored)) = found else {
        return Err(refused("UnknownClient"));
    };
    // A dynamically registered client unused for too long is gone, even before it is swept.
    let cutoff = bulkhead_store::tenant::oauth::idle_cutoff(state.clock().now());
    if bulkhead_store::tenant::oauth::is_expired(&client, cutoff) {
        return Err(refused("ExpiredClient"));
    }
    if documents_off {
        return Err(refused("MetadataDocumentsDisabled"));
    }
    let ok = match (client.token_endpoint_auth_method, auth, stored) {
        (ClientAuthMethod::None, None, _) => true,
        (ClientAuthMethod::ClientSecretBasic, Some(a), Some(stored)) if a.basic => {
            state.master_key().verify_client_secret(
                &crate::http::routes::oauth_clients::secret_binding(tenant.id, id),
                a.secret.as_bytes(),
                &stored,
            )
        }
        (ClientAuthMethod::ClientSecretPost, Some(a), Some(stored)) if !a.basic => {
            state.master_key().verify_client_secret(
                &crate::http::routes::oauth_clients::secret_binding(tenant.id, id),
                a.secret.as_bytes(),
                &stored,
            )
        }
        _ => false,
    };
    if !ok {
        return Err(refused("ClientAuthenticationFailed"));
    }
    Ok(client)
}
