//! A tenant's quotas as its operator sees and changes them: usage and limit of every kind, and
//! the tenant's own limit of one kind (docs/quotas.md). One implementation for `bulkhead tenant
//! quota` on the data directory and for `/operator/v1/tenants/{tenant}/quotas`, which the same
//! command uses through a running server's socket.

use bulkhead_core::{TenantContext, TenantId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::lifecycle::deletion::DeletionState;
use bulkhead_store::lifecycle::moves;
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::tenant::quotas::{self, Usage};
use bulkhead_store::{Access, Store, StoreError};
use serde::Serialize;
use serde_json::json;

use crate::service::audit_line::{AuditLine, Detail};
use crate::service::operators;

/// Why a quota could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The tenant's state forbids it now (a purge has begun, a move is recorded): a 409.
    #[error("{0}")]
    Refused(String),
    /// The store's refusal or failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A tenant's quotas: its plan and each kind's usage and limit.
#[derive(Debug, Serialize)]
pub struct TenantQuotas {
    /// `tnt_…`.
    pub tenant: TenantId,
    /// Its plan, whose limits apply where it has none of its own.
    pub plan: &'static str,
    /// Usage and limit of every kind.
    pub quotas: Vec<Usage>,
}

/// The operator's context in the tenant (`system:<via>`: `cli` or `operator-api`).
pub fn operator_context(tenant: TenantId, via: &'static str) -> TenantContext {
    TenantContext::for_system(tenant, via)
}

/// Whether an operator may give a tenant its own limit of `kind`: a kind whose limit is
/// enforced (audit events and platform messages, attempts and decisions are counted only).
pub fn settable(kind: &str) -> bool {
    quotas::is_limited(kind)
}

/// What the tenant's purge or move forbids: its rows are frozen or going (the tenant API's
/// retryable 503 would promise a retry could succeed).
async fn refusal(owner: &Store, tenant: &Tenant, writing: bool) -> Result<(), QuotaError> {
    if let Some(deletion) = owner.tenant_deletion(tenant.id).await? {
        if deletion.state != DeletionState::Scheduled {
            return Err(QuotaError::Refused(format!(
                "the tenant's deletion is {}: its quotas are no longer kept",
                deletion.state.as_str()
            )));
        }
    }
    if writing && moves::recorded_move(owner, tenant.id).await?.is_some() {
        return Err(QuotaError::Refused(
            "the tenant is being moved: change its quotas once the move has finished or been \
             abandoned"
                .into(),
        ));
    }
    Ok(())
}

/// The kinds [`settable`] takes, for messages.
pub fn settable_kinds() -> String {
    quotas::limited_kinds().collect::<Vec<_>>().join(", ")
}

/// The tenant's quotas now.
pub async fn show(
    owner: &Store,
    tenant: &Tenant,
    ctx: &TenantContext,
) -> Result<TenantQuotas, QuotaError> {
    refusal(owner, tenant, false).await?;
    let mut tx = owner.begin(ctx, Access::ReadOnly).await?;
    let usage = quotas::usage(&mut tx).await?;
    tx.commit().await?;
    Ok(TenantQuotas {
        tenant: tenant.id,
        plan: tenant.plan.as_str(),
        quotas: usage,
    })
}

/// Sets the tenant's own limit of `kind` (`None`: back to its plan's) as `operator`: audited as
/// `tenant.quota` in the operator log (started, then success or failure, refusals included) and
/// as `quota.override` in the tenant's log in the transaction of the change; the kind as it is
/// afterwards.
pub async fn set(
    owner: &Store,
    tenant: &Tenant,
    ctx: &TenantContext,
    kind: &str,
    limit: Option<i64>,
    operator: &str,
) -> Result<Usage, QuotaError> {
    if !settable(kind) {
        return Err(
            StoreError::Invalid(format!("kind: one of {}", settable_kinds()).into()).into(),
        );
    }
    operators::audited(
        owner,
        operator,
        "tenant.quota",
        Some(tenant.id.to_string()),
        json!({ "kind": kind, "limit": limit }),
        |_: &Usage| tenant.id.to_string(),
        async {
            refusal(owner, tenant, true).await?;
            Ok(change(owner, ctx, kind, limit, operator).await?)
        },
    )
    .await
}

async fn change(
    owner: &Store,
    ctx: &TenantContext,
    kind: &str,
    limit: Option<i64>,
    operator: &str,
) -> Result<Usage, StoreError> {
    let mut tx = owner.begin(ctx, Access::ReadWrite).await?;
    let before = quotas::usage(&mut tx)
        .await?
        .into_iter()
        .find(|u| u.kind == kind)
        .ok_or_else(|| StoreError::Invalid("the kind is not in this tenant's plan".into()))?;
    quotas::set_override(&mut tx, kind, limit).await?;
    // In the same transaction: the override cannot change without its event.
    audit::record(
        &mut tx,
        "quota.override",
        None,
        Outcome::Success,
        json!({
            "kind": kind,
            "old_limit": before.limit,
            "new_override": limit,
            "operator": operator,
        }),
    )
    .await?;
    let after = quotas::usage(&mut tx)
        .await?
        .into_iter()
        .find(|u| u.kind == kind)
        .ok_or(StoreError::NotFound)?;
    tx.commit().await?;
    AuditLine::success("quota.override")
        .by(ctx)
        .with(Detail::Kind, kind.to_owned())
        .info("tenant quota changed");
    Ok(after)
}
