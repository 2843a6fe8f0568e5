//! Moving a tenant between tiers (`bulkhead tenant move`): prepare the new location, copy every
//! row from a snapshot while the tenant is served, freeze writes, catch up on what changed since
//! the snapshot, verify counts and checksums, switch the routing, remove the old copy.
//!
//! # Invariants
//! - The registry row is the commit point: before the switch the old copy is the tenant's data
//!   (frozen, so unchanged); after it, the new one is. A request never sees a mix: the location
//!   check ([`crate::location`]) refuses a transaction in a place the registry no longer names,
//!   and a frozen tenant's writes are refused with a retryable [`StoreError::TenantMoving`].
//! - The copy and the catch-up are each one transaction in the new location (all tables or
//!   none), each reading one `REPEATABLE READ` snapshot of the old; the catch-up runs under the
//!   freeze, so its snapshot is final. The old copy is removed only after the switch, which
//!   happens only after every table's row count and checksum matched.
//! - Every step is idempotent and the step reached is recorded in `bulkhead.tenant_moves`, so a
//!   move stopped at any point (a crash, a kill) resumes by running the same command again.
//! - The audit log moves with the tenant, leaves, nodes and signed checkpoints included, so its
//!   proofs still verify; the move itself is audited in the new location.

use std::collections::BTreeMap;
use std::time::Instant;

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use crate::audit::{self, Outcome};
use crate::hooks::HookPoint;
use crate::location::{Location, Placement, TENANT_TABLES};
use crate::registry::{write_anchor, Tenant};
use crate::{Access, Store, StoreError};

/// The steps of a move, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveStep {
    /// Create and migrate the new location; write the tenant's anchor row there.
    Prepare,
    /// Copy every table from one snapshot, in one transaction in the new location, while the
    /// tenant is still served (writes included).
    Copy,
    /// Refuse new writes and wait for the ones in flight.
    Freeze,
    /// Bring the copy up to date with what was written since the snapshot: compare the rows'
    /// hashes table by table, upsert what changed or appeared, delete what went.
    #[serde(rename = "catch_up")]
    CatchUp,
    /// Compare row counts and checksums table by table.
    Verify,
    /// Point the registry at the new location and lift the freeze.
    Switch,
    /// Remove the old copy.
    Cleanup,
}

impl MoveStep {
    /// Every step, in order.
    pub const ALL: [MoveStep; 7] = [
        MoveStep::Prepare,
        MoveStep::Copy,
        MoveStep::Freeze,
        MoveStep::CatchUp,
        MoveStep::Verify,
        MoveStep::Switch,
        MoveStep::Cleanup,
    ];

    /// The stored text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            MoveStep::Prepare => "prepare",
            MoveStep::Copy => "copy",
            MoveStep::Freeze => "freeze",
            MoveStep::CatchUp => "catch_up",
            MoveStep::Verify => "verify",
            MoveStep::Switch => "switch",
            MoveStep::Cleanup => "cleanup",
        }
    }

    fn parse(text: &str) -> Option<MoveStep> {
        MoveStep::ALL.into_iter().find(|s| s.as_str() == text)
    }

    fn next(self) -> Option<MoveStep> {
        MoveStep::ALL.into_iter().skip_while(|s| *s != self).nth(1)
    }
}

/// One table's verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    /// Rows of the tenant.
    pub rows: i64,
    /// MD5 over the rows' text forms in a fixed order.
    pub checksum: String,
}

/// What a finished move did.
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    /// Where the tenant was.
    pub from: String,
    /// Where it is now.
    pub to: String,
    /// Each table's rows and checksum, equal in both locations.
    pub tables: BTreeMap<String, TableCheck>,
    /// Total rows moved.
    pub rows: i64,
    /// Milliseconds writes were frozen (freeze to switch) in this run.
    pub frozen_ms: u128,
    /// Milliseconds the whole run took.
    pub total_ms: u128,
    /// Whether this run resumed an earlier, interrupted one.
    pub resumed: bool,
}

/// What the caller sees as the move goes.
#[derive(Debug, Clone)]
pub enum MoveProgress {
    /// A step began.
    Step(MoveStep),
    /// A table was copied or verified (`done` of `total` tables in this step).
    Table {
        /// The step.
        step: MoveStep,
        /// The table.
        table: &'static str,
        /// Tables finished in this step.
        done: usize,
        /// Tables in all.
        total: usize,
    },
}

/// Test and operator controls for a move.
#[derive(Default)]
pub struct MoveOptions<'a> {
    /// Move to this region (its residency changes: every row goes to that region's databases);
    /// default: stay in the tenant's region.
    pub to_region: Option<String>,
    /// Stop (as a crash would) right after this step is done and recorded.
    pub stop_after: Option<MoveStep>,
    /// Progress callback.
    pub progress: Option<&'a (dyn Fn(MoveProgress) + Send + Sync)>,
}

