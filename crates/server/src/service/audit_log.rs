//! The server side of the audit log: the log signing key, the bounded queue that persists
//! authentication failures in batches, and the sequencer loop.
//!
//! Authentication failures happen before any tenant transaction exists, so they cannot ride in
//! one. [`AuditService::record_auth_failure`] puts them on a bounded queue without waiting (a
//! flood of bad credentials must not slow the edge or grow memory); a flusher writes them in one
//! transaction per tenant every [`FLUSH_INTERVAL`].
//!
//! Anyone can cause a failure against any tenant (its subdomain and no or a garbage credential),
//! so the queue is built to keep a flood from writing into, or crowding, anyone's log:
//! - failures are **aggregated**: one entry per tenant, action, reason, key, actor and address
//!   bucket (`bulkhead_core::net::address_bucket`: IPv6 per /64) and flush window, written as
//!   one event with its `count`, not one event per request;
//! - free text (the user agent, the reason) is bounded and stripped of control and invisible
//!   characters ([`bulkhead_store::audit::clean_free_text`]) before it is queued;
//! - each tenant gets a **fair share** of the queue: when it is full, a new entry of a tenant
//!   holding fewer entries than the largest holder evicts one of that holder's (max-min
//!   fairness), so a flood against one tenant cannot crowd out another's failure details.
//!
//! Entries dropped or evicted are counted, per tenant and in
//! `bulkhead_audit_auth_failures_dropped_total`; the next flush writes an
//! `audit.auth_failures_dropped` event with the count, so the log says that it lost something and
//! how much. Failures whose tenant is unknown (no subdomain, unknown key) stay `tracing` events
//! only: there is no tenant log to put them in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bulkhead_audit::LogSigningKey;
use bulkhead_core::{ApiKeyId, Clock, RequestId, TenantContext, TenantId};
use bulkhead_store::audit::log::{self as audit_log, Sweep};
use bulkhead_store::audit::{self, NewEvent, Outcome};
use bulkhead_store::{Access, Store, StoreError, TenantTx};
use serde_json::json;
use tokio::sync::watch;

/// Records, in the tenant's transaction, that `action` succeeded on `resource` (an event with
/// no metadata: what a sweep or a revocation leaves).
pub async fn record_success(
    tx: &mut TenantTx,
    action: &str,
    resource: impl std::fmt::Display,
) -> Result<(), StoreError> {
    let resource = resource.to_string();
    audit::record(tx, action, Some(&resource), Outcome::Success, json!({})).await?;
    Ok(())
}

/// Capacity of the authentication-failure queue.
pub const AUTH_FAILURE_QUEUE: usize = 10_000;

/// How often queued authentication failures are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// One refused authentication whose tenant is known.
#[derive(Debug, Clone)]
pub struct AuthFailure {
    /// `auth.failure` (authentication refused) or `auth.forbidden` (authorization refused).
    pub action: &'static str,
    /// The authenticated credential (audit id and type), for authorization refusals.
    pub actor: Option<(String, &'static str)>,
    /// The tenant named by the subdomain or the key.
    pub tenant: TenantId,
    /// The key presented, when it was recognised (never the key text).
    pub key_id: Option<ApiKeyId>,
    /// Why (`NoCredential`, `Revoked`, `TenantMismatch`, `TenantSuspended`, …).
    pub reason: String,
    /// `failure`, or `blocked` for a suspended tenant.
    pub outcome: Outcome,
    /// Client address.
    pub ip_address: Option<IpAddr>,
    /// Client `User-Agent`.
    pub user_agent: Option<String>,
    /// The request.
    pub request_id: RequestId,
}

/// What makes two failures the same entry of the queue (within one flush window).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    action: &'static str,
    reason: String,
    outcome: &'static str,
    key_id: Option<ApiKeyId>,
    actor: Option<(String, &'static str)>,
    bucket: Option<IpAddr>,
}

impl GroupKey {
    fn of(failure: &AuthFailure) -> Self {
        Self {
            action: failure.action,
            reason: failure.reason.clone(),
            outcome: failure.outcome.as_str(),
            key_id: failure.key_id,
            actor: failure.actor.clone(),
            bucket: failure.ip_address.map(bulkhead_core::net::address_bucket),
        }
    }
}

/// One queued entry: the first failure of its group and how many there were.
#[derive(Debug)]
struct Group {
    first: AuthFailure,
    count: u64,
}

/// The queue: entries per tenant, their total, and what was dropped per tenant.
#[derive(Debug, Default)]
struct Pending {
    tenants: HashMap<TenantId, HashMap<GroupKey, Group>>,
    total: usize,
    dropped: HashMap<TenantId, u64>,
}

impl Pending {
    fn drop_one(&mut self, tenant: TenantId, count: u64) {
        metrics::counter!("bulkhead_audit_auth_failures_dropped_total").increment(count);
        *self.dropped.entry(tenant).or_default() += count;
    }

