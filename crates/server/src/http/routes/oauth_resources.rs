//! `/v1/oauth-resources`: the protected resources a tenant runs (an API, an MCP server), each
//! with an identifier URL and the scopes it accepts (RFC 8707 resource indicators), and their
//! RFC 9728 protected-resource metadata.
//!
//! Managing resources needs `keys:manage`, like clients: a resource decides which tokens its
//! clients may be given. Confined and delegated credentials may read but change nothing. A
//! tenant registers at most [`MAX_RESOURCES_PER_TENANT`] (409 beyond). The identifier is an
//! URL in canonical form, without query, fragment or user information (RFC 9728 §1.2), on the
//! tenant's own origin, its issuer `https://<slug>.<base-domain>`, followed by a path (see
//! [`check_identifier`] for why), unique in the tenant; it is the resource's identity, so
//! `PATCH` changes only `name` and `scopes`.
//!
//! Metadata (public, on the tenant's subdomain): `GET /.well-known/oauth-protected-resource`
//! describes Bulkhead's own API, `GET /.well-known/oauth-protected-resource/{id}` a registered
//! resource (another tenant's id answers like an unknown one); both name the tenant's issuer as
//! their authorization server. On the deployment's own host, the own API's document names none:
//! no authorization server is served there (each tenant is its own). A resource server serves the
//! latter at its own well-known URL (a copy or a proxy) or names it in its challenges'
//! `resource_metadata` (RFC 9728 §5.1).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_core::id::OAuthResourceKind;
use bulkhead_core::{OAuthResourceId, Scope, ScopeSet};
use bulkhead_store::tenant::oauth_grants;
use bulkhead_store::tenant::oauth_resources::{self, OAuthResource};
use bulkhead_store::tenant::tokens::EndReason;
use bulkhead_store::{Access, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::{Public, Requires};
use crate::http::authz::RouteTable;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::routes::kit::by_id::{ById, ByIdJson};
use crate::http::routes::kit::page::{page, ListQuery, NoFilters};
use crate::http::routes::kit::tx;
use crate::http::routes::kit::validate::{self, PathId};
use crate::http::routes::kit::write::Tail;
use crate::http::state::AppState;

/// Most protected resources a tenant may register (decision, as for clients: a fixed cap well
/// above what admins register by hand). One more is 409 `conflict`.
pub const MAX_RESOURCES_PER_TENANT: i64 = 100;

/// Where Bulkhead's own API's metadata is served (and named by its `WWW-Authenticate`).
pub const OWN_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The routes and who may call them.
pub fn routes() -> RouteTable {
    use crate::http::authz::{Confinement::Refused, TENANT_WIDE_READ};
    const MANAGE: crate::http::authz::RouteAccess = Requires(Scope::KeysManage);
    RouteTable::tagged("oauth-resources")
        .resource(
            "/v1/oauth-resources/{id}",
            OpDoc::one::<OAuthResourceId>("protected resource"),
        )
        .get("/v1/oauth-resources", MANAGE, list_resources)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<OAuthResourcePage, NoFilters>("A page of protected resources")
                .invalid("Limit outside 1 to 200"),
        )
        .post("/v1/oauth-resources", MANAGE, create_resource)
        .confine(Refused)
        .doc(
            OpDoc::ok::<OAuthResource>(201, "The new resource")
                .body::<CreateResource>()
                .forbidden("A delegated or prefix-confined credential")
                .invalid("An invalid identifier, name or scope")
                .conflict(
                    "The identifier is registered already, or the tenant has as many \
                    resources as it may register",
                ),
        )
        .get("/v1/oauth-resources/{id}", MANAGE, fetch_resource)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<OAuthResource>(200, "The resource"))
        .patch("/v1/oauth-resources/{id}", MANAGE, update_resource)
        .confine(Refused)
        .doc(
            OpDoc::ok::<OAuthResource>(200, "The resource")
                .body::<UpdateResource>()
                .forbidden("A delegated or prefix-confined credential")
                .invalid("An invalid name or scope"),
        )
        .delete("/v1/oauth-resources/{id}", MANAGE, delete_resource)
        .confine(Refused)
        .doc(OpDoc::empty(204, "Deleted"))
        .get(OWN_METADATA_PATH, Public, own_metadata)
        .doc(
            OpDoc::ok::<ProtectedResourceMetadata>(200, "RFC 9728 metadata")
                .summary(
                    "RFC 9728 protected-resource metadata of Bulkhead's own API: on a \
                    tenant's subdomain, naming the tenant's issuer.",
                )
                .answer(404, "No organisation is served under this host name"),
        )
        .get(
            "/.well-known/oauth-protected-resource/{id}",
            Public,
            resource_metadata,
        )
        .doc(
            OpDoc::ok::<ProtectedResourceMetadata>(200, "RFC 9728 metadata")
                .summary(
                    "RFC 9728 protected-resource metadata of a registered resource, on the \
                    tenant's subdomain.",
                )
                .id::<OAuthResourceId>("The resource")
                .not_found("protected resource")
                .answer(400, "A malformed id"),
        )
}

