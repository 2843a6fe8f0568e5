//! Moving a tenant between tiers (`bulkhead tenant move`): prepare the new location, copy every
//! row from a snapshot while the tenant is served, freeze writes, catch up on what changed since
//! the snapshot, verify counts and checksums, switch the routing, remove the old copy.
//!
//! # Invariants
//! - The registry row is the commit point: before the switch the old copy is the tenant's data
//!   (frozen, so unchanged); after it, the new one is. A request never sees a mix: the location
//!   check ([`crate::placement::location`]) refuses a transaction in a place the registry no longer names,
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

use bulkhead_core::{TenantContext, TenantId};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use crate::audit::{self, Outcome};
use crate::hooks::HookPoint;
use crate::placement::location::{Location, Placement, TENANT_TABLES};
use crate::placement::registry::{write_anchor, Tenant};
use crate::{Access, Store, StoreError};

pub(crate) mod copy;
mod switch;

use copy::*;
pub(crate) use copy::{become_mover, freeze, set_context, stop_being_mover};
use switch::*;

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

/// The key of a tenant's move-run lock (`$1`: the tenant's id), held for the session by the one
/// run of its move (or its abandonment) at a time, across processes: the CLI and a server's
/// operator API can both start one.
const RUN_LOCK_KEY: &str = "hashtext('bulkhead.tenant_move'), hashtext($1)";

/// Runs `work` holding `tenant`'s move-run lock on a connection of its own, released (and the
/// connection closed) whatever happens; a run already holding it is a [`StoreError::Conflict`].
async fn with_run_lock<T, F>(owner: &Store, tenant: TenantId, work: F) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut guard = owner.pool().acquire().await?.detach();
    let locked: bool = sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({RUN_LOCK_KEY})"))
        .bind(tenant.uuid().to_string())
        .fetch_one(&mut guard)
        .await?;
    if !locked {
        let _ = sqlx::Connection::close(guard).await;
        return Err(StoreError::Conflict {
            constraint: "a run of this tenant's move is in progress (here or in another \
                         process); wait for it to stop, then try again"
                .into(),
        });
    }
    let result = work.await;
    // Unlocked before the close, so the next run never sees the lock of a closing session.
    let _ = sqlx::query(&format!("SELECT pg_advisory_unlock({RUN_LOCK_KEY})"))
        .bind(tenant.uuid().to_string())
        .execute(&mut guard)
        .await;
    let _ = sqlx::Connection::close(guard).await;
    result
}

/// The move recorded for a tenant, as far as its record says (`bulkhead.tenant_moves`).
#[derive(Debug, Clone, Serialize)]
pub struct RecordedMove {
    /// The move's id (and its `tenant.move.start` event's), if it has one.
    pub move_id: Option<uuid::Uuid>,
    /// The tier it goes to.
    pub to_tier: String,
    /// The region it goes to.
    pub to_region: String,
    /// The step it will run next (or is running).
    pub step: String,
}

/// The move recorded for `tenant`, if any (one is recorded from its start until its end or
/// abandonment; a run interrupted anywhere leaves it, to be resumed or abandoned).
pub async fn recorded_move(
    owner: &Store,
    tenant: TenantId,
) -> Result<Option<RecordedMove>, StoreError> {
    let row: Option<(Option<uuid::Uuid>, String, String, String)> = sqlx::query_as(
        "SELECT move_id, to_tier, to_region, step FROM bulkhead.tenant_moves WHERE tenant_id = $1",
    )
    .bind(tenant.uuid())
    .fetch_optional(owner.pool())
    .await?;
    Ok(row.map(|(move_id, to_tier, to_region, step)| RecordedMove {
        move_id,
        to_tier,
        to_region,
        step,
    }))
}

/// Moves `tenant` to `to` (a placement in its own region; [`Placement::Schema`]'s name is
/// replaced by the tenant's own), or resumes the move already recorded for it. Needs an owner
/// store whose topology can reach both locations. Returns the report once the old copy is gone.
/// One run of a tenant's move at a time, in any process (a second is a
/// [`StoreError::Conflict`]).
pub async fn move_tenant(
    owner: &Store,
    tenant_id: TenantId,
    to: Placement,
    options: MoveOptions<'_>,
) -> Result<MoveReport, StoreError> {
    with_run_lock(
        owner,
        tenant_id,
        move_tenant_locked(owner, tenant_id, to, options),
    )
    .await
}

async fn move_tenant_locked(
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
                crate::placement::tiers::prepare_location(owner, &to).await?;
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
/// Not while a run of the move is in progress (a [`StoreError::Conflict`]).
pub async fn abandon_move(owner: &Store, tenant_id: TenantId) -> Result<(), StoreError> {
    with_run_lock(owner, tenant_id, abandon_move_locked(owner, tenant_id)).await
}

async fn abandon_move_locked(owner: &Store, tenant_id: TenantId) -> Result<(), StoreError> {
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
    let to =
        crate::placement::location::location_from_columns(&tt, ts.as_deref(), td.as_deref(), tr)?;
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
        Placement::Schema(_) => Placement::Schema(
            crate::placement::location::SchemaName::for_tenant(tenant.id),
        ),
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
        let from = crate::placement::location::location_from_columns(
            &ft,
            fs.as_deref(),
            fd.as_deref(),
            fr,
        )?;
        let target = crate::placement::location::location_from_columns(
            &tt,
            ts.as_deref(),
            td.as_deref(),
            tr,
        )?;
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
    {
        let mut conn = owner.pool().acquire().await?;
        // The deletion record (`lifecycle::deletion`), read here directly: that module uses
        // this one's freeze and deletes, not the other way round.
        let deletion: Option<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT state, scheduled_at FROM bulkhead.tenant_deletions WHERE tenant_id = $1",
        )
        .bind(tenant.id.uuid())
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((state, since)) = deletion {
            return Err(StoreError::Conflict {
                constraint: format!(
                    "the tenant's deletion is {state} (since {since}); a tenant being deleted is \
                     not moved"
                ),
            });
        }
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
    let ctx = TenantContext::for_system(tenant, "tenant-move");
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
