//! `/v1/api-keys`: the key lifecycle. Metadata only, except the plaintext of a new key, returned
//! exactly once by create and rotate.

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::{self, Requires};
use crate::http::authz::RouteTable;
use axum::extract::State;
use axum::http::StatusCode;
use bulkhead_core::id::ApiKeyKind;
use bulkhead_core::{Actor, AgentId, ApiKeyId, Scope, ScopeSet, TenantContext};
use bulkhead_store::tenant::agents::{self, AgentStatus};
use bulkhead_store::tenant::api_keys::{self, ApiKeyRecord, KeyPatch};
use bulkhead_store::{Access, TenantTx};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Tenant};
use crate::http::routes::kit::by_id::{ById, ByIdJson};
use crate::http::routes::kit::page::ListQuery;
use crate::http::routes::kit::validate::{self, optional_id};
use crate::http::routes::kit::write::Tail;
use crate::http::routes::kit::{policy, tx};
use crate::http::state::AppState;
use crate::service::keys::{self, KeySpec};

const MAX_ALLOWED_IPS: usize = 64;

/// The routes and who may call them. A key may always read, narrow, rotate and revoke itself
/// (the handlers check `keys:manage` for any other key).
pub fn routes() -> RouteTable {
    use crate::http::authz::{Confinement::Refused, TENANT_WIDE_READ};
    const MANAGE: RouteAccess = Requires(Scope::KeysManage);
    const ANY: RouteAccess = RouteAccess::Authenticated;
    RouteTable::tagged("api-keys")
        .resource("/v1/api-keys/{id}", OpDoc::one::<ApiKeyId>("key"))
        .get("/v1/api-keys", MANAGE, list)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<KeyPage, ListFilters>("A page of keys")
                .cursor::<ApiKeyId>()
                .summary("Lists the tenant's keys (metadata only).")
                .invalid("Limit outside 1 to 200, or an invalid principal"),
        )
        .post("/v1/api-keys", MANAGE, create)
        .confine(Refused)
        .doc(
            OpDoc::ok::<MintedKey>(201, "The key and its metadata")
                .summary(
                    "Mints a key with scopes the caller holds; the key is in the \
                    answer, once.",
                )
                .body::<CreateKey>()
                .forbidden(
                    "The caller lacks a scope it would grant, or is a delegated or \
                    prefix-confined credential",
                )
                .invalid(
                    "An unknown scope, an invalid principal, description, network or \
                    expiry",
                ),
        )
        .post("/v1/api-keys/revoke-all", MANAGE, revoke_all)
        .confine(Refused)
        .doc(
            OpDoc::ok::<Revoked>(200, "The revoked keys")
                .summary("Revokes every key of a principal.")
                .body::<RevokeAll>()
                .invalid("An invalid principal"),
        )
        .get("/v1/api-keys/{id}", ANY, fetch)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::ok::<ApiKeyRecord>(200, "The key's metadata")
                .bearer("keys:manage")
                .summary("A key's metadata (a key may always read itself)."),
        )
        .patch("/v1/api-keys/{id}", ANY, update)
        .confine(Refused)
        .doc(
            OpDoc::ok::<ApiKeyRecord>(200, "The key's metadata")
                .bearer("keys:manage")
                .summary(
                    "Changes a key's description, allowed networks or expiry (a key \
                    may narrow itself).",
                )
                .body::<UpdateKey>()
                .conflict("The key is no longer usable")
                .invalid("An invalid field"),
        )
        .post("/v1/api-keys/{id}/rotate", ANY, rotate)
        .confine(Refused)
        .doc(
            OpDoc::ok::<MintedKey>(201, "The successor key and its metadata")
                .bearer("keys:manage")
                .summary(
                    "Mints the key's successor; the old key works for the grace \
                    period. The body is optional.",
                )
                .optional_body::<RotateKey>()
                .conflict("The key cannot be rotated in its state")
                .invalid("Grace period out of range, or an invalid body"),
        )
        .post("/v1/api-keys/{id}/revoke", ANY, revoke)
        .confine(Refused)
        .doc(
            OpDoc::ok::<ApiKeyRecord>(200, "The revoked key's metadata")
                .bearer("keys:manage")
                .summary("Revokes a key at once (a key may revoke itself)."),
        )
        .get("/v1/key-policy", MANAGE, get_policy)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::ok::<api_keys::KeyPolicy>(200, "The key policy")
                .summary("The tenant's key policy."),
        )
        .put("/v1/key-policy", MANAGE, put_policy)
        .confine(Refused)
        .doc(
            OpDoc::ok::<api_keys::KeyPolicy>(200, "The new key policy")
                .summary("Replaces the tenant's key policy.")
                .body::<PutPolicy>()
                .invalid("A value out of range"),
        )
}

