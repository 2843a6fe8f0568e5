//! `/v1/audit`: the tenant's own verifiable audit log, and the log key at a well-known URL.
//!
//! Every route requires `audit:read` and works inside the caller's tenant transaction, so a
//! tenant only ever sees its own log; another tenant's event id answers like a missing one.

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::{self, Requires};
use crate::http::authz::RouteTable;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_audit::export::ExportLine;
use bulkhead_core::{AuditEventId, Scope};
use bulkhead_store::audit::log::{self as audit_log, ProofRefusal, Sweep};
use bulkhead_store::audit::pages::{self as audit_pages, EventFilter, ListedEvent};
use bulkhead_store::TenantTx;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::PartialSchema;

use crate::http::error::ApiError;
use crate::http::extract::{Query, Tenant};
use crate::http::routes::kit::page::{ListQuery, PageRequest};
use crate::http::routes::kit::write::Tail;
use crate::http::routes::kit::{tx, validate};
use crate::http::state::AppState;
use crate::service::audit_log::export_lines;

/// Where the log's public key is published (outside `/v1`: no credential needed).
pub const LOG_KEY_PATH: &str = "/.well-known/bulkhead-audit-key";

/// Leaves read per database round trip while exporting.
pub const EXPORT_PAGE: u64 = 2000;

/// The routes and who may call them. The log's public key is public: verifiers need it without
/// an account.
pub fn routes() -> RouteTable {
    use crate::http::authz::{Confinement, TENANT_WIDE_READ};
    const READ: RouteAccess = Requires(Scope::AuditRead);
    RouteTable::tagged("audit")
        .get(LOG_KEY_PATH, RouteAccess::Public, log_key)
        .doc(
            OpDoc::ok::<LogKey>(200, "The audit log's Ed25519 public key")
                .summary("`GET /.well-known/bulkhead-audit-key`."),
        )
        .get("/v1/audit/events", READ, list_events)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<EventPage, EventFilters>("A page of events")
                .cursor::<AuditEventId>()
                .summary("The tenant's audit events, oldest first.")
                .invalid(
                    "Limit outside 1 to 200, an invalid filter, or `since` after \
                    `until`",
                ),
        )
        .post("/v1/audit/checkpoints", READ, checkpoint_now)
        .confine(Confinement::Delegated(
            "signs the tenant-wide tree head an audit:read holder may ask \
            for; no prefix bounds it",
        ))
        .doc(
            OpDoc::ok::<bulkhead_audit::SignedCheckpoint>(
                201,
                "A new signed checkpoint: the tree grew",
            )
            .summary(
                "`POST /v1/audit/checkpoints`: sequences the tenant's pending \
                events now and signs a\n\
                checkpoint if the tree grew since the latest one; otherwise \
                answers the latest (200). The route\n\
                needs only `audit:read`, which viewers hold: it must not append \
                a signed row per call.",
            )
            .also::<bulkhead_audit::SignedCheckpoint>(
                200,
                "The latest checkpoint: the tree has not grown since",
            ),
        )
        .get("/v1/audit/checkpoints/latest", READ, latest_checkpoint)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::ok::<bulkhead_audit::SignedCheckpoint>(200, "The checkpoint")
                .summary("The latest signed checkpoint.")
                .answer(404, "No checkpoint yet"),
        )
        .get("/v1/audit/proofs/inclusion", READ, inclusion)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::ok::<audit_log::InclusionProof>(200, "The proof")
                .query::<InclusionQuery>()
                .summary(
                    "RFC 9162 inclusion proof of an event in the tree of `tree_size` \
                    leaves.",
                )
                .not_found("event")
                .conflict("The event is not in the log yet")
                .invalid("A tree size the log does not have"),
        )
        .get("/v1/audit/proofs/consistency", READ, consistency)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::ok::<audit_log::ConsistencyProof>(200, "The proof")
                .query::<ConsistencyQuery>()
                .summary("RFC 9162 consistency proof between two tree sizes.")
                .invalid("Sizes the log does not have, or `from` outside 1 to `to`"),
        )
        .get("/v1/audit/export", READ, export)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::inline(
                200,
                "The export: one JSON object per line",
                "application/x-ndjson",
                String::schema(),
            )
            .summary(
                "`GET /v1/audit/export`: a checkpoint of the whole log (the \
                latest, or a new one if the tree\n\
                grew), then every leaf it covers, as NDJSON. The checkpoint and \
                every page are read from one\n\
                `REPEATABLE READ` snapshot ([`audit_pages::ExportSnapshot`]), so \
                a purge that runs while the\n\
                export streams cannot turn leaves into `purged` lines whose \
                `audit.purge` event lies beyond\n\
                the checkpoint. A failure mid-stream ends the response early, \
                which the verifier reports (the\n\
                size does not match the checkpoint).",
            ),
        )
}

