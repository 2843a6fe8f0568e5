//! Where a tenant's rows live (its region and isolation tier), and the router that sends every
//! tenant transaction there.
//!
//! # Invariants
//! - A [`TenantTx`] is opened only in the location the registry names for its tenant, and the
//!   location itself confirms it: the transaction's first statement reads the tenant's row in
//!   that location (the registry row, or the location's own anchor row) and the transaction is
//!   refused unless it names the same location. A router whose cache is stale after a move is
//!   caught there, refreshes, and retries once; it never reads or writes an old copy.
//! - A read-write transaction holds `FOR SHARE` on that row until it ends, and is refused while
//!   the tenant is frozen for a move ([`StoreError::TenantMoving`], a retryable 503). Freezing
//!   updates the row, so it waits for every writer in flight, and no writer starts after it.
//! - `search_path` is set transaction-locally to the tenant's schema (`bulkhead` for the shared
//!   tier and in dedicated databases), from a validated identifier; row-level security stays on
//!   in every tier as the second wall.
//! - A region this process does not serve is never connected to: its tenants' transactions are
//!   refused with [`StoreError::WrongRegion`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bulkhead_auth::MasterKey;
use bulkhead_core::TenantId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::text_enum::text_enum;
use crate::StoreError;

text_enum!(
    /// Where a tenant's rows live (docs/isolation-tiers.md).
    IsolationTier { /** Shared tables under RLS. */ Shared = "shared", /** A schema per tenant. */ Schema = "schema", /** A database per tenant. */ Dedicated = "dedicated" }
);

/// The schema of the shared tier, and of everything in a dedicated database.
pub const SHARED_SCHEMA: &str = "bulkhead";

/// The name of a tenant's own schema: `tenant_` and the 32 hex digits of its id. Derived from the
/// id, never from input, and checked again whenever it is read back from the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaName(String);

impl SchemaName {
    /// The schema a schema-tier tenant's rows live in.
    pub fn for_tenant(id: TenantId) -> SchemaName {
        SchemaName(format!("tenant_{}", id.uuid().simple()))
    }

