//! `bulkhead signing-key …`: the token-signing keys (rotate, list).

use clap::Subcommand;
use serde_json::json;

use super::lookup::with_owner;
use crate::config::DatabaseArgs;
use crate::service::audit_line::{AuditLine, Detail};
use crate::service::database::{load_master_key, Database};

#[derive(Debug, Subcommand)]
pub(super) enum SigningKeyCommand {
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

pub(super) async fn run(action: SigningKeyCommand) -> anyhow::Result<()> {
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
                AuditLine::success("signing_key.rotate")
                    .actor("system:cli")
                    .with(Detail::Resource, &rotation.current)
                    .info("signing key rotated");
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
