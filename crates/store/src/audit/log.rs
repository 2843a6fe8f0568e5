//! The tenant's verifiable audit log in PostgreSQL: sequencing events into the tenant's Merkle
//! tree, signed checkpoints and proofs. Listing and export pages read it ([`super::pages`]).
//!
//! # Invariants
//! - Everything here runs inside one tenant's [`TenantTx`]; no function reads across tenants. The
//!   sequencer iterates tenants from the registry (which the app role may read) and sequences each
//!   inside that tenant's own transaction, so no `SECURITY DEFINER` function is needed.
//! - Leaf indexes are gap-free from 0 per tenant: [`sequence`] takes a transaction-scoped advisory
//!   lock for the tenant before reading the tree size, so two sequencers never assign the same
//!   index (the primary key `(tenant_id, leaf_index)` would refuse it anyway), and it commits the
//!   leaves and the new nodes together.
//! - Sequencing order is deterministic: unsequenced events by id (UUIDv7, time-ordered), in
//!   batches; an event that commits late (long transaction) is taken by a later run.
//! - Nothing is updated: leaves, nodes and checkpoints are inserted once (the tables refuse
//!   anything else, see `migrations/0007_audit_log.sql`).

use std::collections::HashMap;

use bulkhead_audit::tree::{self, Hash, NodeId};
use bulkhead_audit::{AuditEvent, Checkpoint, LogSigningKey, SequencedEvent, SignedCheckpoint};
use bulkhead_core::{AuditEventId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{StoreError, TenantTx};

/// Text form of every audit timestamp: RFC 3339, UTC, microseconds.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Formats a timestamp the way events and checkpoints carry it.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.format(TIMESTAMP_FORMAT).to_string()
}

/// Events sequenced per statement batch.
pub const SEQUENCE_BATCH: i64 = 2000;

/// How far behind the newest sequenced event a normal run looks for stragglers; a full sweep
/// ([`Sweep::Full`]) looks at everything.
pub const STRAGGLER_HORIZON: chrono::Duration = chrono::Duration::minutes(15);

/// How much of the table a sequencing run scans for unsequenced events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Events at most [`STRAGGLER_HORIZON`] older than the newest sequenced one, or than the
    /// database's clock if that is earlier: cheap, and enough for every transaction shorter than
    /// the horizon. (Event ids carry the writer's clock; one event from a writer whose clock runs
    /// ahead must not move the window past everyone else's events.)
    Recent,
    /// [`Sweep::Recent`], widened to include this event whatever its writer's clock said: for a
    /// writer that must see its own event sequenced in the same transaction (a purge).
    Including(AuditEventId),
    /// Every event: catches any straggler. Run at start and periodically.
    Full,
}

pub(super) const EVENT_COLUMNS: &str = "e.id, e.occurred_at, e.actor_id, e.actor_type, e.action, \
     e.resource_id, e.outcome, host(e.ip_address), e.user_agent, e.request_id, e.delegation, \
     e.metadata";

pub(super) type EventRow = (
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
);

pub(super) fn event_from_row(tenant: TenantId, row: EventRow) -> AuditEvent {
    let (id, at, actor_id, actor_type, action, resource_id, outcome, ip, ua, request_id, del, meta) =
        row;
    AuditEvent {
        event_id: AuditEventId::from_uuid(id).to_string(),
        timestamp: format_timestamp(at),
        tenant_id: tenant.to_string(),
        actor_id,
        actor_type,
        action,
        resource_id,
        outcome,
        ip_address: ip,
        user_agent: ua,
        request_id,
        delegation: del,
        metadata: meta,
    }
}

pub(super) fn to_hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Invalid("a stored hash is not 32 bytes".into()))
}

fn tree_error(err: bulkhead_audit::AuditError) -> StoreError {
    StoreError::Invalid(format!("audit log: {err}").into())
}