page!(
    /// A page of protected resources.
    OAuthResourcePage, OAuthResource, OAuthResourceId
);

/// RFC 9728 protected-resource metadata.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProtectedResourceMetadata {
    /// The resource's identifier.
    resource: String,
    /// The authorization servers that issue tokens for it: the tenant's issuer. None on the
    /// deployment's own host, which serves no authorization server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorization_servers: Vec<String>,
    /// The scopes it accepts.
    scopes_supported: Vec<String>,
    /// How it takes a token: `header` (RFC 6750 §2.1).
    bearer_methods_supported: Vec<String>,
    /// Its name.
    resource_name: String,
}

/// Body of `POST /v1/oauth-resources`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateResource {
    /// The identifier URL clients send as `resource` and tokens carry as `aud`.
    #[schema(example = "https://mcp.acme.example/mcp")]
    identifier: String,
    /// 1 to 100 characters, shown on the consent page.
    #[schema(example = "Acme MCP server")]
    name: String,
    /// The scopes it accepts (1 to 64).
    #[schema(value_type = Vec<Scope>)]
    scopes: Vec<String>,
}

/// Body of `PATCH /v1/oauth-resources/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateResource {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Scope>>)]
    scopes: Option<Vec<String>>,
}

/// Where a tenant's resource identifiers must be: its own origin (see [`check_identifier`]).
#[derive(Debug)]
pub struct TenantOrigin<'a> {
    /// The tenant's origin, which is its issuer
    /// ([`crate::service::tokens::TokenSettings::tenant_issuer`]).
    pub origin: String,
    /// The deployment's issuer (`--issuer`): never an identifier.
    pub issuer: &'a str,
    /// The `aud` of Bulkhead's own tokens (`--token-audience`): never an identifier.
    pub audience: &'a str,
}

