//! Schema migrations, applied by the owner role.

use sqlx::{PgConnection, PgPool};

use crate::cluster::pg_roles;
use crate::StoreError;

/// The migrations compiled into this binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// The schema every Bulkhead table lives in; its migration ledger lives there too.
pub const SCHEMA: &str = "bulkhead";

/// Ensures the application role exists, then applies pending migrations. Runs as the owner.
pub async fn run(owner: &PgPool) -> Result<(), StoreError> {
    let mut conn = owner.acquire().await?;
    pg_roles::ensure_app_role(&mut conn).await?;
    // The ledger table is created unqualified by sqlx, so pin this connection's search_path to our
    // schema for the duration of the run.
    sqlx::query("CREATE SCHEMA IF NOT EXISTS bulkhead")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT set_config('search_path', 'bulkhead', false)")
        .execute(&mut *conn)
        .await?;
    let result = MIGRATOR.run(&mut *conn).await;
    sqlx::query("RESET search_path").execute(&mut *conn).await?;
    result?;
    Ok(())
}

/// Whether every migration compiled into this binary has been applied successfully.
pub async fn is_current(conn: &mut PgConnection) -> Result<bool, StoreError> {
    let applied: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM bulkhead._sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| applied.binary_search(&m.version).is_ok()))
}

/// Creates `schema` if missing and applies every pending migration to it, in one transaction:
/// either the schema is fully at this binary's version afterwards, or nothing changed. `rewrite`
/// re-targets the migrations from `bulkhead` to `schema` (tenant schemas); a dedicated database
/// uses `bulkhead` itself. Returns how many migrations were applied. Runs as the owner; safe to
/// run concurrently on the same target (the second waits, then finds nothing to do).
pub async fn apply_in_one_transaction(
    owner: &PgPool,
    schema: &str,
    rewrite: Option<&crate::placement::location::SchemaName>,
) -> Result<u32, StoreError> {
    let mut tx = owner.begin().await?;
    let count = apply_on(&mut tx, schema, rewrite).await?;
    tx.commit().await?;
    Ok(count)
}

/// [`apply_in_one_transaction`] inside a transaction the caller already holds (onboarding creates
/// a tenant's schema and its registry row in one).
pub async fn apply_on(
    tx: &mut PgConnection,
    schema: &str,
    rewrite: Option<&crate::placement::location::SchemaName>,
) -> Result<u32, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bulkhead.migrate'), hashtext($1))")
        .bind(schema)
        .execute(&mut *tx)
        .await?;
    pg_roles::ensure_app_role(&mut *tx).await?;
    // Anything a migration leaves unqualified lands in the target schema, never elsewhere.
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(format!("\"{schema}\", pg_temp"))
        .execute(&mut *tx)
        .await?;
    // `schema` is SHARED_SCHEMA or a validated SchemaName: never input.
    let ledger_sql = format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; \
         CREATE TABLE IF NOT EXISTS \"{schema}\"._sqlx_migrations ( \
             version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, \
             checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)"
    );
    sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(&ledger_sql)).await?;
    let ledger: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT version, checksum FROM \"{schema}\"._sqlx_migrations WHERE success ORDER BY version"
    ))
    .fetch_all(&mut *tx)
    .await?;
    // As the migrator does for the shared schema: an applied migration that has changed since
    // is refused, never silently taken as applied.
    for (version, checksum) in &ledger {
        let changed = MIGRATOR
            .iter()
            .find(|m| m.version == *version)
            .is_some_and(|m| *m.checksum != **checksum);
        if changed {
            return Err(StoreError::UnsafeConfiguration(format!(
                "migration {version} was applied to {schema} but has changed since"
            )));
        }
    }
    let applied: Vec<i64> = ledger.iter().map(|(v, _)| *v).collect();
    let mut count = 0;
    for migration in MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        if applied.binary_search(&migration.version).is_ok() {
            continue;
        }
        let started = std::time::Instant::now();
        let sql = match rewrite {
            Some(schema) => crate::placement::location::rewrite_for_schema(&migration.sql, schema),
            None => migration.sql.to_string(),
        };
        // Through `Executor::execute` on the connection rather than `RawSql::execute`: the latter's
        // future is not provably `Send` (a higher-ranked lifetime limitation of rustc), which
        // kept onboarding out of `Send` futures such as the operator API's handlers.
        sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(&sql)).await?;
        sqlx::query(&format!(
            "INSERT INTO \"{schema}\"._sqlx_migrations \
             (version, description, success, checksum, execution_time) VALUES ($1, $2, true, $3, $4)"
        ))
        .bind(migration.version)
        .bind(&*migration.description)
        .bind(&*migration.checksum)
        .bind(started.elapsed().as_nanos() as i64)
        .execute(&mut *tx)
        .await?;
        count += 1;
    }
    Ok(count)
}

/// The number of migrations compiled into this binary.
pub fn latest_version() -> i64 {
    MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}
