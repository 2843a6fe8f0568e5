//! Tenant deletion with verifiable erasure (issue 19): scheduling suspends at once and is
//! idempotent, cancelling restores, a move in progress is a 409 naming it, and after the purge
//! no table of any location in the catalog — shared tables, the tenant's schema, its dedicated
//! database, the other region — holds the tenant's id, while another tenant's rows are untouched
//! and the operator log holds the erasure receipt.

use bulkhead_core::{Clock, TenantId};
use bulkhead_server::service::deletion;
use bulkhead_store::hooks::{self, HookPoint};
use bulkhead_store::lifecycle::moves::{self, MoveOptions, MoveStep};
use bulkhead_store::Placement;
use bulkhead_test_support::{
    spawn_app, spawn_app_with, AppOptions, TestApp, TestDb, TestTenant, TestTier,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::regions::{onboard_in_region, us_and_eu};
use crate::helpers::{call, create_session};
use crate::operator::{operator_key, operator_log, ALL};
use crate::tiers::row_counts;

/// Tables that keep the tenant's id on purpose: the operator's own records. The operator log
/// (its events name the tenant they acted on, and the erasure receipt is one of them) and the
/// deletion's tombstone (id, times, counts, checkpoint).
const KEPT: &[&str] = &[
    "operator_audit_events",
    "operator_audit_leaves",
    "operator_audit_checkpoints",
    "tenant_deletions",
];

/// Every base table of every schema of `pool`'s database with a row whose text names `tenant`
/// (its UUID, its 32-hex form or its `tnt_…` form), and every schema named after it; the
/// operator's own records ([`KEPT`]) aside. `pool` is a superuser's: RLS hides nothing.
async fn traces_of(pool: &PgPool, tenant: TenantId) -> Vec<String> {
    let patterns = vec![
        format!("%{}%", tenant.uuid()),
        format!("%{}%", tenant.uuid().simple()),
        format!("%{tenant}%"),
    ];
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_type = 'BASE TABLE' \
         AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() > 20, "the scan sees the catalog: {tables:?}");
    let mut found = Vec::new();
    for (schema, table) in tables {
        if schema == "bulkhead" && KEPT.contains(&table.as_str()) {
            continue;
        }
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{schema}\".\"{table}\" t WHERE t::text ILIKE ANY($1)"
        ))
        .bind(&patterns)
        .fetch_one(pool)
        .await
        .unwrap();
        if n > 0 {
            found.push(format!("{schema}.{table}: {n}"));
        }
    }
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname ILIKE ANY($1)")
            .bind(&patterns)
            .fetch_all(pool)
            .await
            .unwrap();
    found.extend(schemas.into_iter().map(|s| format!("schema {s}")));
    found
}

async fn superuser(db: &TestDb, database: Option<&str>) -> PgPool {
    let options = match database {
        Some(name) => db.superuser_options_for(name),
        None => db.superuser_options.clone(),
    };
    PgPool::connect_with(options).await.unwrap()
}

async fn session_status(app: &TestApp, tenant: &TestTenant) -> StatusCode {
    call(
        app,
        &tenant.slug,
        &tenant.key,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "agent-1", "title": "probe" })),
    )
    .await
    .status()
}

fn deletion_path(tenant: &str) -> String {
    format!("/operator/v1/tenants/{tenant}/deletion")
}

