//! Isolation tiers (docs/isolation-tiers.md): the cross-tenant probe with tenants in every tier
//! and across tiers, moves under load and interrupted at every step, `bulkhead migrate` over
//! 200 tenant schemas, and two regions in two databases.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_probe::{self as probe, ProbeConfig, TenantCredentials};
use bulkhead_store::lifecycle::moves::{self, MoveOptions, MoveStep, INTERRUPTED};
use bulkhead_store::{Access, Placement, Store, StoreError};
use bulkhead_test_support::{
    spawn_app_with, AppOptions, TestApp, TestDb, TestTenant, TestTier, BASE_DOMAIN,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::regions::{onboard_in_region, us_and_eu};
use crate::helpers::{call_as, create_session, production_egress};

async fn probe_pair(app: &TestApp, a: &TestTenant, b: &TestTenant) -> probe::Report {
    probe::run(ProbeConfig {
        base_url: format!("http://{}", app.addr).parse().unwrap(),
        base_domain: BASE_DOMAIN.into(),
        tenant_a: TenantCredentials {
            slug: a.slug.clone(),
            admin_key: a.key.clone(),
        },
        tenant_b: TenantCredentials {
            slug: b.slug.clone(),
            admin_key: b.key.clone(),
        },
        openapi_file: None,
        operator: None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_probe_finds_nothing_within_and_across_every_tier() {
    // Within a tier (schema × schema, dedicated × dedicated) and across tiers, both ways round.
    // One deployment per pair: the probe mints keys as fast as the key endpoint's limit allows.
    for (victim, attacker) in [
        (TestTier::Schema, TestTier::Schema),
        (TestTier::Dedicated, TestTier::Dedicated),
        (TestTier::Shared, TestTier::Dedicated),
        (TestTier::Dedicated, TestTier::Schema),
    ] {
        let app = spawn_app_with(production_egress()).await;
        let a = app.create_tenant_in("victim", victim).await;
        let b = app.create_tenant_in("attacker", attacker).await;
        let report = probe_pair(&app, &a, &b).await;
        assert!(
            report.passed(),
            "{victim:?} attacked by {attacker:?}:\n{}\n{}",
            report.table(),
            report.summary()
        );
        assert!(report.operations > 40);
    }
}

#[tokio::test]
async fn each_tier_keeps_its_rows_where_the_registry_says() {
    let app = spawn_app_with(AppOptions::default()).await;
    let schema = app.create_tenant_in("schema-co", TestTier::Schema).await;
    let dedicated = app
        .create_tenant_in("dedicated-co", TestTier::Dedicated)
        .await;
    create_session(&app, &schema, "in its schema").await;
    create_session(&app, &dedicated, "in its database").await;
    // Keys work without a subdomain too (found through the routing index).
    for tenant in [&schema, &dedicated] {
        let listed = app
            .client
            .get(app.url("/v1/sessions"))
            .bearer_auth(&tenant.key)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), StatusCode::OK, "{}", tenant.slug);
        let page: Value = listed.json().await.unwrap();
        assert_eq!(page["data"].as_array().unwrap().len(), 1);
    }
    let su = PgPool::connect_with(app.db.superuser_options.clone())
        .await
        .unwrap();
    // Nothing of either is in the shared tables.
    for tenant in [&schema, &dedicated] {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM bulkhead.agent_sessions WHERE tenant_id = $1) \
             + (SELECT count(*) FROM bulkhead.api_keys WHERE tenant_id = $1) \
             + (SELECT count(*) FROM bulkhead.audit_events WHERE tenant_id = $1)",
        )
        .bind(tenant.id.uuid())
        .fetch_one(&su)
        .await
        .unwrap();
        assert_eq!(n, 0, "{} has rows in the shared tier", tenant.slug);
    }
    let schema_name = format!("tenant_{}", schema.id.uuid().simple());
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema_name}\".agent_sessions WHERE tenant_id = $1"
    ))
    .bind(schema.id.uuid())
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(n, 1);
    // The dedicated database's URL is sealed in the registry, never in the clear.
    let sealed: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT sealed_owner_url FROM bulkhead.tenant_databases")
            .fetch_all(&su)
            .await
            .unwrap();
    assert_eq!(sealed.len(), 1);
    // Sealed means: another master key opens nothing, and the tenant is refused, not served.
    let stranger = app
        .db
        .app_store()
        .await
        .reconfigured(|t| t.master_key = Some(Arc::new(bulkhead_auth::MasterKey::generate())));
    let refused = stranger
        .begin(&system(dedicated.id), Access::ReadOnly)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::UnsafeConfiguration(_)),
        "{refused:?}"
    );
    // A tenant schema is as locked down as the shared one: FORCE RLS on every table.
    let unforced: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' \
         WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relforcerowsecurity \
         AND c.relname NOT IN ('key_routes', 'tenant_moves', 'tenant_deletions')",
    )
    .bind(&schema_name)
    .fetch_all(&su)
    .await
    .unwrap();
    assert!(unforced.is_empty(), "{unforced:?}");
}

