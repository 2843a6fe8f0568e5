//! Test harness for Bulkhead: real PostgreSQL, real HTTP over loopback.
//!
//! - One private PostgreSQL cluster per test process, started from the installed server binaries
//!   ([`bulkhead_store::embedded`], ephemeral: it dies with the process), so the suite needs no
//!   running server and passes anywhere the prerequisites are installed.
//! - A fresh database per test ([`TestDb::new`]), migrated as the owner role. Tests reach it as
//!   the same non-owner, non-superuser application role the server uses, never as a superuser
//!   (a superuser ignores row-level security and would hide RLS bugs).
//! - [`spawn_app`] serves the real application on `127.0.0.1:0`. Its HTTP client resolves
//!   `*.bulkhead.test` to 127.0.0.1 with an injected resolver and refuses every other name, so no
//!   test traffic can leave loopback.
#![forbid(unsafe_code)]

pub mod receiver;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bulkhead_auth::{KeyEnvironment, KeyPepper};
use bulkhead_core::{Clock, TenantId, TenantSlug};
use bulkhead_server::config::AppConfig;
use bulkhead_server::http::state::AppState;
use bulkhead_server::service::credentials::Peppers;
use bulkhead_store::embedded::{EmbeddedOptions, EmbeddedPostgres};
use bulkhead_store::registry::{NewTenant, Plan};
use bulkhead_store::{migrate, provision, roles, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// Base domain of test deployments; `<slug>.bulkhead.test` resolves to 127.0.0.1 in tests only.
pub const BASE_DOMAIN: &str = "bulkhead.test";

struct Cluster {
    postgres: EmbeddedPostgres,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        // Started on its own thread and runtime: tests each have their own runtime, and the
        // cluster must outlive all of them. Only the process and its socket are shared.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test runtime");
            runtime.block_on(async {
                // The directory itself is the data directory: it is handed to the cluster's user,
                // whose watchdog removes it when this process exits.
                let dir = tempfile::Builder::new()
                    .prefix("bulkhead-test-pg-")
                    .tempdir()
                    .expect("temp dir for the test cluster")
                    .keep();
                let postgres = EmbeddedPostgres::start(EmbeddedOptions {
                    data_dir: dir,
                    ephemeral: true,
                })
                .await
                .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL cluster: {e}"));
                let mut su = PgConnection::connect_with(
                    &postgres.connect_options(postgres.superuser(), "postgres"),
                )
                .await
                .expect("superuser connection");
                provision::ensure_owner_role(&mut su)
                    .await
                    .expect("owner role");
                // Once, here, rather than racing from every test's migrations.
                roles::ensure_app_role(&mut su).await.expect("app role");
                su.close().await.ok();
                // The NOLOGIN roles the migrations create, likewise (concurrent CREATE ROLEs in
                // parallel tests' migrations race on the cluster-wide catalog), and by the owner,
                // as a deployment's migrations create them, so the owner may grant them.
                let mut owner = PgConnection::connect_with(
                    &postgres.connect_options(provision::OWNER_ROLE, "postgres"),
                )
                .await
                .expect("owner connection");
                sqlx::raw_sql(
                    "DO $$ BEGIN \
                       IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bulkhead_audit_maintenance') THEN \
                         CREATE ROLE bulkhead_audit_maintenance NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS; \
                       END IF; \
                       IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bulkhead_tenant_mover') THEN \
                         CREATE ROLE bulkhead_tenant_mover NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS; \
                       END IF; END $$",
                )
                .execute(&mut owner)
                .await
                .expect("maintenance and mover roles");
                owner.close().await.ok();
                Cluster { postgres }
            })
        })
        .join()
        .expect("cluster start thread")
    })
}

fn quiet(options: PgConnectOptions) -> PgConnectOptions {
    options.log_statements(tracing::log::LevelFilter::Trace)
}