impl std::fmt::Debug for MoveOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoveOptions")
            .field("to_region", &self.to_region)
            .field("stop_after", &self.stop_after)
            .finish_non_exhaustive()
    }
}

/// Why a move stopped without finishing.
pub const INTERRUPTED: &str = "move interrupted on request (stop_after)";

fn describe(location: &Location) -> String {
    format!("{} in region {}", location.placement, location.region)
}

struct Plan {
    tenant: Tenant,
    from: Location,
    to: Location,
    step: MoveStep,
    resumed: bool,
    /// The move's id (and its `tenant.move.start` event's).
    move_id: uuid::Uuid,
}

/// Moves `tenant` to `to` (a placement in its own region; [`Placement::Schema`]'s name is
/// replaced by the tenant's own), or resumes the move already recorded for it. Needs an owner
/// store whose topology can reach both locations. Returns the report once the old copy is gone.
pub async fn move_tenant(
    owner: &Store,
    tenant_id: TenantId,
    to: Placement,
    options: MoveOptions<'_>,
) -> Result<MoveReport, StoreError> {
    let started = Instant::now();
    let plan = plan(owner, tenant_id, to, options.to_region.as_deref()).await?;
    let Plan {
        tenant,
        from,
        to,
        mut step,
        resumed,
        move_id,
    } = plan;
    let report = |s: MoveProgress| {
        if let Some(progress) = options.progress {
            progress(s);
        }
    };
    let mut tables = BTreeMap::new();
    let mut frozen_at: Option<Instant> = None;
    let mut frozen_for: Option<u128> = None;
    loop {
        report(MoveProgress::Step(step));
        match step {
            MoveStep::Prepare => {
                crate::tiers::prepare_location(owner, &to).await?;
                // The target is not live until the switch: the location check refuses it and
                // the claim functions skip the rows the copy puts there.
                if owner.router().is_registry_location(&to) {
                    sqlx::query("UPDATE bulkhead.tenants SET live = false WHERE id = $1")
                        .bind(tenant.id.uuid())
                        .execute(owner.pool())
                        .await?;
                } else {
                    let pool = owner.router().pool_for(&to).await?;
                    let mut conn = pool.acquire().await?;
                    write_anchor(&mut conn, &tenant, &to, false).await?;
                }
            }
            MoveStep::Copy => {
                copy(owner, &tenant, &from, &to, &report).await?;
            }
            MoveStep::Freeze => {
                frozen_at = Some(Instant::now());
                freeze(owner, &tenant, &from).await?;
            }
            MoveStep::CatchUp => {
                frozen_at.get_or_insert_with(Instant::now);
                catch_up(owner, &tenant, &from, &to, &report).await?;
            }
            MoveStep::Verify => {
                let (source, target) = tokio::try_join!(
                    checksums(owner, tenant.id, &from, &report),
                    checksums(owner, tenant.id, &to, &report)
                )?;
                if source != target {
                    let differing: Vec<&String> = source
                        .iter()
                        .filter(|(t, c)| target.get(*t) != Some(c))
                        .map(|(t, _)| t)
                        .collect();
                    // Back to the catch-up (still frozen): a resumed run reconciles again.
                    record_step(owner, tenant.id, MoveStep::CatchUp, &json!({})).await?;
                    return Err(StoreError::Invalid(
                        format!("move verification failed for {differing:?}; run the move again to reconcile")
                            .into(),
                    ));
                }
                tables = source;
                record_report(owner, tenant.id, &tables).await?;
            }
            MoveStep::Switch => {
                switch(owner, &tenant, &from, &to).await?;
                frozen_for = frozen_at.map(|t| t.elapsed().as_millis());
            }
            MoveStep::Cleanup => {
                // A run killed between the registry commit and the end of the switch resumes
                // here: finish it first (idempotent).
                finish_switch(owner, &tenant, &from, &to).await?;
                cleanup(owner, &tenant, &from, &to).await?;
            }
        }
        match step.next() {
            Some(next) => {
                record_step(owner, tenant.id, next, &json!({})).await?;
                if options.stop_after == Some(step) {
                    return Err(StoreError::Invalid(INTERRUPTED.into()));
                }
                step = next;
            }
            None => break,
        }
    }
    if tables.is_empty() {
        tables = stored_report(owner, tenant.id).await?;
    }
    let rows = tables.values().map(|t| t.rows).sum();
    let report = MoveReport {
        from: describe(&from),
        to: describe(&to),
        tables,
        rows,
        frozen_ms: frozen_for.unwrap_or(0),
        total_ms: started.elapsed().as_millis(),
        resumed,
    };
    // The move is part of the tenant's history, written where the history now lives, before
    // its record goes (a crash in between re-runs the cleanup and finds the event written).
    let end_event = end_event_id(owner, tenant.id).await?;
    record_event_once(
        owner,
        tenant.id,
        end_event,
        "tenant.move",
        json!({ "move_id": move_id, "from": report.from, "to": report.to, "rows": report.rows,
                "tables": report.tables.len(), "resumed": report.resumed }),
    )
    .await?;
    crate::hooks::reached(tenant.id, HookPoint::MoveEventWritten).await?;
    sqlx::query("DELETE FROM bulkhead.tenant_moves WHERE tenant_id = $1")
        .bind(tenant.id.uuid())
        .execute(owner.pool())
        .await?;
    Ok(report)
}

