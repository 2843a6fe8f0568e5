//! Webhook endpoints, messages, deliveries and the attempt log. Every function takes the tenant
//! transaction and filters on its tenant explicitly; the claim is the one cross-tenant step and
//! returns ids only.
//!
//! Validation of URLs, headers and event types is the caller's (the egress guard in
//! `bulkhead-webhooks`, the routes); the database checks lengths and shapes again.

use std::fmt;

use bulkhead_auth::MasterKey;
use bulkhead_core::{
    AgentId, ApiKeyId, AttemptId, DeliveryId, EndpointId, MessageId, Scope, ScopeSet, TenantId,
    UserId,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::{Store, StoreError, TenantTx};

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
struct EndpointRow {
    id: uuid::Uuid,
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

const ENDPOINT_COLUMNS: &str = "id, url, description, event_types, enabled, disabled_reason, \
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
fn secret_binding(tenant: TenantId, endpoint: EndpointId) -> [u8; 32] {
    let mut binding = [0u8; 32];
    binding[..16].copy_from_slice(tenant.uuid().as_bytes());
    binding[16..].copy_from_slice(endpoint.uuid().as_bytes());
    binding
}

fn unseal(master: &MasterKey, binding: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
    master
        .open_webhook_secret(binding, sealed)
        .map(|secret| secret.to_vec())
        .map_err(|_| {
            StoreError::UnsafeConfiguration(
                "a webhook secret cannot be opened with this master key".into(),
            )
        })
}

/// Creates an endpoint. Its secret is stored sealed under the master key, bound to the
/// endpoint, never in the clear.
pub async fn create_endpoint(
    tx: &mut TenantTx,
    new: &NewEndpoint,
    master: &MasterKey,
) -> Result<Endpoint, StoreError> {
    let tenant = tx.tenant_id();
    let id = EndpointId::new();
    let sealed = master.seal_webhook_secret(&secret_binding(tenant, id), &new.secret);
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
    let new_secret = master.seal_webhook_secret(&secret_binding(tenant, id), new_secret);
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
        (Some(key), Some(until)) if until > now => {
            (Some(unseal(master, &binding, &key)?), Some(until))
        }
        _ => (None, None),
    };
    Ok(EndpointKeys {
        current: unseal(master, &binding, &current)?,
        previous,
        previous_until,
    })
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageSource {
    /// Raised by Bulkhead itself.
    Platform,
    /// Published by the tenant (`POST /v1/webhooks/messages`).
    Tenant,
}

impl MessageSource {
    /// The text stored and sent in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageSource::Platform => "platform",
            MessageSource::Tenant => "tenant",
        }
    }
}

/// A message as shown to its tenant.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// The id sent as `webhook-id`.
    pub id: MessageId,
    /// Event type.
    pub event_type: String,
    /// Who raised it.
    pub source: String,
    /// The body sent.
    pub payload: Value,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
}

/// Namespaces of the event types Bulkhead itself emits: a tenant may not publish under them, and
/// the platform may publish only under them (so a new platform namespace must be added here, the
/// one list both sides read). `audit` carries the audit stream, `tool` is reserved for tool-call
/// events; the rest are raised today.
pub const PLATFORM_EVENT_NAMESPACES: &[&str] = &[
    "audit", "tool", "security", "api_key", "session", "endpoint", "webhook", "bulkhead",
];

