//! Onboarding: a tenant's registry row, its location prepared, and its first rows (built-in
//! roles, the bootstrap admin key, the audit events of both), never a tenant without its key.

use bulkhead_core::{ApiKeyId, TenantContext, TenantId};
use serde_json::json;

use crate::audit::{self, Outcome};
use crate::placement::location::{Location, Placement, SchemaName};
use crate::placement::registry::{from_row, write_anchor, NewTenant, Tenant, TenantRow, COLUMNS};
use crate::placement::{migrate, tiers};
use crate::tenant::api_keys::{self, NewApiKey};
use crate::tenant::rbac;
use crate::{Access, Store, StoreError, TenantTx};

impl Store {
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
            Placement::Schema(_) => Placement::Schema(SchemaName::for_tenant(id)),
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
            tiers::prepare_location(self, &location).await?;
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
                migrate::apply_on(&mut tx, schema.as_str(), Some(schema)).await?;
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
        let ctx = TenantContext::for_system(tenant.id, "onboarding");
        let mut tx = TenantTx::enter(tx, &ctx, Access::ReadWrite, location).await?;
        tx.registry = Some(self.pool().clone());
        rbac::seed_built_in_roles(&mut tx).await?;
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
}
