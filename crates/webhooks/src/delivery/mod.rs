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

mod record;
mod request;
mod windows;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bulkhead_auth::MasterKey;
use bulkhead_core::{Clock, DeliveryId, EndpointId, TenantContext, TenantId};
use bulkhead_store::tenant::webhooks::{self as store, ClaimedDelivery, DeliveryWork};
use bulkhead_store::{Access, Store, StoreError, TenantTx};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::egress::{EgressClient, SendOutcome};

use self::record::Recording;
use self::request::{build_request, millis};
use self::windows::{endpoint_share, Windows, WINDOW_ENTRIES};

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
    /// How long a woken dispatcher waits before it claims, so that the publishes and finished
    /// deliveries of that moment are served by one claim rather than one each. Zero: claim at
    /// once.
    pub gather: Duration,
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
            gather: Duration::from_millis(2),
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
            let cycle_start = self.clock.now();
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
            // The retry timer is forgotten only once a claim has run after it fell due (or no
            // slot was free, and the slot that frees will wake this loop): forgetting it when
            // the sleep was armed lost it whenever another wake-up came first, and the retry
            // then waited for the fallback poll.
            let now = self.clock.now();
            {
                let mut next_due = lock(&self.next_due);
                if let Some(due) = *next_due {
                    if due <= cycle_start {
                        *next_due = None;
                    } else {
                        pause = pause.min((due - now).to_std().unwrap_or(Duration::ZERO));
                    }
                }
            }
            let woken = tokio::select! {
                _ = tokio::time::sleep(pause) => false,
                _ = self.wake.notified() => true,
                _ = shutdown.changed() => false,
            };
            // A wake-up is one publish or one finished delivery; under load many follow within
            // a millisecond. Each claim costs its statements whatever it returns, so claiming
            // per wake-up spent the CPU on claims of one or two deliveries (issue 25: one
            // tenant's publisher alone cost 3.6 s of CPU per 1,000 deliveries). Waiting a
            // moment serves them with one claim; it adds `gather` to a delivery's latency.
            if woken && !self.config.gather.is_zero() {
                tokio::time::sleep(self.config.gather).await;
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
            let keys = match self.keys_for(&mut tx, &work, now).await {
                Ok(keys) => keys,
                // A secret nothing here opens (an imported endpoint): this delivery fails with
                // the reason, the tenant's others go on; rotating the secret mends the endpoint.
                Err(StoreError::SecretUnopenable(_)) => {
                    store::finish_delivery(
                        &mut tx,
                        id,
                        "failed",
                        None,
                        false,
                        Some("the endpoint's signing secret cannot be opened here: rotate it"),
                    )
                    .await?;
                    out.insert(id, Prepared::Done(Delivered::Deferred));
                    continue;
                }
                Err(err) => return Err(err),
            };
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
}

/// What a claimed delivery came to before sending.
enum Prepared {
    /// Settled without sending.
    Done(Delivered),
    /// To send.
    Send(Box<Ready>),
}

fn system_ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_system(tenant, "webhooks")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wakes `wake` on every `NOTIFY bulkhead_webhooks` (other processes' publishes) and on every
/// commit of this process's store that made deliveries due (in memory: those transactions do not
/// notify, see `bulkhead_store`'s door); reconnects after a second when the listener fails
/// (meanwhile the fallback poll keeps deliveries going).
async fn listen(store: Store, wake: Arc<Notify>) {
    let mut local = store.webhook_due_signal();
    let in_process = {
        let wake = wake.clone();
        async move {
            while local.changed().await.is_ok() {
                wake.notify_one();
            }
        }
    };
    tokio::select! {
        () = in_process => {}
        () = listen_other_processes(store, wake) => {}
    }
}

async fn listen_other_processes(store: Store, wake: Arc<Notify>) {
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
