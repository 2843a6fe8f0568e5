//! The tenant transaction door: the only way to reach tenant tables.

use std::fmt;

use std::sync::Arc;

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tracing::Instrument;

use crate::cluster::pg_roles;
use crate::placement::entry::{begin_statement, EnteredTx};
use crate::placement::location::{location_from_columns, Location, PoolRole, Router, Topology};
use crate::StoreError;

/// Whether a tenant transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `READ ONLY`: used for GET requests; the database refuses any write.
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

/// The door through which tenant data is reached, and the router behind it: one registry
/// database, the regions this process serves, and lazily opened dedicated databases. Cheap to
/// clone.
#[derive(Clone)]
pub struct Store {
    router: Arc<Router>,
    // Connections in use per tenant (crate::placement::gate).
    gate: Arc<crate::placement::gate::TenantGate>,
    // Tenants whose transactions through this store committed audit events since the sequencer
    // last took them ([`Store::take_audited_tenants`]).
    audited: AuditedTenants,
    // Wakes dispatchers after commits that made webhook deliveries due (crate::placement::wake).
    wakeups: Arc<crate::placement::wake::DueWakeups>,
    // Tenants' opened data keys (crate::placement::key_cache).
    data_keys: Arc<crate::placement::key_cache::DataKeyCache>,
}

/// The tenants of committed transactions that wrote audit events, shared by a store's clones.
type AuditedTenants = Arc<std::sync::Mutex<std::collections::HashSet<TenantId>>>;

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("connections", &self.router.topology.registry.size())
            .field("topology", &self.router.topology)
            .field("tenant_connection_cap", &self.gate.cap())
            .finish()
    }
}

// The context is set, any session-level leftover cleared, search_path pinned to the tenant's
// schema, and the location confirmed by the tenant's row there, in one round trip. Left-to-right
// evaluation of the select list makes the session-level reset happen before the local value is
// set. `{schema}` is a validated identifier (location::SchemaName or "bulkhead"), never input.
//
// Also transaction-local: `statement_timeout` from the task's route class ($3; NULL keeps the
// database's setting), and, in read-only transactions, custom plans, so that a list's optional
// filters (`$4::text IS NULL OR state = $4`) are planned with their values and use their indexes
// instead of a generic plan that can use none. Lists are read-only; writing transactions run
// statements keyed by ids and keep PostgreSQL's own choice (`auto`: a plan kept for the session
// only where it is estimated no worse than one made with the values). Forcing custom plans there
// planned every statement of every publish and every recorded delivery, and every foreign-key
// check they made, on each execution (issue 25: 14 % of the core `serve` and PostgreSQL share
// in the webhook_serve benchmark's publishing phase, by `pg_stat_statements`).
//
// Used by the callers that open their transaction themselves (onboarding, moves, a purge);
// [`Store::begin`] sends the same work as `tenant_enter` inside its `BEGIN` ([`begin_statement`]).
fn enter_statement(schema: &str, access: Access) -> String {
    let read_only = match access {
        Access::ReadOnly => {
            ", set_config('transaction_read_only', 'on', true), \
             set_config('plan_cache_mode', 'force_custom_plan', true)"
        }
        Access::ReadWrite => "",
    };
    let lock = match access {
        // Held until the transaction ends: a freeze (an UPDATE of this row) waits for it.
        Access::ReadWrite => " FOR SHARE OF t",
        Access::ReadOnly => "",
    };
    format!(
        "WITH ctx AS (SELECT set_config('bulkhead.tenant_id', '', false), \
         set_config('bulkhead.tenant_id', $1, true), \
         set_config('search_path', $2, true), \
         set_config('statement_timeout', COALESCE($3, current_setting('statement_timeout')), true){read_only}) \
         SELECT t.isolation_tier, t.schema_name, t.database_name, t.region, \
         t.frozen_since IS NOT NULL, t.live FROM ctx, \"{schema}\".tenants t \
         WHERE t.id = $1::uuid{lock}"
    )
}

