//! The operator plane's own tables (migration 0027): operator keys and the operator audit log.
//! Deployment-wide, no tenant; reached through a store on the owner role only (the application
//! role has no privilege on them). The log is a verifiable Merkle log ([`log`], migration 0029):
//! each event is sequenced in the transaction that writes it.

pub mod log;

use bulkhead_auth::KeyHash;
use bulkhead_core::{OperatorEventId, OperatorKeyId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Store, StoreError};

/// The storage form of a new operator key.
#[derive(Debug, Clone)]
pub struct NewOperatorKey {
    /// HMAC(pepper, key text).
    pub hash: KeyHash,
    /// The pepper's version.
    pub pepper_version: i16,
    /// `bk_op_` and four characters, for lists.
    pub display_prefix: String,
    /// Who or what it is for (1 to 100 characters).
    pub name: String,
    /// Operator scope names (checked by the caller).
    pub scopes: Vec<String>,
    /// Who made it: `cli:<account>` or the making key's id.
    pub created_by: String,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An operator key's record (never the key, never its hash).
#[derive(Debug, Clone, Serialize)]
pub struct OperatorKeyRecord {
    /// Its id.
    pub id: OperatorKeyId,
    /// Its name.
    pub name: String,
    /// `bk_op_` and four characters.
    pub display_prefix: String,
    /// Operator scope names.
    pub scopes: Vec<String>,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last successful use (written at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

type KeyRow = (
    uuid::Uuid,
    String,
    String,
    Vec<String>,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

const KEY_COLUMNS: &str = "id, name, display_prefix, scopes, created_by, created_at, expires_at, \
                           last_used_at, revoked_at";

fn key_from_row(row: KeyRow) -> OperatorKeyRecord {
    let (
        id,
        name,
        display_prefix,
        scopes,
        created_by,
        created_at,
        expires_at,
        last_used_at,
        revoked_at,
    ) = row;
    OperatorKeyRecord {
        id: OperatorKeyId::from_uuid(id),
        name,
        display_prefix,
        scopes,
        created_by,
        created_at,
        expires_at,
        last_used_at,
        revoked_at,
    }
}

/// One event of the operator audit log, as written.
#[derive(Debug, Clone)]
pub struct NewOperatorEvent {
    /// `opkey_…`, `cli:<account>`, or `anonymous` (a refused credential).
    pub actor: String,
    /// What was done or tried (`tenant.create`, `operator.auth`, …).
    pub action: &'static str,
    /// `started`, `success`, `failure` or `blocked`.
    pub outcome: &'static str,
    /// What it acted on (a tenant or key id).
    pub resource_id: Option<String>,
    /// Why it was refused or failed.
    pub reason: Option<String>,
    /// Anything else (ids and names only; never a secret).
    pub metadata: serde_json::Value,
}

/// One event of the operator audit log, as read.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorEvent {
    /// Its id.
    pub id: OperatorEventId,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// How it ended.
    pub outcome: String,
    /// On what.
    pub resource_id: Option<String>,
    /// Why (refusals and failures).
    pub reason: Option<String>,
    /// The rest.
    pub metadata: serde_json::Value,
}

pub(crate) async fn insert_event(
    conn: &mut sqlx::PgConnection,
    event: &NewOperatorEvent,
) -> Result<OperatorEventId, StoreError> {
    let id = OperatorEventId::new();
    // The row as stored (the database's clock and JSON form) is what the leaf commits to.
    let row: log::EventRow = sqlx::query_as(&format!(
        "INSERT INTO bulkhead.operator_audit_events \
         (id, actor, action, outcome, resource_id, reason, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
        log::EVENT_COLUMNS
    ))
    .bind(id.uuid())
    .bind(&event.actor)
    .bind(event.action)
    .bind(event.outcome)
    .bind(&event.resource_id)
    .bind(&event.reason)
    .bind(&event.metadata)
    .fetch_one(&mut *conn)
    .await?;
    log::append_own(conn, row).await?;
    Ok(id)
}

impl Store {
    /// Stores a new operator key and its `operator_key.create` event in one transaction. Owner
    /// role only.
    pub async fn insert_operator_key(
        &self,
        new: &NewOperatorKey,
        mut event: NewOperatorEvent,
    ) -> Result<OperatorKeyRecord, StoreError> {
        let id = OperatorKeyId::new();
        let mut tx = self.pool().begin().await?;
        let row: KeyRow = sqlx::query_as(&format!(
            "INSERT INTO bulkhead.operator_keys \
             (id, name, key_hash, pepper_version, display_prefix, scopes, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {KEY_COLUMNS}"
        ))
        .bind(id.uuid())
        .bind(&new.name)
        .bind(new.hash.as_bytes().as_slice())
        .bind(new.pepper_version)
        .bind(&new.display_prefix)
        .bind(&new.scopes)
        .bind(&new.created_by)
        .bind(new.expires_at)
        .fetch_one(&mut *tx)
        .await?;
        event.resource_id = Some(id.to_string());
        insert_event(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(key_from_row(row))
    }

    /// Every operator key, oldest first (revoked ones included, marked).
    pub async fn operator_keys(&self) -> Result<Vec<OperatorKeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM bulkhead.operator_keys ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(key_from_row).collect())
    }

    /// Revokes an operator key at `now` (a key already revoked keeps its first revocation
    /// time) and records the event in the same transaction. [`StoreError::NotFound`] if there
    /// is no such key.
    pub async fn revoke_operator_key(
        &self,
        id: OperatorKeyId,
        now: DateTime<Utc>,
        event: NewOperatorEvent,
    ) -> Result<OperatorKeyRecord, StoreError> {
        let mut tx = self.pool().begin().await?;
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "UPDATE bulkhead.operator_keys SET revoked_at = coalesce(revoked_at, $2) \
             WHERE id = $1 RETURNING {KEY_COLUMNS}"
        ))
        .bind(id.uuid())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        insert_event(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(key_from_row(row))
    }

