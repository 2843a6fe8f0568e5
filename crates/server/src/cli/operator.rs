//! `bulkhead operator key …`: the operator plane's keys, made with owner access to the database
//! (the first key cannot come from the API: the API needs a key).

use anyhow::Context;
use bulkhead_core::{OperatorKeyId, OperatorScopes};
use clap::Subcommand;
use serde_json::json;

use super::lookup::with_owner;
use crate::config::DatabaseArgs;
use crate::service::database::load_peppers;
use crate::service::operators::{self, OperatorKeySpec};

#[derive(Debug, Subcommand)]
pub(super) enum OperatorCommand {
    /// Operator keys (`bk_op_…`) for the operator API.
    Key {
        #[command(subcommand)]
        action: OperatorKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum OperatorKeyCommand {
    /// Create an operator key and print it, once, as JSON.
    Create {
        /// Who or what it is for.
        #[arg(long)]
        name: String,
        /// tenants:read, tenants:write, tenants:delete or operators:manage (repeat the flag).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Expiry, RFC 3339 (default: none).
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List operator keys (never the keys themselves) as JSON.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke an operator key at once.
    Revoke {
        /// Its `opkey_…` id.
        id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

pub(super) async fn run(action: OperatorCommand) -> anyhow::Result<()> {
    let OperatorCommand::Key { action } = action;
    let actor = crate::config::environment::operator_account();
    match action {
        OperatorKeyCommand::Create {
            name,
            scopes,
            expires_at,
            database,
        } => {
            let scopes = OperatorScopes::parse_all(&scopes).map_err(|_| {
                anyhow::anyhow!(
                    "invalid --scope: each one of tenants:read, tenants:write, tenants:delete, operators:manage"
                )
            })?;
            let peppers = load_peppers(&database)?;
            with_owner(&database, |owner| async move {
                let spec = OperatorKeySpec {
                    name,
                    scopes,
                    expires_at,
                };
                let (record, key) = operators::mint(&owner, &peppers, &spec, &actor)
                    .await
                    .context("cannot create the operator key")?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "operator_key": record,
                        "key": key.expose_secret(),
                    }))?
                );
                eprintln!("Store the key now: it is not stored and will not be shown again.");
                Ok(())
            })
            .await
        }
        OperatorKeyCommand::List { database } => {
            with_owner(&database, |owner| async move {
                let keys = owner.operator_keys().await?;
                println!("{}", serde_json::to_string_pretty(&keys)?);
                Ok(())
            })
            .await
        }
        OperatorKeyCommand::Revoke { id, database } => {
            let id = OperatorKeyId::parse(&id).context("invalid id: an `opkey_…` id")?;
            with_owner(&database, |owner| async move {
                let record = operators::revoke(&owner, id, &actor, chrono::Utc::now())
                    .await
                    .map_err(|e| match e {
                        bulkhead_store::StoreError::NotFound => {
                            anyhow::anyhow!("no operator key `{id}`")
                        }
                        other => anyhow::Error::new(other).context("cannot revoke the key"),
                    })?;
                println!("{}", serde_json::to_string_pretty(&record)?);
                Ok(())
            })
            .await
        }
    }
}
