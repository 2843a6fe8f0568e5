//! `bulkhead operator key …`: the operator plane's keys, made with owner access to the database
//! (the first key cannot come from the API: the API needs a key); `bulkhead operator audit …`:
//! the operator log's signed checkpoints and its export, for `bulkhead audit verify`.

use std::io::Write;

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
    /// The operator audit log: checkpoints and the verifiable export.
    Audit {
        #[command(subcommand)]
        action: OperatorAuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum OperatorAuditCommand {
    /// Sign a checkpoint of the whole operator log (unless the latest already covers it) and
    /// print it as JSON.
    Checkpoint {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Write the operator log's export (NDJSON, as `GET /operator/v1/audit/export`): verify it
    /// offline with `bulkhead audit verify FILE --log-key KEY`.
    Export {
        /// Where to write it (`-` for standard output).
        #[arg(short = 'o', long = "output")]
        output: std::path::PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
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
    let action = match action {
        OperatorCommand::Key { action } => action,
        OperatorCommand::Audit { action } => return audit(action).await,
    };
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

async fn audit(action: OperatorAuditCommand) -> anyhow::Result<()> {
    match action {
        OperatorAuditCommand::Checkpoint { database } => {
            let key = crate::service::audit_log::load_log_key(
                &database.data_dir,
                database.database_url.is_some(),
            )?;
            with_owner(&database, |owner| async move {
                let (signed, _) = owner
                    .operator_checkpoint(&key, chrono::Utc::now())
                    .await
                    .context("cannot sign the operator log's checkpoint")?;
                println!("{}", serde_json::to_string_pretty(&signed)?);
                Ok(())
            })
            .await
        }
        OperatorAuditCommand::Export { output, database } => {
            let key = crate::service::audit_log::load_log_key(
                &database.data_dir,
                database.database_url.is_some(),
            )?;
            with_owner(&database, |owner| async move {
                let mut out: Box<dyn Write> = if output.as_os_str() == "-" {
                    Box::new(std::io::stdout().lock())
                } else {
                    Box::new(std::io::BufWriter::new(
                        std::fs::File::create(&output)
                            .with_context(|| format!("cannot create {}", output.display()))?,
                    ))
                };
                let (checkpoint, _) = owner
                    .operator_checkpoint(&key, chrono::Utc::now())
                    .await
                    .context("cannot sign the operator log's checkpoint")?;
                let size = checkpoint.checkpoint.tree_size;
                serde_json::to_writer(
                    &mut out,
                    &bulkhead_audit::export::ExportLine::Checkpoint { checkpoint },
                )?;
                out.write_all(b"\n")?;
                let mut from = 0;
                while from < size {
                    let to = (from + operators::EXPORT_PAGE).min(size);
                    out.write_all(&operators::export_lines(&owner, from, to).await?)?;
                    from = to;
                }
                out.flush()?;
                eprintln!("{size} events of the operator log exported");
                Ok(())
            })
            .await
        }
    }
}