/// Body of `PUT /v1/key-policy`: the tenant's key policy, every field required. Named apart
/// from the screening policy's body: two schemas of one name collide in the document.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PutKeyPolicy)]
#[serde(deny_unknown_fields)]
pub struct PutPolicy {
    /// How long a rotated key keeps working: 0 to 2592000 (30 days).
    #[schema(minimum = 0, maximum = 2_592_000)]
    grace_seconds: i32,
    /// Age at which keys are due for rotation: 1 to 3650 days.
    #[schema(minimum = 1, maximum = 3650)]
    max_age_days: i32,
    /// Warning window before a grace deadline: 0 to 2592000.
    #[schema(minimum = 0, maximum = 2_592_000)]
    deadline_warning_seconds: i32,
}

async fn get_policy(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<axum::Json<api_keys::KeyPolicy>, ApiError> {
    Ok(axum::Json(policy::read(&state, &tenant.0).await?))
}

async fn put_policy(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<PutPolicy>,
) -> Result<axum::Json<api_keys::KeyPolicy>, ApiError> {
    let ctx = &tenant.0;
    let window = 0..=30 * 86_400;
    if !window.contains(&body.grace_seconds) || !window.contains(&body.deadline_warning_seconds) {
        return Err(ApiError::Invalid(
            "grace_seconds and deadline_warning_seconds are between 0 and 2592000 (30 days)".into(),
        ));
    }
    if !(1..=3650).contains(&body.max_age_days) {
        return Err(ApiError::Invalid(
            "max_age_days is between 1 and 3650".into(),
        ));
    }
    let policy = api_keys::KeyPolicy {
        grace_seconds: body.grace_seconds,
        max_age_days: body.max_age_days,
        deadline_warning_seconds: body.deadline_warning_seconds,
    };
    policy::replace(&state, ctx, &policy).await?;
    Ok(axum::Json(policy))
}

/// Body of `POST /v1/api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// At least one; each held by the caller.
    #[schema(value_type = Vec<Scope>, min_items = 1)]
    scopes: Vec<String>,
    #[serde(default)]
    principal: Option<String>,
    /// The agent the key belongs to: its roles then bound the key too, and disabling the agent
    /// stops the key. The principal defaults to the agent's name.
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    allowed_ips: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// Body of `PATCH /v1/api-keys/{id}`. `expires_at: null` removes the expiry.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    allowed_ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    expires_at: Option<Option<DateTime<Utc>>>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<DateTime<Utc>>>, D::Error> {
    Option::<DateTime<Utc>>::deserialize(d).map(Some)
}

/// Body of `POST /v1/api-keys/{id}/rotate`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Grace period for the old key; default: the tenant's policy. 0 to 30 days.
    #[serde(default)]
    grace_seconds: Option<i64>,
}

/// Body of `POST /v1/api-keys/revoke-all`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeAll {
    principal: String,
}

/// Filters of `GET /v1/api-keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListFilters {
    /// Only this principal's keys.
    #[serde(default)]
    principal: Option<String>,
}

/// A new key: its plaintext (shown once) and its metadata.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MintedKey {
    /// The key. Not stored anywhere; not shown again.
    key: String,
    /// Its metadata.
    api_key: ApiKeyRecord,
}

