//! Onboarding and changing tenants: what `bulkhead tenant …` and the operator API share. The
//! registry row plus a bootstrap admin key (shown once), the placement a tier names, status and
//! plan changes. Whoever calls names the operator (`cli:<account>` or an operator key's id).

use bulkhead_auth::{ApiKey, KeyEnvironment, MasterKey};
use bulkhead_core::{ApiKeyId, TenantId, TenantSlug};
use bulkhead_store::placement::location::{DatabaseName, SchemaName};
use bulkhead_store::placement::registry::{
    NewTenant, Plan, RateLimitOverride, Tenant, TenantStatus,
};
use bulkhead_store::tenant::api_keys::NewApiKey;
use bulkhead_store::{Placement, Store, StoreError};

use crate::service::audit_line::{AuditLine, Detail};
use crate::service::credentials::Peppers;
use crate::service::operators;
use serde_json::json;

/// Why a tenant change was refused. Mapped to HTTP once (`http/error/`); the CLI prints it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantChangeError {
    /// The request is invalid (422): the text says which field and why.
    #[error("{0}")]
    Invalid(String),
    /// The slug is taken (409).
    #[error("a tenant with slug `{0}` already exists")]
    SlugTaken(String),
    /// The dedicated database's name is another tenant's (409).
    #[error("dedicated database `{0}` is already another tenant's; choose another name")]
    DatabaseTaken(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Registering the dedicated database failed (its URL, its migrations).
    #[error("cannot register and migrate the dedicated database: {0:#}")]
    Dedicated(anyhow::Error),
}

/// A dedicated database named for a new tenant (tier `dedicated`).
pub struct DedicatedDatabase {
    /// Its owner URL (carries a password: never logged, stored sealed).
    pub owner_url: String,
    /// Its registry name (default: the slug with '-' as '_').
    pub name: Option<String>,
}

impl std::fmt::Debug for DedicatedDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedicatedDatabase")
            .field("owner_url", &"<redacted>")
            .field("name", &self.name)
            .finish()
    }
}

/// What an operator asks for when creating a tenant, as text (from flags or a JSON body).
#[derive(Debug)]
pub struct TenantRequest {
    /// Subdomain label.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// `free`, `standard` or `enterprise`.
    pub plan: String,
    /// Data-residency region.
    pub region: String,
    /// `shared`, `schema` or `dedicated`.
    pub tier: String,
    /// The database of a dedicated tenant.
    pub dedicated: Option<DedicatedDatabase>,
}

/// A new tenant and its first key. The key's plaintext exists only here, to be shown once.
#[derive(Debug)]
pub struct Onboarded {
    /// The registry row.
    pub tenant: Tenant,
    /// The key record's id.
    pub admin_key_id: ApiKeyId,
    /// The key itself (never stored).
    pub admin_key: ApiKey,
}

/// A plan by name, or why not.
pub fn parse_plan(text: &str) -> Result<Plan, TenantChangeError> {
    Plan::parse(text).ok_or_else(|| {
        TenantChangeError::Invalid("invalid plan: expected free, standard or enterprise".into())
    })
}

/// Validates `request`, resolves its placement (registering a dedicated database) and onboards
/// the tenant with its admin key. `owner` must be a store on the owner role; `operator` names
/// who asked. Recorded in the operator log (`tenant.create`, started then success or failure).
pub async fn create(
    owner: &Store,
    peppers: &Peppers,
    master: Option<&MasterKey>,
    environment: KeyEnvironment,
    request: TenantRequest,
    operator: &str,
) -> Result<Onboarded, TenantChangeError> {
    let meta = json!({
        "slug": request.slug.chars().take(64).collect::<String>(),
        "plan": request.plan.chars().take(32).collect::<String>(),
        "region": request.region.chars().take(64).collect::<String>(),
        "tier": request.tier.chars().take(32).collect::<String>(),
    });
    let work = create_unaudited(owner, peppers, master, environment, request, operator);
    operators::audited(
        owner,
        operator,
        "tenant.create",
        None,
        meta,
        |done: &Onboarded| done.tenant.id.to_string(),
        work,
    )
    .await
}

async fn create_unaudited(
    owner: &Store,
    peppers: &Peppers,
    master: Option<&MasterKey>,
    environment: KeyEnvironment,
    request: TenantRequest,
    operator: &str,
) -> Result<Onboarded, TenantChangeError> {
    // Everything is validated before the database is touched.
    let slug = TenantSlug::parse(&request.slug)
        .map_err(|e| TenantChangeError::Invalid(format!("invalid slug: {e}")))?;
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(TenantChangeError::Invalid(
            "invalid name: 1 to 200 characters, no control characters".into(),
        ));
    }
    let plan = parse_plan(&request.plan)?;
    let region = request.region;
    if region.is_empty() || region.len() > 64 || region.chars().any(char::is_control) {
        return Err(TenantChangeError::Invalid(
            "invalid region: 1 to 64 characters".into(),
        ));
    }
    let placement = placement(
        owner,
        &request.tier,
        request.dedicated.as_ref(),
        &slug,
        None,
        &region,
        master,
        operator,
    )
    .await?;
    let new = NewTenant {
        slug,
        display_name: name,
        plan,
        region,
        placement,
    };
    onboard(owner, peppers, environment, &new, operator)
        .await
        .map_err(|e| match e {
            StoreError::Conflict { .. } => TenantChangeError::SlugTaken(new.slug.to_string()),
            other => other.into(),
        })
}

