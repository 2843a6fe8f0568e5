//! The operator API: the control plane's own listener (`--operator-listen`), router and
//! authentication, never mounted on the tenant listener.
//!
//! - **Its own door.** The router is built here from [`route_table`] alone and served by
//!   [`serve`] on a Unix socket (mode 0600 in the data directory) and, optionally, a loopback
//!   TCP port, through the same bounded accept loop as the API ([`crate::http::listener`]). The
//!   tenant router has no `/operator` route, and this router has no `/v1` route: a request
//!   reaching the wrong door is a 404 there and a 401 here.
//! - **Its own credential.** Every route needs an operator key (`bk_op_…`,
//!   [`crate::service::operators::verify`]); a tenant API key or access token is not one and is
//!   refused with the same 401 as no key. Verification is not cached: a revocation holds on the
//!   next request.
//! - **Declared scopes.** Each route declares its operator scope in [`route_table`]; the table
//!   wraps the handler in the check (403 naming the scope), so a route cannot be mounted
//!   without one.
//! - **Audited.** Every refused credential and refused scope, and every action, is an event of
//!   the operator log (`bulkhead.operator_audit_events`), written before the answer is sent.
//! - **Owner powers, confined here.** Creating tenants needs the owner role (the serving role
//!   cannot write the registry), so the operator state holds a small owner-role pool. The
//!   tenant [`AppState`] never holds it.

mod audit;
mod deletion;
mod export;
mod import;
mod keys;
mod listeners;
mod moves;
pub mod openapi;
mod pace;
mod quotas;
pub mod socket;
mod tenants;

pub use listeners::{serve, start, OperatorListeners};

use std::future::Future;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use bulkhead_core::OperatorScope;
use bulkhead_store::operators::NewOperatorEvent;
use bulkhead_store::Store;
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::http::apidoc::OpDoc;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::service::operators::{self, OperatorContext, OperatorRefusal};

/// What the operator routes reach: the application (peppers, master key, settings, clock) and
/// the owner-role store the control plane writes through.
#[derive(Clone, Debug)]
pub struct OperatorState {
    app: AppState,
    owner: Store,
    moves: std::sync::Arc<crate::service::moves::MoveRuns>,
    /// One import at a time in this process: each holds an owner connection (and a
    /// transaction) for its whole length, of the few the operator plane has.
    imports: std::sync::Arc<tokio::sync::Semaphore>,
    /// The imports and exports running in their own tasks, which a stopping server waits for
    /// (`OperatorListeners::finish`) before it closes the pools they write through.
    transfers: tokio_util::task::TaskTracker,
}

impl OperatorState {
    /// The operator plane over `app`, writing through `owner` (a store on the owner role).
    pub fn new(app: AppState, owner: Store) -> Self {
        Self {
            app,
            owner,
            moves: std::sync::Arc::default(),
            imports: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            transfers: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Runs an import or export in a task of its own that a stopping server waits for.
    pub(crate) fn spawn_transfer<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.transfers.spawn(work)
    }

    /// The permit an import runs under, if no other import runs in this process.
    pub(crate) fn import_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.imports.clone().try_acquire_owned().ok()
    }

    /// The tenant moves this process runs.
    pub(crate) fn moves(&self) -> &std::sync::Arc<crate::service::moves::MoveRuns> {
        &self.moves
    }

    /// The application state.
    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// The owner-role store.
    pub fn owner(&self) -> &Store {
        &self.owner
    }
}

/// One declared operator route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRouteSpec {
    /// HTTP method.
    pub method: Method,
    /// Path in axum syntax, always under `/operator/v1/`.
    pub path: &'static str,
    /// The operator scope it requires.
    pub scope: OperatorScope,
    /// The handler's name (its OpenAPI `operationId`).
    pub handler: &'static str,
}

/// The operator routes with their scopes; the only way to mount one.
#[derive(Default)]
pub struct OperatorRoutes {
    routes: Vec<DeclaredRoute>,
}

