//! Issue 28 item 3: every list the API offers, with every documented filter, is served by an
//! index led by `tenant_id`.
//!
//! The real store functions run through the door; the plan checked is the one PostgreSQL makes
//! for the very statement they prepared (`EXPLAIN EXECUTE` of it, from
//! `pg_prepared_statements` on the same connection), with the door's session settings.
//!
//! The tables hold real rows (thousands per tenant, two tenants, the filtered values rare, then
//! `ANALYZE`) rather than running with `enable_seqscan = off`: with the planner's own costs the
//! plan checked is the one a big tenant gets. `enable_seqscan = off` would only show that some
//! index *can* serve the statement; the planner would then take any index at all (the primary
//! key walked with a filter over the whole tenant, say) and an empty table would hide what it
//! really prefers at scale.

use bulkhead_core::{
    Actor, MessageId, RequestId, RoleId, TenantContext, TenantId, ToolName, UserId,
};
use bulkhead_store::audit::pages::{self as audit_pages, EventFilter};
use bulkhead_store::tenant::rbac::{self, Principal};
use bulkhead_store::tenant::sessions::{self, ListSessions, SessionState};
use bulkhead_store::tenant::tokens::{self, SessionOwner};
use bulkhead_store::tenant::{agents, api_keys, tools, users, webhooks};
use bulkhead_store::{Access, Store, TenantTx};
use bulkhead_test_support::{create_tenant, TestDb};
use serde_json::Value;

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

/// 20,000 sessions and audit events for `tenant`, the filtered values rare, as a superuser.
async fn seed(db: &TestDb, tenant: TenantId) {
    let su = db.superuser_pool().await;
    sqlx::query(
        "INSERT INTO bulkhead.agent_sessions (tenant_id, id, agent_id, title, state) \
         SELECT $1, gen_random_uuid(), 'agent-' || (i % 500), 't', \
                CASE WHEN i % 1000 = 0 THEN 'closed' ELSE 'active' END \
         FROM generate_series(1, 20000) i",
    )
    .bind(tenant.uuid())
    .execute(&su)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO bulkhead.audit_events (tenant_id, id, occurred_at, actor_id, actor_type, \
           action, resource_id, outcome) \
         SELECT $1, gen_random_uuid(), now() - (i || ' seconds')::interval, 'actor-' || (i % 500), \
                'system', 'action.n' || (i % 500), 'res-' || (i % 5000), \
                CASE WHEN i % 1000 = 0 THEN 'blocked' ELSE 'success' END \
         FROM generate_series(1, 20000) i",
    )
    .bind(tenant.uuid())
    .execute(&su)
    .await
    .unwrap();
    for table in ["agent_sessions", "audit_events"] {
        sqlx::query(&format!("ANALYZE bulkhead.{table}"))
            .execute(&su)
            .await
            .unwrap();
    }
}

/// The first column of every index in `plan`, and whether any node scans a table whole.
fn scans(plan: &Value, indexes: &mut Vec<String>, seq: &mut Vec<String>) {
    if let Some(kind) = plan["Node Type"].as_str() {
        if kind == "Seq Scan" {
            seq.push(plan["Relation Name"].as_str().unwrap_or("?").to_owned());
        }
        if let Some(index) = plan["Index Name"].as_str() {
            indexes.push(index.to_owned());
        }
    }
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            scans(child, indexes, seq);
        }
    }
}

/// Plans the statement the last list call prepared (`marker` identifies it) with `args`, and
/// checks that it scans nothing whole and that every index it uses is led by `tenant_id`
/// and covers `column`.
async fn check_plan(tx: &mut TenantTx, marker: &str, args: &str, column: &str) {
    let name: String = sqlx::query_scalar(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE $1 \
         ORDER BY prepare_time DESC LIMIT 1",
    )
    .bind(format!("%{marker}%"))
    .fetch_one(tx.conn())
    .await
    .unwrap();
    let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) EXECUTE {name}({args})"))
        .fetch_one(tx.conn())
        .await
        .unwrap();
    let mut indexes = Vec::new();
    let mut seq = Vec::new();
    scans(&plan[0]["Plan"], &mut indexes, &mut seq);
    assert!(
        seq.is_empty(),
        "{marker} {args}: scans {seq:?} whole: {plan}"
    );
    assert!(!indexes.is_empty(), "{marker} {args}: no index: {plan}");
    let mut covered = false;
    for index in &indexes {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE c.relname = $1 ORDER BY k.n",
        )
        .bind(index)
        .fetch_all(tx.conn())
        .await
        .unwrap();
        assert_eq!(
            columns.first().map(String::as_str),
            Some("tenant_id"),
            "{marker} {args}: index {index} is not led by tenant_id"
        );
        covered |= columns.iter().any(|c| c == column);
    }
    assert!(
        covered,
        "{marker} {args}: no index on {column} serves the filter: {plan}"
    );
}

