//! `/v1/roles` and `/v1/role-assignments`: role administration.
//!
//! Every write passes the escalation check ([`crate::http::authz::check_may_grant`]): a caller can
//! create, change, delete, assign or unassign only a role whose permissions it holds itself, so
//! holding `roles:manage` never lets anyone climb above their own authority. Confined and
//! delegated credentials cannot administer roles at all (a role outlives the token).

use axum::extract::State;
use axum::http::StatusCode;
use bulkhead_auth::rbac::BuiltInRole;
use bulkhead_core::id::{RoleAssignmentKind, RoleKind};
use bulkhead_core::{AgentId, RoleAssignmentId, RoleId, Scope, ScopeSet, TenantContext, UserId};
use bulkhead_store::audit::Outcome;
use bulkhead_store::tenant::rbac::{self, Assignment, Principal, Role};
use bulkhead_store::{Access, TenantTx};
use serde::Deserialize;
use serde_json::json;

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::Requires;
use crate::http::authz::{check_may_grant, RouteTable};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::routes::kit::by_id::{ById, ByIdJson};
use crate::http::routes::kit::page::{page, ListQuery, NoFilters};
use crate::http::routes::kit::tx;
use crate::http::routes::kit::validate::{self, optional_id};
use crate::http::routes::kit::write::{conflict_as, record_refusal, Tail};
use crate::http::state::AppState;
use utoipa::ToSchema;

/// The refusal of every write under the escalation check ([`grant_check_within`]).
const ESCALATION: &str = "Missing `roles:manage`, a permission the caller does not hold itself \
    (no escalation), or a delegated or prefix-confined credential";

/// The operation of a write under the escalation check: its body `B`, its answer `T`, and the
/// 403 of [`ESCALATION`].
fn granting<B: ToSchema, T: ToSchema>(status: u16, description: &str) -> OpDoc {
    OpDoc::ok::<T>(status, description)
        .body::<B>()
        .forbidden(ESCALATION)
}

/// The routes and who may call them.
pub fn routes() -> RouteTable {
    use crate::http::authz::{Confinement::Refused, TENANT_WIDE_READ};
    const READ: crate::http::authz::RouteAccess = Requires(Scope::RolesRead);
    const MANAGE: crate::http::authz::RouteAccess = Requires(Scope::RolesManage);
    RouteTable::tagged("roles")
        .resource("/v1/roles/{id}", OpDoc::one::<RoleId>("role"))
        .resource(
            "/v1/role-assignments/{id}",
            OpDoc::one::<RoleAssignmentId>("assignment"),
        )
        .get("/v1/roles", READ, list_roles)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<RolePage, NoFilters>("A page of roles, built-in and custom")
                .describe("cursor", None)
                .invalid("Limit outside 1 to 200"),
        )
        .post("/v1/roles", MANAGE, create_role)
        .confine(Refused)
        .doc(
            granting::<CreateRole, Role>(201, "The new custom role")
                .conflict("A role with that name exists, or the name is a built-in's")
                .invalid("An invalid name, description or permission"),
        )
        .get("/v1/roles/{id}", READ, fetch_role)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<Role>(200, "The role"))
        .patch("/v1/roles/{id}", MANAGE, update_role)
        .confine(Refused)
        .doc(
            granting::<UpdateRole, Role>(200, "The role")
                .conflict("Built-in roles cannot be changed")
                .invalid("An invalid description or permission"),
        )
        .delete("/v1/roles/{id}", MANAGE, delete_role)
        .confine(Refused)
        .doc(
            OpDoc::empty(204, "Deleted, with its assignments")
                .forbidden(ESCALATION)
                .conflict("Built-in roles cannot be deleted"),
        )
        .get("/v1/role-assignments", READ, list_assignments)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<AssignmentPage, AssignmentFilters>("A page of assignments")
                .invalid("Limit outside 1 to 200, or both user_id and agent_id"),
        )
        .post("/v1/role-assignments", MANAGE, assign)
        .confine(Refused)
        .doc(
            granting::<CreateAssignment, Assignment>(201, "The assignment")
                .answer(404, "No such role or principal in this tenant")
                .conflict("The principal holds that role")
                .invalid("Not exactly one role and one principal"),
        )
        .delete("/v1/role-assignments/{id}", MANAGE, unassign)
        .confine(Refused)
        .doc(OpDoc::empty(204, "Removed").forbidden(ESCALATION))
}

/// Body of `POST /v1/roles`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    /// `[a-z][a-z0-9_-]{0,62}`; not a built-in role's name.
    #[schema(example = "session-admin")]
    name: String,
    #[serde(default)]
    description: String,
    /// At most 64; each held by the caller.
    #[schema(value_type = Vec<Scope>)]
    permissions: Vec<String>,
}

/// Body of `PATCH /v1/roles/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRole {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Scope>>)]
    permissions: Option<Vec<String>>,
}

