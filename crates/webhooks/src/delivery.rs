//! Durable delivery: claim due deliveries fairly across tenants, make one guarded, signed
//! attempt each, record it, and schedule the next.
//!
//! A claimed delivery is read in its tenant's context, the transaction is closed before the
//! request goes out (no connection is held across the network), and the attempt is recorded and
//! the delivery finished in one new transaction. A worker that dies in between leaves the
//! delivery `delivering` under a lease; when the lease expires the claim hands it out again
//! (at-least-once; the receiver deduplicates on `webhook-id`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_auth::MasterKey;
use bulkhead_core::{Actor, Clock, EndpointId, RequestId, TenantContext, TenantId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::webhooks::{self as store, ClaimedDelivery, DeliveryWork, NewAttempt};
use bulkhead_store::{Access, Store, StoreError, TenantTx};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue};
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use crate::egress::{EgressClient, SendOutcome};
use crate::headers::check_custom_headers;
use crate::schedule;
use crate::signing::{signed_headers, Secret};

/// Platform event raised when an endpoint is disabled automatically.
pub const EVENT_ENDPOINT_DISABLED: &str = "endpoint.disabled";

/// Tuning of the dispatcher.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Most deliveries claimed at once.
    pub batch: i32,
    /// Most deliveries of one tenant in flight at once, across all workers.
    pub per_tenant: i32,
    /// Most deliveries in flight in this process.
    pub concurrency: usize,
    /// How long a claim lasts; must exceed the client's total timeout.
    pub lease_seconds: i32,
    /// Pause when nothing is due.
    pub idle_poll: Duration,
    /// An endpoint failing without a success this long is disabled.
    pub disable_after: chrono::Duration,
    /// Failures in a row that open the circuit breaker.
    pub circuit_after: i32,
    /// How long an open breaker holds deliveries back.
    pub circuit_cooldown: chrono::Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            per_tenant: 4,
            concurrency: 32,
            lease_seconds: 60,
            idle_poll: Duration::from_millis(500),
            disable_after: chrono::Duration::days(5),
            circuit_after: 5,
            circuit_cooldown: chrono::Duration::seconds(60),
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
    /// Not attempted now (circuit open, rate limit, endpoint disabled, already finished).
    Deferred,
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
        Self {
            store,
            client,
            clock,
            config,
            master,
            next_send: Mutex::new(HashMap::new()),
        }
    }

    /// Claims one batch and delivers it concurrently; returns what each delivery came to.
    pub async fn run_once(&self) -> Result<Vec<Delivered>, StoreError> {
        let claimed = self.claim(self.config.batch).await?;
        let results = futures::future::join_all(claimed.iter().map(|c| self.deliver(*c))).await;
        Ok(results)
    }

    async fn claim(&self, limit: i32) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.store
            .claim_webhook_deliveries(
                limit.clamp(1, 1000),
                self.config.per_tenant,
                self.config.lease_seconds,
                self.clock.now(),
            )
            .await
    }

    /// Runs until `shutdown` turns true: claims as slots free up, so one tenant's hanging
    /// endpoints hold at most its own per-tenant share of the slots.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!("webhook dispatcher started");
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        loop {
            if *shutdown.borrow() {
                break;
            }
            let free = slots.available_permits();
            let claimed = if free == 0 {
                Ok(Vec::new())
            } else {
                self.claim(
                    i32::try_from(free)
                        .unwrap_or(i32::MAX)
                        .min(self.config.batch),
                )
                .await
            };
            let pause = match claimed {
                Ok(claimed) if !claimed.is_empty() => {
                    for c in claimed {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            break;
                        };
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.deliver(c).await;
                            drop(permit);
                        });
                    }
                    Duration::ZERO
                }
                Ok(_) => self.config.idle_poll,
                Err(err) => {
                    tracing::warn!(error = %err, "webhook claim failed; backing off");
                    self.config.idle_poll * 4
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let in-flight deliveries finish (each is bounded by the client's timeout).
        let _ = slots
            .acquire_many(self.config.concurrency.max(1) as u32)
            .await;
        tracing::info!("webhook dispatcher stopped");
    }

    /// Makes one attempt of a claimed delivery and records it.
    pub async fn deliver(&self, claimed: ClaimedDelivery) -> Delivered {
        let ctx = TenantContext::new(
            claimed.tenant_id,
            Actor::System {
                component: "webhooks",
            },
            RequestId::new(),
        );
        let span = tracing::info_span!("webhook_delivery", tenant_id = %claimed.tenant_id, delivery_id = %claimed.id);
        async {
            match self.attempt(&ctx, claimed).await {
                Ok(done) => done,
                Err(err) => {
                    tracing::warn!(error = %err, "webhook delivery could not be recorded; its lease will expire and it will be retried");
                    Delivered::Deferred
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn attempt(
        &self,
        ctx: &TenantContext,
        claimed: ClaimedDelivery,
    ) -> Result<Delivered, StoreError> {
        let now = self.clock.now();
        let mut tx = self.store.begin(ctx, Access::ReadWrite).await?;
        let work = match store::load_work(&mut tx, claimed.id).await {
            Ok(work) => work,
            // Deleted with its endpoint or message since the claim.
            Err(StoreError::NotFound) => return Ok(Delivered::Deferred),
            Err(err) => return Err(err),
        };
        if work.delivery.status != "delivering" {
            return Ok(Delivered::Deferred);
        }
        if !work.endpoint.enabled {
            store::finish_delivery(
                &mut tx,
                work.delivery.id,
                "failed",
                None,
                false,
                Some("endpoint disabled"),
            )
            .await?;
            tx.commit().await?;
            return Ok(Delivered::Deferred);
        }
        if let Some(until) = work.endpoint.circuit_open_until.filter(|u| *u > now) {
            store::finish_delivery(
                &mut tx,
                work.delivery.id,
                "pending",
                Some(until),
                false,
                None,
            )
            .await?;
            tx.commit().await?;
            return Ok(Delivered::Deferred);
        }
        if let Some(at) = self.rate_limited(ctx.tenant_id(), &work, now) {
            store::finish_delivery(&mut tx, work.delivery.id, "pending", Some(at), false, None)
                .await?;
            tx.commit().await?;
            return Ok(Delivered::Deferred);
        }
        let keys = store::endpoint_keys(&mut tx, work.endpoint.id, now, &self.master).await?;
        // Nothing is held open across the network.
        tx.commit().await?;

        let request = build_request(&work, &keys, now.timestamp());
        let outcome = match request {
            Ok((headers, body)) => self.client.post(&work.endpoint.url, headers, body).await,
            Err(why) => SendOutcome::Transport {
                class: "config",
                detail: why,
                latency: Duration::ZERO,
            },
        };
        self.record(ctx, &work, now, outcome).await
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