#[tokio::test]
async fn every_list_filter_uses_an_index_led_by_tenant_id() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let b = create_tenant(&db, "bravo").await;
    seed(&db, a.id).await;
    seed(&db, b.id).await;
    let store: Store = db.app_store().await;
    let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
    let tenant = format!("'{}'", a.id.uuid());

    // GET /v1/sessions?state= and ?agent_id=
    sessions::list(
        &mut tx,
        &ListSessions {
            after: None,
            limit: 51,
            agent_id: None,
            state: Some(SessionState::Closed),
        },
    )
    .await
    .unwrap();
    let marker = "FROM agent_sessions";
    check_plan(
        &mut tx,
        marker,
        &format!("{tenant}, NULL, NULL, 'closed', 51, NULL"),
        "state",
    )
    .await;
    check_plan(
        &mut tx,
        marker,
        &format!("{tenant}, NULL, 'agent-7', NULL, 51, NULL"),
        "agent_id",
    )
    .await;

    // GET /v1/audit/events with each filter.
    audit_pages::list_events(
        &mut tx,
        &EventFilter {
            limit: 51,
            ..EventFilter::default()
        },
    )
    .await
    .unwrap();
    let marker = "FROM audit_events e";
    let cases = [
        (
            "NULL, now() - interval '10 seconds', NULL, NULL, NULL, NULL, NULL",
            "occurred_at",
        ),
        (
            "NULL, NULL, now() - interval '19990 seconds', NULL, NULL, NULL, NULL",
            "occurred_at",
        ),
        ("NULL, NULL, NULL, 'actor-7', NULL, NULL, NULL", "actor_id"),
        ("NULL, NULL, NULL, NULL, 'action.n7', NULL, NULL", "action"),
        ("NULL, NULL, NULL, NULL, NULL, 'blocked', NULL", "outcome"),
        ("NULL, NULL, NULL, NULL, NULL, NULL, 'res-7'", "resource_id"),
    ];
    for (filters, column) in cases {
        check_plan(&mut tx, marker, &format!("{tenant}, {filters}, 51"), column).await;
    }
    tx.commit().await.unwrap();
}

/// Rows per tenant in each table the other lists read.
const ROWS: i32 = 5000;