/// Abandons the move recorded for `tenant_id`, if it has not switched yet: the freeze is lifted,
/// the partial copy removed, the record deleted, and the abandonment audited at the source.
/// After the switch a move can only be finished (the new copy is the tenant's data).
pub async fn abandon_move(owner: &Store, tenant_id: TenantId) -> Result<(), StoreError> {
    let tenant = owner
        .tenant_by_id(tenant_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    type Recorded = (
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        Option<uuid::Uuid>,
    );
    let row: Option<Recorded> = sqlx::query_as(
        "SELECT step, to_tier, to_schema, to_database, to_region, move_id \
         FROM bulkhead.tenant_moves WHERE tenant_id = $1",
    )
    .bind(tenant.id.uuid())
    .fetch_optional(owner.pool())
    .await?;
    let Some((step, tt, ts, td, tr, move_id)) = row else {
        return Err(StoreError::NotFound);
    };
    let step = MoveStep::parse(&step).ok_or_else(|| {
        StoreError::UnsafeConfiguration("tenant_moves row has an invalid step".into())
    })?;
    // The switch's commit (the registry row) records the cleanup step in the same transaction,
    // and the target goes live only with or after it: before it, the source is still the
    // tenant's data and the target has served nothing (no request, no job, no delivery).
    if step == MoveStep::Cleanup {
        return Err(StoreError::Invalid(
            "the move has switched; run it again to finish it".into(),
        ));
    }
    let from = tenant.location()?;
    let to = crate::location::location_from_columns(&tt, ts.as_deref(), td.as_deref(), tr)?;
    let router = owner.router();
    // The copy goes first (with the target's anchor), then the freeze is lifted.
    remove_copy(owner, tenant.id, &to).await?;
    if from.placement == Placement::Shared {
        sqlx::query("DELETE FROM bulkhead.key_routes WHERE tenant_id = $1")
            .bind(tenant.id.uuid())
            .execute(owner.pool())
            .await?;
    }
    // The source's anchor names the source again (a switch may have begun), live, unfrozen.
    let source = router.pool_for(&from).await?;
    let (schema_name, database_name) = from.placement.columns();
    sqlx::query(&format!(
        "UPDATE \"{}\".tenants SET isolation_tier = $2, schema_name = $3, database_name = $4, \
         region = $5, frozen_since = NULL, live = true WHERE id = $1",
        from.placement.schema()
    ))
    .bind(tenant.id.uuid())
    .bind(from.placement.tier().as_str())
    .bind(schema_name)
    .bind(database_name)
    .bind(&from.region)
    .execute(&source)
    .await?;
    if !router.is_registry_location(&from) {
        // The registry row is no tenant's anchor here: it stays not live.
        sqlx::query("UPDATE bulkhead.tenants SET frozen_since = NULL, live = false WHERE id = $1")
            .bind(tenant.id.uuid())
            .execute(owner.pool())
            .await?;
    }
    router.forget(tenant.id);
    let end_event = end_event_id(owner, tenant.id).await?;
    record_event_once(
        owner,
        tenant.id,
        end_event,
        "tenant.move.abandon",
        json!({ "move_id": move_id, "to": describe(&to), "at_step": step.as_str() }),
    )
    .await?;
    crate::hooks::reached(tenant.id, HookPoint::AbandonEventWritten).await?;
    sqlx::query("DELETE FROM bulkhead.tenant_moves WHERE tenant_id = $1")
        .bind(tenant.id.uuid())
        .execute(owner.pool())
        .await?;
    Ok(())
}

async fn plan(
    owner: &Store,
    tenant_id: TenantId,
    to: Placement,
    to_region: Option<&str>,
) -> Result<Plan, StoreError> {
    let tenant = owner
        .tenant_by_id(tenant_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let to = match to {
        Placement::Schema(_) => {
            Placement::Schema(crate::location::SchemaName::for_tenant(tenant.id))
        }
        other => other,
    };
    type MoveRow = (
        String,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
        Option<uuid::Uuid>,
    );
    let recorded: Option<MoveRow> = sqlx::query_as(
        "SELECT from_tier, from_schema, from_database, to_tier, to_schema, to_database, \
         from_region, to_region, step, move_id FROM bulkhead.tenant_moves WHERE tenant_id = $1",
    )
    .bind(tenant.id.uuid())
    .fetch_optional(owner.pool())
    .await?;
    if let Some((ft, fs, fd, tt, ts, td, fr, tr, step, move_id)) = recorded {
        let from = crate::location::location_from_columns(&ft, fs.as_deref(), fd.as_deref(), fr)?;
        let target = crate::location::location_from_columns(&tt, ts.as_deref(), td.as_deref(), tr)?;
        if target.placement != to || to_region.is_some_and(|r| r != target.region) {
            return Err(StoreError::Conflict {
                constraint: format!(
                    "a move to {} in region {} is in progress; finish it first",
                    target.placement, target.region
                ),
            });
        }
        let step = MoveStep::parse(&step).ok_or_else(|| {
            StoreError::UnsafeConfiguration("tenant_moves row has an invalid step".into())
        })?;
        let move_id = match move_id {
            // A run killed between recording the move and writing its start resumes at the
            // prepare step (the step advances only after it); before the freeze the source
            // takes writes, so the start is written now if it is not there yet.
            Some(id) => {
                if step < MoveStep::Freeze {
                    record_start(owner, &tenant, id, &from, &target).await?;
                }
                id
            }
            // Begun before moves had ids (its start was written then): one from now on.
            None => {
                sqlx::query_scalar(
                    "UPDATE bulkhead.tenant_moves SET move_id = coalesce(move_id, $2) \
                     WHERE tenant_id = $1 RETURNING move_id",
                )
                .bind(tenant.id.uuid())
                .bind(uuid::Uuid::now_v7())
                .fetch_one(owner.pool())
                .await?
            }
        };
        return Ok(Plan {
            tenant,
            from,
            to: target,
            step,
            resumed: true,
            move_id,
        });
    }
    let from = tenant.location()?;
    let to = Location {
        region: to_region.unwrap_or(&from.region).to_owned(),
        placement: to,
    };
    if from == to {
        return Err(StoreError::Invalid(
            format!("the tenant is already at {}", describe(&from)).into(),
        ));
    }
    let router = owner.router();
    for region in [&from.region, &to.region] {
        if !router.serves(region) {
            return Err(StoreError::WrongRegion(region.clone()));
        }
    }
    let (fs, fd) = from.placement.columns();
    let (ts, td) = to.placement.columns();
    // A UUIDv7 of now: it is also the id of the start event, written right after.
    let move_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO bulkhead.tenant_moves (tenant_id, from_tier, from_schema, from_database, \
         to_tier, to_schema, to_database, from_region, to_region, step, move_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'prepare', $10)",
    )
    .bind(tenant.id.uuid())
    .bind(from.placement.tier().as_str())
    .bind(fs)
    .bind(fd)
    .bind(to.placement.tier().as_str())
    .bind(ts)
    .bind(td)
    .bind(&from.region)
    .bind(&to.region)
    .bind(move_id)
    .execute(owner.pool())
    .await?;
    crate::hooks::reached(tenant.id, HookPoint::MoveRecorded).await?;
    record_start(owner, &tenant, move_id, &from, &to).await?;
    Ok(Plan {
        to,
        tenant,
        from,
        step: MoveStep::Prepare,
        resumed: false,
        move_id,
    })
}

/// The move begins in the tenant's history (and travels with it): `tenant.move.start`, under the
/// move's own id, once.
async fn record_start(
    owner: &Store,
    tenant: &Tenant,
    move_id: uuid::Uuid,
    from: &Location,
    to: &Location,
) -> Result<(), StoreError> {
    record_event_once(
        owner,
        tenant.id,
        move_id,
        "tenant.move.start",
        json!({ "move_id": move_id, "from": describe(from), "to": describe(to) }),
    )
    .await
}

/// The id of the move's last event (`tenant.move` or `tenant.move.abandon`): chosen once and
/// recorded with the move before the event is written, so a re-run writes the same event.
async fn end_event_id(owner: &Store, tenant: TenantId) -> Result<uuid::Uuid, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE bulkhead.tenant_moves SET end_event_id = coalesce(end_event_id, $2) \
         WHERE tenant_id = $1 RETURNING end_event_id",
    )
    .bind(tenant.uuid())
    .bind(uuid::Uuid::now_v7())
    .fetch_one(owner.pool())
    .await?)
}