pub(crate) fn system(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

/// Per-table row counts of a tenant, read through the door (wherever it lives).
pub(crate) async fn row_counts(store: &Store, tenant: TenantId) -> Vec<(String, i64)> {
    let mut tx = store
        .begin(&system(tenant), Access::ReadOnly)
        .await
        .unwrap();
    let mut out = Vec::new();
    for table in bulkhead_store::placement::location::TENANT_TABLES {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = $1"
        ))
        .bind(tenant.uuid())
        .fetch_one(tx.conn())
        .await
        .unwrap();
        out.push(((*table).to_owned(), n));
    }
    out
}

#[tokio::test]
async fn a_tenant_moved_through_every_tier_under_load_keeps_every_row_and_never_answers_wrongly() {
    let app = spawn_app_with(AppOptions::default()).await;
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other-co").await;
    for i in 0..20 {
        create_session(&app, &acme, &format!("before {i}")).await;
    }
    let other_session = create_session(&app, &other, "not acme's").await;
    let owner = app.db.owner_store().await;

    // Load: writers create sessions and count the ones acknowledged; readers list and check
    // every answer is acme's. Every answer is a success or a retryable 503, nothing else.
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for worker in 0..3 {
        let (client, url) = (app.client.clone(), app.tenant_url("acme", "/v1/sessions"));
        let (key, stop, created, refused) = (
            acme.key.clone(),
            stop.clone(),
            created.clone(),
            refused.clone(),
        );
        let other_id = other_session["id"].as_str().unwrap().to_owned();
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let write = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "agent_id": "loader", "title": format!("load {worker}-{i}") }))
                    .send()
                    .await
                    .unwrap();
                match write.status() {
                    StatusCode::CREATED => {
                        created.fetch_add(1, Ordering::Relaxed);
                        // Read your write: an acknowledged session is never missing afterwards
                        // (a stale copy would answer 404).
                        let id = write.json::<Value>().await.unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_owned();
                        let again = client
                            .get(format!("{url}/{id}"))
                            .bearer_auth(&key)
                            .send()
                            .await
                            .unwrap();
                        assert!(
                            matches!(
                                again.status(),
                                StatusCode::OK
                                    | StatusCode::SERVICE_UNAVAILABLE
                                    | StatusCode::TOO_MANY_REQUESTS
                            ),
                            "an acknowledged write read back as {}",
                            again.status()
                        );
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(write.headers().contains_key("retry-after"));
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    // The load outruns the tenant's rate limit now and then: not an answer
                    // about the data.
                    StatusCode::TOO_MANY_REQUESTS => {}
                    other => panic!("a write during a move answered {other}"),
                }
                let read = client
                    .get(format!("{url}?limit=5"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap();
                match read.status() {
                    StatusCode::OK => {
                        let text = read.text().await.unwrap();
                        assert!(!text.contains(&other_id), "another tenant's session leaked");
                    }
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {}
                    other => panic!("a read during a move answered {other}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }));
    }
    let placements = [TestTier::Schema, TestTier::Dedicated, TestTier::Shared];
    for tier in placements {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let placement = tier.placement(&app.db, &owner).await;
        let report = moves::move_tenant(&owner, acme.id, placement, MoveOptions::default())
            .await
            .unwrap();
        assert!(report.rows > 0);
        assert_eq!(
            report.tables.len(),
            bulkhead_store::placement::location::TENANT_TABLES.len()
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    // Every acknowledged write is there, once; nothing else of acme's was lost.
    let store = app.db.app_store().await;
    let mut tx = store
        .begin(&system(acme.id), Access::ReadOnly)
        .await
        .unwrap();
    let (before, loaded): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE title LIKE 'before %'), count(*) FILTER (WHERE title LIKE 'load %') \
         FROM agent_sessions WHERE tenant_id = $1",
    )
    .bind(acme.id.uuid())
    .fetch_one(tx.conn())
    .await
    .unwrap();
    drop(tx);
    assert_eq!(before, 20);
    assert_eq!(loaded as usize, created.load(Ordering::Relaxed));
    assert!(created.load(Ordering::Relaxed) > 0);
    println!(
        "load during three moves: {} writes acknowledged, {} refused with 503",
        created.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    // The other tenant never noticed.
    let got = call_as(
        &app,
        &other,
        Method::GET,
        &format!("/v1/sessions/{}", other_session["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(got.status(), StatusCode::OK);
    // Back in the shared tier.
    let location = store.location_of(acme.id).await.unwrap();
    assert_eq!(location.placement, Placement::Shared);
}

#[tokio::test]
async fn a_move_stopped_after_any_step_resumes_and_loses_nothing() {
    let db = TestDb::new().await;
    let owner = db.owner_store().await;
    let app_store = db.app_store().await;
    for (i, step) in MoveStep::ALL.into_iter().enumerate() {
        if step == MoveStep::Cleanup {
            continue; // the last step: stopping after it is finishing
        }
        let tenant = bulkhead_test_support::create_tenant(&db, &format!("stopped-{i}")).await;
        let mut tx = app_store
            .begin(&system(tenant.id), Access::ReadWrite)
            .await
            .unwrap();
        for n in 0..5 {
            bulkhead_store::audit::record(
                &mut tx,
                "test.event",
                Some(&format!("r{n}")),
                bulkhead_store::audit::Outcome::Success,
                json!({ "n": n }),
            )
            .await
            .unwrap();
        }
        for title in ["s0", "s1", "s2"] {
            sqlx::query(
                "INSERT INTO agent_sessions (tenant_id, id, agent_id, title) VALUES ($1, gen_random_uuid(), 'a', $2)",
            )
            .bind(tenant.id.uuid())
            .bind(title)
            .execute(tx.conn())
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let to = TestTier::Dedicated.placement(&db, &owner).await;
        let stopped = moves::move_tenant(
            &owner,
            tenant.id,
            to.clone(),
            MoveOptions {
                stop_after: Some(step),
                ..MoveOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&stopped, StoreError::Invalid(m) if m == INTERRUPTED),
            "{stopped:?}"
        );
        // While stopped: reads answer; writes answer a retryable refusal from the freeze until
        // the switch, and succeed afterwards.
        // Reads are served at every point of a move.
        let read = app_store.begin(&system(tenant.id), Access::ReadOnly).await;
        assert!(read.is_ok(), "after {step:?}: {read:?}");
        drop(read);
        let write = app_store.begin(&system(tenant.id), Access::ReadWrite).await;
        match step {
            MoveStep::Prepare | MoveStep::Copy => {
                assert!(write.is_ok(), "after {step:?}: {write:?}")
            }
            MoveStep::Freeze | MoveStep::CatchUp | MoveStep::Verify => {
                assert!(
                    matches!(write, Err(StoreError::TenantMoving)),
                    "after {step:?}: {write:?}"
                )
            }
            MoveStep::Switch | MoveStep::Cleanup => {
                assert!(write.is_ok(), "after {step:?}: {write:?}")
            }
        }
        // Writes while the tenant is still served after its snapshot copy (an insert, an
        // update, a delete): the catch-up must carry every one of them over.
        if let Ok(mut tx) = write {
            if matches!(step, MoveStep::Prepare | MoveStep::Copy) {
                bulkhead_store::audit::record(
                    &mut tx,
                    "test.after_copy",
                    None,
                    bulkhead_store::audit::Outcome::Success,
                    json!({}),
                )
                .await
                .unwrap();
                for (sql, title) in [
                    ("UPDATE agent_sessions SET title = 'changed after the copy' WHERE tenant_id = $1 AND title = $2", "s0"),
                    ("DELETE FROM agent_sessions WHERE tenant_id = $1 AND title = $2", "s1"),
                ] {
                    let n = sqlx::query(sql)
                        .bind(tenant.id.uuid())
                        .bind(title)
                        .execute(tx.conn())
                        .await
                        .unwrap()
                        .rows_affected();
                    assert_eq!(n, 1);
                }
                tx.commit().await.unwrap();
            }
        }
        let before = row_counts(&app_store, tenant.id).await;
        let report = moves::move_tenant(&owner, tenant.id, to.clone(), MoveOptions::default())
            .await
            .unwrap();
        assert!(report.resumed, "after {step:?}");
        let after = row_counts(&app_store, tenant.id).await;
        // Everything that was there is there; the move added its own audit event.
        for ((table, was), (_, now)) in before.iter().zip(&after) {
            if table == "audit_events" {
                assert_eq!(*now, was + 1, "after {step:?}: {table}");
            } else {
                assert_eq!(now, was, "after {step:?}: {table}");
            }
        }
        assert_eq!(
            app_store.location_of(tenant.id).await.unwrap().placement,
            to,
            "after {step:?}"
        );
        let mut tx = app_store
            .begin(&system(tenant.id), Access::ReadOnly)
            .await
            .unwrap();
        let titles: Vec<String> = sqlx::query_scalar(
            "SELECT title FROM agent_sessions WHERE tenant_id = $1 ORDER BY title",
        )
        .bind(tenant.id.uuid())
        .fetch_all(tx.conn())
        .await
        .unwrap();
        drop(tx);
        let expected: &[&str] = if matches!(step, MoveStep::Prepare | MoveStep::Copy) {
            &["changed after the copy", "s2"]
        } else {
            &["s0", "s1", "s2"]
        };
        assert_eq!(titles, expected, "after {step:?}");
        // No copy stays behind in the shared tables.
        let su = PgPool::connect_with(db.superuser_options.clone())
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM bulkhead.audit_events WHERE tenant_id = $1) \
             + (SELECT count(*) FROM bulkhead.audit_leaves WHERE tenant_id = $1) \
             + (SELECT count(*) FROM bulkhead.api_keys WHERE tenant_id = $1)",
        )
        .bind(tenant.id.uuid())
        .fetch_one(&su)
        .await
        .unwrap();
        assert_eq!(left, 0, "after {step:?}: the old copy was not removed");
    }
}

#[tokio::test]
async fn migrate_creates_and_migrates_200_tenant_schemas_and_a_failed_one_stays_unchanged() {
    let db = TestDb::new().await;
    let owner_pool = db.owner_pool().await;
    // 200 schema-tier registry rows whose schemas do not exist yet.
    let mut schemas = Vec::new();
    for i in 0..200 {
        let id = TenantId::new();
        let schema = format!("tenant_{}", id.uuid().simple());
        sqlx::query(
            "INSERT INTO bulkhead.tenants (id, slug, display_name, isolation_tier, schema_name) \
             VALUES ($1, $2, 'Bulk', 'schema', $3)",
        )
        .bind(id.uuid())
        .bind(format!("bulk-{i:03}"))
        .bind(&schema)
        .execute(&owner_pool)
        .await
        .unwrap();
        schemas.push(schema);
    }
    let owner = db.owner_store().await;
    let known = bulkhead_store::placement::migrate::MIGRATOR.iter().count() as u32;
    let outcomes = bulkhead_store::placement::tiers::migrate_all(
        owner.migration_targets().await.unwrap(),
        8,
        |_| {},
    )
    .await;
    assert_eq!(outcomes.len(), 201);
    for outcome in &outcomes[1..] {
        assert_eq!(
            outcome.result.as_ref().unwrap(),
            &known,
            "{}",
            outcome.label
        );
    }
    // A second run has nothing to do.
    let again = bulkhead_store::placement::tiers::migrate_all(
        owner.migration_targets().await.unwrap(),
        8,
        |_| {},
    )
    .await;
    assert!(again[1..].iter().all(|o| matches!(o.result, Ok(0))));
    // Break one schema so that migrations 0010 (tools) and 0011 (isolation tiers) are pending
    // again and the second of them fails (its columns exist already): the failure is reported,
    // the others are fine, and the first of the two, which succeeded inside the target's
    // transaction, is rolled back with it. (Fixed versions, not the latest two: later migrations
    // may be idempotent and would not fail when run again.)
    let broken = &schemas[17];
    sqlx::query(&format!(
        "DELETE FROM \"{broken}\"._sqlx_migrations WHERE version IN (10, 11)"
    ))
    .execute(&owner_pool)
    .await
    .unwrap();
    sqlx::raw_sql(&format!(
        "DROP TABLE \"{broken}\".screening_decisions, \"{broken}\".tool_versions, \"{broken}\".tools; \
         ALTER TABLE \"{broken}\".tenant_settings DROP COLUMN screening_policy"
    ))
    .execute(&owner_pool)
    .await
    .unwrap();
    let outcomes = bulkhead_store::placement::tiers::migrate_all(
        owner.migration_targets().await.unwrap(),
        8,
        |_| {},
    )
    .await;
    let failed: Vec<&String> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| &o.label)
        .collect();
    assert_eq!(failed, [&format!("schema {broken}")]);
    let ledger: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{broken}\"._sqlx_migrations WHERE version = 10"
    ))
    .fetch_one(&owner_pool)
    .await
    .unwrap();
    assert_eq!(ledger, 0, "a failed target must be left unchanged");
    let tools: Option<String> =
        sqlx::query_scalar(&format!("SELECT to_regclass('\"{broken}\".tools')::text"))
            .fetch_one(&owner_pool)
            .await
            .unwrap();
    assert_eq!(tools, None, "half of a target's migrations stayed applied");
    // A migration changed after it was applied is refused, not skipped.
    sqlx::query(&format!(
        "UPDATE \"{}\"._sqlx_migrations SET checksum = '\\x00' WHERE version = 1",
        schemas[3]
    ))
    .execute(&owner_pool)
    .await
    .unwrap();
    let outcomes = bulkhead_store::placement::tiers::migrate_all(
        owner.migration_targets().await.unwrap(),
        8,
        |_| {},
    )
    .await;
    let refused = outcomes
        .iter()
        .find(|o| o.label == format!("schema {}", schemas[3]))
        .unwrap();
    assert!(
        matches!(&refused.result, Err(StoreError::UnsafeConfiguration(m)) if m.contains("changed")),
        "{:?}",
        refused.result
    );
}

/// The shared-tier tables of `pool`'s database that hold any row of `tenant`.
async fn shared_tables_holding(pool: &PgPool, tenant: TenantId) -> Vec<&'static str> {
    let mut holding = Vec::new();
    for table in bulkhead_store::placement::location::TENANT_TABLES {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM bulkhead.{table} WHERE tenant_id = $1"
        ))
        .bind(tenant.uuid())
        .fetch_one(pool)
        .await
        .unwrap();
        if n > 0 {
            holding.push(*table);
        }
    }
    holding
}