    /// Makes room for one entry of `tenant` in a full queue by evicting one entry of the tenant
    /// holding the most, if that tenant holds more than `tenant` would after the insert.
    fn evict_for(&mut self, tenant: TenantId) -> bool {
        let mine = self.tenants.get(&tenant).map_or(0, HashMap::len);
        let Some((largest, held)) = self
            .tenants
            .iter()
            .map(|(t, groups)| (*t, groups.len()))
            .max_by_key(|(_, n)| *n)
        else {
            return false;
        };
        if largest == tenant || held <= mine + 1 {
            return false;
        }
        let evicted = self.tenants.get_mut(&largest).and_then(|groups| {
            let key = groups.keys().next().cloned()?;
            groups.remove(&key)
        });
        match evicted {
            Some(group) => {
                self.total -= 1;
                self.drop_one(largest, group.count);
                true
            }
            None => false,
        }
    }
}

/// Longest reason kept, in bytes.
const MAX_REASON_BYTES: usize = 200;

/// Log key and failure queue; one per server process. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct AuditService {
    key: LogSigningKey,
    capacity: usize,
    pending: Mutex<Pending>,
}

impl AuditService {
    /// A service signing with `key`.
    pub fn new(key: LogSigningKey) -> Self {
        Self::with_capacity(key, AUTH_FAILURE_QUEUE)
    }

