//! The tenant registry (control plane): which tenants exist, where their data lives, whether they
//! may be served.

use bulkhead_core::{TenantId, TenantSlug};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::placement::location::{IsolationTier, Location, Placement};
use crate::{Store, StoreError};

use crate::text_enum::text_enum;

text_enum!(
    /// Commercial plan; sets default budgets.
    Plan { /** Free. */ Free = "free", /** Standard. */ Standard = "standard", /** Enterprise. */ Enterprise = "enterprise" }
);
text_enum!(
    /// Whether a tenant may be served.
    TenantStatus { /** Served. */ Active = "active", /** Refused with 403; its jobs are refused. */ Suspended = "suspended" }
);

/// A registry row.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    /// Public id.
    pub id: TenantId,
    /// Subdomain label.
    pub slug: TenantSlug,
    /// Human-readable name.
    pub display_name: String,
    /// Commercial plan.
    pub plan: Plan,
    /// Isolation tier.
    pub isolation_tier: IsolationTier,
    /// Data-residency region.
    pub region: String,
    /// Whether it may be served.
    pub status: TenantStatus,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its schema, in the schema tier.
    pub schema_name: Option<String>,
    /// Its dedicated database's registry name, in the dedicated tier.
    pub database_name: Option<String>,
    /// Whether it is frozen for a move (writes answer a retryable 503).
    pub frozen: bool,
    /// Its own request budget, replacing its plan's (`None`: the plan's).
    pub rate_limit: Option<RateLimitOverride>,
}

/// A tenant's own request budget (migration 0038): the tenant level of the rate limiter uses
/// it instead of the plan's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitOverride {
    /// Requests a minute, sustained: [`RateLimitOverride::MIN_BURST`] to
    /// [`RateLimitOverride::MAX`].
    pub requests_per_minute: u32,
    /// How many may come at once after a quiet spell: [`RateLimitOverride::MIN_BURST`] to
    /// `requests_per_minute`.
    pub burst: u32,
}

impl RateLimitOverride {
    /// The largest rate (the column's check).
    pub const MAX: u32 = 10_000_000;
    /// The smallest burst: the largest cost of one request (minting a key costs 10 units), so
    /// no route becomes impossible for the tenant.
    pub const MIN_BURST: u32 = 10;

    /// The values as the registry's integer columns store them (`rate_limit_per_minute`,
    /// `rate_limit_burst`); both fit, as [`Self::new`] bounds them.
    pub(crate) fn columns(self) -> (i32, i32) {
        let column = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        (column(self.requests_per_minute), column(self.burst))
    }

    /// An override if the values keep the rules: a burst of at least [`Self::MIN_BURST`] and at
    /// most one minute of the rate. The upper bound keeps a budget that is lowered or cleared
    /// from leaving more than a minute of debt behind (the limiter's state is a time, earned at
    /// the old rate).
    pub fn new(requests_per_minute: u32, burst: u32) -> Option<Self> {
        let fits = requests_per_minute <= Self::MAX
            && (Self::MIN_BURST..=requests_per_minute).contains(&burst);
        fits.then_some(Self {
            requests_per_minute,
            burst,
        })
    }
}

/// What an operator gives to create a tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Subdomain label.
    pub slug: TenantSlug,
    /// Human-readable name, 1 to 200 characters.
    pub display_name: String,
    /// Commercial plan.
    pub plan: Plan,
    /// Data-residency region.
    pub region: String,
    /// Where its rows live. Fixed at onboarding; changing it is a move
    /// ([`crate::lifecycle::moves`]).
    pub placement: Placement,
}

pub(crate) type TenantRow = (
    uuid::Uuid,
    String,
    String,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    bool,
    Option<i32>,
    Option<i32>,
);

pub(crate) const COLUMNS: &str =
    "id, slug, display_name, plan, isolation_tier, region, status, created_at, \
     schema_name, database_name, frozen_since IS NOT NULL, rate_limit_per_minute, rate_limit_burst";

pub(crate) fn from_row(row: TenantRow) -> Result<Tenant, StoreError> {
    let (
        id,
        slug,
        display_name,
        plan,
        tier,
        region,
        status,
        created_at,
        schema_name,
        database_name,
        frozen,
        per_minute,
        burst,
    ) = row;
    let corrupt =
        |what: &str| StoreError::UnsafeConfiguration(format!("registry row has an invalid {what}"));
    Ok(Tenant {
        id: TenantId::from_uuid(id),
        slug: TenantSlug::parse(&slug).map_err(|_| corrupt("slug"))?,
        display_name,
        plan: Plan::parse(&plan).ok_or_else(|| corrupt("plan"))?,
        isolation_tier: IsolationTier::parse(&tier).ok_or_else(|| corrupt("tier"))?,
        region,
        status: TenantStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        created_at,
        schema_name,
        database_name,
        frozen,
        rate_limit: match (per_minute, burst) {
            (None, None) => None,
            (Some(per_minute), Some(burst)) => Some(
                u32::try_from(per_minute)
                    .ok()
                    .zip(u32::try_from(burst).ok())
                    .and_then(|(p, b)| RateLimitOverride::new(p, b))
                    .ok_or_else(|| corrupt("rate limit"))?,
            ),
            _ => return Err(corrupt("rate limit")),
        },
    })
}

