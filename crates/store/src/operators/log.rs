//! The operator audit log made verifiable (migration 0029): every event of
//! `bulkhead.operator_audit_events` is a leaf of one RFC 9162 Merkle tree, with signed checkpoints
//! and an NDJSON export in the tenants' format ([`bulkhead_audit::export`]).
//!
//! # Invariants
//! - **Sequenced at insert, under a lock.** The transaction that writes an event takes the
//!   transaction-scoped advisory lock of the operator log, reads the tree size and appends the
//!   event's leaf before it commits ([`append_own`]). The lock is held until commit, so leaf
//!   indexes are gap-free and in commit order, and a rolled-back event takes its leaf with it.
//!   (The tenants' logs are sequenced by a background worker because tenants write thousands of
//!   events a second through the serving role; the operator log is written rarely, by the owner
//!   role, so one short lock per event costs nothing and no event is ever outside the tree.)
//! - Events written before migration 0029 have no leaf; [`sequence_pending`] (run before every
//!   checkpoint and export) appends them, oldest first, under the same lock.
//! - A leaf is the canonical encoding of the event as an [`AuditEvent`] whose `tenant_id` is
//!   [`OPERATOR_LOG_ID`] ([`to_audit_event`]): that mapping is the log's contract.
//! - Nothing here updates or deletes: leaves and checkpoints are inserted once (triggers refuse
//!   the rest).

use bulkhead_audit::checkpoint::OPERATOR_LOG_ID;
use bulkhead_audit::export::ExportLine;
use bulkhead_audit::tree::{Hash, RootBuilder};
use bulkhead_audit::{AuditEvent, Checkpoint, LogSigningKey, SequencedEvent, SignedCheckpoint};
use bulkhead_core::OperatorEventId;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use crate::audit::log::format_timestamp;
use crate::{Store, StoreError};

/// A stored operator event: id, time, actor, action, outcome, resource, reason, metadata.
pub(super) type EventRow = (
    uuid::Uuid,
    DateTime<Utc>,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    serde_json::Value,
);

/// The columns of an [`EventRow`], in order.
pub(super) const EVENT_COLUMNS: &str =
    "id, occurred_at, actor, action, outcome, resource_id, reason, metadata";

/// The `actor_type` a leaf carries, derived from the actor: `operator_key` (`opkey_…`), `cli`
/// (`cli:<account>`), `anonymous` (a refused credential), else `system`.
fn actor_type(actor: &str) -> &'static str {
    if actor.starts_with("opkey_") {
        "operator_key"
    } else if actor.starts_with("cli:") {
        "cli"
    } else if actor == "anonymous" {
        "anonymous"
    } else {
        "system"
    }
}

/// The event as the log commits to it. The stored `metadata` and `reason` become
/// `{"details": metadata, "reason": reason}`: nested, so no stored value can pass for another.
pub fn to_audit_event(row: EventRow) -> AuditEvent {
    let (id, at, actor, action, outcome, resource_id, reason, metadata) = row;
    AuditEvent {
        event_id: OperatorEventId::from_uuid(id).to_string(),
        timestamp: format_timestamp(at),
        tenant_id: OPERATOR_LOG_ID.to_owned(),
        actor_type: actor_type(&actor).to_owned(),
        actor_id: actor,
        action,
        resource_id,
        outcome,
        ip_address: None,
        user_agent: None,
        request_id: None,
        delegation: None,
        metadata: serde_json::json!({ "details": metadata, "reason": reason }),
    }
}

fn log_error(err: bulkhead_audit::AuditError) -> StoreError {
    StoreError::Invalid(format!("operator audit log: {err}").into())
}

fn to_hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Invalid("a stored hash is not 32 bytes".into()))
}

/// Takes the operator log's lock (until the transaction ends) and returns the tree size.
async fn lock_and_size(conn: &mut sqlx::PgConnection) -> Result<u64, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bulkhead.operator_audit_sequence'))")
        .execute(&mut *conn)
        .await?;
    let size: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(leaf_index) + 1, 0) FROM bulkhead.operator_audit_leaves",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(size as u64)
}

/// Appends `rows` as leaves from `size` on. The caller holds the lock.
async fn append(
    conn: &mut sqlx::PgConnection,
    mut size: u64,
    rows: Vec<EventRow>,
) -> Result<u64, StoreError> {
    let mut indexes = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    let mut hashes: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.0;
        let event = to_audit_event(row);
        let leaf = SequencedEvent {
            leaf_index: size,
            event: &event,
        }
        .leaf_hash()
        .map_err(log_error)?;
        indexes.push(size as i64);
        ids.push(id);
        hashes.push(leaf.to_vec());
        size += 1;
    }
    let appended = ids.len() as u64;
    if appended > 0 {
        sqlx::query(
            "INSERT INTO bulkhead.operator_audit_leaves (leaf_index, event_id, leaf_hash) \
             SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bytea[])",
        )
        .bind(&indexes)
        .bind(&ids)
        .bind(&hashes)
        .execute(&mut *conn)
        .await?;
    }
    Ok(appended)
}

