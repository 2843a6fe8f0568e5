//! `/operator/v1/tenants/{tenant}/quotas`: a tenant's quotas, and its own limit of one kind,
//! through `service::tenant_quotas` as `bulkhead tenant quota` (which uses these routes through
//! a running server's socket).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use bulkhead_store::tenant::quotas::Usage;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use super::OperatorState;
use crate::http::apidoc::OpDoc;
use crate::http::error::ApiError;
use crate::service::operators::OperatorContext;
use crate::service::tenant_quotas::{self, QuotaError, TenantQuotas};

/// The context the operator API acts in inside a tenant.
const VIA: &str = "operator-api";

pub(super) async fn show(
    State(state): State<OperatorState>,
    Path(tenant): Path<String>,
) -> Result<Json<TenantQuotas>, ApiError> {
    let found = super::tenants::find(&state, &tenant).await?;
    let ctx = tenant_quotas::operator_context(found.id, VIA);
    Ok(Json(
        tenant_quotas::show(state.owner(), &found, &ctx)
            .await
            .map_err(refused)?,
    ))
}

/// `PUT /operator/v1/tenants/{tenant}/quotas/{kind}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetQuota {
    /// The tenant's own limit (0 or more), or `null`: back to its plan's. Required.
    #[schema(value_type = Option<i64>, minimum = 0, required = true)]
    limit: Value,
}

pub(super) async fn set(
    State(state): State<OperatorState>,
    Extension(ctx): Extension<OperatorContext>,
    Path((tenant, kind)): Path<(String, String)>,
    crate::http::extract::Json(body): crate::http::extract::Json<SetQuota>,
) -> Result<Json<Usage>, ApiError> {
    // Malformed requests are refused before anything is looked up or audited.
    if !tenant_quotas::settable(&kind) {
        return Err(ApiError::Invalid(
            format!("kind: one of {}", tenant_quotas::settable_kinds()).into(),
        ));
    }
    let limit = match &body.limit {
        Value::Null => None,
        value => Some(value.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::Invalid("limit: a whole number of 0 or more, or null".into())
        })?),
    };
    let found = super::tenants::find(&state, &tenant).await?;
    let tenant_ctx = tenant_quotas::operator_context(found.id, VIA);
    let after = tenant_quotas::set(state.owner(), &found, &tenant_ctx, &kind, limit, &ctx.actor)
        .await
        .map_err(refused)?;
    Ok(Json(after))
}

fn refused(err: QuotaError) -> ApiError {
    match err {
        QuotaError::Refused(detail) => ApiError::Conflict(detail),
        QuotaError::Store(err) => err.into(),
    }
}

/// A tenant's quotas, for the document.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // a type for the document only
pub(super) struct TenantQuotasDoc {
    /// `tnt_…`.
    tenant: String,
    /// `free`, `standard` or `enterprise`.
    plan: String,
    /// Per kind (`limit` `null`: counted, never refused).
    quotas: Vec<QuotaDoc>,
}

/// One kind's usage and limit, for the document.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // a type for the document only
pub(super) struct QuotaDoc {
    /// The kind.
    kind: String,
    /// What the tenant stores now (rows, or bytes for `stored_bytes`).
    used: i64,
    /// The limit in force.
    limit: Option<i64>,
    /// The plan's limit.
    plan_limit: Option<i64>,
    /// Whether the tenant has a limit of its own.
    overridden: bool,
}

/// The `{kind}` path parameter: a kind an operator may limit.
pub(super) fn kind_param() -> OpDoc {
    let kinds: Vec<String> = bulkhead_store::tenant::quotas::limited_kinds()
        .map(str::to_owned)
        .collect();
    let schema: RefOr<Schema> = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(kinds))
        .build()
        .into();
    OpDoc::named("kind", schema, "The kind of quota")
}
