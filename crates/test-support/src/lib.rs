//! Test harness for Bulkhead: real PostgreSQL, real HTTP over loopback.
//!
//! - One private PostgreSQL cluster per test process, started from the installed server binaries
//!   ([`bulkhead_store::cluster::embedded`], ephemeral: it dies with the process), so the suite needs no
//!   running server and passes anywhere the prerequisites are installed.
//! - A fresh database per test ([`TestDb::new`]), migrated as the owner role. Tests reach it as
//!   the same non-owner, non-superuser application role the server uses, never as a superuser
//!   (a superuser ignores row-level security and would hide RLS bugs).
//! - Tenants are onboarded through the store ([`create_tenant`]), as `bulkhead tenant create`
//!   does, so store and webhooks tests need no server.
//! - With the `app` feature (the server's and other application-level tests), `spawn_app` serves
//!   the real application on `127.0.0.1:0`. Its HTTP client resolves `*.bulkhead.test` to
//!   127.0.0.1 with an injected resolver and refuses every other name, so no test traffic can
//!   leave loopback. Without the feature this crate does not build the server (nor axum).
#![forbid(unsafe_code)]

#[cfg(feature = "app")]
mod app;
pub mod counters;
pub mod receiver;

#[cfg(feature = "app")]
pub use app::{
    app_parts, operator_request, operator_request_raw, operator_upload, spawn_app, spawn_app_with,
    test_peppers, AppOptions, TestApp, TestOperator,
};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bulkhead_auth::{ApiKey, KeyEnvironment, KeyPepper};
use bulkhead_core::{TenantId, TenantSlug};
use bulkhead_store::cluster::embedded::{EmbeddedOptions, EmbeddedPostgres};
use bulkhead_store::cluster::{pg_roles, provision};
use bulkhead_store::placement::migrate;
use bulkhead_store::placement::registry::{NewTenant, Plan};
use bulkhead_store::tenant::api_keys::NewApiKey;
use bulkhead_store::Store;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// Base domain of test deployments; `<slug>.bulkhead.test` resolves to 127.0.0.1 in tests only.
pub const BASE_DOMAIN: &str = "bulkhead.test";

struct Cluster {
    postgres: EmbeddedPostgres,
    durable_writes: bool,
}

// Whether this process's cluster writes as `serve`'s does (see [`use_served_durability`]).
static DURABLE_WRITES: AtomicBool = AtomicBool::new(false);

/// Starts this process's cluster as `serve` starts its embedded one: `fsync`,
/// `synchronous_commit` and `full_page_writes` on, PostgreSQL's defaults. Tests run without
/// them (nothing in a test cluster is worth a flush); benchmarks call this first, so that their
/// figures describe the configuration users run. Panics if the cluster has already started.
pub fn use_served_durability() {
    DURABLE_WRITES.store(true, Ordering::SeqCst);
    if let Some(cluster) = CLUSTER.get() {
        assert!(
            cluster.durable_writes,
            "use_served_durability() must be called before the first TestDb"
        );
    }
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        // Started on its own thread and runtime: tests each have their own runtime, and the
        // cluster must outlive all of them. Only the process and its socket are shared.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test runtime");
            let durable_writes = DURABLE_WRITES.load(Ordering::SeqCst);
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
                    durable_writes,
                    search_path: std::env::var_os("PATH"),
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
                pg_roles::ensure_app_role(&mut su).await.expect("app role");
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
                Cluster {
                    postgres,
                    durable_writes,
                }
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
            app_options: quiet(pg.connect_options(pg_roles::APP_ROLE, &name)),
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
        cluster().postgres.url(pg_roles::APP_ROLE, &self.name)
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
        let app_url = pg.url(pg_roles::APP_ROLE, &name);
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
        use bulkhead_store::placement::location::{DatabaseName, SchemaName};
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
    let tenant = onboard(
        &owner,
        &NewTenant {
            slug: TenantSlug::parse(slug).expect("test slug"),
            display_name: format!("{slug} Inc."),
            plan: Plan::Standard,
            region: "default".into(),
            placement,
        },
    )
    .await;
    owner.close().await;
    tenant
}

/// Onboards a shared-tier tenant of `region` through `owner`, a store configured to serve that
/// region (see `Topology::regions`), as `bulkhead tenant create --region` does.
pub async fn create_tenant_in_region(owner: &Store, slug: &str, region: &str) -> TestTenant {
    onboard(
        owner,
        &NewTenant {
            slug: TenantSlug::parse(slug).expect("test slug"),
            display_name: format!("{slug} Inc."),
            plan: Plan::Standard,
            region: region.into(),
            placement: bulkhead_store::Placement::Shared,
        },
    )
    .await
}

/// Onboards `new` as `bulkhead tenant create` does: [`Store::onboard_tenant`] with a live
/// [`NewApiKey::bootstrap_admin`] key, hashed under [`test_pepper`].
async fn onboard(owner: &Store, new: &NewTenant) -> TestTenant {
    let environment = KeyEnvironment::Live;
    let admin_key = ApiKey::generate(environment);
    let pepper = test_pepper();
    let record = NewApiKey::bootstrap_admin(&admin_key, &pepper, environment);
    let (tenant, _) = owner
        .onboard_tenant(new, &record)
        .await
        .expect("onboard tenant");
    TestTenant {
        id: tenant.id,
        slug: new.slug.as_str().to_owned(),
        key: admin_key.expose_secret().to_owned(),
    }
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