#[tokio::test]
async fn scheduling_suspends_at_once_is_idempotent_and_cancelling_restores_the_previous_status() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    let (_, writer) = operator_key(&op, &["tenants:read", "tenants:write"]).await;
    let acme = app.create_tenant("acme-del").await;
    assert_eq!(session_status(&app, &acme).await, StatusCode::CREATED);

    // Without `tenants:delete`: 403 naming it, and nothing changes.
    let (status, body) = op
        .request(
            Method::POST,
            &deletion_path("acme-del"),
            Some(&writer),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.to_string().contains("tenants:delete"), "{body}");
    let (status, _) = op
        .request(
            Method::DELETE,
            &deletion_path("acme-del"),
            Some(&writer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = op
        .request(
            Method::POST,
            &format!("{}/purge", deletion_path("acme-del")),
            Some(&writer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(session_status(&app, &acme).await, StatusCode::CREATED);

    // Out-of-range grace periods and unknown fields are refused before anything changes.
    for bad in [
        json!({ "grace_period": -1 }),
        json!({ "grace_period": 7_776_001 }),
        json!({ "grace": 5 }),
    ] {
        let (status, body) = op
            .request(
                Method::POST,
                &deletion_path("acme-del"),
                Some(&key),
                Some(bad),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    assert_eq!(session_status(&app, &acme).await, StatusCode::CREATED);

    // Scheduled: suspended at once, every credential refused.
    let (status, first) = op
        .request(
            Method::POST,
            &deletion_path("acme-del"),
            Some(&key),
            Some(json!({ "grace_period": 3600 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["state"], "scheduled");
    assert_eq!(first["previous_status"], "active");
    assert_eq!(first["grace_period"], 3600);
    assert_eq!(session_status(&app, &acme).await, StatusCode::FORBIDDEN);
    let (_, shown) = op
        .request(
            Method::GET,
            "/operator/v1/tenants/acme-del",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(shown["status"], "suspended");

    // A second schedule (even with another grace period) is the first, unchanged.
    let (status, second) = op
        .request(
            Method::POST,
            &deletion_path("acme-del"),
            Some(&key),
            Some(json!({ "grace_period": 60 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["scheduled_at"], first["scheduled_at"]);
    assert_eq!(second["grace_period"], 3600);
    // No body at all is the default grace period (and, here, the same schedule).
    let (status, third) = op
        .request(Method::POST, &deletion_path("acme-del"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{third}");

    // A tenant being deleted is not reactivated behind the deletion's back.
    let (status, body) = op
        .request(
            Method::POST,
            "/operator/v1/tenants/acme-del/activate",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(session_status(&app, &acme).await, StatusCode::FORBIDDEN);
    // Nor by a change that also asks for something allowed: nothing of it is applied.
    let (status, body) = op
        .request(
            Method::PATCH,
            "/operator/v1/tenants/acme-del",
            Some(&key),
            Some(json!({ "plan": "enterprise", "status": "active" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, shown) = op
        .request(
            Method::GET,
            "/operator/v1/tenants/acme-del",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        (&shown["plan"], &shown["status"]),
        (&json!("standard"), &json!("suspended"))
    );

    // Cancelled: active again, the record gone; a second cancel has nothing to cancel.
    let (status, body) = op
        .request(Method::DELETE, &deletion_path("acme-del"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(session_status(&app, &acme).await, StatusCode::CREATED);
    let (status, _) = op
        .request(Method::DELETE, &deletion_path("acme-del"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = op
        .request(Method::GET, &deletion_path("acme-del"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Purging what is not scheduled is refused.
    let (status, body) = op
        .request(
            Method::POST,
            &format!("{}/purge", deletion_path("acme-del")),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(session_status(&app, &acme).await, StatusCode::CREATED);

    // A tenant suspended before its deletion stays suspended when it is cancelled.
    let (status, _) = op
        .request(
            Method::POST,
            "/operator/v1/tenants/acme-del/suspend",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, scheduled) = op
        .request(Method::POST, &deletion_path("acme-del"), Some(&key), None)
        .await;
    assert_eq!(scheduled["previous_status"], "suspended");
    assert_eq!(scheduled["grace_period"], 604_800);
    let (status, _) = op
        .request(Method::DELETE, &deletion_path("acme-del"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session_status(&app, &acme).await, StatusCode::FORBIDDEN);

    // An operator's suspension during the grace period outlives a cancel (review L2): the
    // cancel restores what the operator last set, not what the tenant was when scheduled.
    for step in ["activate", "deletion", "suspend"] {
        let path = format!("/operator/v1/tenants/acme-del/{step}");
        let (status, body) = op.request(Method::POST, &path, Some(&key), None).await;
        assert!(status.is_success(), "{step}: {body}");
    }
    let (status, _) = op
        .request(Method::DELETE, &deletion_path("acme-del"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session_status(&app, &acme).await, StatusCode::FORBIDDEN);

    // A tenant left active with a deletion scheduled (a cancel whose reactivation committed and
    // whose record did not) is suspended by the purge itself, then purged.
    let (status, _) = op
        .request(Method::POST, &deletion_path("acme-del"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let su = superuser(&app.db, None).await;
    sqlx::query("UPDATE bulkhead.tenants SET status = 'active' WHERE slug = 'acme-del'")
        .execute(&su)
        .await
        .unwrap();
    let purge = format!("{}/purge", deletion_path("acme-del"));
    let (status, body) = op.request(Method::POST, &purge, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deletion"]["state"], "purged", "{body}");

    // The schedule is the owner's: the serving role can neither read nor write it.
    for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        let held: bool = sqlx::query_scalar(
            "SELECT has_table_privilege('bulkhead_app', 'bulkhead.tenant_deletions', $1)",
        )
        .bind(privilege)
        .fetch_one(&su)
        .await
        .unwrap();
        assert!(
            !held,
            "the serving role holds {privilege} on tenant_deletions"
        );
    }

    // Every action and refusal is in the operator log.
    let log = operator_log(&op, &key).await;
    let count = |action: &str, outcome: &str| {
        log.iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert!(count("tenant.delete.schedule", "success") >= 4, "{log:#?}");
    assert_eq!(count("tenant.delete.cancel", "success"), 3);
    assert_eq!(count("tenant.delete.cancel", "failure"), 1);
    assert!(count("operator.forbidden", "blocked") >= 3);
}

#[tokio::test]
async fn a_tenant_being_moved_is_not_scheduled_and_a_tenant_being_deleted_is_not_moved() {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    let acme = app.create_tenant("moving-co").await;
    create_session(&app, &acme, "before").await;
    let stopped = moves::move_tenant(
        &op.owner,
        acme.id,
        Placement::Schema(bulkhead_store::placement::location::SchemaName::for_tenant(
            acme.id,
        )),
        MoveOptions {
            stop_after: Some(MoveStep::Copy),
            ..MoveOptions::default()
        },
    )
    .await;
    assert!(stopped.is_err());
    let su = superuser(&app.db, None).await;
    let move_id: uuid::Uuid =
        sqlx::query_scalar("SELECT move_id FROM bulkhead.tenant_moves WHERE tenant_id = $1")
            .bind(acme.id.uuid())
            .fetch_one(&su)
            .await
            .unwrap();
    let (status, body) = op
        .request(
            Method::POST,
            &deletion_path("moving-co"),
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&move_id.to_string()),
        "{body}"
    );
    // Nothing changed: still served, nothing scheduled.
    assert_eq!(session_status(&app, &acme).await, StatusCode::CREATED);
    let (status, _) = op
        .request(Method::GET, &deletion_path("moving-co"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    moves::abandon_move(&op.owner, acme.id).await.unwrap();
    let (status, body) = op
        .request(
            Method::POST,
            &deletion_path("moving-co"),
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let refused = moves::move_tenant(
        &op.owner,
        acme.id,
        Placement::Schema(bulkhead_store::placement::location::SchemaName::for_tenant(
            acme.id,
        )),
        MoveOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("deletion"), "{refused}");
}

/// Puts some of everything in `tenant`: sessions, a key, audit events.
async fn fill(app: &TestApp, tenant: &TestTenant) {
    for title in ["one", "two"] {
        create_session(app, tenant, title).await;
    }
    let created = call(
        app,
        &tenant.slug,
        &tenant.key,
        Method::POST,
        "/v1/api-keys",
        Some(json!({ "scopes": ["sessions:read"] })),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_purge_leaves_no_trace_in_any_tier_and_another_tenant_untouched() {
    let app = spawn_app_with(AppOptions::default()).await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    let bystander = app.create_tenant_in("bystander", TestTier::Shared).await;
    fill(&app, &bystander).await;
    let store = app.state.store().clone();
    let before = row_counts(&store, bystander.id).await;
    let su = superuser(&app.db, None).await;

    for (slug, tier) in [
        ("gone-shared", TestTier::Shared),
        ("gone-schema", TestTier::Schema),
        ("gone-dedicated", TestTier::Dedicated),
    ] {
        let tenant = app.create_tenant_in(slug, tier).await;
        fill(&app, &tenant).await;
        let location = store.location_of(tenant.id).await.unwrap();
        let dedicated = match &location.placement {
            Placement::Dedicated(name) => Some(name.as_str().to_owned()),
            _ => None,
        };
        // The scan finds the tenant before the purge: it can fail.
        let mut seen = traces_of(&su, tenant.id).await;
        if let Some(name) = &dedicated {
            seen.extend(traces_of(&superuser(&app.db, Some(name)).await, tenant.id).await);
        }
        assert!(
            seen.iter().any(|t| t.contains("agent_sessions")),
            "{slug}: {seen:?}"
        );

        let (status, body) = op
            .request(
                Method::POST,
                &deletion_path(slug),
                Some(&key),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(
            session_status(&app, &tenant).await,
            StatusCode::FORBIDDEN,
            "{slug}"
        );
        let (status, purged) = op
            .request(
                Method::POST,
                &format!("{}/purge", deletion_path(slug)),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{slug}: {purged}");
        assert_eq!(purged["deletion"]["state"], "purged");
        let receipt = &purged["receipt"];
        assert_eq!(receipt["tenant_id"], tenant.id.to_string());
        assert_eq!(receipt["tables"]["agent_sessions"], 2, "{receipt:#}");
        assert_eq!(receipt["tables"]["api_keys"], 2, "{receipt:#}");
        assert!(
            receipt["tables"]["tenants"].as_u64().unwrap() >= 1,
            "{receipt:#}"
        );
        assert!(
            receipt["tables"]["audit_events"].as_u64().unwrap() > 0,
            "{receipt:#}"
        );
        let checkpoint = &receipt["tenant_audit_log"]["last_checkpoint"];
        assert!(
            checkpoint["tree_size"].as_u64().unwrap() > 0,
            "{checkpoint:#}"
        );
        assert!(checkpoint["signature"].is_string(), "{checkpoint:#}");

        // Nothing of it anywhere: the registry database (shared tables, every schema) and its
        // dedicated database.
        let left = traces_of(&su, tenant.id).await;
        assert!(left.is_empty(), "{slug} left traces: {left:?}");
        if let Some(name) = &dedicated {
            let left = traces_of(&superuser(&app.db, Some(name)).await, tenant.id).await;
            assert!(
                left.is_empty(),
                "{slug} left traces in its database: {left:?}"
            );
        }
        // Its subdomain is unknown, its key opens nothing, the slug is free again.
        assert_eq!(
            session_status(&app, &tenant).await,
            StatusCode::NOT_FOUND,
            "{slug}"
        );
        let bare = app
            .client
            .get(app.url("/v1/sessions"))
            .bearer_auth(&tenant.key)
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status(), StatusCode::UNAUTHORIZED, "{slug}");
        let (status, _) = op
            .request(
                Method::GET,
                &format!("/operator/v1/tenants/{slug}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The receipt is in the operator log; the tombstone answers by id; a second purge is
        // the first.
        let log = operator_log(&op, &key).await;
        let receipts: Vec<&Value> = log
            .iter()
            .filter(|e| {
                e["action"] == "tenant.erasure_receipt" && e["resource_id"] == tenant.id.to_string()
            })
            .collect();
        assert_eq!(receipts.len(), 1, "{log:#?}");
        assert_eq!(receipts[0]["metadata"]["tables"], receipt["tables"]);
        let by_id = deletion_path(&tenant.id.to_string());
        let (status, tomb) = op.request(Method::GET, &by_id, Some(&key), None).await;
        assert_eq!(status, StatusCode::OK, "{tomb}");
        assert_eq!(tomb["state"], "purged");
        let (status, again) = op
            .request(Method::POST, &format!("{by_id}/purge"), Some(&key), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert!(again["receipt"].is_null());
    }
    // The other tenant: every row still there, still served.
    assert_eq!(row_counts(&store, bystander.id).await, before);
    assert_eq!(session_status(&app, &bystander).await, StatusCode::CREATED);
    // The operator log still verifies with the receipts in it.
    let (status, _) = op
        .request(
            Method::POST,
            "/operator/v1/audit/checkpoints",
            Some(&key),
            None,
        )
        .await;
    assert!(status.is_success());
}

#[tokio::test]
async fn a_purge_in_two_regions_leaves_nothing_of_the_eu_tenant_in_either_database() {
    let us = TestDb::new().await;
    let eu = TestDb::new().await;
    let owner = us_and_eu(us.owner_store().await, eu.owner_pool().await);
    let app_store = us_and_eu(us.app_store().await, eu.app_pool(5).await);
    let app = spawn_app_with(AppOptions {
        db: Some(us.clone()),
        store: Some(app_store),
        ..AppOptions::default()
    })
    .await;
    let eu_tenant = onboard_in_region(&owner, "eu-gone", "eu").await;
    let eu_stays = onboard_in_region(&owner, "eu-stays", "eu").await;
    let us_stays = onboard_in_region(&owner, "us-stays", "us").await;
    for t in [&eu_tenant, &eu_stays, &us_stays] {
        fill(&app, t).await;
    }
    let store = app.state.store().clone();
    let before = (
        row_counts(&store, eu_stays.id).await,
        row_counts(&store, us_stays.id).await,
    );
    let us_su = superuser(&us, None).await;
    let eu_su = PgPool::connect_with(eu.superuser_options.clone())
        .await
        .unwrap();
    assert!(!traces_of(&eu_su, eu_tenant.id).await.is_empty());

    let found = owner.tenant_by_id(eu_tenant.id).await.unwrap().unwrap();
    deletion::schedule(&owner, &found, None, "cli:test")
        .await
        .unwrap();
    // Another process (the app) sees the suspension within its registry cache's lifetime.
    tokio::time::sleep(
        app.state.config().caches.registry_ttl + std::time::Duration::from_millis(200),
    )
    .await;
    assert_eq!(
        session_status(&app, &eu_tenant).await,
        StatusCode::FORBIDDEN
    );
    let key = app.state.audit().key().clone();
    let done = deletion::purge(&owner, &key, &Clock::system(), eu_tenant.id, "cli:test")
        .await
        .unwrap();
    let receipt = done.receipt.unwrap();
    assert_eq!(receipt["region"], "eu");
    assert_eq!(receipt["tables"]["agent_sessions"], 2, "{receipt:#}");

    assert_eq!(traces_of(&us_su, eu_tenant.id).await, Vec::<String>::new());
    assert_eq!(traces_of(&eu_su, eu_tenant.id).await, Vec::<String>::new());
    assert_eq!(
        (
            row_counts(&store, eu_stays.id).await,
            row_counts(&store, us_stays.id).await
        ),
        before
    );
}

#[tokio::test]
async fn an_unreachable_dedicated_database_or_a_crash_leaves_the_tenant_suspended_and_the_purge_resumes(
) {
    let app = spawn_app().await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    let tenant = app.create_tenant_in("far-away", TestTier::Dedicated).await;
    fill(&app, &tenant).await;
    let location = app.state.store().location_of(tenant.id).await.unwrap();
    let Placement::Dedicated(name) = location.placement else {
        panic!("not dedicated");
    };
    let su = superuser(&app.db, None).await;
    let (status, _) = op
        .request(
            Method::POST,
            &deletion_path("far-away"),
            Some(&key),
            Some(json!({ "grace_period": 0 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // The database stops answering: the purge waits, the tenant stays suspended and routed.
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .execute(&su)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name.as_str())
        .execute(&su)
        .await
        .unwrap();
    let purge = format!("{}/purge", deletion_path("far-away"));
    let (status, body) = op.request(Method::POST, &purge, Some(&key), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, record) = op
        .request(Method::GET, &deletion_path("far-away"), Some(&key), None)
        .await;
    assert_eq!(record["state"], "purging", "{record}");
    assert!(record["last_error"].is_string(), "{record}");
    // Not cancellable any more, and still refused.
    let (status, _) = op
        .request(Method::DELETE, &deletion_path("far-away"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Nor changed: a 409 saying why, never the frozen location's "retry later" 503; a
    // suspension, which it already has, is answered as it is.
    let (status, body) = op
        .request(
            Method::POST,
            "/operator/v1/tenants/far-away/suspend",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("suspended")),
        "{body}"
    );
    for (method, path, body) in [
        (Method::POST, "/operator/v1/tenants/far-away/activate", None),
        (
            Method::PATCH,
            "/operator/v1/tenants/far-away",
            Some(json!({ "rate_limit": { "requests_per_minute": 600 } })),
        ),
        (
            Method::PATCH,
            "/operator/v1/tenants/far-away",
            Some(json!({ "plan": "enterprise" })),
        ),
    ] {
        let (status, body) = op.request(method, path, Some(&key), body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {body}");
    }
    let (_, shown) = op
        .request(
            Method::GET,
            "/operator/v1/tenants/far-away",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(shown["status"], "suspended");
    // The background pass retries it and fails the same way, harmlessly.
    let clock = Clock::system();
    let audit_key = app.state.audit().key().clone();
    assert!(deletion::purge_due(&op.owner, &audit_key, &clock)
        .await
        .is_empty());

    // Back: a crash after every location is scrubbed, before the registry's last step …
    sqlx::query(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .execute(&su)
        .await
        .unwrap();
    hooks::fail_once(tenant.id, HookPoint::PurgeScrubbed);
    let (status, body) = op.request(Method::POST, &purge, Some(&key), None).await;
    assert!(!status.is_success(), "{body}");
    // … leaves a tenant that does not serve (its rows are gone, it is still suspended) …
    let status = session_status(&app, &tenant).await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED,
        "{status}"
    );
    // … and the background pass finishes it, counting what the first run removed.
    assert_eq!(
        deletion::purge_due(&op.owner, &audit_key, &clock).await,
        vec![tenant.id]
    );
    let log = operator_log(&op, &key).await;
    let receipt = log
        .iter()
        .find(|e| {
            e["action"] == "tenant.erasure_receipt" && e["resource_id"] == tenant.id.to_string()
        })
        .expect("receipt");
    assert_eq!(receipt["actor"], deletion::BACKGROUND_ACTOR);
    assert_eq!(
        receipt["metadata"]["tables"]["agent_sessions"], 2,
        "{receipt:#}"
    );
    assert_eq!(traces_of(&su, tenant.id).await, Vec::<String>::new());
    let dedicated = superuser(&app.db, Some(name.as_str())).await;
    assert_eq!(traces_of(&dedicated, tenant.id).await, Vec::<String>::new());
}
