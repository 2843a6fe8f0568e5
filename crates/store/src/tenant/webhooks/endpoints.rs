//! Webhook endpoints: where a tenant's events go, and their sealed signing secrets.

use std::fmt;

use bulkhead_auth::MasterKey;
use bulkhead_core::{EndpointId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::tenant::data_key::{self, Secret};
use crate::{StoreError, TenantTx};

/// An endpoint as shown to its tenant (never with its secrets).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Endpoint {
    /// Public id.
    pub id: EndpointId,
    /// Where deliveries go.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Subscribed event types; empty means all.
    pub event_types: Vec<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why it was disabled, if it was disabled automatically.
    pub disabled_reason: Option<String>,
    /// Deliveries per second at most, if limited.
    pub rate_limit_per_second: Option<i32>,
    /// Extra request headers (names already vetted).
    pub headers: Value,
    /// Failed deliveries in a row.
    pub consecutive_failures: i32,
    /// Since when it has failed without a success, if it is failing.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the circuit breaker holds deliveries back.
    pub circuit_open_until: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct EndpointRow {
    pub(super) id: uuid::Uuid,
    url: String,
    description: String,
    event_types: Vec<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    rate_limit_per_second: Option<i32>,
    headers: Value,
    consecutive_failures: i32,
    failing_since: Option<DateTime<Utc>>,
    circuit_open_until: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<EndpointRow> for Endpoint {
    fn from(r: EndpointRow) -> Self {
        Endpoint {
            id: EndpointId::from_uuid(r.id),
            url: r.url,
            description: r.description,
            event_types: r.event_types,
            enabled: r.enabled,
            disabled_reason: r.disabled_reason,
            rate_limit_per_second: r.rate_limit_per_second,
            headers: r.headers,
            consecutive_failures: r.consecutive_failures,
            failing_since: r.failing_since,
            circuit_open_until: r.circuit_open_until,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub(super) const ENDPOINT_COLUMNS: &str =
    "id, url, description, event_types, enabled, disabled_reason, \
     rate_limit_per_second, headers, consecutive_failures, failing_since, circuit_open_until, \
     created_at, updated_at";

/// The signing keys of an endpoint. `Debug` is redacted.
#[derive(Clone)]
pub struct EndpointKeys {
    /// The current key.
    pub current: Vec<u8>,
    /// The key before the last rotation, while it is still valid.
    pub previous: Option<Vec<u8>>,
    /// Until when `previous` may sign (a cache of these keys must not outlive it).
    pub previous_until: Option<DateTime<Utc>>,
}

impl fmt::Debug for EndpointKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointKeys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// A new endpoint (validated by the caller).
#[derive(Clone)]
pub struct NewEndpoint {
    /// Vetted URL.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Subscribed event types.
    pub event_types: Vec<String>,
    /// Rate limit.
    pub rate_limit_per_second: Option<i32>,
    /// Vetted headers, a JSON object of strings.
    pub headers: Value,
    /// Signing key bytes.
    pub secret: Vec<u8>,
    /// Enabled at creation.
    pub enabled: bool,
}

impl fmt::Debug for NewEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEndpoint")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    /// New URL (vetted).
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New subscriptions.
    pub event_types: Option<Vec<String>>,
    /// Enable or disable (enabling clears the failure state).
    pub enabled: Option<bool>,
    /// New rate limit (`Some(None)` removes it).
    pub rate_limit_per_second: Option<Option<i32>>,
    /// New headers (vetted).
    pub headers: Option<Value>,
}

/// What a sealed secret is bound to: its tenant and endpoint.
pub(super) fn secret_binding(tenant: TenantId, endpoint: EndpointId) -> [u8; 32] {
    let mut binding = [0u8; 32];
    binding[..16].copy_from_slice(tenant.uuid().as_bytes());
    binding[16..].copy_from_slice(endpoint.uuid().as_bytes());
    binding
}

pub(super) async fn unseal(
    tx: &mut TenantTx,
    master: &MasterKey,
    binding: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, StoreError> {
    data_key::open(tx, master, Secret::Webhook, binding, sealed)
        .await
        .map(|secret| secret.to_vec())
}

/// Creates an endpoint. Its secret is stored sealed under the tenant's data key, bound to the
/// endpoint, never in the clear.
pub async fn create_endpoint(
    tx: &mut TenantTx,
    new: &NewEndpoint,
    master: &MasterKey,
) -> Result<Endpoint, StoreError> {
    let tenant = tx.tenant_id();
    let id = EndpointId::new();
    let sealed = data_key::seal(
        tx,
        master,
        Secret::Webhook,
        &secret_binding(tenant, id),
        &new.secret,
    )
    .await?;
    let row: EndpointRow = sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints \
         (tenant_id, id, url, description, event_types, rate_limit_per_second, headers, secret, enabled) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(&new.url)
    .bind(&new.description)
    .bind(&new.event_types)
    .bind(new.rate_limit_per_second)
    .bind(&new.headers)
    .bind(sealed)
    .bind(new.enabled)
    .fetch_one(tx.conn())
    .await?;
    Ok(row.into())
}

/// One endpoint of the transaction's tenant.
pub async fn get_endpoint(tx: &mut TenantTx, id: EndpointId) -> Result<Endpoint, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<EndpointRow> = sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_optional(tx.conn())
    .await?;
    row.map(Into::into).ok_or(StoreError::NotFound)
}

/// A page of endpoints after `after`, in id order.
pub async fn list_endpoints(
    tx: &mut TenantTx,
    after: Option<EndpointId>,
    limit: u32,
) -> Result<Vec<Endpoint>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant.uuid())
    .bind(after.map(|a| a.uuid()))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Applies a patch.
pub async fn update_endpoint(
    tx: &mut TenantTx,
    id: EndpointId,
    patch: &EndpointPatch,
) -> Result<Endpoint, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<EndpointRow> = sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET \
           url = COALESCE($3, url), description = COALESCE($4, description), \
           event_types = COALESCE($5, event_types), \
           enabled = COALESCE($6, enabled), \
           disabled_reason = CASE WHEN $6 THEN NULL ELSE disabled_reason END, \
           consecutive_failures = CASE WHEN $6 THEN 0 ELSE consecutive_failures END, \
           failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END, \
           circuit_open_until = CASE WHEN $6 THEN NULL ELSE circuit_open_until END, \
           rate_limit_per_second = CASE WHEN $7 THEN $8 ELSE rate_limit_per_second END, \
           headers = COALESCE($9, headers), updated_at = now() \
         WHERE tenant_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(&patch.url)
    .bind(&patch.description)
    .bind(&patch.event_types)
    .bind(patch.enabled)
    .bind(patch.rate_limit_per_second.is_some())
    .bind(patch.rate_limit_per_second.flatten())
    .bind(&patch.headers)
    .fetch_optional(tx.conn())
    .await?;
    row.map(Into::into).ok_or(StoreError::NotFound)
}

/// Deletes an endpoint with its deliveries and attempt log.
pub async fn delete_endpoint(tx: &mut TenantTx, id: EndpointId) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(id.uuid())
        .execute(tx.conn())
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Replaces the signing key; the old one stays valid until `previous_valid_until`.
pub async fn rotate_secret(
    tx: &mut TenantTx,
    id: EndpointId,
    new_secret: &[u8],
    previous_valid_until: DateTime<Utc>,
    master: &MasterKey,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let new_secret = data_key::seal(
        tx,
        master,
        Secret::Webhook,
        &secret_binding(tenant, id),
        new_secret,
    )
    .await?;
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret = secret, \
         previous_secret_expires_at = $4, secret = $3, updated_at = now() \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(&new_secret)
    .bind(previous_valid_until)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The keys to sign with at `now` (the previous one only while still valid).
pub async fn endpoint_keys(
    tx: &mut TenantTx,
    id: EndpointId,
    now: DateTime<Utc>,
    master: &MasterKey,
) -> Result<EndpointKeys, StoreError> {
    let tenant = tx.tenant_id();
    type KeysRow = (Vec<u8>, Option<Vec<u8>>, Option<DateTime<Utc>>);
    let row: Option<KeysRow> = sqlx::query_as(
        "SELECT secret, previous_secret, previous_secret_expires_at \
         FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_optional(tx.conn())
    .await?;
    let (current, previous, until) = row.ok_or(StoreError::NotFound)?;
    let binding = secret_binding(tenant, id);
    let (previous, previous_until) = match (previous, until) {
        // A previous secret nothing here opens (an imported endpoint rotated with a grace
        // period) is no key to sign with, not a reason to sign with none.
        (Some(key), Some(until)) if until > now => match unseal(tx, master, &binding, &key).await {
            Ok(previous) => (Some(previous), Some(until)),
            Err(StoreError::SecretUnopenable(_)) => (None, None),
            Err(err) => return Err(err),
        },
        _ => (None, None),
    };
    Ok(EndpointKeys {
        current: unseal(tx, master, &binding, &current).await?,
        previous,
        previous_until,
    })
}
