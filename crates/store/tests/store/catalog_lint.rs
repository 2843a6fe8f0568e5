//! The database's own catalog, checked against the rules every tenant table must follow. A new
//! table that forgets RLS, FORCE, a policy or the tenant-first keys fails here.

use bulkhead_store::cluster::pg_roles::{verify_app_role, APP_ROLE};
use bulkhead_store::StoreError;
use bulkhead_test_support::TestDb;

// `key_routes`, `tenant_moves` and `tenant_deletions` name a tenant but are control plane
// (routing metadata and the operator's records, never tenant data; migrations 0011 and 0036):
// the application role may only read the first, and neither of the others. A tenant's deletion
// record outlives the tenant (its tombstone), so it cannot be a tenant table.

#[tokio::test]
async fn every_tenant_table_has_forced_rls_and_a_tenant_policy() {
    let db = TestDb::new().await;
    let owner = db.owner_pool().await;
    let tables: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
         WHERE n.nspname = 'bulkhead' AND c.relkind IN ('r', 'p') AND c.relname NOT IN ('key_routes', 'tenant_moves', 'tenant_deletions')",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert!(
        tables.len() >= 4,
        "expected the tenant tables, found {tables:?}"
    );
    for (table, rls, force) in &tables {
        assert!(rls, "{table}: ROW LEVEL SECURITY is not enabled");
        assert!(force, "{table}: ROW LEVEL SECURITY is not FORCEd");
        let policies: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT policyname::text, cmd::text, qual, with_check FROM pg_policies
             WHERE schemaname = 'bulkhead' AND tablename = $1",
        )
        .bind(table)
        .fetch_all(&owner)
        .await
        .unwrap();
        let isolation = policies
            .iter()
            .find(|(name, ..)| name == "tenant_isolation")
            .unwrap_or_else(|| panic!("{table}: no tenant_isolation policy"));
        let expected = "(tenant_id = (NULLIF(current_setting('bulkhead.tenant_id'::text, true), ''::text))::uuid)";
        assert_eq!(
            isolation.1, "ALL",
            "{table}: tenant_isolation must cover every command"
        );
        assert_eq!(isolation.2.as_deref(), Some(expected), "{table}: USING");
        assert_eq!(
            isolation.3.as_deref(),
            Some(expected),
            "{table}: WITH CHECK"
        );
        // Any other policy must be scoped to a definer function's own duration.
        for (name, _, qual, _) in policies
            .iter()
            .filter(|(name, ..)| name != "tenant_isolation")
        {
            let qual = qual.as_deref().unwrap_or_default();
            assert!(
                qual.contains("current_setting('bulkhead.definer'::text, true)"),
                "{table}: policy {name} is not confined to a definer function: {qual}"
            );
        }
    }
}

#[tokio::test]
async fn tenant_tables_key_on_tenant_first_and_not_null() {
    let db = TestDb::new().await;
    let owner = db.owner_pool().await;
    // Every primary key and unique constraint of a tenant table starts with tenant_id.
    let bad: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, con.conname::text
         FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'bulkhead' AND con.contype IN ('p', 'u', 'f') AND c.relname NOT IN ('key_routes', 'tenant_moves', 'tenant_deletions')
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
           AND (SELECT attname FROM pg_attribute WHERE attrelid = c.oid AND attnum = con.conkey[1]) <> 'tenant_id'",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert!(bad.is_empty(), "constraints not led by tenant_id: {bad:?}");
    let nullable: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'bulkhead' AND a.attname = 'tenant_id' AND NOT a.attnotnull AND c.relkind = 'r' AND c.relname NOT IN ('key_routes', 'tenant_moves', 'tenant_deletions')",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert!(nullable.is_empty(), "nullable tenant_id in {nullable:?}");
    // No sequence is shared between tenants: ids are made by the application.
    let sequences: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'bulkhead' AND c.relkind = 'S'",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(sequences, 0);
}

