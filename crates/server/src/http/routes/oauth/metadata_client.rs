//! The authorization endpoint's side of client ID metadata documents
//! ([`crate::service::oauth::metadata_document`]): a `client_id` that is a URL becomes a client
//! when the tenant accepts such documents and the document passes every check.
//!
//! A tenant that does not accept documents refuses with the page and a line on the audit log
//! target only (no stored row: anyone may send such a request, as often as they like). A
//! cached good document is used as it is. Anything else that writes a row or connects (a
//! refusal of the URL or of a cached document, a fetch) first spends one of the source
//! address's budget (the class [`OAUTH_REGISTER_CLASS`], the per-address limiter
//! `POST /oauth/register` spends), and a fetch then one of the tenant's; a spent budget is a
//! 429 page and a log line, nothing stored. A fetch is audited before the request leaves
//! (`oauth_client.metadata_fetch`, outcome `started`) and after (success, or the refusal's
//! class: never the address). Every refusal is an error page, never a redirect: the document's
//! redirect URIs are not trusted.
//!
//! Nothing is stored for the client here: its row is made when a user consents
//! ([`crate::service::oauth::authorization_code::issue_code`]), under an id derived from the
//! tenant and the URL.

use axum::http::{Extensions, HeaderMap, StatusCode};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::tenant::oauth::{ClientAuthMethod, OAuthClient, RegisteredBy};
use bulkhead_store::tenant::oauth_settings;
use bulkhead_store::{Access, StoreError};
use serde_json::json;

use crate::config::limits::OAUTH_REGISTER_CLASS;
use crate::http::state::AppState;
use crate::service::audit_line::{AuditLine, Detail};
use crate::service::oauth::authorization_code::{self, ConsentError, Consented};
use crate::service::oauth::metadata_document::{self, Document, Refusal};

/// What the page says for a refusal.
const UNUSABLE: &str = "The application identifies itself by a web address whose description \
    could not be used. Nothing was shared with it.";

/// The source address of a request, from its connection and the trusted proxies' headers.
pub(super) fn source(
    state: &AppState,
    extensions: &Extensions,
    headers: &HeaderMap,
) -> Option<std::net::IpAddr> {
    let peer = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?;
    super::request_ip(state, peer.0, headers)
}

/// The client a metadata document's URL names in `tenant`, or the error page's status and text.
/// `client_ip`: the request's source address (its budget bounds the rows and fetches).
pub(super) async fn resolve(
    state: &AppState,
    tenant: &Tenant,
    url: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<OAuthClient, (StatusCode, &'static str)> {
    let unavailable = (
        StatusCode::SERVICE_UNAVAILABLE,
        "The service is temporarily unavailable. Try again shortly.",
    );
    let id = metadata_document::client_id_for(tenant.id, url);
    let ctx = crate::http::resolve::oauth_context(tenant.id);
    let settings = async {
        let mut tx = state.store().begin(&ctx, Access::ReadOnly).await?;
        let settings = oauth_settings::get(&mut tx).await?;
        tx.commit().await?;
        Ok::<_, StoreError>(settings)
    }
    .await
    .map_err(|_| unavailable)?;
    if !settings.client_id_metadata_documents {
        // The default, and free for anyone to ask: the log line only, never a stored row.
        AuditLine::blocked("oauth_client.metadata_fetch")
            .tenant(tenant.id)
            .with(Detail::Reason, Refusal::Disabled.class())
            .warn("client ID metadata document refused: the tenant does not accept them");
        return Err((StatusCode::BAD_REQUEST, UNUSABLE));
    }
    let ceiling = settings.dynamic_scope_set();
    let document = match metadata_document::check_url(url) {
        Err(refusal) => Err(refusal),
        Ok(_) => match state.metadata_documents().get(tenant.id, url, &ceiling) {
            Some(document) if document.scopes.is_empty() => Err(Refusal::Scope),
            Some(document) => Ok(document),
            None if !address_budget(state, client_ip).await => Err(Refusal::RateLimited),
            None => {
                let fetched = fetch(state, tenant, id, url, &ceiling).await?;
                if let Err(refusal) = fetched {
                    return refused(state, tenant, id, refusal).await;
                }
                fetched
            }
        },
    };
    match document {
        Ok(document) => Ok(client(id, document, state.clock().now())),
        Err(Refusal::RateLimited) => refused(state, tenant, id, Refusal::RateLimited).await,
        // A refusal before any fetch: a stored row, so the address's budget first.
        Err(_) if !address_budget(state, client_ip).await => {
            refused(state, tenant, id, Refusal::RateLimited).await
        }
        Err(refusal) => refused(state, tenant, id, refusal).await,
    }
}

/// The page for a refusal, audited (a rate-limited one on the log line only: a stored row each
/// would be the writes the budget bounds, as for `POST /oauth/register`).
async fn refused(
    state: &AppState,
    tenant: &Tenant,
    id: bulkhead_core::OAuthClientId,
    refusal: Refusal,
) -> Result<OAuthClient, (StatusCode, &'static str)> {
    if refusal == Refusal::RateLimited {
        AuditLine::blocked("oauth_client.metadata_fetch")
            .tenant(tenant.id)
            .with(Detail::Reason, "rate_limited")
            .warn("client ID metadata document fetch rate limited");
        return Err((StatusCode::TOO_MANY_REQUESTS, UNUSABLE));
    }
    audit_outcome(state, tenant, id, Err(refusal))
        .await
        .map_err(|_| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is temporarily unavailable. Try again shortly.",
            )
        })?;
    Err((StatusCode::BAD_REQUEST, UNUSABLE))
}

