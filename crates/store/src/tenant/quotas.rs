//! Per-tenant quotas (migration 0020, docs/quotas.md): what a tenant has stored of each counted
//! kind, and the limit it may store.
//!
//! The counting and the refusal happen in the database, in the writing transaction: triggers on
//! every counted table adjust the tenant's counter row (`tenant_quotas`) and refuse a write that
//! would pass the limit with SQLSTATE `BQ001`, which [`StoreError::QuotaExceeded`] carries. This
//! module only reads the counters and lets the operator (the owner role) set overrides.

use serde::Serialize;

use crate::{StoreError, TenantTx};

/// Every counted kind, in the order they are shown.
pub const KINDS: &[&str] = &[
    "sessions",
    "users",
    "agents",
    "api_keys",
    "roles",
    "role_assignments",
    "webhook_endpoints",
    "webhook_messages",
    "platform_messages",
    "webhook_attempts",
    "tools",
    "tool_versions",
    "stored_bytes",
    "platform_bytes",
    "screening_decisions",
    "audit_events",
];

/// Whether `kind` is a counted kind.
pub fn is_kind(kind: &str) -> bool {
    KINDS.contains(&kind)
}

/// The counted kinds whose limit the triggers never enforce: audit events, platform messages and
/// bytes, webhook attempts and screening decisions (refusing them would refuse a security record
/// or the platform's own traffic).
pub const COUNTED_ONLY: &[&str] = &[
    "platform_messages",
    "webhook_attempts",
    "platform_bytes",
    "screening_decisions",
    "audit_events",
];

/// Whether the triggers enforce a limit of `kind`.
pub fn is_limited(kind: &str) -> bool {
    is_kind(kind) && !COUNTED_ONLY.contains(&kind)
}

/// The kinds whose limit the triggers enforce, in the order of [`KINDS`].
pub fn limited_kinds() -> impl Iterator<Item = &'static str> {
    KINDS.iter().copied().filter(|kind| is_limited(kind))
}

/// One kind's usage and limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// The kind (`sessions`, `stored_bytes`, ...).
    pub kind: String,
    /// What the tenant stores now (rows, or bytes for `stored_bytes`).
    pub used: i64,
    /// The limit in force; `null`: counted, never refused (`audit_events`).
    pub limit: Option<i64>,
    /// The plan's default limit.
    pub plan_limit: Option<i64>,
    /// Whether the operator set the limit for this tenant.
    pub overridden: bool,
}

/// kind, used, limit in force, plan limit, overridden.
type Row = (String, i64, Option<i64>, Option<i64>, bool);

/// Usage and limit of every kind for the transaction's tenant, in [`KINDS`] order.
pub async fn usage(tx: &mut TenantTx) -> Result<Vec<Usage>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT l.kind, coalesce(q.used, 0), coalesce(q.override_limit, l.max_value), \
                l.max_value, q.override_limit IS NOT NULL \
         FROM quota_plan_limits l \
         LEFT JOIN tenant_quotas q ON q.tenant_id = $1 AND q.kind = l.kind \
         WHERE l.plan = coalesce((SELECT t.plan FROM tenants t WHERE t.id = $1), 'free')",
    )
    .bind(tenant.uuid())
    .fetch_all(tx.conn())
    .await?;
    let mut out: Vec<Usage> = rows
        .into_iter()
        .map(|(kind, used, limit, plan_limit, overridden)| Usage {
            kind,
            used,
            limit,
            plan_limit,
            overridden,
        })
        .collect();
    out.sort_by_key(|u| {
        KINDS
            .iter()
            .position(|k| *k == u.kind)
            .unwrap_or(usize::MAX)
    });
    Ok(out)
}

/// Sets (or with `None` removes) the tenant's override of `kind`'s limit. Only the owner role
/// may: the serving role has no privilege on the column (a refusal is
/// [`StoreError::AccessDenied`]). The caller writes the audit event in the same transaction.
pub async fn set_override(
    tx: &mut TenantTx,
    kind: &str,
    limit: Option<i64>,
) -> Result<(), StoreError> {
    if !is_kind(kind) {
        return Err(StoreError::Invalid(
            format!("unknown quota kind {kind:?}").into(),
        ));
    }
    if limit.is_some_and(|l| l < 0) {
        return Err(StoreError::Invalid("a limit is 0 or more".into()));
    }
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO tenant_quotas (tenant_id, kind, used, override_limit) VALUES ($1, $2, 0, $3) \
         ON CONFLICT (tenant_id, kind) DO UPDATE SET override_limit = EXCLUDED.override_limit, \
         updated_at = now()",
    )
    .bind(tenant.uuid())
    .bind(kind)
    .bind(limit)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Refuses ([`StoreError::QuotaExceeded`], as a write past the limit would be) when the
/// transaction's tenant has no room for `requested` more of `kind`. A read of the counter, not a
/// reservation: the triggers stay the guard of every counted write. Used before work the quota
/// would waste (hashing a password) and before tenant actions whose rows are counted but never
/// refused (resend and recover make delivery attempts; migration 0023).
pub async fn require_room(tx: &mut TenantTx, kind: &str, requested: i64) -> Result<(), StoreError> {
    sqlx::query("SELECT bulkhead.quota_require_room($1, $2)")
        .bind(kind)
        .bind(requested)
        .execute(tx.conn())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limited_kind_is_a_counted_kind() {
        assert!(COUNTED_ONLY.iter().all(|k| is_kind(k)));
        assert!(limited_kinds().all(is_kind));
        assert!(!is_limited("audit_events"));
    }
}