/// One route as declared: what it is, its handler, its document entry, how its body is bounded.
struct DeclaredRoute {
    spec: OperatorRouteSpec,
    endpoint: MethodRouter<OperatorState>,
    doc: Option<OpDoc>,
    body: BodyHandling,
}

/// How a route's request body is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyHandling {
    /// The API's body cap and request timeout, like every tenant route.
    Bounded,
    /// A stream larger and longer than those allow (an archive upload): the handler bounds it
    /// (`import::paced`).
    Streamed,
}

impl std::fmt::Debug for OperatorRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.specs()).finish()
    }
}

impl OperatorRoutes {
    /// Adds `method path`, requiring `scope`.
    ///
    /// # Panics
    /// On a method axum cannot route, or a path outside `/operator/v1/` (programming errors
    /// every test run catches).
    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        scope: OperatorScope,
        handler: H,
    ) -> Self
    where
        H: axum::handler::Handler<T, OperatorState>,
        T: 'static,
    {
        assert!(path.starts_with("/operator/v1/"), "operator route {path}");
        let filter = MethodFilter::try_from(method.clone()).expect("routable method");
        let name = std::any::type_name::<H>();
        self.routes.push(DeclaredRoute {
            spec: OperatorRouteSpec {
                method,
                path,
                scope,
                handler: name.rsplit("::").next().unwrap_or(name),
            },
            endpoint: on(filter, handler),
            doc: None,
            body: BodyHandling::Bounded,
        });
        self
    }

    /// The route just added takes a streamed body, outside the body cap and request timeout:
    /// its handler must bound the stream itself.
    ///
    /// # Panics
    /// Before any route (a programming error).
    fn streamed(mut self) -> Self {
        let route = self.routes.last_mut().expect("streamed() follows a route");
        route.body = BodyHandling::Streamed;
        self
    }

    /// What the operator API's OpenAPI document says of the route just added
    /// ([`openapi::openapi`]).
    ///
    /// # Panics
    /// Before any route, or on a route documented twice (programming errors).
    pub fn doc(mut self, doc: OpDoc) -> Self {
        let DeclaredRoute {
            spec, doc: slot, ..
        } = self.routes.last_mut().expect("doc() follows a route");
        assert!(
            slot.is_none(),
            "documented twice: {} {}",
            spec.method,
            spec.path
        );
        let tag = if spec.path.starts_with("/operator/v1/tenant") {
            "tenants"
        } else if spec.path.starts_with("/operator/v1/operator-keys") {
            "operator-keys"
        } else {
            "operator-audit"
        };
        *slot = Some(OpDoc {
            operation_id: spec.handler,
            tag: Some(tag),
            ..doc
        });
        self
    }

    /// Every declared route.
    pub fn specs(&self) -> impl Iterator<Item = &OperatorRouteSpec> {
        self.routes.iter().map(|route| &route.spec)
    }

    /// Every declared route with its document entry.
    pub fn docs(&self) -> impl Iterator<Item = (&OperatorRouteSpec, Option<&OpDoc>)> {
        self.routes
            .iter()
            .map(|route| (&route.spec, route.doc.as_ref()))
    }

    /// The routers of the bounded and of the streamed routes.
    fn into_routers(self) -> (Router<OperatorState>, Router<OperatorState>) {
        let (mut bounded, mut streamed) = (Router::new(), Router::new());
        let mut seen = std::collections::BTreeSet::new();
        for DeclaredRoute {
            spec,
            endpoint,
            body,
            ..
        } in self.routes
        {
            assert!(
                seen.insert((spec.method.to_string(), spec.path)),
                "operator route declared twice: {} {}",
                spec.method,
                spec.path
            );
            let endpoint = endpoint.layer(middleware::from_fn_with_state(spec.scope, require));
            match body {
                BodyHandling::Bounded => bounded = bounded.route(spec.path, endpoint),
                BodyHandling::Streamed => streamed = streamed.route(spec.path, endpoint),
            }
        }
        (bounded, streamed)
    }
}