#[tokio::test]
async fn the_app_role_is_powerless_outside_rls() {
    let db = TestDb::new().await;
    let owner = db.owner_pool().await;
    let (superuser, bypass, createrole, createdb): (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = $1",
    )
    .bind(APP_ROLE)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert!(!superuser && !bypass && !createrole && !createdb);
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1",
    )
    .bind(APP_ROLE)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(owned, 0, "the app role must own nothing");
    // The registry is read-only for the app role.
    let app = db.app_pool(1).await;
    let err = sqlx::query("UPDATE bulkhead.tenants SET status = 'active'")
        .execute(&app)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501")
    );
    // The operator plane's tables (migration 0027) are the owner's alone: the serving role has
    // no privilege on them, so nothing reachable from a tenant route can read an operator key's
    // hash or the operator log.
    for table in [
        "operator_keys",
        "operator_audit_events",
        "operator_audit_leaves",
        "operator_audit_checkpoints",
    ] {
        let any: bool = sqlx::query_scalar(
            "SELECT bool_or(has_table_privilege($1, 'bulkhead.' || $2, p)) \
             FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p",
        )
        .bind(APP_ROLE)
        .bind(table)
        .fetch_one(&owner)
        .await
        .unwrap();
        assert!(!any, "the app role holds a privilege on {table}");
    }
    // Audit events are append-only for the app role.
    let err = sqlx::query("DELETE FROM bulkhead.audit_events")
        .execute(&app)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501")
    );
}

#[tokio::test]
async fn views_are_security_invoker_and_definer_functions_pin_search_path() {
    let db = TestDb::new().await;
    let owner = db.owner_pool().await;
    let unsafe_views: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'bulkhead' AND c.relkind IN ('v', 'm')
           AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert!(
        unsafe_views.is_empty(),
        "views without security_invoker: {unsafe_views:?}"
    );
    let definers: Vec<(String, Option<Vec<String>>, String)> = sqlx::query_as(
        "SELECT p.proname::text, p.proconfig, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'bulkhead' AND p.prosecdef",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    // Every function that runs as its owner is a deliberate, reviewed exception: adding one
    // means adding it here.
    let mut names: Vec<&str> = definers.iter().map(|(name, _, _)| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "api_key_lookup",
            "claim_jobs",
            "claim_webhook_deliveries",
            "quota_charge",
            "quota_charge_message",
            "quota_lock_bytes",
            "revoked_tokens_active",
            "route_key",
            "webhook_purge_finished"
        ],
        "unexpected SECURITY DEFINER functions"
    );
    for (name, config, source) in definers {
        let config = config.unwrap_or_default();
        assert!(
            config
                .iter()
                .any(|c| c == "search_path=pg_catalog, pg_temp"),
            "{name}: search_path not pinned: {config:?}"
        );
        // route_key writes only the routing index (control plane, no tenant rows, no RLS): it
        // needs no owner policy at all.
        if name == "route_key" {
            continue;
        }
        // The quota counters' writers and the webhook retention sweep have no owner policy
        // either: they act under `tenant_isolation`, in the tenant context of the transaction
        // (migration 0023), so there is no marker to confine.
        if matches!(
            name.as_str(),
            "quota_charge" | "quota_charge_message" | "quota_lock_bytes" | "webhook_purge_finished"
        ) {
            continue;
        }
        // Sets its marker first and clears it last, so the owner's policy holds only inside it.
        let set = source.find("set_config('bulkhead.definer', '");
        let clear = source.rfind("set_config('bulkhead.definer', '', true)");
        assert!(
            matches!((set, clear), (Some(s), Some(c)) if s < c),
            "{name}: does not confine its owner policy to its own run"
        );
    }
}

#[tokio::test]
async fn the_move_list_names_exactly_the_tenant_tables() {
    // A move copies TENANT_TABLES: a new tenant table missing from it would be left behind.
    let db = TestDb::new().await;
    let owner = db.owner_pool().await;
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
         WHERE n.nspname = 'bulkhead' AND c.relkind = 'r' AND c.relname NOT IN ('key_routes', 'tenant_moves', 'tenant_deletions')",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    tables.sort();
    let mut listed: Vec<String> = bulkhead_store::placement::location::TENANT_TABLES
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    listed.sort();
    assert_eq!(tables, listed);
}