/// Appends the event just written (as stored: `row` is what the insert returned) to the tree,
/// in the writing transaction.
pub(super) async fn append_own(
    conn: &mut sqlx::PgConnection,
    row: EventRow,
) -> Result<(), StoreError> {
    let size = lock_and_size(conn).await?;
    append(conn, size, vec![row]).await?;
    Ok(())
}

/// Appends every event without a leaf (those written before migration 0029), oldest first.
/// Returns how many.
pub async fn sequence_pending(conn: &mut sqlx::PgConnection) -> Result<u64, StoreError> {
    let size = lock_and_size(conn).await?;
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM bulkhead.operator_audit_events e \
         WHERE NOT EXISTS (SELECT 1 FROM bulkhead.operator_audit_leaves l WHERE l.event_id = e.id) \
         ORDER BY e.occurred_at, e.id"
    ))
    .fetch_all(&mut *conn)
    .await?;
    append(conn, size, rows).await
}

/// The root of the first `size` leaves, read in order (32 bytes a leaf, streamed; the operator
/// log is small enough that no node cache is kept), and the root of the first `mark` leaves when
/// `mark <= size` (one pass answers both).
async fn root_at(
    conn: &mut sqlx::PgConnection,
    size: u64,
    mark: Option<u64>,
) -> Result<(Hash, Option<Hash>), StoreError> {
    let mut builder = RootBuilder::new();
    let mut marked = (mark == Some(0)).then(|| builder.root());
    {
        let mut leaves = sqlx::query_as::<_, (i64, Vec<u8>)>(
            "SELECT leaf_index, leaf_hash FROM bulkhead.operator_audit_leaves \
             WHERE leaf_index < $1 ORDER BY leaf_index",
        )
        .bind(size as i64)
        .fetch(&mut *conn);
        while let Some((index, hash)) = leaves.try_next().await? {
            if index as u64 != builder.size() {
                return Err(StoreError::LogInconsistent(
                    format!("leaf {} is missing", builder.size()).into(),
                ));
            }
            builder.push(to_hash(&hash)?);
            if mark == Some(builder.size()) {
                marked = Some(builder.root());
            }
        }
    }
    if builder.size() != size {
        return Err(StoreError::LogInconsistent(
            "fewer leaves than its size".into(),
        ));
    }
    Ok((builder.root(), marked))
}

/// Refuses unless the log still holds what `latest` signed: at least
/// `latest.tree_size` leaves whose first `latest.tree_size` hash to its root. Returns the root of
/// all `size` leaves, read in the same pass.
async fn check_extends(
    conn: &mut sqlx::PgConnection,
    latest: Option<&SignedCheckpoint>,
    size: u64,
) -> Result<Hash, StoreError> {
    let Some(latest) = latest.map(|l| &l.checkpoint) else {
        return Ok(root_at(conn, size, None).await?.0);
    };
    let refuse = |why: String| StoreError::LogInconsistent(why.into());
    if size < latest.tree_size {
        return Err(refuse(format!(
            "the log holds {size} leaves; its latest checkpoint covers {}",
            latest.tree_size
        )));
    }
    let (root, old_root) = root_at(conn, size, Some(latest.tree_size)).await?;
    if old_root != Some(latest.root_hash) {
        return Err(refuse(format!(
            "its first {} leaves no longer hash to the latest checkpoint's root",
            latest.tree_size
        )));
    }
    Ok(root)
}

/// Refuses unless every event has a leaf and every leaf its event (run after
/// [`sequence_pending`], so an event without a leaf means nothing here; a leaf without its event
/// means an event was deleted).
async fn check_counts(conn: &mut sqlx::PgConnection, size: u64) -> Result<(), StoreError> {
    let (events, joined): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bulkhead.operator_audit_events), \
                (SELECT count(*) FROM bulkhead.operator_audit_leaves l \
                 JOIN bulkhead.operator_audit_events e ON e.id = l.event_id)",
    )
    .fetch_one(&mut *conn)
    .await?;
    if events as u64 != size || joined as u64 != size {
        return Err(StoreError::LogInconsistent(
            format!("{events} events, {joined} of {size} leaves with their event").into(),
        ));
    }
    Ok(())
}