/// Every operator route, the scope it requires and what the document says of it.
pub fn route_table() -> OperatorRoutes {
    use openapi::*;
    use OperatorScope::*;
    let tenant = tenant_param();
    let key = key_param();
    OperatorRoutes::default()
        .route(
            Method::POST,
            "/operator/v1/tenants",
            TenantsWrite,
            tenants::create,
        )
        .doc(
            OpDoc::ok::<CreatedTenantDoc>(201, "The tenant, and its admin key shown this once")
                .body::<CreateTenantDoc>()
                .summary("Onboard a tenant (tier `shared` or `schema`).")
                .conflict("The slug is taken"),
        )
        .route(
            Method::GET,
            "/operator/v1/tenants",
            TenantsRead,
            tenants::list,
        )
        .doc(
            OpDoc::ok::<TenantPageDoc>(200, "A page of tenants")
                .query::<TenantFiltersDoc>()
                .summary("Tenants in creation order, filtered, with cursor paging.")
                .invalid("A filter or limit out of range"),
        )
        .route(
            Method::GET,
            "/operator/v1/tenants/{tenant}",
            TenantsRead,
            tenants::get,
        )
        .doc(
            OpDoc::ok::<TenantDoc>(200, "The tenant")
                .under(&tenant)
                .summary("One tenant, by slug or id."),
        )
        .route(
            Method::PATCH,
            "/operator/v1/tenants/{tenant}",
            TenantsWrite,
            tenants::update,
        )
        .doc(
            OpDoc::ok::<TenantDoc>(200, "The tenant as changed")
                .under(&tenant)
                .body::<UpdateTenantDoc>()
                .summary("Change a tenant's plan, status and own rate limit (any of them).")
                .conflict(
                    "The tenant is being moved, or its deletion forbids the change (a purge has \
                     begun; a scheduled deletion forbids activation)",
                ),
        )
        .route(
            Method::POST,
            "/operator/v1/tenants/{tenant}/suspend",
            TenantsWrite,
            tenants::suspend,
        )
        .doc(
            OpDoc::ok::<TenantDoc>(200, "The tenant, suspended")
                .under(&tenant)
                .summary("Suspend a tenant: every credential is refused.")
                .conflict("The tenant is being moved"),
        )
        .route(
            Method::POST,
            "/operator/v1/tenants/{tenant}/activate",
            TenantsWrite,
            tenants::activate,
        )
        .doc(
            OpDoc::ok::<TenantDoc>(200, "The tenant, active")
                .under(&tenant)
                .summary("Activate a suspended tenant.")
                .conflict("The tenant is being moved"),
        )
        .route(
            Method::POST,
            "/operator/v1/tenants/{tenant}/deletion",
            TenantsDelete,
            deletion::schedule,
        )
        .doc(
            OpDoc::ok::<deletion::TenantDeletionDoc>(201, "The deletion, scheduled now")
                .also::<deletion::TenantDeletionDoc>(
                    200,
                    "The deletion already scheduled (unchanged)",
                )
                .under(&tenant)
                .optional_body::<deletion::ScheduleDeletion>()
                .summary(
                    "Schedule a tenant's deletion: it is suspended at once; the purge runs when \
                     the grace period ends.",
                )
                .conflict("The tenant is being moved (the move is named)")
                .invalid("grace_period out of range"),
        )
        .route(
            Method::GET,
            "/operator/v1/tenants/{tenant}/deletion",
            TenantsRead,
            deletion::get,
        )
        .doc(
            OpDoc::ok::<deletion::TenantDeletionDoc>(200, "The deletion record")
                .under(&tenant)
                .summary("A tenant's deletion (also after the purge, by `tnt_…` id: the tombstone)."),
        )
        .route(
            Method::DELETE,
            "/operator/v1/tenants/{tenant}/deletion",
            TenantsDelete,
            deletion::cancel,
        )
        .doc(
            OpDoc::ok::<deletion::TenantDeletionDoc>(200, "The cancelled deletion")
                .under(&tenant)
                .summary("Cancel a scheduled deletion: the tenant's previous status is restored.")
                .conflict("The purge has begun"),
        )
        .route(
            Method::POST,
            "/operator/v1/tenants/{tenant}/deletion/purge",
            TenantsDelete,
            deletion::purge,
        )
        .doc(
            OpDoc::ok::<deletion::PurgedDoc>(200, "The tenant is purged; the receipt is in the operator log")
                .under(&tenant)
                .summary("Purge a tenant whose deletion is scheduled now, without waiting for the grace period (or resume a purge).")
                .conflict("No deletion is scheduled, a move is in progress, or a purge runs elsewhere")
                .answer(503, "A location of the tenant is unreachable: the purge is retried; the tenant stays suspended"),
        )
        .route(
            Method::POST,
            "/operator/v1/tenants/{tenant}/move",
            TenantsWrite,
            moves::start,
        )
        .doc(
            OpDoc::ok::<moves::MoveStateDoc>(202, "The move has begun (or resumed); follow it with GET")
                .under(&tenant)
                .body::<moves::StartMove>()
                .summary("Move a tenant to another tier (shared or schema) or region, in the background: copy, a brief freeze of writes, verify, switch, remove the old copy.")
                .conflict("Another move is recorded or running, the tenant is being deleted, or it is there already")
                .invalid("tier is not shared or schema"),
        )
        .route(
            Method::GET,
            "/operator/v1/tenants/{tenant}/move",
            TenantsRead,
            moves::get,
        )
        .doc(
            OpDoc::ok::<moves::MoveStateDoc>(200, "The tenant's move: this process's latest run and the recorded move")
                .under(&tenant)
                .summary("Follow a tenant's move (404 if none is recorded and none ran here)."),
        )
        .route(
            Method::DELETE,
            "/operator/v1/tenants/{tenant}/move",
            TenantsWrite,
            moves::abandon,
        )
        .doc(
            OpDoc::ok::<moves::MoveStateDoc>(200, "The move is abandoned: the tenant is where it was, writable")
                .under(&tenant)
                .summary("Abandon a tenant's move before its switch: the freeze is lifted, the partial copy removed.")
                .conflict("A run of the move is in progress, or the move has switched (run it again to finish)"),
        )
        .route(
            Method::GET,
            "/operator/v1/tenants/{tenant}/quotas",
            TenantsRead,
            quotas::show,
        )
        .doc(
            OpDoc::ok::<quotas::TenantQuotasDoc>(200, "The tenant's plan, and each kind's usage and limit")
                .under(&tenant)
                .summary("A tenant's quotas: usage and limit of every kind (as `bulkhead tenant quota show`).")
                .conflict("The tenant's purge has begun"),
        )
        .route(
            Method::PUT,
            "/operator/v1/tenants/{tenant}/quotas/{kind}",
            TenantsWrite,
            quotas::set,
        )
        .doc(
            OpDoc::ok::<quotas::QuotaDoc>(200, "The kind, with the tenant's limit in force")
                .under(&quotas::kind_param())
                .under(&tenant)
                .body::<quotas::SetQuota>()
                .summary("Give a tenant its own limit of one kind, or (null) back to its plan's; audited in the tenant's log and the operator log.")
                .invalid("kind is not one an operator may limit, or limit is not a whole number of 0 or more or null")
                .conflict("The tenant is being moved, or its purge has begun"),
        )
        .route(
            Method::GET,
            "/operator/v1/tenants/{tenant}/export",
            TenantsWrite,
            export::export,
        )
        .doc(
            tar_archive(
                "The archive (ustar): tenant.json, the rows as NDJSON per table, audit.ndjson, \
                 manifest.json. A transfer that breaks off is a failed export",
            )
            .under(&tenant)
            .summary("Export everything the tenant owns (needs tenants:write: it is the tenant's data, not its record)."),
        )
        .route(
            Method::POST,
            "/operator/v1/tenant-imports",
            TenantsWrite,
            import::import,
        )
        .streamed()
        .doc(
            tar_upload(
                OpDoc::ok::<ImportedTenantDoc>(201, "The tenant as imported, and its rows per table")
                    .query::<ImportQueryDoc>()
                    .summary(
                        "Import a tenant's archive (`GET …/export`'s), streamed as the body: all \
                         or nothing. The body may pause at most the request timeout (30 s by default; then 408).",
                    )
                    .conflict("A tenant with the archive's id or slug exists here, or another import runs in this server")
                    .invalid("The archive does not check out, or a tier or region is refused")
                    .answer(408, "The upload stalled"),
            ),
        )
        .route(
            Method::GET,
            "/operator/v1/operator-keys",
            OperatorsManage,
            keys::list,
        )
        .doc(
            OpDoc::ok::<OperatorKeyListDoc>(200, "Every operator key")
                .summary("Operator keys' records (never a key or its hash)."),
        )
        .route(
            Method::POST,
            "/operator/v1/operator-keys",
            OperatorsManage,
            keys::create,
        )
        .doc(
            OpDoc::ok::<CreatedOperatorKeyDoc>(201, "The key, shown this once")
                .body::<CreateOperatorKeyDoc>()
                .summary("Make an operator key."),
        )
        .route(
            Method::POST,
            "/operator/v1/operator-keys/{id}/revoke",
            OperatorsManage,
            keys::revoke,
        )
        .doc(
            OpDoc::ok::<OperatorKeyDoc>(200, "The key, revoked")
                .under(&key)
                .summary("Revoke an operator key at once."),
        )
        .route(
            Method::GET,
            "/operator/v1/audit-events",
            OperatorsManage,
            keys::events,
        )
        .doc(
            OpDoc::ok::<OperatorEventListDoc>(200, "The latest events")
                .query::<EventsQueryDoc>()
                .summary("The operator log's latest events, newest first.")
                .invalid("A limit out of range"),
        )
        .route(
            Method::GET,
            "/operator/v1/audit/checkpoints/latest",
            OperatorsManage,
            audit::latest_checkpoint,
        )
        .doc(
            OpDoc::ok::<bulkhead_audit::SignedCheckpoint>(200, "The checkpoint")
                .summary("The operator log's latest signed checkpoint.")
                .answer(404, "No checkpoint yet"),
        )
        .route(
            Method::POST,
            "/operator/v1/audit/checkpoints",
            OperatorsManage,
            audit::checkpoint_now,
        )
        .doc(
            OpDoc::ok::<bulkhead_audit::SignedCheckpoint>(201, "A new checkpoint: the log grew")
                .also::<bulkhead_audit::SignedCheckpoint>(
                    200,
                    "The latest checkpoint: the log has not grown since",
                )
                .summary("Sign a checkpoint of the whole operator log now."),
        )
        .route(
            Method::GET,
            "/operator/v1/audit/export",
            OperatorsManage,
            audit::export,
        )
        .doc(ndjson("The export: one JSON object per line").summary(
            "A checkpoint of the whole operator log, then every leaf, as NDJSON \
                     (verify with `bulkhead audit verify`).",
        ))
}

