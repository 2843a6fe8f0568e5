//! The `bulkhead` command line.

mod audit;
mod keys;
mod quota;

use std::process::ExitCode;

use anyhow::Context;
use bulkhead_auth::KeyEnvironment;
use bulkhead_core::{TenantId, TenantSlug};
use bulkhead_store::lifecycle::moves::{MoveOptions, MoveProgress, MoveStep};
use bulkhead_store::placement::location::{DatabaseName, SchemaName};
use bulkhead_store::placement::registry::{NewTenant, Plan, Tenant, TenantStatus};
use bulkhead_store::{Placement, Store};
use clap::{Parser, Subcommand};
use serde_json::json;
use tokio::sync::watch;

use crate::config::{parse_environment, AppConfig, DatabaseArgs, ServeArgs};
use crate::http::state::AppState;
use crate::service::database::{load_master_key, load_peppers, Database};
use crate::service::worker::Worker;

/// Bulkhead: tenant isolation, credentials and audit for multi-tenant platforms.
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API (and, unless --no-worker, the job worker).
    Serve(Box<ServeArgs>),
    /// Apply database migrations as the owner role to every target (each region's shared
    /// schema, every tenant schema, every dedicated database), then exit; prints a report per
    /// target and exits 1 if any failed (it is left unchanged; run again to resume).
    Migrate {
        /// Targets migrated at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Run only the job worker; with --webhooks, only webhook delivery (run that one in an
    /// egress-only network segment: see docs/deployment.md).
    Worker {
        /// Deliver webhooks instead of running jobs.
        #[arg(long)]
        webhooks: bool,
        /// The platform's base domain (webhook URLs under it are refused).
        #[arg(long, env = "BULKHEAD_BASE_DOMAIN", default_value = "localhost")]
        base_domain: String,
        #[command(flatten)]
        egress: crate::config::EgressArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Attack a running deployment's tenant isolation with two tenants' admin keys; prints an
    /// operation × attack table and exits 1 on any leak or unexpected answer (docs/probe.md).
    Probe {
        /// Where the API listens, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        base_url: url::Url,
        /// The tenants' base domain (tenant `acme` is `acme.<base-domain>`).
        #[arg(long, env = "BULKHEAD_BASE_DOMAIN", default_value = "localhost")]
        base_domain: String,
        /// Tenant A's slug (its data is the target).
        #[arg(long)]
        tenant_a: String,
        /// Tenant A's admin key.
        #[arg(long, env = "BULKHEAD_PROBE_KEY_A", hide_env_values = true)]
        key_a: String,
        /// Tenant B's slug (the attacker).
        #[arg(long)]
        tenant_b: String,
        /// Tenant B's admin key.
        #[arg(long, env = "BULKHEAD_PROBE_KEY_B", hide_env_values = true)]
        key_b: String,
        /// Read the operations from this OpenAPI file instead of GET /openapi.json.
        #[arg(long)]
        openapi: Option<std::path::PathBuf>,
        /// Print the findings as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        action: TenantCommand,
    },
    /// Manage API keys (operator access to a tenant's keys), and scan files for leaked keys.
    Key {
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// Verify audit exports and checkpoints offline; audit retention.
    Audit {
        #[command(subcommand)]
        action: audit::AuditCommand,
    },
    /// Manage the access-token signing keys.
    SigningKey {
        #[command(subcommand)]
        action: SigningKeyCommand,
    },
    /// Manage a tenant's human users.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SigningKeyCommand {
    /// Rotate: the published next key starts signing, the current key stops signing but stays
    /// in the JWKS until every token it signed has expired, and a new next key is published.
    Rotate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List the published keys (kid, state, until when retired keys stay published) as JSON.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from BULKHEAD_USER_PASSWORD, or else from the first
    /// line of standard input; it is never a flag (flags end up in shell history).
    Create {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// Email (the login name; compared case-insensitively).
        #[arg(long)]
        email: String,
        /// Scopes, comma-separated: the most the user's tokens may carry (its roles decide
        /// what it may actually do).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Roles to assign, comma-separated (built-in: admin, developer, agent, viewer).
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        roles: Vec<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Create a key for a tenant and print it (shown once) with its metadata, as JSON.
    Create {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// Scopes, comma-separated (e.g. sessions:read,sessions:write).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Who the key acts for.
        #[arg(long, default_value = "tenant-admin")]
        principal: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List a tenant's keys (metadata only) as JSON.
    List {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke one key, or every key of a principal, at once.
    Revoke {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// The `key_…` id to revoke.
        #[arg(
            long,
            conflicts_with = "all_for_principal",
            required_unless_present = "all_for_principal"
        )]
        id: Option<String>,
        /// Revoke every key of this principal.
        #[arg(long)]
        all_for_principal: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List the keys older than the tenant's maximum key age; with --rotate, rotate them (new
    /// keys printed once; old keys keep working for the tenant's grace period).
    RotateDue {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// Rotate them, not just list them.
        #[arg(long)]
        rotate: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Find Bulkhead API keys in files (checksum-validated; prints only non-secret prefixes).
    /// Exits 1 if any key is found: usable as a pre-commit hook.
    Scan {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
        /// Also report whether each key found is still active (needs the database and pepper).
        #[arg(long)]
        check_live: bool,
        /// Skip files larger than this many bytes.
        #[arg(long, default_value_t = crate::service::scan::DEFAULT_MAX_FILE_BYTES)]
        max_file_bytes: u64,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and print it, with its bootstrap admin API key (shown once), as JSON.
    Create {
        /// Subdomain label: 3-48 of a-z, 0-9 and '-', starting with a letter.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// free, standard or enterprise.
        #[arg(long, default_value = "standard")]
        plan: String,
        /// Data-residency region (fixed; changing it later is a move).
        #[arg(long, default_value = "default")]
        region: String,
        /// Isolation tier: shared (RLS), schema (a schema of its own) or dedicated (a database
        /// of its own, given with --tenant-database-url).
        #[arg(long, default_value = "shared")]
        tier: String,
        #[command(flatten)]
        dedicated: DedicatedArgs,
        /// Environment of the admin key: live or test.
        #[arg(long, env = "BULKHEAD_KEY_ENVIRONMENT", default_value = "live", value_parser = parse_environment)]
        key_environment: KeyEnvironment,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List tenants as JSON.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Suspend a tenant (by slug or id): its requests get 403 and its jobs are refused.
    Suspend {
        /// Slug or `tnt_…` id.
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Show a tenant's quotas (usage and limit per kind), or set its override of one limit.
    Quota {
        #[command(subcommand)]
        action: QuotaCommand,
    },
    /// Reactivate a suspended tenant.
    Activate {
        /// Slug or `tnt_…` id.
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Move a tenant to another tier: copy, freeze writes briefly, verify every table's rows
    /// and checksum, switch, remove the old copy. Run the same command again to resume a move
    /// that was interrupted at any point. Prints the report as JSON.
    Move {
        /// Slug or `tnt_…` id.
        tenant: String,
        /// shared, schema or dedicated.
        #[arg(long, required_unless_present = "abandon")]
        to: Option<String>,
        /// Move to this data-residency region as well (every row goes to its databases; the
        /// process must be configured with that region). Default: stay in the tenant's region.
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        dedicated: DedicatedArgs,
        /// Stop after this step as a crash would (to rehearse resuming).
        #[arg(long, hide = true)]
        stop_after: Option<String>,
        /// Abandon the move in progress instead (only before its switch): lift the freeze and
        /// remove the partial copy.
        #[arg(long)]
        abandon: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// `bulkhead tenant quota …` (docs/quotas.md).
#[derive(Debug, Subcommand)]
pub(crate) enum QuotaCommand {
    /// Print the tenant's usage and limit of every kind as JSON.
    Show {
        /// Slug or `tnt_…` id.
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Set the tenant's limit of one kind (`default`: back to its plan's), audited as
    /// `quota.override` in the tenant's log.
    Set {
        /// Slug or `tnt_…` id.
        tenant: String,
        /// sessions, users, agents, api_keys, roles, role_assignments, webhook_endpoints,
        /// webhook_messages, tools, tool_versions or stored_bytes.
        kind: String,
        /// A number (0 or more), or `default`.
        limit: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Where a dedicated tenant database is.
#[derive(clap::Args)]
struct DedicatedArgs {
    /// The dedicated database's owner URL (the database must exist; Bulkhead migrates it). Its
    /// serving role is derived as for DATABASE_URL. Stored sealed with the master key.
    #[arg(long, env = "BULKHEAD_TENANT_DATABASE_URL", hide_env_values = true)]
    tenant_database_url: Option<String>,
    /// Its registry name (default: the tenant's slug with '-' as '_').
    #[arg(long)]
    tenant_database_name: Option<String>,
}

impl std::fmt::Debug for DedicatedArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL carries a password.
        f.debug_struct("DedicatedArgs")
            .field(
                "tenant_database_url",
                &self.tenant_database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("tenant_database_name", &self.tenant_database_name)
            .finish()
    }
}

impl DedicatedArgs {
    /// Resolves the placement `tier` names, registering the dedicated database when needed.
    async fn placement(
        &self,
        owner: &Store,
        tier: &str,
        slug: &TenantSlug,
        tenant: Option<TenantId>,
        region: &str,
        master: Option<&bulkhead_auth::MasterKey>,
    ) -> anyhow::Result<Placement> {
        // A tenant being created has no id yet: any existing use of the name is another's.
        let tenant = tenant.unwrap_or_default();
        match tier {
            "shared" => Ok(Placement::Shared),
            "schema" => Ok(Placement::Schema(SchemaName::for_tenant(TenantId::new()))),
            "dedicated" => {
                let url = self
                    .tenant_database_url
                    .as_deref()
                    .context("--tier dedicated needs --tenant-database-url")?;
                let name = self
                    .tenant_database_name
                    .clone()
                    .unwrap_or_else(|| slug.as_str().replace('-', "_"));
                let name = DatabaseName::parse(&name)
                    .context("invalid --tenant-database-name: a plain lowercase identifier")?;
                let master = master.context("a dedicated database needs the master key")?;
                // Registering a name again replaces its URLs: never under another tenant.
                let users = owner.database_users(&name).await?;
                if users.iter().any(|t| *t != tenant) {
                    anyhow::bail!(
                        "dedicated database `{name}` is already another tenant's; choose another --tenant-database-name"
                    );
                }
                let app_url = crate::service::database::derived_app_url(url)?;
                owner
                    .register_database(master, &name, region, url, &app_url)
                    .await
                    .context("cannot register and migrate the dedicated database")?;
                tracing::info!(
                    target: "bulkhead::audit",
                    action = "tenant_database.register",
                    outcome = "success",
                    tenant_id = %tenant,
                    resource_id = %name,
                    actor_id = "system:cli",
                    "dedicated database registered (URLs sealed)"
                );
                Ok(Placement::Dedicated(name))
            }
            other => anyhow::bail!("invalid tier {other:?}: expected shared, schema or dedicated"),
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::http::telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate { parallel, database } => {
            let db = Database::open(&database).await?;
            let result = migrate_everything(&db, &database, parallel).await;
            db.shutdown().await?;
            result
        }
        Command::Worker {
            webhooks,
            base_domain,
            egress,
            database,
        } => {
            let db = Database::open(&database).await?;
            db.migrate().await?;
            let master_key = load_master_key(&database).ok().map(std::sync::Arc::new);
            let store = db.app_store(database.max_connections, master_key).await?;
            let (stop, stopped) = watch::channel(false);
            // `--webhooks`: delivery only, for a process in an egress-only network segment; it
            // needs no audit log key. Otherwise the job worker and the audit sequencer.
            let (worker, sequencer) = if webhooks {
                let master = std::sync::Arc::new(load_master_key(&database)?);
                let dispatcher = webhook_dispatcher(&store, &egress, &base_domain, master)?;
                (tokio::spawn(dispatcher.run(stopped)), None)
            } else {
                let log_key = crate::service::audit_log::load_log_key(
                    &database.data_dir,
                    database.database_url.is_some(),
                )?;
                let sequencer = tokio::spawn(
                    crate::service::audit_log::Sequencer::new(store.clone(), log_key)
                        .run(stopped.clone()),
                );
                (
                    tokio::spawn(Worker::new(store.clone()).run(stopped)),
                    Some(sequencer),
                )
            };
            shutdown_signal().await;
            let _ = stop.send(true);
            worker.await.ok();
            if let Some(sequencer) = sequencer {
                sequencer.await.ok();
            }
            store.close().await;
            db.shutdown().await
        }
        Command::Probe {
            base_url,
            base_domain,
            tenant_a,
            key_a,
            tenant_b,
            key_b,
            openapi,
            json,
        } => {
            let report = crate::probe::run(crate::probe::ProbeConfig {
                base_url,
                base_domain,
                tenant_a: crate::probe::TenantCredentials {
                    slug: tenant_a,
                    admin_key: key_a,
                },
                tenant_b: crate::probe::TenantCredentials {
                    slug: tenant_b,
                    admin_key: key_b,
                },
                openapi_file: openapi,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            eprintln!("{}", report.summary());
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Tenant { action } => tenant(action).await,
        Command::Key { action } => keys::run(action).await,
        Command::SigningKey { action } => signing_key(action).await,
        Command::User { action } => user(action).await,
        Command::Audit { action } => audit::run(action).await,
    }
}

async fn signing_key(action: SigningKeyCommand) -> anyhow::Result<()> {
    match action {
        SigningKeyCommand::Rotate { database } => {
            let master = load_master_key(&database)?;
            let db = Database::open(&database).await?;
            let result = async {
                db.migrate().await?;
                let owner = db.owner_pool(2).await?;
                bulkhead_store::signing_keys::ensure_signing_keys(&owner, &master).await?;
                // Retired keys stay published for the longest token lifetime plus the
                // verification leeway, so every token they signed expires first.
                let keep = chrono::Duration::seconds(
                    bulkhead_auth::token::MAX_ACCESS_TOKEN_SECS
                        + bulkhead_auth::token::LEEWAY_SECS,
                );
                let rotation = bulkhead_store::signing_keys::rotate_signing_keys(
                    &owner,
                    &master,
                    chrono::Utc::now(),
                    keep,
                )
                .await?;
                owner.close().await;
                tracing::info!(
                    target: "bulkhead::audit",
                    action = "signing_key.rotate",
                    outcome = "success",
                    actor_id = "system:cli",
                    resource_id = %rotation.current,
                    "signing key rotated"
                );
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "current": rotation.current,
                        "next": rotation.next,
                        "retired": rotation.retired.as_ref().map(|(kid, until)| json!({"kid": kid, "published_until": until})),
                        "deleted": rotation.deleted,
                    }))?
                );
                anyhow::Ok(())
            }
            .await;
            db.shutdown().await?;
            result
        }
        SigningKeyCommand::List { database } => {
            with_owner(&database, |owner| async move {
                let keys = owner.published_signing_keys(chrono::Utc::now()).await?;
                let listed: Vec<_> = keys
                    .iter()
                    .map(|k| json!({"kid": k.kid, "state": format!("{:?}", k.state).to_lowercase(), "published_until": k.publish_until}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&listed)?);
                Ok(())
            })
            .await
        }
    }
}

async fn user(action: UserCommand) -> anyhow::Result<()> {
    match action {
        UserCommand::Create {
            tenant,
            email,
            scopes,
            roles,
            database,
        } => {
            let scopes = bulkhead_core::ScopeSet::parse_all(&scopes)
                .map_err(|_| anyhow::anyhow!("invalid --scopes: unknown scope"))?;
            let email = crate::http::routes::auth::normalise_email(&email)
                .ok_or_else(|| anyhow::anyhow!("invalid --email"))?;
            let password = match std::env::var("BULKHEAD_USER_PASSWORD") {
                Ok(p) => zeroize::Zeroizing::new(p),
                Err(_) => {
                    let mut line = zeroize::Zeroizing::new(String::new());
                    std::io::stdin().read_line(&mut line)?;
                    zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
                }
            };
            let hash = bulkhead_auth::password::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("password refused: {e}"))?;
            with_owner(&database, |owner| async move {
                let found = find_tenant(&owner, &tenant).await?;
                let ctx = bulkhead_core::TenantContext::new(
                    found.id,
                    bulkhead_core::Actor::System { component: "cli" },
                    bulkhead_core::RequestId::new(),
                );
                let mut tx = owner.begin(&ctx, bulkhead_store::Access::ReadWrite).await?;
                let created =
                    bulkhead_store::tenant::users::create(&mut tx, &email, &hash, &scopes)
                        .await
                        .map_err(|e| match e {
                            bulkhead_store::StoreError::Conflict { .. } => {
                                anyhow::anyhow!(
                                    "a user with that email already exists in this tenant"
                                )
                            }
                            other => anyhow::Error::new(other),
                        })?;
                bulkhead_store::audit::record(
                    &mut tx,
                    "user.create",
                    Some(&created.id.to_string()),
                    bulkhead_store::audit::Outcome::Success,
                    json!({ "scopes": scopes.to_strings() }),
                )
                .await?;
                for name in &roles {
                    let role = bulkhead_store::tenant::rbac::role_by_name(&mut tx, name)
                        .await
                        .map_err(|_| anyhow::anyhow!("no role named {name:?} in this tenant"))?;
                    let principal = bulkhead_store::tenant::rbac::Principal::User(created.id);
                    let assignment =
                        bulkhead_store::tenant::rbac::assign(&mut tx, role.id, principal).await?;
                    bulkhead_store::audit::record(
                        &mut tx,
                        "role.assign",
                        Some(&assignment.id.to_string()),
                        bulkhead_store::audit::Outcome::Success,
                        json!({ "role": role.name, "principal": principal }),
                    )
                    .await?;
                }
                tx.commit().await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "id": created.id, "email": created.email, "scopes": scopes.to_strings(),
                        "roles": roles,
                    }))?
                );
                Ok(())
            })
            .await
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config =
        AppConfig::new(&args.base_domain, args.key_environment).map_err(anyhow::Error::msg)?;
    config.trusted_proxies = args.trusted_proxies.clone();
    config
        .set_region_endpoints(&args.region_endpoints)
        .map_err(anyhow::Error::msg)?;
    let issuer = args
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    config.tokens = crate::service::tokens::TokenSettings::new(
        &issuer,
        &args.token_audience,
        std::time::Duration::from_secs(args.access_token_minutes.saturating_mul(60)),
    )
    .map_err(anyhow::Error::msg)?;
    config.tokens.max_delegation_depth = usize::from(args.max_delegation_depth);
    config.webhook_egress = args.egress.policy(&config.base_domain);
    config.connections = args.http.connections().map_err(anyhow::Error::msg)?;
    config.hashing = args.http.hashing().map_err(anyhow::Error::msg)?;
    let peppers = load_peppers(&args.database)?;
    let master = load_master_key(&args.database)?;
    let db = Database::open(&args.database).await?;
    let result = serve_with(&args, config, peppers, master, &db).await;
    db.shutdown().await?;
    result
}

async fn serve_with(
    args: &ServeArgs,
    config: AppConfig,
    peppers: crate::service::credentials::Peppers,
    master: bulkhead_auth::MasterKey,
    db: &Database,
) -> anyhow::Result<()> {
    db.migrate().await?;
    let master = std::sync::Arc::new(master);
    {
        // First start: create the signing keys (as the owner; the serving role only reads them).
        let owner = db.owner_pool(1).await?;
        if bulkhead_store::signing_keys::ensure_signing_keys(&owner, &master).await? {
            tracing::info!("created the access-token signing keys");
        }
        owner.close().await;
    }
    let store = db
        .app_store(args.database.max_connections, Some(master.clone()))
        .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let log_key = crate::service::audit_log::load_log_key(
        &args.database.data_dir,
        args.database.database_url.is_some(),
    )?;
    let (stop, stopped) = watch::channel(false);
    let worker =
        (!args.no_worker).then(|| tokio::spawn(Worker::new(store.clone()).run(stopped.clone())));
    let dispatcher = if args.no_worker {
        None
    } else {
        let dispatcher =
            webhook_dispatcher(&store, &args.egress, &args.base_domain, master.clone())?;
        Some(tokio::spawn(dispatcher.run(stopped.clone())))
    };
    let sequencer = (!args.no_worker).then(|| {
        tokio::spawn(
            crate::service::audit_log::Sequencer::new(store.clone(), log_key.clone())
                .run(stopped.clone()),
        )
    });
    tracing::info!(%address, base_domain = %config.base_domain, embedded = db.embedded.is_some(), "bulkhead is serving");
    let clock = bulkhead_core::Clock::system();
    let limits = crate::http::limits::RateLimits::from_env(clock.clone())?;
    let state = AppState::with_rate_limits(
        store.clone(),
        peppers,
        master,
        config,
        clock,
        Some(std::sync::Arc::new(limits)),
    );
    // A broken screening rule file is a start-up error, not a server that screens nothing.
    let rules = state
        .screener()
        .map_err(|e| anyhow::anyhow!("the screening rules do not load: {e}"))?;
    tracing::info!(rules_version = %rules.version(), "screening rules loaded");
    // Tool calls leave through the same guard (and the same operator proxy) as webhooks.
    let tool_client = bulkhead_webhooks::EgressClient::new(
        args.egress.policy(&args.base_domain),
        std::sync::Arc::new(bulkhead_webhooks::HickoryResolver::from_system()),
        &bulkhead_webhooks::EgressConfig {
            proxy: args.egress.webhook_proxy.clone(),
            user_agent: "Bulkhead-Tools/1".into(),
            ..Default::default()
        },
    )?;
    anyhow::ensure!(
        state.set_tool_client(tool_client),
        "the tool client was set twice"
    );
    // Fail closed: never serve checkpoints signed by anything but the configured key.
    anyhow::ensure!(
        state.set_audit(std::sync::Arc::new(
            crate::service::audit_log::AuditService::new(log_key)
        )),
        "the audit log key was set twice"
    );
    // Metrics on their own listener (loopback by default), never the API's. A bind failure is a
    // start-up error: an operator who asked for metrics gets them or a clear refusal.
    let metrics = match args.metrics_listen.0 {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen for metrics on {addr} (--metrics-listen; `off` turns it off)"
                )
            })?;
            tracing::info!(address = %listener.local_addr()?, "metrics are served");
            let mut stopped = stopped.clone();
            Some(tokio::spawn(crate::http::app::serve_metrics(
                listener,
                state.config().connections.clone(),
                async move {
                    let _ = stopped.changed().await;
                },
            )))
        }
        None => None,
    };
    let mut stopped_for_server = stopped;
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stopped_for_server.changed() => {}
        }
    };
    crate::http::app::serve(listener, state, shutdown).await?;
    let _ = stop.send(true);
    if let Some(metrics) = metrics {
        metrics.await.ok();
    }
    if let Some(worker) = worker {
        worker.await.ok();
    }
    if let Some(dispatcher) = dispatcher {
        dispatcher.await.ok();
    }
    if let Some(sequencer) = sequencer {
        sequencer.await.ok();
    }
    store.close().await;
    tracing::info!("bulkhead stopped");
    Ok(())
}

/// The webhook dispatcher with the production resolver and the operator's egress policy.
fn webhook_dispatcher(
    store: &Store,
    egress: &crate::config::EgressArgs,
    base_domain: &str,
    master: std::sync::Arc<bulkhead_auth::MasterKey>,
) -> anyhow::Result<std::sync::Arc<bulkhead_webhooks::delivery::Dispatcher>> {
    let config = bulkhead_webhooks::EgressConfig {
        proxy: egress.webhook_proxy.clone(),
        ..Default::default()
    };
    let client = bulkhead_webhooks::EgressClient::new(
        egress.policy(base_domain),
        std::sync::Arc::new(bulkhead_webhooks::HickoryResolver::from_system()),
        &config,
    )?;
    Ok(std::sync::Arc::new(
        bulkhead_webhooks::delivery::Dispatcher::new(
            store.clone(),
            client,
            bulkhead_core::Clock::system(),
            bulkhead_webhooks::delivery::DeliveryConfig::default(),
            master,
        ),
    ))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

async fn tenant(action: TenantCommand) -> anyhow::Result<()> {
    match action {
        TenantCommand::Create {
            slug,
            name,
            plan,
            region,
            tier,
            dedicated,
            key_environment,
            database,
        } => {
            // Validate everything before touching the database.
            let slug =
                TenantSlug::parse(&slug).map_err(|e| anyhow::anyhow!("invalid --slug: {e}"))?;
            let name = name.trim().to_owned();
            if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
                anyhow::bail!("invalid --name: 1 to 200 characters, no control characters");
            }
            let plan = Plan::parse(&plan)
                .context("invalid --plan: expected free, standard or enterprise")?;
            let peppers = load_peppers(&database)?;
            let master = load_master_key(&database).ok();
            with_owner(&database, |owner| async move {
                let placement = dedicated
                    .placement(&owner, &tier, &slug, None, &region, master.as_ref())
                    .await?;
                let new = NewTenant {
                    slug,
                    display_name: name,
                    plan,
                    region,
                    placement,
                };
                let onboarded =
                    crate::service::tenants::onboard(&owner, &peppers, key_environment, &new)
                        .await
                        .map_err(|e| match e {
                            bulkhead_store::StoreError::Conflict { .. } => {
                                anyhow::anyhow!("a tenant with slug `{}` already exists", new.slug)
                            }
                            other => anyhow::Error::new(other).context("cannot create the tenant"),
                        })?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "tenant": onboarded.tenant,
                        "admin_api_key_id": onboarded.admin_key_id,
                        "admin_api_key": onboarded.admin_key.expose_secret(),
                    }))?
                );
                eprintln!("Store admin_api_key now: it is not stored and will not be shown again.");
                Ok(())
            })
            .await
        }
        TenantCommand::List { database } => {
            with_owner(&database, |owner| async move {
                let tenants = owner.list_tenants().await?;
                println!("{}", serde_json::to_string_pretty(&tenants)?);
                Ok(())
            })
            .await
        }
        TenantCommand::Suspend { tenant, database } => {
            set_status(&database, &tenant, TenantStatus::Suspended).await
        }
        TenantCommand::Activate { tenant, database } => {
            set_status(&database, &tenant, TenantStatus::Active).await
        }
        TenantCommand::Quota { action } => quota::run(action).await,
        TenantCommand::Move {
            tenant,
            to,
            region,
            dedicated,
            stop_after,
            abandon,
            database,
        } => {
            let stop_after = match stop_after.as_deref() {
                None => None,
                Some(text) => Some(
                    MoveStep::ALL
                        .into_iter()
                        .find(|s| s.as_str() == text)
                        .context("invalid --stop-after: a step name")?,
                ),
            };
            let master = load_master_key(&database).ok();
            with_owner(&database, |owner| async move {
                let found = find_tenant(&owner, &tenant).await?;
                let target_region = region.clone().unwrap_or_else(|| found.region.clone());
                if abandon {
                    bulkhead_store::lifecycle::moves::abandon_move(&owner, found.id)
                        .await
                        .context("cannot abandon the move")?;
                    tracing::info!(
                        target: "bulkhead::audit",
                        action = "tenant.move.abandon",
                        outcome = "success",
                        tenant_id = %found.id,
                        actor_id = "system:cli",
                        "tenant move abandoned"
                    );
                    println!("{}", json!({ "abandoned": found.id }));
                    return Ok(());
                }
                let placement = dedicated
                    .placement(
                        &owner,
                        to.as_deref().unwrap_or_default(),
                        &found.slug,
                        Some(found.id),
                        &target_region,
                        master.as_ref(),
                    )
                    .await?;
                let bar = indicatif::ProgressBar::new(
                    (MoveStep::ALL.len()
                        + 2 * bulkhead_store::placement::location::TENANT_TABLES.len())
                        as u64,
                );
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let progress = |p: MoveProgress| match p {
                    MoveProgress::Step(step) => {
                        bar.inc(1);
                        bar.set_message(step.as_str());
                    }
                    MoveProgress::Table { step, table, .. } => {
                        bar.inc(1);
                        bar.set_message(format!("{} {table}", step.as_str()));
                    }
                };
                let result = bulkhead_store::lifecycle::moves::move_tenant(
                    &owner,
                    found.id,
                    placement,
                    MoveOptions {
                        to_region: region,
                        stop_after,
                        progress: Some(&progress),
                    },
                )
                .await;
                bar.finish_and_clear();
                let report =
                    result.context("the move stopped; run the same command again to resume")?;
                tracing::info!(
                    target: "bulkhead::audit",
                    action = "tenant.move",
                    outcome = "success",
                    tenant_id = %found.id,
                    actor_id = "system:cli",
                    "tenant moved"
                );
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            })
            .await
        }
    }
}