/// A tenant's row where a transaction opened: tier, schema, database, region, frozen, live.
type AnchorRow = (String, Option<String>, Option<String>, String, bool, bool);

impl Store {
    /// Connects the serving pool and checks that the connected role really is subject to RLS
    /// (not superuser, no BYPASSRLS, owns nothing). Refuses to return a store otherwise. One
    /// database, serving the `default` region; see [`Store::with_topology`] for more.
    pub async fn connect_app(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await?;
        pg_roles::verify_app_role(&pool).await?;
        Ok(Self::with_topology(Topology::single(pool, PoolRole::App)))
    }

    /// Wraps a pool without checking its role, as the owner. For operator commands (which also
    /// go through the door and are also subject to FORCE RLS) and for tests that need a pool of
    /// a particular size.
    pub fn from_pool_unchecked(pool: PgPool) -> Self {
        Self::with_topology(Topology::single(pool, PoolRole::Owner))
    }

    /// A store over a whole topology. The pools' roles are the caller's to check
    /// ([`pg_roles::verify_app_role`] for serving pools).
    pub fn with_topology(topology: Topology) -> Self {
        let cap = crate::placement::gate::TenantGate::default_cap(
            topology.registry.options().get_max_connections(),
        );
        let wait = topology.registry.options().get_acquire_timeout();
        let wakeups = Arc::new(crate::placement::wake::DueWakeups::new(
            topology.registry.clone(),
        ));
        Self {
            router: Arc::new(Router::new(topology)),
            gate: Arc::new(crate::placement::gate::TenantGate::new(cap, wait)),
            audited: AuditedTenants::default(),
            wakeups,
            data_keys: Arc::default(),
        }
    }

