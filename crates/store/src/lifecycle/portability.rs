//! Tenant export and import (issue 19, data portability): every row a tenant owns, table by
//! table as NDJSON, read from one snapshot, and written back in one transaction at a location of
//! another (or the same) deployment.
//!
//! # Invariants
//! - An export reads every table of [`TENANT_TABLES`] in one `REPEATABLE READ, READ ONLY`
//!   transaction with the tenant's context set, so the rows are one consistent snapshot and
//!   row-level security still limits what is read to the tenant's rows. Rows leave as their
//!   stored values: sealed secrets stay sealed, hashes stay hashes; nothing is decrypted.
//! - Memory is bounded by a part (about [`PART_BYTES`] plus one fetch of [`FETCH_ROWS`] rows),
//!   never by the tenant's size: rows come through a server-side cursor.
//! - An import writes the registry row, the tenant's anchor and every row in the tables' foreign
//!   key order, under the imported tenant's own context (so a row naming another tenant is
//!   refused by row-level security), and counts what it wrote. Where the location shares the
//!   registry's database it is one transaction; elsewhere the registry row is committed first
//!   (suspended) and removed again if the rows fail, as onboarding does.
//! - A tenant id or slug that already exists in the target deployment is a conflict: an import
//!   never merges into an existing tenant. Nor does it restore a tenant the target deployment
//!   erased (or is erasing): its deletion record stays the last word on that id.

use std::collections::BTreeMap;

use bulkhead_core::TenantId;
use sqlx::{Postgres, Transaction};

use super::deletion::PURGE_LOCK_KEY;
use super::moves::copy::{columns, primary_key, set_context};
use crate::placement::location::{Location, Placement, SchemaName, TENANT_TABLES};
use crate::placement::registry::{
    from_row, write_anchor, Tenant, TenantRow, TenantStatus, COLUMNS,
};
use crate::placement::{migrate, tiers};
use crate::{Store, StoreError};

/// Rows fetched from the export cursor at a time.
pub const FETCH_ROWS: i64 = 256;

/// The longest pause between two parts an export survives (see [`TenantExport::open`]).
pub const EXPORT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A part is emitted once it holds this many bytes (or its table ends).
pub const PART_BYTES: usize = 1 << 20;

/// Some of one table's rows, one JSON object per line (`\n`-terminated), in primary-key order.
#[derive(Debug)]
pub struct ExportPart {
    /// The table ([`TENANT_TABLES`]).
    pub table: &'static str,
    /// The rows as NDJSON.
    pub ndjson: Vec<u8>,
    /// How many rows.
    pub rows: u64,
}

/// The purge lock held shared for one export ([`TenantExport::guard`]).
pub struct ExportGuard {
    tenant: TenantId,
    tx: Transaction<'static, Postgres>,
}

impl std::fmt::Debug for ExportGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportGuard")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// A running export: one read-only snapshot of the tenant's location.
pub struct TenantExport {
    tenant: Tenant,
    /// Holds the purge lock shared (a purge waits until the export ends; an export does not
    /// start during a purge): a transaction on the registry's database.
    purge_guard: Transaction<'static, Postgres>,
    tx: Transaction<'static, Postgres>,
    schema: String,
    next_table: usize,
    cursor_open: bool,
}

impl std::fmt::Debug for TenantExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantExport")
            .field("tenant", &self.tenant.id)
            .field("next_table", &self.next_table)
            .finish_non_exhaustive()
    }
}

impl TenantExport {
    /// Keeps a purge of `tenant` from starting until the export opened with the guard ends, or
    /// refuses if one has begun. Taken before anything of the export is read (the audit log's
    /// snapshot comes first).
    pub async fn guard(owner: &Store, tenant: TenantId) -> Result<ExportGuard, StoreError> {
        let mut tx = owner.pool().begin().await?;
        let free: bool = sqlx::query_scalar(&format!(
            "SELECT pg_try_advisory_xact_lock_shared({PURGE_LOCK_KEY})"
        ))
        .bind(tenant.uuid().to_string())
        .fetch_one(&mut *tx)
        .await?;
        let purging: Option<String> = sqlx::query_scalar(
            "SELECT state FROM bulkhead.tenant_deletions \
             WHERE tenant_id = $1 AND state <> 'scheduled'",
        )
        .bind(tenant.uuid())
        .fetch_optional(&mut *tx)
        .await?;
        if !free || purging.is_some() {
            // Half-deleted rows are no export (a purged tenant has no registry row: 404).
            return Err(StoreError::Conflict {
                constraint: "the tenant is being purged".into(),
            });
        }
        Ok(ExportGuard { tenant, tx })
    }

