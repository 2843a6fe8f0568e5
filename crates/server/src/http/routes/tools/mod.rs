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

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::{self, Requires};
use crate::http::authz::RouteTable;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bulkhead_core::{Scope, TenantContext, ToolName};
use bulkhead_screening::FieldKind;
use bulkhead_store::audit::Outcome;
use bulkhead_store::tenant::tools::{
    self as store, NewTool, Tool, ToolPatch, ToolVersion, Visible,
};
use bulkhead_store::TenantTx;
use bulkhead_webhooks::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::PartialSchema;

use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Tenant};
use crate::http::routes::kit::page::ListQuery;
use crate::http::routes::kit::write::{record_refusal, Tail};
use crate::http::routes::kit::{policy, tx, validate};
use crate::http::state::AppState;
use crate::service::screen::Report;

pub mod calls;
use calls::{call, CallResult, CallTool, MAX_CALL_BODY_BYTES};

use crate::service::tool_schemas::schema_limits;
pub use crate::service::tool_schemas::MAX_SCHEMA_BYTES;

/// The routes, mounted under `/v1` behind tenant resolution.
pub fn routes() -> RouteTable {
    use crate::http::authz::{
        Confinement::{self, Refused},
        TENANT_WIDE_READ,
    };
    const MANAGE: RouteAccess = Requires(Scope::ToolsManage);
    const LIST: RouteAccess = Requires(Scope::ToolsList);
    RouteTable::tagged("tools")
        .resource(
            "/v1/tools/{name}",
            OpDoc::named("name", String::schema(), "The tool's name").not_found("tool"),
        )
        .get("/v1/tools", LIST, list)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<ToolPage, ListFilters>(
                "The enabled tools the credential may call (all, with \
                include_disabled and tools:manage)",
            )
            .describe("limit", Some("Page size (default 50)."))
            .describe("cursor", None)
            .invalid("Limit out of range"),
        )
        .post("/v1/tools", MANAGE, create)
        .confine(Refused)
        .doc(
            OpDoc::ok::<ToolWithSecret>(201, "The tool and its signing secret (shown once)")
                .body::<CreateTool>()
                .conflict("A tool with that name exists")
                .invalid(
                    "An invalid field, a refused endpoint URL, or text refused by \
                    screening",
                ),
        )
        .get("/v1/tools/{name}", LIST, fetch)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<Tool>(200, "The tool"))
        .patch("/v1/tools/{name}", MANAGE, update)
        .confine(Refused)
        .doc(
            OpDoc::ok::<Tool>(200, "The tool, at its new version")
                .body::<UpdateTool>()
                .invalid(
                    "An invalid field, a refused endpoint URL, or text refused by \
                    screening",
                ),
        )
        .delete("/v1/tools/{name}", MANAGE, remove)
        .confine(Refused)
        .doc(OpDoc::empty(204, "Deleted, with its history"))
        .get("/v1/tools/{name}/versions", MANAGE, versions)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<VersionList>(200, "Every version of the tool"))
        // The permission is per tool (`tools:call:<name>`): the handler decides, from the
        // credential's effective scopes, before anything else.
        .post("/v1/tools/{name}/calls", RouteAccess::Authenticated, call)
        .body_limit(MAX_CALL_BODY_BYTES)
        .confine(Confinement::Admitted(
            "calling a tool is what delegation is for; a call leaves only its audit record, \
             and `tools:call:<name>` (cut to every hop of the chain) bounds which tools",
        ))
        .doc(
            OpDoc::ok::<CallResult>(200, "The tool's answer")
                .body::<CallTool>()
                .forbidden("The credential lacks `tools:call:<name>` (or `tools:call:*`)")
                .conflict("The tool is disabled")
                .invalid(
                    "The input does not match the tool's schema, or would cost more \
                    to validate than the bounds allow",
                )
                .answer(
                    502,
                    "The tool failed, answered too much, or its answer was refused by \
                    screening",
                )
                .answer(
                    503,
                    "Schema evaluation is busy, or the call could not be recorded \
                    (nothing was sent)",
                )
                .answer(504, "The tool did not answer in time")
                .bearer("tools:call:<name>"),
        )
        .get("/v1/screening-policy", MANAGE, get_policy)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<PolicyBody>(
            200,
            "The tenant's screening policy",
        ))
        .put("/v1/screening-policy", MANAGE, put_policy)
        .confine(Refused)
        .doc(
            OpDoc::ok::<PolicyBody>(200, "The new policy")
                .body::<PutPolicy>()
                .invalid("Not one of reject, flag, sanitize"),
        )
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

/// Filters of `GET /v1/tools`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListFilters {
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

/// Body of `PUT /v1/screening-policy`. Named apart from the key policy's body: two schemas of
/// one name collide in the document.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PutScreeningPolicy)]
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

/// Judges an endpoint URL by the egress policy ([`validate::egress_url`]).
async fn check_url(state: &AppState, ctx: &TenantContext, url: &str) -> Result<String, ApiError> {
    let what = "tool endpoint URL";
    validate::egress_url(state, ctx, url, "tool.blocked", "endpoint_url", what).await
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
    let meta = json!({ "stage": "schema", "reason": refusal.reason() });
    record_refusal(state, ctx, "tool.blocked", None, Outcome::Blocked, meta).await?;
    tracing::warn!(target: "bulkhead::audit", action = "tool.blocked", tenant_id = %ctx.tenant_id(), reason = refusal.reason(), "tool input schema refused");
    Err(ApiError::Invalid(format!("input_schema: {refusal}").into()))
}