    /// Changes after every commit through this store (and its clones) that made webhook
    /// deliveries due: the in-process wake-up of a dispatcher sharing the store. Other
    /// processes' commits arrive by `NOTIFY` ([`Store::listen_webhook_due`]).
    pub fn webhook_due_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wakeups.subscribe()
    }

    /// Takes the tenants whose transactions through this store (and its clones) committed audit
    /// events since the last call. The audit sequencer visits them instead of every tenant; a
    /// process that writes events sequences them itself, and events written by other processes
    /// wait for its periodic pass over every tenant.
    pub fn take_audited_tenants(&self) -> std::collections::HashSet<TenantId> {
        std::mem::take(&mut *self.audited.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts tenants back for the next [`Store::take_audited_tenants`] (a pass that failed on
    /// them).
    pub fn return_audited_tenants(&self, tenants: impl IntoIterator<Item = TenantId>) {
        self.audited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tenants);
    }

    /// The same store with another cap on transactions one tenant may hold open at once.
    pub fn with_tenant_connection_cap(self, cap: usize) -> Self {
        let wait = self
            .router
            .topology
            .registry
            .options()
            .get_acquire_timeout();
        Self {
            gate: Arc::new(crate::placement::gate::TenantGate::new(cap, wait)),
            ..self
        }
    }

    /// Transactions one tenant may hold open at once.
    pub fn tenant_connection_cap(&self) -> usize {
        self.gate.cap()
    }

    /// Transactions `tenant` holds open now.
    pub fn tenant_connections_in_use(&self, tenant: TenantId) -> usize {
        self.gate.in_use(tenant)
    }

    /// The same databases with another topology setting (a master key, further regions): the
    /// new store has its own caches.
    pub fn reconfigured(&self, change: impl FnOnce(&mut Topology)) -> Self {
        let mut topology = self.router.topology.clone();
        change(&mut topology);
        Self::with_topology(topology)
    }

    /// The topology this store routes over.
    pub fn topology(&self) -> &Topology {
        &self.router.topology
    }

    /// Opens one transaction for the context's tenant, in the tenant's location. Every statement
    /// run through the returned handle sees only that tenant's rows, and can write only that
    /// tenant's rows. Refused when the tenant is not in the registry ([`StoreError::NotFound`]),
    /// lives in a region this process does not serve ([`StoreError::WrongRegion`]), or is frozen
    /// for a move and `access` is read-write ([`StoreError::TenantMoving`]).
    pub async fn begin(&self, ctx: &TenantContext, access: Access) -> Result<TenantTx, StoreError> {
        self.begin_with(ctx, access, false).await
    }

    /// Like [`Store::begin`] read-only, in one `REPEATABLE READ` snapshot: every statement of
    /// the transaction sees the tenant's rows as they were at its first one. For readers that
    /// must see several statements' worth of rows consistently (an audit export).
    pub async fn begin_snapshot(&self, ctx: &TenantContext) -> Result<TenantTx, StoreError> {
        self.begin_with(ctx, Access::ReadOnly, true).await
    }

    async fn begin_with(
        &self,
        ctx: &TenantContext,
        access: Access,
        snapshot: bool,
    ) -> Result<TenantTx, StoreError> {
        let span = tracing::debug_span!("tenant_tx", tenant_id = %ctx.tenant_id(), ?access);
        async {
            let tenant = ctx.tenant_id();
            // Before any connection is taken: a tenant at its cap waits behind itself.
            let permit = self.gate.enter(tenant).await?;
            let mut fresh = false;
            let mut location = match self.router.cached(tenant) {
                Some(location) => location,
                None => {
                    fresh = true;
                    self.router.fetch_location(tenant).await?
                }
            };
            loop {
                if !self.router.serves(&location.region) {
                    return Err(StoreError::WrongRegion(location.region));
                }
                let pool = self
                    .router
                    .pool_for_transaction(&location, permit.is_heavy())
                    .await?;
                let statement = begin_statement(
                    ctx,
                    access == Access::ReadWrite,
                    snapshot,
                    &location,
                    crate::placement::gate::statement_timeout().as_deref(),
                );
                let opened = match EnteredTx::begin(pool.clone(), statement).await {
                    Ok(Some(entered)) => Ok(TenantTx::entered(
                        OpenTx::Entered(entered),
                        ctx,
                        access,
                        &location,
                    )),
                    // A location without `tenant_enter` (migration 0047 not applied there yet):
                    // the two-statement entry that onboarding and moves use.
                    Ok(None) => {
                        let mut tx = pool.begin().await?;
                        if snapshot {
                            // Before the first statement, which takes the snapshot.
                            sqlx::query(
                                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                            )
                            .execute(&mut *tx)
                            .await?;
                        }
                        TenantTx::enter_with(tx, ctx, access, &location, false).await
                    }
                    Err(err) => Err(err),
                };
                match opened {
                    Err(StoreError::LocationMismatch) if !fresh => {
                        self.router.forget(tenant);
                        fresh = true;
                        location = self.router.fetch_location(tenant).await?;
                    }
                    // The registry and the location disagree even freshly read: a move is
                    // between its two switch writes. Retryable.
                    Err(StoreError::LocationMismatch) => {
                        self.router.forget(tenant);
                        return Err(StoreError::TenantMoving);
                    }
                    Ok(mut tx) => {
                        tx.gate = Some(permit);
                        tx.audited_tenants = Some(self.audited.clone());
                        tx.wakeups = Some(self.wakeups.clone());
                        tx.data_keys = Some(self.data_keys.clone());
                        tx.registry = Some(self.router.topology.registry.clone());
                        tx.forward = !self.router.shares_registry_database(&location);
                        return Ok(tx);
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The tenant's location as the registry says now.
    pub async fn location_of(&self, tenant: TenantId) -> Result<Location, StoreError> {
        self.router.fetch_location(tenant).await
    }

    /// Whether this process serves `region`.
    pub fn serves_region(&self, region: &str) -> bool {
        self.router.serves(region)
    }

    /// How many dedicated-database pools are open now.
    pub fn open_dedicated_pools(&self) -> usize {
        self.router.open_dedicated_pools()
    }

    /// Readiness: the database answers and every compiled-in migration has been applied.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        crate::placement::migrate::is_current(&mut conn).await
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.pool().close().await;
        for (_, pool) in &self.router.topology.regions {
            pool.close().await;
        }
        if let Some(pool) = &self.router.topology.heavy_reads {
            pool.close().await;
        }
    }

    /// The registry pool, for control-plane statements inside this crate. Tenant tables are
    /// invisible to it without a context (RLS), but nothing outside this crate should need it.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.router.topology.registry
    }

    /// Drops a tenant's opened data key from this store's (and its clones') memory: its purge,
    /// here or announced by another process.
    pub fn forget_data_key(&self, tenant: TenantId) {
        self.data_keys.forget(tenant);
    }

    /// Drops every opened data key (a listener that may have missed a purge).
    pub fn forget_all_data_keys(&self) {
        self.data_keys.forget_all();
    }

    pub(crate) fn router(&self) -> &Router {
        &self.router
    }
}

pub use crate::placement::wake::WEBHOOK_DUE_CHANNEL;

/// One open transaction for one tenant. Dropping it without [`TenantTx::commit`] rolls back.
pub struct TenantTx {
    tx: OpenTx,
    tenant: TenantId,
    actor: Actor,
    request_id: RequestId,
    location: Location,
    // The registry database: key routes of tenants outside the shared tier are written there,
    // and, when it is not this transaction's database (`forward`), notifications are forwarded
    // there after commit (every process listens there). None inside onboarding's registry tx.
    pub(crate) registry: Option<PgPool>,
    // Set when this transaction inserts audit events; on commit its tenant joins the store's
    // `audited` set (None outside [`Store::begin`]: those events wait for the periodic pass).
    audited: bool,
    audited_tenants: Option<AuditedTenants>,
    forward: bool,
    forwarded: Vec<(&'static str, String)>,
    // Whether the due trigger was asked not to notify (enter_statement), whether this
    // transaction made deliveries due ([`TenantTx::mark_webhook_due`]), and who to tell after
    // the commit (None outside [`Store::begin`]: then `NOTIFY` inside the transaction).
    wake_after_commit: bool,
    webhook_due: bool,
    // A `READ ONLY` transaction that has sent no notification: the database refuses every
    // write, so its commit has nothing to make durable or to send.
    nothing_to_commit: bool,
    wakeups: Option<Arc<crate::placement::wake::DueWakeups>>,
    // The tenant's connection permit (crate::placement::gate), released when the transaction ends.
    gate: Option<crate::placement::gate::GatePermit>,
    // The store's memory of opened data keys (None outside [`Store::begin`]: fetched each time).
    pub(crate) data_keys: Option<Arc<crate::placement::key_cache::DataKeyCache>>,
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl TenantTx {
    /// Sets the tenant context inside an already open transaction and confirms that the
    /// transaction's database holds the tenant at `location` ([`crate::placement::location`]).
    /// Crate-private: the callers are [`Store::begin`], tenant onboarding (which writes the
    /// registry row and the tenant's first rows in one transaction) and moves.
    pub(crate) async fn enter(
        tx: Transaction<'static, Postgres>,
        ctx: &TenantContext,
        access: Access,
        location: &Location,
    ) -> Result<TenantTx, StoreError> {
        Self::enter_with(tx, ctx, access, location, false).await
    }

    /// [`TenantTx::enter`] for writing while the tenant is frozen: only a purge, which freezes
    /// the tenant so that nothing else writes, then signs its log's last checkpoint.
    pub(crate) async fn enter_frozen(
        tx: Transaction<'static, Postgres>,
        ctx: &TenantContext,
        location: &Location,
    ) -> Result<TenantTx, StoreError> {
        Self::enter_with(tx, ctx, Access::ReadWrite, location, true).await
    }

    /// [`TenantTx::enter`] and [`TenantTx::enter_frozen`].
    async fn enter_with(
        mut tx: Transaction<'static, Postgres>,
        ctx: &TenantContext,
        access: Access,
        location: &Location,
        frozen_ok: bool,
    ) -> Result<TenantTx, StoreError> {
        let schema = location.placement.schema();
        let statement = enter_statement(schema, access);
        let row: Option<AnchorRow> = match sqlx::query_as(&statement)
            .bind(ctx.tenant_id().uuid().to_string())
            // pg_temp last: a temporary table can never shadow a tenant table.
            .bind(format!("\"{schema}\", pg_temp"))
            .bind(crate::placement::gate::statement_timeout())
            .fetch_optional(&mut *tx)
            .await
        {
            Ok(row) => row,
            // The schema is gone (a move removed the old copy after its switch): a stale route.
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("42P01") | Some("3F000")) =>
            {
                return Err(StoreError::LocationMismatch)
            }
            Err(err) => return Err(err.into()),
        };
        let Some((tier, schema_name, database_name, region, frozen, live)) = row else {
            return Err(StoreError::LocationMismatch);
        };
        if !live {
            return Err(StoreError::LocationMismatch);
        }
        let here = location_from_columns(
            &tier,
            schema_name.as_deref(),
            database_name.as_deref(),
            region,
        )?;
        if &here != location {
            return Err(StoreError::LocationMismatch);
        }
        if frozen && access == Access::ReadWrite && !frozen_ok {
            return Err(StoreError::TenantMoving);
        }
        Ok(TenantTx::entered(OpenTx::Begun(tx), ctx, access, location))
    }

    fn entered(tx: OpenTx, ctx: &TenantContext, access: Access, location: &Location) -> TenantTx {
        // Both follow from how the transaction was entered. `tenant_enter` asks the due trigger
        // to leave waking to the store; the older entry does not. Only a transaction `READ ONLY`
        // from its `BEGIN` has nothing to commit: one entered read-only later (the older entry
        // sets `transaction_read_only` in its first statement) might have written before.
        let entered_in_begin = matches!(tx, OpenTx::Entered(_));
        let wake_after_commit = entered_in_begin && access == Access::ReadWrite;
        let nothing_to_commit = entered_in_begin && access == Access::ReadOnly;
        TenantTx {
            tx,
            tenant: ctx.tenant_id(),
            actor: ctx.actor().clone(),
            request_id: ctx.request_id(),
            location: location.clone(),
            registry: None,
            audited: false,
            audited_tenants: None,
            forward: false,
            forwarded: Vec::new(),
            wake_after_commit,
            webhook_due: false,
            nothing_to_commit,
            wakeups: None,
            gate: None,
            data_keys: None,
        }
    }

    /// Where this transaction's tenant lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Sends `NOTIFY channel, payload` at commit, to the listeners of the registry database
    /// (where every process listens) wherever this tenant's rows live.
    pub async fn notify(
        &mut self,
        channel: &'static str,
        payload: String,
    ) -> Result<(), StoreError> {
        self.nothing_to_commit = false;
        if self.forward {
            self.forwarded.push((channel, payload));
        } else {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    /// Notes that this transaction inserted audit events: on commit the store tells the audit
    /// sequencer of this process ([`Store::take_audited_tenants`]).
    pub(crate) fn mark_audited(&mut self) {
        self.audited = true;
    }

    /// Notes that this transaction made webhook deliveries due (inserted them, or made them
    /// pending and due now): the dispatchers are woken when it commits. Every repository
    /// function that can fire the due trigger (migrations 0012, 0021, 0030) calls it; debug
    /// builds check at commit that none forgot.
    pub(crate) fn mark_webhook_due(&mut self) {
        self.webhook_due = true;
    }

    /// The tenant this transaction is for; queries also filter on it explicitly.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// Who acts in this transaction (for audit events).
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The request or job run this transaction belongs to.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The registry's pool when this transaction runs in another database (a dedicated one,
    /// another region's); `None` when its own connection reaches the registry's tables.
    pub(crate) fn registry_elsewhere(&self) -> Option<PgPool> {
        if self.forward {
            self.registry.clone()
        } else {
            None
        }
    }

    /// The connection, already inside the tenant's context. Statements run here are subject to
    /// RLS for this tenant; still filter on [`TenantTx::tenant_id`] explicitly in every query.
    pub fn conn(&mut self) -> &mut PgConnection {
        match &mut self.tx {
            OpenTx::Begun(tx) => tx,
            OpenTx::Entered(entered) => entered.conn(),
        }
    }

    /// Commits the transaction.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if self.nothing_to_commit {
            // Nothing to commit: the transaction could write nothing, so ending it either way
            // is the same to the database. Dropping it queues the ROLLBACK, which the pool sends
            // with the check it makes of every returned connection, in one round trip and off
            // the request's path; a COMMIT here would be a round trip of its own, waited for.
            drop(self);
            return Ok(());
        }
        let forwarding = self.forward && self.registry.is_some();
        // Outside the registry's database the trigger's `NOTIFY` (if it sent one) reaches no
        // worker, so the mark it leaves is read here, as before; debug builds read it for every
        // writing transaction whose trigger was told not to notify, to catch an unmarked path.
        let check =
            forwarding || (cfg!(debug_assertions) && self.wake_after_commit && !self.webhook_due);
        if check {
            let due: Option<String> =
                sqlx::query_scalar("SELECT current_setting('bulkhead.webhook_due', true)")
                    .fetch_one(self.conn())
                    .await?;
            let due = due.as_deref() == Some("on");
            debug_assert!(
                forwarding || !due,
                "a transaction made webhook deliveries due without TenantTx::mark_webhook_due"
            );
            self.webhook_due |= due;
        }
        let announce = match (&self.wakeups, self.webhook_due) {
            (Some(wakeups), true) => Some(wakeups.clone()),
            (None, true) if forwarding => {
                self.forwarded.push((WEBHOOK_DUE_CHANNEL, String::new()));
                None
            }
            (None, true) => {
                // No store to wake after the commit: notify the way every process hears.
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(WEBHOOK_DUE_CHANNEL)
                    .execute(self.conn())
                    .await?;
                None
            }
            (_, false) => None,
        };
        self.tx.commit().await?;
        if let Some(wakeups) = announce {
            wakeups.announce();
        }
        if let (true, Some(audited)) = (self.audited, &self.audited_tenants) {
            audited
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.tenant);
        }
        if let (true, Some(registry)) = (self.forward, &self.registry) {
            // After the commit, so no listener acts on a change that did not happen. A lost
            // forward (the registry unreachable now) leaves caches stale only until their
            // periodic reload, which is why every such cache has one.
            for (channel, payload) in &self.forwarded {
                if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(*channel)
                    .bind(payload)
                    .execute(registry)
                    .await
                {
                    tracing::warn!(error = %err, channel, "notification not forwarded");
                }
            }
        }
        Ok(())
    }

    /// Rolls back explicitly (dropping does too, asynchronously).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// The transaction under a [`TenantTx`]: one sqlx began, with the context entered by a second
/// statement ([`TenantTx::enter`]), or one [`Store::begin`] began and entered in one simple
/// query ([`EnteredTx`]).
enum OpenTx {
    Begun(Transaction<'static, Postgres>),
    Entered(EnteredTx),
}

impl OpenTx {
    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            OpenTx::Begun(tx) => tx.commit().await,
            OpenTx::Entered(entered) => entered.commit().await,
        }
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            OpenTx::Begun(tx) => tx.rollback().await,
            OpenTx::Entered(entered) => entered.rollback().await,
        }
    }
}
