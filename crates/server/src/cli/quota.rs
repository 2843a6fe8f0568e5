//! `bulkhead tenant quota …`: the operator's view of a tenant's quotas and its overrides, through
//! the store door as the owner role (actor `system:cli`), under the tenant's row-level security.

use anyhow::Context;
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::quotas;
use bulkhead_store::Access;
use serde_json::json;

use super::lookup::{find_tenant_ctx, with_owner};
use crate::config::DatabaseArgs;
use crate::service::audit_line::{AuditLine, Detail};

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
            with_owner(&database, |owner| async move {
                let (found, ctx) = find_tenant_ctx(&owner, &tenant).await?;
                let mut tx = owner.begin(&ctx, Access::ReadOnly).await?;
                let usage = quotas::usage(&mut tx).await?;
                tx.commit().await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "tenant": found.id, "plan": found.plan.as_str(), "quotas": usage,
                    }))?
                );
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
            // Validate before touching the database. Audit events are counted, never limited.
            if !quotas::is_kind(&kind) || kind == "audit_events" {
                anyhow::bail!(
                    "invalid kind {kind:?}: one of {}",
                    quotas::KINDS
                        .iter()
                        .filter(|k| **k != "audit_events")
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let limit = parse_limit(&limit)?;
            with_owner(&database, |owner| async move {
                let (_, ctx) = find_tenant_ctx(&owner, &tenant).await?;
                let mut tx = owner.begin(&ctx, Access::ReadWrite).await?;
                let before = quotas::usage(&mut tx)
                    .await?
                    .into_iter()
                    .find(|u| u.kind == kind)
                    .context("the kind is not in this tenant's plan")?;
                quotas::set_override(&mut tx, &kind, limit).await?;
                // In the same transaction: the override cannot change without its event.
                audit::record(
                    &mut tx,
                    "quota.override",
                    None,
                    Outcome::Success,
                    json!({
                        "kind": kind,
                        "old_limit": before.limit,
                        "new_override": limit,
                        "operator": crate::config::environment::operator_account(),
                    }),
                )
                .await?;
                let after = quotas::usage(&mut tx)
                    .await?
                    .into_iter()
                    .find(|u| u.kind == kind);
                tx.commit().await?;
                AuditLine::success("quota.override")
                    .by(&ctx)
                    .with(Detail::Kind, kind)
                    .info("tenant quota changed");
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
