//! The tenant's audit trail, in one room: events written in the same transaction as the change
//! they record (this module), the verifiable log sequenced from them ([`log`]), reading it out
//! ([`pages`]), and retention of event bodies ([`retention`]).
//!
//! The log streams events to the tenant's webhook endpoints, so this room sits above the
//! repositories ([`crate::tenant`]); no repository writes here, the services above do.

use bulkhead_core::AuditEventId;
use serde::Serialize;

use crate::{StoreError, TenantTx};

pub mod log;
pub mod pages;
pub mod retention;

/// The result of the audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was refused or failed.
    Failure,
    /// A guard stopped it.
    Blocked,
    /// An outbound action is about to leave (recorded and committed before it does); a second
    /// event with the same id in its metadata says how it ended.
    Started,
}

impl Outcome {
    /// The stored text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Blocked => "blocked",
            Outcome::Started => "started",
        }
    }
}

/// Appends an audit event for the transaction's tenant, actor and request. It commits or rolls
/// back with the change it describes. `metadata` must hold no secret.
pub async fn record(
    tx: &mut TenantTx,
    action: &str,
    resource_id: Option<&str>,
    outcome: Outcome,
    metadata: serde_json::Value,
) -> Result<AuditEventId, StoreError> {
    record_event(
        tx,
        &NewEvent {
            resource_id,
            metadata,
            ..NewEvent::new(action, outcome)
        },
    )
    .await
}

/// An audit event as read back.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// Event id.
    pub id: AuditEventId,
    /// Who acted.
    pub actor_id: String,
    /// What the action was.
    pub action: String,
    /// What it was done to.
    pub resource_id: Option<String>,
    /// How it ended.
    pub outcome: String,
}

/// The tenant's most recent events, newest first (at most `limit`).
pub async fn recent(tx: &mut TenantTx, limit: i64) -> Result<Vec<AuditEvent>, StoreError> {
    let tenant = tx.tenant_id();
    let rows: Vec<(uuid::Uuid, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT id, actor_id, action, resource_id, outcome FROM audit_events \
         WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(tenant.uuid())
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, actor_id, action, resource_id, outcome)| AuditEvent {
            id: AuditEventId::from_uuid(id),
            actor_id,
            action,
            resource_id,
            outcome,
        })
        .collect())
}

/// An event with the fields [`record`] does not take: who acted when there is no authenticated
/// actor, the client's address and agent, a delegation chain. For events written outside a
/// request's own context (authentication failures) or with client details.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// What the action was (`^[a-z][a-z0-9_.]{0,63}$`).
    pub action: &'a str,
    /// What it was done to.
    pub resource_id: Option<&'a str>,
    /// How it ended.
    pub outcome: Outcome,
    /// Actor id; `None`: the transaction's actor.
    pub actor_id: Option<&'a str>,
    /// Actor type (`api_key`, `human`, `agent`, `system`, `anonymous`); `None`: the transaction's.
    pub actor_type: Option<&'a str>,
    /// Client address.
    pub ip_address: Option<std::net::IpAddr>,
    /// Client `User-Agent` (truncated to 256 bytes here).
    pub user_agent: Option<&'a str>,
    /// Request id; `None`: the transaction's.
    pub request_id: Option<String>,
    /// Who delegated to whom, outermost first; `None`: the transaction actor's chain, if its
    /// credential is delegated.
    pub delegation: Option<Vec<String>>,
    /// Details; must hold no secret.
    pub metadata: serde_json::Value,
}

impl<'a> NewEvent<'a> {
    /// An event with only the essentials; the rest from the transaction.
    pub fn new(action: &'a str, outcome: Outcome) -> Self {
        Self {
            action,
            resource_id: None,
            outcome,
            actor_id: None,
            actor_type: None,
            ip_address: None,
            user_agent: None,
            request_id: None,
            delegation: None,
            metadata: serde_json::json!({}),
        }
    }
}

/// Longest `user_agent` stored, in bytes (cut at a character boundary).
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// Free text a client chose (a user agent, a reason), as it may enter the log: control
/// characters, invisible and bidirectional formatting characters removed (they would hide or
/// reorder what an operator or a SIEM reads), at most `max_bytes` (cut at a character boundary).
pub fn clean_free_text(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes));
    for c in text
        .chars()
        .filter(|c| !c.is_control() && !is_invisible(*c))
    {
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    out
}

/// Zero-width, bidirectional and other formatting characters that render as nothing.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}' | '\u{e0000}'..='\u{e0fff}')
}

