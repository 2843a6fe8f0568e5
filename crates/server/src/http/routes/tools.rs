//! `/v1/tools`: the tenant's tool registry and tool calls.
//!
//! Who may do what (each handler's first line checks it):
//!
//! | route | permission |
//! |---|---|
//! | `POST /v1/tools`, `PATCH`/`DELETE /v1/tools/{name}`, `GET /v1/tools/{name}/versions`, `GET`/`PUT /v1/screening-policy` | `tools:manage` |
//! | `GET /v1/tools` | `tools:list`: enabled tools the credential may call; `?include_disabled=true` needs `tools:manage` and lists all |
//! | `GET /v1/tools/{name}` | `tools:manage`, or `tools:list` for an enabled tool the credential may call (else 404) |
//! | `POST /v1/tools/{name}/calls` | `tools:call:<name>` or `tools:call:*` |
//!
//! Every tenant-supplied text (name, description, every string of the input schema) is screened
//! under the tenant's policy before it is stored; refusals are recorded and audited before the
//! 422. A tool's endpoint is judged by the egress policy at registration and again, with its DNS
//! answers, on every call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::authz::RouteAccess::{self, Requires};
use crate::http::authz::RouteTable;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bulkhead_core::{Scope, TenantContext, ToolCallId, ToolName};
use bulkhead_screening::FieldKind;
use bulkhead_store::audit::{self, NewEvent, Outcome};
use bulkhead_store::tenant::tools::{
    self as store, NewTool, Tool, ToolPatch, ToolVersion, Visible,
};
use bulkhead_store::Access;
use bulkhead_webhooks::{CappedOutcome, Secret};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query, Tenant};
use crate::http::state::AppState;
use crate::service::screen::{self, Report};

/// Default page size of `GET /v1/tools`.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Largest input schema, serialized.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Validation errors named in a 422 at most.
pub const MAX_REPORTED_ERRORS: usize = 5;

/// The routes, mounted under `/v1` behind tenant resolution.
pub fn routes() -> RouteTable {
    use crate::http::authz::{
        Confinement::{self, Refused},
        TENANT_WIDE_READ,
    };
    const MANAGE: RouteAccess = Requires(Scope::ToolsManage);
    const LIST: RouteAccess = Requires(Scope::ToolsList);
    RouteTable::new()
        .get("/v1/tools", LIST, list)
        .confine(TENANT_WIDE_READ)
        .post("/v1/tools", MANAGE, create)
        .confine(Refused)
        .get("/v1/tools/{name}", LIST, fetch)
        .confine(TENANT_WIDE_READ)
        .patch("/v1/tools/{name}", MANAGE, update)
        .confine(Refused)
        .delete("/v1/tools/{name}", MANAGE, remove)
        .confine(Refused)
        .get("/v1/tools/{name}/versions", MANAGE, versions)
        .confine(TENANT_WIDE_READ)
        // The permission is per tool (`tools:call:<name>`): the handler decides, from the
        // credential's effective scopes, before anything else.
        .post("/v1/tools/{name}/calls", RouteAccess::Authenticated, call)
        .body_limit(MAX_CALL_BODY_BYTES)
        .confine(Confinement::Admitted(
            "calling a tool is what delegation is for; a call leaves only its audit record, \
             and `tools:call:<name>` (cut to every hop of the chain) bounds which tools",
        ))
        .get("/v1/screening-policy", MANAGE, get_policy)
        .confine(TENANT_WIDE_READ)
        .put("/v1/screening-policy", MANAGE, put_policy)
        .confine(Refused)
}

/// Body of `POST /v1/tools`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTool {
    name: String,
    #[serde(default)]
    description: String,
    /// A JSON Schema of `type: object`, at most 64 KiB.
    #[schema(value_type = Object)]
    input_schema: Map<String, Value>,
    /// `https://…`, judged by the egress policy.
    endpoint_url: String,
    #[serde(default)]
    enabled: Option<bool>,
}

/// Body of `PATCH /v1/tools/{name}`. The name never changes: it is the tool's scope.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTool {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    input_schema: Option<Map<String, Value>>,
    #[serde(default)]
    endpoint_url: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// Query of `GET /v1/tools`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    include_disabled: Option<bool>,
}

