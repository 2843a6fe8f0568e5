//! `/operator/v1/tenants`: onboarding, listing, reading and changing tenants, through the same
//! services as `bulkhead tenant …` (`service::tenants`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bulkhead_core::id::TenantKind;
use bulkhead_core::TenantId;
use bulkhead_store::lifecycle::deletion::DeletionState;
use bulkhead_store::placement::registry::{
    Plan, RateLimitOverride, Tenant, TenantFilter, TenantStatus,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::OperatorState;
use crate::http::error::ApiError;
use crate::http::routes::kit::page::{into_page, ListQuery};
use crate::service::operators::OperatorContext;
use crate::service::tenants::{self, TenantRequest};

/// `POST /operator/v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTenant {
    slug: String,
    name: String,
    #[serde(default = "default_plan")]
    plan: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default = "default_tier")]
    tier: String,
    /// Accepted only to be refused with [`DEDICATED_REFUSED`] rather than a bare "unknown field":
    /// a dedicated database is never named through this API.
    #[serde(default)]
    database_url: Option<IgnoredAny>,
    /// As `database_url`.
    #[serde(default)]
    database_name: Option<IgnoredAny>,
}

/// Why the API never onboards a dedicated tenant: the server would connect to a URL the caller
/// chose and store an app URL carrying the serving role's password, which later connections
/// would send to that host. Naming a database is an owner-access operator's act, on the CLI.
const DEDICATED_REFUSED: &str = "dedicated tenants are not onboarded through the operator API: an \
     operator with owner access runs `bulkhead tenant create --tier dedicated` naming a database \
     the operator controls; this API takes tier shared or schema and no database_url or \
     database_name";

fn default_plan() -> String {
    "standard".into()
}
fn default_region() -> String {
    "default".into()
}
fn default_tier() -> String {
    "shared".into()
}

/// A new tenant, with its admin key shown this once.
#[derive(Debug, Serialize)]
pub(super) struct Created {
    tenant: Tenant,
    admin_api_key_id: String,
    admin_api_key: String,
}

pub(super) async fn create(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    crate::http::extract::Json(body): crate::http::extract::Json<CreateTenant>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    // Refused before anything is touched, whatever else the body says.
    if body.tier == "dedicated" || body.database_url.is_some() || body.database_name.is_some() {
        return Err(ApiError::Invalid(DEDICATED_REFUSED.into()));
    }
    let request = TenantRequest {
        slug: body.slug,
        name: body.name,
        plan: body.plan,
        region: body.region,
        tier: body.tier,
        dedicated: None,
    };
    let app = state.app();
    let onboarded = tenants::create(
        state.owner(),
        app.verifier().peppers(),
        Some(app.master_key()),
        app.config().key_environment,
        request,
        &ctx.actor,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            tenant: onboarded.tenant,
            admin_api_key_id: onboarded.admin_key_id.to_string(),
            admin_api_key: onboarded.admin_key.expose_secret().to_owned(),
        }),
    ))
}

/// The filters of `GET /operator/v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Filters {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

/// One page of tenants.
#[derive(Debug, Serialize)]
pub(super) struct TenantPage {
    data: Vec<Tenant>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<TenantId>,
}

pub(super) async fn list(
    State(state): State<OperatorState>,
    query: ListQuery<Filters>,
) -> Result<Json<TenantPage>, ApiError> {
    let (fetch, limit, after) = query.page_of_ids::<TenantKind>()?.fetch_parts();
    let filter = TenantFilter {
        status: query
            .filter
            .status
            .as_deref()
            .map(|s| {
                TenantStatus::parse(s)
                    .ok_or_else(|| ApiError::Invalid("status is active or suspended".into()))
            })
            .transpose()?,
        plan: query
            .filter
            .plan
            .as_deref()
            .map(|p| {
                Plan::parse(p)
                    .ok_or_else(|| ApiError::Invalid("plan is free, standard or enterprise".into()))
            })
            .transpose()?,
        region: query.filter.region.clone(),
    };
    let rows = state.owner().tenants_page(&filter, after, fetch).await?;
    let (data, next_cursor) = into_page(rows, limit, |t| t.id);
    Ok(Json(TenantPage { data, next_cursor }))
}

pub(super) async fn find(state: &OperatorState, text: &str) -> Result<Tenant, ApiError> {
    tenants::find(state.owner(), text)
        .await?
        .ok_or(ApiError::NotFound)
}