/// Whether `event_type` is in a platform namespace: the namespace itself or anything under it
/// (`audit`, `audit.event`, `audit.x.y`).
pub fn is_platform_event_type(event_type: &str) -> bool {
    PLATFORM_EVENT_NAMESPACES.iter().any(|ns| {
        event_type
            .strip_prefix(ns)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// The body every message is sent with, built here only: `{"type", "source", "data"}`. The source
/// is inside the signed bytes, so a receiver verifying with any Standard Webhooks library can tell
/// a platform event from one the tenant published, whatever the tenant put in `data`.
pub fn message_body(event_type: &str, source: MessageSource, data: Value) -> Value {
    serde_json::json!({ "type": event_type, "source": source.as_str(), "data": data })
}

/// Stores a message and queues one delivery per enabled endpoint subscribed to its type (or to
/// `only` when given, enabled or not, for tests of one endpoint). `data` becomes the `data` of the
/// body ([`message_body`]). Returns the message id and how many deliveries were queued. Visible
/// to workers on commit.
pub async fn publish(
    tx: &mut TenantTx,
    event_type: &str,
    data: &Value,
    source: MessageSource,
    only: Option<EndpointId>,
    now: DateTime<Utc>,
) -> Result<(MessageId, u64), StoreError> {
    let targets = targets(tx, event_type, only).await?;
    if only.is_some() && targets.is_empty() {
        return Err(StoreError::NotFound);
    }
    let id = insert_message(tx, event_type, data.clone(), source, &targets, now).await?;
    Ok((id, targets.len() as u64))
}

/// The endpoints a message goes to: `only` (enabled or not), or every enabled endpoint
/// subscribed to the type.
/// The endpoints a message goes to, each locked `FOR KEY SHARE` until the caller's transaction
/// ends: an endpoint deleted by a concurrent transaction is then either waited for and skipped,
/// or kept until the deliveries inserted here have committed. Without the lock, a delete
/// committed between this read and the delivery insert failed the insert's foreign key, and
/// the unrelated request that raised the event (a session delete, say) answered 500.
async fn targets(
    tx: &mut TenantTx,
    event_type: &str,
    only: Option<EndpointId>,
) -> Result<Vec<uuid::Uuid>, StoreError> {
    let tenant = tx.tenant_id();
    Ok(sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints WHERE tenant_id = $1 \
         AND (CASE WHEN $3::uuid IS NULL \
              THEN enabled AND (cardinality(event_types) = 0 OR $2 = ANY(event_types)) \
              ELSE id = $3 END) ORDER BY id FOR KEY SHARE",
    )
    .bind(tenant.uuid())
    .bind(event_type)
    .bind(only.map(|o| o.uuid()))
    .fetch_all(tx.conn())
    .await?)
}

async fn insert_message(
    tx: &mut TenantTx,
    event_type: &str,
    data: Value,
    source: MessageSource,
    targets: &[uuid::Uuid],
    now: DateTime<Utc>,
) -> Result<MessageId, StoreError> {
    // The namespace rule, kept where every message passes: the routes refuse a reserved type
    // with a clear 422 first; this is the second layer, and it catches a platform event raised
    // under a namespace missing from the list.
    if is_platform_event_type(event_type) != (source == MessageSource::Platform) {
        return Err(StoreError::Invalid(
            format!(
                "event type {event_type:?} and source {} disagree on the platform namespaces",
                source.as_str()
            )
            .into(),
        ));
    }
    let payload = &message_body(event_type, source, data);
    let tenant = tx.tenant_id();
    let id = MessageId::new();
    sqlx::query(
        "INSERT INTO webhook_messages (tenant_id, id, event_type, source, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(event_type)
    .bind(source.as_str())
    .bind(payload)
    .bind(now)
    .execute(tx.conn())
    .await?;
    // Delivery ids are made here (UUIDv7 by the application), one per target endpoint.
    let ids: Vec<uuid::Uuid> = targets.iter().map(|_| DeliveryId::new().uuid()).collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (tenant_id, id, message_id, endpoint_id, next_attempt_at) \
         SELECT $1, d, $2, e, $5 FROM unnest($3::uuid[], $4::uuid[]) AS t(d, e)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(&ids)
    .bind(targets)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// For other features: raises a platform event for the transaction's tenant, inside the
/// caller's own transaction (it is delivered only if the caller commits). Returns the message
/// id, or `None` when no enabled endpoint subscribes to the type (then nothing is stored). The caller passes a
/// platform event type such as `security.refresh_token_reuse`; `payload` must hold no secret.
pub async fn enqueue_platform_event(
    tx: &mut TenantTx,
    event_type: &str,
    payload: Value,
) -> Result<Option<MessageId>, StoreError> {
    let targets = targets(tx, event_type, None).await?;
    if targets.is_empty() {
        // Nobody subscribes: store nothing (most platform events of most tenants).
        return Ok(None);
    }
    let id = insert_message(
        tx,
        event_type,
        payload,
        MessageSource::Platform,
        &targets,
        Utc::now(),
    )
    .await?;
    Ok(Some(id))
}

/// The event type of the audit stream (issue 8): a tenant's SIEM receives each of its audit
/// events, with its place in the tenant's Merkle log, once sequenced.
pub const AUDIT_STREAM_EVENT: &str = "audit.event";

/// Endpoints that subscribed to the audit stream by name, and whose grantors (whoever subscribed
/// them, see [`set_audit_grantors`]) all hold `audit:read` now. A catch-all endpoint (no event
/// types) does not get it: the stream is as large as the audit log itself. Locked like the
/// targets of any message, for the same reason.
pub async fn audit_stream_targets(tx: &mut TenantTx) -> Result<Vec<uuid::Uuid>, StoreError> {
    let tenant = tx.tenant_id();
    let candidates: Vec<(uuid::Uuid, Vec<String>)> = sqlx::query_as(
        "SELECT id, audit_grantors FROM webhook_endpoints WHERE tenant_id = $1 AND enabled \
         AND $2 = ANY(event_types) ORDER BY id FOR KEY SHARE",
    )
    .bind(tenant.uuid())
    .bind(AUDIT_STREAM_EVENT)
    .fetch_all(tx.conn())
    .await?;
    let mut targets = Vec::with_capacity(candidates.len());
    // Checked on every fan-out, against the grantors' current roles and keys: a grantor who lost
    // `audit:read` (a role change, a revoked or expired key, a disabled user) stops the stream
    // at the next event, not when a cache expires. Most tenants have no subscriber at all.
    let mut known: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    'endpoints: for (id, grantors) in candidates {
        if grantors.is_empty() {
            continue;
        }
        for grantor in grantors {
            let holds = match known.get(&grantor) {
                Some(holds) => *holds,
                None => {
                    let holds = grantor_holds(tx, &grantor, Scope::AuditRead).await?;
                    known.insert(grantor, holds);
                    holds
                }
            };
            if !holds {
                continue 'endpoints;
            }
        }
        targets.push(id);
    }
    Ok(targets)
}

/// Records who subscribed an endpoint to the audit stream: the principals whose `audit:read`
/// keeps it flowing (`key_…`, `user_…`, `agent_…`, or `system:<component>`).
pub async fn set_audit_grantors(
    tx: &mut TenantTx,
    id: EndpointId,
    grantors: &[String],
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET audit_grantors = $3 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(grantors)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Whether a grantor holds `scope` now: a key that is live, holds the scope and (if it belongs to
/// an agent) whose agent's roles allow it; an active user or agent whose roles allow it; the
/// system. Anything unknown or unparsable holds nothing.
async fn grantor_holds(tx: &mut TenantTx, grantor: &str, scope: Scope) -> Result<bool, StoreError> {
    use crate::rbac::{permissions_of, Principal};
    if grantor.starts_with("system:") {
        return Ok(true);
    }
    let allows = |held: Option<ScopeSet>| held.is_some_and(|h| h.contains(scope));
    if let Ok(user) = UserId::parse(grantor) {
        return Ok(allows(permissions_of(tx, Principal::User(user)).await?));
    }
    if let Ok(agent) = AgentId::parse(grantor) {
        return Ok(allows(permissions_of(tx, Principal::Agent(agent)).await?));
    }
    let Ok(key) = ApiKeyId::parse(grantor) else {
        return Ok(false);
    };
    let tenant = tx.tenant_id();
    let row: Option<(Vec<String>, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT scopes, agent_id FROM api_keys WHERE tenant_id = $1 AND id = $2 \
         AND (status = 'active' OR (status = 'rotating' AND grace_until > now())) \
         AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(tenant.uuid())
    .bind(key.uuid())
    .fetch_optional(tx.conn())
    .await?;
    let Some((scopes, agent)) = row else {
        return Ok(false);
    };
    if !ScopeSet::parse_all(&scopes).is_ok_and(|s| s.contains(scope)) {
        return Ok(false);
    }
    match agent {
        Some(agent) => Ok(allows(
            permissions_of(tx, Principal::Agent(AgentId::from_uuid(agent))).await?,
        )),
        None => Ok(true),
    }
}

/// Queues one audit-stream message to `targets` (from [`audit_stream_targets`]), in the caller's
/// transaction: the sequencer's, so an event is streamed exactly when it joins the log.
pub async fn enqueue_audit_stream(
    tx: &mut TenantTx,
    targets: &[uuid::Uuid],
    payload: Value,
) -> Result<MessageId, StoreError> {
    insert_message(
        tx,
        AUDIT_STREAM_EVENT,
        payload,
        MessageSource::Platform,
        targets,
        Utc::now(),
    )
    .await
}

/// One message of the transaction's tenant.
pub async fn get_message(tx: &mut TenantTx, id: MessageId) -> Result<Message, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<(uuid::Uuid, String, String, Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, event_type, source, payload, created_at FROM webhook_messages \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_optional(tx.conn())
    .await?;
    let (id, event_type, source, payload, created_at) = row.ok_or(StoreError::NotFound)?;
    Ok(Message {
        id: MessageId::from_uuid(id),
        event_type,
        source,
        payload,
        created_at,
    })
}

/// A delivery as shown to its tenant.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// Id.
    pub id: DeliveryId,
    /// The message.
    pub message_id: MessageId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// `pending`, `delivering`, `succeeded`, `failed` or `blocked`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// Last failure.
    pub last_error: Option<String>,
}

type DeliveryRow = (
    uuid::Uuid,
    uuid::Uuid,
    uuid::Uuid,
    String,
    i32,
    DateTime<Utc>,
    Option<String>,
);

fn delivery_from(row: DeliveryRow) -> Delivery {
    let (id, message, endpoint, status, attempts, next_attempt_at, last_error) = row;
    Delivery {
        id: DeliveryId::from_uuid(id),
        message_id: MessageId::from_uuid(message),
        endpoint_id: EndpointId::from_uuid(endpoint),
        status,
        attempts,
        next_attempt_at,
        last_error,
    }
}

/// The deliveries of a message.
pub async fn deliveries_of(
    tx: &mut TenantTx,
    message: MessageId,
) -> Result<Vec<Delivery>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, message_id, endpoint_id, status, attempts, next_attempt_at, last_error \
         FROM webhook_deliveries WHERE tenant_id = $1 AND message_id = $2 ORDER BY id",
    )
    .bind(tenant.uuid())
    .bind(message.uuid())
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(delivery_from).collect())
}

/// One delivery.
pub async fn get_delivery(tx: &mut TenantTx, id: DeliveryId) -> Result<Delivery, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<DeliveryRow> = sqlx::query_as(
        "SELECT id, message_id, endpoint_id, status, attempts, next_attempt_at, last_error \
         FROM webhook_deliveries WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .fetch_optional(tx.conn())
    .await?;
    row.map(delivery_from).ok_or(StoreError::NotFound)
}

/// An attempt log entry.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    /// Id.
    pub id: AttemptId,
    /// Delivery.
    pub delivery_id: DeliveryId,
    /// Message.
    pub message_id: MessageId,
    /// Endpoint.
    pub endpoint_id: EndpointId,
    /// When.
    pub attempted_at: DateTime<Utc>,
    /// `succeeded`, `failed` or `blocked`.
    pub outcome: String,
    /// HTTP status, if the receiver answered.
    pub status_code: Option<i32>,
    /// Milliseconds.
    pub latency_ms: i32,
    /// `http_status`, `timeout`, `connect`, `blocked_address`, …
    pub error_class: Option<String>,
    /// Description.
    pub error: Option<String>,
    /// Start of the response body.
    pub response_sample: Option<String>,
}

type AttemptRow = (
    uuid::Uuid,
    uuid::Uuid,
    uuid::Uuid,
    uuid::Uuid,
    DateTime<Utc>,
    String,
    Option<i32>,
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The attempts of a message, oldest first.
pub async fn attempts_of(
    tx: &mut TenantTx,
    message: MessageId,
) -> Result<Vec<Attempt>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT id, delivery_id, message_id, endpoint_id, attempted_at, outcome, status_code, \
         latency_ms, error_class, error, response_sample FROM webhook_attempts \
         WHERE tenant_id = $1 AND message_id = $2 ORDER BY id",
    )
    .bind(tenant.uuid())
    .bind(message.uuid())
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Attempt {
            id: AttemptId::from_uuid(r.0),
            delivery_id: DeliveryId::from_uuid(r.1),
            message_id: MessageId::from_uuid(r.2),
            endpoint_id: EndpointId::from_uuid(r.3),
            attempted_at: r.4,
            outcome: r.5,
            status_code: r.6,
            latency_ms: r.7,
            error_class: r.8,
            error: r.9,
            response_sample: r.10,
        })
        .collect())
}