/// A fresh, migrated database of its own for one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// As the owner role (migrations, operator commands).
    pub owner_options: PgConnectOptions,
    /// As the application role (serving).
    pub app_options: PgConnectOptions,
    /// As the cluster superuser: only for tests that must bypass everything to inspect or tamper.
    pub superuser_options: PgConnectOptions,
}

impl TestDb {
    /// Creates and migrates a new database.
    pub async fn new() -> TestDb {
        let cluster = cluster();
        let pg = &cluster.postgres;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut su = PgConnection::connect_with(&pg.connect_options(pg.superuser(), "postgres"))
            .await
            .expect("superuser connection");
        provision::ensure_database(&mut su, &name)
            .await
            .expect("create test database");
        su.close().await.ok();
        let db = TestDb {
            owner_options: quiet(pg.connect_options(provision::OWNER_ROLE, &name)),
            app_options: quiet(pg.connect_options(roles::APP_ROLE, &name)),
            superuser_options: quiet(pg.connect_options(pg.superuser(), &name)),
            name,
        };
        let owner = db.owner_pool().await;
        migrate::run(&owner).await.expect("migrations");
        owner.close().await;
        db
    }

    /// Moves the clock of the database's definer functions (delivery claims, the token
    /// denylist) so that it reads `now`: they clamp the caller's time to within a few seconds of
    /// their own (migration 0012), so tests on a manual clock move this one with it. Owner only;
    /// the application role cannot.
    pub async fn set_definer_clock(&self, now: std::time::SystemTime) {
        let owner = pool(&self.owner_options, 1).await;
        let target = now
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        sqlx::query("UPDATE bulkhead.definer_clock_skew SET skew = to_timestamp($1) - now()")
            .bind(target)
            .execute(&owner)
            .await
            .expect("set the definer clock");
        owner.close().await;
    }

    /// URL of this database as the owner role (for a `bulkhead serve` child process).
    pub fn owner_url(&self) -> String {
        cluster().postgres.url(provision::OWNER_ROLE, &self.name)
    }

    /// URL of this database as the application role.
    pub fn app_url(&self) -> String {
        cluster().postgres.url(roles::APP_ROLE, &self.name)
    }

    /// A pool of owner connections.
    pub async fn owner_pool(&self) -> PgPool {
        pool(&self.owner_options, 4).await
    }

    /// A pool of application-role connections of the given size.
    pub async fn app_pool(&self, size: u32) -> PgPool {
        pool(&self.app_options, size).await
    }

    /// A pool of superuser connections (inspection and tampering only).
    pub async fn superuser_pool(&self) -> PgPool {
        pool(&self.superuser_options, 2).await
    }

    /// The serving store, with the role checks the server performs (and the test master key,
    /// which opens dedicated databases' sealed URLs).
    pub async fn app_store(&self) -> Store {
        Store::connect_app(self.app_options.clone(), 10)
            .await
            .expect("app store")
            .reconfigured(|t| t.master_key = Some(Arc::new(test_master_key())))
    }

    /// A store on the owner role (operator commands: onboarding, suspension, moves).
    pub async fn owner_store(&self) -> Store {
        Store::from_pool_unchecked(self.owner_pool().await)
            .reconfigured(|t| t.master_key = Some(Arc::new(test_master_key())))
    }

    /// A further, empty database in the test cluster owned by the owner role, for a dedicated
    /// tenant: `(name, owner URL, serving-role URL)`.
    pub async fn dedicated_database(&self) -> (String, String, String) {
        let cluster = cluster();
        let pg = &cluster.postgres;
        let name = format!("d_{}", uuid::Uuid::new_v4().simple());
        let mut su = PgConnection::connect_with(&pg.connect_options(pg.superuser(), "postgres"))
            .await
            .expect("superuser connection");
        provision::ensure_database(&mut su, &name)
            .await
            .expect("create dedicated database");
        su.close().await.ok();
        let owner_url = pg.url(provision::OWNER_ROLE, &name);
        let app_url = pg.url(roles::APP_ROLE, &name);
        (name, owner_url, app_url)
    }

