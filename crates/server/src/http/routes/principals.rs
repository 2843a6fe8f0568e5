//! `/v1/users` and `/v1/agents`: the tenant's principals.
//!
//! Creating a principal grants nothing: authority comes from role assignments
//! (`/v1/role-assignments`), which have their own escalation checks. Disabling a principal
//! refuses its credentials on their next use (in this process at once, in others within
//! [`crate::service::ceilings::CEILING_TTL`]); a disabled user cannot refresh or log in.

use axum::extract::State;
use axum::http::StatusCode;
use bulkhead_core::id::{AgentKind, UserKind};
use bulkhead_core::{AgentId, Scope, TenantContext, UserId};
use bulkhead_store::tenant::agents::{self, Agent, AgentStatus};
use bulkhead_store::tenant::users::{self, UserRecord, UserStatus};
use bulkhead_store::Access;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::apidoc::OpDoc;
use crate::http::authz::RouteAccess::Requires;
use crate::http::authz::RouteTable;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::routes::kit::by_id::{ById, ByIdJson};
use crate::http::routes::kit::page::{page, ListQuery, NoFilters};
use crate::http::routes::kit::tx;
use crate::http::routes::kit::validate::{self, optional_id};
use crate::http::routes::kit::write::{conflict_as, Tail};
use crate::http::state::AppState;

/// The routes and who may call them.
pub fn routes() -> RouteTable {
    use crate::http::authz::{Confinement::Refused, TENANT_WIDE_READ};
    RouteTable::tagged("principals")
        .resource("/v1/users/{id}", OpDoc::one::<UserId>("user"))
        .resource("/v1/agents/{id}", OpDoc::one::<AgentId>("agent"))
        .get("/v1/users", Requires(Scope::UsersRead), list_users)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<UserPage, NoFilters>("A page of users").invalid("Limit outside 1 to 200"),
        )
        .post("/v1/users", Requires(Scope::UsersWrite), create_user)
        .confine(Refused)
        .doc(
            OpDoc::ok::<UserView>(
                201,
                "The new user (no role yet: it can do nothing until one is \
                assigned)",
            )
            .body::<CreateUser>()
            .conflict("A user with that email exists")
            .invalid("An invalid email or a refused password")
            .answer(
                503,
                "Too many password operations in progress; see `Retry-After`",
            ),
        )
        .get("/v1/users/{id}", Requires(Scope::UsersRead), fetch_user)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<UserView>(200, "The user"))
        .patch("/v1/users/{id}", Requires(Scope::UsersWrite), update_user)
        .confine(Refused)
        .doc(
            OpDoc::ok::<UserView>(200, "The user")
                .body::<UpdateUser>()
                .conflict("A principal cannot disable itself")
                .invalid("An invalid status"),
        )
        .get("/v1/agents", Requires(Scope::AgentsRead), list_agents)
        .confine(TENANT_WIDE_READ)
        .doc(
            OpDoc::page::<AgentPage, NoFilters>("A page of agents")
                .invalid("Limit outside 1 to 200"),
        )
        .post("/v1/agents", Requires(Scope::AgentsWrite), create_agent)
        .confine(Refused)
        .doc(
            OpDoc::ok::<Agent>(201, "The new agent (no role yet)")
                .body::<CreateAgent>()
                .answer(404, "The owner is not a user of this tenant")
                .conflict("An agent with that name exists")
                .invalid("An invalid name or description"),
        )
        .get("/v1/agents/{id}", Requires(Scope::AgentsRead), fetch_agent)
        .confine(TENANT_WIDE_READ)
        .doc(OpDoc::ok::<Agent>(200, "The agent"))
        .patch(
            "/v1/agents/{id}",
            Requires(Scope::AgentsWrite),
            update_agent,
        )
        .confine(Refused)
        .doc(
            OpDoc::ok::<Agent>(200, "The agent")
                .body::<UpdateAgent>()
                .invalid("An invalid description or status"),
        )
}

/// A principal's status as a request names it.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestedStatus {
    /// Credentials work.
    Active,
    /// Credentials are refused.
    Disabled,
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    id: UserId,
    email: String,
    status: UserStatus,
    created_at: DateTime<Utc>,
}

impl From<UserRecord> for UserView {
    fn from(user: UserRecord) -> Self {
        Self {
            id: user.id,
            email: user.email,
            status: user.status,
            created_at: user.created_at,
        }
    }
}

page!(
    /// A page of users.
    UserPage, UserView, UserId
);
page!(
    /// A page of agents.
    AgentPage, Agent, AgentId
);

/// Body of `POST /v1/users`. `Debug` leaves the password out; it is zeroized on drop.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(example = "dev@example.com")]
    email: String,
    /// argon2id-hashed; at least 8 characters.
    #[schema(format = Password)]
    password: String,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl Drop for CreateUser {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

/// Body of `PATCH /v1/users/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    status: RequestedStatus,
}

/// Body of `POST /v1/agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// `[a-z0-9][a-z0-9._-]{0,62}`, unique in the tenant.
    #[schema(example = "planner")]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    #[schema(value_type = Option<UserId>)]
    owner_user_id: Option<String>,
}

/// Body of `PATCH /v1/agents/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    status: Option<RequestedStatus>,
}

fn check_agent_name(name: &str) -> Result<(), ApiError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "name has 1 to 63 characters: lowercase letters, digits, `.`, `_`, `-`, starting with a letter or digit".into(),
        ))
    }
}

