//! `bulkhead tenant export` and `bulkhead tenant import`: a tenant's archive
//! (`service::portability`), written through the running server's operator socket when one runs
//! and from the database directly otherwise; read back into this deployment with owner access.

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::FutureExt as _;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use super::lookup::{find_tenant, with_owner};
use super::{print_json, remote};
use crate::config::DatabaseArgs;
use crate::service::operators;
use crate::service::portability::{self, ExportProgress, Manifest};
use crate::service::tenant_import::{self, ImportPlace};
use crate::service::tenants::DedicatedDatabase;

/// `bulkhead tenant export TENANT -o FILE`.
pub(super) async fn export(
    tenant: String,
    output: PathBuf,
    database: DatabaseArgs,
) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    // Written next to the target and renamed into place once complete and checked, so an
    // interrupted export never leaves a file that looks like an archive.
    let partial = output.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let written = if let Some(server) = remote::running(&database).await? {
        let path = format!("/operator/v1/tenants/{}/export", remote::segment(&tenant)?);
        server
            .download(&path, &mut file, &|bytes| bar.set_position(bytes))
            .await
            .map_err(|e| remote::not_found_as_cli(e, &tenant))
    } else {
        let key = crate::service::audit_log::load_log_key(
            &database.data_dir,
            database.database_url.is_some(),
        )?;
        let file = &mut file;
        let bar = &bar;
        with_owner(&database, |owner| async move {
            let found = find_tenant(&owner, &tenant).await?;
            let operator = crate::config::environment::operator_account();
            let progress = |p: ExportProgress| {
                bar.set_position(p.bytes);
                bar.set_message(format!("{} rows, {}", p.rows, p.table));
            };
            let work =
                portability::export(&owner, &key, found.id, chrono::Utc::now(), file, &progress);
            operators::audited(
                &owner,
                &operator,
                "tenant.export",
                Some(found.id.to_string()),
                json!({ "via": "cli" }),
                |m: &Manifest| m.tenant_id.to_string(),
                work.map(|r| r.map_err(Failed)),
            )
            .await
            .map_err(|e| e.0)?;
            Ok(())
        })
        .await
    };
    bar.finish_and_clear();
    if let Err(err) = written {
        tokio::fs::remove_file(&partial).await.ok();
        return Err(err.context("the export failed; nothing was written"));
    }
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    let (checked, _) = portability::read(open(&partial).await?, None)
        .await
        .with_context(|| format!("{} does not check out", partial.display()))?;
    tokio::fs::rename(&partial, &output).await?;
    let rows: u64 = checked.manifest.tables.values().sum();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "tenant": checked.header.tenant.id,
            "slug": checked.header.tenant.slug,
            "file": output,
            "rows": rows,
            "tables": checked.manifest.tables,
            "audit_log_key": checked.header.audit_log_key,
        }))?
    );
    Ok(())
}

/// `bulkhead tenant import FILE`: through the running server's operator socket when one runs
/// (tiers `shared` and `schema`: a dedicated database is never named through the operator
/// API), else on the database directly with owner access.
pub(super) async fn import(
    archive: PathBuf,
    tier: String,
    region: Option<String>,
    dedicated: Option<DedicatedDatabase>,
    database: DatabaseArgs,
) -> anyhow::Result<()> {
    let source =
        json!({ "archive": archive.file_name().map(|n| n.to_string_lossy().into_owned()) });
    if let Some(server) = remote::running(&database).await? {
        if dedicated.is_some() {
            anyhow::bail!(
                "a dedicated database is never named through the running server's operator \
                 API: stop the server to import into one, or import into `shared` or `schema` \
                 and move the tenant later"
            );
        }
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("tier", &tier);
        if let Some(region) = &region {
            query.append_pair("region", region);
        }
        let query = format!("/operator/v1/tenant-imports?{}", query.finish());
        let size = tokio::fs::metadata(&archive)
            .await
            .with_context(|| format!("cannot open {}", archive.display()))?
            .len();
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let answer = server
            .upload(
                &query,
                "application/x-tar",
                open(&archive).await?,
                &|sent| bar.set_position(sent),
            )
            .await;
        bar.finish_and_clear();
        let imported = answer.map_err(|err| {
            if err
                .downcast_ref::<remote::Refused>()
                .is_some_and(|r| r.status < 500)
            {
                err.context("the import was refused; nothing of the tenant was kept")
            } else {
                // The server may have committed it: its answer was lost, or it was a fault.
                err.context(
                    "the import's outcome is unknown: see `bulkhead tenant show` and the \
                     operator log (`tenant.import`)",
                )
            }
        })?;
        return print_json(&imported);
    }
    let input = open(&archive).await?;
    let master = crate::service::database::load_master_key(&database).ok();
    with_owner(&database, |owner| async move {
        let operator = crate::config::environment::operator_account();
        let place = ImportPlace {
            tier: &tier,
            region: region.as_deref(),
            dedicated: dedicated.as_ref(),
            master: master.as_ref(),
        };
        let (checked, tenant) = tenant_import::import(&owner, input, place, &operator, source)
            .await
            .map_err(|e| {
                e.0.context("the import failed; nothing of the tenant was kept")
            })?;
        print_json(&json!({ "tenant": tenant, "tables": checked.manifest.tables }))
    })
    .await
}

async fn open(path: &Path) -> anyhow::Result<tokio::io::BufReader<tokio::fs::File>> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(tokio::io::BufReader::new(file))
}

/// An export or import failure carried through `operators::audited` (which records its text).
#[derive(Debug)]
struct Failed(anyhow::Error);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl From<bulkhead_store::StoreError> for Failed {
    fn from(err: bulkhead_store::StoreError) -> Self {
        Self(err.into())
    }
}
