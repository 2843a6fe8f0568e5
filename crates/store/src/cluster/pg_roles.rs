//! The database roles Bulkhead relies on, and the checks that they are what we think they are.

use sqlx::{PgConnection, PgPool};

use crate::StoreError;

/// The role requests are served through. Owns nothing; not superuser; `NOBYPASSRLS`.
pub const APP_ROLE: &str = "bulkhead_app";

/// Creates the application role if it does not exist (needs `CREATEROLE` on the owner), and
/// refuses to go on if an existing role of that name has powers it must not have.
pub async fn ensure_app_role(owner: &mut PgConnection) -> Result<(), StoreError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(APP_ROLE)
            .fetch_one(&mut *owner)
            .await?;
    if !exists {
        // Role names cannot be bound parameters; APP_ROLE is a constant, never input.
        let create = format!(
            "CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"
        );
        match sqlx::query(&create).execute(&mut *owner).await {
            Ok(_) => {}
            // Another process created it between our check and our CREATE: 42710 if it had
            // committed, 23505 (on pg_authid) if both CREATEs raced.
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("42710") | Some("23505")) => {}
            Err(err) => {
                return Err(StoreError::UnsafeConfiguration(format!(
                    "the application role `{APP_ROLE}` does not exist and could not be created \
                     (the migration role needs CREATEROLE, or create it yourself: CREATE ROLE \
                     {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS): {err}"
                )))
            }
        }
    }
    check_role_attributes(owner, APP_ROLE).await
}

async fn check_role_attributes(conn: &mut PgConnection, role: &str) -> Result<(), StoreError> {
    let (superuser, bypass_rls): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    if superuser || bypass_rls {
        return Err(StoreError::UnsafeConfiguration(format!(
            "role `{role}` is superuser or has BYPASSRLS: row-level security would not apply to it"
        )));
    }
    // A member of another role could SET ROLE to it (the owner, or a role with BYPASSRLS).
    let memberships: Vec<String> = sqlx::query_scalar(
        "SELECT g.rolname::text FROM pg_auth_members m \
         JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member \
         WHERE r.rolname = $1",
    )
    .bind(role)
    .fetch_all(&mut *conn)
    .await?;
    if !memberships.is_empty() {
        return Err(StoreError::UnsafeConfiguration(format!(
            "role `{role}` is a member of {memberships:?}: it could SET ROLE past row-level security"
        )));
    }
    Ok(())
}

/// Checks, through the application pool itself, that requests will run under row-level security:
/// the connected role is not superuser, has no `BYPASSRLS`, owns no table in the database
/// (owners are subject to FORCE RLS, but an owner can turn it off), and can create nothing: no
/// temporary object, schema, object in a schema or trigger on a table (a trigger of its own
/// would pass the definer functions' depth guard).
pub async fn verify_app_role(app: &PgPool) -> Result<(), StoreError> {
    let mut conn = app.acquire().await?;
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *conn)
        .await?;
    check_role_attributes(&mut conn, &role).await?;
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
         WHERE r.rolname = current_user AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if owned > 0 {
        return Err(StoreError::UnsafeConfiguration(format!(
            "the serving role `{role}` owns {owned} relations; serve through a role that owns nothing"
        )));
    }
    // A role that can create objects can create a table with a trigger of its own, whose code
    // runs at trigger depth 1, past the depth guard of the counter functions: no temporary
    // objects (migration 0044 revokes `PUBLIC`'s default), no schema, nothing in any schema, and
    // no existing trigger function attached to a table (TRIGGER privilege). One query.
    let (database, temporary, create, schemas, triggerable): (
        String,
        bool,
        bool,
        Vec<String>,
        Vec<String>,
    ) = sqlx::query_as(
        "SELECT current_database()::text, \
                has_database_privilege(current_user, current_database(), 'TEMPORARY'), \
                has_database_privilege(current_user, current_database(), 'CREATE'), \
                ARRAY(SELECT nspname::text FROM pg_namespace \
                      WHERE has_schema_privilege(current_user, oid, 'CREATE') ORDER BY 1), \
                ARRAY(SELECT c.oid::regclass::text FROM pg_class c \
                      JOIN pg_namespace n ON n.oid = c.relnamespace \
                      WHERE c.relkind IN ('r', 'p', 'f', 'v') \
                        AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                        AND has_table_privilege(current_user, c.oid, 'TRIGGER') \
                      ORDER BY 1 LIMIT 5)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let refusal = if temporary {
        Some(format!(
            "may create temporary objects in database `{database}`; as its owner run: \
             REVOKE TEMPORARY ON DATABASE \"{database}\" FROM PUBLIC, {role}"
        ))
    } else if create {
        Some(format!(
            "may create schemas in database `{database}`; revoke CREATE ON DATABASE \
             \"{database}\" from it and from PUBLIC"
        ))
    } else if !schemas.is_empty() {
        Some(format!(
            "may create objects in schemas {schemas:?}; revoke CREATE on them from it and from PUBLIC"
        ))
    } else if !triggerable.is_empty() {
        Some(format!(
            "may create triggers on {triggerable:?}; revoke TRIGGER"
        ))
    } else {
        None
    };
    if let Some(refusal) = refusal {
        return Err(StoreError::UnsafeConfiguration(format!(
            "the serving role `{role}` {refusal}"
        )));
    }
    Ok(())
}
