//! The tenant registry (control plane): which tenants exist, where their data lives, whether they
//! may be served.

use bulkhead_core::{Actor, ApiKeyId, RequestId, TenantContext, TenantId, TenantSlug};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::api_keys::{self, NewApiKey};
use crate::audit::{self, Outcome};
use crate::location::{Location, Placement};
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
    /// Where a tenant's rows live (docs/isolation-tiers.md).
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
    /// Its schema, in the schema tier.
    pub schema_name: Option<String>,
    /// Its dedicated database's registry name, in the dedicated tier.
    pub database_name: Option<String>,
    /// Whether it is frozen for a move (writes answer a retryable 503).
    pub frozen: bool,
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
    /// ([`crate::moves`]).
    pub placement: Placement,
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
    Option<String>,
    Option<String>,
    bool,
);

const COLUMNS: &str = "id, slug, display_name, plan, isolation_tier, region, status, created_at, \
     schema_name, database_name, frozen_since IS NOT NULL";

fn from_row(row: TenantRow) -> Result<Tenant, StoreError> {
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
    })
}

impl Tenant {
    /// Where its rows live.
    pub fn location(&self) -> Result<Location, StoreError> {
        crate::location::location_from_columns(
            self.isolation_tier.as_str(),
            self.schema_name.as_deref(),
            self.database_name.as_deref(),
            self.region.clone(),
        )
    }
}