#[tokio::test]
async fn two_regions_keep_every_row_of_an_eu_tenant_out_of_the_us_database() {
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
    let eu_tenant = onboard_in_region(&owner, "eu-co", "eu").await;
    let us_tenant = onboard_in_region(&owner, "us-co", "us").await;
    create_session(&app, &eu_tenant, "eu data").await;
    create_session(&app, &us_tenant, "us data").await;
    // An EU key works without a subdomain too.
    let listed = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(&eu_tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);

    // No row of the EU tenant in any table of the US database, except its registry row
    // (routing metadata only); and its rows are in the EU database.
    let us_su = PgPool::connect_with(us.superuser_options.clone())
        .await
        .unwrap();
    let eu_su = PgPool::connect_with(eu.superuser_options.clone())
        .await
        .unwrap();
    let none: Vec<&str> = Vec::new();
    assert_eq!(
        shared_tables_holding(&us_su, eu_tenant.id).await,
        none,
        "EU rows are in the US database"
    );
    assert_eq!(
        shared_tables_holding(&eu_su, us_tenant.id).await,
        none,
        "US rows are in the EU database"
    );
    let eu_rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM bulkhead.agent_sessions WHERE tenant_id = $1) \
         + (SELECT count(*) FROM bulkhead.audit_events WHERE tenant_id = $1)",
    )
    .bind(eu_tenant.id.uuid())
    .fetch_one(&eu_su)
    .await
    .unwrap();
    assert!(eu_rows >= 2);

    // A process that serves only the US refuses the EU tenant (421, naming the region), by
    // subdomain and by key, and never touches the EU database.
    let us_only = spawn_app_with(AppOptions {
        db: Some(us.clone()),
        store: Some(
            us.app_store()
                .await
                .reconfigured(|t| t.default_region = "us".into()),
        ),
        ..AppOptions::default()
    })
    .await;
    let by_host = us_only
        .client
        .get(us_only.tenant_url("eu-co", "/v1/sessions"))
        .bearer_auth(&eu_tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(by_host.status(), StatusCode::MISDIRECTED_REQUEST);
    let body: Value = by_host.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("another region"));
    // Before any authentication, the region itself is not disclosed.
    assert!(!body.to_string().contains("eu"), "{body}");
    let by_key = us_only
        .client
        .get(us_only.url("/v1/sessions"))
        .bearer_auth(&eu_tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(by_key.status(), StatusCode::UNAUTHORIZED);
    let us_ok = call_as(&us_only, &us_tenant, Method::GET, "/v1/sessions", None).await;
    assert_eq!(us_ok.status(), StatusCode::OK);

    // With the EU's endpoint configured, the US process redirects instead (307 keeps the
    // method and body; the test client follows no redirect).
    let redirecting = spawn_app_with(AppOptions {
        db: Some(us.clone()),
        store: Some(
            us.app_store()
                .await
                .reconfigured(|t| t.default_region = "us".into()),
        ),
        configure: Some(|config| {
            config
                .set_region_endpoints(&["eu=https://{tenant}.eu.bulkhead.test".to_owned()])
                .unwrap()
        }),
        ..AppOptions::default()
    })
    .await;
    let redirected = redirecting
        .client
        .get(redirecting.tenant_url("eu-co", "/v1/sessions?limit=5"))
        .bearer_auth(&eu_tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        redirected.headers()["location"],
        "https://eu-co.eu.bulkhead.test/v1/sessions?limit=5"
    );

    // Residency changes only by an explicit move: the US tenant moves to the EU, every row
    // with it, and nothing of it stays in the US database.
    let report = moves::move_tenant(
        &owner,
        us_tenant.id,
        Placement::Shared,
        MoveOptions {
            to_region: Some("eu".into()),
            ..MoveOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.to.contains("region eu"), "{}", report.to);
    assert_eq!(
        shared_tables_holding(&us_su, us_tenant.id).await,
        none,
        "rows stayed in the US database after the move"
    );
    let moved = call_as(&app, &us_tenant, Method::GET, "/v1/sessions", None).await;
    assert_eq!(moved.status(), StatusCode::OK);
    let page: Value = moved.json().await.unwrap();
    assert_eq!(page["data"][0]["title"], "us data");
}

#[tokio::test]
async fn dedicated_pools_are_capped_evicted_when_idle_and_every_tenant_still_served() {
    let db = TestDb::new().await;
    let mut tenants = Vec::new();
    for slug in ["ded-a", "ded-b", "ded-c"] {
        tenants.push(bulkhead_test_support::create_tenant_in(&db, slug, TestTier::Dedicated).await);
    }
    let limits = |idle| bulkhead_store::placement::location::DedicatedLimits {
        max_pools: 2,
        connections_per_pool: 2,
        idle,
    };
    let store = db
        .app_store()
        .await
        .reconfigured(|t| t.dedicated = limits(std::time::Duration::from_secs(60)));
    for _ in 0..3 {
        for tenant in &tenants {
            let mut tx = store
                .begin(&system(tenant.id), Access::ReadOnly)
                .await
                .unwrap();
            let keys: i64 =
                sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE tenant_id = $1")
                    .bind(tenant.id.uuid())
                    .fetch_one(tx.conn())
                    .await
                    .unwrap();
            assert_eq!(keys, 1, "each dedicated tenant sees its own bootstrap key");
            drop(tx);
            assert!(store.open_dedicated_pools() <= 2);
        }
    }
    assert_eq!(store.open_dedicated_pools(), 2);
    // Unused past the idle limit, a pool is closed; the next use opens it again.
    let store = db
        .app_store()
        .await
        .reconfigured(|t| t.dedicated = limits(std::time::Duration::from_millis(200)));
    store
        .begin(&system(tenants[0].id), Access::ReadOnly)
        .await
        .unwrap();
    assert_eq!(store.open_dedicated_pools(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(store.open_dedicated_pools(), 0);
    store
        .begin(&system(tenants[0].id), Access::ReadOnly)
        .await
        .unwrap();
    assert_eq!(store.open_dedicated_pools(), 1);
}

async fn exec(store: &Store, tenant: TenantId, sql: &str) {
    let mut tx = store
        .begin(&system(tenant), Access::ReadWrite)
        .await
        .unwrap();
    sqlx::query(sql)
        .bind(tenant.uuid())
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn copies_that_are_not_live_are_never_claimed_recreated_rows_catch_up_and_a_move_can_be_abandoned(
) {
    let db = TestDb::new().await;
    let owner = db.owner_store().await;
    let store = db.app_store().await;
    let t = bulkhead_test_support::create_tenant_in(&db, "moving-co", TestTier::Schema).await;
    exec(&store, t.id, "INSERT INTO roles (tenant_id, id, name, permissions) VALUES ($1, gen_random_uuid(), 'auditors', '{audit:read}')").await;
    let mut tx = store.begin(&system(t.id), Access::ReadWrite).await.unwrap();
    let job = bulkhead_store::tenant::jobs::enqueue(&mut tx, "session.close", &json!({}), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Copied into the shared tier (stopped after the copy): the job is in two places, and is
    // claimed once, from the live one.
    let stopped = moves::move_tenant(
        &owner,
        t.id,
        Placement::Shared,
        MoveOptions {
            stop_after: Some(MoveStep::Copy),
            ..MoveOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(&stopped, StoreError::Invalid(m) if m == INTERRUPTED));
    let claimed = store.claim_jobs(100, 60).await.unwrap();
    let mine: Vec<_> = claimed.iter().filter(|j| j.tenant_id == t.id).collect();
    assert_eq!(mine.len(), 1, "{claimed:?}");
    assert_eq!(mine[0].id, job);
    assert!(store.claim_jobs(100, 60).await.unwrap().is_empty());

    // After the copy, a role is deleted and re-created under the same (unique) name: the
    // catch-up must remove the old one before the new one arrives.
    exec(
        &store,
        t.id,
        "DELETE FROM roles WHERE tenant_id = $1 AND name = 'auditors'",
    )
    .await;
    exec(&store, t.id, "INSERT INTO roles (tenant_id, id, name, permissions) VALUES ($1, gen_random_uuid(), 'auditors', '{audit:read,audit:export}')").await;
    moves::move_tenant(&owner, t.id, Placement::Shared, MoveOptions::default())
        .await
        .unwrap();
    let mut tx = store.begin(&system(t.id), Access::ReadOnly).await.unwrap();
    let permissions: Vec<Vec<String>> = sqlx::query_scalar(
        "SELECT permissions FROM roles WHERE tenant_id = $1 AND name = 'auditors'",
    )
    .bind(t.id.uuid())
    .fetch_all(tx.conn())
    .await
    .unwrap();
    drop(tx);
    assert_eq!(
        permissions,
        [vec!["audit:read".to_owned(), "audit:export".to_owned()]]
    );

    // Abandoned after its verification: writable again where it was, the copy gone.
    let to = TestTier::Dedicated.placement(&db, &owner).await;
    let Placement::Dedicated(name) = &to else {
        unreachable!()
    };
    moves::move_tenant(
        &owner,
        t.id,
        to.clone(),
        MoveOptions {
            stop_after: Some(MoveStep::Verify),
            ..MoveOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(
        store.begin(&system(t.id), Access::ReadWrite).await,
        Err(StoreError::TenantMoving)
    ));
    // An operator's change of the frozen tenant is a conflict naming the move, not a 503.
    match owner
        .set_tenant_plan_by(
            t.id,
            bulkhead_store::placement::registry::Plan::Enterprise,
            "ops",
        )
        .await
    {
        Err(StoreError::Conflict { constraint }) => {
            assert!(constraint.contains("being moved"), "{constraint}")
        }
        other => panic!("{other:?}"),
    }
    moves::abandon_move(&owner, t.id).await.unwrap();
    assert_eq!(
        store.location_of(t.id).await.unwrap().placement,
        Placement::Shared
    );
    exec(
        &store,
        t.id,
        "UPDATE roles SET description = 'still here' WHERE tenant_id = $1 AND name = 'auditors'",
    )
    .await;
    let dedicated = PgPool::connect_with(db.superuser_options_for(name.as_str()))
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM bulkhead.roles WHERE tenant_id = $1) \
         + (SELECT count(*) FROM bulkhead.tenants WHERE id = $1)",
    )
    .bind(t.id.uuid())
    .fetch_one(&dedicated)
    .await
    .unwrap();
    assert_eq!(left, 0, "the abandoned copy was not removed");
    // And a new move can start.
    moves::move_tenant(&owner, t.id, to, MoveOptions::default())
        .await
        .unwrap();
}
