//! Tenant export archives (issue 19, data portability): everything a tenant owns as one ustar
//! archive, streamed, and read back by `bulkhead tenant import` (or checked without a database).
//!
//! Layout, in this order:
//! - `bulkhead-export/tenant.json`: the format, the tenant's registry record, the export time and
//!   the public key of the audit log that signed its checkpoints;
//! - `bulkhead-export/tables/<table>/<nnnnnn>.ndjson`: the rows of every table of
//!   `TENANT_TABLES`, in that (foreign-key) order, one JSON object per line, parts of about
//!   1 MiB, from one snapshot (`bulkhead_store::lifecycle::portability`);
//! - `bulkhead-export/audit.ndjson`: the tenant's audit log as `GET /v1/audit/export` gives it (a
//!   signed checkpoint, then every leaf), so `bulkhead audit verify` checks it offline;
//! - `bulkhead-export/manifest.json`, last because only then are the counts known: per file its
//!   rows, bytes and SHA-256, per table its rows.
//!
//! Secrets leave as stored: sealed values sealed under the tenant's data key, which the archive
//! does not carry (crypto-shredding: a purge must reach every copy), and key and secret hashes
//! as HMACs under the deployment's peppers. An import gets webhook and tool secrets it cannot
//! open (they are rotated), and keys that work only where those peppers are.
//!
//! Why our own archive reader and writer around `tar::Header` rather than the `tar` crate's
//! `Builder`/`Archive`: those are synchronous over `Read`/`Write`, and the archive is produced
//! and consumed on the async runtime, streamed to an HTTP body or a file; the header type (the
//! format's fiddly part: fields, checksum) is the crate's.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use bulkhead_audit::LogSigningKey;
use bulkhead_core::{TenantContext, TenantId, TenantSlug};
use bulkhead_store::audit::pages::ExportSnapshot;
use bulkhead_store::lifecycle::portability::{TenantExport, TenantImport};
use bulkhead_store::placement::location::{IsolationTier, Placement, TENANT_TABLES};
use bulkhead_store::placement::registry::{Plan, RateLimitOverride, Tenant, TenantStatus};
use bulkhead_store::Store;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

/// The archive format this build writes and reads.
pub const FORMAT: &str = "bulkhead-tenant-export/1";

const ROOT: &str = "bulkhead-export";
const BLOCK: usize = 512;
/// The largest entry read into memory (a table part, the tenant record, the manifest): parts are
/// written at about 1 MiB plus one fetch of rows, so this bounds a hostile archive, not ours.
const MAX_ENTRY_IN_MEMORY: u64 = 64 << 20;
/// The most entries an archive may hold: parts are about 1 MiB, so this is a tenant of some
/// hundreds of GiB; it bounds what a hostile archive of empty entries makes the reader keep.
const MAX_ENTRIES: usize = 500_000;
/// Audit leaves read per page into the archive.
const AUDIT_PAGE: u64 = 2000;

/// `tenant.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportHeader {
    /// [`FORMAT`].
    pub format: String,
    /// The tenant's registry record at the export's start.
    pub tenant: ExportedTenant,
    /// When the export started.
    pub exported_at: DateTime<Utc>,
    /// The public key (`bulkhead audit verify --key`) of the log that signed the checkpoints.
    pub audit_log_key: String,
}

/// The tenant as `tenant.json` records it: the registry fields an import restores (its id,
/// slug, name, plan, status, creation time) and where it lived (informative: the importer
/// chooses the tier and, by default, keeps the region). Its own type, not the registry's, so
/// the archive format changes only when this does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedTenant {
    /// Public id.
    pub id: TenantId,
    /// Subdomain label.
    pub slug: String,
    /// Human-readable name.
    pub display_name: String,
    /// `free`, `standard` or `enterprise`.
    pub plan: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Data-residency region.
    pub region: String,
    /// `shared`, `schema` or `dedicated`.
    pub isolation_tier: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its own request budget, if an operator gave it one (absent in archives written before
    /// migration 0038).
    #[serde(default)]
    pub rate_limit: Option<RateLimitOverride>,
}

