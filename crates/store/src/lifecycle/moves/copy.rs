//! Copying a tenant's rows to the target location: as the mover role, table by table, then
//! catching up on what changed meanwhile, and the checksums that prove the copy whole.

use super::*;

pub(crate) async fn set_context(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<(), StoreError> {
    // The rows' text forms are compared across connections, possibly across clusters: every
    // setting that shapes them is pinned, transaction-locally. The copied rows are not counted
    // against the tenant's quotas again (their counters travel in `tenant_quotas`; migration
    // 0020 believes this marker from the owner and the mover only).
    sqlx::query(
        "SELECT set_config('bulkhead.tenant_id', $1, true), set_config('TimeZone', 'UTC', true), \
         set_config('bulkhead.quota_replay', 'on', true), \
         set_config('DateStyle', 'ISO, MDY', true), set_config('IntervalStyle', 'postgres', true), \
         set_config('bytea_output', 'hex', true), set_config('extra_float_digits', '1', true)",
    )
    .bind(tenant.uuid().to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets `frozen_since` on the tenant's row in its current location: the UPDATE waits for every
/// read-write transaction in flight (they hold `FOR SHARE` on it) and every later one sees it.
/// Then waits for job and delivery claims already running there (they do not take that lock):
/// a `SHARE` lock on the two queues is granted only once they have finished.
pub(crate) async fn freeze(
    owner: &Store,
    tenant: &Tenant,
    from: &Location,
) -> Result<(), StoreError> {
    let pool = owner.router().pool_for(from).await?;
    let schema = from.placement.schema();
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "UPDATE \"{schema}\".tenants SET frozen_since = COALESCE(frozen_since, now()) WHERE id = $1"
    ))
    .bind(tenant.id.uuid())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "LOCK TABLE \"{schema}\".jobs, \"{schema}\".webhook_deliveries IN SHARE MODE"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    owner.router().forget(tenant.id);
    Ok(())
}

/// The column list of `table` in `schema`, in the target's order (both locations come from the
/// same migrations; naming the columns keeps the copy exact even if their order differed).
pub(crate) async fn columns(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<String, StoreError> {
    let list: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
         WHERE attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
         AND attnum > 0 AND NOT attisdropped",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(&mut *conn)
    .await?;
    list.ok_or_else(|| {
        StoreError::UnsafeConfiguration(format!("table {schema}.{table} has no columns"))
    })
}

/// Deletes the tenant's rows from every table of `schema` on `conn` (in a transaction, tenant
/// context set), as the mover role: the only role the append-only audit triggers let delete.
pub(super) async fn delete_rows(
    conn: &mut PgConnection,
    schema: &str,
    tenant: TenantId,
) -> Result<u64, StoreError> {
    become_mover(conn).await?;
    let mut deleted = 0;
    for table in TENANT_TABLES.iter().rev() {
        deleted += sqlx::query(&format!(
            "DELETE FROM \"{schema}\".{table} WHERE tenant_id = $1"
        ))
        .bind(tenant.uuid())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    stop_being_mover(conn).await?;
    Ok(deleted)
}

/// Takes the mover role for the rest of the transaction's deletes (granted to the owner only
/// inside this transaction; [`stop_being_mover`] revokes it before commit).
pub(crate) async fn become_mover(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("GRANT bulkhead_tenant_mover TO CURRENT_USER")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SET LOCAL ROLE bulkhead_tenant_mover")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn stop_being_mover(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("RESET ROLE").execute(&mut *conn).await?;
    sqlx::query("REVOKE bulkhead_tenant_mover FROM CURRENT_USER")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn copy(
    owner: &Store,
    tenant: &Tenant,
    from: &Location,
    to: &Location,
    report: &(dyn Fn(MoveProgress) + Sync),
) -> Result<(), StoreError> {
    let router = owner.router();
    let source_pool = router.pool_for(from).await?;
    let target_pool = router.pool_for(to).await?;
    let (fs, ts) = (from.placement.schema(), to.placement.schema());
    let mut source = source_pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *source)
        .await?;
    set_context(&mut source, tenant.id).await?;
    let mut target = target_pool.begin().await?;
    set_context(&mut target, tenant.id).await?;
    // A copy left by an interrupted run is replaced, never added to.
    delete_rows(&mut target, ts, tenant.id).await?;
    for (done, table) in TENANT_TABLES.iter().enumerate() {
        let cols = columns(&mut target, ts, table).await?;
        copy_rows(
            &mut source,
            &mut target,
            (fs, ts),
            table,
            &cols,
            tenant.id,
            "",
            "",
        )
        .await?;
        report(MoveProgress::Table {
            step: MoveStep::Copy,
            table,
            done: done + 1,
            total: TENANT_TABLES.len(),
        });
    }
    commit_copy(owner, tenant.id, to, target, source).await
}

/// Copies the tenant's rows of `table` (those matching `filter`, SQL appended to the WHERE clause)
/// from the source schema into the target's (`schemas`): streamed by binary COPY into a
/// temporary table, then `INSERT … SELECT` with `on_conflict`, because COPY FROM cannot write a
/// table under row-level security and INSERT can (the policy checks every row against the
/// context). `filter` is built from validated text only: COPY takes no bind parameters.
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy_rows(
    source: &mut PgConnection,
    target: &mut PgConnection,
    (fs, ts): (&str, &str),
    table: &str,
    cols: &str,
    tenant: TenantId,
    filter: &str,
    on_conflict: &str,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "CREATE TEMP TABLE bulkhead_move_rows (LIKE \"{ts}\".{table}) ON COMMIT DROP"
    ))
    .execute(&mut *target)
    .await?;
    // The tenant id is a formatted UUID, never input.
    pipe(
        source,
        &format!(
            "COPY (SELECT {cols} FROM \"{fs}\".{table} WHERE tenant_id = '{}' {filter}) \
             TO STDOUT (FORMAT binary)",
            tenant.uuid()
        ),
        target,
        &format!("COPY bulkhead_move_rows ({cols}) FROM STDIN (FORMAT binary)"),
    )
    .await?;
    sqlx::query(&format!(
        "INSERT INTO \"{ts}\".{table} ({cols}) SELECT {cols} FROM bulkhead_move_rows {on_conflict}"
    ))
    .execute(&mut *target)
    .await?;
    sqlx::query("DROP TABLE bulkhead_move_rows")
        .execute(&mut *target)
        .await?;
    Ok(())
}

/// Streams `COPY … TO STDOUT` on `source` into `COPY … FROM STDIN` on `target`, chunk by chunk
/// (a table's rows are never all in memory). A failure on either side aborts the target's COPY,
/// and with it the target's transaction.
pub(super) async fn pipe(
    source: &mut PgConnection,
    copy_out: &str,
    target: &mut PgConnection,
    copy_in: &str,
) -> Result<u64, StoreError> {
    let mut sink = target.copy_in_raw(copy_in).await?;
    let mut rows = match source.copy_out_raw(copy_out).await {
        Ok(rows) => rows,
        Err(err) => {
            sink.abort("the source COPY failed").await.ok();
            return Err(err.into());
        }
    };
    while let Some(chunk) = rows.next().await {
        let sent = match chunk {
            Ok(chunk) => sink.send(chunk).await.map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = sent {
            drop(rows);
            sink.abort("the copy failed").await.ok();
            return Err(err.into());
        }
    }
    drop(rows);
    Ok(sink.finish().await?)
}

/// The primary-key columns of `table` in `schema`.
pub(crate) async fn primary_key(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, StoreError> {
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(a.attname) FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    if cols.is_empty() {
        return Err(StoreError::UnsafeConfiguration(format!(
            "table {schema}.{table} has no primary key"
        )));
    }
    Ok(cols)
}

/// Each row's MD5 over its text form, for one table of the tenant.
pub(super) async fn row_hashes(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    cols: &str,
    tenant: TenantId,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let hashes: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT md5(ROW({cols})::text) FROM \"{schema}\".{table} WHERE tenant_id = $1"
    ))
    .bind(tenant.uuid())
    .fetch_all(&mut *conn)
    .await?;
    Ok(hashes.into_iter().collect())
}

/// Under the freeze: makes the copy equal to the source by difference. Per table, rows only in
/// the copy whose primary key is gone at the source are deleted (children first, as the mover
/// role), then rows whose hash is only at the source are upserted by primary key (parents
/// first). Only hashes, keys and the changed rows travel; one transaction in the new location.
pub(super) async fn catch_up(
    owner: &Store,
    tenant: &Tenant,
    from: &Location,
    to: &Location,
    report: &(dyn Fn(MoveProgress) + Sync),
) -> Result<(), StoreError> {
    let router = owner.router();
    let source_pool = router.pool_for(from).await?;
    let target_pool = router.pool_for(to).await?;
    let (fs, ts) = (from.placement.schema(), to.placement.schema());
    let mut source = source_pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *source)
        .await?;
    set_context(&mut source, tenant.id).await?;
    let mut target = target_pool.begin().await?;
    set_context(&mut target, tenant.id).await?;
    // First every table's difference, from the one (final) snapshot.
    struct Delta {
        table: &'static str,
        cols: String,
        pk: Vec<String>,
        missing: Vec<String>,
        deleted: Vec<String>,
    }
    let mut deltas = Vec::new();
    for table in TENANT_TABLES {
        let cols = columns(&mut target, ts, table).await?;
        let pk = primary_key(&mut target, ts, table).await?;
        let (at_source, in_copy) = tokio::try_join!(
            row_hashes(&mut source, fs, table, &cols, tenant.id),
            row_hashes(&mut target, ts, table, &cols, tenant.id)
        )?;
        let missing: Vec<String> = at_source.difference(&in_copy).cloned().collect();
        let extra: Vec<String> = in_copy.difference(&at_source).cloned().collect();
        let pk_text = format!("ROW({})::text", pk.join(", "));
        // Of the rows only in the copy, those whose key is gone at the source were deleted
        // there; the others were updated (the upsert below rewrites them).
        let deleted = if extra.is_empty() {
            Vec::new()
        } else {
            let keys: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT {pk_text} FROM \"{ts}\".{table} WHERE tenant_id = $1 \
                 AND md5(ROW({cols})::text) = ANY($2)"
            ))
            .bind(tenant.id.uuid())
            .bind(&extra)
            .fetch_all(&mut *target)
            .await?;
            let kept: std::collections::HashSet<String> = sqlx::query_scalar(&format!(
                "SELECT {pk_text} FROM \"{fs}\".{table} WHERE tenant_id = $1 AND {pk_text} = ANY($2)"
            ))
            .bind(tenant.id.uuid())
            .bind(&keys)
            .fetch_all(&mut *source)
            .await?
            .into_iter()
            .collect();
            keys.into_iter().filter(|k| !kept.contains(k)).collect()
        };
        deltas.push(Delta {
            table,
            cols,
            pk,
            missing,
            deleted,
        });
    }
    // Deletions first, children first: a row deleted and re-created under another key at the
    // source (a role of the same name, say) must leave before its successor arrives.
    if deltas.iter().any(|d| !d.deleted.is_empty()) {
        become_mover(&mut target).await?;
        for delta in deltas.iter().rev().filter(|d| !d.deleted.is_empty()) {
            sqlx::query(&format!(
                "DELETE FROM \"{ts}\".{table} WHERE tenant_id = $1 AND ROW({pk})::text = ANY($2)",
                table = delta.table,
                pk = delta.pk.join(", ")
            ))
            .bind(tenant.id.uuid())
            .bind(&delta.deleted)
            .execute(&mut *target)
            .await?;
        }
        stop_being_mover(&mut target).await?;
    }
    // Then what is new or changed, parents first, by primary key.
    for (done, delta) in deltas.iter().enumerate() {
        let Delta {
            table,
            cols,
            pk,
            missing,
            ..
        } = delta;
        if !missing.is_empty() {
            // MD5 hex digests only: safe to write into COPY, which takes no parameters.
            if !missing
                .iter()
                .all(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(StoreError::UnsafeConfiguration(
                    "a row hash is not an MD5 digest".into(),
                ));
            }
            let wanted = missing
                .iter()
                .map(|h| format!("'{h}'"))
                .collect::<Vec<_>>()
                .join(",");
            let updates: Vec<String> = cols
                .split(", ")
                .filter(|c| !pk.iter().any(|p| p == c))
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect();
            let on_conflict = if updates.is_empty() {
                "DO NOTHING".to_owned()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            copy_rows(
                &mut source,
                &mut target,
                (fs, ts),
                table,
                cols,
                tenant.id,
                &format!("AND md5(ROW({cols})::text) IN ({wanted})"),
                &format!("ON CONFLICT ({}) {on_conflict}", pk.join(", ")),
            )
            .await?;
        }
        report(MoveProgress::Table {
            step: MoveStep::CatchUp,
            table,
            done: done + 1,
            total: TENANT_TABLES.len(),
        });
    }
    commit_copy(owner, tenant.id, to, target, source).await
}

