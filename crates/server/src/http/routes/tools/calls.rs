//! `POST /v1/tools/{name}/calls`: a tool call. The credential's `tools:call:<name>` decides;
//! the input is validated against the tool's stored schema on the schema pool (compiled schemas
//! cached per tenant, tool and version); a `started` audit event commits before the request
//! leaves, and the end of the call is audited with its outcome. The registry is the parent
//! module.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use bulkhead_core::{TenantContext, ToolCallId, ToolName};
use bulkhead_store::audit::{self, NewEvent, Outcome};
use bulkhead_store::tenant::tools::{self as store, Tool};
use bulkhead_store::Access;
use bulkhead_webhooks::{CappedOutcome, Secret};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{parse_name, subject};
use crate::http::error::ApiError;
use crate::http::extract::{JsonBytes, Path, Tenant};
use crate::http::state::AppState;
use crate::service::screen::{self, Report};
use crate::service::tool_schemas::{schema_limits, CachedSchema, SchemaKey};

/// Validation errors named in a 422 at most.
pub const MAX_REPORTED_ERRORS: usize = 5;

/// Largest body of a tool call (413 beyond). A call's input is parsed, serialised again and
/// hashed on the request's own runtime thread before the schema pool sees it; at the
/// application's 1 MiB a tenant calling within its rate took a third of a small machine's core
/// that way and tripled another tenant's p99 (issue 27's hostile-schema run). Tool inputs are
/// arguments, not uploads: 256 KiB is far above any MCP tool's.
pub const MAX_CALL_BODY_BYTES: usize = 256 * 1024;

/// Call bodies up to this size are parsed on the request's own thread; larger ones on the
/// schema pool (see [`call`]).
const INLINE_PARSE_BYTES: usize = 16 * 1024;

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

impl CallRecord {
    /// A `tool.call` event of this call: what names the call and its input, and `more` (its
    /// result and what the stage knows).
    fn event(&self, outcome: Outcome, more: Value) -> NewEvent<'_> {
        let mut metadata = json!({
            "call_id": self.call_id,
            "tool": self.tool.as_str(),
            "version": self.version,
            "input_sha256": self.input_sha256,
        });
        if let (Value::Object(all), Value::Object(more)) = (&mut metadata, more) {
            all.extend(more);
        }
        NewEvent {
            resource_id: self.tool_id.as_deref(),
            metadata,
            ..NewEvent::new("tool.call", outcome)
        }
    }
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
    let end = json!({
        "result": r.result,
        "status": r.status,
        "latency_ms": r.latency_ms,
        "output_rules": output.map(Report::rules),
        "start_event_id": r.start_event,
    });
    audit::record_event(&mut tx, &r.event(r.outcome, end)).await?;
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
    let started = json!({ "result": "started" });
    let id = audit::record_event(&mut tx, &r.event(Outcome::Started, started)).await?;
    tx.commit().await?;
    Ok(id.to_string())
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

pub(super) async fn call(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    raw: JsonBytes,
) -> Result<axum::Json<CallResult>, ApiError> {
    let started = Instant::now();
    let ctx = &tenant.0;
    let raw_len = raw.0.len();
    // Parsing, re-serialising and hashing up to 256 KiB of input take milliseconds: a large
    // body is handled on the schema pool's lowered-priority threads, under the tenant's share of
    // them, not on the async runtime, where it held every other tenant's request the thread
    // served (issue 27: B's p99 2.6-5x while A called hostile schemas within its limits). A
    // small one costs microseconds and is parsed here: two thread hops would cost more.
    let parse = move || {
        let body: CallTool = raw.parse()?;
        let input_bytes =
            serde_json::to_vec(&body.input).map_err(|e| ApiError::Internal(e.into()))?;
        Ok::<_, ApiError>((body, sha256_hex(&input_bytes)))
    };
    let parsed = if raw_len <= INLINE_PARSE_BYTES {
        Ok(parse())
    } else {
        state
            .schema_pool()
            .run(&ctx.tenant_id().to_string(), parse)
            .await
    };
    // A malformed body is refused first, as when the body was parsed by the extractor.
    // `None`: the pool is busy (answered below, once the call can be audited).
    let parsed = match parsed {
        Ok(result) => Some(result?),
        Err(_) => None,
    };
    let name = parse_name(&name)?;
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
    // A refusal after the permission: recorded as a failure with its result.
    let refused = |record: &mut CallRecord, result: &'static str| {
        record.outcome = Outcome::Failure;
        record.result = result;
        record.latency_ms = elapsed(started);
    };
    // The permission: a function of the credential and the path alone, decided before the
    // registry is read, so it tells nothing about which tools exist.
    if !ctx.may_call_tool(&name) {
        record.latency_ms = elapsed(started);
        audit_call(&state, ctx, &record, None).await?;
        return Err(ApiError::MissingToolScope(name.as_str().to_owned()));
    }
    // After the permission, so that a caller without it is refused (and audited) as such
    // whatever the pool's load.
    let Some((body, input_sha256)) = parsed else {
        refused(&mut record, "validation_busy");
        audit_call(&state, ctx, &record, None).await?;
        return Err(ApiError::SchemaBusy);
    };
    record.input_sha256 = Some(input_sha256);

    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let tool = match store::get(&mut tx, &name).await {
        Ok(tool) => tool,
        Err(bulkhead_store::StoreError::NotFound) => {
            drop(tx);
            refused(&mut record, "not_found");
            audit_call(&state, ctx, &record, None).await?;
            return Err(ApiError::NotFound);
        }
        Err(other) => return Err(other.into()),
    };
    record.tool_id = Some(tool.id.to_string());
    record.version = Some(tool.version);
    let secret = match store::signing_secret(&mut tx, &tool, state.master_key()).await {
        Ok(secret) => secret,
        // Sealed under a data key this deployment does not hold (an imported tenant, a purged
        // key): refused, and audited as such like every other refusal of a call.
        Err(err @ bulkhead_store::StoreError::SecretUnopenable(_)) => {
            drop(tx);
            refused(&mut record, "secret_unopenable");
            audit_call(&state, ctx, &record, None).await?;
            return Err(err.into());
        }
        Err(other) => return Err(other.into()),
    };
    let policy = screen::policy(&mut tx).await?;
    tx.commit().await?;
    let secret = Secret::from_bytes(&secret)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("tool secret: {e}")))?;

    if !tool.enabled {
        refused(&mut record, "disabled");
        audit_call(&state, ctx, &record, None).await?;
        return Err(ApiError::Conflict("the tool is disabled".into()));
    }
    // Off the async runtime, on the bounded schema pool: a tenant's schema and input cannot
    // stall or crash the server (crates/schema).
    let validated = validate_input(&state, ctx, &tool, body.input).await;
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
        let client = state.tool_client();
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
        let screener = state.screener();
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
