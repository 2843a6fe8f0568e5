//! Messages: publishing an event to the endpoints that take it (tenant events, platform events,
//! the audit stream), one delivery per endpoint.

use bulkhead_core::{
    AgentId, ApiKeyId, DeliveryId, EndpointId, MessageId, Scope, ScopeSet, UserId,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::{StoreError, TenantTx};

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
///
/// A message counted as the tenant's (source `tenant`, or an endpoint test) is charged to the
/// tenant's quota at commit (migration 0045), after the rows written before it: a caller writes
/// it before its audit event, so that the commit takes `stored_bytes` before `audit_events`,
/// in the order every other transaction takes them.
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
pub(super) async fn targets(
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

pub(super) async fn insert_message(
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
    // Delivery ids are made here (UUIDv7 by the application), one per target endpoint. The
    // message and its deliveries go in one statement: one round trip per publish.
    let ids: Vec<uuid::Uuid> = targets.iter().map(|_| DeliveryId::new().uuid()).collect();
    tx.mark_webhook_due();
    sqlx::query(
        "WITH message AS ( \
           INSERT INTO webhook_messages (tenant_id, id, event_type, source, payload, created_at) \
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING tenant_id, id \
         ) \
         INSERT INTO webhook_deliveries (tenant_id, id, message_id, endpoint_id, next_attempt_at) \
         SELECT message.tenant_id, d, message.id, e, $6 \
         FROM message, unnest($7::uuid[], $8::uuid[]) AS t(d, e)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(event_type)
    .bind(source.as_str())
    .bind(payload)
    .bind(now)
    .bind(&ids)
    .bind(targets)
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
pub(super) async fn grantor_holds(
    tx: &mut TenantTx,
    grantor: &str,
    scope: Scope,
) -> Result<bool, StoreError> {
    use crate::tenant::rbac::{permissions_of, Principal};
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
