//! Opening the database: an external PostgreSQL from `DATABASE_URL`, or the embedded default.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use bulkhead_auth::{KeyPepper, MasterKey};
use bulkhead_store::cluster::embedded::{EmbeddedOptions, EmbeddedPostgres};
use bulkhead_store::cluster::niced;
use bulkhead_store::cluster::{pg_roles as roles, provision};
use bulkhead_store::placement::location::DedicatedLimits;
use bulkhead_store::placement::migrate;
use bulkhead_store::{PoolRole, Store, Topology};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::config::environment::Secret;
use crate::config::{DatabaseArgs, HeavyReadPriority};
use crate::service::credentials::Peppers;

/// Name of the database in the embedded cluster.
pub const EMBEDDED_DATABASE: &str = "bulkhead";

/// An opened database: where to connect as owner and as the application role.
pub struct Database {
    /// Owner role: migrations and operator commands.
    pub owner_options: PgConnectOptions,
    /// Application role: serving.
    pub app_options: PgConnectOptions,
    /// The embedded cluster, when this process started one.
    pub embedded: Option<EmbeddedPostgres>,
    /// The region whose data is in this database (which also holds the registry).
    pub default_region: String,
    /// Further regions, each its own database.
    pub regions: Vec<RegionDatabase>,
    /// Whether heavy reads of the default region run on reniced backends.
    pub lower_heavy_reads: bool,
}

/// One further region's database.
pub struct RegionDatabase {
    /// Region name.
    pub name: String,
    /// Owner role.
    pub owner_options: PgConnectOptions,
    /// Application role.
    pub app_options: PgConnectOptions,
    /// Its private cluster, in embedded mode.
    pub embedded: Option<EmbeddedPostgres>,
}

impl std::fmt::Debug for RegionDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Connect options carry passwords: never print them.
        f.debug_struct("RegionDatabase")
            .field("name", &self.name)
            .field("embedded", &self.embedded.is_some())
            .finish_non_exhaustive()
    }
}

fn region_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The serving role's options for an owner URL: `bulkhead_app` with the password from
/// `BULKHEAD_APP_DATABASE_PASSWORD` (never the owner's).
fn derived_app_options(owner: &PgConnectOptions) -> PgConnectOptions {
    let password = Secret::AppDatabasePassword.read().unwrap_or_default();
    owner.clone().username(roles::APP_ROLE).password(&password)
}