    /// Owner options for another database of the test cluster (inspecting a dedicated one).
    pub fn owner_options_for(&self, database: &str) -> PgConnectOptions {
        self.owner_options.clone().database(database)
    }

    /// Superuser options for another database of the test cluster.
    pub fn superuser_options_for(&self, database: &str) -> PgConnectOptions {
        self.superuser_options.clone().database(database)
    }
}

async fn pool(options: &PgConnectOptions, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .connect_with(options.clone())
        .await
        .expect("test pool")
}

/// The pepper every test deployment uses.
pub fn test_pepper() -> KeyPepper {
    KeyPepper::new(1, b"bulkhead-test-pepper-0123456789abcdef".to_vec()).expect("test pepper")
}

/// The master key every test deployment uses (it seals the test signing keys).
pub fn test_master_key() -> bulkhead_auth::MasterKey {
    bulkhead_auth::MasterKey::from_config_str(
        "base64:YnVsa2hlYWQtdGVzdC1tYXN0ZXIta2V5LTAxMjM0NTY3ODk=",
    )
    .expect("test master key")
}

/// Creates the deployment's signing keys in `db`, as `bulkhead serve` does on first start.
pub async fn ensure_signing_keys(db: &TestDb) {
    let owner = db.owner_pool().await;
    bulkhead_store::signing_keys::ensure_signing_keys(&owner, &test_master_key())
        .await
        .expect("signing keys");
    owner.close().await;
}

/// [`test_pepper`] as the only pepper.
pub fn test_peppers() -> Peppers {
    Peppers::new(test_pepper(), Vec::new()).expect("peppers")
}

/// A tenant made for a test, with its bootstrap admin key.
#[derive(Debug, Clone)]
pub struct TestTenant {
    /// Registry id.
    pub id: TenantId,
    /// Subdomain label.
    pub slug: String,
    /// Admin key text.
    pub key: String,
}

/// Onboards a tenant exactly as `bulkhead tenant create` does.
pub async fn create_tenant(db: &TestDb, slug: &str) -> TestTenant {
    create_tenant_in(db, slug, TestTier::Shared).await
}

/// An isolation tier for [`create_tenant_in`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestTier {
    /// Shared tables under RLS.
    Shared,
    /// A schema of its own.
    Schema,
    /// A database of its own (a fresh one in the test cluster, registered sealed).
    Dedicated,
}

impl TestTier {
    /// Every tier.
    pub const ALL: [TestTier; 3] = [TestTier::Shared, TestTier::Schema, TestTier::Dedicated];

    /// The placement to move a tenant to this tier (registering a fresh dedicated database).
    pub async fn placement(self, db: &TestDb, owner: &Store) -> bulkhead_store::Placement {
        use bulkhead_store::location::{DatabaseName, SchemaName};
        match self {
            TestTier::Shared => bulkhead_store::Placement::Shared,
            TestTier::Schema => {
                bulkhead_store::Placement::Schema(SchemaName::for_tenant(TenantId::new()))
            }
            TestTier::Dedicated => {
                let (name, owner_url, app_url) = db.dedicated_database().await;
                let name = DatabaseName::parse(&name).expect("database name");
                owner
                    .register_database(&test_master_key(), &name, "default", &owner_url, &app_url)
                    .await
                    .expect("register the dedicated database");
                bulkhead_store::Placement::Dedicated(name)
            }
        }
    }
}

/// Onboards a tenant in `tier`, as `bulkhead tenant create --tier` does.
pub async fn create_tenant_in(db: &TestDb, slug: &str, tier: TestTier) -> TestTenant {
    let owner = db.owner_store().await;
    let placement = tier.placement(db, &owner).await;
    let onboarded = bulkhead_server::service::tenants::onboard(
        &owner,
        &test_peppers(),
        KeyEnvironment::Live,
        &NewTenant {
            slug: TenantSlug::parse(slug).expect("test slug"),
            display_name: format!("{slug} Inc."),
            plan: Plan::Standard,
            region: "default".into(),
            placement,
        },
    )
    .await
    .expect("onboard tenant");
    owner.close().await;
    TestTenant {
        id: onboarded.tenant.id,
        slug: slug.to_owned(),
        key: onboarded.admin_key.expose_secret().to_owned(),
    }
}

