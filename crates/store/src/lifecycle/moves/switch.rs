//! Switching a tenant to its copy: the commit that makes the target live and the source's
//! anchor retired, and removing a copy that is no longer wanted.

use super::*;

/// The commit point: the registry row is pointed at the new location and the freeze lifted,
/// with the move's step, in one transaction. Then [`finish_switch`] retires the source's anchor
/// and makes the target's live.
///
/// Until the commit nothing else changes: the source still serves reads (only writes are frozen)
/// and the target is not live, so nothing (a request, a job claim, a delivery claim) has been
/// served from it and an abandon is safe. After it, the target goes live only once the source's
/// anchor is retired, so two copies are never live together: when the source's anchor is in the
/// registry's database both happen inside the commit; otherwise the tenant answers a retryable
/// 503 in between (moments, or until a move killed there is run again).
pub(super) async fn switch(
    owner: &Store,
    tenant: &Tenant,
    from: &Location,
    to: &Location,
) -> Result<(), StoreError> {
    let router = owner.router();
    crate::hooks::reached(tenant.id, HookPoint::SwitchBeforeCommit).await?;
    // Whether the source is retired inside the commit (its anchor is the registry row itself or
    // in the registry's database): only then may the target go live inside it too.
    let source_in_commit = router.shares_registry_database(from);
    let (schema_name, database_name) = to.placement.columns();
    let mut tx = owner.pool().begin().await?;
    sqlx::query(
        "UPDATE bulkhead.tenants SET isolation_tier = $2, schema_name = $3, database_name = $4, \
         region = $5, frozen_since = NULL, live = $6, updated_at = now() WHERE id = $1",
    )
    .bind(tenant.id.uuid())
    .bind(to.placement.tier().as_str())
    .bind(schema_name)
    .bind(database_name)
    .bind(&to.region)
    .bind(router.is_registry_location(to) && source_in_commit)
    .execute(&mut *tx)
    .await?;
    if source_in_commit && !router.is_registry_location(from) {
        retire_source_anchor(&mut tx, tenant.id, from, to).await?;
    }
    if source_in_commit && router.shares_registry_database(to) && !router.is_registry_location(to) {
        let status = registry_status(&mut tx, tenant.id).await?;
        activate_target_anchor(&mut tx, tenant.id, to, &status).await?;
    }
    sqlx::query(
        "UPDATE bulkhead.tenant_moves SET step = 'cleanup', updated_at = now() WHERE tenant_id = $1",
    )
    .bind(tenant.id.uuid())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    router.forget(tenant.id);
    crate::hooks::reached(tenant.id, HookPoint::SwitchCommitted).await?;
    finish_switch(owner, tenant, from, to).await
}

/// After the registry commit: the source's anchor, if it is outside the registry's database, is
/// retired first, so a router with a stale route is refused there from now on; then the target's
/// anchor goes live. Idempotent; a resumed move runs it again before its cleanup.
pub(super) async fn finish_switch(
    owner: &Store,
    tenant: &Tenant,
    from: &Location,
    to: &Location,
) -> Result<(), StoreError> {
    let router = owner.router();
    if !router.shares_registry_database(from) {
        let pool = router.pool_for(from).await?;
        let mut conn = pool.acquire().await?;
        retire_source_anchor(&mut conn, tenant.id, from, to).await?;
    }
    let mut registry = owner.pool().acquire().await?;
    if router.is_registry_location(to) {
        sqlx::query(
            "UPDATE bulkhead.tenants SET live = true, frozen_since = NULL, updated_at = now() \
             WHERE id = $1 AND NOT live",
        )
        .bind(tenant.id.uuid())
        .execute(&mut *registry)
        .await?;
    } else {
        let status = registry_status(&mut registry, tenant.id).await?;
        drop(registry);
        let pool = router.pool_for(to).await?;
        let mut conn = pool.acquire().await?;
        activate_target_anchor(&mut conn, tenant.id, to, &status).await?;
    }
    router.forget(tenant.id);
    Ok(())
}

/// The source's anchor names the new location and is no longer live: its queues are no longer
/// claimed and a stale route is refused. A no-op once the cleanup has removed the source.
pub(super) async fn retire_source_anchor(
    conn: &mut PgConnection,
    tenant: TenantId,
    from: &Location,
    to: &Location,
) -> Result<(), StoreError> {
    let schema = from.placement.schema();
    let present: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("\"{schema}\".tenants"))
        .fetch_one(&mut *conn)
        .await?;
    if !present {
        return Ok(());
    }
    let (schema_name, database_name) = to.placement.columns();
    sqlx::query(&format!(
        "UPDATE \"{schema}\".tenants SET isolation_tier = $2, schema_name = $3, \
         database_name = $4, region = $5, live = false, updated_at = now() WHERE id = $1"
    ))
    .bind(tenant.uuid())
    .bind(to.placement.tier().as_str())
    .bind(schema_name)
    .bind(database_name)
    .bind(&to.region)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The target's anchor goes live, unfrozen, with the tenant's status as the registry has it now.
pub(super) async fn activate_target_anchor(
    conn: &mut PgConnection,
    tenant: TenantId,
    to: &Location,
    status: &str,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "UPDATE \"{}\".tenants SET live = true, frozen_since = NULL, status = $2, \
         updated_at = now() WHERE id = $1",
        to.placement.schema()
    ))
    .bind(tenant.uuid())
    .bind(status)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The tenant's status in the registry.
pub(super) async fn registry_status(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<String, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT status FROM bulkhead.tenants WHERE id = $1")
            .bind(tenant.uuid())
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Removes the old copy and the key routes a shared-tier tenant no longer needs.
pub(super) async fn cleanup(
    owner: &Store,
    tenant: &Tenant,
    from: &Location,
    to: &Location,
) -> Result<(), StoreError> {
    remove_copy(owner, tenant.id, from).await?;
    if to.placement == Placement::Shared {
        sqlx::query("DELETE FROM bulkhead.key_routes WHERE tenant_id = $1")
            .bind(tenant.id.uuid())
            .execute(owner.pool())
            .await?;
    }
    Ok(())
}

/// Removes the tenant's copy at `at`: a tenant schema is dropped whole; from a shared schema or
/// a dedicated database the tenant's rows are deleted, in its own context, as the mover role,
/// with its anchor row unless that is the registry row.
pub(super) async fn remove_copy(
    owner: &Store,
    tenant: TenantId,
    at: &Location,
) -> Result<(), StoreError> {
    let router = owner.router();
    let pool = router.pool_for(at).await?;
    match &at.placement {
        Placement::Schema(schema) => {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&pool)
                .await?;
        }
        Placement::Shared | Placement::Dedicated(_) => {
            let schema = at.placement.schema();
            let mut tx = pool.begin().await?;
            set_context(&mut tx, tenant).await?;
            delete_rows(&mut tx, schema, tenant).await?;
            if !router.is_registry_location(at) {
                sqlx::query(&format!("DELETE FROM \"{schema}\".tenants WHERE id = $1"))
                    .bind(tenant.uuid())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}