/// Manual resend: every finished delivery of the message goes back to pending now, with a fresh
/// attempt budget (the attempt log keeps the history). Returns how many.
pub async fn resend(
    tx: &mut TenantTx,
    message: MessageId,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let tenant = tx.tenant_id();
    // The message must exist in this tenant (404 otherwise, like any other id).
    get_message(tx, message).await?;
    require_attempt_room(tx).await?;
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
         next_attempt_at = $3, locked_until = NULL, updated_at = now() \
         WHERE tenant_id = $1 AND message_id = $2 AND status IN ('succeeded', 'failed', 'blocked')",
    )
    .bind(tenant.uuid())
    .bind(message.uuid())
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected())
}

/// Recovery: every failed delivery to the endpoint created since `since` goes back to pending.
pub async fn recover(
    tx: &mut TenantTx,
    endpoint: EndpointId,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let tenant = tx.tenant_id();
    get_endpoint(tx, endpoint).await?;
    require_attempt_room(tx).await?;
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
         next_attempt_at = $4, locked_until = NULL, updated_at = now() \
         WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'failed' AND created_at >= $3",
    )
    .bind(tenant.uuid())
    .bind(endpoint.uuid())
    .bind(since)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected())
}

/// The retention sweep (migration 0023): deletes up to `limit` of the tenant's messages created
/// before `before` whose deliveries are all finished, with their deliveries and attempts; the
/// quota triggers decrement the counters they charged. Returns how many messages went.
pub async fn purge_finished(
    tx: &mut TenantTx,
    before: DateTime<Utc>,
    limit: i32,
) -> Result<u64, StoreError> {
    let done: i32 = sqlx::query_scalar("SELECT bulkhead.webhook_purge_finished($1, $2)")
        .bind(before)
        .bind(limit)
        .fetch_one(tx.conn())
        .await?;
    Ok(u64::try_from(done).unwrap_or(0))
}