async fn latest(conn: &mut sqlx::PgConnection) -> Result<Option<SignedCheckpoint>, StoreError> {
    let row: Option<(i64, Vec<u8>, String, String, String)> = sqlx::query_as(
        "SELECT tree_size, root_hash, signed_at, key_id, signature \
         FROM bulkhead.operator_audit_checkpoints ORDER BY tree_size DESC, id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(size, root, signed_at, key_id, signature)| {
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                tenant_id: OPERATOR_LOG_ID.to_owned(),
                tree_size: size as u64,
                root_hash: to_hash(&root)?,
                timestamp: signed_at,
            },
            key_id,
            signature,
        })
    })
    .transpose()
}

impl Store {
    /// The operator log's latest signed checkpoint (largest tree, then newest), if any.
    pub async fn latest_operator_checkpoint(&self) -> Result<Option<SignedCheckpoint>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        latest(&mut conn).await
    }

    /// Sequences what is pending and returns a checkpoint of the whole operator log: the latest
    /// one if it covers the whole tree and is signed by `key`, else a new one signed at `now`
    /// and stored (`true`).
    ///
    /// Fails closed with [`StoreError::LogInconsistent`] (logged at ERROR, nothing signed or
    /// written) unless the log extends its latest checkpoint — at least as many leaves, the
    /// first `tree_size` of them hashing to its root — and events and leaves agree one to one.
    /// Without this, an owner who switched the triggers off, deleted the tail event and its leaf
    /// and wrote another would get a fresh signature over the rewritten log.
    pub async fn operator_checkpoint(
        &self,
        key: &LogSigningKey,
        now: DateTime<Utc>,
    ) -> Result<(SignedCheckpoint, bool), StoreError> {
        self.sign_operator_checkpoint(key, now)
            .await
            .inspect_err(|err| {
                if let StoreError::LogInconsistent(why) = err {
                    tracing::error!(
                        reason = %why,
                        "the operator audit log failed its consistency check: no checkpoint \
                         signed, nothing exported; restore it and compare with checkpoints \
                         kept outside the database"
                    );
                }
            })
    }

    async fn sign_operator_checkpoint(
        &self,
        key: &LogSigningKey,
        now: DateTime<Utc>,
    ) -> Result<(SignedCheckpoint, bool), StoreError> {
        let mut tx = self.pool().begin().await?;
        sequence_pending(&mut tx).await?;
        let size = lock_and_size(&mut tx).await?;
        check_counts(&mut tx, size).await?;
        let latest = latest(&mut tx).await?;
        let root = check_extends(&mut tx, latest.as_ref(), size).await?;
        if let Some(latest) = latest {
            if latest.checkpoint.tree_size == size && latest.key_id == key.public().key_id() {
                tx.commit().await?;
                return Ok((latest, false));
            }
        }
        let signed = key
            .sign(Checkpoint {
                tenant_id: OPERATOR_LOG_ID.to_owned(),
                tree_size: size,
                root_hash: root,
                timestamp: format_timestamp(now),
            })
            .map_err(log_error)?;
        sqlx::query(
            "INSERT INTO bulkhead.operator_audit_checkpoints \
             (id, tree_size, root_hash, signed_at, key_id, signature) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(size as i64)
        .bind(root.to_vec())
        .bind(&signed.checkpoint.timestamp)
        .bind(&signed.key_id)
        .bind(&signed.signature)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((signed, true))
    }

    /// Leaves `[from, to)` of the operator log as export lines, in order: an `event` line with
    /// the stored body, or a `purged` line where the body is gone (the operator log has no
    /// retention, so verification refuses it). Leaves and bodies are never changed, so pages
    /// read in separate statements agree with any checkpoint they lie under.
    pub async fn operator_export_page(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<ExportLine>, StoreError> {
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
            Option<serde_json::Value>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT l.leaf_index, l.leaf_hash, l.event_id, e.occurred_at, e.actor, e.action, \
                    e.outcome, e.resource_id, e.reason, e.metadata \
             FROM bulkhead.operator_audit_leaves l \
             LEFT JOIN bulkhead.operator_audit_events e ON e.id = l.event_id \
             WHERE l.leaf_index >= $1 AND l.leaf_index < $2 ORDER BY l.leaf_index",
        )
        .bind(from as i64)
        .bind(to as i64)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                let leaf_index = r.0 as u64;
                let leaf_hash = to_hash(&r.1)?;
                Ok(match (r.3, r.4, r.5, r.6, r.9) {
                    (Some(at), Some(actor), Some(action), Some(outcome), Some(meta)) => {
                        let event =
                            to_audit_event((r.2, at, actor, action, outcome, r.7, r.8, meta));
                        ExportLine::Event {
                            leaf_index,
                            leaf_hash,
                            event: Box::new(event),
                        }
                    }
                    _ => ExportLine::Purged {
                        leaf_index,
                        leaf_hash,
                        event_id: OperatorEventId::from_uuid(r.2).to_string(),
                    },
                })
            })
            .collect()
    }
}
