//! `bulkhead tenant delete`: schedule, cancel or run a tenant's deletion, through the running
//! server's operator socket when one answers, on the data directory otherwise (as the other
//! tenant commands; docs/operator-api.md).

use anyhow::Context;
use serde_json::json;

use super::lookup::{find_tenant, with_owner};
use super::print_json;
use super::remote;
use crate::config::DatabaseArgs;
use crate::service::deletion::{self, DeletionError};

/// What `tenant delete` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeleteAction {
    /// Schedule (idempotent).
    Schedule,
    /// Schedule if needed, then purge now.
    PurgeNow,
    /// Cancel the scheduled deletion.
    Cancel,
}

pub(super) async fn run(
    database: &DatabaseArgs,
    tenant: &str,
    grace_period: Option<i64>,
    action: DeleteAction,
) -> anyhow::Result<()> {
    if let Some(server) = remote::running(database).await? {
        let base = format!("/operator/v1/tenants/{}/deletion", remote::segment(tenant)?);
        let answer = match action {
            DeleteAction::Cancel => server.call(http::Method::DELETE, &base, None).await?,
            DeleteAction::Schedule | DeleteAction::PurgeNow => {
                let body = grace_period.map(|g| json!({ "grace_period": g }));
                let scheduled = server
                    .call(http::Method::POST, &base, Some(body.unwrap_or(json!({}))))
                    .await
                    .context("cannot schedule the deletion")?;
                if action == DeleteAction::Schedule {
                    scheduled
                } else {
                    server
                        .call(http::Method::POST, &format!("{base}/purge"), None)
                        .await
                        .context("cannot purge the tenant")?
                }
            }
        };
        return print_json(&answer);
    }
    let log_key = crate::service::audit_log::load_log_key(
        &database.data_dir,
        database.database_url.is_some(),
    )?;
    with_owner(database, |owner| async move {
        let operator = crate::config::environment::operator_account();
        let clock = bulkhead_core::Clock::system();
        let found = find_tenant(&owner, tenant).await?;
        let plain = |e: DeletionError| anyhow::anyhow!("{e}");
        let answer = match action {
            DeleteAction::Cancel => serde_json::to_value(
                deletion::cancel(&owner, found.id, &operator)
                    .await
                    .map_err(plain)?,
            )?,
            DeleteAction::Schedule | DeleteAction::PurgeNow => {
                let (scheduled, _) = deletion::schedule(&owner, &found, grace_period, &operator)
                    .await
                    .map_err(plain)?;
                if action == DeleteAction::Schedule {
                    serde_json::to_value(scheduled)?
                } else {
                    let done = deletion::purge(&owner, &log_key, &clock, found.id, &operator)
                        .await
                        .map_err(plain)?;
                    json!({ "deletion": done.deletion, "receipt": done.receipt })
                }
            }
        };
        print_json(&answer)
    })
    .await
}