/// Resend and recover make delivery attempts, which are counted in `stored_bytes` but never
/// refused (the worker never fails a delivery for quota; migration 0023): the tenant action is
/// refused instead while its stored bytes or messages are at their limit.
async fn require_attempt_room(tx: &mut TenantTx) -> Result<(), StoreError> {
    crate::quotas::require_room(tx, "stored_bytes", 1).await?;
    crate::quotas::require_room(tx, "webhook_messages", 1).await
}

/// A delivery handed to a worker: ids only; everything else is read in the tenant's context.
#[derive(Debug, Clone, Copy)]
pub struct ClaimedDelivery {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Delivery.
    pub id: DeliveryId,
}

impl Store {
    /// Claims due deliveries fairly across active tenants, at most `per_tenant` in flight per
    /// tenant (see [`Store::claim_webhook_deliveries_capped`]).
    pub async fn claim_webhook_deliveries(
        &self,
        limit: i32,
        per_tenant: i32,
        lease_seconds: i32,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.claim_webhook_deliveries_capped(limit, per_tenant, lease_seconds, now, &[])
            .await
    }

    /// Claims due deliveries across active tenants (`claim_webhook_deliveries` and
    /// `webhook_fair_pick` in migration 0021): the tenant with the fewest deliveries in flight
    /// goes first and each tenant's endpoints take turns. A tenant has at most `per_tenant` in
    /// flight and one endpoint at most half of that (rounded up), unless `caps` grants that
    /// endpoint a larger window; the tenant then may hold the extra too. `now` is clamped by the
    /// database to within a few seconds of its clock.
    pub async fn claim_webhook_deliveries_capped(
        &self,
        limit: i32,
        per_tenant: i32,
        lease_seconds: i32,
        now: DateTime<Utc>,
        caps: &[(TenantId, EndpointId, i32)],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let tenants: Vec<uuid::Uuid> = caps.iter().map(|(t, _, _)| t.uuid()).collect();
        let endpoints: Vec<uuid::Uuid> = caps.iter().map(|(_, e, _)| e.uuid()).collect();
        let caps: Vec<i32> = caps.iter().map(|(_, _, c)| *c).collect();
        let mut rows: Vec<(uuid::Uuid, uuid::Uuid)> = Vec::new();
        for (i, (pool, schema)) in self.router().all_locations().await?.into_iter().enumerate() {
            // The first call always runs, so hostile arguments are refused by the function.
            let want = if i == 0 {
                limit
            } else {
                limit - rows.len() as i32
            };
            if i > 0 && want <= 0 {
                break;
            }
            rows.extend(
                sqlx::query_as::<_, (uuid::Uuid, uuid::Uuid)>(&format!(
                    "SELECT delivery_tenant_id, delivery_id \
                     FROM \"{schema}\".claim_webhook_deliveries($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(want)
                .bind(per_tenant)
                .bind(lease_seconds)
                .bind(now)
                .bind(&tenants)
                .bind(&endpoints)
                .bind(&caps)
                .fetch_all(&pool)
                .await
                .or_else(|err| crate::location::skip_unreachable(i, err))?,
            );
        }
        Ok(rows
            .into_iter()
            .map(|(tenant, id)| ClaimedDelivery {
                tenant_id: TenantId::from_uuid(tenant),
                id: DeliveryId::from_uuid(id),
            })
            .collect())
    }

    /// A listener woken (channel `bulkhead_webhooks`) whenever deliveries become due: inserted,
    /// resent, recovered or resumed. Notifications leave only on commit (migration 0012).
    pub async fn listen_webhook_due(&self) -> Result<sqlx::postgres::PgListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
        listener.listen(WEBHOOK_DUE_CHANNEL).await?;
        Ok(listener)
    }
}

impl Store {
    /// Which of `tenants` are active now, in one registry read (the dispatcher's check right
    /// before sending a claimed batch).
    pub async fn active_tenants(
        &self,
        tenants: &[TenantId],
    ) -> Result<std::collections::HashSet<TenantId>, StoreError> {
        let ids: Vec<uuid::Uuid> = tenants.iter().map(|t| t.uuid()).collect();
        let rows: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM bulkhead.tenants WHERE id = ANY($1) AND status = 'active'",
        )
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(TenantId::from_uuid).collect())
    }
}