/// A page of tools.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolPage {
    data: Vec<Tool>,
    /// Pass as `cursor` for the next page.
    next_cursor: Option<String>,
}

/// A tool with its signing secret: only in the answer of create.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolWithSecret {
    #[serde(flatten)]
    tool: Tool,
    /// `whsec_…`: verifies the signature of every call; shown once.
    signing_secret: String,
}

/// The history of a tool.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionList {
    data: Vec<ToolVersion>,
}

/// Largest body of a tool call (413 beyond). A call's input is parsed, serialised again and
/// hashed on the request's own runtime thread before the schema pool sees it; at the
/// application's 1 MiB a tenant calling within its rate took a third of a small machine's core
/// that way and tripled another tenant's p99 (issue 27's hostile-schema run). Tool inputs are
/// arguments, not uploads: 256 KiB is far above any MCP tool's.
pub const MAX_CALL_BODY_BYTES: usize = 256 * 1024;

/// Body of `POST /v1/tools/{name}/calls`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallTool {
    input: Value,
}

/// The answer of a call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallResult {
    call_id: ToolCallId,
    tool: String,
    version: i32,
    status: u16,
    latency_ms: u64,
    /// The tool's answer: JSON when it is JSON, else text; screened under the tenant's policy.
    output: Value,
    /// How screening of the answer ended.
    screening: OutputScreening,
}

/// The screening of a tool's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutputScreening {
    /// `clean`, `flagged` or `sanitized`.
    verdict: &'static str,
    /// Matched rule ids.
    rules: Vec<String>,
    /// The rule file's version.
    rules_version: String,
}

/// Body of `PUT /v1/screening-policy`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicy {
    /// `reject`, `flag` or `sanitize`.
    policy: String,
}

/// Answer of `/v1/screening-policy`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyBody {
    /// `reject`, `flag` or `sanitize`.
    policy: String,
    /// The rule file's version.
    rules_version: String,
}

fn parse_name(text: &str) -> Result<ToolName, ApiError> {
    ToolName::parse(text).map_err(|e| ApiError::BadRequest(e.to_string().into()))
}

fn subject(name: &ToolName) -> String {
    format!("tool:{name}")
}

/// Judges an endpoint URL by the egress policy; a refusal is audited and answered 422 naming
/// the rule.
async fn check_url(state: &AppState, ctx: &TenantContext, url: &str) -> Result<String, ApiError> {
    match state.config().webhook_egress.check_url(url) {
        Ok(checked) => Ok(checked.as_str().to_owned()),
        Err(refusal) => {
            let rule = refusal.to_string();
            let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
            audit::record(
                &mut tx,
                "tool.blocked",
                None,
                Outcome::Blocked,
                json!({ "stage": "registration", "rule": rule }),
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(target: "bulkhead::audit", action = "tool.blocked", tenant_id = %ctx.tenant_id(), rule = %rule, "tool endpoint URL refused");
            Err(ApiError::Invalid(format!("endpoint_url: {rule}").into()))
        }
    }
}

/// The bounds a tenant's input schema is held to (`bulkhead_schema`): the shipped defaults,
/// with the size cap this API documents.
pub(crate) fn schema_limits() -> bulkhead_schema::Limits {
    bulkhead_schema::Limits {
        max_bytes: MAX_SCHEMA_BYTES,
        ..bulkhead_schema::Limits::default()
    }
}

/// Checks an input schema: an object schema that `bulkhead_schema` can evaluate in bounded
/// time and memory (no remote or cyclic references, bounded size, depth, expansion, enums and
/// patterns). The check runs on the schema pool, off the async runtime. A refusal is audited
/// (`tool.blocked`, stage `schema`, with the reason) and answered 422 naming why.
async fn check_schema(
    state: &AppState,
    ctx: &TenantContext,
    schema: &Value,
) -> Result<(), ApiError> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(ApiError::Invalid(
            "input_schema must be an object schema (`\"type\": \"object\"`)".into(),
        ));
    }
    let owned = schema.clone();
    let checked = state
        .schema_pool()
        .run(&ctx.tenant_id().to_string(), move || {
            bulkhead_schema::BoundedSchema::compile(&owned, &schema_limits()).map(|_| ())
        })
        .await
        .map_err(|_| ApiError::SchemaBusy)?;
    let Err(refusal) = checked else {
        return Ok(());
    };
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    audit::record(
        &mut tx,
        "tool.blocked",
        None,
        Outcome::Blocked,
        json!({ "stage": "schema", "reason": refusal.reason() }),
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(target: "bulkhead::audit", action = "tool.blocked", tenant_id = %ctx.tenant_id(), reason = refusal.reason(), "tool input schema refused");
    Err(ApiError::Invalid(format!("input_schema: {refusal}").into()))
}