/// Sets the status on a tenant's anchor row in `at` (a location other than the registry's own
/// shared schema). The row must be there: a location without it is not the tenant's.
async fn set_anchor_status(
    conn: &mut sqlx::PgConnection,
    at: &Location,
    id: TenantId,
    status: TenantStatus,
) -> Result<(), StoreError> {
    let changed = sqlx::query(&format!(
        "UPDATE \"{}\".tenants SET status = $2, updated_at = now() WHERE id = $1",
        at.placement.schema()
    ))
    .bind(id.uuid())
    .bind(status.as_str())
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
/// shared schema: the row the location check reads ([`crate::location`]).
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

    /// Registers a tenant and stores its bootstrap admin key, with audit events for both. Needs
    /// the owner role (the application role cannot write the registry); the key is written
    /// through the tenant's own context, under the same row-level security as everything else.
    ///
    /// In the registry's database (the default region's shared tier or a schema there) all of it
    /// is one transaction, the schema's creation and migrations included: a tenant never exists
    /// without its first key. Elsewhere (another region, a dedicated database) the location is
    /// migrated first, the registry row committed, then the tenant's first rows written there;
    /// if that fails the registry row is removed again.
    pub async fn onboard_tenant(
        &self,
        new: &NewTenant,
        bootstrap_key: &NewApiKey,
    ) -> Result<(Tenant, ApiKeyId), StoreError> {
        let id = TenantId::new();
        let placement = match &new.placement {
            Placement::Schema(_) => Placement::Schema(crate::location::SchemaName::for_tenant(id)),
            other => other.clone(),
        };
        let location = Location {
            region: new.region.clone(),
            placement,
        };
        let router = self.router();
        if !router.serves(&location.region) {
            return Err(StoreError::WrongRegion(location.region.clone()));
        }
        let in_registry_database = router.shares_registry_database(&location);
        if !in_registry_database {
            // Migrations first (each location in its own transaction; idempotent).
            crate::tiers::prepare_location(self, &location).await?;
        }
        let mut tx = self.pool().begin().await?;
        let (schema_name, database_name) = location.placement.columns();
        let row: TenantRow = sqlx::query_as(&format!(
            "INSERT INTO bulkhead.tenants (id, slug, display_name, plan, region, isolation_tier, \
             schema_name, database_name, live) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING {COLUMNS}"
        ))
        .bind(id.uuid())
        .bind(new.slug.as_str())
        .bind(&new.display_name)
        .bind(new.plan.as_str())
        .bind(&new.region)
        .bind(location.placement.tier().as_str())
        .bind(schema_name)
        .bind(database_name)
        // The registry row is the anchor of the default region's shared tier only.
        .bind(router.is_registry_location(&location))
        .fetch_one(&mut *tx)
        .await?;
        let tenant = from_row(row)?;
        if in_registry_database {
            if let Placement::Schema(schema) = &location.placement {
                crate::migrate::apply_on(&mut tx, schema.as_str(), Some(schema)).await?;
                write_anchor(&mut tx, &tenant, &location, true).await?;
            }
            let key_id = self
                .seed_tenant(tx, &tenant, &location, bootstrap_key)
                .await?;
            return Ok((tenant, key_id));
        }
        tx.commit().await?;
        let seeded = async {
            let pool = router.pool_for(&location).await?;
            let mut tx = pool.begin().await?;
            write_anchor(&mut tx, &tenant, &location, true).await?;
            self.seed_tenant(tx, &tenant, &location, bootstrap_key)
                .await
        }
        .await;
        match seeded {
            Ok(key_id) => Ok((tenant, key_id)),
            Err(err) => {
                // Nothing of the tenant committed there; the registry row goes too.
                sqlx::query("DELETE FROM bulkhead.key_routes WHERE tenant_id = $1")
                    .bind(id.uuid())
                    .execute(self.pool())
                    .await
                    .ok();
                sqlx::query("DELETE FROM bulkhead.tenants WHERE id = $1")
                    .bind(id.uuid())
                    .execute(self.pool())
                    .await
                    .ok();
                Err(err)
            }
        }
    }

    async fn seed_tenant(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        tenant: &Tenant,
        location: &Location,
        bootstrap_key: &NewApiKey,
    ) -> Result<ApiKeyId, StoreError> {
        let ctx = TenantContext::new(
            tenant.id,
            Actor::System {
                component: "onboarding",
            },
            RequestId::new(),
        );
        let mut tx = TenantTx::enter(tx, &ctx, Access::ReadWrite, location).await?;
        tx.registry = Some(self.pool().clone());
        crate::rbac::seed_built_in_roles(&mut tx).await?;
        let key_id = api_keys::insert(&mut tx, bootstrap_key).await?;
        let meta = json!({
            "slug": tenant.slug.as_str(),
            "plan": tenant.plan.as_str(),
            "tier": location.placement.tier().as_str(),
            "region": location.region,
        });
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
        Ok(key_id)
    }

    /// Suspends or reactivates a tenant, everywhere or nowhere. Needs the owner role.
    ///
    /// Every copy of the status changes: the registry row and, for a tenant whose rows live
    /// elsewhere, the anchor row of its location (what that location's claim functions read).
    /// A location this process cannot reach (a region it does not serve, a database that does not
    /// answer) fails the whole change with an error naming it, before anything is written. The
    /// `tenant.suspend` / `tenant.activate` event goes to the tenant's own audit log in the same
    /// transaction as its location's change, with the operator as actor.
    ///
    /// In the registry's database all of it is one transaction. Elsewhere the location's
    /// transaction (anchor and event) commits first, then the registry's; should the second
    /// commit fail, the error says so and running the command again completes it (each write
    /// sets a value, so repeating it is harmless).
    pub async fn set_tenant_status(
        &self,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant, StoreError> {
        self.set_tenant_status_by(id, status, "owner").await
    }

    /// [`Store::set_tenant_status`], naming who ran it in the audit event.
    ///
    /// Reactivation also makes the deliveries paused during the suspension due at once and
    /// wakes the webhook workers (wherever the tenant's rows live), after both copies of the
    /// status agree. Should that last step fail, they resume after their pause backoff.
    pub async fn set_tenant_status_by(
        &self,
        id: TenantId,
        status: TenantStatus,
        operator: &str,
    ) -> Result<Tenant, StoreError> {
        let tenant = self.write_tenant_status(id, status, operator).await?;
        if status == TenantStatus::Active {
            let ctx = TenantContext::new(
                id,
                Actor::System {
                    component: "operator",
                },
                RequestId::new(),
            );
            let resumed = async {
                let mut tx = self.begin(&ctx, Access::ReadWrite).await?;
                let n = crate::webhooks::resume_paused_deliveries(&mut tx).await?;
                tx.commit().await?;
                Ok::<u64, StoreError>(n)
            }
            .await;
            match resumed {
                Ok(n) => {
                    tracing::info!(tenant_id = %id, resumed = n, "tenant active: paused webhook deliveries due now")
                }
                Err(err) => {
                    tracing::warn!(tenant_id = %id, error = %err, "paused webhook deliveries resume after their backoff")
                }
            }
        }
        Ok(tenant)
    }

    async fn write_tenant_status(
        &self,
        id: TenantId,
        status: TenantStatus,
        operator: &str,
    ) -> Result<Tenant, StoreError> {
        let current = self.tenant_by_id(id).await?.ok_or(StoreError::NotFound)?;
        let location = current.location()?;
        let router = self.router();
        if !router.serves(&location.region) {
            return Err(StoreError::WrongRegion(location.region.clone()));
        }
        let mut registry = self.pool().begin().await?;
        let row: Option<TenantRow> = sqlx::query_as(&format!(
            "UPDATE bulkhead.tenants SET status = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id.uuid())
        .bind(status.as_str())
        .fetch_optional(&mut *registry)
        .await?;
        let tenant = row.map(from_row).transpose()?.ok_or(StoreError::NotFound)?;
        let ctx = TenantContext::new(
            id,
            Actor::System {
                component: "operator",
            },
            RequestId::new(),
        );
        let action = match status {
            TenantStatus::Active => "tenant.activate",
            TenantStatus::Suspended => "tenant.suspend",
        };
        let meta = json!({
            "from": current.status.as_str(),
            "to": status.as_str(),
            "operator": operator,
            "region": location.region,
        });
        if router.shares_registry_database(&location) {
            if !router.is_registry_location(&location) {
                set_anchor_status(&mut registry, &location, id, status).await?;
            }
            let mut tx = TenantTx::enter(registry, &ctx, Access::ReadWrite, &location).await?;
            tx.registry = Some(self.pool().clone());
            audit::record(
                &mut tx,
                action,
                Some(&id.to_string()),
                Outcome::Success,
                meta,
            )
            .await?;
            tx.commit().await?;
            return Ok(tenant);
        }
        let pool = router.pool_for(&location).await?;
        let mut there = pool.begin().await?;
        set_anchor_status(&mut there, &location, id, status).await?;
        let mut tx = TenantTx::enter(there, &ctx, Access::ReadWrite, &location).await?;
        tx.registry = Some(self.pool().clone());
        audit::record(
            &mut tx,
            action,
            Some(&id.to_string()),
            Outcome::Success,
            meta,
        )
        .await?;
        tx.commit().await?;
        registry.commit().await?;
        Ok(tenant)
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