/// The NOTIFY channel of due deliveries.
pub const WEBHOOK_DUE_CHANNEL: &str = "bulkhead_webhooks";

/// What a worker needs to make one attempt.
#[derive(Debug, Clone)]
pub struct DeliveryWork {
    /// The delivery.
    pub delivery: Delivery,
    /// The message.
    pub message: Message,
    /// The endpoint (its keys are read separately).
    pub endpoint: Endpoint,
}

/// Reads a claimed delivery with its message and endpoint.
pub async fn load_work(tx: &mut TenantTx, id: DeliveryId) -> Result<DeliveryWork, StoreError> {
    let delivery = get_delivery(tx, id).await?;
    let message = get_message(tx, delivery.message_id).await?;
    let endpoint = get_endpoint(tx, delivery.endpoint_id).await?;
    Ok(DeliveryWork {
        delivery,
        message,
        endpoint,
    })
}

/// Reads claimed deliveries with their messages and endpoints, three queries for the whole
/// batch. Deliveries deleted since the claim are missing from the answer.
pub async fn load_work_batch(
    tx: &mut TenantTx,
    ids: &[DeliveryId],
) -> Result<Vec<DeliveryWork>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<uuid::Uuid> = ids.iter().map(|d| d.uuid()).collect();
    let deliveries: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, message_id, endpoint_id, status, attempts, next_attempt_at, last_error \
         FROM webhook_deliveries WHERE tenant_id = $1 AND id = ANY($2)",
    )
    .bind(tenant.uuid())
    .bind(&ids)
    .fetch_all(tx.conn())
    .await?;
    let deliveries: Vec<Delivery> = deliveries.into_iter().map(delivery_from).collect();
    let mut message_ids: Vec<uuid::Uuid> = deliveries.iter().map(|d| d.message_id.uuid()).collect();
    message_ids.sort_unstable();
    message_ids.dedup();
    let mut endpoint_ids: Vec<uuid::Uuid> =
        deliveries.iter().map(|d| d.endpoint_id.uuid()).collect();
    endpoint_ids.sort_unstable();
    endpoint_ids.dedup();
    let messages: Vec<(uuid::Uuid, String, String, Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, event_type, source, payload, created_at FROM webhook_messages \
         WHERE tenant_id = $1 AND id = ANY($2)",
    )
    .bind(tenant.uuid())
    .bind(&message_ids)
    .fetch_all(tx.conn())
    .await?;
    let messages: std::collections::HashMap<uuid::Uuid, Message> = messages
        .into_iter()
        .map(|(id, event_type, source, payload, created_at)| {
            (
                id,
                Message {
                    id: MessageId::from_uuid(id),
                    event_type,
                    source,
                    payload,
                    created_at,
                },
            )
        })
        .collect();
    let endpoints: Vec<EndpointRow> = sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = ANY($2)"
    ))
    .bind(tenant.uuid())
    .bind(&endpoint_ids)
    .fetch_all(tx.conn())
    .await?;
    let endpoints: std::collections::HashMap<uuid::Uuid, Endpoint> =
        endpoints.into_iter().map(|r| (r.id, r.into())).collect();
    Ok(deliveries
        .into_iter()
        .filter_map(|delivery| {
            let message = messages.get(&delivery.message_id.uuid())?.clone();
            let endpoint = endpoints.get(&delivery.endpoint_id.uuid())?.clone();
            Some(DeliveryWork {
                delivery,
                message,
                endpoint,
            })
        })
        .collect())
}