/// Onboards a shared-tier tenant of `region` through `owner`, a store configured to serve that
/// region (see `Topology::regions`), as `bulkhead tenant create --region` does.
pub async fn create_tenant_in_region(owner: &Store, slug: &str, region: &str) -> TestTenant {
    let onboarded = bulkhead_server::service::tenants::onboard(
        owner,
        &test_peppers(),
        KeyEnvironment::Live,
        &NewTenant {
            slug: TenantSlug::parse(slug).expect("test slug"),
            display_name: format!("{slug} Inc."),
            plan: Plan::Standard,
            region: region.into(),
            placement: bulkhead_store::Placement::Shared,
        },
    )
    .await
    .expect("onboard tenant");
    TestTenant {
        id: onboarded.tenant.id,
        slug: slug.to_owned(),
        key: onboarded.admin_key.expose_secret().to_owned(),
    }
}

/// The application serving on a loopback port, with its own database.
#[derive(Debug)]
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database.
    pub db: TestDb,
    /// Its state (for tests that call the store or worker directly).
    pub state: AppState,
    /// HTTP client resolving `*.bulkhead.test` to loopback only.
    pub client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Starts the app on `127.0.0.1:0` with a fresh database and the system clock. No job worker
/// runs: tests drive it.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Knobs for [`spawn_app_with`].
#[derive(Debug, Default)]
pub struct AppOptions {
    /// Serve this database instead of a fresh one (a second process of the same deployment).
    pub db: Option<TestDb>,
    /// Clock; default the system clock.
    pub clock: Option<Clock>,
    /// Peppers; default [`test_peppers`].
    pub peppers: Option<Peppers>,
    /// Trusted proxy networks.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Rate limiters; default: the server's defaults, in process.
    pub rate_limits: Option<bulkhead_server::service::rate_limits::SharedLimits>,
    /// Webhook egress policy; default [`test_egress_policy`].
    pub webhook_egress: Option<bulkhead_webhooks::EgressPolicy>,
    /// Last changes to the configuration, after every other option.
    pub configure: Option<fn(&mut AppConfig)>,
    /// The client tool calls go through (a loopback resolver and a test CA); default: one
    /// under the egress policy whose resolver resolves nothing, so no test call leaves loopback.
    pub tool_client: Option<bulkhead_webhooks::EgressClient>,
    /// Tool-call limits; default the server's.
    pub tool_settings: Option<bulkhead_server::config::ToolSettings>,
    /// Serve through this store (another topology: regions) instead of the database's own.
    pub store: Option<Store>,
}

/// The egress policy of test deployments: https, any unprivileged port, the test base domain
/// denied, and 127.0.0.1 alone allowed among special-purpose addresses (so receivers on
/// 127.0.0.1 are reachable and canaries on other loopback addresses are not).
pub fn test_egress_policy() -> bulkhead_webhooks::EgressPolicy {
    bulkhead_webhooks::EgressPolicy {
        allow_http: false,
        allowed_ports: vec![443..=443, 1024..=65535],
        platform_domains: vec![BASE_DOMAIN.to_owned()],
        allow: vec!["127.0.0.1/32".parse().expect("cidr")],
        deny: Vec::new(),
    }
}

