//! Durable delivery: claim due deliveries fairly across tenants, make one guarded, signed
//! attempt each, record it, and schedule the next.
//!
//! Claimed deliveries are read in their tenant's context (one transaction per tenant and
//! batch), the transaction is closed before any request goes out (no connection is held across
//! the network), and the attempt is recorded and the delivery finished in a new transaction:
//! successes in batches by one recorder task, everything else one by one. A worker that dies in
//! between leaves the delivery `delivering` under a lease; when the lease expires the claim
//! hands it out again (at-least-once; the receiver deduplicates on `webhook-id`).
//!
//! Fairness is work-conserving: every tenant is guaranteed `per_tenant` deliveries in flight,
//! and one endpoint of it at most half of that (rounded up). An endpoint whose attempts come
//! back quickly earns one more slot per fast attempt (up to every slot of the process), which
//! its tenant may then hold on top of the guarantee, and loses the extra slots at its first slow
//! or failed attempt. A lone tenant with a fast receiver thus uses all slots, while a hanging
//! receiver never holds more than half its tenant's guaranteed share: other tenants and the
//! tenant's other endpoints keep flowing. The claim serves the tenant with the fewest
//! deliveries in flight first, so newcomers take the next free slot.
//!
//! The dispatcher sleeps only when nothing it could claim is due: new deliveries wake it through
//! `NOTIFY` sent by their committing transaction, a finished delivery wakes it (a tenant below
//! its cap again), and retries it scheduled wake it at their due time. Polling every
//! `idle_poll` remains as the fallback (other workers' retries, reactivated tenants).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bulkhead_auth::MasterKey;
use bulkhead_core::{Actor, Clock, DeliveryId, EndpointId, RequestId, TenantContext, TenantId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::webhooks::{self as store, ClaimedDelivery, DeliveryWork, NewAttempt};
use bulkhead_store::{Access, Store, StoreError, TenantTx};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::egress::{EgressClient, SendOutcome};
use crate::headers::check_custom_headers;
use crate::schedule;
use crate::signing::{signed_headers, Secret};

/// Platform event raised when an endpoint is disabled automatically.
pub const EVENT_ENDPOINT_DISABLED: &str = "endpoint.disabled";

/// Tuning of the dispatcher. `serve` and `worker --webhooks` use [`DeliveryConfig::default`].
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Most deliveries claimed at once.
    pub batch: i32,
    /// Deliveries of one tenant in flight that every tenant is guaranteed, across all workers;
    /// a tenant goes beyond it only with slots earned by fast attempts.
    pub per_tenant: i32,
    /// Most deliveries in flight in this process.
    pub concurrency: usize,
    /// How long a claim lasts; must exceed the client's total timeout.
    pub lease_seconds: i32,
    /// Fallback poll when nothing wakes the dispatcher.
    pub idle_poll: Duration,
    /// An endpoint failing without a success this long is disabled.
    pub disable_after: chrono::Duration,
    /// Failures in a row that open the circuit breaker.
    pub circuit_after: i32,
    /// How long an open breaker holds deliveries back.
    pub circuit_cooldown: chrono::Duration,
    /// A successful attempt at least this quick earns its tenant one more slot.
    pub fast_attempt: Duration,
    /// How long a delivery paused because its tenant is not active waits before the claim
    /// looks at it again (a status re-check on a timer, not a hot loop).
    pub pause_backoff: chrono::Duration,
    /// How long an endpoint's unsealed signing keys stay in memory.
    pub key_cache_ttl: Duration,
    /// Most endpoints whose keys are kept in memory.
    pub key_cache_entries: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            per_tenant: 4,
            concurrency: 64,
            lease_seconds: 60,
            idle_poll: Duration::from_millis(500),
            disable_after: chrono::Duration::days(5),
            circuit_after: 5,
            circuit_cooldown: chrono::Duration::seconds(60),
            fast_attempt: Duration::from_millis(500),
            pause_backoff: chrono::Duration::seconds(5),
            key_cache_ttl: Duration::from_secs(60),
            key_cache_entries: 10_000,
        }
    }
}