    /// The operator key whose stored hash is one of `hashes` (the presented key under each
    /// pepper the server holds), whatever its state: the caller decides. An ambiguous match
    /// (impossible unless the table was tampered with) is refused as no match.
    pub async fn lookup_operator_key(
        &self,
        hashes: &[KeyHash],
    ) -> Result<Option<OperatorKeyRecord>, StoreError> {
        let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| h.as_bytes().to_vec()).collect();
        let rows: Vec<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM bulkhead.operator_keys WHERE key_hash = ANY($1) LIMIT 2"
        ))
        .bind(&hashes)
        .fetch_all(self.pool())
        .await?;
        let mut rows = rows.into_iter();
        match (rows.next(), rows.next()) {
            (Some(row), None) => Ok(Some(key_from_row(row))),
            _ => Ok(None),
        }
    }

    /// Records a successful use, at most once a minute per key.
    pub async fn touch_operator_key(
        &self,
        id: OperatorKeyId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE bulkhead.operator_keys SET last_used_at = $2 WHERE id = $1 \
             AND (last_used_at IS NULL OR last_used_at < $2 - interval '60 seconds')",
        )
        .bind(id.uuid())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Appends one event to the operator audit log (and its leaf to the log's tree, in the same
    /// transaction).
    pub async fn record_operator_event(
        &self,
        event: &NewOperatorEvent,
    ) -> Result<OperatorEventId, StoreError> {
        let mut tx = self.pool().begin().await?;
        let id = insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The operator audit log's latest `limit` events, newest first.
    pub async fn operator_events(&self, limit: i64) -> Result<Vec<OperatorEvent>, StoreError> {
        type Row = (
            uuid::Uuid,
            DateTime<Utc>,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            serde_json::Value,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, occurred_at, actor, action, outcome, resource_id, reason, metadata \
             FROM bulkhead.operator_audit_events ORDER BY occurred_at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, occurred_at, actor, action, outcome, resource_id, reason, metadata)| {
                    OperatorEvent {
                        id: OperatorEventId::from_uuid(id),
                        occurred_at,
                        actor,
                        action,
                        outcome,
                        resource_id,
                        reason,
                        metadata,
                    }
                },
            )
            .collect())
    }
}