/// The operator application: every route behind operator authentication, the same request id,
/// span, metrics, timeout, panic guard and body limit as the tenant API — but for the streamed
/// routes ([`OperatorRoutes::streamed`]), which bound their bodies themselves.
pub fn router(state: OperatorState) -> Router {
    let timeout = state.app.config().connections.request_timeout;
    let authenticated = || middleware::from_fn_with_state(state.clone(), authenticate);
    let (bounded, streamed) = route_table().into_routers();
    let bounded = bounded
        .route_layer(authenticated())
        // Added after the authentication layer, so outside it: the document holds no data.
        .route(openapi::PATH, axum::routing::get(openapi::serve))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(move |request, next| {
                    crate::http::listener::within(timeout, request, next)
                }))
                .layer(DefaultBodyLimit::max(crate::http::app::MAX_BODY_BYTES)),
        );
    let streamed = streamed
        .route_layer(authenticated())
        .layer(DefaultBodyLimit::disable());
    bounded
        .merge(streamed)
        // Again over the merged router: the streamed routes' methods too (a wrong one is 405
        // before authentication, as everywhere).
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(crate::http::telemetry::request_span))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
                })),
        )
        .with_state(state)
}

/// Authenticates the operator key of every operator request; a refusal is recorded in the
/// operator log before the 401 leaves.
async fn authenticate(
    State(state): State<OperatorState>,
    mut request: Request,
    next: Next,
) -> Response {
    // The tenant API's one parser: exactly one well-formed `Authorization: Bearer` header.
    let presented = crate::http::resolve::bearer_token(request.headers()).map(str::to_owned);
    let now = state.app.clock().now();
    let verified = match presented {
        // No header at all, on the Unix socket, from the server's own account: the owner (the
        // socket is 0600 and that account reads the data directory's keys anyway).
        None if !request.headers().contains_key(http::header::AUTHORIZATION)
            && request
                .extensions()
                .get::<crate::http::listener::PeerAccount>()
                .is_some_and(|peer| peer.uid == rustix::process::geteuid().as_raw()) =>
        {
            Ok(Ok(OperatorContext::cli(local_account_actor())))
        }
        None => Ok(Err((OperatorRefusal::NoCredential, None))),
        Some(text) => {
            operators::verify(&state.owner, state.app.verifier().peppers(), &text, now).await
        }
    };
    let (reason, key_id) = match verified {
        Ok(Ok(ctx)) => {
            request.extensions_mut().insert(ctx);
            request
                .extensions_mut()
                .insert(OwnerForAudit(state.owner.clone()));
            return next.run(request).await;
        }
        Ok(Err(refused)) => refused,
        // The lookup did not answer: deny, retryably.
        Err(err) => {
            tracing::error!(error = %err, "operator key lookup failed");
            return ApiError::Unavailable.into_response();
        }
    };
    let event = NewOperatorEvent {
        reason: Some(reason.as_str().to_owned()),
        ..operators::event(
            &key_id.map_or_else(|| "anonymous".to_owned(), |k| k.to_string()),
            "operator.auth",
            "failure",
            None,
            json!({ "method": request.method().as_str(), "path": request.uri().path() }),
        )
    };
    // Fail closed either way: the refusal stands whether or not its event was written.
    let _ = operators::record(&state.owner, event).await;
    ApiError::OperatorUnauthorized.into_response()
}