async fn record_step(
    owner: &Store,
    tenant: TenantId,
    step: MoveStep,
    _detail: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE bulkhead.tenant_moves SET step = $2, updated_at = now() WHERE tenant_id = $1",
    )
    .bind(tenant.uuid())
    .bind(step.as_str())
    .execute(owner.pool())
    .await?;
    Ok(())
}

async fn record_report(
    owner: &Store,
    tenant: TenantId,
    tables: &BTreeMap<String, TableCheck>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE bulkhead.tenant_moves SET report = $2 WHERE tenant_id = $1")
        .bind(tenant.uuid())
        .bind(serde_json::to_value(tables).unwrap_or_default())
        .execute(owner.pool())
        .await?;
    Ok(())
}

async fn stored_report(
    owner: &Store,
    tenant: TenantId,
) -> Result<BTreeMap<String, TableCheck>, StoreError> {
    let report: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT report FROM bulkhead.tenant_moves WHERE tenant_id = $1")
            .bind(tenant.uuid())
            .fetch_optional(owner.pool())
            .await?;
    let mut out = BTreeMap::new();
    if let Some(serde_json::Value::Object(map)) = report {
        for (table, check) in map {
            let rows = check.get("rows").and_then(|v| v.as_i64()).unwrap_or(0);
            let checksum = check
                .get("checksum")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            out.insert(table, TableCheck { rows, checksum });
        }
    }
    Ok(out)
}