impl ExportedTenant {
    fn of(tenant: &Tenant) -> Self {
        Self {
            id: tenant.id,
            slug: tenant.slug.to_string(),
            display_name: tenant.display_name.clone(),
            plan: tenant.plan.as_str().to_owned(),
            status: tenant.status.as_str().to_owned(),
            region: tenant.region.clone(),
            isolation_tier: tenant.isolation_tier.as_str().to_owned(),
            created_at: tenant.created_at,
            rate_limit: tenant.rate_limit,
        }
    }

    /// The registry record an import starts from (every field checked as onboarding checks it).
    fn to_tenant(&self) -> anyhow::Result<Tenant> {
        // The rules onboarding applies (`service::tenants`): an archive is input like any other.
        let name = self.display_name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            bail!("tenant.json: invalid name: 1 to 200 characters, no control characters");
        }
        if self.region.is_empty()
            || self.region.len() > 64
            || self.region.chars().any(char::is_control)
        {
            bail!("tenant.json: invalid region: 1 to 64 characters");
        }
        Ok(Tenant {
            id: self.id,
            slug: TenantSlug::parse(&self.slug).context("tenant.json: invalid slug")?,
            display_name: name.to_owned(),
            plan: Plan::parse(&self.plan).context("tenant.json: invalid plan")?,
            isolation_tier: IsolationTier::parse(&self.isolation_tier)
                .context("tenant.json: invalid tier")?,
            region: self.region.clone(),
            status: TenantStatus::parse(&self.status).context("tenant.json: invalid status")?,
            created_at: self.created_at,
            schema_name: None,
            database_name: None,
            frozen: false,
            rate_limit: self
                .rate_limit
                .map(|own| {
                    RateLimitOverride::new(own.requests_per_minute, own.burst)
                        .context("tenant.json: invalid rate_limit")
                })
                .transpose()?,
        })
    }
}

/// One file of the archive in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its path in the archive.
    pub path: String,
    /// Rows (lines) it holds.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The exported tenant.
    pub tenant_id: TenantId,
    /// Rows per table (every table of the tenant, zero included).
    pub tables: BTreeMap<String, u64>,
    /// Every file before the manifest, in archive order.
    pub files: Vec<ManifestFile>,
}

/// What an export has done so far (for a progress bar).
#[derive(Debug, Clone, Copy)]
pub struct ExportProgress {
    /// The table being read, or `audit` for the log.
    pub table: &'static str,
    /// Rows written so far, all tables.
    pub rows: u64,
    /// Archive bytes written so far.
    pub bytes: u64,
}

/// Writes the archive of `tenant` to `out`. `owner` must be a store on the owner role; the log
/// key signs a fresh checkpoint of the tenant's log if its latest does not cover every leaf.
pub async fn export<W: AsyncWrite + Unpin>(
    owner: &Store,
    log_key: &LogSigningKey,
    tenant: TenantId,
    now: DateTime<Utc>,
    out: &mut W,
    progress: &(dyn Fn(ExportProgress) + Sync),
) -> anyhow::Result<Manifest> {
    // The log first: opening its snapshot sequences every event written so far into leaves
    // and signs a checkpoint over them, so the rows read next hold those leaves too (events
    // written in between are rows without leaves yet, which the importing deployment's
    // sequencer takes up like any recent event). Spooled to a temporary file so the entry's
    // size is known before its bytes.
    let guard = TenantExport::guard(owner, tenant).await?;
    let ctx = TenantContext::for_system(tenant, "tenant.export");
    let mut snapshot = ExportSnapshot::open(owner, &ctx, log_key, now).await?;
    let spooled = spool_audit(&mut snapshot).await;
    snapshot.finish().await.ok();
    let (mut audit_file, audit_size, audit_lines) = spooled?;
    let mut rows_export = TenantExport::open(owner, guard).await?;
    let mut archive = ArchiveWriter::new(out);
    let header = ExportHeader {
        format: FORMAT.into(),
        tenant: ExportedTenant::of(rows_export.tenant()),
        exported_at: now,
        audit_log_key: log_key.public().to_config_string(),
    };
    let mut tables: BTreeMap<String, u64> =
        TENANT_TABLES.iter().map(|t| ((*t).to_owned(), 0)).collect();
    let (mut part_of, mut last_table, mut total) = (0u32, "", 0u64);
    let read = async {
        archive
            .entry("tenant.json", &serde_json::to_vec_pretty(&header)?, 0)
            .await?;
        while let Some(part) = rows_export.next_part().await? {
            part_of = if part.table == last_table {
                part_of + 1
            } else {
                1
            };
            last_table = part.table;
            let path = format!("tables/{}/{part_of:06}.ndjson", part.table);
            archive.entry(&path, &part.ndjson, part.rows).await?;
            *tables.entry(part.table.to_owned()).or_default() += part.rows;
            total += part.rows;
            progress(ExportProgress {
                table: part.table,
                rows: total,
                bytes: archive.written,
            });
        }
        anyhow::Ok(())
    }
    .await;
    rows_export.finish().await.ok();
    read?;
    archive
        .entry_from("audit.ndjson", &mut audit_file, audit_size, audit_lines)
        .await?;
    progress(ExportProgress {
        table: "audit",
        rows: total,
        bytes: archive.written,
    });
    let manifest = Manifest {
        format: FORMAT.into(),
        tenant_id: tenant,
        tables,
        files: std::mem::take(&mut archive.files),
    };
    archive
        .entry("manifest.json", &serde_json::to_vec_pretty(&manifest)?, 0)
        .await?;
    archive.finish().await?;
    Ok(manifest)
}