/// The audit actor of a socket peer authenticated by its account: `cli:<user name>`, as the
/// command line run directly on the database names itself.
fn local_account_actor() -> String {
    let uid = rustix::process::geteuid();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid.as_raw()))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid{}", uid.as_raw()), |user| user.name);
    format!("cli:{}", name.chars().take(64).collect::<String>())
}

/// The route's declared scope: 403 naming it, recorded in the operator log, when missing.
async fn require(State(scope): State<OperatorScope>, request: Request, next: Next) -> Response {
    let Some(ctx) = request.extensions().get::<OperatorContext>().cloned() else {
        // Authentication runs first; a route without it is a wiring error. Fail closed.
        return ApiError::OperatorUnauthorized.into_response();
    };
    if ctx.scopes.contains(scope) {
        return next.run(request).await;
    }
    let event = NewOperatorEvent {
        reason: Some(format!("missing scope {scope}")),
        ..operators::event(
            &ctx.actor,
            "operator.forbidden",
            "blocked",
            None,
            json!({ "method": request.method().as_str(), "path": request.uri().path(), "scope": scope.as_str() }),
        )
    };
    forbidden(request, event, scope).await
}

async fn forbidden(request: Request, event: NewOperatorEvent, scope: OperatorScope) -> Response {
    match request.extensions().get::<OwnerForAudit>() {
        Some(OwnerForAudit(owner)) => {
            let _ = operators::record(owner, event).await;
        }
        None => tracing::error!("operator scope refusal not recorded: no store"),
    }
    ApiError::MissingOperatorScope(scope).into_response()
}

/// The owner store, put into each authenticated request for the scope check's audit event (the
/// check's own state is its scope).
#[derive(Clone)]
struct OwnerForAudit(Store);
