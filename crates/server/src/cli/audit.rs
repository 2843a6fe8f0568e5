//! `bulkhead audit …`: offline verification of exports and checkpoints, and retention.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bulkhead_audit::export::ExportVerifier;
use bulkhead_audit::{tree, LogPublicKey, SignedCheckpoint};
use bulkhead_store::{audit::retention as audit_retention, Access};
use clap::Subcommand;
use serde::Deserialize;
use serde_json::json;

use super::lookup::{find_tenant, find_tenant_ctx, operator_ctx, with_owner};
use crate::config::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify an export (`GET /v1/audit/export`) offline: recompute every leaf and the root, check
    /// the checkpoint signature, and name the first bad event. Exits 1 unless it verifies.
    Verify {
        /// The NDJSON export.
        export: PathBuf,
        /// The log's public key: `base64:…`, or a file holding it or the JSON of
        /// `/.well-known/bulkhead-audit-key`.
        #[arg(long)]
        log_key: String,
        /// An older checkpoint of the same log, kept outside the server: the export must extend
        /// it (its signature verifies and the export's first `tree_size` leaves hash to its
        /// root), which a log truncated and regrown under a fresh signature does not. A file
        /// holding the checkpoint's JSON or an older export, or the JSON itself.
        #[arg(long)]
        since: Option<String>,
    },
    /// Check that NEW_CHECKPOINT extends OLD_CHECKPOINT (the log only grew), with the consistency
    /// proof the server gives at `/v1/audit/proofs/consistency?from=<old size>&to=<new size>`.
    /// Exits 1 unless it holds.
    CheckConsistency {
        /// The older checkpoint (JSON, as served).
        old_checkpoint: PathBuf,
        /// The newer checkpoint.
        new_checkpoint: PathBuf,
        /// The consistency proof (JSON, as served).
        #[arg(long)]
        proof: PathBuf,
        /// The log's public key (as for `verify`).
        #[arg(long)]
        log_key: String,
    },
    /// Remove event bodies past each tenant's retention (leaf hashes stay; proofs keep working).
    Purge {
        /// Only this tenant (slug or id); default every tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Set a tenant's audit retention, in days (1 to 36500; default 365).
    Retention {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// Days an event body is kept.
        #[arg(long)]
        days: i32,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

pub(crate) async fn run(action: AuditCommand) -> anyhow::Result<()> {
    match action {
        AuditCommand::Verify {
            export,
            log_key,
            since,
        } => {
            let since = since.as_deref().map(read_checkpoint).transpose()?;
            verify(&export, &read_key(&log_key)?, since.as_ref())
        }
        AuditCommand::CheckConsistency {
            old_checkpoint,
            new_checkpoint,
            proof,
            log_key,
        } => check_consistency(
            &old_checkpoint,
            &new_checkpoint,
            &proof,
            &read_key(&log_key)?,
        ),
        AuditCommand::Purge { tenant, database } => {
            with_owner(&database, |owner| async move {
                let tenants = match tenant {
                    Some(t) => vec![find_tenant(&owner, &t).await?],
                    None => owner.list_tenants().await?,
                };
                let now = chrono::Utc::now();
                for t in tenants {
                    let ctx = operator_ctx(t.id);
                    let purged = audit_retention::purge(&owner, &ctx, now).await?;
                    println!("{}", json!({ "tenant": t.id, "purged": purged }));
                }
                Ok(())
            })
            .await
        }
        AuditCommand::Retention {
            tenant,
            days,
            database,
        } => {
            with_owner(&database, |owner| async move {
                let (t, ctx) = find_tenant_ctx(&owner, &tenant).await?;
                let mut tx = owner.begin(&ctx, Access::ReadWrite).await?;
                audit_retention::set_retention_days(&mut tx, days)
                    .await
                    .context("invalid --days: 1 to 36500")?;
                tx.commit().await?;
                println!("{}", json!({ "tenant": t.id, "retention_days": days }));
                Ok(())
            })
            .await
        }
    }
}

/// Reads a log key given as text, a file of text, or the well-known JSON.
fn read_key(given: &str) -> anyhow::Result<LogPublicKey> {
    let text = if Path::new(given).is_file() {
        std::fs::read_to_string(given).with_context(|| format!("cannot read {given}"))?
    } else {
        given.to_owned()
    };
    #[derive(Deserialize)]
    struct Published {
        public_key: String,
    }
    let text = match serde_json::from_str::<Published>(&text) {
        Ok(published) => published.public_key,
        Err(_) => text,
    };
    LogPublicKey::from_config_str(&text).map_err(|e| anyhow::anyhow!("--log-key: {e}"))
}

/// Reads `--since`: a file, or the text itself, holding a checkpoint's JSON (as served) or an
/// export (whose first line is its checkpoint).
fn read_checkpoint(given: &str) -> anyhow::Result<SignedCheckpoint> {
    let text = if Path::new(given).is_file() {
        std::fs::read_to_string(given).with_context(|| format!("cannot read {given}"))?
    } else {
        given.to_owned()
    };
    if let Ok(checkpoint) = serde_json::from_str::<SignedCheckpoint>(&text) {
        return Ok(checkpoint);
    }
    match text.lines().next().map(bulkhead_audit::export::parse_line) {
        Some(Ok(bulkhead_audit::export::ExportLine::Checkpoint { checkpoint })) => Ok(checkpoint),
        _ => anyhow::bail!("--since: neither a checkpoint nor an export"),
    }
}

fn verify(path: &Path, key: &LogPublicKey, since: Option<&SignedCheckpoint>) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut verifier = ExportVerifier::new(key.clone());
    if let Some(old) = since {
        verifier = verifier
            .since(old)
            .map_err(|e| anyhow::anyhow!("--since: {e}; the older checkpoint does not verify"))?;
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader.read_line(&mut line)?;
        if read == 0 {
            break;
        }
        number += 1;
        bar.inc(read as u64);
        let text = line.trim_end_matches(['\n', '\r']);
        if let Err(err) = verifier.push_line(text) {
            bar.finish_and_clear();
            anyhow::bail!("line {number}: {err}; the export does not verify");
        }
    }
    bar.finish_and_clear();
    let report = verifier.finish();
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.verified {
        Ok(())
    } else {
        anyhow::bail!(
            "the export does not verify: {}",
            report.failure.unwrap_or_default()
        )
    }
}

#[derive(Deserialize)]
struct ProofFile {
    from: u64,
    to: u64,
    proof: Vec<String>,
}

fn check_consistency(
    old: &Path,
    new: &Path,
    proof: &Path,
    key: &LogPublicKey,
) -> anyhow::Result<()> {
    let read_checkpoint = |p: &Path| -> anyhow::Result<SignedCheckpoint> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a checkpoint", p.display()))
    };
    let (old, new) = (read_checkpoint(old)?, read_checkpoint(new)?);
    let old = key.verify(&old).context("old checkpoint")?;
    let new = key.verify(&new).context("new checkpoint")?;
    if old.tenant_id != new.tenant_id {
        anyhow::bail!("the checkpoints are of different tenants");
    }
    let text = std::fs::read_to_string(proof)
        .with_context(|| format!("cannot read {}", proof.display()))?;
    let proof: ProofFile =
        serde_json::from_str(&text).context("the proof file is not a consistency proof")?;
    if (proof.from, proof.to) != (old.tree_size, new.tree_size) {
        anyhow::bail!(
            "the proof is from {} to {}; the checkpoints are of sizes {} and {}",
            proof.from,
            proof.to,
            old.tree_size,
            new.tree_size
        );
    }
    let hashes = proof
        .proof
        .iter()
        .map(|h| bulkhead_audit::hex::decode_hash(h))
        .collect::<Result<Vec<_>, _>>()?;
    let holds = if old.tree_size == 0 {
        // Every tree extends the empty one.
        old.root_hash == tree::empty_root()
    } else {
        tree::verify_consistency(
            old.tree_size,
            new.tree_size,
            &old.root_hash,
            &new.root_hash,
            &hashes,
        )
        .is_ok()
    };
    println!(
        "{}",
        json!({ "tenant_id": old.tenant_id, "from": old.tree_size, "to": new.tree_size, "consistent": holds })
    );
    if holds {
        Ok(())
    } else {
        anyhow::bail!("the new checkpoint does not extend the old one: the log was rewritten")
    }
}