/// The handler of the log key's route (see [`routes`]).
pub async fn log_key(State(state): State<AppState>) -> axum::Json<LogKey> {
    let public = state.audit().key().public();
    axum::Json(LogKey {
        algorithm: "ed25519",
        key_id: public.key_id().to_string(),
        public_key: public.to_config_string(),
        checkpoint_format: bulkhead_audit::checkpoint::CHECKPOINT_HEADER,
    })
}

/// The audit log's public key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogKey {
    /// `ed25519`.
    algorithm: &'static str,
    /// Names the key in checkpoints.
    key_id: String,
    /// `base64:…`.
    public_key: String,
    /// The first line of the signed checkpoint text.
    checkpoint_format: &'static str,
}

/// Filters of `GET /v1/audit/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventFilters {
    /// RFC 3339; events at or after.
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    /// RFC 3339; events before.
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    /// Only this actor's events.
    #[serde(default)]
    actor_id: Option<String>,
    /// Only this action (`session.create`, …).
    #[serde(default)]
    action: Option<String>,
    /// `success`, `failure` or `blocked`.
    #[serde(default)]
    outcome: Option<String>,
    /// Only events about this resource.
    #[serde(default)]
    resource_id: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    data: Vec<ListedEvent>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

fn check_label(name: &str, value: &Option<String>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) => {
            Err(ApiError::Invalid(
                format!("{name} has 1 to 200 characters, no control characters").into(),
            ))
        }
        _ => Ok(()),
    }
}

async fn list_events(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery<EventFilters>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let page: PageRequest<AuditEventId> = query.page_of_ids()?;
    let query = query.filter;
    if let Some(outcome) = &query.outcome {
        if !matches!(
            outcome.as_str(),
            "success" | "failure" | "blocked" | "started"
        ) {
            return Err(ApiError::Invalid(
                "outcome is success, failure, blocked or started".into(),
            ));
        }
    }
    check_label("actor_id", &query.actor_id)?;
    check_label("action", &query.action)?;
    check_label("resource_id", &query.resource_id)?;
    if let (Some(since), Some(until)) = (query.since, query.until) {
        if since > until {
            return Err(ApiError::Invalid("since is after until".into()));
        }
    }
    let rows = async |tx: &mut TenantTx, after, limit| {
        let filter = EventFilter {
            since: query.since,
            until: query.until,
            actor_id: query.actor_id,
            action: query.action,
            outcome: query.outcome,
            resource_id: query.resource_id,
            after,
            limit,
        };
        Ok(audit_pages::list_events(tx, &filter).await?)
    };
    let (data, next_cursor) = page
        .read(&state, &tenant.0, rows, |e| e.event.event_id.clone())
        .await?;
    Ok(axum::Json(EventPage { data, next_cursor }))
}

