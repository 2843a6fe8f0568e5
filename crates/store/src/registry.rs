//! The tenant registry (control plane): which tenants exist, where their data lives, whether they
//! may be served.

use bulkhead_core::{Actor, ApiKeyId, RequestId, TenantContext, TenantId, TenantSlug};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::api_keys::{self, NewApiKey};
use crate::audit::{self, Outcome};
use crate::{Access, Store, StoreError, TenantTx};

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl $name {
            /// The stored text form.
            pub const fn as_str(self) -> &'static str { match self { $(Self::$variant => $text),+ } }
            /// Strict parse of the stored text form.
            pub fn parse(text: &str) -> Option<Self> { match text { $($text => Some(Self::$variant),)+ _ => None } }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// Commercial plan; sets default budgets.
    Plan { /** Free. */ Free = "free", /** Standard. */ Standard = "standard", /** Enterprise. */ Enterprise = "enterprise" }
);
text_enum!(
    /// Where a tenant's rows live. Only `Shared` (one database, row-level security) is served today.
    IsolationTier { /** Shared tables under RLS. */ Shared = "shared", /** A schema per tenant. */ Schema = "schema", /** A database per tenant. */ Dedicated = "dedicated" }
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
}

type TenantRow = (
    uuid::Uuid,
    String,
    String,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
);

const COLUMNS: &str = "id, slug, display_name, plan, isolation_tier, region, status, created_at";

fn from_row(row: TenantRow) -> Result<Tenant, StoreError> {
    let (id, slug, display_name, plan, tier, region, status, created_at) = row;
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
    })
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

    /// Registers a tenant and stores its bootstrap admin key, with audit events for both, in one
    /// transaction: a tenant never exists without its first key. Needs the owner role (the
    /// application role cannot write the registry); the key is written through the tenant's own
    /// context, under the same row-level security as everything else.
    pub async fn onboard_tenant(
        &self,
        new: &NewTenant,
        bootstrap_key: &NewApiKey,
    ) -> Result<(Tenant, ApiKeyId), StoreError> {
        let mut tx = self.pool().begin().await?;
        let row: TenantRow = sqlx::query_as(&format!(
            "INSERT INTO bulkhead.tenants (id, slug, display_name, plan, region) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        ))
        .bind(TenantId::new().uuid())
        .bind(new.slug.as_str())
        .bind(&new.display_name)
        .bind(new.plan.as_str())
        .bind(&new.region)
        .fetch_one(&mut *tx)
        .await?;
        let tenant = from_row(row)?;
        let ctx = TenantContext::new(
            tenant.id,
            Actor::System {
                component: "onboarding",
            },
            RequestId::new(),
        );
        let mut tx = TenantTx::enter(tx, &ctx, Access::ReadWrite).await?;
        crate::rbac::seed_built_in_roles(&mut tx).await?;
        let key_id = api_keys::insert(&mut tx, bootstrap_key).await?;
        let meta = json!({ "slug": tenant.slug.as_str(), "plan": tenant.plan.as_str() });
        audit::record(
            &mut tx,
            "tenant.create",
            Some(&tenant.id.to_string()),
            Outcome::Success,
            meta,
        )
        .await?;
        let meta = json!({ "scopes": bootstrap_key.scopes.to_strings(), "bootstrap": true });
        audit::record(
            &mut tx,
            "api_key.create",
            Some(&key_id.to_string()),
            Outcome::Success,
            meta,
        )
        .await?;
        tx.commit().await?;
        Ok((tenant, key_id))
    }

    /// Suspends or reactivates a tenant. Needs the owner role.
    pub async fn set_tenant_status(
        &self,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant, StoreError> {
        let row: Option<TenantRow> = sqlx::query_as(&format!(
            "UPDATE bulkhead.tenants SET status = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id.uuid())
        .bind(status.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.map(from_row).transpose()?.ok_or(StoreError::NotFound)
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
}
