//! API key records. Only the peppered HMAC of a key is ever stored.
//!
//! Every change that can make a key stop working (revoke, rotate, narrowing update, re-hash)
//! sends `NOTIFY bulkhead_api_keys, '<key uuid>'` in its transaction, delivered at commit, so
//! every server process can drop its cached verification of that key, and announces a ceiling
//! change of its tenant (`rbac::CEILING_CHANGES_CHANNEL`), which binds the tokens minted from it.

use bulkhead_auth::{KeyEnvironment, KeyHash};
use bulkhead_core::{AgentId, ApiKeyId, ScopeSet};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;

use crate::{StoreError, TenantTx};

mod lookup;

pub use lookup::KeyRecord;

/// Channel on which key changes are announced; payload: the key's UUID.
pub const KEY_CHANGES_CHANNEL: &str = "bulkhead_api_keys";

/// What is stored for a new key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// HMAC of the key under the current pepper.
    pub hash: KeyHash,
    /// Version of that pepper.
    pub pepper_version: i16,
    /// Live or test key.
    pub environment: KeyEnvironment,
    /// Non-secret prefix for humans (`bk_live_AbC1`).
    pub display_prefix: String,
    /// Who the key acts for (an agent or user label of the tenant).
    pub principal: String,
    /// What the key may do.
    pub scopes: ScopeSet,
    /// The agent the key belongs to, if any: then the agent's roles bound it too.
    pub agent: Option<AgentId>,
    /// Networks the key may be used from; empty means anywhere.
    pub allowed_ips: Vec<IpNet>,
    /// Free text.
    pub description: String,
    /// Who made it (audit id of the actor).
    pub created_by: String,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// The key this one replaces, when made by rotation.
    pub predecessor: Option<ApiKeyId>,
}

impl NewApiKey {
    /// A new tenant's first key, as onboarding makes it (the server's `bulkhead tenant create`
    /// and the test harness alike): `tenant-admin`, every scope, no expiry, made by
    /// `system:onboarding`, hashed under `pepper`.
    pub fn bootstrap_admin(
        key: &bulkhead_auth::ApiKey,
        pepper: &bulkhead_auth::KeyPepper,
        environment: KeyEnvironment,
    ) -> Self {
        Self {
            hash: pepper.key_hash(key),
            pepper_version: pepper.version(),
            environment,
            display_prefix: key.display_prefix(),
            principal: "tenant-admin".into(),
            scopes: ScopeSet::all(),
            agent: None,
            allowed_ips: Vec::new(),
            description: "bootstrap admin key".into(),
            created_by: "system:onboarding".into(),
            expires_at: None,
            predecessor: None,
        }
    }
}

/// Stored status of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Works.
    Active,
    /// Replaced by a successor; works until `grace_until`.
    Rotating,
    /// Stopped by an operator or the key itself.
    Revoked,
    /// Past its expiry or its grace period.
    Expired,
}

impl KeyStatus {
    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "active" => Ok(Self::Active),
            "rotating" => Ok(Self::Rotating),
            "revoked" => Ok(Self::Revoked),
            "expired" => Ok(Self::Expired),
            _ => Err(StoreError::UnsafeConfiguration(
                "api key row has an invalid status".into(),
            )),
        }
    }
}

/// A key's metadata (never the key).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyRecord {
    /// Record id.
    pub id: ApiKeyId,
    /// Non-secret prefix.
    pub display_prefix: String,
    /// `live` or `test`.
    pub environment: &'static str,
    /// Who the key acts for.
    pub principal: String,
    /// Scopes (names as stored).
    pub scopes: Vec<String>,
    /// The agent the key belongs to, if any.
    pub agent_id: Option<AgentId>,
    /// Allowed networks; empty means anywhere.
    pub allowed_ips: Vec<String>,
    /// Free text.
    pub description: String,
    /// Status, with expiry and grace already applied at read time.
    pub status: KeyStatus,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last successful use (recorded at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Address of that use.
    pub last_used_ip: Option<String>,
    /// The key this one replaced.
    pub predecessor_id: Option<ApiKeyId>,
    /// The key that replaced this one.
    pub successor_id: Option<ApiKeyId>,
    /// When this key was rotated.
    pub rotated_at: Option<DateTime<Utc>>,
    /// End of the rotation grace period.
    pub grace_until: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    /// Whether the key may authenticate at `now` (ignoring the IP allowlist).
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        matches!(self.status_at(now), KeyStatus::Active | KeyStatus::Rotating)
    }

    /// The status at `now`: a passed expiry or grace deadline reads as `Expired`.
    pub fn status_at(&self, now: DateTime<Utc>) -> KeyStatus {
        effective_status(self.status, self.expires_at, self.grace_until, now)
    }
}