impl std::fmt::Debug for MintedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedKey")
            .field("key", &"<redacted>")
            .field("api_key", &self.api_key)
            .finish()
    }
}

/// A page of keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyPage {
    data: Vec<ApiKeyRecord>,
    next_cursor: Option<ApiKeyId>,
}

/// Keys revoked by `revoke-all`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// Their ids.
    revoked: Vec<ApiKeyId>,
}

fn caller_key(ctx: &TenantContext) -> Option<ApiKeyId> {
    match ctx.actor() {
        Actor::ApiKey { key_id, .. } => Some(*key_id),
        _ => None,
    }
}

fn refuse_confined(ctx: &TenantContext) -> Result<(), ApiError> {
    crate::http::authz::refuse_confined(ctx, Scope::KeysManage)
}

fn check_may_grant(ctx: &TenantContext, wanted: &ScopeSet) -> Result<(), ApiError> {
    refuse_confined(ctx)?;
    crate::http::authz::check_may_grant(ctx, wanted, "grant")
}

fn parse_scopes(names: &[String]) -> Result<ScopeSet, ApiError> {
    if names.is_empty() {
        return Err(ApiError::Invalid(
            "scopes must name at least one scope".into(),
        ));
    }
    ScopeSet::parse_all(names).map_err(|_| {
        let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::Invalid(format!("unknown scope; known scopes are: {}", known.join(" ")).into())
    })
}

fn parse_networks(list: &[String]) -> Result<Vec<IpNet>, ApiError> {
    if list.len() > MAX_ALLOWED_IPS {
        return Err(ApiError::Invalid(
            format!("at most {MAX_ALLOWED_IPS} allowed_ips").into(),
        ));
    }
    list.iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    ApiError::Invalid(
                        "allowed_ips holds an invalid IPv4/IPv6 address or CIDR".into(),
                    )
                })
        })
        .collect()
}

fn check_label(what: &str, text: &str) -> Result<(), ApiError> {
    let b = text.as_bytes();
    let valid = !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            format!("{what} has 1 to 128 characters: letters, digits, `.`, `_`, `:`, `-`").into(),
        ))
    }
}

fn check_future(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<(), ApiError> {
    if at.is_some_and(|at| at <= now) {
        return Err(ApiError::Invalid("expires_at is in the past".into()));
    }
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, axum::Json<MintedKey>), ApiError> {
    let ctx = &tenant.0;
    let now = state.clock().now();
    let scopes = parse_scopes(&body.scopes)?;
    check_may_grant(ctx, &scopes)?;
    let agent_id: Option<AgentId> = optional_id(body.agent_id.as_deref())?;
    let description = validate::description(body.description.as_deref().unwrap_or_default())?;
    check_future(body.expires_at, now)?;
    let allowed_ips = parse_networks(body.allowed_ips.as_deref().unwrap_or_default())?;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let agent = match agent_id {
        Some(id) => Some(agents::get(&mut tx, id).await?),
        None => None,
    };
    if agent
        .as_ref()
        .is_some_and(|a| a.status != AgentStatus::Active)
    {
        return Err(ApiError::Invalid("the agent is disabled".into()));
    }
    let principal = match (body.principal, &agent) {
        (Some(principal), Some(agent)) if principal != agent.name => {
            return Err(ApiError::Invalid(
                "principal must be the agent's name (or left out)".into(),
            ))
        }
        (Some(principal), _) => principal,
        (None, Some(agent)) => agent.name.clone(),
        (None, None) => "tenant-admin".into(),
    };
    check_label("principal", &principal)?;
    let spec = KeySpec {
        principal,
        scopes,
        agent: agent.map(|a| a.id),
        allowed_ips,
        description,
        expires_at: body.expires_at,
    };
    let (id, key) = keys::mint(
        &mut tx,
        state.verifier().peppers(),
        state.config().key_environment,
        &spec,
    )
    .await?;
    let api_key = api_keys::get(&mut tx, id, now).await?;
    tx.commit().await?;
    Ok(minted(&key, api_key))
}

async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery<ListFilters>,
) -> Result<axum::Json<KeyPage>, ApiError> {
    let page = query.page_of_ids()?;
    let query = query.filter;
    if let Some(p) = &query.principal {
        check_label("principal", p)?;
    }
    let (principal, now) = (query.principal.as_deref(), state.clock().now());
    let rows =
        async |tx: &mut TenantTx, after, n| Ok(api_keys::list(tx, after, n, principal, now).await?);
    let (data, next_cursor) = page.read(&state, &tenant.0, rows, |k| k.id).await?;
    Ok(axum::Json(KeyPage { data, next_cursor }))
}