/// The serving role's URL for an owner URL, as [`derived_app_options`] derives its options.
pub fn derived_app_url(owner_url: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(owner_url).context("not a valid PostgreSQL URL")?;
    let password = Secret::AppDatabasePassword.read();
    url.set_username(roles::APP_ROLE)
        .map_err(|_| anyhow::anyhow!("the URL cannot carry a user name"))?;
    url.set_password(
        password
            .as_deref()
            .map(String::as_str)
            .filter(|p| !p.is_empty()),
    )
    .map_err(|_| anyhow::anyhow!("the URL cannot carry a password"))?;
    Ok(url.into())
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Connect options carry passwords: never print them.
        f.debug_struct("Database")
            .field("embedded", &self.embedded.is_some())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens the configured database, starting the embedded cluster when no URL is given.
    pub async fn open(args: &DatabaseArgs) -> anyhow::Result<Self> {
        match &args.database_url {
            Some(url) => {
                let owner_options = PgConnectOptions::from_str(url)
                    .context("DATABASE_URL is not a valid PostgreSQL URL")?;
                let app_options = match &args.app_database_url {
                    Some(app_url) => PgConnectOptions::from_str(app_url)
                        .context("BULKHEAD_APP_DATABASE_URL is not a valid PostgreSQL URL")?,
                    // Never reuse the owner's password for the application role.
                    None => derived_app_options(&owner_options),
                };
                let mut db = Self {
                    owner_options: quiet(owner_options),
                    app_options: quiet(app_options),
                    embedded: None,
                    default_region: String::new(),
                    regions: Vec::new(),
                    lower_heavy_reads: args.heavy_read_priority == HeavyReadPriority::Lowered,
                };
                db.open_regions(args).await?;
                Ok(db)
            }
            None => {
                let mut db = Self::open_embedded(&args.data_dir).await?;
                db.lower_heavy_reads = args.heavy_read_priority != HeavyReadPriority::Normal;
                db.open_regions(args).await?;
                Ok(db)
            }
        }
    }

    async fn open_regions(&mut self, args: &DatabaseArgs) -> anyhow::Result<()> {
        if !region_name_ok(&args.default_region) {
            anyhow::bail!(
                "invalid --default-region: 1-32 of a-z, 0-9 and '-', starting with a letter"
            );
        }
        self.default_region = args.default_region.clone();
        for spec in &args.regions {
            let Some((name, target)) = spec.split_once('=') else {
                anyhow::bail!("invalid --region-database: expected NAME=URL or NAME=embedded");
            };
            if !region_name_ok(name) || name == args.default_region {
                anyhow::bail!("invalid --region-database name {name:?}: 1-32 of a-z, 0-9 and '-', not the default region");
            }
            if self.regions.iter().any(|r| r.name == name) {
                anyhow::bail!("--region-database {name} is given twice");
            }
            let region = if target == "embedded" {
                let dir = args.data_dir.join("regions").join(name);
                let cluster = Self::open_embedded(&dir).await?;
                RegionDatabase {
                    name: name.to_owned(),
                    owner_options: cluster.owner_options,
                    app_options: cluster.app_options,
                    embedded: cluster.embedded,
                }
            } else {
                let owner = PgConnectOptions::from_str(target).with_context(|| {
                    format!("--region-database {name}: not a valid PostgreSQL URL")
                })?;
                RegionDatabase {
                    name: name.to_owned(),
                    app_options: quiet(derived_app_options(&owner)),
                    owner_options: quiet(owner),
                    embedded: None,
                }
            };
            self.regions.push(region);
        }
        Ok(())
    }

    async fn open_embedded(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        let cluster = EmbeddedPostgres::start(EmbeddedOptions {
            data_dir: data_dir.join("pg"),
            ephemeral: false,
            durable_writes: true,
            search_path: crate::config::environment::binary_search_path(),
        })
        .await?;
        let mut superuser =
            PgConnection::connect_with(&cluster.connect_options(cluster.superuser(), "postgres"))
                .await
                .context("cannot connect to the embedded cluster")?;
        provision::ensure_owner_role(&mut superuser).await?;
        provision::ensure_database(&mut superuser, EMBEDDED_DATABASE).await?;
        superuser.close().await.ok();
        Ok(Self {
            owner_options: quiet(cluster.connect_options(provision::OWNER_ROLE, EMBEDDED_DATABASE)),
            app_options: quiet(cluster.connect_options(roles::APP_ROLE, EMBEDDED_DATABASE)),
            embedded: Some(cluster),
            default_region: String::new(),
            regions: Vec::new(),
            lower_heavy_reads: true,
        })
    }

    /// Applies migrations as the owner to the shared schema of every region's database (tenant
    /// schemas and dedicated databases: `bulkhead migrate`).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let owner = self.owner_pool(2).await?;
        migrate::run(&owner).await.context("migrations failed")?;
        owner.close().await;
        for region in &self.regions {
            let owner = PgPoolOptions::new()
                .max_connections(2)
                .connect_with(region.owner_options.clone())
                .await
                .with_context(|| format!("cannot connect to region {}", region.name))?;
            migrate::run(&owner)
                .await
                .with_context(|| format!("migrations failed in region {}", region.name))?;
            owner.close().await;
        }
        Ok(())
    }

    /// An owner store over every region (operator commands, moves, `bulkhead migrate`).
    pub async fn owner_store(
        &self,
        master: Option<std::sync::Arc<MasterKey>>,
    ) -> anyhow::Result<Store> {
        let registry = self.owner_pool(4).await?;
        let mut regions = Vec::new();
        for region in &self.regions {
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(region.owner_options.clone())
                .await
                .with_context(|| {
                    format!("cannot connect to region {} as the owner", region.name)
                })?;
            regions.push((region.name.clone(), pool));
        }
        Ok(Store::with_topology(Topology {
            registry,
            default_region: self.default_region.clone(),
            regions,
            role: PoolRole::Owner,
            master_key: master,
            dedicated: DedicatedLimits::default(),
            heavy_reads: None,
        }))
    }

    /// A pool of owner connections (operator commands).
    pub async fn owner_pool(&self, max: u32) -> anyhow::Result<sqlx::PgPool> {
        PgPoolOptions::new()
            .max_connections(max)
            .connect_with(self.owner_options.clone())
            .await
            .context("cannot connect as the owner role")
    }

    /// The serving store over every region, each pool checked to be subject to row-level
    /// security. `master` opens dedicated databases' sealed URLs.
    pub async fn app_store(
        &self,
        max_connections: u32,
        master: Option<std::sync::Arc<MasterKey>>,
    ) -> anyhow::Result<Store> {
        let registry = Store::connect_app(self.app_options.clone(), max_connections)
            .await
            .context("cannot open the serving pool as the application role")?;
        let mut regions = Vec::new();
        for region in &self.regions {
            let store = Store::connect_app(region.app_options.clone(), max_connections)
                .await
                .with_context(|| format!("cannot open region {}'s serving pool", region.name))?;
            regions.push((region.name.clone(), store.topology().registry.clone()));
        }
        let default_region = self.default_region.clone();
        Ok(registry.reconfigured(|t| {
            t.default_region = default_region;
            t.regions = regions;
            t.master_key = master;
        }))
    }

    /// The store `serve` answers requests with: [`Database::app_store`] plus, when heavy reads
    /// run at a lowered priority, their own pool of reniced backends (see
    /// `bulkhead_store::cluster::niced`), half the serving pool's size (a tenant runs one heavy
    /// read at a time, so it only needs room for the tenants listing at once). Only `serve`
    /// marks reads heavy; the worker has no use for the pool.
    pub async fn serving_store(
        &self,
        max_connections: u32,
        master: Option<std::sync::Arc<MasterKey>>,
    ) -> anyhow::Result<Store> {
        let store = self.app_store(max_connections, master).await?;
        if !self.lower_heavy_reads {
            return Ok(store);
        }
        let heavy_reads =
            niced::connect_niced(self.app_options.clone(), (max_connections / 2).max(2))
                .await
                .context("cannot open the heavy-read pool as the application role")?;
        Ok(store.reconfigured(|t| t.heavy_reads = Some(heavy_reads)))
    }

    /// Stops the embedded clusters this process started.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        for region in self.regions {
            if let Some(cluster) = region.embedded {
                cluster.stop().await?;
            }
        }
        if let Some(cluster) = self.embedded {
            cluster.stop().await?;
        }
        Ok(())
    }
}