/// Checks a resource identifier (RFC 8707 §2, RFC 9728 §1.2): a URL in canonical form on the
/// tenant's own origin (`https` unless `--issuer` is a development `http` URL), with a path
/// below its root.
///
/// Every tenant's tokens share one set of signing keys, and a resource's tokens carry its
/// identifier as `aud`: an identifier another tenant could also register (any host) would let
/// that tenant mint tokens its resource server accepts, should the server check `aud` alone. On the tenant's own origin
/// (where the MCP gateway serves the tenant's servers, `/mcp/<server>`), it names one tenant
/// only. The issuer and `--token-audience` are refused too: they name Bulkhead's own API.
pub fn check_identifier(text: &str, at: &TenantOrigin<'_>) -> Result<(), String> {
    if text.len() > 2048 {
        return Err("identifier has at most 2048 characters".into());
    }
    if text == at.issuer
        || text == at.audience
        || url::Url::parse(at.issuer).is_ok_and(|issuer| issuer.as_str() == text)
    {
        return Err(
            "identifier may not be the issuer or the token audience: they name Bulkhead's own \
             API"
            .into(),
        );
    }
    let url = url::Url::parse(text).map_err(|_| "identifier must be an absolute URL")?;
    if url.as_str() != text {
        return Err(
            "identifier must be in canonical form (lowercase scheme and host, a path of \
             at least `/`, no default port)"
                .into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("identifier may not have a query or a fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("identifier may not carry user information".into());
    }
    let on_origin = url.origin().ascii_serialization() == at.origin;
    if !on_origin || url.path() == "/" {
        return Err(format!(
            "identifier must be on the organisation's own origin, {}, followed by a path (e.g. \
             {}/mcp/<server>): tokens of every organisation share one set of signing keys, so \
             an identifier on any other host could also be registered by another organisation",
            at.origin, at.origin
        ));
    }
    Ok(())
}

fn check_scopes(names: &[String]) -> Result<ScopeSet, ApiError> {
    if names.is_empty() || names.len() > 64 {
        return Err(ApiError::Invalid("give 1 to 64 scopes".into()));
    }
    ScopeSet::parse_all(names).map_err(|_| ApiError::Invalid("unknown scope".into()))
}

async fn list_resources(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery,
) -> Result<axum::Json<OAuthResourcePage>, ApiError> {
    let (data, next_cursor) = query
        .page_of_ids()?
        .read(
            &state,
            &tenant.0,
            async |tx, after, n| Ok(oauth_resources::list(tx, after, n).await?),
            |r| r.id,
        )
        .await?;
    Ok(axum::Json(OAuthResourcePage::new(data, next_cursor)))
}

async fn create_resource(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateResource>,
) -> Result<(StatusCode, axum::Json<OAuthResource>), ApiError> {
    let ctx = &tenant.0;
    let registered = state
        .directory()
        .by_id(state.store(), ctx.tenant_id())
        .await?
        .ok_or(ApiError::NotFound)?;
    let config = state.config();
    let origin = TenantOrigin {
        origin: config.tokens.tenant_issuer(&registered.slug),
        issuer: &config.tokens.issuer,
        audience: &config.tokens.audience,
    };
    check_identifier(&body.identifier, &origin).map_err(|why| ApiError::Invalid(why.into()))?;
    let name = validate::display_name(&body.name)?.to_owned();
    let scopes = check_scopes(&body.scopes)?;
    let now = state.clock().now();
    let resource = tx::write(&state, ctx, async |tx| {
        if oauth_resources::count_locked(tx).await? >= MAX_RESOURCES_PER_TENANT {
            return Err(ApiError::Conflict(format!(
                "the tenant already has {MAX_RESOURCES_PER_TENANT} protected resources, the \
                 most it may register; delete one first"
            )));
        }
        let resource =
            match oauth_resources::create(tx, &body.identifier, &name, &scopes, now).await {
                Err(StoreError::Conflict { .. }) => {
                    return Err(ApiError::Conflict(
                        "a resource with this identifier is registered already".into(),
                    ))
                }
                other => other?,
            };
        let meta = json!({
            "identifier": resource.identifier,
            "name": resource.name,
            "scopes": resource.scopes,
        });
        let id = resource.id;
        Ok((
            resource,
            Tail::new().audit("oauth_resource.create", id, meta),
        ))
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(resource)))
}

async fn fetch_resource(
    at: ById<OAuthResourceKind>,
) -> Result<axum::Json<OAuthResource>, ApiError> {
    at.read(oauth_resources::get).await.map(axum::Json)
}

async fn update_resource(
    ByIdJson(ById { state, tenant, id }, body): ByIdJson<OAuthResourceKind, UpdateResource>,
) -> Result<axum::Json<OAuthResource>, ApiError> {
    let ctx = &tenant.0;
    let name = body
        .name
        .as_deref()
        .map(validate::display_name)
        .transpose()?;
    let scopes = body.scopes.as_deref().map(check_scopes).transpose()?;
    let now = state.clock().now();
    let resource = tx::write(&state, ctx, async |tx| {
        let resource = oauth_resources::update(tx, id, name, scopes.as_ref(), now).await?;
        let meta = json!({
            "name_changed": name.is_some(),
            "scopes": scopes.as_ref().map(ScopeSet::to_strings),
        });
        Ok((
            resource,
            Tail::new().audit("oauth_resource.update", id, meta),
        ))
    })
    .await?;
    Ok(axum::Json(resource))
}

/// Deletes a resource with its consents, and ends the sessions whose tokens are for it, in one
/// transaction: nothing issued for an identifier outlives its registration.
async fn delete_resource(at: ById<OAuthResourceKind>) -> Result<StatusCode, ApiError> {
    let ById { state, tenant, id } = at;
    let ctx = &tenant.0;
    let ended = tx::write(&state, ctx, async |tx| {
        let resource = oauth_resources::get(tx, id).await?;
        oauth_resources::delete(tx, id).await?;
        let grants = oauth_grants::delete_for_resource(tx, &resource.identifier).await?;
        let sessions = oauth_grants::live_sessions_for_resource(tx, &resource.identifier).await?;
        for session in &sessions {
            crate::service::auth_sessions::end(
                state.tokens(),
                state.clock(),
                tx,
                *session,
                EndReason::Revoked,
            )
            .await?;
        }
        let meta = json!({
            "identifier": resource.identifier,
            "grants_deleted": grants,
            "sessions_ended": sessions.len(),
        });
        Ok((
            sessions,
            Tail::new().audit("oauth_resource.delete", id, meta),
        ))
    })
    .await?;
    for session in ended {
        state
            .tokens()
            .deny_session_locally(ctx.tenant_id(), session);
    }
    Ok(StatusCode::NO_CONTENT)
}

fn metadata_response(document: ProtectedResourceMetadata) -> Response {
    let mut response = axum::Json(document).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// RFC 9728 metadata of Bulkhead's own API. On a tenant's host its identifier is the tenant's
/// issuer (the origin the document was fetched from, as RFC 9728 §3.3 requires) and so is its
/// authorization server; on the deployment's host it is `--issuer`, with no authorization
/// server (each tenant is its own). An unknown subdomain is the unknown tenant's 404. Its
/// tokens' `aud` stays `--token-audience`.
async fn own_metadata(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let host = crate::http::resolve::request_host(&headers);
    let (resource, authorization_servers) =
        match crate::http::resolve::host_tenant(&state, host).await {
            Ok(Some(tenant)) => {
                let issuer = crate::http::routes::oauth::tenant_issuer(&state, &tenant);
                (issuer.clone(), vec![issuer])
            }
            Ok(None) => (state.config().tokens.issuer.clone(), Vec::new()),
            Err(err) => return err.into_response(),
        };
    metadata_response(ProtectedResourceMetadata {
        resource,
        authorization_servers,
        scopes_supported: Scope::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        bearer_methods_supported: vec!["header".into()],
        resource_name: "Bulkhead API".into(),
    })
}

/// RFC 9728 metadata of one registered resource, on its tenant's subdomain.
async fn resource_metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId<OAuthResourceKind>,
) -> Result<Response, ApiError> {
    // A malformed id is 400 (as everywhere); a host that names no tenant is `unknown-tenant`; a
    // suspended tenant's resources, another tenant's and unknown ones are one 404.
    let host = crate::http::resolve::request_host(&headers);
    let tenant = crate::http::resolve::host_tenant(&state, host)
        .await?
        .ok_or(ApiError::UnknownTenant)?;
    if tenant.status != bulkhead_store::placement::registry::TenantStatus::Active {
        return Err(ApiError::NotFound);
    }
    let ctx = crate::http::resolve::oauth_context(tenant.id);
    let mut tx = state.store().begin(&ctx, Access::ReadOnly).await?;
    let resource = oauth_resources::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(metadata_response(ProtectedResourceMetadata {
        resource: resource.identifier,
        authorization_servers: vec![crate::http::routes::oauth::tenant_issuer(&state, &tenant)],
        scopes_supported: resource.scopes,
        bearer_methods_supported: vec!["header".into()],
        resource_name: resource.name,
    }))
}