/// The client of the request being served: its address and user agent. Set by the server
/// around every request ([`with_client`]), so every event produced while serving it carries
/// them without each call site passing them on.
#[derive(Debug, Clone, Default)]
pub struct RequestClient {
    /// Client address (after the trusted-proxy rules).
    pub ip_address: Option<std::net::IpAddr>,
    /// `User-Agent`, already cleaned ([`clean_free_text`]).
    pub user_agent: Option<String>,
}

tokio::task_local! {
    static REQUEST_CLIENT: RequestClient;
}

/// Runs `fut` with `client` as the request's client: events recorded inside it without their
/// own address or user agent get these.
pub async fn with_client<F: std::future::Future>(client: RequestClient, fut: F) -> F::Output {
    REQUEST_CLIENT.scope(client, fut).await
}

/// The client of the request in scope, if any.
pub fn current_client() -> Option<RequestClient> {
    REQUEST_CLIENT.try_with(Clone::clone).ok()
}

/// Appends `event` for the transaction's tenant (same transaction as the change, like [`record`]).
pub async fn record_event(
    tx: &mut TenantTx,
    event: &NewEvent<'_>,
) -> Result<AuditEventId, StoreError> {
    record_event_with_id(tx, AuditEventId::new(), event).await
}

/// [`record_event`] under an id chosen (and recorded elsewhere) beforehand, for writers that
/// must write an event exactly once across a crash: they look for the id before writing again.
/// The id must be a fresh UUIDv7 (the sequencer orders and windows events by its time).
pub async fn record_event_with_id(
    tx: &mut TenantTx,
    id: AuditEventId,
    event: &NewEvent<'_>,
) -> Result<AuditEventId, StoreError> {
    let tenant = tx.tenant_id();
    let actor_id = event
        .actor_id
        .map_or_else(|| tx.actor().audit_id(), str::to_owned);
    let actor_type = event.actor_type.unwrap_or_else(|| tx.actor().audit_type());
    let request_id = event
        .request_id
        .clone()
        .unwrap_or_else(|| tx.request_id().to_string());
    // The request's client, for events that do not name their own.
    let client = current_client().unwrap_or_default();
    let ip_address = event.ip_address.or(client.ip_address);
    let user_agent = event
        .user_agent
        .or(client.user_agent.as_deref())
        .map(|ua| clean_free_text(ua, MAX_USER_AGENT_BYTES))
        .filter(|ua| !ua.is_empty());
    sqlx::query(
        "INSERT INTO audit_events \
         (tenant_id, id, actor_id, actor_type, action, resource_id, outcome, request_id, metadata, \
          ip_address, user_agent, delegation) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::inet, $11, $12)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(actor_id)
    .bind(actor_type)
    .bind(event.action)
    .bind(event.resource_id)
    .bind(event.outcome.as_str())
    .bind(request_id)
    .bind(&event.metadata)
    .bind(ip_address.map(|ip| ip.to_string()))
    .bind(user_agent)
    .bind(
        event
            .delegation
            .clone()
            .or_else(|| tx.actor().delegation().map(<[String]>::to_vec)),
    )
    .execute(tx.conn())
    .await?;
    tx.mark_audited();
    Ok(id)
}

/// Appends many events of the transaction's actor in one statement (bulk writers, benchmarks):
/// `(action, resource_id, outcome, metadata)` each. Returns their ids, in order.
pub async fn record_batch(
    tx: &mut TenantTx,
    events: &[(&str, Option<&str>, Outcome, serde_json::Value)],
) -> Result<Vec<AuditEventId>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<AuditEventId> = events.iter().map(|_| AuditEventId::new()).collect();
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| id.uuid()).collect();
    let actions: Vec<&str> = events.iter().map(|e| e.0).collect();
    let resources: Vec<Option<&str>> = events.iter().map(|e| e.1).collect();
    let outcomes: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
    let metadata: Vec<&serde_json::Value> = events.iter().map(|e| &e.3).collect();
    sqlx::query(
        "INSERT INTO audit_events \
         (tenant_id, id, actor_id, actor_type, action, resource_id, outcome, request_id, metadata) \
         SELECT $1, u.id, $2, $3, u.action, u.resource_id, u.outcome, $4, u.metadata \
         FROM unnest($5::uuid[], $6::text[], $7::text[], $8::text[], $9::jsonb[]) \
              AS u(id, action, resource_id, outcome, metadata)",
    )
    .bind(tenant.uuid())
    .bind(tx.actor().audit_id())
    .bind(tx.actor().audit_type())
    .bind(tx.request_id().to_string())
    .bind(&uuids)
    .bind(&actions)
    .bind(&resources)
    .bind(&outcomes)
    .bind(&metadata)
    .execute(tx.conn())
    .await?;
    tx.mark_audited();
    Ok(ids)
}