/// A successful attempt, recorded in a batch by [`record_successes`].
#[derive(Debug, Clone)]
pub struct Success {
    /// The delivery.
    pub delivery: DeliveryId,
    /// Its message.
    pub message: MessageId,
    /// Its endpoint.
    pub endpoint: EndpointId,
    /// When the attempt started.
    pub attempted_at: DateTime<Utc>,
    /// The 2xx status.
    pub status_code: i32,
    /// Milliseconds.
    pub latency_ms: i32,
    /// Start of the response body.
    pub response_sample: String,
}

/// Records many successful attempts of the transaction's tenant at once: one insert into the
/// attempt log, one update of the deliveries, one of the endpoints' failure streaks. The same
/// rows and values [`record_attempt`], [`finish_delivery`] and [`endpoint_succeeded`] write one
/// by one.
pub async fn record_successes(tx: &mut TenantTx, done: &[Success]) -> Result<(), StoreError> {
    if done.is_empty() {
        return Ok(());
    }
    let tenant = tx.tenant_id();
    let attempt_ids: Vec<uuid::Uuid> = done.iter().map(|_| AttemptId::new().uuid()).collect();
    let deliveries: Vec<uuid::Uuid> = done.iter().map(|s| s.delivery.uuid()).collect();
    let messages: Vec<uuid::Uuid> = done.iter().map(|s| s.message.uuid()).collect();
    let endpoints: Vec<uuid::Uuid> = done.iter().map(|s| s.endpoint.uuid()).collect();
    let at: Vec<DateTime<Utc>> = done.iter().map(|s| s.attempted_at).collect();
    let codes: Vec<i32> = done.iter().map(|s| s.status_code).collect();
    let latency: Vec<i32> = done.iter().map(|s| s.latency_ms).collect();
    let samples: Vec<String> = done
        .iter()
        .map(|s| truncate(&s.response_sample, 4096))
        .collect();
    sqlx::query(
        "INSERT INTO webhook_attempts (tenant_id, id, delivery_id, message_id, endpoint_id, \
         attempted_at, outcome, status_code, latency_ms, response_sample) \
         SELECT $1, a, d, m, e, t, 'succeeded', c, l, s \
         FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::timestamptz[], \
                     $7::int[], $8::int[], $9::text[]) AS x(a, d, m, e, t, c, l, s)",
    )
    .bind(tenant.uuid())
    .bind(&attempt_ids)
    .bind(&deliveries)
    .bind(&messages)
    .bind(&endpoints)
    .bind(&at)
    .bind(&codes)
    .bind(&latency)
    .bind(&samples)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'succeeded', attempts = attempts + 1, \
         locked_until = NULL, updated_at = now() WHERE tenant_id = $1 AND id = ANY($2)",
    )
    .bind(tenant.uuid())
    .bind(&deliveries)
    .execute(tx.conn())
    .await?;
    let mut endpoints = endpoints;
    endpoints.sort_unstable();
    endpoints.dedup();
    sqlx::query(
        "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL, \
         circuit_open_until = NULL WHERE tenant_id = $1 AND id = ANY($2) \
         AND (consecutive_failures <> 0 OR failing_since IS NOT NULL OR circuit_open_until IS NOT NULL)",
    )
    .bind(tenant.uuid())
    .bind(&endpoints)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Puts claimed deliveries back to `pending` without counting an attempt: their tenant is not
