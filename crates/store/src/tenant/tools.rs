//! The tenant's tool registry, its version history and screening decisions. Every function takes
//! the tenant transaction and filters on its tenant explicitly.
//!
//! Screening, URL and schema checks are the caller's (the routes, `bulkhead-screening`, the
//! egress guard); the database checks names, lengths and shapes again. A tool's signing secret
//! is stored sealed under the tenant's data key (`data_key`), bound to tenant and tool, and never returned by a
//! listing.

use std::fmt;

use bulkhead_auth::MasterKey;
use bulkhead_core::{ScreeningId, TenantId, ToolId, ToolName};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::tenant::data_key::{self, Secret};
use crate::{StoreError, TenantTx};

/// A tool as shown to its tenant (never with its secret).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tool {
    /// Public id.
    pub id: ToolId,
    /// The name: its path segment and its scope `tools:call:<name>`. Never changes.
    pub name: String,
    /// Screened description.
    pub description: String,
    /// Screened JSON Schema of the input.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: Value,
    /// Where calls go (vetted by the egress policy).
    pub endpoint_url: String,
    /// Whether it may be called and is shown to agents.
    pub enabled: bool,
    /// The current version (1 at creation, +1 per change).
    pub version: i32,
    /// `clean` or `flagged`: how screening ended for the current version.
    pub screening: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

type ToolRow = (
    uuid::Uuid,
    String,
    String,
    Value,
    String,
    bool,
    i32,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);
const COLUMNS: &str = "id, name, description, input_schema, endpoint_url, enabled, \
     current_version, screening, created_at, updated_at";

fn from_row(r: ToolRow) -> Tool {
    Tool {
        id: ToolId::from_uuid(r.0),
        name: r.1,
        description: r.2,
        input_schema: r.3,
        endpoint_url: r.4,
        enabled: r.5,
        version: r.6,
        screening: r.7,
        created_at: r.8,
        updated_at: r.9,
    }
}

/// A new tool (screened and vetted by the caller).
#[derive(Clone)]
pub struct NewTool {
    /// Name.
    pub name: ToolName,
    /// Screened description.
    pub description: String,
    /// Screened schema.
    pub input_schema: Value,
    /// Vetted URL.
    pub endpoint_url: String,
    /// Enabled at creation.
    pub enabled: bool,
    /// `clean` or `flagged`.
    pub screening: &'static str,
    /// Signing secret bytes (stored sealed).
    pub secret: Vec<u8>,
}

impl fmt::Debug for NewTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewTool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A change to a tool; `None` leaves a field as it is. Every applied patch is a new version.
#[derive(Debug, Clone, Default)]
pub struct ToolPatch {
    /// New screened description.
    pub description: Option<String>,
    /// New screened schema.
    pub input_schema: Option<Value>,
    /// New vetted URL.
    pub endpoint_url: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Screening outcome of the new version (`clean` or `flagged`).
    pub screening: &'static str,
}

/// One version of a tool, as it was stored.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolVersion {
    /// Version number.
    pub version: i32,
    /// Description of that version.
    pub description: String,
    /// Schema of that version.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: Value,
    /// URL of that version.
    pub endpoint_url: String,
    /// Whether that version was enabled.
    pub enabled: bool,
    /// Its screening outcome.
    pub screening: String,
    /// Who made it.
    pub actor_id: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

fn secret_binding(tenant: TenantId, tool: ToolId) -> [u8; 32] {
    let mut binding = [0u8; 32];
    binding[..16].copy_from_slice(tenant.uuid().as_bytes());
    binding[16..].copy_from_slice(tool.uuid().as_bytes());
    binding
}