/// Applies expiry and grace to a stored status.
pub fn effective_status(
    stored: KeyStatus,
    expires_at: Option<DateTime<Utc>>,
    grace_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> KeyStatus {
    match stored {
        KeyStatus::Revoked | KeyStatus::Expired => stored,
        _ if expires_at.is_some_and(|at| at <= now) => KeyStatus::Expired,
        KeyStatus::Rotating if grace_until.is_none_or(|at| at <= now) => KeyStatus::Expired,
        other => other,
    }
}

const COLUMNS: &str =
    "id, display_prefix, environment, principal, scopes, agent_id, allowed_ips::text[], \
    description, status, created_by, created_at, expires_at, last_used_at, host(last_used_ip), \
    predecessor_id, successor_id, rotated_at, grace_until, revoked_at";

#[derive(sqlx::FromRow)]
struct Row {
    id: uuid::Uuid,
    display_prefix: String,
    environment: String,
    principal: String,
    scopes: Vec<String>,
    agent_id: Option<uuid::Uuid>,
    allowed_ips: Vec<String>,
    description: String,
    status: String,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    host: Option<String>,
    predecessor_id: Option<uuid::Uuid>,
    successor_id: Option<uuid::Uuid>,
    rotated_at: Option<DateTime<Utc>>,
    grace_until: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl Row {
    fn into_record(self, now: DateTime<Utc>) -> Result<ApiKeyRecord, StoreError> {
        let stored = KeyStatus::parse(&self.status)?;
        Ok(ApiKeyRecord {
            id: ApiKeyId::from_uuid(self.id),
            display_prefix: self.display_prefix,
            environment: if self.environment == "live" {
                "live"
            } else {
                "test"
            },
            principal: self.principal,
            scopes: self.scopes,
            agent_id: self.agent_id.map(AgentId::from_uuid),
            allowed_ips: self.allowed_ips,
            description: self.description,
            status: effective_status(stored, self.expires_at, self.grace_until, now),
            created_by: self.created_by,
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            last_used_ip: self.host,
            predecessor_id: self.predecessor_id.map(ApiKeyId::from_uuid),
            successor_id: self.successor_id.map(ApiKeyId::from_uuid),
            rotated_at: self.rotated_at,
            grace_until: self.grace_until,
            revoked_at: self.revoked_at,
        })
    }
}

fn environment_text(env: KeyEnvironment) -> &'static str {
    match env {
        KeyEnvironment::Live => "live",
        KeyEnvironment::Test => "test",
    }
}

fn cidr_texts(nets: &[IpNet]) -> Vec<String> {
    nets.iter().map(|n| n.trunc().to_string()).collect()
}

async fn notify(tx: &mut TenantTx, id: ApiKeyId) -> Result<(), StoreError> {
    tx.notify(KEY_CHANGES_CHANNEL, id.uuid().to_string())
        .await?;
    // The tokens minted from a key are bounded by the key's status and allowlist through the
    // role-ceiling cache; a key change drops those cached facts on every process too.
    crate::tenant::rbac::notify_ceiling_change(tx).await
}

/// Keys of a tenant outside the shared tier are found through the registry's routing index
/// (migration 0011): written before the key itself, so a key is never stored unroutable. A route
/// without its key (the key's transaction rolled back) routes to nothing: harmless.
async fn route(tx: &TenantTx, hash: &[u8]) -> Result<(), StoreError> {
    if tx.location().placement == crate::Placement::Shared {
        return Ok(());
    }
    let Some(registry) = &tx.registry else {
        return Err(StoreError::UnsafeConfiguration(
            "a key outside the shared tier cannot be routed from here".into(),
        ));
    };
    sqlx::query("SELECT bulkhead.route_key($1, $2)")
        .bind(hash)
        .bind(tx.tenant_id().uuid())
        .execute(registry)
        .await?;
    Ok(())
}

/// Stores a key record for the transaction's tenant and returns its id.
pub async fn insert(tx: &mut TenantTx, key: &NewApiKey) -> Result<ApiKeyId, StoreError> {
    let id = ApiKeyId::new();
    let tenant = tx.tenant_id();
    route(tx, &key.hash.as_bytes()[..]).await?;
    sqlx::query(
        "INSERT INTO api_keys (tenant_id, id, key_hash, pepper_version, environment, \
         display_prefix, principal, scopes, allowed_ips, description, created_by, expires_at, \
         predecessor_id, agent_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text[]::cidr[], $10, $11, $12, $13, $14)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(&key.hash.as_bytes()[..])
    .bind(key.pepper_version)
    .bind(environment_text(key.environment))
    .bind(&key.display_prefix)
    .bind(&key.principal)
    .bind(key.scopes.to_strings())
    .bind(cidr_texts(&key.allowed_ips))
    .bind(&key.description)
    .bind(&key.created_by)
    .bind(key.expires_at)
    .bind(key.predecessor.map(|p| p.uuid()))
    .bind(key.agent.map(|a| a.uuid()))
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// One key of the transaction's tenant; another tenant's id is [`StoreError::NotFound`].
pub async fn get(
    tx: &mut TenantTx,
    id: ApiKeyId,
    now: DateTime<Utc>,
) -> Result<ApiKeyRecord, StoreError> {
    fetch_one(tx, id, now, "").await
}

/// Same as [`get`], locking the row for the rest of the transaction (updates, rotation).
pub async fn get_for_update(
    tx: &mut TenantTx,
    id: ApiKeyId,
    now: DateTime<Utc>,
) -> Result<ApiKeyRecord, StoreError> {
    fetch_one(tx, id, now, "FOR UPDATE").await
}

/// `locking` is a constant clause (`""` or `"FOR UPDATE"`), never input.
async fn fetch_one(
    tx: &mut TenantTx,
    id: ApiKeyId,
    now: DateTime<Utc>,
    locking: &'static str,
) -> Result<ApiKeyRecord, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2 {locking}"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_optional(tx.conn())
    .await?;
    row.ok_or(StoreError::NotFound)?.into_record(now)
}

/// A page of the tenant's keys in id order, optionally of one principal.
pub async fn list(
    tx: &mut TenantTx,
    after: Option<ApiKeyId>,
    limit: u32,
    principal: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 \
         AND ($2::uuid IS NULL OR id > $2) AND ($3::text IS NULL OR principal = $3) \
         ORDER BY id LIMIT $4"
    ))
    .bind(tenant.uuid())
    .bind(after.map(|a| a.uuid()))
    .bind(principal)
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    rows.into_iter().map(|r| r.into_record(now)).collect()
}

