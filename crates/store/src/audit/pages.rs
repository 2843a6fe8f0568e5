//! Reading a tenant's audit log out: listing events with their leaves, and the export's pages
//! and snapshot (events, checkpoints and what a verifier needs), all inside the tenant's own
//! transaction.

use bulkhead_audit::tree::Hash;
use bulkhead_audit::{AuditEvent, LogSigningKey, SignedCheckpoint};
use bulkhead_core::{AuditEventId, TenantContext};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::log::{
    event_from_row, latest_checkpoint, sequence, sign_tree, store_checkpoint, to_hash, tree_size,
    EventRow, Sweep, EVENT_COLUMNS,
};
use crate::hooks::HookPoint;
use crate::{Access, Store, StoreError, TenantTx};

/// An event as listed, with its leaf once sequenced.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListedEvent {
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Its leaf index, `null` until sequenced.
    pub leaf_index: Option<u64>,
}

/// Filters of [`list_events`]; every one optional.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Events at or after.
    pub since: Option<DateTime<Utc>>,
    /// Events before.
    pub until: Option<DateTime<Utc>>,
    /// Exact actor id.
    pub actor_id: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Exact outcome.
    pub outcome: Option<String>,
    /// Exact resource id.
    pub resource_id: Option<String>,
    /// Events with a larger id than this (the cursor).
    pub after: Option<AuditEventId>,
    /// At most this many (fetch `limit + 1` to know whether a page follows).
    pub limit: u32,
}

type ListedRow = (
    uuid::Uuid,
    DateTime<Utc>,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    serde_json::Value,
    Option<i64>,
);

/// The tenant's events in id order, filtered.
pub async fn list_events(
    tx: &mut TenantTx,
    filter: &EventFilter,
) -> Result<Vec<ListedEvent>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<ListedRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS}, l.leaf_index FROM audit_events e \
         LEFT JOIN audit_leaves l ON l.tenant_id = e.tenant_id AND l.event_id = e.id \
         WHERE e.tenant_id = $1 \
           AND ($2::uuid IS NULL OR e.id > $2) \
           AND ($3::timestamptz IS NULL OR e.occurred_at >= $3) \
           AND ($4::timestamptz IS NULL OR e.occurred_at < $4) \
           AND ($5::text IS NULL OR e.actor_id = $5) \
           AND ($6::text IS NULL OR e.action = $6) \
           AND ($7::text IS NULL OR e.outcome = $7) \
           AND ($8::text IS NULL OR e.resource_id = $8) \
         ORDER BY e.id LIMIT $9"
    ))
    .bind(tenant.uuid())
    .bind(filter.after.map(|id| id.uuid()))
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.actor_id.as_deref())
    .bind(filter.action.as_deref())
    .bind(filter.outcome.as_deref())
    .bind(filter.resource_id.as_deref())
    .bind(i64::from(filter.limit))
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let leaf_index = r.12.map(|i| i as u64);
            let row: EventRow = (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11);
            ListedEvent {
                event: event_from_row(tenant, row),
                leaf_index,
            }
        })
        .collect())
}

/// One leaf of an export page: the event, or only its hash once retention purged the body.
#[derive(Debug, Clone)]
pub enum ExportItem {
    /// Body present.
    Event {
        /// Leaf index.
        leaf_index: u64,
        /// Stored leaf hash.
        leaf_hash: Hash,
        /// The event.
        event: Box<AuditEvent>,
    },
    /// Body purged.
    Purged {
        /// Leaf index.
        leaf_index: u64,
        /// Stored leaf hash.
        leaf_hash: Hash,
        /// The event's id.
        event_id: AuditEventId,
    },
}

/// Leaves `[from, to)` of the tenant's tree with their events, in order.
pub async fn export_page(
    tx: &mut TenantTx,
    from: u64,
    to: u64,
) -> Result<Vec<ExportItem>, StoreError> {
    let tenant = tx.tenant_id();
    type Row = (
        i64,
        Vec<u8>,
        uuid::Uuid,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Vec<String>>,
        Option<serde_json::Value>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT l.leaf_index, l.leaf_hash, l.event_id, e.occurred_at, e.actor_id, e.actor_type, \
                e.action, e.resource_id, e.outcome, host(e.ip_address), e.user_agent, \
                e.request_id, e.delegation, e.metadata \
         FROM audit_leaves l \
         LEFT JOIN audit_events e ON e.tenant_id = l.tenant_id AND e.id = l.event_id \
         WHERE l.tenant_id = $1 AND l.leaf_index >= $2 AND l.leaf_index < $3 \
         ORDER BY l.leaf_index",
    )
    .bind(tenant.uuid())
    .bind(from as i64)
    .bind(to as i64)
    .fetch_all(tx.conn())
    .await?;
    rows.into_iter()
        .map(|r| {
            let leaf_index = r.0 as u64;
            let leaf_hash = to_hash(&r.1)?;
            Ok(match (r.3, r.4, r.5, r.6, r.8, r.13) {
                (
                    Some(at),
                    Some(actor_id),
                    Some(actor_type),
                    Some(action),
                    Some(outcome),
                    Some(meta),
                ) => {
                    let row: EventRow = (
                        r.2, at, actor_id, actor_type, action, r.7, outcome, r.9, r.10, r.11, r.12,
                        meta,
                    );
                    ExportItem::Event {
                        leaf_index,
                        leaf_hash,
                        event: Box::new(event_from_row(tenant, row)),
                    }
                }
                _ => ExportItem::Purged {
                    leaf_index,
                    leaf_hash,
                    event_id: AuditEventId::from_uuid(r.2),
                },
            })
        })
        .collect()
}