/// The placement `tier` names for a tenant (`tenant`: its id when it exists, for a move),
/// registering the dedicated database when needed.
#[allow(clippy::too_many_arguments)]
pub async fn placement(
    owner: &Store,
    tier: &str,
    dedicated: Option<&DedicatedDatabase>,
    slug: &TenantSlug,
    tenant: Option<TenantId>,
    region: &str,
    master: Option<&MasterKey>,
    operator: &str,
) -> Result<Placement, TenantChangeError> {
    // A tenant being created has no id yet: any existing use of the name is another's.
    let tenant = tenant.unwrap_or_default();
    match tier {
        "shared" => Ok(Placement::Shared),
        "schema" => Ok(Placement::Schema(SchemaName::for_tenant(TenantId::new()))),
        "dedicated" => {
            let Some(dedicated) = dedicated else {
                return Err(TenantChangeError::Invalid(
                    "tier dedicated needs the dedicated database's URL".into(),
                ));
            };
            let name = dedicated
                .name
                .clone()
                .unwrap_or_else(|| slug.as_str().replace('-', "_"));
            let name = DatabaseName::parse(&name).ok_or_else(|| {
                TenantChangeError::Invalid(
                    "invalid dedicated database name: a plain lowercase identifier".into(),
                )
            })?;
            let master = master.ok_or_else(|| {
                TenantChangeError::Invalid("a dedicated database needs the master key".into())
            })?;
            // Registering a name again replaces its URLs: never under another tenant.
            let users = owner.database_users(&name).await?;
            if users.iter().any(|t| *t != tenant) {
                return Err(TenantChangeError::DatabaseTaken(name.to_string()));
            }
            let app_url = crate::service::database::derived_app_url(&dedicated.owner_url)
                .map_err(TenantChangeError::Dedicated)?;
            owner
                .register_database(master, &name, region, &dedicated.owner_url, &app_url)
                .await
                .map_err(|e| TenantChangeError::Dedicated(e.into()))?;
            AuditLine::success("tenant_database.register")
                .tenant(tenant)
                .actor(operator)
                .with(Detail::Resource, &name)
                .info("dedicated database registered (URLs sealed)");
            Ok(Placement::Dedicated(name))
        }
        other => Err(TenantChangeError::Invalid(format!(
            "invalid tier {other:?}: expected shared, schema or dedicated"
        ))),
    }
}

/// Creates the tenant and its admin key (every scope) in one transaction. `owner` must be a
/// store on the owner role.
pub async fn onboard(
    owner: &Store,
    peppers: &Peppers,
    environment: KeyEnvironment,
    new: &NewTenant,
    operator: &str,
) -> Result<Onboarded, StoreError> {
    let admin_key = ApiKey::generate(environment);
    let record = NewApiKey::bootstrap_admin(&admin_key, peppers.current(), environment);
    let (tenant, admin_key_id) = owner.onboard_tenant(new, &record).await?;
    AuditLine::success("tenant.create")
        .tenant(tenant.id)
        .actor(operator)
        .with(Detail::Key, admin_key_id)
        .info("tenant onboarded");
    Ok(Onboarded {
        tenant,
        admin_key_id,
        admin_key,
    })
}

/// Suspends or reactivates `tenant` everywhere or nowhere ([`Store::set_tenant_status_by`]);
/// the tenant's own audit log names `operator`, and so does the operator log.
pub async fn set_status(
    owner: &Store,
    tenant: TenantId,
    status: TenantStatus,
    operator: &str,
) -> Result<Tenant, StoreError> {
    let action = if status == TenantStatus::Active {
        "tenant.activate"
    } else {
        "tenant.suspend"
    };
    // A tenant being deleted stays suspended until its deletion is cancelled; the check and
    // the change hold the deletion lock together (`Store::set_tenant_status_unless_deleting`).
    operators::audited(
        owner,
        operator,
        action,
        Some(tenant.to_string()),
        json!({ "status": status.as_str() }),
        |t: &Tenant| t.id.to_string(),
        owner.set_tenant_status_unless_deleting(tenant, status, operator),
    )
    .await
}

/// Changes `tenant`'s plan everywhere or nowhere ([`Store::set_tenant_plan_by`]).
pub async fn set_plan(
    owner: &Store,
    tenant: TenantId,
    plan: Plan,
    operator: &str,
) -> Result<Tenant, StoreError> {
    operators::audited(
        owner,
        operator,
        "tenant.plan",
        Some(tenant.to_string()),
        json!({ "plan": plan.as_str() }),
        |t: &Tenant| t.id.to_string(),
        owner.set_tenant_plan_by(tenant, plan, operator),
    )
    .await
}

/// Sets or clears (`None`: back to its plan's) `tenant`'s own request budget
/// ([`Store::set_tenant_rate_limit_by`]); processes apply it when their registry cache of the
/// tenant next refreshes (`--registry-cache-secs`, default 2 s).
pub async fn set_rate_limit(
    owner: &Store,
    tenant: TenantId,
    rate_limit: Option<RateLimitOverride>,
    operator: &str,
) -> Result<Tenant, StoreError> {
    operators::audited(
        owner,
        operator,
        "tenant.rate_limit",
        Some(tenant.to_string()),
        json!({ "rate_limit": rate_limit }),
        |t: &Tenant| t.id.to_string(),
        owner.set_tenant_rate_limit_by(tenant, rate_limit, operator),
    )
    .await
}

/// A tenant by slug or `tnt_…` id.
pub async fn find(owner: &Store, text: &str) -> Result<Option<Tenant>, StoreError> {
    if text.starts_with("tnt_") {
        match TenantId::parse(text) {
            Ok(id) => owner.tenant_by_id(id).await,
            Err(_) => Ok(None),
        }
    } else {
        match TenantSlug::parse(text) {
            Ok(slug) => owner.tenant_by_slug(&slug).await,
            Err(_) => Ok(None),
        }
    }
}
