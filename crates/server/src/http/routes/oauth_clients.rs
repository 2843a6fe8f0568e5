//! `/v1/oauth-clients`: the OAuth clients a tenant's admins register for the
//! authorization-code flow ([`crate::http::routes::oauth::authorize`]).
//!
//! A client is public (`token_endpoint_auth_method: none`, PKCE alone binds its codes) or
//! confidential (`client_secret_basic` or `client_secret_post`): its secret is made by the server,
//! shown once in the creation's answer, and kept only as an HMAC bound to the client
//! ([`bulkhead_auth::MasterKey::client_secret_mac`]). Its `scopes` are the most it may ever be
//! granted; each must be held by the admin registering it (no escalation), and confined or
//! delegated credentials register and change nothing (a client outlives the token). Managing
//! clients needs `keys:manage`: a client is a credential, like an API key, so changing or
//! deleting one also needs every scope it holds now. Deleting one, or narrowing its scopes, ends
//! every auth session its grants started.

use axum::extract::State;
use axum::http::StatusCode;
use bulkhead_core::id::OAuthClientKind;
use bulkhead_core::{AuthSessionId, OAuthClientId, Scope, ScopeSet};
use bulkhead_store::tenant::oauth::{self, ClientAuthMethod, NewClient, OAuthClient, RegisteredBy};
use bulkhead_store::tenant::tokens::EndReason;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::Requires;
use crate::http::authz::{check_may_grant, RouteTable};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::routes::kit::by_id::{ById, ByIdJson};
use crate::http::routes::kit::page::{page, ListQuery, NoFilters};
use crate::http::routes::kit::write::Tail;
use crate::http::routes::kit::{tx, validate};
use crate::http::state::AppState;
use crate::service::oauth::redirect_uri;

pub use bulkhead_store::tenant::oauth::MAX_CLIENTS_PER_TENANT;

/// The routes and who may call them.
pub fn routes() -> RouteTable {
    use crate::http::authz::{Confinement::Refused, TENANT_WIDE_READ};
    const MANAGE: crate::http::authz::RouteAccess = Requires(Scope::KeysManage);
    RouteTable::tagged("oauth-clients")
        .resource(
            "/v1/oauth-clients/{id}",
            OpDoc::one::<OAuthClientId>("OAuth client"),
        )
        .get("/v1/oauth-clients", MANAGE, list_clients)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<OAuthClientPage, NoFilters>("A page of OAuth clients")
                .invalid("Limit outside 1 to 200"),
        )
        .post("/v1/oauth-clients", MANAGE, create_client)
        .confine(Refused)
        .doc(
            OpDoc::ok::<CreatedClient>(201, "The new client, with its secret (shown once)")
                .body::<CreateClient>()
                .forbidden(
                    "A scope the caller does not hold itself, or a delegated or \
                    prefix-confined credential",
                )
                .invalid("An invalid name, redirect URI, method or scope")
                .conflict("The tenant has as many clients as it may register"),
        )
        .get("/v1/oauth-clients/{id}", MANAGE, fetch_client)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<OAuthClient>(200, "The client"))
        .patch("/v1/oauth-clients/{id}", MANAGE, update_client)
        .confine(Refused)
        .doc(
            OpDoc::ok::<OAuthClient>(200, "The client")
                .body::<UpdateClient>()
                .forbidden(
                    "A scope the caller does not hold itself (new or held by the client), \
                    or a delegated or prefix-confined credential",
                )
                .invalid("An invalid name, redirect URI or scope"),
        )
        .delete("/v1/oauth-clients/{id}", MANAGE, delete_client)
        .confine(Refused)
        .doc(OpDoc::empty(
            204,
            "Deleted; every auth session its grants started is ended",
        ))
}

/// Body of `POST /v1/oauth-clients`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// Shown to users on the consent page: 1 to 100 characters.
    #[schema(example = "Desktop assistant")]
    name: String,
    /// 1 to 10 exact redirect URIs: `https`, or `http` on `127.0.0.1`/`[::1]` (any port then
    /// matches), in canonical form, without userinfo or fragment.
    #[schema(example = json!(["https://app.example/callback"]))]
    redirect_uris: Vec<String>,
    /// `none` (public client, PKCE only), `client_secret_basic` (default) or
    /// `client_secret_post`.
    #[serde(default)]
    token_endpoint_auth_method: Option<ClientAuthMethod>,
    /// The most the client may be granted; each held by the caller.
    #[schema(value_type = Vec<Scope>)]
    scopes: Vec<String>,
}