    /// Strict parse of a stored name.
    pub fn parse(text: &str) -> Option<SchemaName> {
        let hex = text.strip_prefix("tenant_")?;
        (hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| SchemaName(text.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The registry name of a dedicated database: a plain lowercase identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatabaseName(String);

impl DatabaseName {
    /// Strict parse: `[a-z][a-z0-9_]{0,62}`.
    pub fn parse(text: &str) -> Option<DatabaseName> {
        let bytes = text.as_bytes();
        let plain = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        plain.then(|| DatabaseName(text.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatabaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's place within its region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placement {
    /// The shared tables of the region's database.
    Shared,
    /// Its own schema in the region's database.
    Schema(SchemaName),
    /// Its own database.
    Dedicated(DatabaseName),
}

impl Placement {
    /// The tier this placement belongs to.
    pub fn tier(&self) -> IsolationTier {
        match self {
            Placement::Shared => IsolationTier::Shared,
            Placement::Schema(_) => IsolationTier::Schema,
            Placement::Dedicated(_) => IsolationTier::Dedicated,
        }
    }

    /// The schema the tenant's tables are in.
    pub fn schema(&self) -> &str {
        match self {
            Placement::Schema(name) => name.as_str(),
            Placement::Shared | Placement::Dedicated(_) => SHARED_SCHEMA,
        }
    }

    /// Rebuilds a placement from registry columns; `None` if they are inconsistent.
    pub fn from_columns(
        tier: IsolationTier,
        schema: Option<&str>,
        database: Option<&str>,
    ) -> Option<Placement> {
        match (tier, schema, database) {
            (IsolationTier::Shared, None, None) => Some(Placement::Shared),
            (IsolationTier::Schema, Some(s), None) => SchemaName::parse(s).map(Placement::Schema),
            (IsolationTier::Dedicated, None, Some(d)) => {
                DatabaseName::parse(d).map(Placement::Dedicated)
            }
            _ => None,
        }
    }

    /// The registry columns `(schema_name, database_name)`.
    pub fn columns(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Placement::Shared => (None, None),
            Placement::Schema(s) => (Some(s.as_str()), None),
            Placement::Dedicated(d) => (None, Some(d.as_str())),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Shared => f.write_str("shared"),
            Placement::Schema(s) => write!(f, "schema {s}"),
            Placement::Dedicated(d) => write!(f, "dedicated database {d}"),
        }
    }
}

/// Where a tenant's rows live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Data-residency region.
    pub region: String,
    /// Tier and place within the region.
    pub placement: Placement,
}

/// Which role a store's connections use; it decides which sealed URL of a dedicated database is
/// opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRole {
    /// The serving role (row-level security, owns nothing).
    App,
    /// The owner role (operator commands, migrations, moves).
    Owner,
}

impl PoolRole {
    pub(crate) fn binding(self, database: &DatabaseName) -> Vec<u8> {
        let role = match self {
            PoolRole::App => "app",
            PoolRole::Owner => "owner",
        };
        format!("{database}:{role}").into_bytes()
    }
}

/// Bounds on dedicated-database pools: created on first use, at most `max_pools` open (the least
/// recently used is closed to make room), each closed after `idle` without use.
#[derive(Debug, Clone, Copy)]
pub struct DedicatedLimits {
    /// Most dedicated pools open at once.
    pub max_pools: usize,
    /// Connections per dedicated pool.
    pub connections_per_pool: u32,
    /// A pool unused this long is closed.
    pub idle: Duration,
}

impl Default for DedicatedLimits {
    fn default() -> Self {
        DedicatedLimits {
            max_pools: 64,
            connections_per_pool: 4,
            idle: Duration::from_secs(300),
        }
    }
}

/// What a store connects to: the registry database (which is also the default region's
/// database), further regions, and how to reach dedicated databases.
#[derive(Clone)]
pub struct Topology {
    /// The registry database: `bulkhead.tenants`, signing keys, routing metadata; also the data
    /// database of `default_region`.
    pub registry: PgPool,
    /// The region whose data lives in the registry database.
    pub default_region: String,
    /// Further regions this process serves, each with its own database.
    pub regions: Vec<(String, PgPool)>,
    /// The role of every pool here.
    pub role: PoolRole,
    /// Opens dedicated databases' sealed URLs; without it, dedicated tenants are refused.
    pub master_key: Option<Arc<MasterKey>>,
    /// Dedicated pool bounds.
    pub dedicated: DedicatedLimits,
    /// Where heavy reads of the registry database (its shared and schema tenants) run, when
    /// set: a pool whose backends run at a lower CPU priority than the serving pool's (the
    /// embedded cluster, whose backends the serving process may renice). Unset: the serving pool.
    pub heavy_reads: Option<PgPool>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("default_region", &self.default_region)
            .field(
                "regions",
                &self.regions.iter().map(|(r, _)| r).collect::<Vec<_>>(),
            )
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Topology {
    /// One database serving the `default` region.
    pub fn single(registry: PgPool, role: PoolRole) -> Topology {
        Topology {
            registry,
            default_region: "default".into(),
            regions: Vec::new(),
            role,
            master_key: None,
            dedicated: DedicatedLimits::default(),
            heavy_reads: None,
        }
    }
}

/// How long a tenant's location is trusted from the cache. Staleness is safe (the location check
/// catches it); this only bounds how often the registry is read.
const LOCATION_TTL: Duration = Duration::from_secs(30);

struct DedicatedPool {
    pool: PgPool,
    last_used: Instant,
}

pub(crate) struct Router {
    pub(crate) topology: Topology,
    locations: RwLock<HashMap<TenantId, (Location, Instant)>>,
    dedicated: Mutex<HashMap<DatabaseName, DedicatedPool>>,
    // Serializes opening a dedicated pool so concurrent first uses open it once.
    opening: tokio::sync::Mutex<()>,
}

impl Router {
    pub(crate) fn new(topology: Topology) -> Router {
        Router {
            topology,
            locations: RwLock::new(HashMap::new()),
            dedicated: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether this process serves `region`.
    pub(crate) fn serves(&self, region: &str) -> bool {
        region == self.topology.default_region
            || self.topology.regions.iter().any(|(r, _)| r == region)
    }

    /// The database pool of a served region.
    pub(crate) fn region_pool(&self, region: &str) -> Result<&PgPool, StoreError> {
        if region == self.topology.default_region {
            return Ok(&self.topology.registry);
        }
        self.topology
            .regions
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, p)| p)
            .ok_or_else(|| StoreError::WrongRegion(region.to_owned()))
    }

    /// Whether `location`'s anchor row is the registry row itself.
    pub(crate) fn is_registry_location(&self, location: &Location) -> bool {
        location.region == self.topology.default_region && location.placement == Placement::Shared
    }

    /// Whether `location` is in the registry's own database (the default region, not dedicated).
    pub(crate) fn shares_registry_database(&self, location: &Location) -> bool {
        location.region == self.topology.default_region
            && !matches!(location.placement, Placement::Dedicated(_))
    }

    pub(crate) fn cached(&self, tenant: TenantId) -> Option<Location> {
        let cache = self.locations.read().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&tenant)
            .filter(|(_, at)| at.elapsed() < LOCATION_TTL)
            .map(|(l, _)| l.clone())
    }

    pub(crate) fn forget(&self, tenant: TenantId) {
        let mut cache = self.locations.write().unwrap_or_else(|e| e.into_inner());
        cache.remove(&tenant);
    }

    /// The tenant's location, from the cache or else the registry.
    pub(crate) async fn location(&self, tenant: TenantId) -> Result<Location, StoreError> {
        match self.cached(tenant) {
            Some(location) => Ok(location),
            None => self.fetch_location(tenant).await,
        }
    }

    /// The tenant's location from the registry (fresh), cached.
    pub(crate) async fn fetch_location(&self, tenant: TenantId) -> Result<Location, StoreError> {
        let row: Option<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
            "SELECT isolation_tier, schema_name, database_name, region \
             FROM bulkhead.tenants WHERE id = $1",
        )
        .bind(tenant.uuid())
        .fetch_optional(&self.topology.registry)
        .await?;
        let Some((tier, schema, database, region)) = row else {
            return Err(StoreError::NotFound);
        };
        let location =
            location_from_columns(&tier, schema.as_deref(), database.as_deref(), region)?;
        let mut cache = self.locations.write().unwrap_or_else(|e| e.into_inner());
        cache.insert(tenant, (location.clone(), Instant::now()));
        Ok(location)
    }

    /// The pool a tenant transaction at `location` takes its connection from: the heavy-read
    /// pool for a heavy read in the registry database when there is one
    /// ([`Topology::heavy_reads`]), else [`Router::pool_for`].
    pub(crate) async fn pool_for_transaction(
        &self,
        location: &Location,
        heavy: bool,
    ) -> Result<PgPool, StoreError> {
        match (&self.topology.heavy_reads, &location.placement) {
            (Some(pool), Placement::Shared | Placement::Schema(_))
                if heavy && location.region == self.topology.default_region =>
            {
                Ok(pool.clone())
            }
            _ => self.pool_for(location).await,
        }
    }

    /// The pool holding `location`'s database.
    pub(crate) async fn pool_for(&self, location: &Location) -> Result<PgPool, StoreError> {
        match &location.placement {
            Placement::Shared | Placement::Schema(_) => self.region_pool(&location.region).cloned(),
            Placement::Dedicated(name) => {
                if !self.serves(&location.region) {
                    return Err(StoreError::WrongRegion(location.region.clone()));
                }
                self.dedicated_pool(name).await
            }
        }
    }

    async fn dedicated_pool(&self, name: &DatabaseName) -> Result<PgPool, StoreError> {
        if let Some(pool) = self.take_open(name) {
            return Ok(pool);
        }
        let _opening = self.opening.lock().await;
        if let Some(pool) = self.take_open(name) {
            return Ok(pool);
        }
        let options = self.dedicated_options(name).await?;
        let limits = self.topology.dedicated;
        let pool = PgPoolOptions::new()
            .max_connections(limits.connections_per_pool)
            .min_connections(0)
            .idle_timeout(Some(limits.idle))
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        if self.topology.role == PoolRole::App {
            // The serving role there must be as powerless as here: never serve through a
            // superuser, a BYPASSRLS role or an owner that a sealed URL happens to name.
            crate::cluster::pg_roles::verify_app_role(&pool).await?;
        }
        let mut open = self.dedicated.lock().unwrap_or_else(|e| e.into_inner());
        // Idle pools are closed first; then, at the cap, the least recently used.
        open.retain(|_, p| p.last_used.elapsed() < limits.idle);
        while open.len() >= limits.max_pools.max(1) {
            let Some(oldest) = open
                .iter()
                .min_by_key(|(_, p)| p.last_used)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            // Transactions in flight keep their clone of the pool; it closes when they end.
            open.remove(&oldest);
        }
        open.insert(
            name.clone(),
            DedicatedPool {
                pool: pool.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(pool)
    }

    fn take_open(&self, name: &DatabaseName) -> Option<PgPool> {
        let mut open = self.dedicated.lock().unwrap_or_else(|e| e.into_inner());
        let entry = open.get_mut(name)?;
        entry.last_used = Instant::now();
        Some(entry.pool.clone())
    }

    /// How many dedicated pools are open.
    pub(crate) fn open_dedicated_pools(&self) -> usize {
        let limits = self.topology.dedicated;
        let mut open = self.dedicated.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, p| p.last_used.elapsed() < limits.idle);
        open.len()
    }

    async fn dedicated_options(&self, name: &DatabaseName) -> Result<PgConnectOptions, StoreError> {
        let Some(master) = &self.topology.master_key else {
            return Err(StoreError::UnsafeConfiguration(
                "a dedicated tenant database needs the master key to open its sealed URL".into(),
            ));
        };
        let column = match self.topology.role {
            PoolRole::App => "sealed_app_url",
            PoolRole::Owner => "sealed_owner_url",
        };
        let sealed: Option<Vec<u8>> = sqlx::query_scalar(&format!(
            "SELECT {column} FROM bulkhead.tenant_databases WHERE name = $1"
        ))
        .bind(name.as_str())
        .fetch_optional(&self.topology.registry)
        .await?;
        let sealed = sealed.ok_or_else(|| {
            StoreError::UnsafeConfiguration(format!("dedicated database {name} is not registered"))
        })?;
        let url = master
            .open_database_url(&self.topology.role.binding(name), &sealed)
            .map_err(|_| {
                StoreError::UnsafeConfiguration(format!(
                    "the sealed URL of dedicated database {name} does not open with this master key"
                ))
            })?;
        let options = PgConnectOptions::from_str(&url).map_err(|_| {
            StoreError::UnsafeConfiguration(format!(
                "the URL of dedicated database {name} is not a PostgreSQL URL"
            ))
        })?;
        Ok(options.log_statements(tracing::log::LevelFilter::Trace))
    }

    /// Every location of this process's regions that may hold rows: each served region's shared
    /// schema, and each schema-tier or dedicated tenant of a served region. For the cross-tenant
    /// system functions (job and delivery claims, revocations, key lookup).
    pub(crate) async fn all_locations(&self) -> Result<Vec<(PgPool, String)>, StoreError> {
        let mut out = vec![(self.topology.registry.clone(), SHARED_SCHEMA.to_owned())];
        for (_, pool) in &self.topology.regions {
            out.push((pool.clone(), SHARED_SCHEMA.to_owned()));
        }
        let mut served: Vec<String> = vec![self.topology.default_region.clone()];
        served.extend(self.topology.regions.iter().map(|(r, _)| r.clone()));
        let rows: Vec<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
            "SELECT isolation_tier, schema_name, database_name, region FROM bulkhead.tenants \
             WHERE isolation_tier <> 'shared' AND region = ANY($1) ORDER BY id",
        )
        .bind(&served)
        .fetch_all(&self.topology.registry)
        .await?;
        let mut seen_databases = std::collections::HashSet::new();
        for (tier, schema, database, region) in rows {
            let location =
                location_from_columns(&tier, schema.as_deref(), database.as_deref(), region)?;
            if let Placement::Dedicated(name) = &location.placement {
                if !seen_databases.insert(name.clone()) {
                    continue;
                }
            }
            // A dedicated database that cannot be opened must not stop the others' work.
            match self.pool_for(&location).await {
                Ok(pool) => out.push((pool, location.placement.schema().to_owned())),
                Err(err) => tracing::error!(
                    error = %err,
                    location = %location.placement,
                    "a tenant location cannot be reached; its work waits"
                ),
            }
        }
        Ok(out)
    }
}

/// For a pass over [`Router::all_locations`]: an error at the registry's own shared schema (the
/// first location) fails the pass; elsewhere it is logged and that location skipped, so one
/// unreachable dedicated database does not stop every other tenant's work. (Its own tenant's
/// requests fail on their own: they need that database.)
pub(crate) fn skip_unreachable<T>(index: usize, err: sqlx::Error) -> Result<Vec<T>, StoreError> {
    if index == 0 {
        return Err(err.into());
    }
    tracing::error!(error = %err, "a tenant location failed; skipped in this pass");
    Ok(Vec::new())
}

pub(crate) fn location_from_columns(
    tier: &str,
    schema: Option<&str>,
    database: Option<&str>,
    region: String,
) -> Result<Location, StoreError> {
    let tier = IsolationTier::parse(tier).ok_or_else(|| {
        StoreError::UnsafeConfiguration("registry row has an invalid tier".into())
    })?;
    let placement = Placement::from_columns(tier, schema, database).ok_or_else(|| {
        StoreError::UnsafeConfiguration("registry row has an inconsistent location".into())
    })?;
    Ok(Location { region, placement })
}

/// Rewrites a migration written for the shared schema so that it creates the same objects in
/// `schema`: every `bulkhead.` qualifier and every `SCHEMA bulkhead` becomes the tenant's schema,
/// except inside string literals (`'bulkhead.tenant_id'` names a setting, not a schema). Our own
/// migrations only; they are written so this rewrite is exact, which a test checks.
pub fn rewrite_for_schema(sql: &str, schema: &SchemaName) -> String {
    let quoted = format!("\"{}\"", schema.as_str());
    let mut out = String::with_capacity(sql.len() + 256);
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    let mut in_comment = false;
    while i < bytes.len() {
        let rest = &sql[i..];
        if in_comment {
            if bytes[i] == b'\n' {
                in_comment = false;
            }
        } else if in_string {
            if bytes[i] == b'\'' {
                in_string = false;
            }
        } else if bytes[i] == b'\'' {
            in_string = true;
        } else if rest.starts_with("--") {
            in_comment = true;
        } else {
            let boundary = i == 0 || !is_ident_byte(bytes[i - 1]);
            if boundary && rest.starts_with("bulkhead.") {
                let next = rest.as_bytes().get(9).copied().unwrap_or(b' ');
                if next.is_ascii_lowercase() || next == b'_' {
                    out.push_str(&quoted);
                    out.push('.');
                    i += 9;
                    continue;
                }
            }
            if boundary && rest.starts_with("SCHEMA bulkhead") {
                let next = rest.as_bytes().get(15).copied().unwrap_or(b' ');
                if !is_ident_byte(next) {
                    out.push_str("SCHEMA ");
                    out.push_str(&quoted);
                    i += 15;
                    continue;
                }
            }
        }
        // Copy one whole character (the SQL may hold non-ASCII text in comments).
        let ch = rest.chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'"'
}

/// The tables that hold a tenant's rows, in an order that satisfies their foreign keys (parents
/// first). A move copies in this order and deletes in the reverse; a test checks that the list is
/// exactly the tenant tables of the catalog, so a new table cannot be left behind by a move.
pub const TENANT_TABLES: &[&str] = &[
    "tenant_settings",
    "users",
    "agents",
    "roles",
    "role_assignments",
    "api_keys",
    "agent_sessions",
    "auth_sessions",
    "refresh_tokens",
    "revoked_tokens",
    "login_throttle",
    "oauth_clients",
    "oauth_grants",
    "oauth_resources",
    "oauth_browser_sessions",
    "oauth_codes",
    "jobs",
    "webhook_endpoints",
    "webhook_messages",
    "webhook_deliveries",
    "webhook_attempts",
    "audit_events",
    "audit_leaves",
    "audit_nodes",
    "audit_checkpoints",
    "tools",
    "tool_versions",
    "screening_decisions",
    "tenant_quotas",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_strict() {
        let id = TenantId::new();
        let name = SchemaName::for_tenant(id);
        assert_eq!(SchemaName::parse(name.as_str()), Some(name.clone()));
        for bad in [
            "tenant_",
            "bulkhead",
            "tenant_0123456789abcdef0123456789ABCDEF",
            "tenant_0123456789abcdef0123456789abcde",
            "tenant_0123456789abcdef0123456789abcdef0",
            "tenant_0123456789abcdef0123456789abcde\"",
        ] {
            assert_eq!(SchemaName::parse(bad), None, "{bad}");
        }
        assert!(DatabaseName::parse("acme_db1").is_some());
        for bad in ["", "1db", "Acme", "a-b", "a;b", &"a".repeat(64)] {
            assert!(DatabaseName::parse(bad).is_none(), "{bad}");
        }
    }

    /// The SQL outside string literals and `--` comments.
    fn code_only(sql: &str) -> String {
        let mut out = String::new();
        let (mut in_string, mut in_comment) = (false, false);
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if in_comment {
                in_comment = c != '\n';
            } else if in_string {
                in_string = c != '\'';
            } else if c == '\'' {
                in_string = true;
            } else if c == '-' && chars.peek() == Some(&'-') {
                in_comment = true;
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn every_migration_rewrites_completely_into_a_tenant_schema() {
        let schema = SchemaName::for_tenant(TenantId::new());
        for migration in crate::placement::migrate::MIGRATOR.iter() {
            let rewritten = code_only(&rewrite_for_schema(&migration.sql, &schema));
            assert!(
                !rewritten.contains("bulkhead.") && !rewritten.contains("SCHEMA bulkhead"),
                "migration {} still names the shared schema after the rewrite",
                migration.version
            );
            // Nothing but the qualifiers changed: the settings and roles are the same.
            let settings = |sql: &str| sql.matches("'bulkhead.").count();
            assert_eq!(
                settings(&migration.sql),
                settings(&rewrite_for_schema(&migration.sql, &schema))
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn names_accept_only_plain_identifiers(text in "\\PC{0,70}") {
            if let Some(name) = SchemaName::parse(&text) {
                proptest::prop_assert!(name.as_str().len() == 39);
                proptest::prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            }
            if let Some(name) = DatabaseName::parse(&text) {
                proptest::prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
                proptest::prop_assert!(!name.as_str().is_empty() && name.as_str().len() <= 63);
            }
        }

        #[test]
        fn schema_names_round_trip(bytes in proptest::array::uniform16(proptest::num::u8::ANY)) {
            let id = TenantId::from_uuid(uuid::Uuid::from_bytes(bytes));
            let name = SchemaName::for_tenant(id);
            proptest::prop_assert_eq!(SchemaName::parse(name.as_str()), Some(name));
        }
    }

    #[test]
    fn the_rewrite_moves_qualifiers_and_leaves_settings_alone() {
        let schema = SchemaName::parse("tenant_0123456789abcdef0123456789abcdef").unwrap();
        let sql = "GRANT USAGE ON SCHEMA bulkhead TO bulkhead_app; -- bulkhead.x in a comment\n\
                   CREATE TABLE bulkhead.users (a int); SELECT current_setting('bulkhead.tenant_id', true); \
                   SELECT notbulkhead.y, bulkhead.z FROM bulkhead_app_x;";
        let out = rewrite_for_schema(sql, &schema);
        assert_eq!(
            out,
            "GRANT USAGE ON SCHEMA \"tenant_0123456789abcdef0123456789abcdef\" TO bulkhead_app; -- bulkhead.x in a comment\n\
             CREATE TABLE \"tenant_0123456789abcdef0123456789abcdef\".users (a int); SELECT current_setting('bulkhead.tenant_id', true); \
             SELECT notbulkhead.y, \"tenant_0123456789abcdef0123456789abcdef\".z FROM bulkhead_app_x;"
        );
    }
}