async fn fetch(
    ById { state, tenant, id }: ById<ApiKeyKind>,
) -> Result<axum::Json<ApiKeyRecord>, ApiError> {
    let ctx = own_or(&tenant, id, Scope::KeysManage)?;
    let now = state.clock().now();
    let record = tx::read(
        &state,
        ctx,
        async |tx| Ok(api_keys::get(tx, id, now).await?),
    )
    .await?;
    Ok(axum::Json(record))
}

/// The answer of a mint: the key, shown this once, and its metadata.
fn minted(
    key: &bulkhead_auth::ApiKey,
    api_key: ApiKeyRecord,
) -> (StatusCode, axum::Json<MintedKey>) {
    let key = key.expose_secret().to_owned();
    (StatusCode::CREATED, axum::Json(MintedKey { key, api_key }))
}

/// Drops this process's cached facts of the keys a write changed, and the tenant's cached
/// ceilings (the keys' tokens are bound at once here; other processes hear the NOTIFYs sent at
/// commit).
fn forget_keys(state: &AppState, ctx: &TenantContext, ids: impl IntoIterator<Item = ApiKeyId>) {
    for id in ids {
        state.verifier().forget_key(id);
    }
    state.ceilings().invalidate_tenant(ctx.tenant_id());
}

/// A key may always read, narrow, rotate and revoke itself; anything else needs `scope`.
fn own_or(tenant: &Tenant, id: ApiKeyId, scope: Scope) -> Result<&TenantContext, ApiError> {
    if caller_key(&tenant.0) == Some(id) {
        Ok(&tenant.0)
    } else {
        tenant.require(scope)
    }
}

async fn update(
    ByIdJson(ById { state, tenant, id }, body): ByIdJson<ApiKeyKind, UpdateKey>,
) -> Result<axum::Json<ApiKeyRecord>, ApiError> {
    let ctx = own_or(&tenant, id, Scope::KeysManage)?;
    refuse_confined(ctx)?;
    let manages = ctx.has_scope(Scope::KeysManage);
    let now = state.clock().now();
    let description = validate::optional_description(body.description.as_deref())?;
    let allowed_ips = body
        .allowed_ips
        .as_deref()
        .map(parse_networks)
        .transpose()?;
    if let Some(Some(at)) = body.expires_at {
        check_future(Some(at), now)?;
    }
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let current = api_keys::get_for_update(&mut tx, id, now).await?;
    if !current.usable_at(now) {
        return Err(ApiError::Conflict(
            format!(
                "the key is {:?}; only a usable key can be changed",
                current.status
            )
            .to_lowercase(),
        ));
    }
    if caller_key(ctx) != Some(id) {
        // Changing another key (even its description) needs every scope it holds: loosening
        // its restrictions is a grant of those scopes.
        let scopes = ScopeSet::parse_all(&current.scopes)
            .map_err(|_| ApiError::Invalid("stored scopes".into()))?;
        check_may_grant(ctx, &scopes)?;
    }
    if !manages {
        // Without keys:manage a key may only narrow itself.
        let current_nets = keys::stored_networks(&current)?;
        let widens_ips = allowed_ips.as_ref().is_some_and(|new| {
            new.is_empty() && !current_nets.is_empty()
                || !current_nets.is_empty()
                    && !new
                        .iter()
                        .all(|n| current_nets.iter().any(|c| c.contains(n)))
        });
        let widens_expiry = body
            .expires_at
            .is_some_and(|new| match (new, current.expires_at) {
                (None, Some(_)) => true,
                (Some(new), Some(old)) => new > old,
                _ => false,
            });
        if widens_ips || widens_expiry {
            crate::http::extract::audit_forbidden(ctx, Scope::KeysManage, "widen own key");
            return Err(ApiError::MissingScope(Scope::KeysManage));
        }
    }
    let patch = KeyPatch {
        description,
        allowed_ips,
        expires_at: body.expires_at,
    };
    let record = api_keys::update(&mut tx, id, &patch, now).await?;
    Tail::new()
        .audit("api_key.update", id, json!({}))
        .commit(tx, &state, ctx)
        .await?;
    // A narrowed allowlist binds the key's tokens at once.
    forget_keys(&state, ctx, [id]);
    Ok(axum::Json(record))
}