async fn set_context(conn: &mut PgConnection, tenant: TenantId) -> Result<(), StoreError> {
    // The rows' text forms are compared across connections, possibly across clusters: every
    // setting that shapes them is pinned, transaction-locally. The copied rows are not counted
    // against the tenant's quotas again (their counters travel in `tenant_quotas`; migration
    // 0020 believes this marker from the owner and the mover only).
    sqlx::query(
        "SELECT set_config('bulkhead.tenant_id', $1, true), set_config('TimeZone', 'UTC', true), \
         set_config('bulkhead.quota_replay', 'on', true), \
         set_config('DateStyle', 'ISO, MDY', true), set_config('IntervalStyle', 'postgres', true), \
         set_config('bytea_output', 'hex', true), set_config('extra_float_digits', '1', true)",
    )
    .bind(tenant.uuid().to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets `frozen_since` on the tenant's row in its current location: the UPDATE waits for every
/// read-write transaction in flight (they hold `FOR SHARE` on it) and every later one sees it.
/// Then waits for job and delivery claims already running there (they do not take that lock):
/// a `SHARE` lock on the two queues is granted only once they have finished.
async fn freeze(owner: &Store, tenant: &Tenant, from: &Location) -> Result<(), StoreError> {
    let pool = owner.router().pool_for(from).await?;
    let schema = from.placement.schema();
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "UPDATE \"{schema}\".tenants SET frozen_since = COALESCE(frozen_since, now()) WHERE id = $1"
    ))
    .bind(tenant.id.uuid())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "LOCK TABLE \"{schema}\".jobs, \"{schema}\".webhook_deliveries IN SHARE MODE"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    owner.router().forget(tenant.id);
    Ok(())
}

/// The column list of `table` in `schema`, in the target's order (both locations come from the
/// same migrations; naming the columns keeps the copy exact even if their order differed).
async fn columns(conn: &mut PgConnection, schema: &str, table: &str) -> Result<String, StoreError> {
    let list: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
         WHERE attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
         AND attnum > 0 AND NOT attisdropped",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(&mut *conn)
    .await?;
    list.ok_or_else(|| {
        StoreError::UnsafeConfiguration(format!("table {schema}.{table} has no columns"))
    })
}