/// `bulkhead migrate`: the shared schemas first, then every tenant schema and dedicated
/// database, `parallel` at a time, with a progress bar and a JSON report per target.
async fn migrate_everything(
    db: &Database,
    database: &DatabaseArgs,
    parallel: usize,
) -> anyhow::Result<()> {
    db.migrate().await?;
    let master = load_master_key(database).ok().map(std::sync::Arc::new);
    let owner = db.owner_store(master).await?;
    let targets = owner.migration_targets().await?;
    let bar = indicatif::ProgressBar::new(targets.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} targets {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let outcomes = bulkhead_store::placement::tiers::migrate_all(targets, parallel, |outcome| {
        bar.inc(1);
        bar.set_message(outcome.label.clone());
    })
    .await;
    bar.finish_and_clear();
    owner.close().await;
    let mut failed = 0;
    let report: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(applied) => json!({ "target": o.label, "applied": applied, "ms": o.elapsed.as_millis() }),
            Err(err) => {
                failed += 1;
                json!({ "target": o.label, "error": format!("{err:#}"), "ms": o.elapsed.as_millis() })
            }
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "targets": report, "failed": failed }))?
    );
    if failed > 0 {
        anyhow::bail!("{failed} migration target(s) failed and were left unchanged; run `bulkhead migrate` again to resume");
    }
    Ok(())
}