async fn rotate(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> Result<(StatusCode, axum::Json<MintedKey>), ApiError> {
    let id: ApiKeyId = validate::id(&id)?;
    let ctx = own_or(&tenant, id, Scope::KeysManage)?;
    // The body is optional: an empty one means the tenant's default grace period.
    let body: RotateKey = if body.is_empty() {
        RotateKey::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::Invalid(e.to_string().into()))?
    };
    let now = state.clock().now();
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let current = api_keys::get(&mut tx, id, now).await?;
    // Rotating hands out a key with the old one's scopes: the caller must hold them all.
    let scopes = ScopeSet::parse_all(&current.scopes)
        .map_err(|_| ApiError::Invalid("stored scopes".into()))?;
    check_may_grant(ctx, &scopes)?;
    let grace_seconds = match body.grace_seconds {
        Some(s) if (0..=30 * 86_400).contains(&s) => s,
        Some(_) => {
            return Err(ApiError::Invalid(
                "grace_seconds is between 0 and 2592000 (30 days)".into(),
            ))
        }
        None => i64::from(api_keys::policy(&mut tx).await?.grace_seconds),
    };
    let (_, new_id, key) = keys::rotate(
        &mut tx,
        state.verifier().peppers(),
        state.config().key_environment,
        id,
        chrono::Duration::seconds(grace_seconds),
        now,
    )
    .await?;
    let api_key = api_keys::get(&mut tx, new_id, now).await?;
    tx.commit().await?;
    forget_keys(&state, ctx, [id]);
    Ok(minted(&key, api_key))
}

async fn revoke(
    ById { state, tenant, id }: ById<ApiKeyKind>,
) -> Result<axum::Json<ApiKeyRecord>, ApiError> {
    let ctx = own_or(&tenant, id, Scope::KeysManage)?;
    let now = state.clock().now();
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let (record, successors) = keys::revoke_with_self_made_successors(&mut tx, id, now).await?;
    tx.commit().await?;
    // Effective at once for the key and the tokens minted from it.
    forget_keys(&state, ctx, std::iter::once(id).chain(successors));
    Ok(axum::Json(record))
}

async fn revoke_all(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<RevokeAll>,
) -> Result<axum::Json<Revoked>, ApiError> {
    let ctx = &tenant.0;
    check_label("principal", &body.principal)?;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let revoked =
        api_keys::revoke_all_for_principal(&mut tx, &body.principal, state.clock().now()).await?;
    let tail = revoked.iter().fold(Tail::new(), |tail, id| {
        tail.audit(
            "api_key.revoke",
            id,
            json!({ "all_for_principal": body.principal }),
        )
        .event("api_key.revoked", json!({ "key_id": id }))
    });
    tail.commit(tx, &state, ctx).await?;
    forget_keys(&state, ctx, revoked.iter().copied());
    Ok(axum::Json(Revoked { revoked }))
}