async fn record_version(tx: &mut TenantTx, tool: &Tool) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    let actor = tx.actor().audit_id();
    sqlx::query(
        "INSERT INTO tool_versions (tenant_id, tool_id, version, description, \
         input_schema, endpoint_url, enabled, screening, actor_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tenant.uuid())
    .bind(tool.id.uuid())
    .bind(tool.version)
    .bind(&tool.description)
    .bind(&tool.input_schema)
    .bind(&tool.endpoint_url)
    .bind(tool.enabled)
    .bind(&tool.screening)
    .bind(actor)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Creates a tool (version 1). A name already used in the tenant is
/// [`StoreError::Conflict`] (`tools_name_unique`).
pub async fn create(
    tx: &mut TenantTx,
    new: &NewTool,
    master: &MasterKey,
) -> Result<Tool, StoreError> {
    let tenant = tx.tenant_id();
    let id = ToolId::new();
    let sealed = data_key::seal(
        tx,
        master,
        Secret::Tool,
        &secret_binding(tenant, id),
        &new.secret,
    )
    .await?;
    let row: ToolRow = sqlx::query_as(&format!(
        "INSERT INTO tools (tenant_id, id, name, description, input_schema, \
         endpoint_url, enabled, screening, secret) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(new.name.as_str())
    .bind(&new.description)
    .bind(&new.input_schema)
    .bind(&new.endpoint_url)
    .bind(new.enabled)
    .bind(new.screening)
    .bind(sealed)
    .fetch_one(tx.conn())
    .await?;
    let tool = from_row(row);
    record_version(tx, &tool).await?;
    Ok(tool)
}

/// The tool named `name` in the transaction's tenant; another tenant's is
/// [`StoreError::NotFound`].
pub async fn get(tx: &mut TenantTx, name: &ToolName) -> Result<Tool, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<ToolRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tools WHERE tenant_id = $1 AND name = $2"
    ))
    .bind(tenant.uuid())
    .bind(name.as_str())
    .fetch_optional(tx.conn())
    .await?;
    row.map(from_row).ok_or(StoreError::NotFound)
}

/// Which tools a listing may show.
#[derive(Debug, Clone)]
pub enum Visible {
    /// Every tool, enabled or not (management).
    All,
    /// Enabled tools the credential may call: all of them, or only these names.
    Callable {
        /// `tools:call:*`.
        every: bool,
        /// The names of `tools:call:<name>` grants.
        names: Vec<String>,
    },
}

/// A page of tools after the name `after`, in name order.
pub async fn list(
    tx: &mut TenantTx,
    visible: &Visible,
    after: Option<&ToolName>,
    limit: u32,
) -> Result<Vec<Tool>, StoreError> {
    let tenant = tx.tenant_id();
    let (all, every, names) = match visible {
        Visible::All => (true, true, Vec::new()),
        Visible::Callable { every, names } => (false, *every, names.clone()),
    };
    let rows: Vec<ToolRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tools WHERE tenant_id = $1 \
         AND ($2 OR enabled) AND ($3 OR name = ANY($4)) \
         AND ($5::text IS NULL OR name > $5) ORDER BY name LIMIT $6"
    ))
    .bind(tenant.uuid())
    .bind(all)
    .bind(every)
    .bind(&names)
    .bind(after.map(ToolName::as_str))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Applies a patch as a new version.
pub async fn update(
    tx: &mut TenantTx,
    name: &ToolName,
    patch: &ToolPatch,
) -> Result<Tool, StoreError> {
    let tenant = tx.tenant_id();
    let row: Option<ToolRow> = sqlx::query_as(&format!(
        "UPDATE tools SET description = COALESCE($3, description), \
           input_schema = COALESCE($4, input_schema), endpoint_url = COALESCE($5, endpoint_url), \
           enabled = COALESCE($6, enabled), screening = $7, \
           current_version = current_version + 1, updated_at = now() \
         WHERE tenant_id = $1 AND name = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant.uuid())
    .bind(name.as_str())
    .bind(patch.description.as_deref())
    .bind(patch.input_schema.as_ref())
    .bind(patch.endpoint_url.as_deref())
    .bind(patch.enabled)
    .bind(patch.screening)
    .fetch_optional(tx.conn())
    .await?;
    let tool = row.map(from_row).ok_or(StoreError::NotFound)?;
    record_version(tx, &tool).await?;
    Ok(tool)
}

/// Deletes a tool and its history.
pub async fn delete(tx: &mut TenantTx, name: &ToolName) -> Result<ToolId, StoreError> {
    let tenant = tx.tenant_id();
    let id: Option<uuid::Uuid> =
        sqlx::query_scalar("DELETE FROM tools WHERE tenant_id = $1 AND name = $2 RETURNING id")
            .bind(tenant.uuid())
            .bind(name.as_str())
            .fetch_optional(tx.conn())
            .await?;
    id.map(ToolId::from_uuid).ok_or(StoreError::NotFound)
}

/// Every version of a tool, newest first.
pub async fn versions(tx: &mut TenantTx, name: &ToolName) -> Result<Vec<ToolVersion>, StoreError> {
    let tenant = tx.tenant_id();
    let tool = get(tx, name).await?;
    type VersionRow = (
        i32,
        String,
        Value,
        String,
        bool,
        String,
        String,
        DateTime<Utc>,
    );
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT version, description, input_schema, endpoint_url, enabled, screening, \
             actor_id, created_at FROM tool_versions \
             WHERE tenant_id = $1 AND tool_id = $2 ORDER BY version DESC",
    )
    .bind(tenant.uuid())
    .bind(tool.id.uuid())
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ToolVersion {
            version: r.0,
            description: r.1,
            input_schema: r.2,
            endpoint_url: r.3,
            enabled: r.4,
            screening: r.5,
            actor_id: r.6,
            created_at: r.7,
        })
        .collect())
}

