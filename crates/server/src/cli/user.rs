//! `bulkhead user …`: a tenant's human users from the command line.

use clap::Subcommand;
use serde_json::json;

use super::lookup::{find_tenant_ctx, with_owner};
use crate::config::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub(super) enum UserCommand {
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

pub(super) async fn run(action: UserCommand) -> anyhow::Result<()> {
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
            let password = match crate::config::environment::Secret::UserPassword.read() {
                Some(p) => p,
                None => {
                    let mut line = zeroize::Zeroizing::new(String::new());
                    std::io::stdin().read_line(&mut line)?;
                    zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
                }
            };
            let hash = bulkhead_auth::password::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("password refused: {e}"))?;
            with_owner(&database, |owner| async move {
                let (_, ctx) = find_tenant_ctx(&owner, &tenant).await?;
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