async fn checkpoint_now(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<impl IntoResponse, ApiError> {
    // No tail: sequencing and signing record no event of their own.
    let (signed, created) = tx::write(&state, &tenant.0, async |tx| {
        audit_log::sequence(tx, Sweep::Recent).await?;
        Ok((current_checkpoint(&state, tx).await?, Tail::new()))
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(signed)))
}

/// The checkpoint of the tree as it is: the latest one if it already covers the whole tree
/// (and is signed by the current key), else a new one (`true`).
async fn current_checkpoint(
    state: &AppState,
    tx: &mut TenantTx,
) -> Result<(bulkhead_audit::SignedCheckpoint, bool), ApiError> {
    let size = audit_log::tree_size(tx).await?;
    match audit_log::latest_checkpoint(tx).await? {
        Some(latest)
            if latest.checkpoint.tree_size == size
                && latest.key_id == state.audit().key().public().key_id() =>
        {
            Ok((latest, false))
        }
        _ => Ok((
            audit_log::sign_checkpoint(tx, state.audit().key(), state.clock().now()).await?,
            true,
        )),
    }
}

async fn latest_checkpoint(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<Response, ApiError> {
    let latest = tx::read(&state, &tenant.0, async |tx| {
        Ok(audit_log::latest_checkpoint(tx).await?)
    })
    .await?;
    latest
        .map(|c| axum::Json(c).into_response())
        .ok_or(ApiError::NotFound)
}

/// Query of `GET /v1/audit/proofs/inclusion`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The event.
    #[param(value_type = AuditEventId)]
    event_id: String,
    /// The size of the tree the proof is for.
    tree_size: u64,
}

fn refusal(refused: ProofRefusal) -> ApiError {
    match refused {
        ProofRefusal::NoSuchEvent => ApiError::NotFound,
        ProofRefusal::NotSequenced => ApiError::Conflict(
            "the event is not in the log yet: it is sequenced within seconds".into(),
        ),
        ProofRefusal::BadSize(why) => ApiError::Invalid(why.into()),
    }
}

async fn inclusion(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(query): Query<InclusionQuery>,
) -> Result<Response, ApiError> {
    let event: AuditEventId = validate::id(&query.event_id)?;
    let proof = tx::read(&state, &tenant.0, async |tx| {
        Ok(audit_log::inclusion_proof(tx, event, query.tree_size).await?)
    })
    .await?;
    Ok(axum::Json(proof.map_err(refusal)?).into_response())
}

/// Query of `GET /v1/audit/proofs/consistency`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older tree size.
    from: u64,
    /// The newer tree size.
    to: u64,
}

async fn consistency(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(query): Query<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    let proof = tx::read(&state, &tenant.0, async |tx| {
        Ok(audit_log::consistency_proof(tx, query.from, query.to).await?)
    })
    .await?;
    Ok(axum::Json(proof.map_err(refusal)?).into_response())
}

/// How long one export may stream before it is ended (see [`audit_pages::EXPORT_IDLE_TIMEOUT`] for
/// the bound on the pause between two pages).
const EXPORT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

async fn export(State(state): State<AppState>, tenant: Tenant) -> Result<Response, ApiError> {
    let ctx = &tenant.0;
    let snapshot = audit_pages::ExportSnapshot::open(
        state.store(),
        ctx,
        state.audit().key(),
        state.clock().now(),
    )
    .await?;
    let checkpoint = snapshot.checkpoint().clone();
    let size = checkpoint.checkpoint.tree_size;
    let mut head = serde_json::to_vec(&ExportLine::Checkpoint { checkpoint })
        .map_err(|e| ApiError::Internal(e.into()))?;
    head.push(b'\n');
    let deadline = tokio::time::Instant::now() + EXPORT_DEADLINE;
    let pages = futures::stream::unfold(Some((snapshot, 0u64)), move |state| async move {
        let (mut snapshot, from) = state?;
        if from >= size {
            if let Err(err) = snapshot.finish().await {
                tracing::warn!(error = %err, "audit export snapshot did not end cleanly");
            }
            return None;
        }
        if tokio::time::Instant::now() >= deadline {
            // A reader this slow would hold a pooled connection and the snapshot's xmin horizon
            // (which stops VACUUM for every tenant of the database): end it; the verifier reports
            // the short export.
            tracing::warn!("audit export ran past its deadline; ended early");
            let _ = snapshot.finish().await;
            return Some((Err(std::io::Error::other("export deadline passed")), None));
        }
        let to = (from + EXPORT_PAGE).min(size);
        match export_lines(&mut snapshot, from, to).await {
            Ok(bytes) => Some((Ok(Bytes::from(bytes)), Some((snapshot, to)))),
            Err(err) => {
                tracing::error!(error = %err, "audit export failed mid-stream");
                Some((Err(std::io::Error::other("export failed")), None))
            }
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(pages);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}