/// The tool's call-signing secret, opened. `Debug` of the result is the caller's to keep quiet
/// (wrap it in a redacting type at once).
pub async fn signing_secret(
    tx: &mut TenantTx,
    tool: &Tool,
    master: &MasterKey,
) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    let tenant = tx.tenant_id();
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT secret FROM tools WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.uuid())
            .bind(tool.id.uuid())
            .fetch_optional(tx.conn())
            .await?
            .ok_or(StoreError::NotFound)?;
    data_key::open(
        tx,
        master,
        Secret::Tool,
        &secret_binding(tenant, tool.id),
        &sealed,
    )
    .await
}

/// The tenant's screening policy text (`reject` unless it has set another).
pub async fn screening_policy(tx: &mut TenantTx) -> Result<String, StoreError> {
    let tenant = tx.tenant_id();
    let policy: Option<String> =
        sqlx::query_scalar("SELECT screening_policy FROM tenant_settings WHERE tenant_id = $1")
            .bind(tenant.uuid())
            .fetch_optional(tx.conn())
            .await?;
    Ok(policy.unwrap_or_else(|| "reject".to_owned()))
}

/// Sets the tenant's screening policy (`reject`, `flag`, `sanitize`; the database checks).
pub async fn set_screening_policy(tx: &mut TenantTx, policy: &str) -> Result<(), StoreError> {
    let tenant = tx.tenant_id();
    sqlx::query(
        "INSERT INTO tenant_settings (tenant_id, screening_policy) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET screening_policy = EXCLUDED.screening_policy, \
         updated_at = now()",
    )
    .bind(tenant.uuid())
    .bind(policy)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A screening decision to record (never the screened text).
#[derive(Debug, Clone)]
pub struct NewDecision<'a> {
    /// What was screened: `tool:<name>`, `session:<id>`.
    pub subject: &'a str,
    /// Which field: `description`, `input_schema/properties/city/description`, …
    pub field: &'a str,
    /// The tenant's policy at the time.
    pub policy: &'a str,
    /// `clean`, `flagged`, `sanitized` or `rejected`.
    pub verdict: &'a str,
    /// Matched rule ids.
    pub rules: &'a [String],
    /// The rule file's version.
    pub rules_version: &'a str,
}

/// A recorded decision, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Id.
    pub id: ScreeningId,
    /// What was screened.
    pub subject: String,
    /// Which field.
    pub field: String,
    /// Policy.
    pub policy: String,
    /// Verdict.
    pub verdict: String,
    /// Matched rules.
    pub rules: Vec<String>,
    /// Rule file version.
    pub rules_version: String,
    /// Who wrote the text.
    pub actor_id: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Records a decision for the transaction's tenant, actor and request.
pub async fn record_decision(
    tx: &mut TenantTx,
    d: &NewDecision<'_>,
) -> Result<ScreeningId, StoreError> {
    let tenant = tx.tenant_id();
    let id = ScreeningId::new();
    let field: String = d.field.chars().take(200).collect();
    sqlx::query(
        "INSERT INTO screening_decisions (tenant_id, id, subject, field, policy, \
         verdict, rules, rules_version, actor_id, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(tenant.uuid())
    .bind(id.uuid())
    .bind(d.subject)
    .bind(field)
    .bind(d.policy)
    .bind(d.verdict)
    .bind(d.rules)
    .bind(d.rules_version)
    .bind(tx.actor().audit_id())
    .bind(tx.request_id().to_string())
    .execute(tx.conn())
    .await?;
    Ok(id)
}

/// The decisions recorded about `subject`, newest first.
pub async fn decisions(tx: &mut TenantTx, subject: &str) -> Result<Vec<Decision>, StoreError> {
    let tenant = tx.tenant_id();
    type Row = (
        uuid::Uuid,
        String,
        String,
        String,
        String,
        Vec<String>,
        String,
        String,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, subject, field, policy, verdict, rules, rules_version, actor_id, created_at \
         FROM screening_decisions WHERE tenant_id = $1 AND subject = $2 \
         ORDER BY id DESC LIMIT 500",
    )
    .bind(tenant.uuid())
    .bind(subject)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Decision {
            id: ScreeningId::from_uuid(r.0),
            subject: r.1,
            field: r.2,
            policy: r.3,
            verdict: r.4,
            rules: r.5,
            rules_version: r.6,
            actor_id: r.7,
            created_at: r.8,
        })
        .collect())
}
