//! Deliveries and their attempts: reading them, resending and recovering, the fair claim across
//! tenants, a worker's batch, and recording each attempt's outcome.

use bulkhead_core::{AttemptId, DeliveryId, EndpointId, MessageId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::endpoints::{get_endpoint, Endpoint, EndpointRow, ENDPOINT_COLUMNS};
use super::messages::{get_message, Message};
use crate::placement::door::WEBHOOK_DUE_CHANNEL;
use crate::{Store, StoreError, TenantTx};

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

pub(super) type DeliveryRow = (
    uuid::Uuid,
    uuid::Uuid,
    uuid::Uuid,
    String,
    i32,
    DateTime<Utc>,
    Option<String>,
);

pub(super) fn delivery_from(row: DeliveryRow) -> Delivery {
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

pub(super) type AttemptRow = (
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
    tx.mark_webhook_due();
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
    tx.mark_webhook_due();
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
pub(super) async fn require_attempt_room(tx: &mut TenantTx) -> Result<(), StoreError> {
    crate::tenant::quotas::require_room(tx, "stored_bytes", 1).await?;
    crate::tenant::quotas::require_room(tx, "webhook_messages", 1).await
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
                .or_else(|err| crate::placement::location::skip_unreachable(i, err))?,
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

/// A claimed delivery joined with its message and endpoint: one row of [`load_work_batch`].
#[derive(sqlx::FromRow)]
struct WorkRow {
    d_id: uuid::Uuid,
    d_message_id: uuid::Uuid,
    d_status: String,
    d_attempts: i32,
    d_next_attempt_at: DateTime<Utc>,
    d_last_error: Option<String>,
    m_event_type: String,
    m_source: String,
    m_payload: Value,
    m_created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    endpoint: EndpointRow,
}

/// The statement of [`load_work_batch`], made once: the endpoint columns are spelled out with
/// the join's alias.
fn load_work_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let endpoint_columns = ENDPOINT_COLUMNS
            .split(',')
            .map(|c| format!("e.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT d.id AS d_id, d.message_id AS d_message_id, d.status AS d_status, \
                    d.attempts AS d_attempts, d.next_attempt_at AS d_next_attempt_at, \
                    d.last_error AS d_last_error, m.event_type AS m_event_type, \
                    m.source AS m_source, m.payload AS m_payload, m.created_at AS m_created_at, \
                    {endpoint_columns} \
             FROM webhook_deliveries d \
             JOIN webhook_messages m ON m.tenant_id = d.tenant_id AND m.id = d.message_id \
             JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id \
             WHERE d.tenant_id = $1 AND d.id = ANY($2)"
        )
    })
}

/// Reads claimed deliveries with their messages and endpoints in one round trip (the
/// dispatcher's read of every batch). Deliveries deleted since the claim, or whose message or
/// endpoint is gone, are missing from the answer.
pub async fn load_work_batch(
    tx: &mut TenantTx,
    ids: &[DeliveryId],
) -> Result<Vec<DeliveryWork>, StoreError> {
    let tenant = tx.tenant_id();
    let ids: Vec<uuid::Uuid> = ids.iter().map(|d| d.uuid()).collect();
    let rows: Vec<WorkRow> = sqlx::query_as(load_work_sql())
        .bind(tenant.uuid())
        .bind(&ids)
        .fetch_all(tx.conn())
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let endpoint: Endpoint = r.endpoint.into();
            DeliveryWork {
                delivery: Delivery {
                    id: DeliveryId::from_uuid(r.d_id),
                    message_id: MessageId::from_uuid(r.d_message_id),
                    endpoint_id: endpoint.id,
                    status: r.d_status,
                    attempts: r.d_attempts,
                    next_attempt_at: r.d_next_attempt_at,
                    last_error: r.d_last_error,
                },
                message: Message {
                    id: MessageId::from_uuid(r.d_message_id),
                    event_type: r.m_event_type,
                    source: r.m_source,
                    payload: r.m_payload,
                    created_at: r.m_created_at,
                },
                endpoint,
            }
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
/// attempt log, then one statement updating the deliveries and the endpoints' failure streaks. The same
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
    // Two statements. The attempt log first, on its own: its quota trigger takes the tenant's
    // `stored_bytes` row lock when the statement ends, and the failure path (record_attempt,
    // then endpoint_failed) takes that lock before the endpoint row too; an endpoint update in
    // the same statement would lock the endpoint first and deadlock against it. Only deliveries
    // that still exist get an attempt: one deleted with its endpoint mid-flight would otherwise
    // fail the foreign key and with it the whole batch (sent again after the lease).
    sqlx::query(
        "INSERT INTO webhook_attempts (tenant_id, id, delivery_id, message_id, endpoint_id, \
           attempted_at, outcome, status_code, latency_ms, response_sample) \
         SELECT $1, x.a, x.d, x.m, x.e, x.t, 'succeeded', x.c, x.l, x.s \
         FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::timestamptz[], \
                     $7::int[], $8::int[], $9::text[]) AS x(a, d, m, e, t, c, l, s) \
         JOIN webhook_deliveries w ON w.tenant_id = $1 AND w.id = x.d",
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
    // Then the deliveries and the endpoints' failure streaks in one statement.
    let mut unique_endpoints = endpoints;
    unique_endpoints.sort_unstable();
    unique_endpoints.dedup();
    sqlx::query(
        "WITH finished AS ( \
           UPDATE webhook_deliveries SET status = 'succeeded', attempts = attempts + 1, \
             locked_until = NULL, updated_at = now() WHERE tenant_id = $1 AND id = ANY($2) \
         ) \
         UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL, \
           circuit_open_until = NULL WHERE tenant_id = $1 AND id = ANY($3) \
           AND (consecutive_failures <> 0 OR failing_since IS NOT NULL \
                OR circuit_open_until IS NOT NULL)",
    )
    .bind(tenant.uuid())
    .bind(&deliveries)
    .bind(&unique_endpoints)
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
    if due_now(Some(not_before)) {
        tx.mark_webhook_due();
    }
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
    tx.mark_webhook_due();
    Ok(done.rows_affected())
}

/// Whether an update to `pending` with this `next_attempt_at` (None: unchanged, unknown here)
/// can fire the due trigger, whose condition is `next_attempt_at <= updated_at` (the
/// transaction's start, which is earlier than the moment this runs). The margin covers a
/// database clock slightly ahead of this host's; marking too often costs only a wake-up, not
/// marking when the trigger fires is what the door's debug check refuses.
fn due_now(next_attempt_at: Option<DateTime<Utc>>) -> bool {
    next_attempt_at.is_none_or(|at| at <= Utc::now() + chrono::Duration::seconds(1))
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
pub(super) fn truncate(s: &str, max: usize) -> String {
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
    // A deferral or retry due at once makes the delivery due again; one due later wakes its
    // dispatcher by its own timer, not every dispatcher now.
    if status == "pending" && due_now(next_attempt_at) {
        tx.mark_webhook_due();
    }
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