async fn load_policy(
    state: &AppState,
    ctx: &TenantContext,
) -> Result<bulkhead_screening::Policy, ApiError> {
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let policy = screen::policy(&mut tx).await?;
    tx.commit().await?;
    Ok(policy)
}

#[utoipa::path(
    post, path = "/v1/tools", tag = "tools",
    request_body = CreateTool,
    responses(
        (status = 201, description = "The tool and its signing secret (shown once)", body = ToolWithSecret),
        (status = 409, description = "A tool with that name exists"),
        (status = 422, description = "An invalid field, a refused endpoint URL, or text refused by screening"),
    ),
    security(("bearer" = ["tools:manage"])),
)]
async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateTool>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = &tenant.0;
    let name =
        ToolName::parse(&body.name).map_err(|e| ApiError::Invalid(format!("name: {e}").into()))?;
    let schema = Value::Object(body.input_schema);
    check_schema(&state, ctx, &schema).await?;
    let url = check_url(&state, ctx, &body.endpoint_url).await?;
    let screener = screen::screener(&state)?;
    let mut report = Report::new(screener, load_policy(&state, ctx).await?);
    // A name is an identifier (and a scope): never rewritten, refused on any match.
    report.strict(FieldKind::ToolName, "name", name.as_str());
    let description = report.text(FieldKind::ToolDescription, "description", &body.description);
    let schema = report.schema(&schema);
    let subject = subject(&name);
    if report.rejected() {
        report.record_alone(&state, ctx, &subject).await?;
        return Err(report.rejection());
    }
    check_schema(&state, ctx, &schema).await?;
    let secret = Secret::generate();
    let new = NewTool {
        name,
        description: description.unwrap_or_default(),
        input_schema: schema,
        endpoint_url: url,
        enabled: body.enabled.unwrap_or(true),
        screening: report.outcome(),
        secret: secret.expose_bytes().to_vec(),
    };
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    report.record(&mut tx, &subject).await?;
    let tool = store::create(&mut tx, &new, state.master_key()).await?;
    audit::record(
        &mut tx,
        "tool.create",
        Some(&tool.id.to_string()),
        Outcome::Success,
        json!({
            "tool": tool.name,
            "version": tool.version,
            "screening": tool.screening,
            "rules_version": report.rules_version(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ToolWithSecret {
            tool,
            signing_secret: secret.expose_text(),
        }),
    ))
}

/// What the credential may see of the registry: the enabled tools it may call.
pub(crate) fn visible_to(ctx: &TenantContext) -> Visible {
    match ctx.actor().scopes() {
        None => Visible::Callable {
            every: true,
            names: Vec::new(),
        },
        Some(scopes) => Visible::Callable {
            every: scopes.calls_all_tools(),
            names: scopes
                .callable_tools()
                .map(|t| t.as_str().to_owned())
                .collect(),
        },
    }
}