    /// Opens the snapshot of the guarded tenant's rows. `owner` must be a store on the owner
    /// role.
    pub async fn open(owner: &Store, guard: ExportGuard) -> Result<Self, StoreError> {
        let ExportGuard {
            tenant,
            tx: purge_guard,
        } = guard;
        let tenant = owner
            .tenant_by_id(tenant)
            .await?
            .ok_or(StoreError::NotFound)?;
        let location = tenant.location()?;
        let pool = owner.router().pool_for(&location).await?;
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        set_context(&mut tx, tenant.id).await?;
        // A reader that stops taking parts (a stalled download) must not hold this snapshot's
        // xmin horizon, which stops VACUUM for every tenant of the database: the server ends
        // the transaction after this long between two fetches, and the export fails.
        sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
            .bind(format!("{}ms", EXPORT_IDLE_TIMEOUT.as_millis()))
            .execute(&mut *tx)
            .await?;
        Ok(Self {
            tenant,
            purge_guard,
            tx,
            schema: location.placement.schema().to_owned(),
            next_table: 0,
            cursor_open: false,
        })
    }

    /// The tenant's registry record as of the export's start.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The next part, or `None` when every table has been read. A table without rows yields no
    /// part.
    pub async fn next_part(&mut self) -> Result<Option<ExportPart>, StoreError> {
        let mut ndjson = Vec::new();
        let mut rows = 0u64;
        loop {
            let Some(&table) = TENANT_TABLES.get(self.next_table) else {
                return Ok(None);
            };
            if !self.cursor_open {
                let cols = columns(&mut self.tx, &self.schema, table).await?;
                let pk = primary_key(&mut self.tx, &self.schema, table).await?;
                // DECLARE takes no bind parameters; the id is a formatted UUID, the names come
                // from the catalog (quoted) and TENANT_TABLES.
                sqlx::query(&format!(
                    "DECLARE bulkhead_export NO SCROLL CURSOR FOR \
                     SELECT row_to_json(r)::text FROM (SELECT {cols} FROM \"{schema}\".{table} \
                     WHERE tenant_id = '{id}' ORDER BY {pk}) r",
                    schema = self.schema,
                    id = self.tenant.id.uuid(),
                    pk = pk.join(", "),
                ))
                .execute(&mut *self.tx)
                .await?;
                self.cursor_open = true;
            }
            let fetched: Vec<String> =
                sqlx::query_scalar(&format!("FETCH FORWARD {FETCH_ROWS} FROM bulkhead_export"))
                    .fetch_all(&mut *self.tx)
                    .await?;
            let ended = (fetched.len() as i64) < FETCH_ROWS;
            for line in &fetched {
                ndjson.extend_from_slice(line.as_bytes());
                ndjson.push(b'\n');
            }
            rows += fetched.len() as u64;
            if ended {
                sqlx::query("CLOSE bulkhead_export")
                    .execute(&mut *self.tx)
                    .await?;
                self.cursor_open = false;
                self.next_table += 1;
            }
            if rows > 0 && (ended || ndjson.len() >= PART_BYTES) {
                return Ok(Some(ExportPart {
                    table,
                    ndjson,
                    rows,
                }));
            }
        }
    }

    /// Ends the snapshot (and lets a waiting purge start).
    pub async fn finish(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        self.purge_guard.rollback().await?;
        Ok(())
    }
}

/// A running import: the tenant's rows written so far, uncommitted.
pub struct TenantImport {
    tenant: Tenant,
    location: Location,
    tx: Transaction<'static, Postgres>,
    /// The registry row's own transaction, when the location shares the registry's database
    /// (then `tx` is the same transaction and this is `None`) — see the module invariants.
    registry_committed: bool,
    status: TenantStatus,
    table_index: usize,
    counts: BTreeMap<&'static str, u64>,
}

