//! Quotas (docs/quotas.md): the store refuses a write past a tenant's quota inside its own
//! transaction (migration 0020); here the refusal, which rolled that transaction back, is
//! audited in a transaction of its own before the answer leaves.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bulkhead_core::TenantContext;
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::Access;
use serde_json::json;

use crate::http::error::QuotaRefusal;
use crate::http::state::AppState;
use crate::service::audit_line::{AuditLine, Detail};

/// Route middleware of the tenant API: when the answer is `quota-exceeded`, writes a
/// `quota.exceeded` audit event (outcome `blocked`) naming the kind, limit, usage and route, and
/// commits it before the answer is sent. Audit events are never refused for quota, so this write
/// succeeds even when the tenant is full; if it fails anyway (the database unreachable, the
/// tenant frozen for a move) the refusal still stands and the failure is logged.
pub async fn audit_refusals(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let ctx = request.extensions().get::<TenantContext>().cloned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().to_string();
    let mut response = next.run(request).await;
    if let (Some(refusal), Some(ctx)) = (response.extensions().get::<QuotaRefusal>().cloned(), ctx)
    {
        let refusal = &refusal;
        let route = format!("{method} {}", route.unwrap_or_default());
        AuditLine::blocked("quota.exceeded")
            .by(&ctx)
            .with(Detail::Kind, &refusal.kind)
            .quota(refusal.limit, refusal.usage)
            .warn("write refused by the tenant's quota");
        if let Err(err) = record(&state, &ctx, refusal, &route).await {
            tracing::error!(
                target: "bulkhead::audit",
                tenant_id = %ctx.tenant_id(),
                error = %err,
                "could not persist a quota refusal"
            );
        }
        // A prefix-confined credential is not told the tenant-wide usage (docs/quotas.md).
        if ctx.actor().resource_prefix().is_some() {
            response = refusal.confined_response();
        }
    }
    response
}

async fn record(
    state: &AppState,
    ctx: &TenantContext,
    refusal: &QuotaRefusal,
    route: &str,
) -> Result<(), bulkhead_store::StoreError> {
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    audit::record(
        &mut tx,
        "quota.exceeded",
        None,
        Outcome::Blocked,
        json!({
            "kind": refusal.kind,
            "limit": refusal.limit,
            "usage": refusal.usage,
            "requested": refusal.requested,
            "route": route,
        }),
    )
    .await?;
    tx.commit().await
}