#[utoipa::path(
    get, path = "/v1/tools", tag = "tools",
    params(ListQuery),
    responses(
        (status = 200, description = "The enabled tools the credential may call (all, with include_disabled and tools:manage)", body = ToolPage),
        (status = 422, description = "Limit out of range"),
    ),
    security(("bearer" = ["tools:list"])),
)]
async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<ToolPage>, ApiError> {
    let (ctx, visible) = if query.include_disabled == Some(true) {
        (tenant.require(Scope::ToolsManage)?, Visible::All)
    } else {
        let ctx = tenant.require(Scope::ToolsList)?;
        (ctx, visible_to(ctx))
    };
    let limit = super::page_limit(query.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let after = query.cursor.as_deref().map(parse_name).transpose()?;
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let rows = store::list(&mut tx, &visible, after.as_ref(), limit + 1).await?;
    tx.commit().await?;
    let (data, next_cursor) = super::into_page(rows, limit, |t| t.name.clone());
    Ok(axum::Json(ToolPage { data, next_cursor }))
}

#[utoipa::path(
    get, path = "/v1/tools/{name}", tag = "tools",
    params(("name" = String, Path, description = "The tool's name")),
    responses(
        (status = 200, description = "The tool", body = Tool),
        (status = 404, description = "No such tool (or another tenant's)"),
    ),
    security(("bearer" = ["tools:list"])),
)]
async fn fetch(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<axum::Json<Tool>, ApiError> {
    // Managers see any tool; listers only enabled tools they may call, and anything else
    // answers exactly like a missing tool.
    let manager = tenant.0.has_scope(Scope::ToolsManage);
    let ctx = if manager {
        &tenant.0
    } else {
        tenant.require(Scope::ToolsList)?
    };
    let name = parse_name(&name)?;
    if !manager && !ctx.may_call_tool(&name) {
        return Err(ApiError::NotFound);
    }
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let tool = store::get(&mut tx, &name).await?;
    tx.commit().await?;
    if !manager && !tool.enabled {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(tool))
}

#[utoipa::path(
    patch, path = "/v1/tools/{name}", tag = "tools",
    params(("name" = String, Path, description = "The tool's name")),
    request_body = UpdateTool,
    responses(
        (status = 200, description = "The tool, at its new version", body = Tool),
        (status = 404, description = "No such tool (or another tenant's)"),
        (status = 422, description = "An invalid field, a refused endpoint URL, or text refused by screening"),
    ),
    security(("bearer" = ["tools:manage"])),
)]
async fn update(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    Json(body): Json<UpdateTool>,
) -> Result<axum::Json<Tool>, ApiError> {
    let ctx = &tenant.0;
    let name = parse_name(&name)?;
    let schema = body.input_schema.map(Value::Object);
    if let Some(schema) = &schema {
        check_schema(&state, ctx, schema).await?;
    }
    let url = match &body.endpoint_url {
        Some(url) => Some(check_url(&state, ctx, url).await?),
        None => None,
    };
    let screener = screen::screener(&state)?;
    let mut report = Report::new(screener, load_policy(&state, ctx).await?);
    let description = body
        .description
        .as_deref()
        .map(|d| report.text(FieldKind::ToolDescription, "description", d));
    let schema = schema.map(|s| report.schema(&s));
    let subject = subject(&name);
    if report.rejected() {
        report.record_alone(&state, ctx, &subject).await?;
        return Err(report.rejection());
    }
    if let Some(schema) = &schema {
        check_schema(&state, ctx, schema).await?;
    }
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let current = store::get(&mut tx, &name).await?;
    // The new version is flagged if a changed field was flagged, or if it keeps a flagged
    // field unchanged (a flag is lifted only by replacing what carried it).
    let screening = if report.flagged()
        || (current.screening == "flagged" && !(description.is_some() && schema.is_some()))
    {
        "flagged"
    } else {
        "clean"
    };
    report.record(&mut tx, &subject).await?;
    let tool = store::update(
        &mut tx,
        &name,
        &ToolPatch {
            description: description.map(Option::unwrap_or_default),
            input_schema: schema,
            endpoint_url: url,
            enabled: body.enabled,
            screening,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        "tool.update",
        Some(&tool.id.to_string()),
        Outcome::Success,
        json!({
            "tool": tool.name,
            "version": tool.version,
            "enabled": tool.enabled,
            "screening": tool.screening,
            "rules_version": report.rules_version(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(tool))
}

#[utoipa::path(
    delete, path = "/v1/tools/{name}", tag = "tools",
    params(("name" = String, Path, description = "The tool's name")),
    responses(
        (status = 204, description = "Deleted, with its history"),
        (status = 404, description = "No such tool (or another tenant's)"),
    ),
    security(("bearer" = ["tools:manage"])),
)]
async fn remove(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ctx = &tenant.0;
    let name = parse_name(&name)?;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let id = store::delete(&mut tx, &name).await?;
    audit::record(
        &mut tx,
        "tool.delete",
        Some(&id.to_string()),
        Outcome::Success,
        json!({ "tool": name.as_str() }),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/tools/{name}/versions", tag = "tools",
    params(("name" = String, Path, description = "The tool's name")),
    responses(
        (status = 200, description = "Every version of the tool", body = VersionList),
        (status = 404, description = "No such tool (or another tenant's)"),
    ),
    security(("bearer" = ["tools:manage"])),
)]
async fn versions(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<axum::Json<VersionList>, ApiError> {
    let ctx = &tenant.0;
    let name = parse_name(&name)?;
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let data = store::versions(&mut tx, &name).await?;
    tx.commit().await?;
    Ok(axum::Json(VersionList { data }))
}

#[utoipa::path(
    get, path = "/v1/screening-policy", tag = "tools",
    responses((status = 200, description = "The tenant's screening policy", body = PolicyBody)),
    security(("bearer" = ["tools:manage"])),
)]
async fn get_policy(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<axum::Json<PolicyBody>, ApiError> {
    let ctx = &tenant.0;
    let screener = screen::screener(&state)?;
    let policy = load_policy(&state, ctx).await?;
    Ok(axum::Json(PolicyBody {
        policy: policy.as_str().to_owned(),
        rules_version: screener.version().to_owned(),
    }))
}

#[utoipa::path(
    put, path = "/v1/screening-policy", tag = "tools",
    request_body = PutPolicy,
    responses(
        (status = 200, description = "The new policy", body = PolicyBody),
        (status = 422, description = "Not one of reject, flag, sanitize"),
    ),
    security(("bearer" = ["tools:manage"])),
)]
async fn put_policy(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<PutPolicy>,
) -> Result<axum::Json<PolicyBody>, ApiError> {
    let ctx = &tenant.0;
    let screener = screen::screener(&state)?;
    let policy = bulkhead_screening::Policy::parse(&body.policy)
        .ok_or_else(|| ApiError::Invalid("policy is `reject`, `flag` or `sanitize`".into()))?;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    store::set_screening_policy(&mut tx, policy.as_str()).await?;
    audit::record(
        &mut tx,
        "tool.screening_policy",
        None,
        Outcome::Success,
        json!({ "policy": policy.as_str() }),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(PolicyBody {
        policy: policy.as_str().to_owned(),
        rules_version: screener.version().to_owned(),
    }))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a call's audit event says.
struct CallRecord {
    call_id: ToolCallId,
    tool: ToolName,
    tool_id: Option<String>,
    version: Option<i32>,
    input_sha256: Option<String>,
    outcome: Outcome,
    result: &'static str,
    status: Option<u16>,
    latency_ms: u64,
    /// The `started` event this result closes (calls that sent something).
    start_event: Option<String>,
}

/// The audit event of a call's end: caller (the transaction's actor), delegation chain (the
/// credential's, filled in by the audit store), tool, input hash, outcome, latency, and for a
/// call that was sent, the id of its `started` event (the two also share `call_id`).
async fn audit_call(
    state: &AppState,
    ctx: &TenantContext,
    r: &CallRecord,
    output: Option<&Report<'_>>,
) -> Result<(), ApiError> {
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    if let Some(report) = output {
        report.record(&mut tx, &subject(&r.tool)).await?;
    }
    audit::record_event(
        &mut tx,
        &NewEvent {
            resource_id: r.tool_id.as_deref(),
            metadata: json!({
                "call_id": r.call_id,
                "tool": r.tool.as_str(),
                "version": r.version,
                "input_sha256": r.input_sha256,
                "result": r.result,
                "status": r.status,
                "latency_ms": r.latency_ms,
                "output_rules": output.map(Report::rules),
                "start_event_id": r.start_event,
            }),
            ..NewEvent::new("tool.call", r.outcome)
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(target: "bulkhead::audit", action = "tool.call", tenant_id = %ctx.tenant_id(), actor_id = %ctx.actor().audit_id(), tool = %r.tool, result = r.result, latency_ms = r.latency_ms, "tool call");
    Ok(())
}

/// The `started` event of a call, committed before the request leaves: if this write fails,
/// nothing is sent. Returns its id.
async fn audit_start(
    state: &AppState,
    ctx: &TenantContext,
    r: &CallRecord,
) -> Result<String, ApiError> {
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let id = audit::record_event(
        &mut tx,
        &NewEvent {
            resource_id: r.tool_id.as_deref(),
            metadata: json!({
                "call_id": r.call_id,
                "tool": r.tool.as_str(),
                "version": r.version,
                "input_sha256": r.input_sha256,
                "result": "started",
            }),
            ..NewEvent::new("tool.call", Outcome::Started)
        },
    )
    .await?;
    tx.commit().await?;
    Ok(id.to_string())
}

/// Key of a compiled input schema: the tenant is part of it, so one tenant's entry can never
/// answer for another's tool even if ids collided.
type SchemaKey = (String, String, i32);

/// A stored schema and what compiling it gave (refusals are cached too: a stored schema that no
/// longer passes the bounds is not re-checked on every call).
#[derive(Debug)]
pub(crate) struct CachedSchema {
    schema: Value,
    compiled: Result<bulkhead_schema::BoundedSchema, bulkhead_schema::SchemaError>,
}

/// Compiled input schemas (`AppState::schema_cache`), weighed by their approximate size.
pub(crate) type SchemaCache = moka::sync::Cache<SchemaKey, Arc<CachedSchema>>;

/// At most about 64 MiB of compiled schemas, each kept 10 minutes after its last use.
pub(crate) fn new_schema_cache() -> SchemaCache {
    moka::sync::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(|_, v: &Arc<CachedSchema>| {
            let bytes = v
                .compiled
                .as_ref()
                .map_or(0, bulkhead_schema::BoundedSchema::approx_bytes)
                .saturating_add(MAX_SCHEMA_BYTES as u64);
            u32::try_from(bytes).unwrap_or(u32::MAX)
        })
        .time_to_idle(Duration::from_secs(600))
        .build()
}

/// Validates `input` against the tool's stored schema under the bounds, on the schema pool,
/// compiling the schema only when (tenant, tool id, version) is not cached. Gives the input
/// back with the verdict.
async fn validate_input(
    state: &AppState,
    ctx: &TenantContext,
    tool: &Tool,
    input: Value,
) -> Result<(Value, Result<Vec<String>, InputRefusal>), bulkhead_schema::PoolError> {
    let key: SchemaKey = (
        ctx.tenant_id().to_string(),
        tool.id.to_string(),
        tool.version,
    );
    // Compared on a hit as well: the entry must be of exactly this schema.
    let cached = state
        .schema_cache()
        .get(&key)
        .filter(|c| c.schema == tool.input_schema);
    let schema = tool.input_schema.clone();
    let cache = state.schema_cache().clone();
    state
        .schema_pool()
        .run(&ctx.tenant_id().to_string(), move || {
            let entry = cached.unwrap_or_else(|| {
                let compiled = bulkhead_schema::BoundedSchema::compile(&schema, &schema_limits());
                let entry = Arc::new(CachedSchema { schema, compiled });
                cache.insert(key, Arc::clone(&entry));
                entry
            });
            let verdict = match &entry.compiled {
                Err(e) => Err(InputRefusal::Schema(e.clone())),
                Ok(compiled) => compiled
                    .validate(&input, MAX_REPORTED_ERRORS)
                    .map_err(InputRefusal::Input),
            };
            (input, verdict)
        })
        .await
}

/// Why a call's input was not validated.
enum InputRefusal {
    /// The stored schema no longer passes the bounds (registered before they existed).
    Schema(bulkhead_schema::SchemaError),
    /// This input would cost more than the bounds allow.
    Input(bulkhead_schema::SchemaError),
}

#[utoipa::path(
    post, path = "/v1/tools/{name}/calls", tag = "tools",
    params(("name" = String, Path, description = "The tool's name")),
    request_body = CallTool,
    responses(
        (status = 200, description = "The tool's answer", body = CallResult),
        (status = 403, description = "The credential lacks `tools:call:<name>` (or `tools:call:*`)"),
        (status = 404, description = "No such tool (or another tenant's)"),
        (status = 409, description = "The tool is disabled"),
        (status = 422, description = "The input does not match the tool's schema, or would cost more to validate than the bounds allow"),
        (status = 502, description = "The tool failed, answered too much, or its answer was refused by screening"),
        (status = 503, description = "Schema evaluation is busy, or the call could not be recorded (nothing was sent)"),
        (status = 504, description = "The tool did not answer in time"),
    ),
    security(("bearer" = ["tools:call:<name>"])),
)]
async fn call(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    Json(body): Json<CallTool>,
) -> Result<axum::Json<CallResult>, ApiError> {
    let started = Instant::now();
    let name = parse_name(&name)?;
    let ctx = &tenant.0;
    let call_id = ToolCallId::new();
    let mut record = CallRecord {
        call_id,
        tool: name.clone(),
        tool_id: None,
        version: None,
        input_sha256: None,
        outcome: Outcome::Blocked,
        result: "missing_scope",
        status: None,
        latency_ms: 0,
        start_event: None,
    };
    // The permission: a function of the credential and the path alone, decided before the
    // registry is read, so it tells nothing about which tools exist.
    if !ctx.may_call_tool(&name) {
        record.latency_ms = elapsed(started);
        audit_call(&state, ctx, &record, None).await?;
        return Err(ApiError::MissingToolScope(name.as_str().to_owned()));
    }
    let input_bytes = serde_json::to_vec(&body.input).map_err(|e| ApiError::Internal(e.into()))?;
    record.input_sha256 = Some(sha256_hex(&input_bytes));

    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let tool = match store::get(&mut tx, &name).await {
        Ok(tool) => tool,
        Err(bulkhead_store::StoreError::NotFound) => {
            drop(tx);
            record.outcome = Outcome::Failure;
            record.result = "not_found";
            record.latency_ms = elapsed(started);
            audit_call(&state, ctx, &record, None).await?;
            return Err(ApiError::NotFound);
        }
        Err(other) => return Err(other.into()),
    };
    let secret = store::signing_secret(&mut tx, &tool, state.master_key()).await?;
    let policy = screen::policy(&mut tx).await?;
    tx.commit().await?;
    record.tool_id = Some(tool.id.to_string());
    record.version = Some(tool.version);
    let secret = Secret::from_bytes(&secret)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("tool secret: {e}")))?;

    if !tool.enabled {
        record.outcome = Outcome::Failure;
        record.result = "disabled";
        record.latency_ms = elapsed(started);
        audit_call(&state, ctx, &record, None).await?;
        return Err(ApiError::Conflict("the tool is disabled".into()));
    }
    // Off the async runtime, on the bounded schema pool: a tenant's schema and input cannot
    // stall or crash the server (crates/schema).
    let validated = validate_input(&state, ctx, &tool, body.input).await;
    let refused = |record: &mut CallRecord, result: &'static str| {
        record.outcome = Outcome::Failure;
        record.result = result;
        record.latency_ms = elapsed(started);
    };
    let input = match validated {
        Err(_) => {
            refused(&mut record, "validation_busy");
            audit_call(&state, ctx, &record, None).await?;
            return Err(ApiError::SchemaBusy);
        }
        Ok((_, Err(InputRefusal::Schema(e)))) => {
            refused(&mut record, "schema_refused");
            audit_call(&state, ctx, &record, None).await?;
            return Err(ApiError::Invalid(
                format!("the tool's input_schema exceeds the schema bounds ({e}); replace it with PATCH")
                    .into(),
            ));
        }
        Ok((_, Err(InputRefusal::Input(e)))) => {
            refused(&mut record, "input_too_costly");
            audit_call(&state, ctx, &record, None).await?;
            return Err(ApiError::Invalid(format!("input: {e}").into()));
        }
        Ok((_, Ok(errors))) if !errors.is_empty() => {
            refused(&mut record, "invalid_input");
            audit_call(&state, ctx, &record, None).await?;
            return Err(ApiError::Invalid(
                format!(
                    "input does not match the tool's schema: {}",
                    errors.join("; ")
                )
                .into(),
            ));
        }
        Ok((input, Ok(_))) => input,
    };

    let payload = json!({
        "type": "tool.call",
        "call_id": call_id,
        "tool": tool.name,
        "version": tool.version,
        "caller": {
            "actor_id": ctx.actor().audit_id(),
            "actor_type": ctx.actor().audit_type(),
            "delegation": ctx.actor().delegation(),
        },
        "input": input,
    });
    let body_bytes =
        bytes::Bytes::from(serde_json::to_vec(&payload).map_err(|e| ApiError::Internal(e.into()))?);
    let timestamp = state.clock().now().timestamp();
    let mut headers = bulkhead_webhooks::signing::signed_headers(
        &[&secret],
        &call_id.to_string(),
        timestamp,
        &body_bytes,
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );

    // The start is committed before anything leaves; if it cannot be, nothing is sent.
    record.start_event = Some(audit_start(&state, ctx, &record).await?);
    // From here the call and its result event run in their own task: a client that
    // disconnects drops this handler, not the call, so what was sent is always recorded.
    let outbound = Outbound {
        state: state.clone(),
        ctx: ctx.clone(),
        record,
        tool,
        headers,
        body: body_bytes,
        policy,
        started,
    };
    tokio::spawn(outbound.run())
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("tool call task: {e}")))?
        .map(axum::Json)
}

