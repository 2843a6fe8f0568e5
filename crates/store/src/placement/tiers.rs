//! Operator work on the tiers: registering dedicated databases, preparing a location, and
//! migrating every location a deployment has (`bulkhead migrate`).

use std::time::{Duration, Instant};

use bulkhead_auth::MasterKey;
use futures::StreamExt;
use sqlx::PgPool;

use crate::placement::location::{
    DatabaseName, Location, Placement, PoolRole, SchemaName, SHARED_SCHEMA,
};
use crate::placement::migrate;
use crate::{Store, StoreError};

impl Store {
    /// Registers (or re-registers) a dedicated database under `name`, with its owner and serving
    /// URLs sealed by `master` (never stored in the clear), and migrates it. Needs the owner role.
    pub async fn register_database(
        &self,
        master: &MasterKey,
        name: &DatabaseName,
        region: &str,
        owner_url: &str,
        app_url: &str,
    ) -> Result<(), StoreError> {
        let sealed_owner = master.seal_database_url(&PoolRole::Owner.binding(name), owner_url);
        let sealed_app = master.seal_database_url(&PoolRole::App.binding(name), app_url);
        sqlx::query(
            "INSERT INTO bulkhead.tenant_databases (name, region, sealed_owner_url, sealed_app_url) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET region = EXCLUDED.region, \
             sealed_owner_url = EXCLUDED.sealed_owner_url, sealed_app_url = EXCLUDED.sealed_app_url",
        )
        .bind(name.as_str())
        .bind(region)
        .bind(sealed_owner)
        .bind(sealed_app)
        .execute(self.pool())
        .await?;
        let location = Location {
            region: region.to_owned(),
            placement: Placement::Dedicated(name.clone()),
        };
        prepare_location(self, &location).await
    }

    /// The tenants placed in, or being moved to, dedicated database `name`.
    pub async fn database_users(
        &self,
        name: &DatabaseName,
    ) -> Result<Vec<bulkhead_core::TenantId>, StoreError> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM bulkhead.tenants WHERE database_name = $1 \
             UNION SELECT tenant_id FROM bulkhead.tenant_moves WHERE to_database = $1",
        )
        .bind(name.as_str())
        .fetch_all(self.pool())
        .await?;
        Ok(ids
            .into_iter()
            .map(bulkhead_core::TenantId::from_uuid)
            .collect())
    }

    /// Every place migrations apply to, for `bulkhead migrate`: each served region's shared
    /// schema, each schema-tier tenant's schema, each registered dedicated database.
    pub async fn migration_targets(&self) -> Result<Vec<MigrationTarget>, StoreError> {
        let router = self.router();
        let mut targets = vec![MigrationTarget {
            label: format!("shared ({})", router.topology.default_region),
            pool: router.topology.registry.clone(),
            kind: TargetKind::Shared,
        }];
        for (region, pool) in &router.topology.regions {
            targets.push(MigrationTarget {
                label: format!("shared ({region})"),
                pool: pool.clone(),
                kind: TargetKind::Shared,
            });
        }
        // Schema-tier tenants' schemas, and the target schemas of moves in progress.
        let schemas: Vec<(String, String)> = sqlx::query_as(
            "SELECT schema_name, region FROM bulkhead.tenants WHERE isolation_tier = 'schema' \
             UNION SELECT to_schema, to_region FROM bulkhead.tenant_moves WHERE to_schema IS NOT NULL \
             ORDER BY 1",
        )
        .fetch_all(self.pool())
        .await?;
        for (schema, region) in schemas {
            let Some(schema) = SchemaName::parse(&schema) else {
                return Err(StoreError::UnsafeConfiguration(
                    "registry row has an invalid schema name".into(),
                ));
            };
            if !router.serves(&region) {
                continue;
            }
            targets.push(MigrationTarget {
                label: format!("schema {schema}"),
                pool: router.region_pool(&region)?.clone(),
                kind: TargetKind::Schema(schema),
            });
        }
        let databases: Vec<(String, String)> =
            sqlx::query_as("SELECT name, region FROM bulkhead.tenant_databases ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        for (name, region) in databases {
            let Some(name) = DatabaseName::parse(&name) else {
                return Err(StoreError::UnsafeConfiguration(
                    "registry row has an invalid database name".into(),
                ));
            };
            if !router.serves(&region) {
                continue;
            }
            let location = Location {
                region,
                placement: Placement::Dedicated(name.clone()),
            };
            targets.push(MigrationTarget {
                label: format!("dedicated {name}"),
                pool: router.pool_for(&location).await?,
                kind: TargetKind::Dedicated,
            });
        }
        Ok(targets)
    }
}