#[tokio::test]
async fn the_app_role_may_add_a_tenant_data_key_but_never_change_or_remove_one() {
    // Migration 0039: the serving role reads tenants' sealed data keys and adds a missing one
    // (id and sealed key only); changing or deleting one would let it undo or fake a purge's
    // crypto-shredding.
    let db = TestDb::new().await;
    let owner = db.owner_pool().await;
    let table = "bulkhead.tenant_keys";
    let table_privilege = |privilege: &'static str| {
        let owner = owner.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT has_table_privilege($1, $2, $3)")
                .bind(APP_ROLE)
                .bind(table)
                .bind(privilege)
                .fetch_one(&owner)
                .await
                .unwrap()
        }
    };
    assert!(table_privilege("SELECT").await);
    for privilege in [
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
    ] {
        assert!(!table_privilege(privilege).await, "{privilege}");
    }
    for (column, insertable) in [("id", true), ("sealed", true), ("created_at", false)] {
        let granted: bool = sqlx::query_scalar("SELECT has_column_privilege($1, $2, $3, 'INSERT')")
            .bind(APP_ROLE)
            .bind(table)
            .bind(column)
            .fetch_one(&owner)
            .await
            .unwrap();
        assert_eq!(granted, insertable, "{column}");
        let updatable: bool =
            sqlx::query_scalar("SELECT has_column_privilege($1, $2, $3, 'UPDATE')")
                .bind(APP_ROLE)
                .bind(table)
                .bind(column)
                .fetch_one(&owner)
                .await
                .unwrap();
        assert!(!updatable, "{column}");
    }
}

/// The counter functions trust `pg_trigger_depth() >= 1` to mean "called by one of our
/// triggers"; a role that can create a table (a temporary one included) can fire a trigger of
/// its own and pass that guard. The serving role can create nothing, and is refused if it can.
#[tokio::test]
async fn the_serving_role_can_create_nothing_and_serving_is_refused_if_it_can() {
    let db = TestDb::new().await;
    let app = db.app_pool(1).await;
    for statement in [
        "CREATE TEMP TABLE fires_its_own_trigger (i int)",
        "CREATE FUNCTION pg_temp.own_trigger() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
        "CREATE TABLE public.fires_its_own_trigger (i int)",
        "CREATE SCHEMA its_own",
    ] {
        let err = sqlx::query(statement)
            .execute(&app)
            .await
            .expect_err(statement);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err}");
    }
    verify_app_role(&app)
        .await
        .expect("the migrated database is safe to serve");

    let superuser = db.superuser_pool().await;
    let name = &db.name;
    for (grant, says) in [
        (
            format!("GRANT TEMPORARY ON DATABASE {name} TO PUBLIC"),
            "temporary objects",
        ),
        (
            format!("GRANT CREATE ON DATABASE {name} TO {APP_ROLE}"),
            "create schemas",
        ),
        (
            "GRANT CREATE ON SCHEMA public TO PUBLIC".to_string(),
            "in schemas [\"public\"]",
        ),
        (
            format!("GRANT TRIGGER ON bulkhead.tenant_quotas TO {APP_ROLE}"),
            "create triggers on",
        ),
    ] {
        sqlx::query(&grant).execute(&superuser).await.unwrap();
        match verify_app_role(&app).await {
            Err(StoreError::UnsafeConfiguration(message)) => {
                assert!(message.contains(says), "{grant}: {message}")
            }
            other => panic!("{grant}: serving was not refused: {other:?}"),
        }
        let revoke = grant
            .replacen("GRANT", "REVOKE", 1)
            .replace(" TO ", " FROM ");
        sqlx::query(&revoke).execute(&superuser).await.unwrap();
    }
    verify_app_role(&app)
        .await
        .expect("safe again once revoked");
}
