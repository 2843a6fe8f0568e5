//! The job worker: claims due jobs across tenants and runs each inside its own tenant's context.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::service::audit_line::{AuditLine, Detail};
use crate::service::audit_log::record_success;
use bulkhead_core::{ApiKeyId, Clock, JobId, SessionId, TenantContext};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::placement::registry::{Tenant, TenantStatus};
use bulkhead_store::tenant::api_keys;
use bulkhead_store::tenant::jobs::{self, ClaimVerdict, ClaimedJob};
use bulkhead_store::tenant::sessions::{self, SessionPatch, SessionState};
use bulkhead_store::tenant::webhooks;
use bulkhead_store::{Access, Store, StoreError, TenantTx};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::Instrument;

/// How a job attempt failed.
#[derive(Debug)]
pub enum JobFailure {
    /// Worth retrying later (with backoff) until the job's attempt limit.
    Retry(String),
    /// Will never succeed (bad payload, resource gone): fail now.
    Permanent(String),
}

impl From<StoreError> for JobFailure {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => {
                JobFailure::Permanent("resource not found in this tenant".into())
            }
            StoreError::Invalid(what) => JobFailure::Permanent(format!("invalid: {what}")),
            other => JobFailure::Retry(format!("{other}")),
        }
    }
}

/// One kind of job. `run` gets the transaction of the job's own tenant: whatever it does commits
/// together with the job's completion, or not at all.
pub trait JobHandler: Send + Sync {
    /// Does the work.
    fn run<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        payload: Value,
    ) -> BoxFuture<'a, Result<(), JobFailure>>;
}

/// `session.close` `{"session_id": "sess_…"}`: closes one of the tenant's sessions.
#[derive(Debug)]
pub struct CloseSession;

impl JobHandler for CloseSession {
    fn run<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        payload: Value,
    ) -> BoxFuture<'a, Result<(), JobFailure>> {
        Box::pin(async move {
            let id = payload
                .get("session_id")
                .and_then(Value::as_str)
                .and_then(|s| SessionId::parse(s).ok())
                .ok_or_else(|| JobFailure::Permanent("payload needs a valid session_id".into()))?;
            let patch = SessionPatch {
                state: Some(SessionState::Closed),
                ..SessionPatch::default()
            };
            sessions::update(tx, id, &patch).await?;
            record_success(tx, "session.close", id).await?;
            Ok(())
        })
    }
}

/// What one key sweep did, across tenants.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeySweep {
    /// Keys marked expired (grace over or past expiry).
    pub expired: Vec<ApiKeyId>,
    /// Rotated keys still in use whose grace deadline is near (event raised once each).
    pub deadline_warnings: Vec<ApiKeyId>,
    /// Keys nearing the tenant's maximum key age (event raised once each).
    pub rotation_due: Vec<ApiKeyId>,
}

/// Claims and runs jobs, and sweeps key deadlines.
pub struct Worker {
    store: Store,
    clock: Clock,
    sweep_every: Duration,
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
    batch: i32,
    lease_seconds: i32,
    idle_poll: Duration,
    webhook_retention: chrono::Duration,
}

/// How long a finished webhook message (with its deliveries and attempts) is kept before the
/// retention sweep deletes it (docs/quotas.md, docs/webhooks.md).
pub const WEBHOOK_RETENTION_DAYS: i64 = 30;