impl std::fmt::Debug for TenantImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantImport")
            .field("tenant", &self.tenant.id)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl TenantImport {
    /// Registers `source` (its id, slug, name, plan, status and creation time) at `placement`
    /// in `region` and opens the transaction its rows go into. `owner` must be a store on the
    /// owner role. A schema placement gets the schema named after the tenant's id.
    pub async fn begin(
        owner: &Store,
        source: &Tenant,
        placement: Placement,
        region: &str,
    ) -> Result<Self, StoreError> {
        let placement = match placement {
            Placement::Schema(_) => Placement::Schema(SchemaName::for_tenant(source.id)),
            other => other,
        };
        let location = Location {
            region: region.to_owned(),
            placement,
        };
        let router = owner.router();
        if !router.serves(&location.region) {
            return Err(StoreError::WrongRegion(location.region.clone()));
        }
        if owner.tenant_by_id(source.id).await?.is_some() {
            return Err(StoreError::Conflict {
                constraint: "tenants_pkey".into(),
            });
        }
        // An erasure is final here: an archive made before it does not bring the tenant back
        // under its id (its tombstone and receipt would then describe a tenant that serves).
        let erased: Option<String> =
            sqlx::query_scalar("SELECT state FROM bulkhead.tenant_deletions WHERE tenant_id = $1")
                .bind(source.id.uuid())
                .fetch_optional(owner.pool())
                .await?;
        if let Some(state) = erased {
            return Err(StoreError::Invalid(
                format!(
                    "tenant {} has a deletion record here (state {state}): an erased tenant is \
                     not restored under its id",
                    source.id
                )
                .into(),
            ));
        }
        let in_registry_database = router.shares_registry_database(&location);
        if !in_registry_database {
            tiers::prepare_location(owner, &location).await?;
        }
        let mut registry = owner.pool().begin().await?;
        let (schema_name, database_name) = location.placement.columns();
        // Outside the registry's database the registry row commits before the rows: it stays
        // suspended (nothing serves it) until they have.
        let status = if in_registry_database {
            source.status
        } else {
            TenantStatus::Suspended
        };
        let row: TenantRow = sqlx::query_as(&format!(
            "INSERT INTO bulkhead.tenants (id, slug, display_name, plan, region, isolation_tier, \
             schema_name, database_name, live, status, created_at, rate_limit_per_minute, \
             rate_limit_burst) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 \
             WHERE NOT EXISTS (SELECT 1 FROM bulkhead.tenant_deletions WHERE tenant_id = $1) \
             RETURNING {COLUMNS}"
        ))
        .bind(source.id.uuid())
        .bind(source.slug.as_str())
        .bind(&source.display_name)
        .bind(source.plan.as_str())
        .bind(&location.region)
        .bind(location.placement.tier().as_str())
        .bind(schema_name)
        .bind(database_name)
        .bind(router.is_registry_location(&location))
        .bind(status.as_str())
        .bind(source.created_at)
        .bind(source.rate_limit.map(|l| l.columns().0))
        .bind(source.rate_limit.map(|l| l.columns().1))
        .fetch_optional(&mut *registry)
        .await?
        // A deletion record written since the check above (the same rule, now in the insert).
        .ok_or_else(|| {
            StoreError::Invalid("the tenant has a deletion record here: not restored".into())
        })?;
        let tenant = from_row(row)?;
        let tx = if in_registry_database {
            if let Placement::Schema(schema) = &location.placement {
                migrate::apply_on(&mut registry, schema.as_str(), Some(schema)).await?;
                write_anchor(&mut registry, &tenant, &location, true).await?;
            }
            // One transaction: an error anywhere rolls back the registry row with the rows.
            set_context(&mut registry, tenant.id).await?;
            registry
        } else {
            registry.commit().await?;
            let opened = async {
                let pool = router.pool_for(&location).await?;
                let mut tx = pool.begin().await?;
                write_anchor(&mut tx, &tenant, &location, true).await?;
                set_context(&mut tx, tenant.id).await?;
                Ok::<_, StoreError>(tx)
            }
            .await;
            match opened {
                Ok(tx) => tx,
                Err(err) => {
                    forget_registry_row(owner, tenant.id).await;
                    return Err(err);
                }
            }
        };
        Ok(Self {
            tenant,
            location,
            tx,
            registry_committed: !in_registry_database,
            status: source.status,
            table_index: 0,
            counts: BTreeMap::new(),
        })
    }

    /// The tenant being imported, as registered.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Writes rows of `table` (NDJSON, one object per line). Tables must come in
    /// [`TENANT_TABLES`] order (parents before children), a table's parts one after another.
    /// Returns how many rows were written.
    pub async fn add_rows(&mut self, table: &str, ndjson: &[u8]) -> Result<u64, StoreError> {
        let position = TENANT_TABLES
            .iter()
            .position(|t| *t == table)
            .ok_or_else(|| StoreError::Invalid(format!("unknown table {table:?}").into()))?;
        if position < self.table_index {
            return Err(StoreError::Invalid(
                format!("table {table:?} comes after a table that must follow it").into(),
            ));
        }
        self.table_index = position;
        let table = TENANT_TABLES[position];
        let text = std::str::from_utf8(ndjson)
            .map_err(|_| StoreError::Invalid(format!("{table}: rows are not UTF-8").into()))?;
        let mut array = String::with_capacity(text.len() + 2);
        array.push('[');
        for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            if n > 0 {
                array.push(',');
            }
            array.push_str(line);
        }
        array.push(']');
        let schema = self.location.placement.schema().to_owned();
        let cols = columns(&mut self.tx, &schema, table).await?;
        // The rows take the table's own types (json_populate_recordset); row-level security
        // checks every one against the imported tenant's context.
        let written = sqlx::query(&format!(
            "INSERT INTO \"{schema}\".{table} ({cols}) \
             SELECT {cols} FROM json_populate_recordset(NULL::\"{schema}\".{table}, $1::json)"
        ))
        .bind(array)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        *self.counts.entry(table).or_default() += written;
        Ok(written)
    }

    /// Rows written per table so far.
    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    /// Commits the rows, routes the tenant's API keys (outside the shared tier) and, where the
    /// registry row was committed first, gives the tenant its exported status.
    pub async fn commit(mut self, owner: &Store) -> Result<Tenant, StoreError> {
        let hashes: Vec<Vec<u8>> = sqlx::query_scalar(&format!(
            "SELECT key_hash FROM \"{}\".api_keys WHERE tenant_id = $1",
            self.location.placement.schema()
        ))
        .bind(self.tenant.id.uuid())
        .fetch_all(&mut *self.tx)
        .await?;
        let id = self.tenant.id;
        let routes = self.location.placement != Placement::Shared;
        const ROUTE: &str = "INSERT INTO bulkhead.key_routes (key_hash, tenant_id) \
                             SELECT h, $2 FROM unnest($1::bytea[]) h ON CONFLICT (key_hash) DO NOTHING";
        if !self.registry_committed {
            // The registry's own database: the key routes commit with everything else.
            if routes {
                sqlx::query(ROUTE)
                    .bind(&hashes)
                    .bind(id.uuid())
                    .execute(&mut *self.tx)
                    .await?;
            }
            self.tx.commit().await?;
            return Ok(self.tenant);
        }
        if let Err(err) = self.tx.commit().await {
            forget_registry_row(owner, id).await;
            return Err(err.into());
        }
        // The rows are in; the registry row (suspended) gets its routes and status together.
        let finished = async {
            let mut registry = owner.pool().begin().await?;
            if routes {
                sqlx::query(ROUTE)
                    .bind(&hashes)
                    .bind(id.uuid())
                    .execute(&mut *registry)
                    .await?;
            }
            sqlx::query("UPDATE bulkhead.tenants SET status = $2 WHERE id = $1")
                .bind(id.uuid())
                .bind(self.status.as_str())
                .execute(&mut *registry)
                .await?;
            registry.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(err) = finished {
            tracing::error!(tenant_id = %id, error = %err, "an import's rows are in, its registry row was not finished");
            return Err(StoreError::UnsafeConfiguration(format!(
                "tenant {id}: its rows were imported but its registry row could not be finished \
                 ({err}); it stays suspended: delete it (`bulkhead tenant delete --now`) and import \
                 again"
            )));
        }
        self.tenant.status = self.status;
        Ok(self.tenant)
    }

    /// Abandons the import: nothing of the tenant stays.
    pub async fn abandon(self, owner: &Store) {
        let id = self.tenant.id;
        let registry_committed = self.registry_committed;
        self.tx.rollback().await.ok();
        if registry_committed {
            forget_registry_row(owner, id).await;
        }
    }
}

async fn forget_registry_row(owner: &Store, id: TenantId) {
    for sql in [
        "DELETE FROM bulkhead.key_routes WHERE tenant_id = $1",
        "DELETE FROM bulkhead.tenants WHERE id = $1",
    ] {
        if let Err(err) = sqlx::query(sql).bind(id.uuid()).execute(owner.pool()).await {
            tracing::error!(tenant_id = %id, error = %err, "could not remove an abandoned import's registry row");
        }
    }
}