fn elapsed(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A call whose `started` event is committed: everything it needs to send the request and
/// record the result, owned, so it can outlive the request that started it.
struct Outbound {
    state: AppState,
    ctx: TenantContext,
    record: CallRecord,
    tool: Tool,
    headers: http::HeaderMap,
    body: bytes::Bytes,
    policy: bulkhead_screening::Policy,
    started: Instant,
}

impl Outbound {
    async fn run(self) -> Result<CallResult, ApiError> {
        let Outbound {
            state,
            ctx,
            mut record,
            tool,
            headers,
            body,
            policy,
            started,
        } = self;
        let ctx = &ctx;
        let state = &state;
        let client = state
            .tool_client()
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("tool client: {e}")))?;
        let settings = &state.config().tools;
        let outcome = client
            .post_capped(
                ctx.tenant_id(),
                &tool.endpoint_url,
                headers,
                body,
                settings.max_response_bytes,
                settings.call_timeout,
            )
            .await;
        record.latency_ms = elapsed(started);
        let answer = match outcome {
            CappedOutcome::Response {
                status,
                content_type,
                body,
                ..
            } => {
                record.status = Some(status);
                if (200..300).contains(&status) {
                    record.outcome = Outcome::Success;
                    record.result = "success";
                    let is_json = content_type
                        .as_deref()
                        .is_some_and(|t| t.starts_with("application/json"));
                    let output = if is_json {
                        serde_json::from_slice(&body).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&body).into_owned())
                        })
                    } else {
                        Value::String(String::from_utf8_lossy(&body).into_owned())
                    };
                    Ok(output)
                } else {
                    record.outcome = Outcome::Failure;
                    record.result = "tool_error";
                    Err(ApiError::ToolFailed(status))
                }
            }
            CappedOutcome::TooLarge { status, .. } => {
                record.status = Some(status);
                record.outcome = Outcome::Failure;
                record.result = "response_too_large";
                Err(ApiError::ToolResponseTooLarge(settings.max_response_bytes))
            }
            CappedOutcome::Blocked(refusal) => {
                record.outcome = Outcome::Blocked;
                record.result = "egress_blocked";
                Err(ApiError::ToolEndpointRefused(refusal.to_string()))
            }
            CappedOutcome::Transport { class, .. } => {
                record.outcome = Outcome::Failure;
                if class == "timeout" {
                    record.result = "timeout";
                    Err(ApiError::ToolTimeout)
                } else {
                    record.result = "unreachable";
                    Err(ApiError::ToolUnreachable(class))
                }
            }
        };
        let output = match answer {
            Ok(output) => output,
            Err(err) => {
                audit_call(state, ctx, &record, None).await?;
                return Err(err);
            }
        };
        // The answer enters the agent's context: screened like everything else a tenant
        // supplies.
        let screener = screen::screener(state)?;
        let mut report = Report::new(screener, policy);
        let output = report.output(&output);
        if report.rejected() {
            record.outcome = Outcome::Blocked;
            record.result = "output_rejected";
            audit_call(state, ctx, &record, Some(&report)).await?;
            return Err(ApiError::ToolOutputRejected(report.rules().join(", ")));
        }
        audit_call(state, ctx, &record, Some(&report)).await?;
        Ok(CallResult {
            call_id: record.call_id,
            tool: tool.name.clone(),
            version: tool.version,
            status: record.status.unwrap_or_default(),
            latency_ms: record.latency_ms,
            output,
            screening: OutputScreening {
                verdict: report.verdict().as_str(),
                rules: report.rules(),
                rules_version: screener.version().to_owned(),
            },
        })
    }
}
