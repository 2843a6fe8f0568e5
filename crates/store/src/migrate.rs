//! Schema migrations, applied by the owner role.

use sqlx::{PgConnection, PgPool};

use crate::{roles, StoreError};

/// The migrations compiled into this binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// The schema every Bulkhead table lives in; its migration ledger lives there too.
pub const SCHEMA: &str = "bulkhead";

/// Ensures the application role exists, then applies pending migrations. Runs as the owner.
pub async fn run(owner: &PgPool) -> Result<(), StoreError> {
    let mut conn = owner.acquire().await?;
    roles::ensure_app_role(&mut conn).await?;
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