/// `ROWS` users, agents, roles, assignments, API keys, webhook endpoints, messages, deliveries
/// and attempts, tools and versions, and auth sessions for `tenant`, as a superuser; each
/// filtered value names a handful of rows.
async fn seed_lists(db: &TestDb, tenant: TenantId) {
    let su = db.superuser_pool().await;
    let statements = [
        "INSERT INTO bulkhead.users (tenant_id, id, email, password_hash, scopes) \
         SELECT $1, gen_random_uuid(), 'u' || i || '@seed.test', '$argon2id$seed', '{}' \
         FROM generate_series(1, $2) i",
        "INSERT INTO bulkhead.agents (tenant_id, id, name) \
         SELECT $1, gen_random_uuid(), 'agent-' || i FROM generate_series(1, $2) i",
        "INSERT INTO bulkhead.roles (tenant_id, id, name) \
         SELECT $1, gen_random_uuid(), 'role-' || i FROM generate_series(1, $2 / 10) i",
        // Each user and each agent holds one role; each role is held by about 20.
        "INSERT INTO bulkhead.role_assignments (tenant_id, id, role_id, user_id, created_by) \
         SELECT $1, gen_random_uuid(), r.id, u.id, 'seed' \
         FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM bulkhead.users \
               WHERE tenant_id = $1) u \
         JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM bulkhead.roles \
               WHERE tenant_id = $1 AND NOT built_in) r ON r.n = u.n % ($2 / 10) + 1",
        "INSERT INTO bulkhead.role_assignments (tenant_id, id, role_id, agent_id, created_by) \
         SELECT $1, gen_random_uuid(), r.id, a.id, 'seed' \
         FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM bulkhead.agents \
               WHERE tenant_id = $1) a \
         JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM bulkhead.roles \
               WHERE tenant_id = $1 AND NOT built_in) r ON r.n = a.n % ($2 / 10) + 1",
        "INSERT INTO bulkhead.api_keys (tenant_id, id, key_hash, pepper_version, environment, \
           display_prefix, scopes, created_by, principal) \
         SELECT $1, gen_random_uuid(), sha256(($1::text || i)::bytea), 1, 'live', 'bk_seed', \
                '{}', 'seed', 'p-' || (i % 500) \
         FROM generate_series(1, $2) i",
        "INSERT INTO bulkhead.webhook_endpoints (tenant_id, id, url, secret) \
         SELECT $1, gen_random_uuid(), 'https://hooks.seed.test/' || i, \
                decode(repeat('00', 44), 'hex') \
         FROM generate_series(1, $2) i",
        "INSERT INTO bulkhead.webhook_messages (tenant_id, id, event_type, source, payload) \
         SELECT $1, gen_random_uuid(), 'session.created', 'platform', '{}' \
         FROM generate_series(1, $2) i",
        // Each message goes to one endpoint and was attempted once.
        "INSERT INTO bulkhead.webhook_deliveries (tenant_id, id, message_id, endpoint_id, \
           status, next_attempt_at) \
         SELECT $1, gen_random_uuid(), m.id, e.id, 'failed', now() \
         FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM bulkhead.webhook_messages \
               WHERE tenant_id = $1) m \
         JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM bulkhead.webhook_endpoints \
               WHERE tenant_id = $1) e ON e.n = m.n",
        "INSERT INTO bulkhead.webhook_attempts (tenant_id, id, delivery_id, message_id, \
           endpoint_id, attempted_at, outcome) \
         SELECT $1, gen_random_uuid(), d.id, d.message_id, d.endpoint_id, now(), 'failed' \
         FROM bulkhead.webhook_deliveries d WHERE d.tenant_id = $1",
        "INSERT INTO bulkhead.tools (tenant_id, id, name, description, input_schema, \
           endpoint_url, enabled, secret) \
         SELECT $1, gen_random_uuid(), 'tool-' || i, '', '{}', 'https://tools.seed.test', \
                i % 2 = 0, decode(repeat('00', 44), 'hex') \
         FROM generate_series(1, $2 / 5) i",
        // Five versions of each tool.
        "INSERT INTO bulkhead.tool_versions (tenant_id, tool_id, version, description, \
           input_schema, endpoint_url, enabled, screening, actor_id) \
         SELECT $1, t.id, v, '', '{}', t.endpoint_url, true, 'clean', 'seed' \
         FROM bulkhead.tools t, generate_series(1, 5) v WHERE t.tenant_id = $1",
        "INSERT INTO bulkhead.auth_sessions (tenant_id, id, principal_type, principal_id, \
           client_id, scopes, created_at, last_used_at, expires_at, idle_timeout_seconds) \
         SELECT $1, gen_random_uuid(), CASE WHEN i % 2 = 0 THEN 'user' ELSE 'agent' END, \
                'p-' || (i % 500), 'client-' || (i % 500), '{}', now(), now(), \
                now() + interval '1 day', 3600 \
         FROM generate_series(1, $2) i",
    ];
    // The seed stands for a tenant far past its plan's quotas (the planner needs many rows), so
    // it is written as a replay, the marker moves use, which the quota triggers do not count.
    let mut tx = su.begin().await.unwrap();
    sqlx::query("SELECT set_config('bulkhead.quota_replay', 'on', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    for statement in statements {
        sqlx::query(statement)
            .bind(tenant.uuid())
            .bind(ROWS)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    tx.commit().await.unwrap();
    sqlx::query("ANALYZE").execute(&su).await.unwrap();
}

/// One id of `table` in `tenant` (the first by id), or of the row `column = value`.
async fn one_id(db: &TestDb, tenant: TenantId, table: &str, extra: &str) -> uuid::Uuid {
    let su = db.superuser_pool().await;
    sqlx::query_scalar(&format!(
        "SELECT id FROM bulkhead.{table} WHERE tenant_id = $1 {extra} ORDER BY id LIMIT 1"
    ))
    .bind(tenant.uuid())
    .fetch_one(&su)
    .await
    .unwrap()
}

#[tokio::test]
async fn every_list_query_uses_an_index_led_by_tenant_id() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let b = create_tenant(&db, "bravo").await;
    seed_lists(&db, a.id).await;
    seed_lists(&db, b.id).await;
    let user = one_id(&db, a.id, "users", "").await;
    let agent = one_id(&db, a.id, "agents", "").await;
    let role = one_id(&db, a.id, "roles", "AND NOT built_in").await;
    let message = one_id(&db, a.id, "webhook_messages", "").await;
    let store: Store = db.app_store().await;
    let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
    let tenant = format!("'{}'", a.id.uuid());
    let now = chrono::Utc::now();

    // GET /v1/users, /v1/agents, /v1/roles, /v1/webhooks/endpoints: pages in id order.
    users::list(&mut tx, None, 51).await.unwrap();
    agents::list(&mut tx, None, 51).await.unwrap();
    rbac::list_roles(&mut tx, None, 51).await.unwrap();
    webhooks::list_endpoints(&mut tx, None, 51).await.unwrap();
    for marker in [
        "FROM users WHERE tenant_id = $1 AND ($2::uuid",
        "FROM agents WHERE tenant_id = $1 AND ($2::uuid",
        "FROM roles WHERE tenant_id = $1 AND ($2::uuid",
        "FROM webhook_endpoints WHERE tenant_id = $1 AND ($2::uuid",
    ] {
        // The first page, and a page after a cursor.
        check_plan(&mut tx, marker, &format!("{tenant}, NULL, 51"), "id").await;
        check_plan(&mut tx, marker, &format!("{tenant}, '{user}', 51"), "id").await;
    }

    // GET /v1/api-keys and ?principal=
    api_keys::list(&mut tx, None, 51, Some("p-7"), now)
        .await
        .unwrap();
    let marker = "FROM api_keys WHERE tenant_id = $1 AND ($2::uuid";
    check_plan(&mut tx, marker, &format!("{tenant}, NULL, NULL, 51"), "id").await;
    check_plan(
        &mut tx,
        marker,
        &format!("{tenant}, NULL, 'p-7', 51"),
        "principal",
    )
    .await;

    // GET /v1/role-assignments, ?user_id=, ?agent_id=, ?role=
    rbac::list_assignments(
        &mut tx,
        Some(Principal::User(UserId::from_uuid(user))),
        Some(RoleId::from_uuid(role)),
        None,
        51,
    )
    .await
    .unwrap();
    let marker = "OR a.role_id = $4";
    let cases = [
        ("NULL, NULL, NULL, NULL".to_owned(), "id"),
        (format!("'{user}', NULL, NULL, NULL"), "user_id"),
        (format!("NULL, '{agent}', NULL, NULL"), "agent_id"),
        (format!("NULL, NULL, '{role}', NULL"), "role_id"),
    ];
    for (filters, column) in cases {
        check_plan(&mut tx, marker, &format!("{tenant}, {filters}, 51"), column).await;
    }

    // GET /v1/webhooks/messages/{id} (its deliveries) and /v1/webhooks/messages/{id}/attempts
    webhooks::deliveries_of(&mut tx, MessageId::from_uuid(message))
        .await
        .unwrap();
    webhooks::attempts_of(&mut tx, MessageId::from_uuid(message))
        .await
        .unwrap();
    for marker in [
        "FROM webhook_deliveries WHERE tenant_id = $1 AND message_id = $2",
        "FROM webhook_attempts WHERE tenant_id = $1 AND message_id = $2",
    ] {
        check_plan(
            &mut tx,
            marker,
            &format!("{tenant}, '{message}'"),
            "message_id",
        )
        .await;
    }

    // GET /v1/tools (every tool, or only enabled ones the caller may call) and its versions.
    tools::list(&mut tx, &tools::Visible::All, None, 51)
        .await
        .unwrap();
    let marker = "FROM tools WHERE tenant_id = $1 AND ($2 OR enabled)";
    for filters in [
        "true, true, '{}', NULL",
        "false, true, '{}', NULL",
        "false, false, ARRAY['tool-8'], NULL",
        "true, true, '{}', 'tool-500'",
    ] {
        check_plan(&mut tx, marker, &format!("{tenant}, {filters}, 51"), "name").await;
    }
    let tool = ToolName::parse("tool-8").unwrap();
    tools::versions(&mut tx, &tool).await.unwrap();
    let tool_id = one_id(&db, a.id, "tools", "AND name = 'tool-8'").await;
    check_plan(
        &mut tx,
        "FROM tool_versions WHERE tenant_id = $1 AND tool_id = $2",
        &format!("{tenant}, '{tool_id}'"),
        "tool_id",
    )
    .await;

    // GET /v1/auth/sessions: a user's, or an API key's (its client's).
    tokens::live_sessions_of(&mut tx, &SessionOwner::User("p-8".into()), now)
        .await
        .unwrap();
    check_plan(
        &mut tx,
        "s.principal_id = $2",
        &format!("{tenant}, 'p-8', now()"),
        "principal_id",
    )
    .await;
    tokens::live_sessions_of(&mut tx, &SessionOwner::Client("client-7".into()), now)
        .await
        .unwrap();
    check_plan(
        &mut tx,
        "s.client_id = $2",
        &format!("{tenant}, 'client-7', now()"),
        "client_id",
    )
    .await;
    tx.commit().await.unwrap();
}
