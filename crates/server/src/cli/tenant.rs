//! `bulkhead tenant …` and `bulkhead migrate`: onboarding, placement, moves, status.

use anyhow::Context;
use bulkhead_auth::KeyEnvironment;
use bulkhead_store::lifecycle::moves::{MoveOptions, MoveProgress, MoveStep};
use bulkhead_store::placement::registry::TenantStatus;
use clap::Subcommand;
use serde_json::{json, Value};

use super::lookup::{find_tenant, operator_ctx, with_owner};
use super::print_json;
use super::quota::QuotaCommand;
use super::remote;
use crate::config::{parse_environment, DatabaseArgs};
use crate::service::audit_line::AuditLine;
use crate::service::database::{load_master_key, load_peppers, Database};
use crate::service::tenants::{self, DedicatedDatabase, TenantChangeError, TenantRequest};

#[derive(Debug, Subcommand)]
pub(super) enum TenantCommand {
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
    /// Show one tenant (by slug or id) as JSON.
    Show {
        /// Slug or `tnt_…` id.
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Change a tenant's plan (free, standard or enterprise); prints the tenant as JSON.
    Plan {
        /// Slug or `tnt_…` id.
        tenant: String,
        /// free, standard or enterprise.
        plan: String,
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
    /// Delete a tenant: schedule its deletion (it is suspended at once and purged when the
    /// grace period ends; a second run changes nothing), or purge it now (`--now`), or cancel the
    /// scheduled deletion (`--cancel`). Prints the deletion record (with `--now`, and the erasure
    /// receipt) as JSON.
    Delete {
        /// Slug or `tnt_…` id.
        tenant: String,
        /// Seconds before the purge: 0 to 7776000 (90 days); default 604800 (7 days).
        #[arg(long, conflicts_with = "cancel")]
        grace_period: Option<i64>,
        /// Purge now: every row in every location, then the erasure receipt.
        #[arg(long, conflicts_with = "cancel")]
        now: bool,
        /// Cancel the scheduled deletion (before its purge has begun).
        #[arg(long)]
        cancel: bool,
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
    /// Export everything a tenant owns to a tar archive: its rows as NDJSON per table (secrets
    /// stay sealed), its audit log with a signed checkpoint (`bulkhead audit verify`), and a
    /// manifest with counts and SHA-256s. Checked before it is renamed into place.
    Export {
        /// Slug or `tnt_…` id.
        tenant: String,
        /// The archive to write.
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Import a tenant from an export archive into this deployment (same id and slug; its API
    /// keys and passwords work where the exporting deployment's peppers are; its webhook and
    /// tool secrets never open again: the archive does not carry the tenant's data key, so
    /// rotate them). All or nothing; prints the tenant and its row counts as JSON.
    Import {
        /// The archive `tenant export` wrote.
        archive: std::path::PathBuf,
        /// shared, schema or dedicated.
        #[arg(long, default_value = "shared")]
        tier: String,
        /// Data-residency region (default: the exported one).
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        dedicated: DedicatedArgs,
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

/// Where a dedicated tenant database is.
#[derive(clap::Args)]
pub(super) struct DedicatedArgs {
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
    /// The dedicated database these flags name, if any.
    fn database(&self) -> Option<DedicatedDatabase> {
        self.tenant_database_url
            .clone()
            .map(|owner_url| DedicatedDatabase {
                owner_url,
                name: self.tenant_database_name.clone(),
            })
    }
}

pub(super) async fn run(action: TenantCommand) -> anyhow::Result<()> {
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
            if let Some(server) = remote::running(&database).await? {
                // The running server onboards it, with its own key environment (a key of the
                // other one would be refused by that server anyway).
                if tier == "dedicated" || dedicated.tenant_database_url.is_some() {
                    anyhow::bail!(
                        "a dedicated tenant is onboarded with direct owner access to the \
                         database, which the running server holds: stop it and run this again"
                    );
                }
                let created = server
                    .call(
                        http::Method::POST,
                        "/operator/v1/tenants",
                        Some(json!({
                            "slug": slug, "name": name, "plan": plan,
                            "region": region, "tier": tier,
                        })),
                    )
                    .await
                    .context("cannot create the tenant")?;
                return print_created(&created);
            }
            let peppers = load_peppers(&database)?;
            let master = load_master_key(&database).ok();
            let request = TenantRequest {
                slug,
                name,
                plan,
                region,
                tier,
                dedicated: dedicated.database(),
            };
            with_owner(&database, |owner| async move {
                let operator = crate::config::environment::operator_account();
                let onboarded = tenants::create(
                    &owner,
                    &peppers,
                    master.as_ref(),
                    key_environment,
                    request,
                    &operator,
                )
                .await
                .map_err(|e| match e {
                    TenantChangeError::Store(other) => {
                        anyhow::Error::new(other).context("cannot create the tenant")
                    }
                    other => anyhow::anyhow!("{other}"),
                })?;
                print_created(&json!({
                    "tenant": onboarded.tenant,
                    "admin_api_key_id": onboarded.admin_key_id,
                    "admin_api_key": onboarded.admin_key.expose_secret(),
                }))
            })
            .await
        }
        TenantCommand::List { database } => {
            if let Some(server) = remote::running(&database).await? {
                let mut tenants = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let path = match &cursor {
                        Some(after) => format!("/operator/v1/tenants?limit=200&cursor={after}"),
                        None => "/operator/v1/tenants?limit=200".to_owned(),
                    };
                    let page = server.call(http::Method::GET, &path, None).await?;
                    if let Some(data) = page["data"].as_array() {
                        tenants.extend(data.iter().cloned());
                    }
                    match page["next_cursor"].as_str() {
                        Some(next) => cursor = Some(remote::segment(next)?.to_owned()),
                        None => break,
                    }
                }
                return print_json(&Value::Array(tenants));
            }
            with_owner(&database, |owner| async move {
                let mut tenants = owner.list_tenants().await?;
                // The operator API's order: by id (time-ordered).
                tenants.sort_by_key(|t| t.id.to_string());
                print_json(&serde_json::to_value(&tenants)?)
            })
            .await
        }
        TenantCommand::Show { tenant, database } => {
            if let Some(server) = remote::running(&database).await? {
                let path = format!("/operator/v1/tenants/{}", remote::segment(&tenant)?);
                let found = server
                    .call(http::Method::GET, &path, None)
                    .await
                    .map_err(|e| remote::not_found_as_cli(e, &tenant))?;
                return print_json(&found);
            }
            with_owner(&database, |owner| async move {
                let found = find_tenant(&owner, &tenant).await?;
                print_json(&serde_json::to_value(&found)?)
            })
            .await
        }
        TenantCommand::Plan {
            tenant,
            plan,
            database,
        } => {
            if let Some(server) = remote::running(&database).await? {
                let path = format!("/operator/v1/tenants/{}", remote::segment(&tenant)?);
                let updated = server
                    .call(http::Method::PATCH, &path, Some(json!({ "plan": plan })))
                    .await
                    .map_err(|e| remote::not_found_as_cli(e, &tenant))?;
                return print_json(&updated);
            }
            let plan = tenants::parse_plan(&plan).map_err(|e| anyhow::anyhow!("{e}"))?;
            with_owner(&database, |owner| async move {
                let found = find_tenant(&owner, &tenant).await?;
                let operator = crate::config::environment::operator_account();
                let updated = tenants::set_plan(&owner, found.id, plan, &operator)
                    .await
                    .with_context(|| format!("changing the plan of tenant `{tenant}` failed"))?;
                print_json(&serde_json::to_value(&updated)?)
            })
            .await
        }
        TenantCommand::Suspend { tenant, database } => {
            set_status(&database, &tenant, TenantStatus::Suspended).await
        }
        TenantCommand::Activate { tenant, database } => {
            set_status(&database, &tenant, TenantStatus::Active).await
        }
        TenantCommand::Quota { action } => super::quota::run(action).await,
        TenantCommand::Export {
            tenant,
            output,
            database,
        } => super::portability::export(tenant, output, database).await,
        TenantCommand::Import {
            archive,
            tier,
            region,
            dedicated,
            database,
        } => {
            super::portability::import(archive, tier, region, dedicated.database(), database).await
        }
        TenantCommand::Delete {
            tenant,
            grace_period,
            now,
            cancel,
            database,
        } => {
            use super::tenant_delete::{run, DeleteAction};
            let action = match (now, cancel) {
                (_, true) => DeleteAction::Cancel,
                (true, false) => DeleteAction::PurgeNow,
                (false, false) => DeleteAction::Schedule,
            };
            run(&database, &tenant, grace_period, action).await
        }
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
            if let Some(server) = remote::running(&database).await? {
                let ask = super::tenant_move::MoveRequest {
                    tenant: &tenant,
                    to: to.as_deref(),
                    region: region.as_deref(),
                    names_database: dedicated.database().is_some(),
                    stops_early: stop_after.is_some(),
                    abandon,
                };
                return super::tenant_move::through_server(server, ask).await;
            }
            let master = load_master_key(&database).ok();
            with_owner(&database, |owner| async move {
                let found = find_tenant(&owner, &tenant).await?;
                let target_region = region.clone().unwrap_or_else(|| found.region.clone());
                if abandon {
                    bulkhead_store::lifecycle::moves::abandon_move(&owner, found.id)
                        .await
                        .context("cannot abandon the move")?;
                    AuditLine::success("tenant.move.abandon")
                        .by(&operator_ctx(found.id))
                        .info("tenant move abandoned");
                    println!("{}", json!({ "abandoned": found.id }));
                    return Ok(());
                }
                let placement = tenants::placement(
                    &owner,
                    to.as_deref().unwrap_or_default(),
                    dedicated.database().as_ref(),
                    &found.slug,
                    Some(found.id),
                    &target_region,
                    master.as_ref(),
                    &crate::config::environment::operator_account(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
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
                AuditLine::success("tenant.move")
                    .by(&operator_ctx(found.id))
                    .info("tenant moved");
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            })
            .await
        }
    }
}

/// `bulkhead migrate`: the shared schemas first, then every tenant schema and dedicated
/// database, `parallel` at a time, with a progress bar and a JSON report per target.
pub(super) async fn migrate_everything(
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
    let report: Vec<Value> = outcomes
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

/// Prints a new tenant and its admin key, the same JSON whether the running server or this
/// process onboarded it.
fn print_created(created: &Value) -> anyhow::Result<()> {
    print_json(created)?;
    eprintln!("Store admin_api_key now: it is not stored and will not be shown again.");
    Ok(())
}

async fn set_status(
    database: &DatabaseArgs,
    tenant: &str,
    status: TenantStatus,
) -> anyhow::Result<()> {
    if let Some(server) = remote::running(database).await? {
        let verb = if status == TenantStatus::Active {
            "activate"
        } else {
            "suspend"
        };
        let path = format!("/operator/v1/tenants/{}/{verb}", remote::segment(tenant)?);
        let updated = server
            .call(http::Method::POST, &path, None)
            .await
            .map_err(|e| remote::not_found_as_cli(e, tenant))?;
        return print_json(&updated);
    }
    let tenant = tenant.to_owned();
    with_owner(database, |owner| async move {
        let found = find_tenant(&owner, &tenant).await?;
        // Who ran it, for the audit events: the operating-system account.
        let operator = crate::config::environment::operator_account();
        let updated = tenants::set_status(&owner, found.id, status, &operator)
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
        print_json(&serde_json::to_value(&updated)?)
    })
    .await
}