async fn spool_audit(snapshot: &mut ExportSnapshot) -> anyhow::Result<(tokio::fs::File, u64, u64)> {
    let checkpoint = snapshot.checkpoint().clone();
    let size = checkpoint.checkpoint.tree_size;
    let mut file = tokio::fs::File::from_std(tempfile::tempfile()?);
    let mut head =
        serde_json::to_vec(&bulkhead_audit::export::ExportLine::Checkpoint { checkpoint })?;
    head.push(b'\n');
    file.write_all(&head).await?;
    let mut from = 0;
    while from < size {
        let to = (from + AUDIT_PAGE).min(size);
        file.write_all(&super::audit_log::export_lines(snapshot, from, to).await?)
            .await?;
        from = to;
    }
    file.flush().await?;
    let bytes = file.stream_position().await?;
    file.rewind().await?;
    Ok((file, bytes, size + 1))
}

/// Appends regular-file entries under [`ROOT`] to an async writer, recording each in the
/// manifest's file list.
struct ArchiveWriter<'a, W> {
    out: &'a mut W,
    files: Vec<ManifestFile>,
    written: u64,
}

impl<'a, W: AsyncWrite + Unpin> ArchiveWriter<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Self {
            out,
            files: Vec::new(),
            written: 0,
        }
    }

    fn header(path: &str, size: u64) -> anyhow::Result<tar::Header> {
        let mut header = tar::Header::new_ustar();
        header.set_path(format!("{ROOT}/{path}"))?;
        header.set_size(size);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(Utc::now().timestamp().max(0) as u64);
        header.set_cksum();
        Ok(header)
    }

    async fn entry(&mut self, path: &str, data: &[u8], rows: u64) -> anyhow::Result<()> {
        let header = Self::header(path, data.len() as u64)?;
        self.out.write_all(header.as_bytes()).await?;
        self.out.write_all(data).await?;
        self.pad(data.len() as u64).await?;
        if path != "manifest.json" {
            self.files.push(ManifestFile {
                path: format!("{ROOT}/{path}"),
                rows,
                bytes: data.len() as u64,
                sha256: sha256_hex(data),
            });
        }
        self.written += (BLOCK as u64) + padded(data.len() as u64);
        Ok(())
    }

    async fn entry_from(
        &mut self,
        path: &str,
        file: &mut tokio::fs::File,
        size: u64,
        rows: u64,
    ) -> anyhow::Result<()> {
        let header = Self::header(path, size)?;
        self.out.write_all(header.as_bytes()).await?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                bail!("the spooled audit log ended early");
            }
            let n = n.min(left as usize);
            hasher.update(&buf[..n]);
            self.out.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        self.pad(size).await?;
        self.files.push(ManifestFile {
            path: format!("{ROOT}/{path}"),
            rows,
            bytes: size,
            sha256: to_hex(&hasher.finalize()),
        });
        self.written += (BLOCK as u64) + padded(size);
        Ok(())
    }

    async fn pad(&mut self, size: u64) -> anyhow::Result<()> {
        let pad = (padded(size) - size) as usize;
        self.out.write_all(&[0u8; BLOCK][..pad]).await?;
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.out.write_all(&[0u8; 2 * BLOCK]).await?;
        self.out.flush().await?;
        Ok(())
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// One entry of an archive being read.
enum Entry {
    /// An entry read into memory.
    Data(String, Vec<u8>),
    /// `audit.ndjson`, hashed while skipped: the log travels as rows of its tables.
    Hashed(String, u64, String, u64),
}

/// Reads an archive's entries one at a time, checking each header.
struct ArchiveReader<R> {
    input: R,
}

impl<R: AsyncRead + Unpin> ArchiveReader<R> {
    async fn next(&mut self) -> anyhow::Result<Option<Entry>> {
        let mut block = [0u8; BLOCK];
        self.input
            .read_exact(&mut block)
            .await
            .context("the archive ended without its end marker")?;
        if block.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let header = tar::Header::from_byte_slice(&block);
        let mut check = header.clone();
        check.set_cksum();
        if check.as_bytes() != header.as_bytes() {
            bail!("an entry's header checksum is wrong: not an archive this build wrote");
        }
        if !matches!(header.entry_type(), tar::EntryType::Regular) {
            bail!("the archive holds an entry that is not a regular file");
        }
        let path = header.path()?.to_string_lossy().into_owned();
        let size = header.entry_size()?;
        let Some(name) = path.strip_prefix(&format!("{ROOT}/")).map(str::to_owned) else {
            bail!("unexpected entry {path:?}");
        };
        let entry = if name == "audit.ndjson" {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let (mut left, mut lines) = (size, 0u64);
            while left > 0 {
                let want = buf.len().min(left as usize);
                self.input.read_exact(&mut buf[..want]).await?;
                hasher.update(&buf[..want]);
                lines += buf[..want].iter().filter(|b| **b == b'\n').count() as u64;
                left -= want as u64;
            }
            Entry::Hashed(name, size, to_hex(&hasher.finalize()), lines)
        } else {
            if size > MAX_ENTRY_IN_MEMORY {
                bail!("entry {name:?} is larger than any this build writes");
            }
            let mut data = vec![0u8; size as usize];
            self.input.read_exact(&mut data).await?;
            Entry::Data(name, data)
        };
        let pad = (padded(size) - size) as usize;
        let mut skip = [0u8; BLOCK];
        self.input.read_exact(&mut skip[..pad]).await?;
        Ok(Some(entry))
    }
}

/// The deployment refused an archive's rows of `table` as they were written (a row of another
/// tenant, a malformed value, a duplicate, a missing parent): the archive's fault, unless
/// `source` says the database did not answer.
#[derive(Debug, thiserror::Error)]
#[error("table {table}: the rows are refused: {source}")]
pub struct RowsRefused {
    /// The table.
    pub table: &'static str,
    /// Why.
    #[source]
    pub source: bulkhead_store::StoreError,
}

/// What an archive holds, checked against its own manifest.
#[derive(Debug)]
pub struct CheckedArchive {
    /// `tenant.json`.
    pub header: ExportHeader,
    /// `manifest.json`.
    pub manifest: Manifest,
}

/// How a tenant being imported is placed: `tier` as for `tenant create`, and the region (default:
/// the exported one). The caller turns a tier into a placement once the tenant is known.
pub type Place<'a> = &'a (dyn Fn(&Tenant) -> futures::future::BoxFuture<'a, anyhow::Result<(Placement, String)>>
         + Sync);

/// Reads an archive and checks every file against the manifest; with `import`, writes the
/// tenant into this deployment as it reads (one transaction where the location allows), and
/// commits only if everything matched. Returns the archive's header and manifest and, when
/// imported, the tenant as registered.
pub async fn read<R: AsyncRead + Unpin>(
    input: R,
    import: Option<(&Store, Place<'_>)>,
) -> anyhow::Result<(CheckedArchive, Option<Tenant>)> {
    let mut reader = ArchiveReader { input };
    let Some(Entry::Data(first, data)) = reader.next().await? else {
        bail!("the archive does not start with tenant.json");
    };
    if first != "tenant.json" {
        bail!("the archive does not start with tenant.json");
    }
    let header: ExportHeader =
        serde_json::from_slice(&data).context("tenant.json is not an export header")?;
    if header.format != FORMAT {
        bail!(
            "archive format {:?}; this build reads {FORMAT:?}",
            header.format
        );
    }
    let first_file = ManifestFile {
        path: format!("{ROOT}/tenant.json"),
        rows: 0,
        bytes: data.len() as u64,
        sha256: sha256_hex(&data),
    };
    let mut importing = match import {
        Some((owner, place)) => {
            let tenant = header.tenant.to_tenant()?;
            let (placement, region) = place(&tenant).await?;
            Some((
                owner,
                TenantImport::begin(owner, &tenant, placement, &region).await?,
            ))
        }
        None => None,
    };
    let outcome = read_rest(&mut reader, &header, first_file, importing.as_mut()).await;
    match (outcome, importing) {
        (Ok(manifest), Some((owner, import))) => {
            let tenant = import.commit(owner).await?;
            Ok((CheckedArchive { header, manifest }, Some(tenant)))
        }
        (Ok(manifest), None) => Ok((CheckedArchive { header, manifest }, None)),
        (Err(err), Some((owner, import))) => {
            import.abandon(owner).await;
            Err(err)
        }
        (Err(err), None) => Err(err),
    }
}

async fn read_rest<R: AsyncRead + Unpin>(
    reader: &mut ArchiveReader<R>,
    header: &ExportHeader,
    first_file: ManifestFile,
    mut import: Option<&mut (&Store, TenantImport)>,
) -> anyhow::Result<Manifest> {
    let mut seen: Vec<ManifestFile> = vec![first_file];
    let mut tables: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        if seen.len() > MAX_ENTRIES {
            bail!("the archive holds more than {MAX_ENTRIES} entries: more than any this build writes");
        }
        let Some(entry) = reader.next().await? else {
            bail!("the archive ends without manifest.json: it is incomplete");
        };
        match entry {
            Entry::Data(name, data) if name == "manifest.json" => {
                let manifest: Manifest =
                    serde_json::from_slice(&data).context("manifest.json is not a manifest")?;
                if reader.next().await?.is_some() {
                    bail!("entries follow manifest.json");
                }
                check_manifest(&manifest, header, &seen, &tables)?;
                return Ok(manifest);
            }
            Entry::Data(name, data) => {
                let rows = if name == "tenant.json" {
                    bail!("tenant.json appears twice");
                } else if let Some(table) = table_of(&name) {
                    let rows = data.iter().filter(|b| **b == b'\n').count() as u64;
                    if let Some((_, import)) = import.as_mut() {
                        let written = import
                            .add_rows(table, &data)
                            .await
                            .map_err(|source| RowsRefused { table, source })?;
                        if written != rows {
                            bail!("{name}: {rows} lines, {written} rows written");
                        }
                    }
                    *tables.entry(table.to_owned()).or_default() += rows;
                    rows
                } else {
                    bail!("unexpected entry {name:?}");
                };
                seen.push(ManifestFile {
                    path: format!("{ROOT}/{name}"),
                    rows,
                    bytes: data.len() as u64,
                    sha256: sha256_hex(&data),
                });
            }
            Entry::Hashed(name, bytes, sha256, rows) => seen.push(ManifestFile {
                path: format!("{ROOT}/{name}"),
                rows,
                bytes,
                sha256,
            }),
        }
    }
}

/// `tables/<table>/<part>.ndjson` → the table, if it is one of the tenant tables.
fn table_of(name: &str) -> Option<&'static str> {
    let rest = name.strip_prefix("tables/")?;
    let (table, part) = rest.split_once('/')?;
    let digits = part.strip_suffix(".ndjson")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    TENANT_TABLES.iter().copied().find(|t| *t == table)
}

fn check_manifest(
    manifest: &Manifest,
    header: &ExportHeader,
    seen: &[ManifestFile],
    tables: &BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    if manifest.format != FORMAT || manifest.tenant_id != header.tenant.id {
        bail!("the manifest is of another export");
    }
    if manifest.files != seen {
        bail!("the archive's files do not match its manifest (sizes, rows or SHA-256)");
    }
    for (table, rows) in &manifest.tables {
        if tables.get(table).copied().unwrap_or(0) != *rows {
            bail!("table {table}: the manifest says {rows} rows, the archive holds others");
        }
    }
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}