/// active, and the claim skips them until it is again. They are due again no earlier than
/// `not_before`: the claim judges the tenant's status by its location's anchor and the
/// dispatcher by the registry, and while the two disagree (a status change between its two
/// commits) a delivery paused as due at once was re-claimed, paused and NOTIFYed in a hot loop.
pub async fn pause_deliveries(
    tx: &mut TenantTx,
    ids: &[DeliveryId],
    not_before: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<uuid::Uuid> = ids.iter().map(|d| d.uuid()).collect();
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', locked_until = NULL, paused = true, \
         next_attempt_at = greatest(next_attempt_at, $3), updated_at = now() \
         WHERE tenant_id = $1 AND id = ANY($2) AND status = 'delivering'",
    )
    .bind(tenant.uuid())
    .bind(&ids)
    .bind(not_before)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Makes the tenant's paused deliveries ([`pause_deliveries`]) due now and wakes the workers at
/// commit: for a tenant just reactivated, once its registry row and its location agree (so the
/// pause backoff has nothing left to protect). Returns how many were resumed.
pub async fn resume_paused_deliveries(tx: &mut TenantTx) -> Result<u64, StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET paused = false, \
         next_attempt_at = least(next_attempt_at, now()), updated_at = now() \
         WHERE tenant_id = $1 AND status = 'pending' AND paused",
    )
    .bind(tenant.uuid())
    .execute(tx.conn())
    .await?;
    // Also for deliveries that fell due while the tenant was suspended (never claimed).
    tx.notify(WEBHOOK_DUE_CHANNEL, String::new()).await?;
    Ok(done.rows_affected())
}

