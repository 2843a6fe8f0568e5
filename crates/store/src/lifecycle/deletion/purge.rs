//! The purge: every row of a tenant in every location, then its registry rows, then the erasure
//! receipt — resumable, and never a tenant that serves half-deleted.
//!
//! Steps, each idempotent, progress kept in the tenant's `tenant_deletions` row:
//! 1. `purging` is recorded (no cancel from now on); the tenant is suspended again if anything
//!    reactivated it.
//! 2. The tenant is frozen where it lives (as a move freezes it: writers in flight are waited
//!    for, later ones refused, job and delivery claims skip it), so nothing writes to it again.
//!    Its audit log is sequenced and a checkpoint signed if the last one does not cover it; that
//!    checkpoint is stored in the row before anything is removed.
//! 3. Each location, the tenant's own first, then the shared schema of every region this process
//!    serves: a tenant schema is dropped whole (its rows counted first), elsewhere its rows are
//!    deleted table by table as the mover role (the only role the append-only audit triggers let
//!    delete) with the location's anchor row; the counts are recorded per location. A location
//!    already recorded is skipped. One that does not answer stops the run (it is retried; the
//!    tenant stays suspended, its registry row in place).
//! 4. One registry transaction: key routes, the registry row, an unused dedicated database's
//!    registration, `purged`, and the erasure receipt in the operator log, with NOTIFYs so that
//!    every process drops what it cached of the tenant.

use std::collections::BTreeMap;

use bulkhead_audit::LogSigningKey;
use bulkhead_core::{TenantContext, TenantId};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;

use super::{
    deletion_row, lock_deletion, move_in_progress, DeletionState, Row, TenantDeletion, COLUMNS,
    PURGE_LOCK_KEY,
};
use crate::audit::log as audit_log;
use crate::lifecycle::moves::{become_mover, freeze, set_context, stop_being_mover};
use crate::operators::NewOperatorEvent;
use crate::placement::location::{Location, Placement, TENANT_TABLES};
use crate::placement::registry::{Tenant, TenantStatus};
use crate::tenant::api_keys::KEY_CHANGES_CHANNEL;
use crate::tenant::rbac::CEILING_CHANGES_CHANNEL;
use crate::{Store, StoreError, TenantTx};

/// What a purge run ended with.
#[derive(Debug, Clone)]
pub struct PurgeOutcome {
    /// The record, `purged`.
    pub deletion: TenantDeletion,
    /// The receipt written to the operator log by this run (`None`: an earlier run finished it).
    pub receipt: Option<Value>,
}

fn describe(location: &Location) -> String {
    format!("{} in region {}", location.placement, location.region)
}

impl Store {
    /// Runs (or resumes) the purge of `tenant`, whose deletion must be scheduled. `key` signs the
    /// tenant's last checkpoint; `operator` names who asked (or `system:tenant-purge`). Owner
    /// role. A purge already finished returns its tombstone; one running in another process is a
    /// [`StoreError::Conflict`].
    pub async fn purge_tenant(
        &self,
        tenant_id: TenantId,
        key: &LogSigningKey,
        now: DateTime<Utc>,
        operator: &str,
    ) -> Result<PurgeOutcome, StoreError> {
        // One run per tenant across processes: a session lock on a connection of its own, which
        // is closed (releasing the lock) whatever happens.
        let mut guard = self.pool().acquire().await?.detach();
        let locked: bool =
            sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({PURGE_LOCK_KEY})"))
                .bind(tenant_id.uuid().to_string())
                .fetch_one(&mut guard)
                .await?;
        if !locked {
            return Err(StoreError::Conflict {
                constraint: "a purge of this tenant is running in another process, or an export \
                             of it is (the purge waits for it: try again)"
                    .into(),
            });
        }
        let result = self.purge_locked(tenant_id, key, now, operator).await;
        if let Err(err) = &result {
            let text: String = err.to_string().chars().take(1000).collect();
            let _ = sqlx::query(
                "UPDATE bulkhead.tenant_deletions SET last_error = $2 \
                 WHERE tenant_id = $1 AND state = 'purging'",
            )
            .bind(tenant_id.uuid())
            .bind(text)
            .execute(&mut guard)
            .await;
        }
        let _ = sqlx::Connection::close(guard).await;
        result
    }