/// A change to a key's metadata; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    /// New description.
    pub description: Option<String>,
    /// New allowlist (empty: anywhere).
    pub allowed_ips: Option<Vec<IpNet>>,
    /// New expiry; `Some(None)` removes it.
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// Applies a patch and announces it.
pub async fn update(
    tx: &mut TenantTx,
    id: ApiKeyId,
    patch: &KeyPatch,
    now: DateTime<Utc>,
) -> Result<ApiKeyRecord, StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query(
        "UPDATE api_keys SET description = COALESCE($3, description), \
         allowed_ips = COALESCE($4::text[]::cidr[], allowed_ips), \
         expires_at = CASE WHEN $5 THEN $6 ELSE expires_at END \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(patch.description.as_deref())
    .bind(patch.allowed_ips.as_deref().map(cidr_texts))
    .bind(patch.expires_at.is_some())
    .bind(patch.expires_at.flatten())
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    notify(tx, id).await?;
    get(tx, id, now).await
}

/// Rotation: stores `successor` and puts the old key into its grace period, atomically. The old
/// key must be usable (active, or itself still in grace is refused: rotate its successor).
pub async fn rotate(
    tx: &mut TenantTx,
    old: ApiKeyId,
    successor: &NewApiKey,
    grace_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(ApiKeyRecord, ApiKeyId), StoreError> {
    let current = get_for_update(tx, old, now).await?;
    if current.status != KeyStatus::Active {
        return Err(StoreError::Conflict {
            constraint: format!(
                "key is {:?}, only an active key can be rotated",
                current.status
            )
            .to_lowercase(),
        });
    }
    let tenant = tx.tenant_id();
    // The old key leaves `active` before its successor is stored: quotas count active keys
    // only (migration 0023), so a rotation at the `api_keys` limit is net zero, not refused.
    sqlx::query(
        "UPDATE api_keys SET status = 'rotating', rotated_at = $3, grace_until = $4 \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(old.uuid())
    .bind(now)
    .bind(grace_until)
    .execute(tx.conn())
    .await?;
    let new_id = insert(tx, successor).await?;
    sqlx::query("UPDATE api_keys SET successor_id = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(old.uuid())
        .bind(new_id.uuid())
        .execute(tx.conn())
        .await?;
    notify(tx, old).await?;
    Ok((get(tx, old, now).await?, new_id))
}

/// Revokes a key at once (and announces it). Revoking a revoked key changes nothing.
pub async fn revoke(
    tx: &mut TenantTx,
    id: ApiKeyId,
    now: DateTime<Utc>,
) -> Result<ApiKeyRecord, StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query(
        "UPDATE api_keys SET status = 'revoked', revoked_at = COALESCE(revoked_at, $3) \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(now)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    notify(tx, id).await?;
    get(tx, id, now).await
}

/// Revokes every not-yet-revoked key of a principal; returns their ids.
pub async fn revoke_all_for_principal(
    tx: &mut TenantTx,
    principal: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ApiKeyId>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE api_keys SET status = 'revoked', revoked_at = $3 \
         WHERE tenant_id = $1 AND principal = $2 AND status <> 'revoked' RETURNING id",
    )
    .bind(tenant.uuid())
    .bind(principal)
    .bind(now)
    .fetch_all(tx.conn())
    .await?;
    let ids: Vec<ApiKeyId> = ids.into_iter().map(ApiKeyId::from_uuid).collect();
    for id in &ids {
        notify(tx, *id).await?;
    }
    Ok(ids)
}

/// Stores a fresh hash of a key under the current pepper (after it verified under an old one).
pub async fn rehash(
    tx: &mut TenantTx,
    id: ApiKeyId,
    hash: &KeyHash,
    pepper_version: i16,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    route(tx, &hash.as_bytes()[..]).await?;
    sqlx::query(
        "UPDATE api_keys SET key_hash = $3, pepper_version = $4 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(&hash.as_bytes()[..])
    .bind(pepper_version)
    .execute(tx.conn())
    .await?;
    notify(tx, id).await
}

/// Records a successful use.
pub async fn touch(
    tx: &mut TenantTx,
    id: ApiKeyId,
    at: DateTime<Utc>,
    ip: Option<std::net::IpAddr>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "UPDATE api_keys SET last_used_at = GREATEST(last_used_at, $3), \
         last_used_ip = COALESCE($4::text::inet, last_used_ip) WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(at)
    .bind(ip.map(|i| i.to_string()))
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A tenant's key policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyPolicy {
    /// How long a rotated key keeps working.
    pub grace_seconds: i32,
    /// Age at which a key is due for rotation.
    pub max_age_days: i32,
    /// Warning window before a grace deadline.
    pub deadline_warning_seconds: i32,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            grace_seconds: 7 * 24 * 3600,
            max_age_days: 90,
            deadline_warning_seconds: 48 * 3600,
        }
    }
}

/// The tenant's key policy (defaults when it has set none).
pub async fn policy(tx: &mut TenantTx) -> Result<KeyPolicy, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<(i32, i32, i32)> = sqlx::query_as(
        "SELECT key_grace_seconds, key_max_age_days, key_deadline_warning_seconds \
         FROM tenant_settings WHERE tenant_id = $1",
    )
    .bind(tenant.uuid())
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.map_or_else(
        KeyPolicy::default,
        |(grace_seconds, max_age_days, deadline_warning_seconds)| KeyPolicy {
            grace_seconds,
            max_age_days,
            deadline_warning_seconds,
        },
    ))
}

