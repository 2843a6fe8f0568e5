//! One authorization declaration per route, and the only way to add a route.
//!
//! Every route is added through [`RouteTable`] with a [`RouteAccess`]: the table builds the axum
//! routers, puts every route that needs a credential behind tenant resolution, and wraps its
//! handler in the check of its declared permission. A route cannot be mounted without a
//! declaration, because there is no other way to mount one; [`RouteTable::specs`] lists them all
//! for the tests that walk the table (deny by default, the role × route matrix, the OpenAPI
//! document).
//!
//! Every credential-needing route also declares a [`Confinement`]: whether a credential confined
//! to a resource prefix, or a delegated one, may call it. Routes that create or change something
//! lasting refuse both (what they make would outlive the token's expiry and escape its prefix);
//! reads of things a prefix cannot bound refuse prefix-confined credentials. The table checks it
//! before the handler runs, and `route_table_declares_confinement_for_every_credential_route`
//! walks the table so that a new route cannot forget the declaration (an undeclared one refuses
//! both kinds, fail closed).
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

use crate::http::apidoc::OpDoc;
use crate::http::error::ApiError;
use crate::http::extract::audit_forbidden;
use crate::http::state::AppState;

/// OpenID Connect's userinfo: the one credential route outside `/v1` (behind tenant resolution).
pub const USERINFO_PATH: &str = "/oauth/userinfo";

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