    async fn purge_locked(
        &self,
        tenant_id: TenantId,
        key: &LogSigningKey,
        now: DateTime<Utc>,
        operator: &str,
    ) -> Result<PurgeOutcome, StoreError> {
        let Some(deletion) = self.begin_purge(tenant_id).await? else {
            return Err(StoreError::Conflict {
                constraint: "no deletion is scheduled for this tenant; schedule it first".into(),
            });
        };
        if deletion.state == DeletionState::Purged {
            return Ok(PurgeOutcome {
                deletion,
                receipt: None,
            });
        }
        let tenant = self.tenant_by_id(tenant_id).await?.ok_or_else(|| {
            StoreError::UnsafeConfiguration(
                "a purge is recorded but the tenant's registry row is gone".into(),
            )
        })?;
        // Fail closed: whatever reactivated it, it is not served while it is purged.
        if tenant.status != TenantStatus::Suspended {
            self.set_tenant_status_by(tenant.id, TenantStatus::Suspended, operator)
                .await?;
        }
        {
            let mut conn = self.pool().acquire().await?;
            if let Some(moving) = move_in_progress(&mut conn, tenant.id).await? {
                return Err(StoreError::Conflict { constraint: moving });
            }
        }
        let home = tenant.location()?;
        let router = self.router();
        if !router.serves(&home.region) {
            return Err(StoreError::WrongRegion(home.region.clone()));
        }
        // Nothing else writes from now on: the freeze waits for the writers in flight, refuses
        // later ones (the auth-failure flusher, the sequencer) and stops job and delivery
        // claims; so the checkpoint below covers the whole log and nothing reappears after the
        // rows are deleted.
        freeze(self, &tenant, &home).await?;
        let checkpoint = self.purge_checkpoint(&tenant, &home, key, now).await?;
        let mut locations = vec![home.clone()];
        let regions = std::iter::once(router.topology.default_region.clone())
            .chain(router.topology.regions.iter().map(|(r, _)| r.clone()));
        for region in regions {
            let shared = Location {
                region,
                placement: Placement::Shared,
            };
            if !locations.contains(&shared) {
                locations.push(shared);
            }
        }
        for location in &locations {
            let name = describe(location);
            let done = deletion
                .removed
                .as_object()
                .is_some_and(|m| m.contains_key(&name));
            if !done {
                self.scrub(&tenant, location, &name).await?;
            }
        }
        crate::hooks::reached(tenant.id, crate::hooks::HookPoint::PurgeScrubbed).await?;
        let (deletion, receipt) = self
            .finish_purge(&tenant, &home, checkpoint, operator)
            .await?;
        self.router().forget(tenant.id);
        self.forget_data_key(tenant.id);
        Ok(PurgeOutcome {
            deletion,
            receipt: Some(receipt),
        })
    }

    /// Records `purging` (from `scheduled`, or again on a resumed run) and returns the record.
    async fn begin_purge(&self, tenant: TenantId) -> Result<Option<TenantDeletion>, StoreError> {
        let mut tx = self.pool().begin().await?;
        lock_deletion(&mut tx, tenant).await?;
        let Some(current) = deletion_row(&mut tx, tenant, true).await? else {
            return Ok(None);
        };
        if current.state == DeletionState::Purged {
            return Ok(Some(current));
        }
        let row: Row = sqlx::query_as(&format!(
            "UPDATE bulkhead.tenant_deletions SET state = 'purging', \
             purge_started_at = coalesce(purge_started_at, now()), attempts = attempts + 1, \
             last_error = NULL WHERE tenant_id = $1 RETURNING {COLUMNS}"
        ))
        .bind(tenant.uuid())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        super::from_row(row).map(Some)
    }