/// Number of leaves in the tenant's tree.
pub async fn tree_size(tx: &mut TenantTx) -> Result<u64, StoreError> {
    let tenant = tx.tenant_id();
    let max: Option<i64> =
        sqlx::query_scalar("SELECT max(leaf_index) FROM audit_leaves WHERE tenant_id = $1")
            .bind(tenant.uuid())
            .fetch_one(tx.conn())
            .await?;
    Ok(max.map_or(0, |m| m as u64 + 1))
}

/// Reads the hashes of `ids` (leaves from `audit_leaves`, higher levels from `audit_nodes`). A
/// missing one is an error: the tree is incomplete, which must not happen.
pub async fn fetch_nodes(
    tx: &mut TenantTx,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, StoreError> {
    let tenant = tx.tenant_id();
    let leaf_indexes: Vec<i64> = ids
        .iter()
        .filter(|id| id.level == 0)
        .map(|id| id.index as i64)
        .collect();
    let (levels, indexes): (Vec<i16>, Vec<i64>) = ids
        .iter()
        .filter(|id| id.level > 0)
        .map(|id| (i16::from(id.level), id.index as i64))
        .unzip();
    let rows: Vec<(i16, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT 0::smallint, leaf_index, leaf_hash FROM audit_leaves \
         WHERE tenant_id = $1 AND leaf_index = ANY($2) \
         UNION ALL \
         SELECT n.level, n.node_index, n.hash FROM audit_nodes n \
         JOIN unnest($3::smallint[], $4::bigint[]) AS want(level, node_index) \
           ON want.level = n.level AND want.node_index = n.node_index \
         WHERE n.tenant_id = $1",
    )
    .bind(tenant.uuid())
    .bind(&leaf_indexes)
    .bind(&levels)
    .bind(&indexes)
    .fetch_all(tx.conn())
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for (level, index, hash) in rows {
        out.insert(
            NodeId {
                level: level as u8,
                index: index as u64,
            },
            to_hash(&hash)?,
        );
    }
    if let Some(missing) = ids.iter().find(|id| !out.contains_key(id)) {
        return Err(StoreError::Invalid(
            format!(
                "audit log: node (level {}, index {}) is missing",
                missing.level, missing.index
            )
            .into(),
        ));
    }
    Ok(out)
}

/// The root of the tenant's tree at `size` (which must not exceed the tree).
pub async fn root_at(tx: &mut TenantTx, size: u64) -> Result<Hash, StoreError> {
    let nodes = fetch_nodes(tx, &tree::root_nodes(size)).await?;
    tree::root_from_nodes(size, &nodes).map_err(tree_error)
}

/// Appends the tenant's unsequenced events to its tree. Returns how many were appended. Commit
/// the transaction to make them part of the log.
pub async fn sequence(tx: &mut TenantTx, sweep: Sweep) -> Result<u64, StoreError> {
    let tenant = tx.tenant_id();
    // One sequencer per tenant at a time; released at commit or rollback.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bulkhead.audit_sequence'), hashtext($1))")
        .bind(tenant.uuid().to_string())
        .execute(tx.conn())
        .await?;
    let mut size = tree_size(tx).await?;
    let mut frontier = fetch_nodes(tx, &tree::frontier(size)).await?;
    let mut lower_bound = match sweep {
        Sweep::Full => uuid::Uuid::nil(),
        Sweep::Recent => recent_lower_bound(tx, size).await?,
        Sweep::Including(event) => recent_lower_bound(tx, size).await?.min(event.uuid()),
    };
    let mut appended = 0u64;
    // Streaming to the tenant's SIEM (webhook endpoints subscribed to `audit.event`): looked up
    // once per run, so tenants without a subscriber pay one query.
    let stream_targets = crate::tenant::webhooks::audit_stream_targets(tx).await?;
    loop {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events e \
             WHERE e.tenant_id = $1 AND e.id >= $2 \
               AND NOT EXISTS (SELECT 1 FROM audit_leaves l \
                               WHERE l.tenant_id = e.tenant_id AND l.event_id = e.id) \
             ORDER BY e.id LIMIT $3"
        ))
        .bind(tenant.uuid())
        .bind(lower_bound)
        .bind(SEQUENCE_BATCH)
        .fetch_all(tx.conn())
        .await?;
        if rows.is_empty() {
            break;
        }
        let count = rows.len() as i64;
        let mut leaf_indexes = Vec::with_capacity(rows.len());
        let mut event_ids = Vec::with_capacity(rows.len());
        let mut leaf_hashes: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
        let (mut levels, mut node_indexes, mut node_hashes) =
            (Vec::<i16>::new(), Vec::<i64>::new(), Vec::<Vec<u8>>::new());
        // The next batch starts after this one: every unsequenced event below the last id taken
        // was in this batch (one that commits meanwhile below it is left to the next pass).
        if let Some(last) = rows.last() {
            lower_bound = next_uuid(last.0);
        }
        for row in rows {
            let id = row.0;
            let event = event_from_row(tenant, row);
            let leaf = SequencedEvent {
                leaf_index: size,
                event: &event,
            }
            .leaf_hash()
            .map_err(tree_error)?;
            frontier.insert(
                NodeId {
                    level: 0,
                    index: size,
                },
                leaf,
            );
            for (node, left, right) in tree::new_nodes_after_append(size) {
                let (Some(l), Some(r)) = (frontier.get(&left), frontier.get(&right)) else {
                    return Err(StoreError::Invalid(
                        "audit log: the tree frontier is incomplete".into(),
                    ));
                };
                let hash = tree::node_hash(l, r);
                frontier.insert(node, hash);
                levels.push(i16::from(node.level));
                node_indexes.push(node.index as i64);
                node_hashes.push(hash.to_vec());
            }
            if !stream_targets.is_empty() {
                let payload = serde_json::json!({ "leaf_index": size, "event": event });
                crate::tenant::webhooks::enqueue_audit_stream(tx, &stream_targets, payload).await?;
            }
            leaf_indexes.push(size as i64);
            event_ids.push(id);
            leaf_hashes.push(leaf.to_vec());
            size += 1;
            appended += 1;
        }
        // Keep only the frontier: what the next append needs.
        let keep: std::collections::HashSet<NodeId> = tree::frontier(size).into_iter().collect();
        frontier.retain(|id, _| keep.contains(id));
        sqlx::query(
            "INSERT INTO audit_leaves (tenant_id, leaf_index, event_id, leaf_hash) \
             SELECT $1, * FROM unnest($2::bigint[], $3::uuid[], $4::bytea[])",
        )
        .bind(tenant.uuid())
        .bind(&leaf_indexes)
        .bind(&event_ids)
        .bind(&leaf_hashes)
        .execute(tx.conn())
        .await?;
        if !levels.is_empty() {
            sqlx::query(
                "INSERT INTO audit_nodes (tenant_id, level, node_index, hash) \
                 SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::bytea[])",
            )
            .bind(tenant.uuid())
            .bind(&levels)
            .bind(&node_indexes)
            .bind(&node_hashes)
            .execute(tx.conn())
            .await?;
        }
        if count < SEQUENCE_BATCH {
            break;
        }
    }
    Ok(appended)
}