/// One attempt to record.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// `succeeded`, `failed` or `blocked`.
    pub outcome: &'static str,
    /// HTTP status.
    pub status_code: Option<i32>,
    /// Milliseconds.
    pub latency_ms: i32,
    /// Class.
    pub error_class: Option<String>,
    /// Description.
    pub error: Option<String>,
    /// Start of the body (at most 4 KiB).
    pub response_sample: Option<String>,
}

/// Appends to the attempt log.
pub async fn record_attempt(
    tx: &mut TenantTx,
    work: &DeliveryWork,
    attempt: &NewAttempt,
) -> Result<AttemptId, StoreError> {
    let tenant = tx.tenant_id();
    let id = AttemptId::new();
    let sample = attempt
        .response_sample
        .as_deref()
        .map(|s| truncate(s, 4096));
    sqlx::query(
        "INSERT INTO webhook_attempts (tenant_id, id, delivery_id, message_id, endpoint_id, \
         attempted_at, outcome, status_code, latency_ms, error_class, error, response_sample) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(work.delivery.id.uuid())
    .bind(work.message.id.uuid())
    .bind(work.endpoint.id.uuid())
    .bind(attempt.attempted_at)
    .bind(attempt.outcome)
    .bind(attempt.status_code)
    .bind(attempt.latency_ms)
    .bind(attempt.error_class.as_deref().map(|s| truncate(s, 64)))
    .bind(attempt.error.as_deref().map(|s| truncate(s, 1000)))
    .bind(sample)
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// Cuts `s` to at most `max` bytes on a character boundary, without NULs.
fn truncate(s: &str, max: usize) -> String {
    let clean: String = s.chars().filter(|c| *c != '\0').collect();
    if clean.len() <= max {
        return clean;
    }
    let mut end = max;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_owned()
}

/// Sets a delivery's state after an attempt (or a deferral: `count_attempt` false).
pub async fn finish_delivery(
    tx: &mut TenantTx,
    id: DeliveryId,
    status: &str,
    next_attempt_at: Option<DateTime<Utc>>,
    count_attempt: bool,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = $3, \
         attempts = attempts + CASE WHEN $5 THEN 1 ELSE 0 END, \
         next_attempt_at = COALESCE($4, next_attempt_at), locked_until = NULL, \
         last_error = COALESCE($6, last_error), updated_at = now() \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(status)
    .bind(next_attempt_at)
    .bind(count_attempt)
    .bind(error.map(|e| truncate(e, 1000)))
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Records an endpoint's success: the failure streak ends.
pub async fn endpoint_succeeded(tx: &mut TenantTx, id: EndpointId) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL, \
         circuit_open_until = NULL WHERE tenant_id = $1 AND id = $2 \
         AND (consecutive_failures <> 0 OR failing_since IS NOT NULL OR circuit_open_until IS NOT NULL)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Records an endpoint's failure at `now`; returns the streak length and since when it has
/// lasted. `open_circuit_after` failures in a row open the breaker for `cooldown`.
pub async fn endpoint_failed(
    tx: &mut TenantTx,
    id: EndpointId,
    now: DateTime<Utc>,
    open_circuit_after: i32,
    cooldown: chrono::Duration,
) -> Result<(i32, DateTime<Utc>), StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<(i32, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1, \
         failing_since = COALESCE(failing_since, $3), \
         circuit_open_until = CASE WHEN consecutive_failures + 1 >= $4 THEN $5 ELSE circuit_open_until END \
         WHERE tenant_id = $1 AND id = $2 RETURNING consecutive_failures, failing_since",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(now)
    .bind(open_circuit_after)
    .bind(now + cooldown)
    .fetch_optional(tx.conn())
    .await?;
    row.ok_or(StoreError::NotFound)
}

/// Disables an endpoint with a reason. Returns false if it was already disabled.
pub async fn disable_endpoint(
    tx: &mut TenantTx,
    id: EndpointId,
    reason: &str,
) -> Result<bool, StoreError> {
    let tenant = tx.tenant_id();
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $3, updated_at = now() \
         WHERE tenant_id = $1 AND id = $2 AND enabled",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(reason)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}