/// Deletes the tenant's rows from every table of `schema` on `conn` (in a transaction, tenant
/// context set), as the mover role: the only role the append-only audit triggers let delete.
async fn delete_rows(
    conn: &mut PgConnection,
    schema: &str,
    tenant: TenantId,
) -> Result<u64, StoreError> {
    become_mover(conn).await?;
    let mut deleted = 0;
    for table in TENANT_TABLES.iter().rev() {
        deleted += sqlx::query(&format!(
            "DELETE FROM \"{schema}\".{table} WHERE tenant_id = $1"
        ))
        .bind(tenant.uuid())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    stop_being_mover(conn).await?;
    Ok(deleted)
}

/// Takes the mover role for the rest of the transaction's deletes (granted to the owner only
/// inside this transaction; [`stop_being_mover`] revokes it before commit).
async fn become_mover(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("GRANT bulkhead_tenant_mover TO CURRENT_USER")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SET LOCAL ROLE bulkhead_tenant_mover")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn stop_being_mover(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("RESET ROLE").execute(&mut *conn).await?;
    sqlx::query("REVOKE bulkhead_tenant_mover FROM CURRENT_USER")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn copy(
    owner: &Store,
    tenant: &Tenant,
    from: &Location,
    to: &Location,
    report: &(dyn Fn(MoveProgress) + Sync),
) -> Result<(), StoreError> {
    let router = owner.router();
    let source_pool = router.pool_for(from).await?;
    let target_pool = router.pool_for(to).await?;
    let (fs, ts) = (from.placement.schema(), to.placement.schema());
    let mut source = source_pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *source)
        .await?;
    set_context(&mut source, tenant.id).await?;
    let mut target = target_pool.begin().await?;
    set_context(&mut target, tenant.id).await?;
    // A copy left by an interrupted run is replaced, never added to.
    delete_rows(&mut target, ts, tenant.id).await?;
    for (done, table) in TENANT_TABLES.iter().enumerate() {
        let cols = columns(&mut target, ts, table).await?;
        copy_rows(
            &mut source,
            &mut target,
            (fs, ts),
            table,
            &cols,
            tenant.id,
            "",
            "",
        )
        .await?;
        report(MoveProgress::Table {
            step: MoveStep::Copy,
            table,
            done: done + 1,
            total: TENANT_TABLES.len(),
        });
    }
    commit_copy(owner, tenant.id, to, target, source).await
}

/// Copies the tenant's rows of `table` (those matching `filter`, SQL appended to the WHERE clause)
/// from the source schema into the target's (`schemas`): streamed by binary COPY into a
/// temporary table, then `INSERT … SELECT` with `on_conflict`, because COPY FROM cannot write a
/// table under row-level security and INSERT can (the policy checks every row against the
/// context). `filter` is built from validated text only: COPY takes no bind parameters.
#[allow(clippy::too_many_arguments)]
async fn copy_rows(
    source: &mut PgConnection,
    target: &mut PgConnection,
    (fs, ts): (&str, &str),
    table: &str,
    cols: &str,
    tenant: TenantId,
    filter: &str,
    on_conflict: &str,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "CREATE TEMP TABLE bulkhead_move_rows (LIKE \"{ts}\".{table}) ON COMMIT DROP"
    ))
    .execute(&mut *target)
    .await?;
    // The tenant id is a formatted UUID, never input.
    pipe(
        source,
        &format!(
            "COPY (SELECT {cols} FROM \"{fs}\".{table} WHERE tenant_id = '{}' {filter}) \
             TO STDOUT (FORMAT binary)",
            tenant.uuid()
        ),
        target,
        &format!("COPY bulkhead_move_rows ({cols}) FROM STDIN (FORMAT binary)"),
    )
    .await?;
    sqlx::query(&format!(
        "INSERT INTO \"{ts}\".{table} ({cols}) SELECT {cols} FROM bulkhead_move_rows {on_conflict}"
    ))
    .execute(&mut *target)
    .await?;
    sqlx::query("DROP TABLE bulkhead_move_rows")
        .execute(&mut *target)
        .await?;
    Ok(())
}

/// Streams `COPY … TO STDOUT` on `source` into `COPY … FROM STDIN` on `target`, chunk by chunk
/// (a table's rows are never all in memory). A failure on either side aborts the target's COPY,
/// and with it the target's transaction.
async fn pipe(
    source: &mut PgConnection,
    copy_out: &str,
    target: &mut PgConnection,
    copy_in: &str,
) -> Result<u64, StoreError> {
    let mut sink = target.copy_in_raw(copy_in).await?;
    let mut rows = match source.copy_out_raw(copy_out).await {
        Ok(rows) => rows,
        Err(err) => {
            sink.abort("the source COPY failed").await.ok();
            return Err(err.into());
        }
    };
    while let Some(chunk) = rows.next().await {
        let sent = match chunk {
            Ok(chunk) => sink.send(chunk).await.map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = sent {
            drop(rows);
            sink.abort("the copy failed").await.ok();
            return Err(err.into());
        }
    }
    drop(rows);
    Ok(sink.finish().await?)
}

/// The primary-key columns of `table` in `schema`.
async fn primary_key(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, StoreError> {
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(a.attname) FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    if cols.is_empty() {
        return Err(StoreError::UnsafeConfiguration(format!(
            "table {schema}.{table} has no primary key"
        )));
    }
    Ok(cols)
}

/// Each row's MD5 over its text form, for one table of the tenant.
async fn row_hashes(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    cols: &str,
    tenant: TenantId,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let hashes: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT md5(ROW({cols})::text) FROM \"{schema}\".{table} WHERE tenant_id = $1"
    ))
    .bind(tenant.uuid())
    .fetch_all(&mut *conn)
    .await?;
    Ok(hashes.into_iter().collect())
}