/// Spends one of the source address's self-registration budget; `false` when none is left. An
/// unknown address (malformed chain) shares one budget rather than escaping the limit.
async fn address_budget(state: &AppState, client_ip: Option<std::net::IpAddr>) -> bool {
    let Some(limits) = state.rate_limits() else {
        return true;
    };
    let ip = client_ip.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    limits
        .preauth
        .check(&bulkhead_ratelimit::Request::new(
            crate::http::limits::address_key(ip),
            bulkhead_ratelimit::Plan::Standard,
            OAUTH_REGISTER_CLASS,
        ))
        .await
        .allowed
}

/// A cache miss (the address's budget already spent): the tenant's budget, the audited fetch. The outer error is a store failure (the page
/// says unavailable); the inner one the document's refusal (audited by the caller).
async fn fetch(
    state: &AppState,
    tenant: &Tenant,
    id: bulkhead_core::OAuthClientId,
    url: &str,
    ceiling: &bulkhead_core::ScopeSet,
) -> Result<Result<Document, Refusal>, (StatusCode, &'static str)> {
    let unavailable = (
        StatusCode::SERVICE_UNAVAILABLE,
        "The service is temporarily unavailable. Try again shortly.",
    );
    if let Some(limits) = state.rate_limits() {
        let decision = limits
            .tenant
            .check(
                &crate::http::limits::TenantPlan::of(tenant)
                    .request(tenant.id, OAUTH_REGISTER_CLASS),
            )
            .await;
        if !decision.allowed {
            return Ok(Err(Refusal::RateLimited));
        }
    }
    // Recorded and committed before the request leaves the process.
    let ctx = crate::http::resolve::oauth_context(tenant.id);
    let started = async {
        let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
        audit::record(
            &mut tx,
            "oauth_client.metadata_fetch",
            Some(&id.to_string()),
            Outcome::Started,
            json!({}),
        )
        .await?;
        tx.commit().await
    }
    .await;
    started.map_err(|_| unavailable)?;
    let fetched = metadata_document::fetch(
        state.document_client(),
        state.metadata_documents(),
        tenant.id,
        url,
        ceiling,
    )
    .await;
    if fetched.is_ok() {
        audit_outcome(state, tenant, id, Ok(()))
            .await
            .map_err(|_| unavailable)?;
    }
    Ok(fetched)
}

/// The fetch's (or the check's) end, audited and committed.
async fn audit_outcome(
    state: &AppState,
    tenant: &Tenant,
    id: bulkhead_core::OAuthClientId,
    result: Result<(), Refusal>,
) -> Result<(), StoreError> {
    let ctx = crate::http::resolve::oauth_context(tenant.id);
    let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
    let (outcome, meta) = match result {
        Ok(()) => (Outcome::Success, json!({})),
        Err(Refusal::Blocked(class)) => (Outcome::Blocked, json!({ "reason": class })),
        Err(refusal) => (Outcome::Failure, json!({ "reason": refusal.class() })),
    };
    audit::record(
        &mut tx,
        "oauth_client.metadata_fetch",
        Some(&id.to_string()),
        outcome,
        meta,
    )
    .await?;
    tx.commit().await
}

/// Issues the code for a consent ([`authorization_code::issue_code`]); for a client named by its
/// metadata document (stored or refreshed there, counted in the self-registered cap) a few
/// expired self-registered clients are deleted first, in their own transaction, as a
/// registration does: storing a document's client is the other path that needs the room.
pub(super) async fn issue_code(
    state: &AppState,
    consented: &Consented<'_>,
) -> Result<(bulkhead_auth::AuthorizationCode, bulkhead_core::ScopeSet), ConsentError> {
    if consented.client.metadata_url.is_some() {
        let ctx = crate::http::resolve::oauth_context(consented.tenant);
        let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
        let ended = super::register::sweep_expired(state, &mut tx, state.clock().now()).await?;
        tx.commit().await?;
        super::register::deny_locally(state, consented.tenant, ended);
    }
    authorization_code::issue_code(state.store(), state.clock(), consented).await
}

/// The client a good document describes (not stored until a user consents).
fn client(
    id: bulkhead_core::OAuthClientId,
    document: Document,
    now: chrono::DateTime<chrono::Utc>,
) -> OAuthClient {
    OAuthClient {
        id,
        name: document.name,
        redirect_uris: document.redirect_uris,
        token_endpoint_auth_method: ClientAuthMethod::None,
        scopes: document.scopes.to_strings(),
        created_at: now,
        updated_at: now,
        registered_by: RegisteredBy::MetadataDocument,
        last_used_at: now,
        metadata_url: Some(document.url),
    }
}