/// The smallest UUID greater than `id`.
fn next_uuid(id: uuid::Uuid) -> uuid::Uuid {
    uuid::Uuid::from_u128(id.as_u128().saturating_add(1))
}

/// The smallest event id a [`Sweep::Recent`] run considers: the newest sequenced event's time,
/// or the database's clock if that is earlier, minus [`STRAGGLER_HORIZON`], as the lowest UUIDv7
/// of that millisecond. The newest event's time comes from its writer's clock (a CLI on another
/// host, say); the database's clock caps it, so a future-dated event cannot hide the ordinary
/// events after it until the next full sweep.
async fn recent_lower_bound(tx: &mut TenantTx, size: u64) -> Result<uuid::Uuid, StoreError> {
    if size == 0 {
        return Ok(uuid::Uuid::nil());
    }
    let tenant = tx.tenant_id();
    let (newest, db_now_ms): (uuid::Uuid, i64) = sqlx::query_as(
        "SELECT event_id, (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
         FROM audit_leaves WHERE tenant_id = $1 AND leaf_index = $2",
    )
    .bind(tenant.uuid())
    .bind(size as i64 - 1)
    .fetch_one(tx.conn())
    .await?;
    let Some(ts) = newest.get_timestamp() else {
        return Ok(uuid::Uuid::nil());
    };
    let (secs, nanos) = ts.to_unix();
    let newest_ms = secs * 1000 + u64::from(nanos) / 1_000_000;
    let millis = newest_ms
        .min(u64::try_from(db_now_ms).unwrap_or(0))
        .saturating_sub(STRAGGLER_HORIZON.num_milliseconds() as u64);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    Ok(uuid::Uuid::from_bytes(bytes))
}