pub(super) async fn get(
    State(state): State<OperatorState>,
    Path(tenant): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(find(&state, &tenant).await?))
}

/// `PATCH /operator/v1/tenants/{tenant}`: at least one field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateTenant {
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    status: Option<String>,
    /// Absent: unchanged; `null`: back to the plan's budget; an object: the tenant's own.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<RateLimitBody>>,
}

/// A tenant's own request budget, as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitBody {
    requests_per_minute: u64,
    /// Default: `requests_per_minute`.
    #[serde(default)]
    burst: Option<u64>,
}

/// `Some` for a field that is present, even as `null` (serde's `default` gives `None` only for
/// an absent one): "clear it" and "leave it" are different requests.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The override a body asks for (`None`: the plan's), or 422 naming the range.
fn rate_limit(body: Option<RateLimitBody>) -> Result<Option<RateLimitOverride>, ApiError> {
    let Some(body) = body else {
        return Ok(None);
    };
    let per_minute = body.requests_per_minute;
    let burst = body.burst.unwrap_or(per_minute);
    u32::try_from(per_minute)
        .ok()
        .zip(u32::try_from(burst).ok())
        .and_then(|(p, b)| RateLimitOverride::new(p, b))
        .map(Some)
        .ok_or_else(|| {
            ApiError::Invalid(
                format!(
                    "rate_limit: requests_per_minute is at most {}, and burst (default \
                     requests_per_minute) {} to requests_per_minute",
                    RateLimitOverride::MAX,
                    RateLimitOverride::MIN_BURST
                )
                .into(),
            )
        })
}

pub(super) async fn update(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(tenant): Path<String>,
    crate::http::extract::Json(body): crate::http::extract::Json<UpdateTenant>,
) -> Result<Json<Tenant>, ApiError> {
    // Both validated before either is applied.
    let plan = body.plan.as_deref().map(tenants::parse_plan).transpose()?;
    let status = body
        .status
        .as_deref()
        .map(|s| {
            TenantStatus::parse(s)
                .ok_or_else(|| ApiError::Invalid("status is active or suspended".into()))
        })
        .transpose()?;
    let own_limit = body.rate_limit.map(rate_limit).transpose()?;
    if plan.is_none() && status.is_none() && own_limit.is_none() {
        return Err(ApiError::Invalid(
            "give at least one of plan, status and rate_limit".into(),
        ));
    }
    let found = find(&state, &tenant).await?;
    // What the tenant's deletion forbids is refused before anything is applied, so a refusal
    // leaves the tenant as it was (the store checks again under its locks).
    if let Some(deletion) = state.owner().tenant_deletion(found.id).await? {
        let purging = deletion.state != DeletionState::Scheduled;
        if status == Some(TenantStatus::Active)
            || purging && (plan.is_some() || own_limit.is_some())
        {
            return Err(ApiError::Conflict(format!(
                "the tenant's deletion is {}: only a suspension is taken{}",
                deletion.state.as_str(),
                if purging {
                    ""
                } else {
                    "; cancel the deletion to reactivate it"
                }
            )));
        }
    }
    let changed = async {
        let mut current = found.clone();
        if let Some(plan) = plan {
            current = tenants::set_plan(state.owner(), current.id, plan, &ctx.actor).await?;
        }
        if let Some(own_limit) = own_limit {
            current =
                tenants::set_rate_limit(state.owner(), current.id, own_limit, &ctx.actor).await?;
        }
        if let Some(status) = status {
            current = tenants::set_status(state.owner(), current.id, status, &ctx.actor).await?;
        }
        Ok::<_, ApiError>(current)
    }
    .await;
    // Whatever was applied before a failure holds here at once too.
    super::deletion::forget(&state, &found).await;
    Ok(Json(changed?))
}

pub(super) async fn suspend(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(tenant): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    let found = find(&state, &tenant).await?;
    let updated =
        tenants::set_status(state.owner(), found.id, TenantStatus::Suspended, &ctx.actor).await?;
    super::deletion::forget(&state, &updated).await;
    Ok(Json(updated))
}

pub(super) async fn activate(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path(tenant): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    let found = find(&state, &tenant).await?;
    let updated =
        tenants::set_status(state.owner(), found.id, TenantStatus::Active, &ctx.actor).await?;
    super::deletion::forget(&state, &updated).await;
    Ok(Json(updated))
}