/// Commits the copy at `to` (dropping the source's read snapshot), then routes the tenant's key
/// hashes there unless it is the shared tier, where keys are found without routes.
pub(super) async fn commit_copy(
    owner: &Store,
    tenant: TenantId,
    to: &Location,
    mut target: sqlx::Transaction<'static, sqlx::Postgres>,
    source: sqlx::Transaction<'static, sqlx::Postgres>,
) -> Result<(), StoreError> {
    let hashes: Vec<Vec<u8>> = sqlx::query_scalar(&format!(
        "SELECT key_hash FROM \"{}\".api_keys WHERE tenant_id = $1",
        to.placement.schema()
    ))
    .bind(tenant.uuid())
    .fetch_all(&mut *target)
    .await?;
    target.commit().await?;
    source.rollback().await?;
    if to.placement == Placement::Shared {
        return Ok(());
    }
    // Presented without a subdomain, the tenant's keys are found through these.
    sqlx::query(
        "INSERT INTO bulkhead.key_routes (key_hash, tenant_id) SELECT h, $2 FROM unnest($1::bytea[]) h \
         ON CONFLICT (key_hash) DO NOTHING",
    )
    .bind(hashes)
    .bind(tenant.uuid())
    .execute(owner.pool())
    .await?;
    Ok(())
}