/// Body of `POST /v1/role-assignments`: a role (by id or name) and exactly one principal.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAssignment {
    /// The role by id (or give `role`).
    #[serde(default)]
    #[schema(value_type = Option<RoleId>)]
    role_id: Option<String>,
    /// The role by name (or give `role_id`).
    #[serde(default)]
    #[schema(example = "developer")]
    role: Option<String>,
    /// The user to hold it (or give `agent_id`).
    #[serde(default)]
    #[schema(value_type = Option<UserId>)]
    user_id: Option<String>,
    /// The agent to hold it (or give `user_id`).
    #[serde(default)]
    #[schema(value_type = Option<AgentId>)]
    agent_id: Option<String>,
}

/// Filters of `GET /v1/role-assignments`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AssignmentFilters {
    /// Only this user's assignments.
    #[serde(default)]
    #[param(value_type = Option<UserId>)]
    user_id: Option<String>,
    /// Only this agent's assignments.
    #[serde(default)]
    #[param(value_type = Option<AgentId>)]
    agent_id: Option<String>,
    /// Only this role's assignments.
    #[serde(default)]
    #[param(value_type = Option<RoleId>)]
    role_id: Option<String>,
}

page!(
    /// A page of roles.
    RolePage, Role, RoleId
);
page!(
    /// A page of role assignments.
    AssignmentPage, Assignment, RoleAssignmentId
);

fn check_role_name(name: &str) -> Result<(), ApiError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if !valid {
        return Err(ApiError::Invalid(
            "name has 1 to 63 characters: lowercase letters, digits, `_`, `-`, starting with a letter".into(),
        ));
    }
    if BuiltInRole::by_name(name).is_some() {
        return Err(ApiError::Conflict("that name is a built-in role".into()));
    }
    Ok(())
}

fn parse_permissions(names: &[String]) -> Result<ScopeSet, ApiError> {
    if names.len() > 64 {
        return Err(ApiError::Invalid("at most 64 permissions".into()));
    }
    ScopeSet::parse_all(names).map_err(|_| {
        let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::Invalid(
            format!(
                "unknown permission; known permissions are: {}",
                known.join(" ")
            )
            .into(),
        )
    })
}

/// Audits a refused escalation in the tenant's log (the 403 itself is also logged).
async fn audited_grant_check(
    state: &AppState,
    ctx: &TenantContext,
    action: &str,
    resource: Option<String>,
    wanted: &ScopeSet,
) -> Result<(), ApiError> {
    let Err(err) = check_may_grant(ctx, wanted, "role-grant") else {
        return Ok(());
    };
    let meta = json!({ "reason": "escalation", "permissions": wanted.to_strings() });
    record_refusal(
        state,
        ctx,
        action,
        resource.as_deref(),
        Outcome::Blocked,
        meta,
    )
    .await?;
    Err(err)
}

/// The escalation check of a write under way: a refusal rolls the write back first, then is
/// audited in its own transaction ([`audited_grant_check`]); a pass hands the write back.
async fn grant_check_within(
    state: &AppState,
    ctx: &TenantContext,
    tx: TenantTx,
    action: &str,
    resource: String,
    wanted: &ScopeSet,
) -> Result<TenantTx, ApiError> {
    if let Err(err) = check_may_grant(ctx, wanted, "role-grant") {
        tx.rollback().await?;
        audited_grant_check(state, ctx, action, Some(resource), wanted).await?;
        return Err(err);
    }
    Ok(tx)
}

async fn list_roles(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery,
) -> Result<axum::Json<RolePage>, ApiError> {
    let rows = async |tx: &mut TenantTx, after, n| Ok(rbac::list_roles(tx, after, n).await?);
    let (data, next_cursor) = query
        .page_of_ids()?
        .read(&state, &tenant.0, rows, |r| r.id)
        .await?;
    Ok(axum::Json(RolePage::new(data, next_cursor)))
}

async fn create_role(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateRole>,
) -> Result<(StatusCode, axum::Json<Role>), ApiError> {
    let ctx = &tenant.0;
    check_role_name(&body.name)?;
    let description = validate::description(&body.description)?;
    let permissions = parse_permissions(&body.permissions)?;
    audited_grant_check(&state, ctx, "role.create", None, &permissions).await?;
    let role = tx::write(&state, ctx, async |tx| {
        let role = rbac::create_role(tx, &body.name, &description, &permissions)
            .await
            .map_err(|e| conflict_as(e, "a role with that name exists"))?;
        let meta = json!({ "name": role.name, "permissions": permissions.to_strings() });
        let tail = Tail::new().audit("role.create", role.id, meta);
        Ok((role, tail))
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(role)))
}

async fn fetch_role(at: ById<RoleKind>) -> Result<axum::Json<Role>, ApiError> {
    at.read(rbac::get_role).await.map(axum::Json)
}