async fn set_status(
    database: &DatabaseArgs,
    tenant: &str,
    status: TenantStatus,
) -> anyhow::Result<()> {
    let tenant = tenant.to_owned();
    with_owner(database, |owner| async move {
        let found = find_tenant(&owner, &tenant).await?;
        // Who ran it, for the tenant's audit event: the operating-system account.
        let operator = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        let operator = format!("cli:{}", operator.chars().take(64).collect::<String>());
        let updated = owner
            .set_tenant_status_by(found.id, status, &operator)
            .await
            .map_err(|err| match err {
                bulkhead_store::StoreError::WrongRegion(region) => anyhow::anyhow!(
                    "tenant `{tenant}` was left unchanged: its region `{region}` is not \
                     configured here (its anchor there must change too); run this where \
                     region `{region}` is reachable"
                ),
                other => anyhow::Error::new(other).context(format!(
                    "changing the status of tenant `{tenant}` failed; nothing reported as done"
                )),
            })?;
        tracing::info!(
            target: "bulkhead::audit",
            action = if status == TenantStatus::Active { "tenant.activate" } else { "tenant.suspend" },
            outcome = "success",
            tenant_id = %updated.id,
            actor_id = "system:cli",
            "tenant status changed"
        );
        println!("{}", serde_json::to_string_pretty(&updated)?);
        Ok(())
    })
    .await
}

pub(crate) async fn find_tenant(owner: &Store, text: &str) -> anyhow::Result<Tenant> {
    let found = if text.starts_with("tnt_") {
        owner.tenant_by_id(TenantId::parse(text)?).await?
    } else {
        owner.tenant_by_slug(&TenantSlug::parse(text)?).await?
    };
    found.with_context(|| format!("no tenant `{text}`"))
}

/// Opens the database, migrates, runs `work` with a store on the owner role, and shuts down.
pub(crate) async fn with_owner<F, Fut>(database: &DatabaseArgs, work: F) -> anyhow::Result<()>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let db = Database::open(database).await?;
    let result = async {
        db.migrate().await?;
        let master = load_master_key(database).ok().map(std::sync::Arc::new);
        let owner = db.owner_store(master).await?;
        let result = work(owner.clone()).await;
        owner.close().await;
        result
    }
    .await;
    db.shutdown().await?;
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_line_is_well_formed() {
        // clap checks flag clashes (two arguments claiming one --name) only when a command is
        // built; this builds every subcommand.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
