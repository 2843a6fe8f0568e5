//! `bulkhead tenant quota …`: the operator's view of a tenant's quotas and its overrides
//! (`service::tenant_quotas`), through the running server's operator socket when one answers
//! and on the data directory otherwise, as the other tenant commands.

use anyhow::Context;

use super::lookup::{find_tenant, with_owner};
use super::remote;
use crate::config::DatabaseArgs;
use crate::service::tenant_quotas;

/// `default` or a limit of 0 or more.
fn parse_limit(text: &str) -> anyhow::Result<Option<i64>> {
    if text == "default" {
        return Ok(None);
    }
    let limit: i64 = text
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .context("invalid limit: a number of 0 or more, or `default`")?;
    Ok(Some(limit))
}

/// Runs one `bulkhead tenant quota` command.
pub(crate) async fn run(action: QuotaCommand) -> anyhow::Result<()> {
    match action {
        QuotaCommand::Show { tenant, database } => {
            if let Some(server) = remote::running(&database).await? {
                let path = format!("/operator/v1/tenants/{}/quotas", remote::segment(&tenant)?);
                let answer = server
                    .call(http::Method::GET, &path, None)
                    .await
                    .map_err(|e| remote::not_found_as_cli(e, &tenant))?;
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            with_owner(&database, |owner| async move {
                let found = find_tenant(&owner, &tenant).await?;
                let ctx = tenant_quotas::operator_context(found.id, "cli");
                let quotas = tenant_quotas::show(&owner, &found, &ctx)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{}", serde_json::to_string_pretty(&quotas)?);
                Ok(())
            })
            .await
        }
        QuotaCommand::Set {
            tenant,
            kind,
            limit,
            database,
        } => {
            // Validate before touching the database or the server.
            if !tenant_quotas::settable(&kind) {
                anyhow::bail!(
                    "invalid kind {kind:?}: one of {}",
                    tenant_quotas::settable_kinds()
                );
            }
            let limit = parse_limit(&limit)?;
            if let Some(server) = remote::running(&database).await? {
                let path = format!(
                    "/operator/v1/tenants/{}/quotas/{kind}",
                    remote::segment(&tenant)?
                );
                let body = serde_json::json!({ "limit": limit });
                let answer = server
                    .call(http::Method::PUT, &path, Some(body))
                    .await
                    .map_err(|e| remote::not_found_as_cli(e, &tenant))?;
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            with_owner(&database, |owner| async move {
                let found = find_tenant(&owner, &tenant).await?;
                let ctx = tenant_quotas::operator_context(found.id, "cli");
                let operator = crate::config::environment::operator_account();
                let after = tenant_quotas::set(&owner, &found, &ctx, &kind, limit, &operator)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{}", serde_json::to_string_pretty(&after)?);
                Ok(())
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_limit;

    #[test]
    fn limits_are_numbers_or_default() {
        assert_eq!(parse_limit("default").unwrap(), None);
        assert_eq!(parse_limit("0").unwrap(), Some(0));
        assert_eq!(parse_limit("5000").unwrap(), Some(5000));
        for bad in ["-1", "", "ten", "1e3", "9223372036854775808"] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
    }
}

/// `bulkhead tenant quota …` (docs/quotas.md).
#[derive(Debug, clap::Subcommand)]
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