/// Migrates `location` so a tenant can be placed there (idempotent): a tenant schema is created
/// from the migrations, a dedicated database migrated; a shared schema is migrated by
/// `bulkhead migrate` itself. Each target in one transaction.
pub(crate) async fn prepare_location(store: &Store, location: &Location) -> Result<(), StoreError> {
    let pool = store.router().pool_for(location).await?;
    match &location.placement {
        Placement::Shared => Ok(()),
        Placement::Schema(schema) => {
            migrate::apply_in_one_transaction(&pool, schema.as_str(), Some(schema)).await?;
            Ok(())
        }
        Placement::Dedicated(_) => {
            migrate::apply_in_one_transaction(&pool, SHARED_SCHEMA, None).await?;
            Ok(())
        }
    }
}

/// One place migrations apply to.
#[derive(Debug, Clone)]
pub struct MigrationTarget {
    /// What to call it in progress output and reports.
    pub label: String,
    pool: PgPool,
    kind: TargetKind,
}

#[derive(Debug, Clone)]
enum TargetKind {
    Shared,
    Schema(SchemaName),
    Dedicated,
}

/// What happened to one target.
#[derive(Debug)]
pub struct TargetOutcome {
    /// The target's label.
    pub label: String,
    /// Migrations applied (0: it was current), or why it failed (it is unchanged then).
    pub result: Result<u32, StoreError>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Applies pending migrations to one target: shared schemas through the migrator (as
/// `bulkhead migrate` always has), tenant schemas and dedicated databases each in one
/// transaction.
pub async fn migrate_target(target: &MigrationTarget) -> Result<u32, StoreError> {
    match &target.kind {
        TargetKind::Shared => {
            let before = pending(&target.pool, SHARED_SCHEMA).await.unwrap_or(0);
            migrate::run(&target.pool).await?;
            Ok(before)
        }
        TargetKind::Schema(schema) => {
            migrate::apply_in_one_transaction(&target.pool, schema.as_str(), Some(schema)).await
        }
        TargetKind::Dedicated => {
            migrate::apply_in_one_transaction(&target.pool, SHARED_SCHEMA, None).await
        }
    }
}

async fn pending(pool: &PgPool, schema: &str) -> Result<u32, StoreError> {
    let applied: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\"._sqlx_migrations WHERE success"
    ))
    .fetch_one(pool)
    .await?;
    let known = migrate::MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .count() as i64;
    Ok((known - applied).max(0) as u32)
}

/// Migrates every target with at most `parallel` at once; the shared schemas go first (a tenant
/// schema's migrations may rely on the shared ones). A failed target is reported and left as it
/// was (its transaction rolled back); the others go on. Re-running resumes: finished targets
/// have nothing left to apply. `on_done` sees each outcome as it happens (progress output).
pub async fn migrate_all(
    targets: Vec<MigrationTarget>,
    parallel: usize,
    mut on_done: impl FnMut(&TargetOutcome),
) -> Vec<TargetOutcome> {
    let (shared, rest): (Vec<_>, Vec<_>) = targets
        .into_iter()
        .partition(|t| matches!(t.kind, TargetKind::Shared));
    let mut outcomes = Vec::new();
    for batch in [shared, rest] {
        let mut running = futures::stream::iter(batch)
            .map(|target| async move {
                let started = Instant::now();
                let result = migrate_target(&target).await;
                TargetOutcome {
                    label: target.label,
                    result,
                    elapsed: started.elapsed(),
                }
            })
            .buffer_unordered(parallel.max(1));
        while let Some(outcome) = running.next().await {
            on_done(&outcome);
            outcomes.push(outcome);
        }
    }
    outcomes
}
