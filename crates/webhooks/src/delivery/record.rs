//! Recording attempts: successes in batches by one recorder task, everything else (failures,
//! blocks, disabling an endpoint) one by one in the tenant's transaction.

use std::collections::HashMap;

use bulkhead_core::{EndpointId, TenantContext, TenantId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::webhooks::{self as store, DeliveryWork, NewAttempt};
use bulkhead_store::{Access, Store, StoreError, TenantTx};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::egress::SendOutcome;
use crate::schedule;

use super::request::millis;
use super::{system_ctx, Delivered, Dispatcher, EVENT_ENDPOINT_DISABLED};

/// A success waiting for the recorder, and where to say it is recorded.
pub(super) struct Recording {
    pub(super) tenant: TenantId,
    pub(super) success: store::Success,
    pub(super) done: oneshot::Sender<bool>,
}

impl Dispatcher {
    /// Hands a success to the recorder and waits until it is committed.
    pub(super) async fn record_success(
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

    pub(super) async fn record(
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

/// Starts the task that writes successes in batches: it takes whatever has arrived (up to 512),
/// writes each tenant's share in one transaction of that tenant, and answers each sender.
pub(super) fn spawn_recorder(store: Store) -> mpsc::UnboundedSender<Recording> {
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