/// Whether prefix-confined and delegated credentials may call a route. Each admitting variant
/// carries the documented rule that allows it (shown by `docs/authorization.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// Not declared. Refuses both kinds, like [`Confinement::Refused`], and the table test fails
    /// on it: a route must say what it admits.
    Undeclared,
    /// Neither prefix-confined nor delegated credentials: the route creates or changes something
    /// that outlives the credential (its expiry, its lineage) or escapes its prefix.
    Refused,
    /// Delegated credentials without a prefix, never prefix-confined ones: what the route reads
    /// (or, by the rule given, makes) is not bounded by a prefix, so no prefix can filter it.
    Delegated(&'static str),
    /// Both kinds, by the rule given: the handler keeps the work inside the prefix (filters lists,
    /// answers 404 or 403 outside it), or the route acts only on the credential itself.
    Admitted(&'static str),
}

/// The common rule of reads: delegated credentials may read what their subject could (their
/// scopes already hold at most the subject's), prefix-confined ones may not read records that no
/// prefix bounds (keys, users, roles, tools, webhooks, audit, policies).
pub const TENANT_WIDE_READ: Confinement =
    Confinement::Delegated("a read of tenant-wide records, which no resource prefix bounds");

impl Confinement {
    /// Whether `actor` may call a route so declared.
    pub fn admits(self, actor: &bulkhead_core::Actor) -> bool {
        let prefixed = actor.resource_prefix().is_some();
        let delegated = actor.delegation().is_some();
        match self {
            Confinement::Admitted(_) => true,
            Confinement::Delegated(_) => !prefixed,
            Confinement::Undeclared | Confinement::Refused => !prefixed && !delegated,
        }
    }
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
    /// Whether prefix-confined and delegated credentials may call it (credential-needing routes).
    pub confinement: Confinement,
    /// The handler's name (its OpenAPI `operationId`).
    pub handler: &'static str,
}

/// Routes with their declarations. See the module doc.
#[derive(Default)]
pub struct RouteTable {
    routes: Vec<(RouteSpec, MethodRouter<AppState>, Option<OpDoc>)>,
    /// The OpenAPI tag of the operations documented in this table.
    tag: Option<&'static str>,
    /// Path prefixes (`/v1/users/{id}`) whose operations act on one resource, with the
    /// documentation of its path parameter.
    resources: Vec<(&'static str, OpDoc)>,
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

    /// An empty table whose operations the OpenAPI document lists under `tag`.
    pub fn tagged(tag: &'static str) -> Self {
        Self {
            tag: Some(tag),
            ..Self::default()
        }
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
        let name = std::any::type_name::<H>();
        // The checks are layered in `into_routers`, once the confinement is declared.
        self.routes.push((
            RouteSpec {
                method,
                path,
                access,
                confinement: Confinement::Undeclared,
                handler: name.rsplit("::").next().unwrap_or(name),
            },
            on(filter, handler),
            None,
        ));
        self
    }

    /// Declares whether prefix-confined and delegated credentials may call the route added last.
    ///
    /// # Panics
    /// With no route added yet, or declared twice (programming errors every test run catches).
    pub fn confine(mut self, confinement: Confinement) -> Self {
        let (spec, _, _) = self.routes.last_mut().expect("confine() follows a route");
        assert_eq!(
            spec.confinement,
            Confinement::Undeclared,
            "confinement declared twice: {} {}",
            spec.method,
            spec.path
        );
        spec.confinement = confinement;
        self
    }

    /// Caps the body of the route added last at `bytes` (413 beyond), below the application's
    /// [`MAX_BODY_BYTES`](crate::http::app::MAX_BODY_BYTES).
    ///
    /// # Panics
    /// With no route added yet (a programming error every test run catches).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        let (_, router, _) = self
            .routes
            .last_mut()
            .expect("body_limit() follows a route");
        let taken = std::mem::replace(router, MethodRouter::new());
        *router = taken.layer(axum::extract::DefaultBodyLimit::max(bytes));
        self
    }

    /// Declares that the routes below `path` (`/v1/users/{id}`, that path included) act on one
    /// resource, whose path parameter (and its 404) `doc` documents for each of them.
    pub fn resource(mut self, path: &'static str, doc: OpDoc) -> Self {
        self.resources.push((path, doc));
        self
    }

    /// Documents the route added last in the OpenAPI document: its operation is named after the
    /// handler, listed under the table's tag, and takes the path parameter of the resource it
    /// acts on ([`RouteTable::resource`]).
    ///
    /// # Panics
    /// With no route added yet, or documented twice (programming errors every test run catches).
    pub fn doc(mut self, doc: OpDoc) -> Self {
        let (spec, _, slot) = self.routes.last_mut().expect("doc() follows a route");
        assert!(
            slot.is_none(),
            "documented twice: {} {}",
            spec.method,
            spec.path
        );
        let below = |prefix: &str| {
            spec.path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        let doc = match self.resources.iter().find(|(prefix, _)| below(prefix)) {
            Some((_, resource)) => doc.under(resource),
            None => doc,
        };
        *slot = Some(OpDoc {
            operation_id: spec.handler,
            tag: self.tag,
            ..doc
        });
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
        self.routes.iter().map(|(spec, _, _)| spec)
    }

    /// Every declared route with its documentation, in declaration order.
    pub fn docs(&self) -> impl Iterator<Item = (&RouteSpec, Option<&OpDoc>)> {
        self.routes
            .iter()
            .map(|(spec, _, doc)| (spec, doc.as_ref()))
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
        for (spec, endpoint, _) in self.routes {
            assert!(
                seen.insert((spec.method.to_string(), spec.path)),
                "route declared twice: {} {}",
                spec.method,
                spec.path
            );
            // Layers run outside-in: the permission (or authentication) check, then the
            // confinement check, then the handler.
            let (group, endpoint) = match spec.access {
                RouteAccess::Public => (&mut routers.public, endpoint),
                RouteAccess::SelfAuthenticating => (&mut routers.self_authenticating, endpoint),
                RouteAccess::Authenticated | RouteAccess::Requires(_) => {
                    // OpenID Connect's userinfo is a credential route at an OAuth path.
                    let userinfo = spec.path == USERINFO_PATH;
                    assert!(
                        spec.path.starts_with("/v1/") || userinfo,
                        "credential-needing route outside /v1: {}",
                        spec.path
                    );
                    let scope = match spec.access {
                        RouteAccess::Requires(scope) => Some(scope),
                        _ => None,
                    };
                    let endpoint = endpoint.layer(middleware::from_fn_with_state(
                        (spec.confinement, scope),
                        require_confinement,
                    ));
                    let endpoint = match scope {
                        Some(scope) => {
                            endpoint.layer(middleware::from_fn_with_state(scope, require_scope))
                        }
                        None => endpoint.layer(middleware::from_fn(require_tenant)),
                    };
                    (&mut routers.tenant, endpoint)
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

async fn require_confinement(
    State((confinement, scope)): State<(Confinement, Option<Scope>)>,
    request: Request,
    next: Next,
) -> Response {
    match request.extensions().get::<TenantContext>() {
        Some(ctx) if confinement.admits(ctx.actor()) => next.run(request).await,
        Some(ctx) => {
            audit_confined(ctx, scope);
            ApiError::ConfinedCredential.into_response()
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

/// The audit event of a confinement refusal (403 `confined-credential`).
fn audit_confined(ctx: &TenantContext, scope: Option<Scope>) {
    let actor = ctx.actor();
    tracing::warn!(
        target: "bulkhead::audit",
        action = "auth.forbidden",
        outcome = "blocked",
        tenant_id = %ctx.tenant_id(),
        actor_id = %actor.audit_id(),
        resource_prefix = actor.resource_prefix().map(|p| p.to_string()),
        delegated = actor.delegation().is_some(),
        "confined credential refused by the route's declaration"
    );
    let what = scope.map_or_else(|| "this route".to_owned(), |s| s.to_string());
    crate::service::audit_log::forbidden_in_scope(
        ctx,
        format!("confined credential may not use {what} (confined-credential)"),
    );
}

async fn require_tenant(request: Request, next: Next) -> Response {
    if request.extensions().get::<TenantContext>().is_some() {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new route cannot forget to say whether confined credentials may call it, and nothing
    /// admits them without a rule that says why.
    #[test]
    fn route_table_declares_confinement_for_every_credential_route() {
        let table = crate::http::app::route_table();
        let mut credential_routes = 0;
        for spec in table.specs() {
            if matches!(
                spec.access,
                RouteAccess::Public | RouteAccess::SelfAuthenticating
            ) {
                continue;
            }
            credential_routes += 1;
            let what = format!("{} {}", spec.method, spec.path);
            match spec.confinement {
                Confinement::Undeclared => panic!("{what}: confinement not declared"),
                Confinement::Refused => {}
                Confinement::Delegated(rule) | Confinement::Admitted(rule) => {
                    assert!(!rule.is_empty(), "{what}: no rule")
                }
            }
        }
        assert!(credential_routes > 40, "the table lists the whole API");
    }

    #[test]
    fn undeclared_refuses_like_refused() {
        use bulkhead_core::{AccessTokenId, Actor, Namespace, ScopeSet};
        let token = |prefix: Option<&str>, delegation: Vec<String>| Actor::Token {
            subject: "s".into(),
            human: false,
            client_id: "c".into(),
            token_id: AccessTokenId::new(),
            session_id: None,
            scopes: ScopeSet::all(),
            resource_prefix: prefix.map(|p| Namespace::parse(p).unwrap()),
            delegation,
            derived_keys: Vec::new(),
        };
        let plain = token(None, vec![]);
        let delegated = token(None, vec!["helper".into()]);
        let prefixed = token(Some("marketing"), vec!["helper".into()]);
        for rule in [Confinement::Undeclared, Confinement::Refused] {
            assert!(rule.admits(&plain));
            assert!(!rule.admits(&delegated));
            assert!(!rule.admits(&prefixed));
        }
        assert!(TENANT_WIDE_READ.admits(&delegated));
        assert!(!TENANT_WIDE_READ.admits(&prefixed));
        assert!(Confinement::Admitted("x").admits(&prefixed));
    }
}