/// Body of `PATCH /v1/oauth-clients/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClient {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Scope>>)]
    scopes: Option<Vec<String>>,
}

/// The answer of `POST /v1/oauth-clients`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedClient {
    #[serde(flatten)]
    client: OAuthClient,
    /// The secret of a confidential client: shown this once, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

impl std::fmt::Debug for CreatedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedClient")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

page!(
    /// A page of OAuth clients.
    OAuthClientPage, OAuthClient, OAuthClientId
);

fn check_redirect_uris(uris: &[String]) -> Result<(), ApiError> {
    if uris.is_empty() || uris.len() > 10 {
        return Err(ApiError::Invalid("give 1 to 10 redirect_uris".into()));
    }
    for uri in uris {
        redirect_uri::check_registrable(uri).map_err(|why| ApiError::Invalid(why.into()))?;
    }
    Ok(())
}

fn check_scopes(names: &[String]) -> Result<ScopeSet, ApiError> {
    if names.is_empty() || names.len() > 64 {
        return Err(ApiError::Invalid("give 1 to 64 scopes".into()));
    }
    ScopeSet::parse_all(names).map_err(|_| ApiError::Invalid("unknown scope".into()))
}

/// The binding of a client's secret MAC: its tenant and id, so a stored value copied onto
/// another client never verifies.
pub(crate) fn secret_binding(tenant: bulkhead_core::TenantId, id: OAuthClientId) -> Vec<u8> {
    let mut binding = tenant.uuid().as_bytes().to_vec();
    binding.extend_from_slice(id.uuid().as_bytes());
    binding
}

async fn list_clients(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery,
) -> Result<axum::Json<OAuthClientPage>, ApiError> {
    let (data, next_cursor) = query
        .page_of_ids()?
        .read(
            &state,
            &tenant.0,
            async |tx, after, n| Ok(oauth::list_clients(tx, after, n).await?),
            |c| c.id,
        )
        .await?;
    Ok(axum::Json(OAuthClientPage::new(data, next_cursor)))
}

async fn create_client(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateClient>,
) -> Result<(StatusCode, axum::Json<CreatedClient>), ApiError> {
    let ctx = &tenant.0;
    let name = validate::display_name(&body.name)?.to_owned();
    check_redirect_uris(&body.redirect_uris)?;
    let scopes = check_scopes(&body.scopes)?;
    let method = body
        .token_endpoint_auth_method
        .unwrap_or(ClientAuthMethod::ClientSecretBasic);
    // Refuses confined and delegated credentials, then a scope the caller does not hold.
    check_may_grant(ctx, &scopes, "oauth-client")?;
    let id = OAuthClientId::new();
    let secret = method
        .is_confidential()
        .then(bulkhead_auth::code::generate_client_secret);
    let secret_hash = secret.as_ref().map(|s| {
        state
            .master_key()
            .client_secret_mac(&secret_binding(ctx.tenant_id(), id), s.as_bytes())
    });
    let client = tx::write(&state, ctx, async |tx| {
        if oauth::count_clients_locked(tx, false).await? >= MAX_CLIENTS_PER_TENANT {
            return Err(ApiError::Conflict(format!(
                "the tenant already has {MAX_CLIENTS_PER_TENANT} OAuth clients registered by \
                admins, the most it may register; delete one first"
            )));
        }
        let client = oauth::create_client(
            tx,
            &NewClient {
                id,
                name: &name,
                redirect_uris: &body.redirect_uris,
                method,
                secret_hash,
                scopes: &scopes,
                registered_by: RegisteredBy::Admin,
            },
        )
        .await?;
        let meta = json!({
            "name": client.name,
            "redirect_uris": client.redirect_uris,
            "token_endpoint_auth_method": method.as_str(),
            "scopes": client.scopes,
        });
        Ok((client, Tail::new().audit("oauth_client.create", id, meta)))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedClient {
            client,
            client_secret: secret.map(|s| s.to_string()),
        }),
    ))
}

async fn fetch_client(at: ById<OAuthClientKind>) -> Result<axum::Json<OAuthClient>, ApiError> {
    at.read(oauth::get_client).await.map(axum::Json)
}