/// Signs and stores a checkpoint of the tenant's tree as it is in this transaction.
pub async fn sign_checkpoint(
    tx: &mut TenantTx,
    key: &LogSigningKey,
    now: DateTime<Utc>,
) -> Result<SignedCheckpoint, StoreError> {
    let size = tree_size(tx).await?;
    let signed = sign_tree(tx, key, now, size).await?;
    store_checkpoint(tx, &signed).await?;
    Ok(signed)
}

/// Signs a checkpoint of the tenant's tree at `size` (which the transaction must see) without
/// storing it.
pub(super) async fn sign_tree(
    tx: &mut TenantTx,
    key: &LogSigningKey,
    now: DateTime<Utc>,
    size: u64,
) -> Result<SignedCheckpoint, StoreError> {
    let root = root_at(tx, size).await?;
    key.sign(Checkpoint {
        tenant_id: tx.tenant_id().to_string(),
        tree_size: size,
        root_hash: root,
        timestamp: format_timestamp(now),
    })
    .map_err(tree_error)
}

/// Stores a signed checkpoint of the transaction's tenant. Leaves never change, so a checkpoint
/// of a size the tree has reached stays true whenever it is stored.
pub(super) async fn store_checkpoint(
    tx: &mut TenantTx,
    signed: &SignedCheckpoint,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let root = signed.checkpoint.root_hash;
    let size = signed.checkpoint.tree_size;
    sqlx::query(
        "INSERT INTO audit_checkpoints \
         (tenant_id, id, tree_size, root_hash, signed_at, key_id, signature) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant.uuid())
    .bind(uuid::Uuid::now_v7())
    .bind(size as i64)
    .bind(root.to_vec())
    .bind(&signed.checkpoint.timestamp)
    .bind(&signed.key_id)
    .bind(&signed.signature)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The tenant's most recent checkpoint (largest tree, then newest), if any.
pub async fn latest_checkpoint(tx: &mut TenantTx) -> Result<Option<SignedCheckpoint>, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<(i64, Vec<u8>, String, String, String)> = sqlx::query_as(
        "SELECT tree_size, root_hash, signed_at, key_id, signature FROM audit_checkpoints \
         WHERE tenant_id = $1 ORDER BY tree_size DESC, id DESC LIMIT 1",
    )
    .bind(tenant.uuid())
    .fetch_optional(tx.conn())
    .await?;
    row.map(|(size, root, signed_at, key_id, signature)| {
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                tenant_id: tenant.to_string(),
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

/// Size of the tree when the tenant's last checkpoint was signed (0 without one).
pub async fn checkpointed_size(tx: &mut TenantTx) -> Result<Option<u64>, StoreError> {
    Ok(latest_checkpoint(tx).await?.map(|c| c.checkpoint.tree_size))
}

/// An inclusion proof as served.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InclusionProof {
    /// The event.
    pub event_id: AuditEventId,
    /// Its leaf.
    pub leaf_index: u64,
    /// The tree the proof is for.
    pub tree_size: u64,
    /// The leaf hash stored for the event.
    #[serde(with = "bulkhead_audit::hex::serde_hash")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{64}$"))]
    pub leaf_hash: Hash,
    /// RFC 9162 audit path, leaf first.
    #[serde(with = "bulkhead_audit::hex::serde_hashes")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub audit_path: Vec<Hash>,
}

/// Why a proof cannot be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofRefusal {
    /// The event is not in the tenant's log (or is another tenant's).
    NoSuchEvent,
    /// The event exists but has no leaf yet.
    NotSequenced,
    /// The sizes asked for are outside the tree.
    BadSize(String),
}

/// The inclusion proof of `event` in the tenant's tree of `tree_size` leaves.
pub async fn inclusion_proof(
    tx: &mut TenantTx,
    event: AuditEventId,
    tree_size: u64,
) -> Result<Result<InclusionProof, ProofRefusal>, StoreError> {
    let tenant = tx.tenant_id();
    let leaf: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT leaf_index, leaf_hash FROM audit_leaves \
         WHERE tenant_id = $1 AND event_id = $2",
    )
    .bind(tenant.uuid())
    .bind(event.uuid())
    .fetch_optional(tx.conn())
    .await?;
    let Some((index, leaf_hash)) = leaf else {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM audit_events WHERE tenant_id = $1 AND id = $2)",
        )
        .bind(tenant.uuid())
        .bind(event.uuid())
        .fetch_one(tx.conn())
        .await?;
        return Ok(Err(if exists {
            ProofRefusal::NotSequenced
        } else {
            ProofRefusal::NoSuchEvent
        }));
    };
    let index = index as u64;
    if let Err(refusal) = tree_size_checked(tx, tree_size).await? {
        return Ok(Err(refusal));
    }
    if index >= tree_size {
        return Ok(Err(ProofRefusal::BadSize(format!(
            "the event is leaf {index}, not in a tree of size {tree_size}"
        ))));
    }
    let plan = tree::inclusion_plan(index, tree_size).map_err(tree_error)?;
    let nodes = fetch_nodes(tx, &plan.nodes()).await?;
    Ok(Ok(InclusionProof {
        event_id: event,
        leaf_index: index,
        tree_size,
        leaf_hash: to_hash(&leaf_hash)?,
        audit_path: plan.resolve(&nodes).map_err(tree_error)?,
    }))
}