/// Sets the tenant's key policy (the database checks the bounds).
pub async fn set_policy(tx: &mut TenantTx, policy: &KeyPolicy) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO tenant_settings (tenant_id, key_grace_seconds, key_max_age_days, \
         key_deadline_warning_seconds) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET key_grace_seconds = EXCLUDED.key_grace_seconds, \
         key_max_age_days = EXCLUDED.key_max_age_days, \
         key_deadline_warning_seconds = EXCLUDED.key_deadline_warning_seconds, updated_at = now()",
    )
    .bind(tenant.uuid())
    .bind(policy.grace_seconds)
    .bind(policy.max_age_days)
    .bind(policy.deadline_warning_seconds)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Rotated keys still used after rotation whose grace deadline falls within the warning window
/// and that have not been warned about; marks them warned and returns them.
pub async fn take_deadline_warnings(
    tx: &mut TenantTx,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "UPDATE api_keys SET deadline_notified_at = $2 \
         WHERE tenant_id = $1 AND status = 'rotating' AND deadline_notified_at IS NULL \
           AND grace_until > $2 AND grace_until <= $3 AND last_used_at > rotated_at \
         RETURNING {COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(now)
    .bind(now + window)
    .fetch_all(tx.conn())
    .await?;
    rows.into_iter().map(|r| r.into_record(now)).collect()
}

