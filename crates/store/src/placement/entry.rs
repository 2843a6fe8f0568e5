//! The door's entry in one round trip (migration 0047): [`Store::begin`] sends `BEGIN` and the
//! call of `tenant_enter` as one simple query, and holds the result as an [`EnteredTx`].
//!
//! [`Store::begin`]: crate::Store::begin

use bulkhead_core::TenantContext;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{Executor, PgPool, Postgres, TransactionManager};

use crate::placement::location::Location;
use crate::StoreError;

// [`Store::begin`]'s whole entry as one simple query: `BEGIN` (read-only, or a read-only
// snapshot, in the `BEGIN` itself) and the call of `tenant_enter` (migration 0047), which sets
// the same context as door.rs's `enter_statement` and raises when the anchor row is not what `location`
// says. One round trip instead of two; sqlx's extended protocol cannot pipeline, but a simple
// query may hold several statements. The simple query takes no bind parameters, so every value
// is written as a literal by [`sql_literal`]; each is also ours (a UUID, validated identifiers,
// a region the registry's CHECK constrains, a number of milliseconds), never request input.
pub(crate) fn begin_statement(
    ctx: &TenantContext,
    writes: bool,
    snapshot: bool,
    location: &Location,
    statement_timeout: Option<&str>,
) -> String {
    let begin = match (writes, snapshot) {
        (false, true) => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        (true, true) => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        (false, false) => "BEGIN READ ONLY",
        (true, false) => "BEGIN",
    };
    let schema = location.placement.schema();
    let (schema_name, database_name) = location.placement.columns();
    let optional = |value: Option<&str>| value.map_or_else(|| "NULL".to_owned(), sql_literal);
    format!(
        "{begin}; SELECT \"{schema}\".tenant_enter({tenant}, {search_path}, {timeout}, {writes}, \
         {writes}, {tier}, {schema_name}, {database_name}, {region})",
        tenant = sql_literal(&ctx.tenant_id().uuid().to_string()),
        // pg_temp last: a temporary table can never shadow a tenant table.
        search_path = sql_literal(&format!("\"{schema}\", pg_temp")),
        timeout = optional(statement_timeout),
        tier = sql_literal(location.placement.tier().as_str()),
        schema_name = optional(schema_name),
        database_name = optional(database_name),
        region = sql_literal(&location.region),
    )
}

/// `value` as a PostgreSQL string literal, quoted the way libpq's `PQescapeLiteral` does: quotes
/// doubled, and, when the value holds a backslash, an `E''` literal with backslashes doubled, so
/// the result reads back as `value` whatever `standard_conforming_strings` is. A NUL, which no
/// PostgreSQL text can hold, is dropped (none of [`begin_statement`]'s values can contain one).
pub fn sql_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A pooled connection inside a transaction that [`begin_statement`] began and entered. Why not
/// sqlx's `Transaction`: its custom `BEGIN` is what sends both statements, but when the second
/// one refuses, `Pool::begin_with` drops the connection back into the pool inside the aborted
/// transaction, which sqlx does not track (it counts the transaction only once `BEGIN`
/// succeeded), so the connection's next user would meet "current transaction is aborted". Here
/// the connection stays ours until it is rolled back. Dropped while open, it queues a rollback
/// exactly as sqlx's `Transaction` does, which the pool flushes before reusing it.
pub(crate) struct EnteredTx {
    conn: PoolConnection<Postgres>,
    open: bool,
    // Set from sending the entry until its answer is known: dropped then (the request was
    // cancelled mid-entry), the server may be inside a transaction that sqlx does not count,
    // with a tenant's context set, so the connection is closed instead of reused.
    entering: bool,
}

impl EnteredTx {
    /// Begins and enters on a connection of `pool`. `Ok(None)`: the location has no
    /// `tenant_enter` (a schema or database `bulkhead migrate` has not brought up to date, or one
    /// an older binary made during a rolling deploy), and the caller enters the older way.
    pub(crate) async fn begin(
        pool: PgPool,
        statement: String,
    ) -> Result<Option<EnteredTx>, StoreError> {
        let mut entry = EnteredTx {
            conn: pool.acquire().await?,
            open: false,
            entering: true,
        };
        let mut cleared = false;
        loop {
            entry.entering = true;
            let err =
                match PgTransactionManager::begin(&mut entry.conn, Some(statement.clone().into()))
                    .await
                {
                    Ok(()) => {
                        entry.entering = false;
                        entry.open = true;
                        return Ok(Some(entry));
                    }
                    Err(err) => err,
                };
            if !matches!(err, sqlx::Error::Database(_)) {
                // No answer (I/O): `entering` stays set and the drop closes the connection.
                return Err(err.into());
            }
            // The server answered: the transaction began and the entry refused, so it is
            // aborted. End it before the connection goes back (if that fails, `entering` stays
            // set and the drop closes it). A session-level tenant context on the connection
            // (BE003: `set_config(..., false)`, left by a bug elsewhere) is cleared in the same
            // simple query, after the ROLLBACK and outside any transaction, so that it stays
            // cleared (inside one, the ROLLBACK that ends a read would undo it) and so that,
            // behind a pooler in transaction mode, it is cleared on the server session that
            // carried it. Then entered again, once.
            let clear = !cleared && has_code(&err, "BE003");
            let end = if clear {
                "ROLLBACK; SELECT set_config('bulkhead.tenant_id', '', false)"
            } else {
                "ROLLBACK"
            };
            entry.conn.execute(end).await?;
            entry.entering = false;
            if clear {
                tracing::warn!(
                    "cleared a session-level tenant context left on a pooled connection"
                );
                cleared = true;
                continue;
            }
            if has_code(&err, "42883") {
                tracing::warn!(
                    "a tenant location lacks migration 0047 (tenant_enter): entering in two round \
                     trips; run `bulkhead migrate`"
                );
                return Ok(None);
            }
            return Err(entry_refusal(err));
        }
    }
}

impl EnteredTx {
    /// The connection, inside the entered transaction.
    pub(crate) fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.conn
    }

    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        PgTransactionManager::commit(&mut self.conn).await?;
        self.open = false;
        Ok(())
    }

    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        PgTransactionManager::rollback(&mut self.conn).await?;
        self.open = false;
        Ok(())
    }
}

fn has_code(err: &sqlx::Error, code: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

impl Drop for EnteredTx {
    fn drop(&mut self) {
        if self.entering {
            self.conn.close_on_drop();
        } else if self.open {
            PgTransactionManager::start_rollback(&mut self.conn);
        }
    }
}

/// What a refused entry means: `tenant_enter`'s own refusals (migration 0047), and a route gone
/// stale (the schema no longer exists: a move removed the old copy).
fn entry_refusal(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        match db.code().as_deref() {
            Some("BE001") | Some("42P01") | Some("3F000") => return StoreError::LocationMismatch,
            Some("BE002") => return StoreError::TenantMoving,
            _ => {}
        }
    }
    err.into()
}