async fn tree_size_checked(
    tx: &mut TenantTx,
    asked: u64,
) -> Result<Result<u64, ProofRefusal>, StoreError> {
    let size = tree_size(tx).await?;
    if asked == 0 || asked > size {
        return Ok(Err(ProofRefusal::BadSize(format!(
            "tree_size must be between 1 and the tree's size {size}"
        ))));
    }
    Ok(Ok(size))
}

/// A consistency proof as served.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsistencyProof {
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// RFC 9162 consistency proof.
    #[serde(with = "bulkhead_audit::hex::serde_hashes")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub proof: Vec<Hash>,
}

/// The consistency proof between the tenant's trees of `from` and `to` leaves.
pub async fn consistency_proof(
    tx: &mut TenantTx,
    from: u64,
    to: u64,
) -> Result<Result<ConsistencyProof, ProofRefusal>, StoreError> {
    if let Err(refusal) = tree_size_checked(tx, to).await? {
        return Ok(Err(refusal));
    }
    if from == 0 || from > to {
        return Ok(Err(ProofRefusal::BadSize(
            "from must be between 1 and to".into(),
        )));
    }
    let plan = tree::consistency_plan(from, to).map_err(tree_error)?;
    let nodes = fetch_nodes(tx, &plan.nodes()).await?;
    Ok(Ok(ConsistencyProof {
        from,
        to,
        proof: plan.resolve(&nodes).map_err(tree_error)?,
    }))
}