    /// The tenant's audit log's last signed checkpoint, signing one now if the latest does not
    /// cover every event; stored in the deletion row before anything is removed, and read from
    /// there on a resumed run (the log may be gone by then).
    async fn purge_checkpoint(
        &self,
        tenant: &Tenant,
        home: &Location,
        key: &LogSigningKey,
        now: DateTime<Utc>,
    ) -> Result<Value, StoreError> {
        let stored: Option<Value> = sqlx::query_scalar(
            "SELECT tenant_checkpoint FROM bulkhead.tenant_deletions WHERE tenant_id = $1",
        )
        .bind(tenant.id.uuid())
        .fetch_one(self.pool())
        .await?;
        if let Some(stored) = stored {
            return Ok(stored);
        }
        let ctx = TenantContext::for_system(tenant.id, "tenant-purge");
        let pool = self.router().pool_for(home).await?;
        let mut tx = TenantTx::enter_frozen(pool.begin().await?, &ctx, home).await?;
        audit_log::sequence(&mut tx, audit_log::Sweep::Full).await?;
        let size = audit_log::tree_size(&mut tx).await?;
        if size > 0 && audit_log::checkpointed_size(&mut tx).await? != Some(size) {
            audit_log::sign_checkpoint(&mut tx, key, now).await?;
        }
        let latest = audit_log::latest_checkpoint(&mut tx).await?;
        tx.commit().await?;
        let value = match latest {
            Some(signed) => serde_json::to_value(signed).unwrap_or(Value::Null),
            None => json!({ "tree_size": 0 }),
        };
        Ok(sqlx::query_scalar(
            "UPDATE bulkhead.tenant_deletions SET tenant_checkpoint = coalesce(tenant_checkpoint, $2) \
             WHERE tenant_id = $1 RETURNING tenant_checkpoint",
        )
        .bind(tenant.id.uuid())
        .bind(value)
        .fetch_one(self.pool())
        .await?)
    }