async fn update_client(
    ByIdJson(ById { state, tenant, id }, body): ByIdJson<OAuthClientKind, UpdateClient>,
) -> Result<axum::Json<OAuthClient>, ApiError> {
    let ctx = &tenant.0;
    let name = body
        .name
        .as_deref()
        .map(validate::display_name)
        .transpose()?;
    if let Some(uris) = &body.redirect_uris {
        check_redirect_uris(uris)?;
    }
    let scopes = body.scopes.as_deref().map(check_scopes).transpose()?;
    if let Some(scopes) = &scopes {
        check_may_grant(ctx, scopes, "oauth-client")?;
    }
    let (client, ended) = tx::write(&state, ctx, async |tx| {
        let (current, registered_by) = may_change(ctx, tx, id).await?;
        // A document's client is the document's: a change here would be undone at the next
        // consent, which refreshes the row from it.
        if registered_by == RegisteredBy::MetadataDocument {
            return Err(ApiError::Conflict(
                "this client is described by its client ID metadata document (metadata_url), \
                 which is refreshed into it at every consent: it cannot be changed here. To \
                 refuse it, turn client_id_metadata_documents off in /v1/oauth-settings"
                    .into(),
            ));
        }
        // Narrowing ends the client's sessions: a refresh keeps the scopes its family was
        // granted, so only new grants would see the narrower ceiling.
        let narrows = scopes
            .as_ref()
            .is_some_and(|new| !new.is_superset(&current));
        let client =
            oauth::update_client(tx, id, name, body.redirect_uris.as_deref(), scopes.as_ref())
                .await?;
        let ended = if narrows {
            end_sessions_of(&state, tx, id).await?
        } else {
            Vec::new()
        };
        let meta = json!({
            "name_changed": name.is_some(),
            "redirect_uris": body.redirect_uris,
            "scopes": scopes.as_ref().map(ScopeSet::to_strings),
            "sessions_ended": ended.len(),
        });
        Ok((
            (client, ended),
            Tail::new().audit("oauth_client.update", id, meta),
        ))
    })
    .await?;
    deny_locally(&state, ctx, ended);
    Ok(axum::Json(client))
}

/// Locks the client and checks the caller holds every scope it holds now: changing a client
/// (even its name or redirect URIs) or deleting it is a grant of those scopes, as with an API
/// key. Returns its current scopes and who registered it; a stored name this binary does not know refuses (fail closed).
async fn may_change(
    ctx: &bulkhead_core::TenantContext,
    tx: &mut bulkhead_store::TenantTx,
    id: OAuthClientId,
) -> Result<(ScopeSet, RegisteredBy), ApiError> {
    let current = oauth::get_client_for_update(tx, id).await?;
    let scopes = ScopeSet::parse_all(&current.scopes)
        .map_err(|_| ApiError::Invalid("stored scopes".into()))?;
    check_may_grant(ctx, &scopes, "oauth-client")?;
    Ok((scopes, current.registered_by))
}

/// Ends every live auth session the client's grants started, in the caller's transaction.
async fn end_sessions_of(
    state: &AppState,
    tx: &mut bulkhead_store::TenantTx,
    id: OAuthClientId,
) -> Result<Vec<AuthSessionId>, ApiError> {
    let sessions = oauth::live_sessions_of_client(tx, id).await?;
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
    Ok(sessions)
}

/// After the commit: refuses the ended sessions' tokens on this node at once.
fn deny_locally(state: &AppState, ctx: &bulkhead_core::TenantContext, ended: Vec<AuthSessionId>) {
    for session in ended {
        state
            .tokens()
            .deny_session_locally(ctx.tenant_id(), session);
    }
}

async fn delete_client(at: ById<OAuthClientKind>) -> Result<StatusCode, ApiError> {
    let ById { state, tenant, id } = at;
    let ctx = &tenant.0;
    let ended = tx::write(&state, ctx, async |tx| {
        may_change(ctx, tx, id).await?;
        let sessions = oauth::live_sessions_of_client(tx, id).await?;
        oauth::delete_client(tx, id).await?;
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
        let meta = json!({ "sessions_ended": sessions.len() });
        Ok((sessions, Tail::new().audit("oauth_client.delete", id, meta)))
    })
    .await?;
    deny_locally(&state, ctx, ended);
    Ok(StatusCode::NO_CONTENT)
}