/// Under the freeze: makes the copy equal to the source by difference. Per table, rows only in
/// the copy whose primary key is gone at the source are deleted (children first, as the mover
/// role), then rows whose hash is only at the source are upserted by primary key (parents
/// first). Only hashes, keys and the changed rows travel; one transaction in the new location.
async fn catch_up(
    owner: &Store,
    tenant: &Tenant,
    from: &Location,
    to: &Location,
    report: &(dyn Fn(MoveProgress) + Sync),
) -> Result<(), StoreError> {
    let router = owner.router();
    let source_pool = router.pool_for(from).await?;
    let target_pool = router.pool_for(to).await?;
    let (fs, ts) = (from.placement.schema(), to.placement.schema());
    let mut source = source_pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *source)
        .await?;
    set_context(&mut source, tenant.id).await?;
    let mut target = target_pool.begin().await?;
    set_context(&mut target, tenant.id).await?;
    // First every table's difference, from the one (final) snapshot.
    struct Delta {
        table: &'static str,
        cols: String,
        pk: Vec<String>,
        missing: Vec<String>,
        deleted: Vec<String>,
    }
    let mut deltas = Vec::new();
    for table in TENANT_TABLES {
        let cols = columns(&mut target, ts, table).await?;
        let pk = primary_key(&mut target, ts, table).await?;
        let (at_source, in_copy) = tokio::try_join!(
            row_hashes(&mut source, fs, table, &cols, tenant.id),
            row_hashes(&mut target, ts, table, &cols, tenant.id)
        )?;
        let missing: Vec<String> = at_source.difference(&in_copy).cloned().collect();
        let extra: Vec<String> = in_copy.difference(&at_source).cloned().collect();
        let pk_text = format!("ROW({})::text", pk.join(", "));
        // Of the rows only in the copy, those whose key is gone at the source were deleted
        // there; the others were updated (the upsert below rewrites them).
        let deleted = if extra.is_empty() {
            Vec::new()
        } else {
            let keys: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT {pk_text} FROM \"{ts}\".{table} WHERE tenant_id = $1 \
                 AND md5(ROW({cols})::text) = ANY($2)"
            ))
            .bind(tenant.id.uuid())
            .bind(&extra)
            .fetch_all(&mut *target)
            .await?;
            let kept: std::collections::HashSet<String> = sqlx::query_scalar(&format!(
                "SELECT {pk_text} FROM \"{fs}\".{table} WHERE tenant_id = $1 AND {pk_text} = ANY($2)"
            ))
            .bind(tenant.id.uuid())
            .bind(&keys)
            .fetch_all(&mut *source)
            .await?
            .into_iter()
            .collect();
            keys.into_iter().filter(|k| !kept.contains(k)).collect()
        };
        deltas.push(Delta {
            table,
            cols,
            pk,
            missing,
            deleted,
        });
    }
    // Deletions first, children first: a row deleted and re-created under another key at the
    // source (a role of the same name, say) must leave before its successor arrives.
    if deltas.iter().any(|d| !d.deleted.is_empty()) {
        become_mover(&mut target).await?;
        for delta in deltas.iter().rev().filter(|d| !d.deleted.is_empty()) {
            sqlx::query(&format!(
                "DELETE FROM \"{ts}\".{table} WHERE tenant_id = $1 AND ROW({pk})::text = ANY($2)",
                table = delta.table,
                pk = delta.pk.join(", ")
            ))
            .bind(tenant.id.uuid())
            .bind(&delta.deleted)
            .execute(&mut *target)
            .await?;
        }
        stop_being_mover(&mut target).await?;
    }
    // Then what is new or changed, parents first, by primary key.
    for (done, delta) in deltas.iter().enumerate() {
        let Delta {
            table,
            cols,
            pk,
            missing,
            ..
        } = delta;
        if !missing.is_empty() {
            // MD5 hex digests only: safe to write into COPY, which takes no parameters.
            if !missing
                .iter()
                .all(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(StoreError::UnsafeConfiguration(
                    "a row hash is not an MD5 digest".into(),
                ));
            }
            let wanted = missing
                .iter()
                .map(|h| format!("'{h}'"))
                .collect::<Vec<_>>()
                .join(",");
            let updates: Vec<String> = cols
                .split(", ")
                .filter(|c| !pk.iter().any(|p| p == c))
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect();
            let on_conflict = if updates.is_empty() {
                "DO NOTHING".to_owned()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            copy_rows(
                &mut source,
                &mut target,
                (fs, ts),
                table,
                cols,
                tenant.id,
                &format!("AND md5(ROW({cols})::text) IN ({wanted})"),
                &format!("ON CONFLICT ({}) {on_conflict}", pk.join(", ")),
            )
            .await?;
        }
        report(MoveProgress::Table {
            step: MoveStep::CatchUp,
            table,
            done: done + 1,
            total: TENANT_TABLES.len(),
        });
    }
    commit_copy(owner, tenant.id, to, target, source).await
}