fn quiet(options: PgConnectOptions) -> PgConnectOptions {
    options.log_statements(tracing::log::LevelFilter::Trace)
}

/// The current pepper ([`load_pepper`]) and the previous ones from
/// `BULKHEAD_KEY_PEPPER_PREVIOUS` (comma-separated, each `v<N>:base64:…`), whose keys still verify
/// and are re-hashed under the current pepper on first use.
pub fn load_peppers(args: &DatabaseArgs) -> anyhow::Result<Peppers> {
    let current = load_pepper(args)?;
    let previous = match Secret::PreviousKeyPeppers.read() {
        Some(list) => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                KeyPepper::from_config_str(s)
                    .map_err(|e| anyhow::anyhow!("BULKHEAD_KEY_PEPPER_PREVIOUS is unusable: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    Peppers::new(current, previous).map_err(anyhow::Error::msg)
}

/// The key pepper: `BULKHEAD_KEY_PEPPER`, or in embedded mode a file generated once into the data
/// directory with mode 0600. With an external database and no pepper, refuse to start: a
/// generated pepper would silently invalidate every key on the next machine.
pub fn load_pepper(args: &DatabaseArgs) -> anyhow::Result<KeyPepper> {
    load_server_secret(
        args,
        Secret::KeyPepper,
        "key-pepper",
        |text| KeyPepper::from_config_str(text).map_err(|e| e.to_string()),
        || {
            let pepper = KeyPepper::generate(1);
            let text = pepper.to_config_string();
            (pepper, text)
        },
    )
}

/// The master key that seals token signing keys: `BULKHEAD_MASTER_KEY`, or in embedded mode a
/// file generated once into the data directory (0600). Required with an external database, for
/// the same reason as the pepper: a generated one would make every stored signing key unusable.
pub fn load_master_key(args: &DatabaseArgs) -> anyhow::Result<MasterKey> {
    load_server_secret(
        args,
        Secret::MasterKey,
        "master-key",
        |text| MasterKey::from_config_str(text).map_err(|e| e.to_string()),
        || {
            let key = MasterKey::generate();
            let text = key.to_config_string();
            (key, text)
        },
    )
}

/// Writes a secret generated on first start to `path`, which must not exist yet: readable by
/// the owner only (0600), and synced before anything uses it.
pub(crate) fn write_new_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{text}")?;
    file.sync_all()?;
    Ok(())
}

/// A server secret from `env`, else (embedded mode only) from `<data-dir>/<file>`, generated
/// there once with mode 0600.
fn load_server_secret<T>(
    args: &DatabaseArgs,
    secret: Secret,
    file: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    generate: impl FnOnce() -> (T, String),
) -> anyhow::Result<T> {
    let env = secret.name();
    if let Some(text) = secret.read() {
        return parse(&text).map_err(|e| anyhow::anyhow!("{env} is unusable: {e}"));
    }
    if args.database_url.is_some() {
        anyhow::bail!(
            "{env} is not set: with DATABASE_URL, set it to at least 32 random bytes (for \
             example `base64:` followed by the output of `openssl rand -base64 32`)"
        );
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let path = args.data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            parse(&text).map_err(|e| anyhow::anyhow!("{} is unusable: {e}", path.display()))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let (secret, text) = generate();
            let text = zeroize::Zeroizing::new(text);
            write_new_secret(&path, &text)?;
            tracing::info!(path = %path.display(), "generated {file}");
            Ok(secret)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}