/// Messages one retention transaction deletes at most; a pass runs at most
/// [`RETENTION_BATCHES`] of them per tenant.
const RETENTION_BATCH: i32 = 1000;
const RETENTION_BATCHES: usize = 100;

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker with the built-in job kinds.
    pub fn new(store: Store) -> Self {
        let mut handlers: HashMap<&'static str, Arc<dyn JobHandler>> = HashMap::new();
        handlers.insert("session.close", Arc::new(CloseSession));
        Self {
            store,
            clock: Clock::system(),
            sweep_every: Duration::from_secs(300),
            handlers,
            batch: 16,
            lease_seconds: 300,
            idle_poll: Duration::from_millis(500),
            webhook_retention: chrono::Duration::days(WEBHOOK_RETENTION_DAYS),
        }
    }

    /// Claims one batch and processes it. Returns how many jobs were claimed (run or refused).
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let claimed = self
            .store
            .claim_jobs(self.batch, self.lease_seconds)
            .await?;
        for job in &claimed {
            self.process(job).await;
        }
        Ok(claimed.len())
    }

    /// Uses `clock` for the key sweep (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The tenants a sweep visits: the active ones of a region this process serves (a tenant of a
    /// region another process serves is that process's to sweep).
    async fn swept_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let mut tenants = self.store.list_tenants().await?;
        tenants.retain(|t| t.status == TenantStatus::Active && self.store.serves_region(&t.region));
        Ok(tenants)
    }

    /// A sweep's transaction in a tenant, or `None` while the tenant is frozen for a move: it is
    /// swept on the next pass, in its new location.
    async fn begin_sweep(&self, ctx: &TenantContext) -> Result<Option<TenantTx>, StoreError> {
        match self.store.begin(ctx, Access::ReadWrite).await {
            Ok(tx) => Ok(Some(tx)),
            Err(StoreError::TenantMoving) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Expires lapsed keys and raises the rotation events, for every active tenant, each in its
    /// own tenant transaction. Events are raised once per key (the rows remember it).
    pub async fn sweep_keys(&self, now: DateTime<Utc>) -> Result<KeySweep, StoreError> {
        let mut report = KeySweep::default();
        for tenant in self.swept_tenants().await? {
            let ctx = TenantContext::for_system(tenant.id, "key-sweep");
            let Some(mut tx) = self.begin_sweep(&ctx).await? else {
                continue;
            };
            let policy = api_keys::policy(&mut tx).await?;
            for id in api_keys::expire_lapsed(&mut tx, now).await? {
                record_success(&mut tx, "api_key.expired", id).await?;
                report.expired.push(id);
            }
            let window = chrono::Duration::seconds(i64::from(policy.deadline_warning_seconds));
            for key in api_keys::take_deadline_warnings(&mut tx, now, window).await? {
                let meta = json!({ "grace_until": key.grace_until, "successor": key.successor_id, "last_used_at": key.last_used_at });
                audit::record(
                    &mut tx,
                    "api_key.rotation_deadline_approaching",
                    Some(&key.id.to_string()),
                    Outcome::Success,
                    meta.clone(),
                )
                .await?;
                let alert = json!({ "key_id": key.id, "details": meta });
                webhooks::enqueue_platform_event(&mut tx, "security.key_rotation_deadline", alert)
                    .await?;
                tracing::warn!(target: "bulkhead::audit", action = "api_key.rotation_deadline_approaching", tenant_id = %tenant.id, resource_id = %key.id, "rotated key still in use near its deadline");
                report.deadline_warnings.push(key.id);
            }
            let max_age = chrono::Duration::days(i64::from(policy.max_age_days));
            for id in api_keys::take_age_reminders(&mut tx, now, reminder_age(max_age)).await? {
                audit::record(
                    &mut tx,
                    "api_key.rotation_due",
                    Some(&id.to_string()),
                    Outcome::Success,
                    json!({ "max_age_days": policy.max_age_days }),
                )
                .await?;
                let event = json!({ "key_id": id, "max_age_days": policy.max_age_days });
                webhooks::enqueue_platform_event(&mut tx, "api_key.rotation_due", event).await?;
                report.rotation_due.push(id);
            }
            tx.commit().await?;
        }
        Ok(report)
    }

    /// The retention sweep: for every active tenant this process serves, deletes the webhook
    /// messages older than the retention window whose deliveries are all finished, with their
    /// deliveries and attempts, in batches of their own transactions. The quota counters they
    /// charged (`webhook_messages`, `platform_messages`, `stored_bytes`, `platform_bytes`,
    /// `webhook_attempts`) go down with them. Returns how many messages went.
    pub async fn sweep_webhook_retention(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let before = now - self.webhook_retention;
        let mut purged = 0;
        for tenant in self.swept_tenants().await? {
            let ctx = TenantContext::for_system(tenant.id, "webhook-retention");
            for _ in 0..RETENTION_BATCHES {
                let Some(mut tx) = self.begin_sweep(&ctx).await? else {
                    break;
                };
                let done = webhooks::purge_finished(&mut tx, before, RETENTION_BATCH).await?;
                tx.commit().await?;
                purged += done;
                if done < u64::from(RETENTION_BATCH.unsigned_abs()) {
                    break;
                }
            }
        }
        Ok(purged)
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!("job worker started");
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep += self.sweep_every;
                if let Err(err) = self.sweep_keys(self.clock.now()).await {
                    tracing::warn!(error = %err, "key sweep failed; will retry");
                }
                match self.sweep_webhook_retention(self.clock.now()).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "webhook retention sweep"),
                    Err(err) => {
                        tracing::warn!(error = %err, "webhook retention sweep failed; will retry")
                    }
                }
            }
            let pause = match self.run_once().await {
                Ok(0) => self.idle_poll,
                Ok(_) => Duration::ZERO,
                Err(err) => {
                    tracing::warn!(error = %err, "job claim failed; backing off");
                    self.idle_poll * 4
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("job worker stopped");
    }

    async fn process(&self, job: &ClaimedJob) {
        if job.verdict != ClaimVerdict::Run {
            // Already marked `refused` by the claim; this is the audit record of that decision.
            AuditLine::blocked("job.refused")
                .tenant(job.tenant_id)
                .actor("system:worker")
                .with(Detail::Reason, format_args!("{:?}", job.verdict))
                .with(Detail::Resource, job.id)
                .warn("job refused: its tenant is not active");
            return;
        }
        let ctx = TenantContext::for_system(job.tenant_id, "worker");
        let span = tracing::info_span!("job", tenant_id = %job.tenant_id, job_id = %job.id, kind = %job.kind);
        async {
            if let Err(failure) = self.attempt(&ctx, job).await {
                if let Err(err) = self.record_failure(&ctx, job, failure).await {
                    tracing::error!(error = %err, "could not record the job failure; its lease will expire and it will be retried");
                }
            }
        }
        .instrument(span)
        .await;
    }

    async fn attempt(&self, ctx: &TenantContext, job: &ClaimedJob) -> Result<(), JobFailure> {
        let handler = self
            .handlers
            .get(job.kind.as_str())
            .ok_or_else(|| JobFailure::Permanent(format!("unknown job kind `{}`", job.kind)))?;
        // The claim judged the tenant; it may have been suspended since, while this job waited
        // in the batch. Check again right before running.
        let active = self
            .store
            .tenant_by_id(job.tenant_id)
            .await?
            .is_some_and(|t| t.status == TenantStatus::Active);
        if !active {
            return Err(JobFailure::Permanent(
                "refused: the tenant is no longer active".into(),
            ));
        }
        let mut tx = self.store.begin(ctx, Access::ReadWrite).await?;
        let payload = jobs::payload(&mut tx, job.id).await?;
        handler.run(&mut tx, payload).await?;
        jobs::mark_succeeded(&mut tx, job.id).await?;
        tx.commit().await?;
        tracing::info!("job succeeded");
        Ok(())
    }

    async fn record_failure(
        &self,
        ctx: &TenantContext,
        job: &ClaimedJob,
        failure: JobFailure,
    ) -> Result<(), StoreError> {
        let (message, retry_at) = match failure {
            JobFailure::Retry(msg) if job.attempts < job.max_attempts => {
                let backoff = backoff(job.attempts);
                (msg, Some(self.clock.now() + backoff))
            }
            JobFailure::Retry(msg) | JobFailure::Permanent(msg) => (msg, None),
        };
        tracing::warn!(error = %message, will_retry = retry_at.is_some(), "job attempt failed");
        let mut tx = self.store.begin(ctx, Access::ReadWrite).await?;
        jobs::mark_failed(&mut tx, job.id, &message, retry_at).await?;
        if retry_at.is_none() {
            audit::record(
                &mut tx,
                "job.failed",
                Some(&job.id.to_string()),
                Outcome::Failure,
                json!({ "kind": job.kind }),
            )
            .await?;
        }
        tx.commit().await
    }
}

/// Keys are reminded about a week before their maximum age (half-way for very short ages).
pub fn reminder_age(max_age: chrono::Duration) -> chrono::Duration {
    (max_age - chrono::Duration::days(7)).max(max_age / 2)
}

/// Exponential backoff: 2^attempts seconds, capped at one hour.
fn backoff(attempts: i32) -> chrono::Duration {
    let exponent = attempts.clamp(0, 12) as u32;
    chrono::Duration::seconds(i64::from(2u32.pow(exponent)).min(3600))
}

/// Queues a `session.close` job for the transaction's tenant.
pub async fn enqueue_close_session(
    tx: &mut TenantTx,
    session: SessionId,
) -> Result<JobId, StoreError> {
    jobs::enqueue(tx, "session.close", &json!({ "session_id": session }), None).await
}