/// Commits the copy at `to` (dropping the source's read snapshot), then routes the tenant's key
/// hashes there unless it is the shared tier, where keys are found without routes.
async fn commit_copy(
    owner: &Store,
    tenant: TenantId,
    to: &Location,
    mut target: sqlx::Transaction<'static, sqlx::Postgres>,
    source: sqlx::Transaction<'static, sqlx::Postgres>,
) -> Result<(), StoreError> {
    let hashes: Vec<Vec<u8>> = sqlx::query_scalar(&format!(
        "SELECT key_hash FROM \"{}\".api_keys WHERE tenant_id = $1",
        to.placement.schema()
    ))
    .bind(tenant.uuid())
    .fetch_all(&mut *target)
    .await?;
    target.commit().await?;
    source.rollback().await?;
    if to.placement == Placement::Shared {
        return Ok(());
    }
    // Presented without a subdomain, the tenant's keys are found through these.
    sqlx::query(
        "INSERT INTO bulkhead.key_routes (key_hash, tenant_id) SELECT h, $2 FROM unnest($1::bytea[]) h \
         ON CONFLICT (key_hash) DO NOTHING",
    )
    .bind(hashes)
    .bind(tenant.uuid())
    .execute(owner.pool())
    .await?;
    Ok(())
}

/// Row count and checksum of every tenant table at `at`, from one snapshot. The checksum sums
/// slices of each row's MD5 (of its text form, with the settings that shape it pinned), so it
/// needs no sort and no collation.
async fn checksums(
    owner: &Store,
    tenant: TenantId,
    at: &Location,
    report: &(dyn Fn(MoveProgress) + Sync),
) -> Result<BTreeMap<String, TableCheck>, StoreError> {
    let pool: PgPool = owner.router().pool_for(at).await?;
    let schema = at.placement.schema();
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    set_context(&mut tx, tenant).await?;
    let mut out = BTreeMap::new();
    for (done, table) in TENANT_TABLES.iter().enumerate() {
        // The target's column order defines the row text on both sides.
        let cols = columns(&mut tx, schema, table).await?;
        // Order-independent (no sort under the freeze): the sums of two 60-bit slices of every
        // row's MD5, with the count.
        let (rows, checksum): (i64, String) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint), 0)::text \
             || ':' || coalesce(sum(('x' || substr(h, 16, 15))::bit(60)::bigint), 0)::text \
             FROM (SELECT md5(ROW({cols})::text) AS h FROM \"{schema}\".{table} WHERE tenant_id = $1) r"
        ))
        .bind(tenant.uuid())
        .fetch_one(&mut *tx)
        .await?;
        out.insert((*table).to_owned(), TableCheck { rows, checksum });
        report(MoveProgress::Table {
            step: MoveStep::Verify,
            table,
            done: done + 1,
            total: TENANT_TABLES.len(),
        });
    }
    tx.rollback().await?;
    Ok(out)
}

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
async fn switch(
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
async fn finish_switch(
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
async fn retire_source_anchor(
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
async fn activate_target_anchor(
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
async fn registry_status(conn: &mut PgConnection, tenant: TenantId) -> Result<String, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT status FROM bulkhead.tenants WHERE id = $1")
            .bind(tenant.uuid())
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Removes the old copy and the key routes a shared-tier tenant no longer needs.
async fn cleanup(
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
async fn remove_copy(owner: &Store, tenant: TenantId, at: &Location) -> Result<(), StoreError> {
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

/// Records a move event under `id` in the tenant's audit log, wherever the tenant lives now,
/// unless the log already has it (a run killed after writing it). The log moves with the tenant,
/// so an event written at the source before a switch is found at the target after it.
async fn record_event_once(
    owner: &Store,
    tenant: TenantId,
    id: uuid::Uuid,
    action: &'static str,
    meta: serde_json::Value,
) -> Result<(), StoreError> {
    let ctx = TenantContext::new(
        tenant,
        Actor::System {
            component: "tenant-move",
        },
        RequestId::new(),
    );
    let mut tx = owner.begin(&ctx, Access::ReadWrite).await?;
    let written: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM audit_events WHERE tenant_id = $1 AND id = $2)",
    )
    .bind(tenant.uuid())
    .bind(id)
    .fetch_one(tx.conn())
    .await?;
    if !written {
        let tenant_text = tenant.to_string();
        audit::record_event_with_id(
            &mut tx,
            bulkhead_core::AuditEventId::from_uuid(id),
            &audit::NewEvent {
                resource_id: Some(&tenant_text),
                metadata: meta,
                ..audit::NewEvent::new(action, Outcome::Success)
            },
        )
        .await?;
    }
    tx.commit().await
}