async fn update_role(
    ByIdJson(ById { state, tenant, id }, body): ByIdJson<RoleKind, UpdateRole>,
) -> Result<axum::Json<Role>, ApiError> {
    let ctx = &tenant.0;
    let description = validate::optional_description(body.description.as_deref())?;
    let permissions = body
        .permissions
        .as_deref()
        .map(parse_permissions)
        .transpose()?;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let current = rbac::get_role_for_update(&mut tx, id).await?;
    // Changing a role changes every holder: the caller must hold both what the role gives now
    // and what it would give.
    let touched = match &permissions {
        Some(new) => current.permissions.union(new),
        None => current.permissions.clone(),
    };
    let mut tx =
        grant_check_within(&state, ctx, tx, "role.update", id.to_string(), &touched).await?;
    let role = rbac::update_role(&mut tx, id, description.as_deref(), permissions.as_ref()).await?;
    Tail::new()
        .audit(
            "role.update",
            id,
            json!({ "permissions": role.permissions.to_strings() }),
        )
        .ceilings_changed()
        .commit(tx, &state, ctx)
        .await?;
    Ok(axum::Json(role))
}

async fn delete_role(ById { state, tenant, id }: ById<RoleKind>) -> Result<StatusCode, ApiError> {
    let ctx = &tenant.0;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let current = rbac::get_role_for_update(&mut tx, id).await?;
    let wanted = &current.permissions;
    let mut tx = grant_check_within(&state, ctx, tx, "role.delete", id.to_string(), wanted).await?;
    rbac::delete_role(&mut tx, id).await?;
    Tail::new()
        .audit("role.delete", id, json!({ "name": current.name }))
        .ceilings_changed()
        .commit(tx, &state, ctx)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn principal_of(user: Option<&str>, agent: Option<&str>) -> Result<Option<Principal>, ApiError> {
    let user: Option<UserId> = optional_id(user)?;
    let agent: Option<AgentId> = optional_id(agent)?;
    match (user, agent) {
        (Some(user), None) => Ok(Some(Principal::User(user))),
        (None, Some(agent)) => Ok(Some(Principal::Agent(agent))),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::Invalid(
            "name one principal: user_id or agent_id".into(),
        )),
    }
}

async fn list_assignments(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery<AssignmentFilters>,
) -> Result<axum::Json<AssignmentPage>, ApiError> {
    let page = query.page_of_ids()?;
    let query = query.filter;
    let principal = principal_of(query.user_id.as_deref(), query.agent_id.as_deref())?;
    let role: Option<RoleId> = optional_id(query.role_id.as_deref())?;
    let rows = async |tx: &mut TenantTx, after, n| {
        Ok(rbac::list_assignments(tx, principal, role, after, n).await?)
    };
    let (data, next_cursor) = page.read(&state, &tenant.0, rows, |a| a.id).await?;
    Ok(axum::Json(AssignmentPage::new(data, next_cursor)))
}

async fn assign(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateAssignment>,
) -> Result<(StatusCode, axum::Json<Assignment>), ApiError> {
    let ctx = &tenant.0;
    let principal = principal_of(body.user_id.as_deref(), body.agent_id.as_deref())?
        .ok_or_else(|| ApiError::Invalid("name one principal: user_id or agent_id".into()))?;
    let role_id: Option<RoleId> = optional_id(body.role_id.as_deref())?;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let role = match (role_id, body.role.as_deref()) {
        (Some(id), None) => rbac::get_role(&mut tx, id).await?,
        (None, Some(name)) => rbac::role_by_name(&mut tx, name).await?,
        _ => {
            return Err(ApiError::Invalid(
                "name the role once: role_id or role (its name)".into(),
            ))
        }
    };
    let (resource, wanted) = (role.id.to_string(), &role.permissions);
    let mut tx = grant_check_within(&state, ctx, tx, "role.assign", resource, wanted).await?;
    // A role or principal of another tenant fails the composite foreign keys: 404.
    let assignment = rbac::assign(&mut tx, role.id, principal)
        .await
        .map_err(|e| conflict_as(e, "the principal holds that role"))?;
    Tail::new()
        .audit(
            "role.assign",
            assignment.id,
            json!({ "role": role.name, "principal": principal }),
        )
        .ceilings_changed()
        .commit(tx, &state, ctx)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(assignment)))
}

async fn unassign(
    ById { state, tenant, id }: ById<RoleAssignmentKind>,
) -> Result<StatusCode, ApiError> {
    let ctx = &tenant.0;
    let mut tx = state.store().begin(ctx, Access::ReadWrite).await?;
    let assignment = rbac::get_assignment(&mut tx, id).await?;
    let role = rbac::get_role(&mut tx, assignment.role_id).await?;
    let (resource, wanted) = (id.to_string(), &role.permissions);
    let mut tx = grant_check_within(&state, ctx, tx, "role.unassign", resource, wanted).await?;
    rbac::unassign(&mut tx, id).await?;
    Tail::new()
        .audit(
            "role.unassign",
            id,
            json!({ "role": role.name, "principal": assignment.principal }),
        )
        .ceilings_changed()
        .commit(tx, &state, ctx)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