/// The application's parts as the tests and benchmarks run it: the test peppers and master
/// key, a fresh audit log key, a tool client whose resolver knows no name (a tool call fails
/// closed unless a test installs its own), the shipped schema pool and screening rules. The one
/// place test code composes the application (`AppState::from_parts`), like `cli/serve.rs` does
/// for `bulkhead serve`.
pub fn app_parts(
    store: Store,
    config: AppConfig,
    clock: Clock,
    rate_limits: Option<bulkhead_server::service::rate_limits::SharedLimits>,
) -> bulkhead_server::http::state::AppParts {
    let tool_client = bulkhead_webhooks::EgressClient::new(
        config.webhook_egress.clone(),
        Arc::new(bulkhead_webhooks::StaticResolver::new()),
        &bulkhead_webhooks::EgressConfig::default(),
    )
    .expect("tool client");
    bulkhead_server::http::state::AppParts {
        store,
        peppers: test_peppers(),
        master_key: Arc::new(test_master_key()),
        config,
        clock,
        rate_limits,
        audit: Arc::new(bulkhead_server::service::audit_log::AuditService::new(
            bulkhead_audit::LogSigningKey::generate(),
        )),
        tool_client,
        schema_pool: bulkhead_schema::Evaluator::with_defaults(),
        screener: Arc::new(bulkhead_screening::Screener::builtin().expect("screening rules")),
    }
}

/// Starts the app with the given options.
pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let db = match options.db {
        Some(db) => db,
        None => TestDb::new().await,
    };
    ensure_signing_keys(&db).await;
    let store = match options.store {
        Some(store) => store,
        None => db.app_store().await,
    };
    let mut config = AppConfig::new(BASE_DOMAIN, KeyEnvironment::Live).expect("config");
    config.trusted_proxies = options.trusted_proxies;
    config.webhook_egress = options.webhook_egress.unwrap_or_else(test_egress_policy);
    if let Some(configure) = options.configure {
        configure(&mut config);
    }
    if let Some(tools) = options.tool_settings {
        config.tools = tools;
    }
    let clock = options.clock.unwrap_or_default();
    let rate_limits = options.rate_limits.unwrap_or_else(|| {
        Arc::new(
            bulkhead_server::service::rate_limits::RateLimits::in_memory(
                bulkhead_server::service::rate_limits::default_limits(),
                bulkhead_server::service::rate_limits::default_preauth_limits(),
                clock.clone(),
            ),
        )
    });
    let mut parts = app_parts(store, config, clock, Some(rate_limits));
    if let Some(peppers) = options.peppers {
        parts.peppers = peppers;
    }
    if let Some(client) = options.tool_client {
        parts.tool_client = client;
    }
    let state = AppState::from_parts(parts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bulkhead_server::http::app::serve(
        listener,
        state.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    TestApp {
        addr,
        db,
        state,
        client: loopback_client(),
        _shutdown: shutdown,
    }
}

impl TestApp {
    /// URL on the bare loopback address (no subdomain signal).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// URL under a tenant's subdomain (`<slug>.bulkhead.test`), resolved to loopback.
    pub fn tenant_url(&self, slug: &str, path: &str) -> String {
        format!("http://{slug}.{BASE_DOMAIN}:{}{path}", self.addr.port())
    }

    /// Onboards a tenant in `tier`, in this app's database.
    pub async fn create_tenant_in(&self, slug: &str, tier: TestTier) -> TestTenant {
        create_tenant_in(&self.db, slug, tier).await
    }

    /// Onboards a tenant in this app's database.
    pub async fn create_tenant(&self, slug: &str) -> TestTenant {
        create_tenant(&self.db, slug).await
    }
}

/// A reqwest client that can only reach loopback: `*.bulkhead.test` and `localhost` resolve to
/// 127.0.0.1, every other name fails to resolve, and no proxy from the environment is used.
pub fn loopback_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(LoopbackResolver))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

struct LoopbackResolver;

impl reqwest::dns::Resolve for LoopbackResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let allowed = host == "localhost"
            || host == BASE_DOMAIN
            || host.ends_with(&format!(".{BASE_DOMAIN}"));
        Box::pin(async move {
            if allowed {
                let addrs: reqwest::dns::Addrs =
                    Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
                Ok(addrs)
            } else {
                Err(format!("test resolver refuses {host}: tests reach loopback only").into())
            }
        })
    }
}
