//! Provisioning a cluster Bulkhead controls itself (the embedded default and the test harness):
//! an owner role that is not superuser, and a database it owns.

use sqlx::PgConnection;

use crate::StoreError;

/// The role that owns Bulkhead's schema in a cluster Bulkhead provisions. Not superuser (a
/// superuser ignores row-level security even with FORCE); `CREATEROLE` so that migrations can
/// create the application role.
pub const OWNER_ROLE: &str = "bulkhead_owner";

/// Creates [`OWNER_ROLE`] if missing. Runs as the cluster's bootstrap superuser.
pub async fn ensure_owner_role(superuser: &mut PgConnection) -> Result<(), StoreError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(OWNER_ROLE)
            .fetch_one(&mut *superuser)
            .await?;
    if exists {
        let unsafe_owner: bool =
            sqlx::query_scalar("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = $1")
                .bind(OWNER_ROLE)
                .fetch_one(&mut *superuser)
                .await?;
        if unsafe_owner {
            return Err(StoreError::UnsafeConfiguration(format!(
                "`{OWNER_ROLE}` is superuser or has BYPASSRLS; FORCE row-level security would not bind it"
            )));
        }
        return Ok(());
    }
    // Role names cannot be bound; OWNER_ROLE is a constant.
    let create = format!("CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER CREATEROLE NOBYPASSRLS");
    match sqlx::query(&create).execute(&mut *superuser).await {
        Ok(_) => Ok(()),
        // Created concurrently: 42710 if the other CREATE had committed, 23505 if they raced.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42710") | Some("23505")) =>
        {
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// Creates database `name` owned by [`OWNER_ROLE`] if missing. `name` must be a plain identifier
/// (`[a-z_][a-z0-9_]*`); anything else is refused rather than quoted.
pub async fn ensure_database(superuser: &mut PgConnection, name: &str) -> Result<(), StoreError> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !plain {
        return Err(StoreError::UnsafeConfiguration(format!(
            "database name {name:?} is not a plain lowercase identifier"
        )));
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *superuser)
            .await?;
    if exists {
        return Ok(());
    }
    let create = format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}");
    match sqlx::query(&create).execute(&mut *superuser).await {
        Ok(_) => Ok(()),
        // Created concurrently: 42P04 if the other CREATE had committed, 23505 if they raced.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}