    /// With a queue of `capacity` entries (tests of overflow).
    pub fn with_capacity(key: LogSigningKey, capacity: usize) -> Self {
        Self {
            key,
            capacity: capacity.max(1),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// The log signing key.
    pub fn key(&self) -> &LogSigningKey {
        &self.key
    }

    /// Queues a failure without waiting: counted into its group if one is queued, else a new
    /// entry within the tenant's fair share; counted as dropped otherwise.
    pub fn record_auth_failure(&self, mut failure: AuthFailure) {
        failure.user_agent = failure
            .user_agent
            .as_deref()
            .map(|ua| audit::clean_free_text(ua, audit::MAX_USER_AGENT_BYTES))
            .filter(|ua| !ua.is_empty());
        failure.reason = audit::clean_free_text(&failure.reason, MAX_REASON_BYTES);
        let tenant = failure.tenant;
        let key = GroupKey::of(&failure);
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if let Some(group) = pending
            .tenants
            .get_mut(&tenant)
            .and_then(|groups| groups.get_mut(&key))
        {
            group.count += 1;
            return;
        }
        if pending.total >= self.capacity && !pending.evict_for(tenant) {
            pending.drop_one(tenant, 1);
            return;
        }
        pending.total += 1;
        pending.tenants.entry(tenant).or_default().insert(
            key,
            Group {
                first: failure,
                count: 1,
            },
        );
    }

    /// Writes every queued entry (and the dropped counts), one transaction per tenant. Returns
    /// how many events were written. Failures of a tenant whose write fails are lost and logged.
    pub async fn flush_auth_failures(&self, store: &Store) -> usize {
        let Pending {
            tenants, dropped, ..
        } = self
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        let mut batch: HashMap<TenantId, Vec<Group>> = tenants
            .into_iter()
            .map(|(tenant, groups)| (tenant, groups.into_values().collect()))
            .collect();
        for tenant in dropped.keys() {
            batch.entry(*tenant).or_default();
        }
        let mut written = 0;
        for (tenant, failures) in batch {
            let lost = dropped.get(&tenant).copied().unwrap_or(0);
            match write_failures(store, tenant, &failures, lost).await {
                Ok(n) => written += n,
                Err(err) => tracing::error!(
                    target: "bulkhead::audit",
                    tenant_id = %tenant,
                    lost = failures.iter().map(|g| g.count).sum::<u64>() + lost,
                    error = %err,
                    "could not persist authentication failures"
                ),
            }
        }
        written
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `shutdown` turns true, then once more.
    pub async fn run_flusher(self: Arc<Self>, store: Store, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
                _ = shutdown.changed() => {}
            }
            self.flush_auth_failures(&store).await;
            if *shutdown.borrow() {
                break;
            }
        }
    }
}

async fn write_failures(
    store: &Store,
    tenant: TenantId,
    failures: &[Group],
    lost: u64,
) -> Result<usize, StoreError> {
    let ctx = TenantContext::for_system(tenant, "auth-audit");
    let mut tx = store.begin(&ctx, Access::ReadWrite).await?;
    for Group { first: f, count } in failures {
        let key_id = f.key_id.map(|k| k.to_string());
        let (actor_id, actor_type) = match &f.actor {
            Some((id, kind)) => (id.as_str(), *kind),
            None => match key_id.as_deref() {
                Some(key) => (key, "api_key"),
                None => ("anonymous", "anonymous"),
            },
        };
        let event = NewEvent {
            actor_id: Some(actor_id),
            actor_type: Some(actor_type),
            ip_address: f.ip_address,
            user_agent: f.user_agent.as_deref(),
            request_id: Some(f.request_id.to_string()),
            // `count` failures of this kind from this address bucket in this window: one event.
            metadata: json!({ "reason": f.reason, "count": count }),
            ..NewEvent::new(f.action, f.outcome)
        };
        audit::record_event(&mut tx, &event).await?;
    }
    if lost > 0 {
        audit::record_event(
            &mut tx,
            &NewEvent {
                metadata: json!({ "dropped": lost }),
                ..NewEvent::new("audit.auth_failures_dropped", Outcome::Failure)
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(failures.len() + usize::from(lost > 0))
}

tokio::task_local! {
    /// The request's client details, for the authentication-failure events of request resolution.
    pub static AUTH_AUDIT: AuthAuditScope;
}

/// What resolution knows about the request when a failure is recorded.
#[derive(Debug, Clone)]
pub struct AuthAuditScope {
    /// Where failures go.
    pub service: Arc<AuditService>,
    /// Client address.
    pub ip_address: Option<IpAddr>,
    /// Client `User-Agent`.
    pub user_agent: Option<String>,
    /// The request.
    pub request_id: RequestId,
}

/// Records a failure for `tenant` in the current request's scope (no-op outside one, or without
/// a tenant: there is no tenant log to write to).
pub fn auth_failure_in_scope(
    tenant: Option<TenantId>,
    key_id: Option<ApiKeyId>,
    reason: String,
    outcome: Outcome,
) {
    let Some(tenant) = tenant else { return };
    let _ = AUTH_AUDIT.try_with(|scope| {
        scope.service.record_auth_failure(AuthFailure {
            action: "auth.failure",
            actor: None,
            tenant,
            key_id,
            reason,
            outcome,
            ip_address: scope.ip_address,
            user_agent: scope.user_agent.clone(),
            request_id: scope.request_id,
        });
    });
}

/// Records an authorization refusal (a 403) of the request in scope in the tenant's log, through
/// the same bounded queue as authentication failures (a flood of forbidden requests must not
/// slow the handlers either).
pub fn forbidden_in_scope(ctx: &TenantContext, reason: String) {
    let _ = AUTH_AUDIT.try_with(|scope| {
        scope.service.record_auth_failure(AuthFailure {
            action: "auth.forbidden",
            actor: Some((ctx.actor().audit_id(), ctx.actor().audit_type())),
            tenant: ctx.tenant_id(),
            key_id: None,
            reason,
            outcome: Outcome::Blocked,
            ip_address: scope.ip_address,
            user_agent: scope.user_agent.clone(),
            request_id: scope.request_id,
        });
    });
}

/// What one sequencer pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SequencerRun {
    /// Events appended, all tenants.
    pub appended: u64,
    /// Checkpoints signed.
    pub checkpoints: u64,
}

/// Appends every tenant's new events to its tree and signs checkpoints. It reads the tenant list
/// from the registry and works inside each tenant's own transaction (see
/// [`bulkhead_store::audit::log`]); two sequencers may run at once (per-tenant advisory lock).
#[derive(Debug, Clone)]
pub struct Sequencer {
    store: Store,
    key: LogSigningKey,
    clock: Clock,
    /// Pause between passes.
    pub interval: Duration,
    /// How often a tenant whose tree grew gets a new checkpoint.
    pub checkpoint_every: Duration,
    /// How often a pass scans every event for stragglers.
    pub full_sweep_every: Duration,
    /// Tenants sequenced at once in a pass (each holds one connection).
    pub parallelism: usize,
}

impl Sequencer {
    /// A sequencer with the default intervals (1 s, 60 s, 10 min), 4 tenants at a time.
    pub fn new(store: Store, key: LogSigningKey) -> Self {
        Self {
            store,
            key,
            clock: Clock::system(),
            interval: Duration::from_secs(1),
            checkpoint_every: Duration::from_secs(60),
            full_sweep_every: Duration::from_secs(600),
            parallelism: 4,
        }
    }

    /// One pass over every tenant. With `checkpoint`, signs a checkpoint for each tenant whose
    /// tree grew since its last one (or that has none). A tenant that fails is logged and skipped;
    /// the pass goes on and then returns the first error.
    pub async fn run_once(
        &self,
        sweep: Sweep,
        checkpoint: bool,
    ) -> Result<SequencerRun, StoreError> {
        let tenants = self.every_tenant().await?;
        self.run_for(tenants, sweep, checkpoint, &mut Vec::new())
            .await
    }

    async fn every_tenant(&self) -> Result<Vec<TenantId>, StoreError> {
        Ok(self
            .store
            .list_tenants()
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect())
    }

    /// One pass over `tenants`, as [`Sequencer::run_once`]; the tenants that failed are added
    /// to `failed`.
    async fn run_for(
        &self,
        tenants: Vec<TenantId>,
        sweep: Sweep,
        checkpoint: bool,
        failed: &mut Vec<TenantId>,
    ) -> Result<SequencerRun, StoreError> {
        use futures::StreamExt as _;
        let mut run = SequencerRun::default();
        let mut first_error = None;
        // Tenants are independent (each its own transaction and lock): a few at a time.
        let mut results = futures::stream::iter(tenants)
            .map(|tenant| async move {
                (
                    tenant,
                    self.sequence_tenant(tenant, sweep, checkpoint).await,
                )
            })
            .buffer_unordered(self.parallelism.max(1));
        while let Some((tenant, result)) = results.next().await {
            // One tenant's failure must not hold up the others' logs.
            match result {
                Ok((appended, signed)) => {
                    run.appended += appended;
                    run.checkpoints += u64::from(signed);
                }
                Err(err) => {
                    tracing::warn!(tenant_id = %tenant, error = %err, "audit sequencing failed for a tenant");
                    failed.push(tenant);
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            None => Ok(run),
            Some(err) => Err(err),
        }
    }

    /// Sequences one tenant and, with `checkpoint`, signs if its tree grew.
    pub async fn sequence_tenant(
        &self,
        tenant: TenantId,
        sweep: Sweep,
        checkpoint: bool,
    ) -> Result<(u64, bool), StoreError> {
        let ctx = TenantContext::for_system(tenant, "audit-sequencer");
        let mut tx = self.store.begin(&ctx, Access::ReadWrite).await?;
        let appended = audit_log::sequence(&mut tx, sweep).await?;
        let mut signed = false;
        if checkpoint {
            let size = audit_log::tree_size(&mut tx).await?;
            if audit_log::checkpointed_size(&mut tx).await? != Some(size) {
                audit_log::sign_checkpoint(&mut tx, &self.key, self.clock.now()).await?;
                signed = true;
            }
        }
        tx.commit().await?;
        Ok((appended, signed))
    }

    /// Runs until `shutdown` turns true. A pass every `interval` visits the tenants whose
    /// transactions through this process's store committed audit events since the last pass
    /// ([`Store::take_audited_tenants`]); every `checkpoint_every` a pass visits every tenant
    /// (events other processes wrote: the CLI, another server) and signs a checkpoint where a
    /// tree grew; every `full_sweep_every` (and first) a full sweep of every tenant. Visiting
    /// every tenant every second cost a transaction per tenant and pass, written or not: with
    /// 302 idle tenants 38-40 % of a core (issue 25). An announcement through the database
    /// (NOTIFY) was tried and dropped: PostgreSQL serializes the commits of every notifying
    /// transaction in the cluster, and nearly every write audits.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!("audit sequencer started");
        let start = tokio::time::Instant::now();
        let mut next_everyone = start + self.checkpoint_every;
        let mut next_full = start;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = tokio::time::Instant::now();
            let full = now >= next_full;
            if full {
                next_full = now + self.full_sweep_every;
                next_everyone = now + self.checkpoint_every;
            }
            let everyone = full || now >= next_everyone;
            if everyone && !full {
                next_everyone = now + self.checkpoint_every;
            }
            let announced = self.store.take_audited_tenants();
            let sweep = if full { Sweep::Full } else { Sweep::Recent };
            let mut failed = Vec::new();
            let outcome = if everyone {
                match self.every_tenant().await {
                    Ok(tenants) => self.run_for(tenants, sweep, true, &mut failed).await,
                    Err(err) => {
                        // Visited at the next pass instead.
                        self.store.return_audited_tenants(announced);
                        next_everyone = now;
                        Err(err)
                    }
                }
            } else {
                self.run_for(announced.into_iter().collect(), sweep, false, &mut failed)
                    .await
            };
            match outcome {
                Ok(run) if run.appended > 0 => {
                    metrics::counter!("bulkhead_audit_events_sequenced_total")
                        .increment(run.appended);
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "audit sequencing failed; will retry");
                    // Only the tenants that failed are visited again at the next pass: one
                    // database that stays unreachable must not bring back a pass over every
                    // tenant every second.
                    self.store.return_audited_tenants(failed);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("audit sequencer stopped");
    }
}

/// The log signing key: `BULKHEAD_AUDIT_LOG_KEY` (`base64:` + 32-byte seed), or in embedded mode
/// a key generated once into `<data-dir>/audit-log-key` (0600). With an external database and no
/// key, refuse to start: a key generated per machine would make checkpoints of one server
/// unverifiable under the key another publishes.
pub fn load_log_key(data_dir: &Path, external_database: bool) -> anyhow::Result<LogSigningKey> {
    if let Some(text) = crate::config::environment::Secret::AuditLogKey.read() {
        return LogSigningKey::from_config_str(&text)
            .map_err(|e| anyhow::anyhow!("BULKHEAD_AUDIT_LOG_KEY is unusable: {e}"));
    }
    if external_database {
        anyhow::bail!(
            "BULKHEAD_AUDIT_LOG_KEY is not set: with DATABASE_URL, set it to `base64:` and 32 \
             random bytes (for example the output of `openssl rand -base64 32`)"
        );
    }
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("audit-log-key");
    match std::fs::read_to_string(&path) {
        Ok(text) => LogSigningKey::from_config_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is unusable: {e}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = LogSigningKey::generate();
            crate::service::database::write_new_secret(&path, &key.to_config_string())?;
            tracing::info!(path = %path.display(), key_id = key.public().key_id(), "generated the audit log key");
            Ok(key)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Leaves `[from, to)` of an export snapshot as NDJSON lines of [`bulkhead_audit::export::ExportLine`]s (the format
/// `bulkhead audit verify` reads), for `GET /v1/audit/export` and tenant export archives.
pub async fn export_lines(
    snapshot: &mut audit::pages::ExportSnapshot,
    from: u64,
    to: u64,
) -> anyhow::Result<Vec<u8>> {
    let items = snapshot.page(from, to).await?;
    if items.len() as u64 != to - from {
        anyhow::bail!("leaves {from}..{to} are incomplete");
    }
    let mut out = Vec::with_capacity(items.len() * 600);
    for item in items {
        let line = match item {
            audit::pages::ExportItem::Event {
                leaf_index,
                leaf_hash,
                event,
            } => bulkhead_audit::export::ExportLine::Event {
                leaf_index,
                leaf_hash,
                event,
            },
            audit::pages::ExportItem::Purged {
                leaf_index,
                leaf_hash,
                event_id,
            } => bulkhead_audit::export::ExportLine::Purged {
                leaf_index,
                leaf_hash,
                event_id: event_id.to_string(),
            },
        };
        serde_json::to_writer(&mut out, &line)?;
        out.push(b'\n');
    }
    Ok(out)
}
