//! `bulkhead key …`: operator access to a tenant's keys through the store door (as the owner
//! role, actor `system:cli`, under the same row-level security as the API), and the leak scanner.

use anyhow::Context;
use bulkhead_core::{ApiKeyId, Scope, ScopeSet, TenantContext};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::api_keys;
use bulkhead_store::{Access, Store};
use serde_json::json;

use super::lookup::{find_tenant_ctx, with_owner};
use crate::config::DatabaseArgs;
use crate::service::database::load_peppers;
use crate::service::keys::{self, KeySpec};

fn environment() -> anyhow::Result<bulkhead_auth::KeyEnvironment> {
    crate::config::parse_environment(
        crate::config::environment::Secret::KeyEnvironment
            .read()
            .as_deref()
            .map_or("live", String::as_str),
    )
    .map_err(anyhow::Error::msg)
}

async fn context(owner: &Store, tenant: &str) -> anyhow::Result<TenantContext> {
    Ok(find_tenant_ctx(owner, tenant).await?.1)
}

/// Runs one `bulkhead key` command.
pub(crate) async fn run(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            tenant,
            scopes,
            principal,
            description,
            database,
        } => {
            let scopes = ScopeSet::parse_all(&scopes).map_err(|_| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                anyhow::anyhow!("unknown scope; known scopes are: {}", known.join(" "))
            })?;
            let peppers = load_peppers(&database)?;
            let env = environment()?;
            with_owner(&database, |owner| async move {
                let ctx = context(&owner, &tenant).await?;
                let spec = KeySpec {
                    agent: None,
                    principal,
                    scopes,
                    allowed_ips: Vec::new(),
                    description,
                    expires_at: None,
                };
                let mut tx = owner.begin(&ctx, Access::ReadWrite).await?;
                let (id, key) = keys::mint(&mut tx, &peppers, env, &spec).await?;
                let meta = api_keys::get(&mut tx, id, chrono::Utc::now()).await?;
                tx.commit().await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({ "key": key.expose_secret(), "api_key": meta })
                    )?
                );
                eprintln!("Store the key now: it is not stored and will not be shown again.");
                Ok(())
            })
            .await
        }
        KeyCommand::List { tenant, database } => {
            with_owner(&database, |owner| async move {
                let ctx = context(&owner, &tenant).await?;
                let mut tx = owner.begin(&ctx, Access::ReadOnly).await?;
                let mut all = Vec::new();
                let mut after = None;
                loop {
                    let page =
                        api_keys::list(&mut tx, after, 200, None, chrono::Utc::now()).await?;
                    after = page.last().map(|k| k.id);
                    let done = page.len() < 200;
                    all.extend(page);
                    if done {
                        break;
                    }
                }
                tx.commit().await?;
                println!("{}", serde_json::to_string_pretty(&all)?);
                Ok(())
            })
            .await
        }
        KeyCommand::Revoke {
            tenant,
            id,
            all_for_principal,
            database,
        } => {
            with_owner(&database, |owner| async move {
                let ctx = context(&owner, &tenant).await?;
                let now = chrono::Utc::now();
                let mut tx = owner.begin(&ctx, Access::ReadWrite).await?;
                let revoked: Vec<ApiKeyId> = match (id, all_for_principal) {
                    (Some(id), _) => {
                        let id = ApiKeyId::parse(&id).context("invalid --id")?;
                        let (_, also) = keys::revoke_with_self_made_successors(&mut tx, id, now)
                            .await
                            .map_err(|e| match e {
                                bulkhead_store::StoreError::NotFound => {
                                    anyhow::anyhow!("no key {id} in tenant {tenant}")
                                }
                                other => other.into(),
                            })?;
                        // Audited per key by the revocation itself.
                        tx.commit().await?;
                        let revoked: Vec<ApiKeyId> = std::iter::once(id).chain(also).collect();
                        println!("{}", json!({ "revoked": revoked }));
                        return Ok(());
                    }
                    (None, Some(principal)) => {
                        api_keys::revoke_all_for_principal(&mut tx, &principal, now).await?
                    }
                    (None, None) => anyhow::bail!("give --id or --all-for-principal"),
                };
                for id in &revoked {
                    audit::record(
                        &mut tx,
                        "api_key.revoke",
                        Some(&id.to_string()),
                        Outcome::Success,
                        json!({ "via": "cli" }),
                    )
                    .await?;
                }
                tx.commit().await?;
                println!("{}", json!({ "revoked": revoked }));
                Ok(())
            })
            .await
        }
        KeyCommand::RotateDue {
            tenant,
            rotate,
            database,
        } => {
            let peppers = load_peppers(&database)?;
            let env = environment()?;
            with_owner(&database, |owner| async move {
                let ctx = context(&owner, &tenant).await?;
                let now = chrono::Utc::now();
                let mut tx = owner.begin(&ctx, Access::ReadWrite).await?;
                let policy = api_keys::policy(&mut tx).await?;
                let due = api_keys::due_for_rotation(&mut tx, now, chrono::Duration::days(i64::from(policy.max_age_days))).await?;
                let mut out = Vec::new();
                for key in &due {
                    if rotate {
                        let grace = chrono::Duration::seconds(i64::from(policy.grace_seconds));
                        let (_, new_id, new_key) = keys::rotate(&mut tx, &peppers, env, key.id, grace, now).await?;
                        out.push(json!({ "rotated": key.id, "successor": new_id, "key": new_key.expose_secret() }));
                    } else {
                        out.push(json!({ "due": key.id, "principal": key.principal, "created_at": key.created_at }));
                    }
                }
                tx.commit().await?;
                println!("{}", serde_json::to_string_pretty(&json!({ "max_age_days": policy.max_age_days, "keys": out }))?);
                Ok(())
            })
            .await
        }
        KeyCommand::Scan {
            paths,
            check_live,
            max_file_bytes,
            database,
        } => scan(paths, check_live, max_file_bytes, database).await,
    }
}

async fn scan(
    paths: Vec<std::path::PathBuf>,
    check_live: bool,
    max_file_bytes: u64,
    database: DatabaseArgs,
) -> anyhow::Result<()> {
    let (report, found_keys) = crate::service::scan::scan_paths_with_keys(&paths, max_file_bytes);
    print!("{}", report.render_text());
    let found_any = !report.findings.is_empty();
    if check_live && !found_keys.is_empty() {
        let peppers = load_peppers(&database)?;
        with_owner(&database, |owner| async move {
            let verifier = crate::service::credentials::KeyVerifier::new(
                owner,
                peppers,
                environment()?,
                bulkhead_core::Clock::system(),
                // One verification per found key: nothing is looked up twice.
                crate::config::CacheSettings::default().key_ttl,
            );
            for (finding, key) in report.findings.iter().zip(&found_keys) {
                let live = match verifier.verify(key.expose_secret(), None).await? {
                    Ok(_) => "ACTIVE: revoke it now",
                    Err(refused)
                        if refused.reason
                            == crate::service::credentials::Refusal::AddressNotAllowed =>
                    {
                        "ACTIVE (IP-restricted): revoke it now"
                    }
                    Err(_) => "not active",
                };
                println!(
                    "{}:{}: {} {live}",
                    finding.path.display(),
                    finding.line,
                    finding.prefix
                );
            }
            Ok(())
        })
        .await?;
    }
    if found_any {
        std::process::exit(1);
    }
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
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