    /// Removes the tenant's rows at `location` and records the counts under `name`. In the
    /// registry's database both are one transaction; elsewhere the location commits first (a
    /// crash between the two commits re-runs the location, which then counts 0: documented).
    async fn scrub(
        &self,
        tenant: &Tenant,
        location: &Location,
        name: &str,
    ) -> Result<(), StoreError> {
        let router = self.router();
        let same_database = router.shares_registry_database(location);
        let pool = if same_database {
            self.pool().clone()
        } else {
            router.pool_for(location).await?
        };
        let mut tx = pool.begin().await?;
        let counts = match &location.placement {
            Placement::Schema(schema) => drop_schema(&mut tx, schema.as_str(), tenant.id).await?,
            Placement::Shared | Placement::Dedicated(_) => {
                let anchor = !router.is_registry_location(location);
                delete_rows(&mut tx, location.placement.schema(), tenant.id, anchor).await?
            }
        };
        let counts = serde_json::to_value(counts).unwrap_or_default();
        let record = "UPDATE bulkhead.tenant_deletions SET removed = removed || jsonb_build_object($2::text, $3::jsonb) \
                      WHERE tenant_id = $1";
        if same_database {
            sqlx::query(record)
                .bind(tenant.id.uuid())
                .bind(name)
                .bind(&counts)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        } else {
            tx.commit().await?;
            sqlx::query(record)
                .bind(tenant.id.uuid())
                .bind(name)
                .bind(&counts)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// The registry's part, in one transaction: key routes, the move record (none), the registry
    /// row, the dedicated database's registration if no tenant uses it any more, the tombstone,
    /// the receipt, and the cache invalidations (sent at commit).
    async fn finish_purge(
        &self,
        tenant: &Tenant,
        home: &Location,
        checkpoint: Value,
        operator: &str,
    ) -> Result<(TenantDeletion, Value), StoreError> {
        let id = tenant.id.uuid();
        let mut tx = self.pool().begin().await?;
        let mut registry = BTreeMap::new();
        let key_routes = sqlx::query("DELETE FROM bulkhead.key_routes WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        registry.insert("key_routes", key_routes);
        // Crypto-shredding: the tenant's data key goes first, explicitly and counted (the
        // registry row's cascade would take it too), so the receipt says it was destroyed.
        let data_keys = sqlx::query("DELETE FROM bulkhead.tenant_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        registry.insert("tenant_keys", data_keys);
        sqlx::query("DELETE FROM bulkhead.tenant_moves WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let tenants = sqlx::query("DELETE FROM bulkhead.tenants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        registry.insert("tenants", tenants);
        if let Placement::Dedicated(database) = &home.placement {
            let unregistered = sqlx::query(
                "DELETE FROM bulkhead.tenant_databases WHERE name = $1 AND NOT EXISTS \
                 (SELECT 1 FROM bulkhead.tenants WHERE database_name = $1)",
            )
            .bind(database.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            registry.insert("tenant_databases", unregistered);
        }
        let registry_name = format!("registry (region {})", router_default(self));
        let row: Row = sqlx::query_as(&format!(
            "UPDATE bulkhead.tenant_deletions SET state = 'purged', purged_at = now(), \
             last_error = NULL, removed = removed || jsonb_build_object($2::text, $3::jsonb) \
             WHERE tenant_id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&registry_name)
        .bind(serde_json::to_value(&registry).unwrap_or_default())
        .fetch_one(&mut *tx)
        .await?;
        let deletion = super::from_row(row)?;
        let mut tables: BTreeMap<String, u64> = BTreeMap::new();
        if let Some(locations) = deletion.removed.as_object() {
            for counts in locations.values() {
                for (table, n) in counts.as_object().into_iter().flatten() {
                    *tables.entry(table.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
        let receipt = json!({
            "tenant_id": tenant.id.to_string(),
            "tier": home.placement.tier().as_str(),
            "region": home.region,
            "scheduled_at": deletion.scheduled_at,
            "scheduled_by": deletion.scheduled_by,
            "purge_started_at": deletion.purge_started_at,
            "purged_at": deletion.purged_at,
            "rows": tables.values().sum::<u64>(),
            "tables": tables,
            "locations": deletion.removed,
            "tenant_audit_log": {
                "policy": "purged with the tenant; this receipt keeps its last signed checkpoint",
                "last_checkpoint": checkpoint,
            },
        });
        crate::operators::insert_event(
            &mut tx,
            &NewOperatorEvent {
                actor: operator.to_owned(),
                action: "tenant.erasure_receipt",
                outcome: "success",
                resource_id: Some(tenant.id.to_string()),
                reason: None,
                metadata: receipt.clone(),
            },
        )
        .await?;
        // Every process drops its cached key verifications (a payload that is no key id clears
        // the cache) and the tenant's cached role ceilings.
        for (channel, payload) in [
            (KEY_CHANGES_CHANNEL, "tenant-purged".to_owned()),
            (CEILING_CHANGES_CHANNEL, id.to_string()),
        ] {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((deletion, receipt))
    }
}

fn router_default(store: &Store) -> &str {
    &store.router().topology.default_region
}

/// Counts the tenant's rows in its schema, then drops the schema; nothing if it is gone.
async fn drop_schema(
    conn: &mut PgConnection,
    schema: &str,
    tenant: TenantId,
) -> Result<BTreeMap<&'static str, u64>, StoreError> {
    let mut counts = BTreeMap::new();
    let present: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *conn)
            .await?;
    if !present {
        return Ok(counts);
    }
    // FORCE RLS holds for the owner too: the counts are read in the tenant's context.
    set_context(conn, tenant).await?;
    for table in TENANT_TABLES.iter().chain(["tenants"].iter()) {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("\"{schema}\".{table}"))
            .fetch_one(&mut *conn)
            .await?;
        if !exists {
            continue;
        }
        let column = if *table == "tenants" {
            "id"
        } else {
            "tenant_id"
        };
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{schema}\".{table} WHERE {column} = $1"
        ))
        .bind(tenant.uuid())
        .fetch_one(&mut *conn)
        .await?;
        if n > 0 {
            counts.insert(*table, n.unsigned_abs());
        }
    }
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut *conn)
        .await?;
    Ok(counts)
}

/// Deletes the tenant's rows from every tenant table of `schema` (children first) as the mover
/// role, and its anchor row there when `anchor`.
async fn delete_rows(
    conn: &mut PgConnection,
    schema: &str,
    tenant: TenantId,
    anchor: bool,
) -> Result<BTreeMap<&'static str, u64>, StoreError> {
    set_context(conn, tenant).await?;
    become_mover(conn).await?;
    let mut counts = BTreeMap::new();
    for table in TENANT_TABLES.iter().rev() {
        let n = sqlx::query(&format!(
            "DELETE FROM \"{schema}\".{table} WHERE tenant_id = $1"
        ))
        .bind(tenant.uuid())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if n > 0 {
            counts.insert(*table, n);
        }
    }
    stop_being_mover(conn).await?;
    if anchor {
        let n = sqlx::query(&format!("DELETE FROM \"{schema}\".tenants WHERE id = $1"))
            .bind(tenant.uuid())
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if n > 0 {
            counts.insert("tenants", n);
        }
    }
    Ok(counts)
}