/// Marks keys whose grace period or expiry has passed as `expired`; returns their ids.
pub async fn expire_lapsed(
    tx: &mut TenantTx,
    now: DateTime<Utc>,
) -> Result<Vec<ApiKeyId>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE api_keys SET status = 'expired' WHERE tenant_id = $1 \
         AND ((status = 'rotating' AND grace_until <= $2) \
           OR (status IN ('active', 'rotating') AND expires_at <= $2)) RETURNING id",
    )
    .bind(tenant.uuid())
    .bind(now)
    .fetch_all(tx.conn())
    .await?;
    let ids: Vec<ApiKeyId> = ids.into_iter().map(ApiKeyId::from_uuid).collect();
    for id in &ids {
        notify(tx, *id).await?;
    }
    Ok(ids)
}

/// Active keys older than `max_age` (due for rotation), oldest first.
pub async fn due_for_rotation(
    tx: &mut TenantTx,
    now: DateTime<Utc>,
    max_age: chrono::Duration,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND status = 'active' \
         AND (expires_at IS NULL OR expires_at > $2) AND created_at <= $3 ORDER BY created_at, id"
    ))
    .bind(tenant.uuid())
    .bind(now)
    .bind(now - max_age)
    .fetch_all(tx.conn())
    .await?;
    rows.into_iter().map(|r| r.into_record(now)).collect()
}

/// Marks keys as reminded about their age; returns those that had not been reminded yet.
pub async fn take_age_reminders(
    tx: &mut TenantTx,
    now: DateTime<Utc>,
    remind_after: chrono::Duration,
) -> Result<Vec<ApiKeyId>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE api_keys SET age_reminded_at = $2 WHERE tenant_id = $1 \
         AND status = 'active' AND age_reminded_at IS NULL AND created_at <= $3 RETURNING id",
    )
    .bind(tenant.uuid())
    .bind(now)
    .bind(now - remind_after)
    .fetch_all(tx.conn())
    .await?;
    Ok(ids.into_iter().map(ApiKeyId::from_uuid).collect())
}