/// Row count and checksum of every tenant table at `at`, from one snapshot. The checksum sums
/// slices of each row's MD5 (of its text form, with the settings that shape it pinned), so it
/// needs no sort and no collation.
pub(super) async fn checksums(
    owner: &Store,
    tenant: TenantId,
    at: &Location,
    report: &(dyn Fn(MoveProgress) + Sync),
) -> Result<BTreeMap<String, TableCheck>, StoreError> {
    let pool: PgPool = owner.router().pool_for(at).await?;
    let schema = at.placement.schema();
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    set_context(&mut tx, tenant).await?;
    let mut out = BTreeMap::new();
    for (done, table) in TENANT_TABLES.iter().enumerate() {
        // The target's column order defines the row text on both sides.
        let cols = columns(&mut tx, schema, table).await?;
        // Order-independent (no sort under the freeze): the sums of two 60-bit slices of every
        // row's MD5, with the count.
        let (rows, checksum): (i64, String) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint), 0)::text \
             || ':' || coalesce(sum(('x' || substr(h, 16, 15))::bit(60)::bigint), 0)::text \
             FROM (SELECT md5(ROW({cols})::text) AS h FROM \"{schema}\".{table} WHERE tenant_id = $1) r"
        ))
        .bind(tenant.uuid())
        .fetch_one(&mut *tx)
        .await?;
        out.insert((*table).to_owned(), TableCheck { rows, checksum });
        report(MoveProgress::Table {
            step: MoveStep::Verify,
            table,
            done: done + 1,
            total: TENANT_TABLES.len(),
        });
    }
    tx.rollback().await?;
    Ok(out)
}