impl Tenant {
    /// Where its rows live.
    pub fn location(&self) -> Result<Location, StoreError> {
        crate::placement::location::location_from_columns(
            self.isolation_tier.as_str(),
            self.schema_name.as_deref(),
            self.database_name.as_deref(),
            self.region.clone(),
        )
    }
}

/// A registry column an operator changes on every copy of a tenant's row (the registry's and,
/// elsewhere, the anchor's): its status (which claim functions read) or its plan (which the
/// quota triggers read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegistryColumn {
    /// `status`.
    Status(TenantStatus),
    /// `plan`.
    Plan(Plan),
}

impl RegistryColumn {
    /// The column's name (a constant, never input).
    pub(crate) fn column(self) -> &'static str {
        match self {
            RegistryColumn::Status(_) => "status",
            RegistryColumn::Plan(_) => "plan",
        }
    }

    /// The new value.
    pub(crate) fn value(self) -> &'static str {
        match self {
            RegistryColumn::Status(status) => status.as_str(),
            RegistryColumn::Plan(plan) => plan.as_str(),
        }
    }

    /// The value `tenant` has now.
    pub(crate) fn current(self, tenant: &Tenant) -> &'static str {
        match self {
            RegistryColumn::Status(_) => tenant.status.as_str(),
            RegistryColumn::Plan(_) => tenant.plan.as_str(),
        }
    }
}

/// Sets a column on a tenant's anchor row in `at` (a location other than the registry's own
/// shared schema). The row must be there: a location without it is not the tenant's.
pub(crate) async fn set_anchor_column(
    conn: &mut sqlx::PgConnection,
    at: &Location,
    id: TenantId,
    change: RegistryColumn,
) -> Result<(), StoreError> {
    let changed = sqlx::query(&format!(
        "UPDATE \"{}\".tenants SET {} = $2, updated_at = now() WHERE id = $1",
        at.placement.schema(),
        change.column()
    ))
    .bind(id.uuid())
    .bind(change.value())
    .execute(conn)
    .await?
    .rows_affected();
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::LocationMismatch)
    }
}

/// Writes (or refreshes) a tenant's anchor row in a location other than the registry's own
/// shared schema: the row the location check reads ([`crate::placement::location`]).
pub(crate) async fn write_anchor(
    conn: &mut sqlx::PgConnection,
    tenant: &Tenant,
    at: &Location,
    live: bool,
) -> Result<(), StoreError> {
    let (schema_name, database_name) = at.placement.columns();
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".tenants (id, slug, display_name, plan, isolation_tier, region, \
         status, created_at, schema_name, database_name, live) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET isolation_tier = EXCLUDED.isolation_tier, \
         region = EXCLUDED.region, status = EXCLUDED.status, schema_name = EXCLUDED.schema_name, \
         database_name = EXCLUDED.database_name, frozen_since = NULL, live = EXCLUDED.live, \
         updated_at = now()",
        schema = at.placement.schema()
    ))
    .bind(tenant.id.uuid())
    .bind(tenant.slug.as_str())
    .bind(&tenant.display_name)
    .bind(tenant.plan.as_str())
    .bind(at.placement.tier().as_str())
    .bind(&at.region)
    .bind(tenant.status.as_str())
    .bind(tenant.created_at)
    .bind(schema_name)
    .bind(database_name)
    .bind(live)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// The tenant with this slug, if any.
    pub async fn tenant_by_slug(&self, slug: &TenantSlug) -> Result<Option<Tenant>, StoreError> {
        let row: Option<TenantRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM bulkhead.tenants WHERE slug = $1"
        ))
        .bind(slug.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.map(from_row).transpose()
    }

    /// The tenant with this id, if any.
    pub async fn tenant_by_id(&self, id: TenantId) -> Result<Option<Tenant>, StoreError> {
        let row: Option<TenantRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM bulkhead.tenants WHERE id = $1"
        ))
        .bind(id.uuid())
        .fetch_optional(self.pool())
        .await?;
        row.map(from_row).transpose()
    }

    /// Every tenant, oldest first (operator listing).
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<TenantRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM bulkhead.tenants ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(from_row).collect()
    }

    /// One page of tenants in id order (ids are time-ordered), after `after`, at most `limit`,
    /// filtered by status, plan and region when given (operator listing).
    pub async fn tenants_page(
        &self,
        filter: &TenantFilter,
        after: Option<TenantId>,
        limit: u32,
    ) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<TenantRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM bulkhead.tenants \
             WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR status = $2) \
               AND ($3::text IS NULL OR plan = $3) AND ($4::text IS NULL OR region = $4) \
             ORDER BY id LIMIT $5"
        ))
        .bind(after.map(|a| a.uuid()))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.plan.map(|p| p.as_str()))
        .bind(filter.region.as_deref())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(from_row).collect()
    }
}

/// The filters of [`Store::tenants_page`]; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    /// Only tenants in this status.
    pub status: Option<TenantStatus>,
    /// Only tenants on this plan.
    pub plan: Option<Plan>,
    /// Only tenants of this region.
    pub region: Option<String>,
}