/// What one attempt came to (for tests and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// 2xx.
    Succeeded,
    /// Failed; retry at the given time, or never.
    Failed(Option<DateTime<Utc>>),
    /// Refused by the egress guard.
    Blocked,
    /// Not attempted now (circuit open, rate limit, endpoint disabled, tenant not active,
    /// already finished).
    Deferred,
}

/// Unsealed keys of one endpoint, valid while the endpoint row is unchanged (rotation and every
/// other update move `updated_at`), the previous key has not expired, and the entry is young.
struct CachedKeys {
    keys: store::EndpointKeys,
    endpoint_updated_at: DateTime<Utc>,
    fetched: Instant,
}

/// A claimed delivery, read and judged, ready to go out.
struct Ready {
    ctx: TenantContext,
    work: DeliveryWork,
    keys: store::EndpointKeys,
    started: DateTime<Utc>,
}

/// A success waiting for the recorder, and where to say it is recorded.
struct Recording {
    tenant: TenantId,
    success: store::Success,
    done: oneshot::Sender<bool>,
}

/// Claims and delivers.
pub struct Dispatcher {
    store: Store,
    client: EgressClient,
    clock: Clock,
    config: DeliveryConfig,
    /// Opens the endpoints' sealed signing secrets.
    master: Arc<MasterKey>,
    /// Per-endpoint rate limit: the earliest time of the next send (this process only).
    next_send: Mutex<HashMap<(TenantId, EndpointId), DateTime<Utc>>>,
    /// Slots earned by fast attempts, per endpoint (absent: half the tenant's guaranteed
    /// share, rounded up).
    windows: Mutex<Windows>,
    /// Unsealed signing keys, keyed by tenant and endpoint; the least recently used go first.
    keys: Mutex<hashlink::LruCache<(TenantId, EndpointId), CachedKeys>>,
    /// Earliest retry or deferral this process scheduled, to wake for it.
    next_due: Mutex<Option<DateTime<Utc>>>,
    /// Wakes the run loop: a delivery finished or new work was announced.
    wake: Arc<Notify>,
    /// The success recorder, started on first use.
    recorder: OnceLock<mpsc::UnboundedSender<Recording>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher sending through `client`.
    pub fn new(
        store: Store,
        client: EgressClient,
        clock: Clock,
        config: DeliveryConfig,
        master: Arc<MasterKey>,
    ) -> Self {
        let key_entries = config.key_cache_entries.max(1);
        Self {
            store,
            client,
            clock,
            config,
            master,
            next_send: Mutex::new(HashMap::new()),
            windows: Mutex::new(Windows::new(WINDOW_ENTRIES)),
            keys: Mutex::new(hashlink::LruCache::new(key_entries)),
            next_due: Mutex::new(None),
            wake: Arc::new(Notify::new()),
            recorder: OnceLock::new(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// Claims one batch and delivers it concurrently; returns what each delivery came to, in
    /// the order claimed, once every attempt is recorded.
    pub async fn run_once(&self) -> Result<Vec<Delivered>, StoreError> {
        let claimed = self.claim(self.config.batch).await?;
        let prepared = self.prepare(&claimed).await;
        let mut results = vec![Delivered::Deferred; claimed.len()];
        let mut sends = Vec::new();
        for (i, p) in prepared.into_iter().enumerate() {
            match p {
                Prepared::Done(d) => results[i] = d,
                Prepared::Send(ready) => sends.push((i, ready)),
            }
        }
        let done = futures::future::join_all(
            sends
                .into_iter()
                .map(|(i, ready)| async move { (i, self.send_and_record(*ready).await) }),
        )
        .await;
        for (i, d) in done {
            results[i] = d;
        }
        Ok(results)
    }

    async fn claim(&self, limit: i32) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let base = endpoint_share(self.config.per_tenant);
        let caps = lock(&self.windows).earned_above(base);
        self.store
            .claim_webhook_deliveries_capped(
                limit.clamp(1, 1000),
                self.config.per_tenant,
                self.config.lease_seconds,
                self.clock.now(),
                &caps,
            )
            .await
    }

    /// Runs until `shutdown` turns true: claims as slots free up and work becomes due, so one
    /// tenant's hanging endpoints hold at most its guaranteed share of the slots.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(config = ?self.config, "webhook dispatcher started");
        let concurrency = self.config.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let listener = tokio::spawn(listen(self.store.clone(), self.wake.clone()));
        loop {
            if *shutdown.borrow() {
                break;
            }
            let free = slots.available_permits();
            let mut more = false;
            let mut pause = self.config.idle_poll;
            if free > 0 {
                let want = i32::try_from(free)
                    .unwrap_or(i32::MAX)
                    .min(self.config.batch);
                match self.claim(want).await {
                    Ok(claimed) => {
                        // A full batch: more may be due right now.
                        more = claimed.len() as i32 >= want;
                        if !claimed.is_empty() {
                            self.clone().dispatch(claimed, &slots).await;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "webhook claim failed; backing off");
                        pause = self.config.idle_poll * 4;
                    }
                }
            }
            if more && slots.available_permits() > 0 {
                continue;
            }
            // Sleep until something can change the answer: a slot frees or new work is
            // announced (both notify), a retry falls due, or the fallback poll.
            let now = self.clock.now();
            if let Some(due) = *lock(&self.next_due) {
                let until = (due - now).to_std().unwrap_or(Duration::ZERO);
                if until <= pause {
                    pause = until;
                    *lock(&self.next_due) = None;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        listener.abort();
        // Let in-flight deliveries finish (each is bounded by the client's timeout).
        let _ = slots.acquire_many(concurrency as u32).await;
        tracing::info!("webhook dispatcher stopped");
    }

    /// Reads and judges a claimed batch, then starts each send in its own task holding one slot.
    async fn dispatch(self: Arc<Self>, claimed: Vec<ClaimedDelivery>, slots: &Arc<Semaphore>) {
        let mut permits: Vec<OwnedSemaphorePermit> = Vec::with_capacity(claimed.len());
        for _ in &claimed {
            // Free permits were counted before the claim, and only this loop takes them.
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let prepared = self.prepare(&claimed).await;
        let mut freed = false;
        for (p, permit) in prepared.into_iter().zip(permits) {
            match p {
                Prepared::Done(_) => {
                    drop(permit);
                    freed = true;
                }
                Prepared::Send(ready) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.send_and_record(*ready).await;
                        drop(permit);
                        me.wake.notify_one();
                    });
                }
            }
        }
        if freed {
            // Deferred ones freed their slots at once.
            self.wake.notify_one();
        }
    }

    /// Makes one attempt of a claimed delivery and records it.
    pub async fn deliver(&self, claimed: ClaimedDelivery) -> Delivered {
        match self.prepare(&[claimed]).await.pop() {
            Some(Prepared::Send(ready)) => self.send_and_record(*ready).await,
            Some(Prepared::Done(d)) => d,
            None => Delivered::Deferred,
        }
    }

    /// Reads the claimed deliveries in their tenants' contexts (one transaction per tenant),
    /// re-checks each tenant's status, settles what is not to be sent now, and returns the
    /// rest ready to go, in the order given.
    async fn prepare(&self, claimed: &[ClaimedDelivery]) -> Vec<Prepared> {
        let mut by_tenant: HashMap<TenantId, Vec<(usize, DeliveryId)>> = HashMap::new();
        for (i, c) in claimed.iter().enumerate() {
            by_tenant.entry(c.tenant_id).or_default().push((i, c.id));
        }
        // The claim judged each tenant; one may have been suspended since. One read for all.
        let tenants: Vec<TenantId> = by_tenant.keys().copied().collect();
        let active = match self.store.active_tenants(&tenants).await {
            Ok(active) => active,
            Err(err) => {
                tracing::warn!(error = %err, "tenant status unreadable; claimed deliveries wait for their leases");
                return claimed
                    .iter()
                    .map(|_| Prepared::Done(Delivered::Deferred))
                    .collect();
            }
        };
        let active = &active;
        let groups = futures::future::join_all(by_tenant.into_iter().map(|(tenant, items)| {
            let span =
                tracing::info_span!("webhook_batch", tenant_id = %tenant, deliveries = items.len());
            async move {
                let ctx = system_ctx(tenant);
                let ids: Vec<DeliveryId> = items.iter().map(|(_, id)| *id).collect();
                let result = self
                    .prepare_tenant(&ctx, &ids, active.contains(&tenant))
                    .await;
                (items, result)
            }
            .instrument(span)
        }))
        .await;
        let mut out: Vec<Option<Prepared>> = (0..claimed.len()).map(|_| None).collect();
        for (items, result) in groups {
            match result {
                Ok(mut prepared) => {
                    for (i, id) in items {
                        out[i] = Some(
                            prepared
                                .remove(&id)
                                .unwrap_or(Prepared::Done(Delivered::Deferred)),
                        );
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "claimed webhook deliveries could not be read; their leases will expire and they will be retried");
                    for (i, _) in items {
                        out[i] = Some(Prepared::Done(Delivered::Deferred));
                    }
                }
            }
        }
        out.into_iter()
            .map(|p| p.unwrap_or(Prepared::Done(Delivered::Deferred)))
            .collect()
    }

    async fn prepare_tenant(
        &self,
        ctx: &TenantContext,
        ids: &[DeliveryId],
        active: bool,
    ) -> Result<HashMap<DeliveryId, Prepared>, StoreError> {
        let now = self.clock.now();
        // A tenant no longer active: its deliveries pause (pending, no attempt counted) and the
        // claim resumes them once it is active again.
        let mut tx = self.store.begin(ctx, Access::ReadWrite).await?;
        let mut out = HashMap::new();
        if !active {
            store::pause_deliveries(&mut tx, ids, now + self.config.pause_backoff).await?;
            tx.commit().await?;
            tracing::info!(
                deliveries = ids.len(),
                "tenant not active: webhook deliveries paused"
            );
            return Ok(out);
        }
        for work in store::load_work_batch(&mut tx, ids).await? {
            let id = work.delivery.id;
            if work.delivery.status != "delivering" {
                out.insert(id, Prepared::Done(Delivered::Deferred));
                continue;
            }
            if !work.endpoint.enabled {
                store::finish_delivery(
                    &mut tx,
                    id,
                    "failed",
                    None,
                    false,
                    Some("endpoint disabled"),
                )
                .await?;
                out.insert(id, Prepared::Done(Delivered::Deferred));
                continue;
            }
            if let Some(until) = work.endpoint.circuit_open_until.filter(|u| *u > now) {
                store::finish_delivery(&mut tx, id, "pending", Some(until), false, None).await?;
                self.due_at(until);
                out.insert(id, Prepared::Done(Delivered::Deferred));
                continue;
            }
            if let Some(at) = self.rate_limited(ctx.tenant_id(), &work, now) {
                store::finish_delivery(&mut tx, id, "pending", Some(at), false, None).await?;
                self.due_at(at);
                out.insert(id, Prepared::Done(Delivered::Deferred));
                continue;
            }
            let keys = self.keys_for(&mut tx, &work, now).await?;
            out.insert(
                id,
                Prepared::Send(Box::new(Ready {
                    ctx: ctx.clone(),
                    work,
                    keys,
                    started: now,
                })),
            );
        }
        // Nothing is held open across the network.
        tx.commit().await?;
        Ok(out)
    }

    /// The endpoint's signing keys, from memory when still valid, else unsealed from the row.
    async fn keys_for(
        &self,
        tx: &mut TenantTx,
        work: &DeliveryWork,
        now: DateTime<Utc>,
    ) -> Result<store::EndpointKeys, StoreError> {
        let key = (tx.tenant_id(), work.endpoint.id);
        if let Some(c) = lock(&self.keys).get(&key) {
            if c.endpoint_updated_at == work.endpoint.updated_at
                && c.fetched.elapsed() < self.config.key_cache_ttl
                && c.keys.previous_until.is_none_or(|until| until > now)
            {
                return Ok(c.keys.clone());
            }
        }
        let keys = store::endpoint_keys(tx, work.endpoint.id, now, &self.master).await?;
        if self.config.key_cache_entries > 0 {
            // Bounded: the least recently used endpoint's keys make room.
            let mut cache = lock(&self.keys);
            cache.insert(
                key,
                CachedKeys {
                    keys: keys.clone(),
                    endpoint_updated_at: work.endpoint.updated_at,
                    fetched: Instant::now(),
                },
            );
        }
        Ok(keys)
    }

    /// Sends one prepared attempt and records what came of it.
    async fn send_and_record(&self, ready: Ready) -> Delivered {
        let Ready {
            ctx,
            work,
            keys,
            started,
        } = ready;
        let span = tracing::info_span!("webhook_delivery", tenant_id = %ctx.tenant_id(), delivery_id = %work.delivery.id);
        async {
            let request = build_request(&work, &keys, started.timestamp());
            drop(keys);
            let outcome = match request {
                Ok((headers, body)) => self.client
                        .post(ctx.tenant_id(), &work.endpoint.url, headers, body)
                        .await,
                Err(why) => SendOutcome::Transport {
                    class: "config",
                    detail: why,
                    latency: Duration::ZERO,
                },
            };
            self.learn(ctx.tenant_id(), work.endpoint.id, &outcome);
            let result = match outcome {
                SendOutcome::Response {
                    status,
                    sample,
                    latency,
                    ..
                } if (200..300).contains(&status) => {
                    self.record_success(
                        ctx.tenant_id(),
                        store::Success {
                            delivery: work.delivery.id,
                            message: work.message.id,
                            endpoint: work.endpoint.id,
                            attempted_at: started,
                            status_code: i32::from(status),
                            latency_ms: millis(latency),
                            response_sample: sample,
                        },
                    )
                    .await
                }
                other => self.record(&ctx, &work, started, other).await,
            };
            match result {
                Ok(done) => {
                    if let Delivered::Failed(Some(at)) = &done {
                        self.due_at(*at);
                    }
                    done
                }
                Err(err) => {
                    tracing::warn!(error = %err, "webhook delivery could not be recorded; its lease will expire and it will be retried");
                    Delivered::Deferred
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Adjusts the endpoint's window: one more slot per fast success, back to its share of the
    /// tenant's guarantee at the first slow or failed attempt. Per endpoint, so one endpoint's
    /// fast answers never widen the window a hanging sibling fills.
    fn learn(&self, tenant: TenantId, endpoint: EndpointId, outcome: &SendOutcome) {
        let fast = matches!(outcome, SendOutcome::Response { status, latency, .. }
            if (200..300).contains(status) && *latency <= self.config.fast_attempt);
        let base = endpoint_share(self.config.per_tenant);
        let key = (tenant, endpoint);
        let max = i32::try_from(self.config.concurrency)
            .unwrap_or(i32::MAX)
            .max(base);
        lock(&self.windows).learn(key, fast, base, max);
    }

    /// Remembers to wake for a delivery due at `at`.
    fn due_at(&self, at: DateTime<Utc>) {
        let mut next = lock(&self.next_due);
        if next.is_none_or(|n| at < n) {
            *next = Some(at);
        }
    }

    /// Hands a success to the recorder and waits until it is committed.
    async fn record_success(
        &self,
        tenant: TenantId,
        success: store::Success,
    ) -> Result<Delivered, StoreError> {
        let sender = self
            .recorder
            .get_or_init(|| spawn_recorder(self.store.clone()));
        let (done, recorded) = oneshot::channel();
        sender
            .send(Recording {
                tenant,
                success,
                done,
            })
            .map_err(|_| StoreError::Invalid("the webhook recorder stopped".into()))?;
        match recorded.await {
            Ok(true) => Ok(Delivered::Succeeded),
            _ => Err(StoreError::Invalid(
                "the batch of successes could not be recorded".into(),
            )),
        }
    }

    fn rate_limited(
        &self,
        tenant: TenantId,
        work: &DeliveryWork,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let rate = work.endpoint.rate_limit_per_second.filter(|r| *r > 0)?;
        let interval = chrono::Duration::microseconds(1_000_000 / i64::from(rate));
        let mut next = self.next_send.lock().unwrap_or_else(|p| p.into_inner());
        let slot = next.entry((tenant, work.endpoint.id)).or_insert(now);
        if *slot > now {
            return Some(*slot);
        }
        *slot = now + interval;
        None
    }

    async fn record(
        &self,
        ctx: &TenantContext,
        work: &DeliveryWork,
        started: DateTime<Utc>,
        outcome: SendOutcome,
    ) -> Result<Delivered, StoreError> {
        let now = self.clock.now();
        let attempts = work.delivery.attempts + 1;
        let mut tx = self.store.begin(ctx, Access::ReadWrite).await?;
        let delivery = work.delivery.id;
        let endpoint = work.endpoint.id;
        let result = match outcome {
            SendOutcome::Blocked(refusal) => {
                let rule = refusal.to_string();
                store::record_attempt(
                    &mut tx,
                    work,
                    &NewAttempt {
                        attempted_at: started,
                        outcome: "blocked",
                        status_code: None,
                        latency_ms: 0,
                        error_class: Some(refusal.class().into()),
                        error: Some(rule.clone()),
                        response_sample: None,
                    },
                )
                .await?;
                store::finish_delivery(&mut tx, delivery, "blocked", None, true, Some(&rule))
                    .await?;
                audit::record(
                    &mut tx,
                    "webhook.blocked",
                    Some(&endpoint.to_string()),
                    Outcome::Blocked,
                    json!({ "delivery_id": delivery, "message_id": work.message.id, "rule": rule }),
                )
                .await?;
                tracing::warn!(target: "bulkhead::audit", action = "webhook.blocked", tenant_id = %ctx.tenant_id(), resource_id = %endpoint, rule = %rule, "egress guard refused a delivery");
                Delivered::Blocked
            }
            SendOutcome::Response {
                status,
                sample,
                latency,
                ..
            } if (200..300).contains(&status) => {
                store::record_attempt(
                    &mut tx,
                    work,
                    &NewAttempt {
                        attempted_at: started,
                        outcome: "succeeded",
                        status_code: Some(i32::from(status)),
                        latency_ms: millis(latency),
                        error_class: None,
                        error: None,
                        response_sample: Some(sample),
                    },
                )
                .await?;
                store::finish_delivery(&mut tx, delivery, "succeeded", None, true, None).await?;
                store::endpoint_succeeded(&mut tx, endpoint).await?;
                Delivered::Succeeded
            }
            SendOutcome::Response {
                status: 410,
                sample,
                latency,
                ..
            } => {
                store::record_attempt(
                    &mut tx,
                    work,
                    &NewAttempt {
                        attempted_at: started,
                        outcome: "failed",
                        status_code: Some(410),
                        latency_ms: millis(latency),
                        error_class: Some("gone".into()),
                        error: Some("the receiver answered 410 Gone".into()),
                        response_sample: Some(sample),
                    },
                )
                .await?;
                store::finish_delivery(&mut tx, delivery, "failed", None, true, Some("410 Gone"))
                    .await?;
                self.disable(&mut tx, endpoint, "the receiver answered 410 Gone")
                    .await?;
                Delivered::Failed(None)
            }
            other => {
                let (status_code, class, error, sample, latency, retry_after) = match other {
                    SendOutcome::Response {
                        status,
                        retry_after,
                        sample,
                        latency,
                    } => {
                        let class = if (300..400).contains(&status) {
                            "redirect"
                        } else {
                            "http_status"
                        };
                        (
                            Some(i32::from(status)),
                            class,
                            format!("the receiver answered {status}"),
                            Some(sample),
                            latency,
                            retry_after,
                        )
                    }
                    SendOutcome::Transport {
                        class,
                        detail,
                        latency,
                    } => (None, class, detail, None, latency, None),
                    SendOutcome::Blocked(_) => unreachable!("handled above"),
                };
                store::record_attempt(
                    &mut tx,
                    work,
                    &NewAttempt {
                        attempted_at: started,
                        outcome: "failed",
                        status_code,
                        latency_ms: millis(latency),
                        error_class: Some(class.into()),
                        error: Some(error.clone()),
                        response_sample: sample,
                    },
                )
                .await?;
                let (_, failing_since) = store::endpoint_failed(
                    &mut tx,
                    endpoint,
                    now,
                    self.config.circuit_after,
                    self.config.circuit_cooldown,
                )
                .await?;
                let disabled = now - failing_since >= self.config.disable_after;
                if disabled {
                    let days = self.config.disable_after.num_hours() as f64 / 24.0;
                    self.disable(
                        &mut tx,
                        endpoint,
                        &format!("failing without a success for {days} days"),
                    )
                    .await?;
                }
                let next = if disabled {
                    None
                } else {
                    schedule::next_attempt(now, attempts, retry_after.as_deref())
                };
                let status = if next.is_some() { "pending" } else { "failed" };
                store::finish_delivery(&mut tx, delivery, status, next, true, Some(&error)).await?;
                Delivered::Failed(next)
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    /// Disables an endpoint, audits it, and tells the tenant's other endpoints.
    async fn disable(
        &self,
        tx: &mut TenantTx,
        endpoint: EndpointId,
        reason: &str,
    ) -> Result<(), StoreError> {
        if !store::disable_endpoint(tx, endpoint, reason).await? {
            return Ok(());
        }
        audit::record(
            tx,
            "webhook.endpoint_disabled",
            Some(&endpoint.to_string()),
            Outcome::Success,
            json!({ "reason": reason }),
        )
        .await?;
        let body = json!({ "endpoint_id": endpoint, "reason": reason });
        store::publish(
            tx,
            EVENT_ENDPOINT_DISABLED,
            &body,
            store::MessageSource::Platform,
            None,
            self.clock.now(),
        )
        .await?;
        tracing::warn!(tenant_id = %tx.tenant_id(), endpoint_id = %endpoint, reason, "webhook endpoint disabled");
        Ok(())
    }
}

/// What a claimed delivery came to before sending.
enum Prepared {
    /// Settled without sending.
    Done(Delivered),
    /// To send.
    Send(Box<Ready>),
}

fn system_ctx(tenant: TenantId) -> TenantContext {
    TenantContext::new(
        tenant,
        Actor::System {
            component: "webhooks",
        },
        RequestId::new(),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wakes `wake` on every `NOTIFY bulkhead_webhooks`; reconnects after a second when the
/// listener fails (meanwhile the fallback poll keeps deliveries going).
async fn listen(store: Store, wake: Arc<Notify>) {
    loop {
        match store.listen_webhook_due().await {
            Ok(mut listener) => loop {
                match listener.recv().await {
                    Ok(_) => wake.notify_one(),
                    Err(err) => {
                        tracing::warn!(error = %err, "webhook wake-up listener failed; reconnecting");
                        break;
                    }
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "webhook wake-up listener could not start; polling meanwhile");
            }
        }
        // Whatever was announced while disconnected is claimed now.
        wake.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Starts the task that writes successes in batches: it takes whatever has arrived (up to 512),
/// writes each tenant's share in one transaction of that tenant, and answers each sender.
fn spawn_recorder(store: Store) -> mpsc::UnboundedSender<Recording> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Recording>();
    tokio::spawn(async move {
        let mut buffer = Vec::with_capacity(512);
        while rx.recv_many(&mut buffer, 512).await > 0 {
            let mut by_tenant: HashMap<TenantId, Vec<Recording>> = HashMap::new();
            for r in buffer.drain(..) {
                by_tenant.entry(r.tenant).or_default().push(r);
            }
            let writes = by_tenant.into_iter().map(|(tenant, items)| {
                let store = store.clone();
                async move {
                    let successes: Vec<store::Success> =
                        items.iter().map(|r| r.success.clone()).collect();
                    let written = async {
                        let mut tx = store.begin(&system_ctx(tenant), Access::ReadWrite).await?;
                        store::record_successes(&mut tx, &successes).await?;
                        tx.commit().await
                    }
                    .await;
                    if let Err(err) = &written {
                        tracing::warn!(tenant_id = %tenant, error = %err, "webhook successes could not be recorded");
                    }
                    for r in items {
                        let _ = r.done.send(written.is_ok());
                    }
                }
            });
            futures::future::join_all(writes).await;
        }
    });
    tx
}

/// Endpoints whose earned windows are remembered; beyond that the least recently earning one
/// falls back to its share (and earns again from there).
const WINDOW_ENTRIES: usize = 10_000;

/// Earned windows per endpoint, bounded by evicting the endpoint that earned least recently:
/// an endpoint that keeps answering fast keeps its window however many other endpoints come and
/// go (clearing everything at the bound let any tenant with many endpoints reset every other
/// tenant's windows; review 2, L8), and entries of deleted endpoints age out.
struct Windows {
    earned: hashlink::LruCache<(TenantId, EndpointId), i32>,
}

impl Windows {
    fn new(entries: usize) -> Self {
        Self {
            earned: hashlink::LruCache::new(entries.max(1)),
        }
    }

    /// One more slot (up to `max`) after a fast success; back to the share `base` otherwise.
    fn learn(&mut self, key: (TenantId, EndpointId), fast: bool, base: i32, max: i32) {
        if !fast {
            self.earned.remove(&key);
            return;
        }
        match self.earned.get_mut(&key) {
            Some(w) => *w = (*w + 1).min(max),
            // Inserting past the bound evicts the least recently used entry only.
            None => {
                self.earned.insert(key, (base + 1).min(max));
            }
        }
    }

    /// The windows wider than the share `base`, for the claim.
    fn earned_above(&self, base: i32) -> Vec<(TenantId, EndpointId, i32)> {
        self.earned
            .iter()
            .filter(|(_, w)| **w > base)
            .map(|((t, e), w)| (*t, *e, *w))
            .collect()
    }

    #[cfg(test)]
    fn get(&self, key: &(TenantId, EndpointId)) -> Option<i32> {
        self.earned.peek(key).copied()
    }
}

/// The part of a tenant's guaranteed share one endpoint may hold without an earned window: half,
/// rounded up (as the claim computes it, migration 0021), so a hanging endpoint leaves the rest
/// to its siblings.
fn endpoint_share(per_tenant: i32) -> i32 {
    (per_tenant.clamp(1, 1000) + 1) / 2
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Headers and body of one attempt: content type, the tenant's vetted headers, then the
/// signature headers (which custom headers can never replace).
fn build_request(
    work: &DeliveryWork,
    keys: &store::EndpointKeys,
    timestamp: i64,
) -> Result<(HeaderMap, bytes::Bytes), String> {
    let body = serde_json::to_vec(&work.message.payload).map_err(|e| e.to_string())?;
    let custom = work
        .endpoint
        .headers
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut headers = check_custom_headers(&custom).map_err(|e| e.to_string())?;
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let current = Secret::from_bytes(&keys.current).map_err(|e| e.to_string())?;
    let previous = keys
        .previous
        .as_deref()
        .map(Secret::from_bytes)
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut secrets = vec![&current];
    if let Some(previous) = &previous {
        secrets.push(previous);
    }
    let signed = signed_headers(&secrets, &work.message.id.to_string(), timestamp, &body);
    headers.extend(signed);
    Ok((headers, bytes::Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u128) -> (TenantId, EndpointId) {
        (
            TenantId::from_uuid(uuid::Uuid::from_u128(n)),
            EndpointId::from_uuid(uuid::Uuid::from_u128(n)),
        )
    }

    #[test]
    fn many_new_endpoints_evict_only_the_least_recently_earning_windows() {
        let mut w = Windows::new(100);
        let victim = key(1_000_000);
        for _ in 0..10 {
            w.learn(victim, true, 2, 64);
        }
        let idle = key(2_000_000);
        w.learn(idle, true, 2, 64);
        // Another tenant's many endpoints, one fast answer each, while the victim keeps earning.
        for n in 0..1_000 {
            w.learn(key(n), true, 2, 64);
            if n % 50 == 0 {
                w.learn(victim, true, 2, 64);
            }
        }
        assert_eq!(w.get(&victim), Some(12 + 20));
        assert_eq!(w.get(&idle), None, "a window not earned lately ages out");
        assert_eq!(w.earned.len(), 100);
        // A slow answer still drops the window at once.
        w.learn(victim, false, 2, 64);
        assert_eq!(w.get(&victim), None);
        assert!(w.earned_above(2).iter().all(|(t, e, _)| (*t, *e) != victim));
    }
}