/// An export's view of the log: every page comes from one `REPEATABLE READ` snapshot bounded by
/// its checkpoint's tree size, so what the pages show (a body, or `purged`) is exactly what the
/// checkpoint's tree held. A purge that commits while the export streams is invisible to it. A
/// purge is sequenced in its own transaction, so one committed before the snapshot has its
/// `audit.purge` leaf inside any checkpoint signed after it; one that slipped in between the
/// checkpoint and the snapshot has its leaf beyond the checkpoint, and `open` then takes a new
/// checkpoint. (Pages read in separate transactions once let a purge turn leaves into `purged`
/// whose accounting event lay beyond the checkpoint, and the export failed verification on an
/// intact log.)
///
/// The checkpoint is signed and stored *before* the snapshot opens: a second tenant transaction
/// opened while the snapshot holds its gate permit deadlocked concurrent exports of one tenant
/// at the per-tenant connection cap. The snapshot holds one connection, read-only, until
/// [`ExportSnapshot::finish`] or drop; it takes no lock a writer or a move's freeze waits for, and
/// the database ends it if it idles longer than [`EXPORT_IDLE_TIMEOUT`] (a slow reader must not
/// pin a pooled connection and the xmin horizon for hours).
#[derive(Debug)]
pub struct ExportSnapshot {
    tx: TenantTx,
    checkpoint: SignedCheckpoint,
}

/// How long an export's snapshot may sit idle between pages before the database ends it.
pub const EXPORT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How many times `open` retakes its checkpoint when purges keep landing between the checkpoint
/// and the snapshot before it gives up with a retryable error.
const EXPORT_OPEN_ATTEMPTS: usize = 3;

impl ExportSnapshot {
    /// Sequences what is pending (so the export covers everything committed so far) and fixes
    /// the checkpoint (the latest stored one if it covers the whole tree, else a new one, signed
    /// with `key` at `now` and stored), then opens the snapshot the pages are read from.
    pub async fn open(
        store: &Store,
        ctx: &TenantContext,
        key: &LogSigningKey,
        now: DateTime<Utc>,
    ) -> Result<ExportSnapshot, StoreError> {
        for _ in 0..EXPORT_OPEN_ATTEMPTS {
            let mut tx = store.begin(ctx, Access::ReadWrite).await?;
            sequence(&mut tx, Sweep::Recent).await?;
            let size = tree_size(&mut tx).await?;
            let checkpoint = match latest_checkpoint(&mut tx).await? {
                Some(latest) if latest.checkpoint.tree_size == size => latest,
                _ => {
                    let signed = sign_tree(&mut tx, key, now, size).await?;
                    store_checkpoint(&mut tx, &signed).await?;
                    signed
                }
            };
            tx.commit().await?;
            crate::hooks::reached(ctx.tenant_id(), HookPoint::ExportCheckpointed).await?;
            let mut snapshot = store.begin_snapshot(ctx).await?;
            // Bound in milliseconds; a setting cannot be a bind parameter of SET, so set_config.
            sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
                .bind(format!("{}ms", EXPORT_IDLE_TIMEOUT.as_millis()))
                .execute(snapshot.conn())
                .await?;
            if !purged_beyond(&mut snapshot, size).await? {
                return Ok(ExportSnapshot {
                    tx: snapshot,
                    checkpoint,
                });
            }
            snapshot.commit().await?;
        }
        Err(StoreError::Timeout)
    }

    /// The checkpoint the export verifies against; its size is the number of leaves.
    pub fn checkpoint(&self) -> &SignedCheckpoint {
        &self.checkpoint
    }

    /// Leaves `[from, to)` with their events, from the snapshot.
    pub async fn page(&mut self, from: u64, to: u64) -> Result<Vec<ExportItem>, StoreError> {
        export_page(&mut self.tx, from, to).await
    }

    /// Ends the snapshot.
    pub async fn finish(self) -> Result<(), StoreError> {
        self.tx.commit().await
    }
}

/// Whether the transaction sees an `audit.purge` leaf at or beyond `size`: a purge the checkpoint
/// of that size does not account for, whose purged leaves the snapshot may nevertheless show.
async fn purged_beyond(tx: &mut TenantTx, size: u64) -> Result<bool, StoreError> {
    let tenant = tx.tenant_id();
    let found: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM audit_leaves l \
         JOIN audit_events e ON e.tenant_id = l.tenant_id AND e.id = l.event_id \
         WHERE l.tenant_id = $1 AND l.leaf_index >= $2 AND e.action = 'audit.purge')",
    )
    .bind(tenant.uuid())
    .bind(size as i64)
    .fetch_one(tx.conn())
    .await?;
    Ok(found)
}
