//! Opening the database: an external PostgreSQL from `DATABASE_URL`, or the embedded default.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use bulkhead_auth::{KeyPepper, MasterKey};
use bulkhead_store::embedded::{EmbeddedOptions, EmbeddedPostgres};
use bulkhead_store::{migrate, provision, roles, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::config::DatabaseArgs;
use crate::credentials::Peppers;

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
                    None => {
                        // Never reuse the owner's password for the application role.
                        let password =
                            std::env::var("BULKHEAD_APP_DATABASE_PASSWORD").unwrap_or_default();
                        owner_options
                            .clone()
                            .username(roles::APP_ROLE)
                            .password(&password)
                    }
                };
                Ok(Self {
                    owner_options: quiet(owner_options),
                    app_options: quiet(app_options),
                    embedded: None,
                })
            }
            None => Self::open_embedded(&args.data_dir).await,
        }
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
        })
    }

    /// Applies migrations as the owner.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let owner = self.owner_pool(2).await?;
        migrate::run(&owner).await.context("migrations failed")?;
        owner.close().await;
        Ok(())
    }

    /// A pool of owner connections (operator commands).
    pub async fn owner_pool(&self, max: u32) -> anyhow::Result<sqlx::PgPool> {
        PgPoolOptions::new()
            .max_connections(max)
            .connect_with(self.owner_options.clone())
            .await
            .context("cannot connect as the owner role")
    }

    /// The serving store, checked to be subject to row-level security.
    pub async fn app_store(&self, max_connections: u32) -> anyhow::Result<Store> {
        Store::connect_app(self.app_options.clone(), max_connections)
            .await
            .context("cannot open the serving pool as the application role")
    }

    /// Stops the embedded cluster, if this process started one.
    pub async fn shutdown(self) -> anyhow::Result<()> {
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
    let previous = match std::env::var("BULKHEAD_KEY_PEPPER_PREVIOUS") {
        Ok(list) => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                KeyPepper::from_config_str(s)
                    .map_err(|e| anyhow::anyhow!("BULKHEAD_KEY_PEPPER_PREVIOUS is unusable: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        Err(_) => Vec::new(),
    };
    Peppers::new(current, previous).map_err(anyhow::Error::msg)
}

/// The key pepper: `BULKHEAD_KEY_PEPPER`, or in embedded mode a file generated once into the data
/// directory with mode 0600. With an external database and no pepper, refuse to start: a
/// generated pepper would silently invalidate every key on the next machine.
pub fn load_pepper(args: &DatabaseArgs) -> anyhow::Result<KeyPepper> {
    load_server_secret(
        args,
        "BULKHEAD_KEY_PEPPER",
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
        "BULKHEAD_MASTER_KEY",
        "master-key",
        |text| MasterKey::from_config_str(text).map_err(|e| e.to_string()),
        || {
            let key = MasterKey::generate();
            let text = key.to_config_string();
            (key, text)
        },
    )
}

/// A server secret from `env`, else (embedded mode only) from `<data-dir>/<file>`, generated
/// there once with mode 0600.
fn load_server_secret<T>(
    args: &DatabaseArgs,
    env: &str,
    file: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    generate: impl FnOnce() -> (T, String),
) -> anyhow::Result<T> {
    if let Ok(text) = std::env::var(env) {
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
            let mut handle = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            writeln!(handle, "{}", &*text)?;
            handle.sync_all()?;
            tracing::info!(path = %path.display(), "generated {file}");
            Ok(secret)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}
