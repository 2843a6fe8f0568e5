//! `/v1/oauth-settings`: whether third-party clients may register themselves with the tenant
//! (RFC 7591 dynamic registration at `POST /oauth/register`, [`super::oauth::register`]; client
//! ID metadata documents at the authorization endpoint) and the most such a client may be
//! granted.
//!
//! Both off by default. Turning either on names `dynamic_client_scopes`, the ceiling of every
//! self-registered client: like registering a client, that is a grant of those scopes, so the
//! admin must hold each of them, and every scope of the ceiling in force (a change of the
//! ceiling could otherwise widen what clients registered under it may be given). Confined and
//! delegated credentials change nothing. Audited `oauth_settings.update`.

use axum::extract::State;
use bulkhead_core::{Scope, ScopeSet};
use bulkhead_store::tenant::oauth_settings::{self, OAuthSettings};
use serde::Deserialize;
use serde_json::json;

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::Requires;
use crate::http::authz::{check_may_grant, RouteTable};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::routes::kit::tx;
use crate::http::routes::kit::write::Tail;
use crate::http::state::AppState;

/// The routes and who may call them.
pub fn routes() -> RouteTable {
    use crate::http::authz::{Confinement::Refused, TENANT_WIDE_READ};
    const MANAGE: crate::http::authz::RouteAccess = Requires(Scope::KeysManage);
    RouteTable::tagged("oauth-clients")
        .get("/v1/oauth-settings", MANAGE, get_settings)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::ok::<OAuthSettings>(200, "The settings")
                .summary("The tenant's OAuth settings (dynamic client registration)."),
        )
        .put("/v1/oauth-settings", MANAGE, put_settings)
        .confine(Refused)
        .doc(
            OpDoc::ok::<OAuthSettings>(200, "The new settings")
                .summary("Replaces the tenant's OAuth settings.")
                .body::<PutSettings>()
                .forbidden(
                    "A scope (new or in the ceiling in force) the caller does not hold, or a \
                    delegated or prefix-confined credential",
                )
                .invalid("An unknown scope, or self-registration on without scopes"),
        )
}

/// Body of `PUT /v1/oauth-settings`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSettings {
    /// Whether `POST /oauth/register` registers clients.
    dynamic_registration: bool,
    /// Whether a `client_id` that is an `https` URL (a client ID metadata document) is
    /// accepted.
    #[serde(default)]
    client_id_metadata_documents: bool,
    /// The most a self-registered client may be granted: 0 to 64 scopes, at least one when
    /// either way is on; each held by the caller.
    #[schema(value_type = Vec<Scope>)]
    #[serde(default)]
    dynamic_client_scopes: Vec<String>,
}

async fn get_settings(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<axum::Json<OAuthSettings>, ApiError> {
    let mut tx = state
        .store()
        .begin(&tenant.0, bulkhead_store::Access::ReadOnly)
        .await?;
    let settings = oauth_settings::get(&mut tx).await?;
    tx.commit().await?;
    Ok(axum::Json(settings))
}

async fn put_settings(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<PutSettings>,
) -> Result<axum::Json<OAuthSettings>, ApiError> {
    let ctx = &tenant.0;
    if body.dynamic_client_scopes.len() > 64 {
        return Err(ApiError::Invalid("give at most 64 scopes".into()));
    }
    let scopes = ScopeSet::parse_all(&body.dynamic_client_scopes)
        .map_err(|_| ApiError::Invalid("unknown scope".into()))?;
    if (body.dynamic_registration || body.client_id_metadata_documents) && scopes.is_empty() {
        return Err(ApiError::Invalid(
            "dynamic_registration and client_id_metadata_documents need at least one \
             dynamic_client_scopes"
                .into(),
        ));
    }
    // Refuses confined and delegated credentials (even for an empty set), then a scope the
    // caller does not hold.
    check_may_grant(ctx, &scopes, "oauth-settings")?;
    let settings = OAuthSettings {
        dynamic_registration: body.dynamic_registration,
        client_id_metadata_documents: body.client_id_metadata_documents,
        dynamic_client_scopes: scopes.to_strings(),
    };
    tx::write(&state, ctx, async |tx| {
        let current = oauth_settings::get(tx).await?;
        check_may_grant(ctx, &current.dynamic_scope_set(), "oauth-settings")?;
        oauth_settings::set(tx, &settings).await?;
        let meta = json!({
            "dynamic_registration": settings.dynamic_registration,
            "client_id_metadata_documents": settings.client_id_metadata_documents,
            "dynamic_client_scopes": settings.dynamic_client_scopes,
        });
        Ok((
            (),
            Tail::new().audit_tenant_wide("oauth_settings.update", meta),
        ))
    })
    .await?;
    Ok(axum::Json(settings))
}
