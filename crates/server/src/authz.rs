//! One authorization declaration per route, and the only way to add a route.
//!
//! Every route is added through [`RouteTable`] with a [`RouteAccess`]: the table builds the axum
//! routers, puts every route that needs a credential behind tenant resolution, and wraps its
//! handler in the check of its declared permission. A route cannot be mounted without a
//! declaration, because there is no other way to mount one; [`RouteTable::specs`] lists them all
//! for the tests that walk the table (deny by default, the role × route matrix, the OpenAPI
//! document).
//!
//! The check reads the credential's *effective* permissions from the [`TenantContext`] that
//! resolution made (role permissions ∩ credential scopes ∩ delegated scopes). Handlers may check
//! more (own sessions only, may-not-grant-more-than-held), never less.

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use bulkhead_core::{Scope, TenantContext};

use crate::error::ApiError;
use crate::extract::audit_forbidden;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAccess {
    /// Anyone, without a credential: health, discovery documents.
    Public,
    /// The client authenticates itself inside the request (OAuth endpoints, login); served
    /// behind the per-address limit, without tenant resolution in front.
    SelfAuthenticating,
    /// Any authenticated credential of the tenant; the handler decides from the credential's
    /// own identity (e.g. its own sessions).
    Authenticated,
    /// The credential's effective permissions must include this one (else 403, audited).
    Requires(Scope),
}

/// One declared route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: Method,
    /// Path in axum syntax (`/v1/sessions/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: RouteAccess,
}

/// Routes with their declarations. See the module doc.
#[derive(Default)]
pub struct RouteTable {
    routes: Vec<(RouteSpec, MethodRouter<AppState>)>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.specs()).finish()
    }
}

/// The routers a table builds, by how requests reach them.
pub(crate) struct Routers {
    /// No credential.
    pub public: Router<AppState>,
    /// The client authenticates itself.
    pub self_authenticating: Router<AppState>,
    /// Behind tenant resolution.
    pub tenant: Router<AppState>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `method path` with its declaration.
    ///
    /// # Panics
    /// On a method axum cannot route (a programming error, caught by every test run).
    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: RouteAccess,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("routable method");
        let endpoint = match access {
            RouteAccess::Requires(scope) => {
                on(filter, handler).layer(middleware::from_fn_with_state(scope, require_scope))
            }
            RouteAccess::Authenticated => {
                on(filter, handler).layer(middleware::from_fn(require_tenant))
            }
            RouteAccess::Public | RouteAccess::SelfAuthenticating => on(filter, handler),
        };
        self.routes.push((
            RouteSpec {
                method,
                path,
                access,
            },
            endpoint,
        ));
        self
    }

    /// `GET path`.
    pub fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: RouteAccess,
        handler: H,
    ) -> Self {
        self.route(Method::GET, path, access, handler)
    }

    /// `POST path`.
    pub fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: RouteAccess,
        handler: H,
    ) -> Self {
        self.route(Method::POST, path, access, handler)
    }

    /// `PUT path`.
    pub fn put<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: RouteAccess,
        handler: H,
    ) -> Self {
        self.route(Method::PUT, path, access, handler)
    }

    /// `PATCH path`.
    pub fn patch<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: RouteAccess,
        handler: H,
    ) -> Self {
        self.route(Method::PATCH, path, access, handler)
    }

    /// `DELETE path`.
    pub fn delete<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: RouteAccess,
        handler: H,
    ) -> Self {
        self.route(Method::DELETE, path, access, handler)
    }

    /// Both tables' routes.
    pub fn merge(mut self, other: RouteTable) -> Self {
        self.routes.extend(other.routes);
        self
    }

    /// Every declared route, in declaration order.
    pub fn specs(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.iter().map(|(spec, _)| spec)
    }

    /// The routers, grouped by how requests reach them.
    ///
    /// # Panics
    /// If a path is declared twice for one method, or a credential-needing route lies outside
    /// `/v1` (where tenant resolution runs); both are programming errors every test run catches.
    pub(crate) fn into_routers(self) -> Routers {
        let mut seen = std::collections::BTreeSet::new();
        let mut routers = Routers {
            public: Router::new(),
            self_authenticating: Router::new(),
            tenant: Router::new(),
        };
        for (spec, endpoint) in self.routes {
            assert!(
                seen.insert((spec.method.to_string(), spec.path)),
                "route declared twice: {} {}",
                spec.method,
                spec.path
            );
            let group = match spec.access {
                RouteAccess::Public => &mut routers.public,
                RouteAccess::SelfAuthenticating => &mut routers.self_authenticating,
                RouteAccess::Authenticated | RouteAccess::Requires(_) => {
                    assert!(
                        spec.path.starts_with("/v1/"),
                        "credential-needing route outside /v1: {}",
                        spec.path
                    );
                    &mut routers.tenant
                }
            };
            *group = std::mem::take(group).route(spec.path, endpoint);
        }
        routers
    }
}

/// Refuses credentials that are confined (to a resource prefix) or delegated, for operations
/// that would outlive or escape those bounds: an API key or a role assignment carries neither
/// the prefix, nor the token's expiry, nor its lineage. `scope` names the permission in the
/// audit event.
pub(crate) fn refuse_confined(ctx: &TenantContext, scope: Scope) -> Result<(), ApiError> {
    let actor = ctx.actor();
    if actor.resource_prefix().is_none() && actor.delegation().is_none() {
        return Ok(());
    }
    audit_forbidden(ctx, scope, "confined-credential");
    Err(ApiError::ConfinedCredential)
}

/// The escalation check ([`bulkhead_auth::rbac::may_grant`]) for a request: refuses (403,
/// audited, naming a missing permission) unless the caller's effective permissions hold all of
/// `wanted`. Confined and delegated credentials grant nothing.
pub(crate) fn check_may_grant(
    ctx: &TenantContext,
    wanted: &bulkhead_core::ScopeSet,
    check: &'static str,
) -> Result<(), ApiError> {
    let first = wanted.iter().next().unwrap_or(Scope::RolesManage);
    refuse_confined(ctx, first)?;
    let held = ctx
        .actor()
        .scopes()
        .cloned()
        .unwrap_or_else(bulkhead_core::ScopeSet::all);
    if bulkhead_auth::rbac::may_grant(&held, wanted) {
        return Ok(());
    }
    if let Some(missing) = wanted.iter().find(|s| !held.contains(*s)) {
        audit_forbidden(ctx, missing, check);
        return Err(ApiError::MissingScope(missing));
    }
    // Only tool-call grants are missing.
    let tool = if wanted.calls_all_tools() {
        "*".to_owned()
    } else {
        wanted
            .callable_tools()
            .find(|t| !held.may_call_tool(t))
            .map_or_else(|| "*".to_owned(), |t| t.as_str().to_owned())
    };
    audit_forbidden(ctx, Scope::ToolsList, check);
    Err(ApiError::MissingToolScope(tool))
}

async fn require_scope(State(scope): State<Scope>, request: Request, next: Next) -> Response {
    match request.extensions().get::<TenantContext>() {
        Some(ctx) if ctx.has_scope(scope) => next.run(request).await,
        Some(ctx) => {
            audit_forbidden(ctx, scope, "route");
            ApiError::MissingScope(scope).into_response()
        }
        // Mounted without resolution in front: fail closed.
        None => ApiError::Unauthorized.into_response(),
    }
}

async fn require_tenant(request: Request, next: Next) -> Response {
    if request.extensions().get::<TenantContext>().is_some() {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}
