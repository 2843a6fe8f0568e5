//! Suspending and reactivating a tenant: every copy of its status, and the audit event, in its
//! own location.

use bulkhead_core::{TenantContext, TenantId};
use serde_json::json;

use crate::audit::{self, Outcome};
use crate::placement::registry::{
    from_row, set_anchor_column, Plan, RateLimitOverride, RegistryColumn, Tenant, TenantRow,
    TenantStatus, COLUMNS,
};
use crate::tenant::webhooks;
use crate::{Access, Store, StoreError, TenantTx};

impl Store {
    /// Suspends or reactivates a tenant, everywhere or nowhere. Needs the owner role.
    ///
    /// Every copy of the status changes: the registry row and, for a tenant whose rows live
    /// elsewhere, the anchor row of its location (what that location's claim functions read).
    /// A location this process cannot reach (a region it does not serve, a database that does not
    /// answer) fails the whole change with an error naming it, before anything is written. The
    /// `tenant.suspend` / `tenant.activate` event goes to the tenant's own audit log in the same
    /// transaction as its location's change, with the operator as actor.
    ///
    /// In the registry's database all of it is one transaction. Elsewhere the location's
    /// transaction (anchor and event) commits first, then the registry's; should the second
    /// commit fail, the error says so and running the command again completes it (each write
    /// sets a value, so repeating it is harmless).
    pub async fn set_tenant_status(
        &self,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant, StoreError> {
        self.set_tenant_status_by(id, status, "owner").await
    }

    /// [`Store::set_tenant_status`], naming who ran it in the audit event.
    ///
    /// Reactivation also makes the deliveries paused during the suspension due at once and
    /// wakes the webhook workers (wherever the tenant's rows live), after both copies of the
    /// status agree. Should that last step fail, they resume after their pause backoff.
    pub async fn set_tenant_status_by(
        &self,
        id: TenantId,
        status: TenantStatus,
        operator: &str,
    ) -> Result<Tenant, StoreError> {
        let tenant = self
            .write_registry_column(id, RegistryColumn::Status(status), operator)
            .await?;
        if status == TenantStatus::Active {
            let ctx = TenantContext::for_system(id, "operator");
            let resumed = async {
                let mut tx = self.begin(&ctx, Access::ReadWrite).await?;
                let n = webhooks::resume_paused_deliveries(&mut tx).await?;
                tx.commit().await?;
                Ok::<u64, StoreError>(n)
            }
            .await;
            match resumed {
                Ok(n) => {
                    tracing::info!(tenant_id = %id, resumed = n, "tenant active: paused webhook deliveries due now")
                }
                Err(err) => {
                    tracing::warn!(tenant_id = %id, error = %err, "paused webhook deliveries resume after their backoff")
                }
            }
        }
        Ok(tenant)
    }

    /// Changes a tenant's plan everywhere or nowhere, as [`Store::set_tenant_status_by`] changes
    /// its status: the registry row and the anchor row of its location (which the quota
    /// triggers read), and a `tenant.plan` event in the tenant's own audit log naming
    /// `operator`. Needs the owner role.
    pub async fn set_tenant_plan_by(
        &self,
        id: TenantId,
        plan: Plan,
        operator: &str,
    ) -> Result<Tenant, StoreError> {
        self.write_registry_column(id, RegistryColumn::Plan(plan), operator)
            .await
    }

    /// Sets or clears (`None`: back to its plan's) a tenant's own request budget, with a
    /// `tenant.rate_limit` event in its own audit log naming `operator`. Only the registry row
    /// holds it (the limiter reads it with the row; no location does). Needs the owner role.
    pub async fn set_tenant_rate_limit_by(
        &self,
        id: TenantId,
        rate_limit: Option<RateLimitOverride>,
        operator: &str,
    ) -> Result<Tenant, StoreError> {
        self.write_registry(id, Change::RateLimit(rate_limit), operator)
            .await
    }

    async fn write_registry_column(
        &self,
        id: TenantId,
        change: RegistryColumn,
        operator: &str,
    ) -> Result<Tenant, StoreError> {
        self.write_registry(id, Change::Column(change), operator)
            .await
    }

    /// [`Store::write_registry_once`], with a tenant frozen by a move answered as the conflict it
    /// is for an operator (409 naming the move: wait for its switch or abandon it) rather than
    /// the retryable 503 a tenant's own request gets.
    async fn write_registry(
        &self,
        id: TenantId,
        change: Change,
        operator: &str,
    ) -> Result<Tenant, StoreError> {
        match self.write_registry_once(id, change, operator).await {
            Err(StoreError::TenantMoving | StoreError::LocationMismatch) => {
                let mut conn = self.pool().acquire().await?;
                match crate::lifecycle::deletion::move_in_progress(&mut conn, id).await? {
                    Some(moving) => Err(StoreError::Conflict { constraint: moving }),
                    None => Err(StoreError::TenantMoving),
                }
            }
            other => other,
        }
    }

    async fn write_registry_once(
        &self,
        id: TenantId,
        change: Change,
        operator: &str,
    ) -> Result<Tenant, StoreError> {
        let current = self.tenant_by_id(id).await?.ok_or(StoreError::NotFound)?;
        let location = current.location()?;
        let router = self.router();
        if !router.serves(&location.region) {
            return Err(StoreError::WrongRegion(location.region.clone()));
        }
        let mut registry = self.pool().begin().await?;
        // A purge that has begun froze the tenant and is removing its rows: nothing changes it
        // any more, and saying so is a 409 here rather than the frozen location's retryable
        // 503 (which would promise that a retry can succeed).
        let purging = crate::lifecycle::deletion::deletion_row(&mut registry, id, false)
            .await?
            .map(|d| d.state)
            .filter(|state| *state != crate::lifecycle::deletion::DeletionState::Scheduled);
        if let Some(state) = purging {
            // Suspension is the one change a purge needs (its own first step suspends a tenant
            // that something reactivated); an operator's suspension of a tenant the purge has
            // suspended already changes nothing and is answered as it is.
            if change == Change::Column(RegistryColumn::Status(TenantStatus::Suspended)) {
                if current.status == TenantStatus::Suspended {
                    return Ok(current);
                }
            } else {
                return Err(StoreError::Conflict {
                    constraint: format!(
                        "the tenant's deletion is {}: its status, plan and rate limit no \
                     longer change",
                        state.as_str()
                    ),
                });
            }
        }
        // A move copies the plan to the new location once, when it prepares it: a plan changed
        // during the move would be lost there at the switch (the quota triggers read it), so it
        // waits for the move to end or be abandoned. A status is copied again at the switch.
        if let Change::Column(RegistryColumn::Plan(_)) = change {
            if let Some(moving) =
                crate::lifecycle::deletion::move_in_progress(&mut registry, id).await?
            {
                return Err(StoreError::Conflict { constraint: moving });
            }
        }
        let row: Option<TenantRow> = match change {
            Change::Column(column) => {
                // The column is a constant of `RegistryColumn`, never input.
                let sql = format!(
                    "UPDATE bulkhead.tenants SET {} = $2, updated_at = now() WHERE id = $1 \
                     RETURNING {COLUMNS}",
                    column.column()
                );
                sqlx::query_as(&sql)
                    .bind(id.uuid())
                    .bind(column.value())
                    .fetch_optional(&mut *registry)
                    .await?
            }
            Change::RateLimit(limit) => {
                let sql = format!(
                    "UPDATE bulkhead.tenants SET rate_limit_per_minute = $2, \
                     rate_limit_burst = $3, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
                );
                sqlx::query_as(&sql)
                    .bind(id.uuid())
                    .bind(limit.map(|l| l.columns().0))
                    .bind(limit.map(|l| l.columns().1))
                    .fetch_optional(&mut *registry)
                    .await?
            }
        };
        let tenant = row.map(from_row).transpose()?.ok_or(StoreError::NotFound)?;
        let ctx = TenantContext::for_system(id, "operator");
        let (action, from, to) = match change {
            Change::Column(column) => {
                let action = match column {
                    RegistryColumn::Status(TenantStatus::Active) => "tenant.activate",
                    RegistryColumn::Status(TenantStatus::Suspended) => "tenant.suspend",
                    RegistryColumn::Plan(_) => "tenant.plan",
                };
                (
                    action,
                    json!(column.current(&current)),
                    json!(column.value()),
                )
            }
            Change::RateLimit(limit) => {
                ("tenant.rate_limit", json!(current.rate_limit), json!(limit))
            }
        };
        let meta = json!({
            "from": from,
            "to": to,
            "operator": operator,
            "region": location.region,
        });
        // Only the status and the plan have copies in the anchor rows.
        let anchored = match change {
            Change::Column(column) => Some(column),
            Change::RateLimit(_) => None,
        };
        if router.shares_registry_database(&location) {
            if let (false, Some(column)) = (router.is_registry_location(&location), anchored) {
                set_anchor_column(&mut registry, &location, id, column).await?;
            }
            let mut tx = TenantTx::enter(registry, &ctx, Access::ReadWrite, &location).await?;
            tx.registry = Some(self.pool().clone());
            audit::record(
                &mut tx,
                action,
                Some(&id.to_string()),
                Outcome::Success,
                meta,
            )
            .await?;
            tx.commit().await?;
            return Ok(tenant);
        }
        let pool = router.pool_for(&location).await?;
        let mut there = pool.begin().await?;
        if let Some(column) = anchored {
            set_anchor_column(&mut there, &location, id, column).await?;
        }
        let mut tx = TenantTx::enter(there, &ctx, Access::ReadWrite, &location).await?;
        tx.registry = Some(self.pool().clone());
        audit::record(
            &mut tx,
            action,
            Some(&id.to_string()),
            Outcome::Success,
            meta,
        )
        .await?;
        tx.commit().await?;
        registry.commit().await?;
        Ok(tenant)
    }
}

/// A change to a tenant's registry row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// A column copied to the anchor rows.
    Column(RegistryColumn),
    /// The tenant's own request budget (registry only).
    RateLimit(Option<RateLimitOverride>),
}