/// What the audit event of a tool's write says of it: its name, version and screening verdict,
/// and the version of the rules that screened it.
fn tool_meta(tool: &Tool, report: &Report) -> Value {
    json!({
        "tool": tool.name,
        "version": tool.version,
        "screening": tool.screening,
        "rules_version": report.rules_version(),
    })
}

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
    let screener = state.screener();
    let mut report = Report::new(screener, policy::read(&state, ctx).await?);
    // A name is an identifier (and a scope): never rewritten, refused on any match.
    report.strict(FieldKind::ToolName, "name", name.as_str());
    let description = report.text(FieldKind::ToolDescription, "description", &body.description);
    let schema = report.schema(&schema);
    let subject = subject(&name);
    if report.rejected() {
        report.record_alone(state.store(), ctx, &subject).await?;
        return Err(report.rejection().into());
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
    let tool = tx::write(&state, ctx, async |tx| {
        report.record(tx, &subject).await?;
        let tool = store::create(tx, &new, state.master_key()).await?;
        let tail = Tail::new().audit("tool.create", tool.id, tool_meta(&tool, &report));
        Ok((tool, tail))
    })
    .await?;
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

async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery<ListFilters>,
) -> Result<axum::Json<ToolPage>, ApiError> {
    let (ctx, visible) = if query.filter.include_disabled == Some(true) {
        (tenant.require(Scope::ToolsManage)?, Visible::All)
    } else {
        let ctx = tenant.require(Scope::ToolsList)?;
        (ctx, visible_to(ctx))
    };
    let rows = async |tx: &mut TenantTx, after: Option<ToolName>, n| {
        Ok(store::list(tx, &visible, after.as_ref(), n).await?)
    };
    let (data, next_cursor) = query
        .page(parse_name)?
        .read(&state, ctx, rows, |t| t.name.clone())
        .await?;
    Ok(axum::Json(ToolPage { data, next_cursor }))
}

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
    let tool = tx::read(&state, ctx, async |tx| Ok(store::get(tx, &name).await?)).await?;
    if !manager && !tool.enabled {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(tool))
}

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
    let screener = state.screener();
    let mut report = Report::new(screener, policy::read(&state, ctx).await?);
    let description = body
        .description
        .as_deref()
        .map(|d| report.text(FieldKind::ToolDescription, "description", d));
    let schema = schema.map(|s| report.schema(&s));
    let subject = subject(&name);
    if report.rejected() {
        report.record_alone(state.store(), ctx, &subject).await?;
        return Err(report.rejection().into());
    }
    if let Some(schema) = &schema {
        check_schema(&state, ctx, schema).await?;
    }
    let tool = tx::write(&state, ctx, async |tx| {
        let current = store::get(tx, &name).await?;
        // The new version is flagged if a changed field was flagged, or if it keeps a flagged
        // field unchanged (a flag is lifted only by replacing what carried it).
        let screening = if report.flagged()
            || (current.screening == "flagged" && !(description.is_some() && schema.is_some()))
        {
            "flagged"
        } else {
            "clean"
        };
        report.record(tx, &subject).await?;
        let patch = ToolPatch {
            description: description.map(Option::unwrap_or_default),
            input_schema: schema,
            endpoint_url: url,
            enabled: body.enabled,
            screening,
        };
        let tool = store::update(tx, &name, &patch).await?;
        let mut meta = tool_meta(&tool, &report);
        meta["enabled"] = json!(tool.enabled);
        let tail = Tail::new().audit("tool.update", tool.id, meta);
        Ok((tool, tail))
    })
    .await?;
    Ok(axum::Json(tool))
}

async fn remove(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    tx::write(&state, &tenant.0, async |tx| {
        let id = store::delete(tx, &name).await?;
        Ok((
            (),
            Tail::new().audit("tool.delete", id, json!({ "tool": name.as_str() })),
        ))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn versions(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<axum::Json<VersionList>, ApiError> {
    let name = parse_name(&name)?;
    let data = tx::read(&state, &tenant.0, async |tx| {
        Ok(store::versions(tx, &name).await?)
    })
    .await?;
    Ok(axum::Json(VersionList { data }))
}

async fn get_policy(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<axum::Json<PolicyBody>, ApiError> {
    let screener = state.screener();
    let policy: bulkhead_screening::Policy = policy::read(&state, &tenant.0).await?;
    Ok(axum::Json(PolicyBody {
        policy: policy.as_str().to_owned(),
        rules_version: screener.version().to_owned(),
    }))
}

async fn put_policy(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<PutPolicy>,
) -> Result<axum::Json<PolicyBody>, ApiError> {
    let ctx = &tenant.0;
    let screener = state.screener();
    let policy = bulkhead_screening::Policy::parse(&body.policy)
        .ok_or_else(|| ApiError::Invalid("policy is `reject`, `flag` or `sanitize`".into()))?;
    policy::replace(&state, ctx, &policy).await?;
    Ok(axum::Json(PolicyBody {
        policy: policy.as_str().to_owned(),
        rules_version: screener.version().to_owned(),
    }))
}