async fn list_users(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery,
) -> Result<axum::Json<UserPage>, ApiError> {
    let (rows, next_cursor) = query
        .page_of_ids()?
        .read(
            &state,
            &tenant.0,
            async |tx, after, n| Ok(users::list(tx, after, n).await?),
            |u| u.id,
        )
        .await?;
    let views = rows.into_iter().map(UserView::from).collect();
    Ok(axum::Json(UserPage::new(views, next_cursor)))
}

async fn create_user(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, axum::Json<UserView>), ApiError> {
    let ctx = &tenant.0;
    let email = super::auth::normalise_email(&body.email)
        .ok_or_else(|| ApiError::Invalid("email is not a valid address".into()))?;
    // A taken email is refused before any hashing: repeating it must cost no argon2id work.
    let mut tx = state.store().begin(ctx, Access::ReadOnly).await?;
    let taken = users::by_email(&mut tx, &email).await?.is_some();
    if taken {
        tx.commit().await?;
        return Err(ApiError::Conflict("a user with that email exists".into()));
    }
    // So is a full `users` quota (a read of the counter; the trigger stays the guard).
    bulkhead_store::tenant::quotas::require_room(&mut tx, "users", 1).await?;
    tx.commit().await?;
    let hash = state
        .hashing()
        .hash_password(
            crate::service::hashing::Caller::Tenant(ctx.tenant_id()),
            body.password.clone(),
        )
        .await?;
    let user = tx::write(&state, ctx, async |tx| {
        // A user's token scopes are every permission: what a user may do is decided by its roles.
        let user = users::create(tx, &email, &hash, &bulkhead_core::ScopeSet::all())
            .await
            .map_err(|e| conflict_as(e, "a user with that email exists"))?;
        let tail = Tail::new().audit("user.create", user.id, json!({}));
        Ok((user, tail))
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

async fn fetch_user(at: ById<UserKind>) -> Result<axum::Json<UserView>, ApiError> {
    at.read(users::get)
        .await
        .map(|user| axum::Json(user.into()))
}

async fn update_user(
    ByIdJson(ById { state, tenant, id }, body): ByIdJson<UserKind, UpdateUser>,
) -> Result<axum::Json<UserView>, ApiError> {
    let ctx = &tenant.0;
    refuse_self_disable(ctx, &id.to_string(), body.status)?;
    let status = match body.status {
        RequestedStatus::Active => UserStatus::Active,
        RequestedStatus::Disabled => UserStatus::Disabled,
    };
    let user = tx::write(&state, ctx, async |tx| {
        users::set_status(tx, id, status).await?;
        let tail = Tail::new()
            .audit("user.update", id, json!({ "status": status }))
            .ceilings_changed();
        Ok((users::get(tx, id).await?, tail))
    })
    .await?;
    Ok(axum::Json(user.into()))
}

/// A principal disabling itself would lock the tenant out through its own mistake; another
/// administrator can do it.
fn refuse_self_disable(
    ctx: &TenantContext,
    id: &str,
    status: RequestedStatus,
) -> Result<(), ApiError> {
    if matches!(status, RequestedStatus::Disabled) && ctx.actor().audit_id() == id {
        return Err(ApiError::Conflict(
            "a principal cannot disable itself".into(),
        ));
    }
    Ok(())
}

async fn list_agents(
    State(state): State<AppState>,
    tenant: Tenant,
    query: ListQuery,
) -> Result<axum::Json<AgentPage>, ApiError> {
    let (data, next_cursor) = query
        .page_of_ids()?
        .read(
            &state,
            &tenant.0,
            async |tx, after, n| Ok(agents::list(tx, after, n).await?),
            |a| a.id,
        )
        .await?;
    Ok(axum::Json(AgentPage::new(data, next_cursor)))
}

async fn create_agent(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateAgent>,
) -> Result<(StatusCode, axum::Json<Agent>), ApiError> {
    let ctx = &tenant.0;
    check_agent_name(&body.name)?;
    let description = validate::description(&body.description)?;
    let owner: Option<UserId> = optional_id(body.owner_user_id.as_deref())?;
    let agent = tx::write(&state, ctx, async |tx| {
        // An owner of another tenant fails the composite foreign key: 404, like a missing one.
        let agent = agents::create(tx, &body.name, &description, owner)
            .await
            .map_err(|e| conflict_as(e, "an agent with that name exists"))?;
        let meta = json!({ "name": agent.name, "owner_user_id": agent.owner_user_id });
        let tail = Tail::new().audit("agent.create", agent.id, meta);
        Ok((agent, tail))
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(agent)))
}

async fn fetch_agent(at: ById<AgentKind>) -> Result<axum::Json<Agent>, ApiError> {
    at.read(agents::get).await.map(axum::Json)
}

async fn update_agent(
    ByIdJson(ById { state, tenant, id }, body): ByIdJson<AgentKind, UpdateAgent>,
) -> Result<axum::Json<Agent>, ApiError> {
    let ctx = &tenant.0;
    let description = validate::optional_description(body.description.as_deref())?;
    let status = body.status.map(|s| match s {
        RequestedStatus::Active => AgentStatus::Active,
        RequestedStatus::Disabled => AgentStatus::Disabled,
    });
    let agent = tx::write(&state, ctx, async |tx| {
        let agent = agents::update(tx, id, description.as_deref(), status).await?;
        let meta = json!({ "status": agent.status, "description_changed": description.is_some() });
        let tail = Tail::new()
            .audit("agent.update", id, meta)
            .ceilings_changed();
        Ok((agent, tail))
    })
    .await?;
    Ok(axum::Json(agent))
}
