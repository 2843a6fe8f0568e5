//! Per-tenant quotas (docs/quotas.md): a write past a limit is refused inside its transaction
//! with a `quota-exceeded` problem naming kind, limit and usage, nothing is stored, the refusal is
//! audited, and audit events are counted but never refused.

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId};
use bulkhead_store::lifecycle::moves::{self, MoveOptions};
use bulkhead_store::{tenant::quotas, Access};
use bulkhead_test_support::counters::BytesCounterHeld;
use bulkhead_test_support::{spawn_app, TestApp, TestTenant, TestTier};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::{request_key, revoke_key, rotate_key};
use crate::helpers::webhooks::{create_endpoint, publish_order_paid};
use crate::helpers::{as_tenant, audit_events, call_as, create_session, get_ok_json, problem};

/// Sets (the operator's way, as the owner) the tenant's limit of `kind`; `None`: plan default.
async fn set_limit(app: &TestApp, tenant: TenantId, kind: &str, limit: Option<i64>) {
    let owner = app.db.owner_store().await;
    let ctx = TenantContext::for_test(tenant, Actor::System { component: "cli" }, RequestId::new());
    let mut tx = owner.begin(&ctx, Access::ReadWrite).await.unwrap();
    quotas::set_override(&mut tx, kind, limit).await.unwrap();
    tx.commit().await.unwrap();
    owner.close().await;
}

async fn usage(app: &TestApp, tenant: &TestTenant) -> Value {
    get_ok_json(app, tenant, "/v1/usage").await
}

/// `(used, limit)` of one kind.
async fn quota(app: &TestApp, tenant: &TestTenant, kind: &str) -> (i64, Option<i64>) {
    let body = usage(app, tenant).await;
    let entry = body["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {body}"))
        .clone();
    (entry["used"].as_i64().unwrap(), entry["limit"].as_i64())
}

async fn try_create_session(app: &TestApp, tenant: &TestTenant, title: &str) -> reqwest::Response {
    call_as(
        app,
        tenant,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "agent-7", "title": title })),
    )
    .await
}

async fn session_count(app: &TestApp, tenant: &TestTenant) -> usize {
    get_ok_json(app, tenant, "/v1/sessions?limit=200").await["data"]
        .as_array()
        .unwrap()
        .len()
}

async fn assert_quota_problem(response: reqwest::Response, kind: &str, limit: i64, used: i64) {
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["type"], "https://bulkhead.dev/problems/quota-exceeded");
    assert_eq!(body["quota"], kind, "{body}");
    assert_eq!(body["limit"], limit, "{body}");
    assert_eq!(body["usage"], used, "{body}");
    assert!(body["detail"].as_str().unwrap().contains(kind));
}

#[tokio::test]
async fn creating_past_the_quota_is_refused_by_name_stores_nothing_and_is_audited() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    set_limit(&app, acme.id, "sessions", Some(3)).await;
    for n in 0..3 {
        create_session(&app, &acme, &format!("s{n}")).await;
    }
    let refused = try_create_session(&app, &acme, "one too many").await;
    assert_quota_problem(refused, "sessions", 3, 3).await;
    assert_eq!(session_count(&app, &acme).await, 3);
    assert_eq!(quota(&app, &acme, "sessions").await, (3, Some(3)));
    // No creation event for the refused one, and one refusal event naming the quota.
    assert_eq!(audit_events(&app, &acme, "session.create").await.len(), 3);
    let refusals = audit_events(&app, &acme, "quota.exceeded").await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["outcome"], "blocked");
    assert_eq!(refusals[0]["metadata"]["kind"], "sessions");
    assert_eq!(refusals[0]["metadata"]["limit"], 3);
    assert_eq!(refusals[0]["metadata"]["route"], "POST /v1/sessions");
}

#[tokio::test]
async fn concurrent_creates_at_the_edge_never_pass_the_limit() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    set_limit(&app, acme.id, "sessions", Some(5)).await;
    create_session(&app, &acme, "first").await;
    let attempts = (0..24).map(|n| {
        let (app, acme) = (&app, &acme);
        async move {
            try_create_session(app, acme, &format!("racer {n}"))
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    for status in &statuses {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::FORBIDDEN,
            "{statuses:?}"
        );
    }
    assert_eq!(created, 4, "{statuses:?}");
    assert_eq!(session_count(&app, &acme).await, 5);
    assert_eq!(quota(&app, &acme, "sessions").await, (5, Some(5)));
}

#[tokio::test]
async fn an_override_raises_and_lowers_the_limit_and_default_restores_the_plan() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (_, plan_limit) = quota(&app, &acme, "sessions").await;
    assert_eq!(plan_limit, Some(100_000), "the standard plan's default");
    set_limit(&app, acme.id, "sessions", Some(1)).await;
    create_session(&app, &acme, "one").await;
    assert_quota_problem(
        try_create_session(&app, &acme, "two").await,
        "sessions",
        1,
        1,
    )
    .await;
    set_limit(&app, acme.id, "sessions", Some(3)).await;
    create_session(&app, &acme, "two").await;
    create_session(&app, &acme, "three").await;
    // Lowered below what is stored: nothing is removed, nothing more is created.
    set_limit(&app, acme.id, "sessions", Some(2)).await;
    assert_quota_problem(
        try_create_session(&app, &acme, "four").await,
        "sessions",
        2,
        3,
    )
    .await;
    assert_eq!(session_count(&app, &acme).await, 3);
    let body = usage(&app, &acme).await;
    let sessions = body["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "sessions")
        .unwrap()
        .clone();
    assert_eq!(
        sessions,
        json!({ "kind": "sessions", "used": 3, "limit": 2, "plan_limit": 100_000, "overridden": true })
    );
    set_limit(&app, acme.id, "sessions", None).await;
    create_session(&app, &acme, "four").await;
    assert_eq!(quota(&app, &acme, "sessions").await, (4, Some(100_000)));
}

#[tokio::test]
async fn deleting_frees_room() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    set_limit(&app, acme.id, "sessions", Some(2)).await;
    let first = create_session(&app, &acme, "one").await;
    create_session(&app, &acme, "two").await;
    assert_quota_problem(
        try_create_session(&app, &acme, "three").await,
        "sessions",
        2,
        2,
    )
    .await;
    let id = first["id"].as_str().unwrap();
    let deleted = call_as(
        &app,
        &acme,
        Method::DELETE,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(quota(&app, &acme, "sessions").await, (1, Some(2)));
    create_session(&app, &acme, "three").await;
    assert_eq!(session_count(&app, &acme).await, 2);
}

#[tokio::test]
async fn stored_bytes_are_counted_and_limited() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (before, _) = quota(&app, &acme, "stored_bytes").await;
    // Title bytes plus the metadata's JSON text as PostgreSQL prints it (`{"k": "v"}`).
    let response = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "a", "title": "héllo", "metadata": { "k": "v" } })),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let weight = "héllo".len() as i64 + r#"{"k": "v"}"#.len() as i64;
    assert_eq!(quota(&app, &acme, "stored_bytes").await.0, before + weight);
    // Room for 100 more bytes: a 1 KiB metadata is refused, by name, and not stored.
    set_limit(&app, acme.id, "stored_bytes", Some(before + weight + 100)).await;
    let big = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "a", "metadata": { "blob": "x".repeat(1024) } })),
    )
    .await;
    assert_quota_problem(big, "stored_bytes", before + weight + 100, before + weight).await;
    // Growing a session through PATCH is refused the same way.
    let grown = call_as(
        &app,
        &acme,
        Method::PATCH,
        &format!("/v1/sessions/{id}"),
        Some(json!({ "metadata": { "blob": "x".repeat(1024) } })),
    )
    .await;
    assert_quota_problem(
        grown,
        "stored_bytes",
        before + weight + 100,
        before + weight,
    )
    .await;
    assert_eq!(session_count(&app, &acme).await, 1);
    assert_eq!(quota(&app, &acme, "stored_bytes").await.0, before + weight);
}

#[tokio::test]
async fn audit_events_are_counted_and_never_refused() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    // Even an operator limit of 0 on the audit log refuses nothing.
    set_limit(&app, acme.id, "audit_events", Some(0)).await;
    set_limit(&app, acme.id, "sessions", Some(1)).await;
    let (audited_before, _) = quota(&app, &acme, "audit_events").await;
    create_session(&app, &acme, "fills the quota").await;
    // Full: the refusal is still audited, and other changes are still made and audited.
    assert_quota_problem(
        try_create_session(&app, &acme, "refused").await,
        "sessions",
        1,
        1,
    )
    .await;
    let agent = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/agents",
        Some(json!({ "name": "still-works" })),
    )
    .await;
    assert_eq!(agent.status(), StatusCode::CREATED);
    assert_eq!(audit_events(&app, &acme, "quota.exceeded").await.len(), 1);
    assert_eq!(audit_events(&app, &acme, "agent.create").await.len(), 1);
    let (audited_after, limit) = quota(&app, &acme, "audit_events").await;
    assert_eq!(limit, Some(0));
    assert!(
        audited_after >= audited_before + 3,
        "{audited_before} -> {audited_after}"
    );
}

#[tokio::test]
async fn usage_is_the_callers_own_and_does_not_depend_on_another_tenant() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let before = usage(&app, &globex).await;
    set_limit(&app, acme.id, "sessions", Some(7)).await;
    for n in 0..3 {
        create_session(&app, &acme, &format!("a{n}")).await;
    }
    assert_eq!(quota(&app, &acme, "sessions").await, (3, Some(7)));
    // B's answer is the same whatever A stores or is allowed.
    let after = usage(&app, &globex).await;
    let without_audit = |v: &Value| {
        v["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["kind"] != "audit_events")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(without_audit(&before), without_audit(&after));
    assert_eq!(quota(&app, &globex, "sessions").await, (0, Some(100_000)));
    // A's key on B's subdomain (and B's on A's) is refused before anything is read.
    let crossed = app
        .client
        .get(app.tenant_url(&globex.slug, "/v1/usage"))
        .bearer_auth(&acme.key)
        .send()
        .await
        .unwrap();
    assert_eq!(crossed.status(), StatusCode::UNAUTHORIZED);
    let body = crossed.text().await.unwrap();
    assert!(!body.contains("\"used\""));
}

#[tokio::test]
async fn usage_counts_keys_until_revoked_and_not_the_built_in_roles() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    // The bootstrap admin key.
    assert_eq!(quota(&app, &acme, "api_keys").await.0, 1);
    let created = request_key(&app, &acme, &json!({ "scopes": ["sessions:read"] })).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let key: Value = created.json().await.unwrap();
    assert_eq!(quota(&app, &acme, "api_keys").await.0, 2);
    let id = key["api_key"]["id"].as_str().unwrap();
    let revoked = revoke_key(&app, &acme, id).await;
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(quota(&app, &acme, "api_keys").await.0, 1);
    // The built-in roles are not counted.
    assert_eq!(quota(&app, &acme, "roles").await.0, 0);
    assert_eq!(quota(&app, &acme, "users").await.0, 0);
}

#[tokio::test]
async fn a_move_keeps_the_counters_and_the_limits() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    set_limit(&app, acme.id, "sessions", Some(3)).await;
    create_session(&app, &acme, "one").await;
    create_session(&app, &acme, "two").await;
    let before = usage(&app, &acme).await;
    let owner = app.db.owner_store().await;
    for tier in [TestTier::Schema, TestTier::Shared] {
        let placement = tier.placement(&app.db, &owner).await;
        moves::move_tenant(&owner, acme.id, placement, MoveOptions::default())
            .await
            .unwrap();
        // Right after a switch a process may still route to the old copy for a moment: a
        // retryable 503 `tenant-moving`, as for any request.
        let mut after = Value::Null;
        for _ in 0..30 {
            let response = call_as(&app, &acme, Method::GET, "/v1/usage", None).await;
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
            assert_eq!(response.status(), StatusCode::OK);
            after = response.json().await.unwrap();
            break;
        }
        // The copy counted nothing twice; only the move's own audit events were added.
        let kinds = |v: &Value| {
            v["quotas"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|q| q["kind"] != "audit_events")
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&before), kinds(&after), "{tier:?}");
    }
    create_session(&app, &acme, "three").await;
    assert_quota_problem(
        try_create_session(&app, &acme, "four").await,
        "sessions",
        3,
        3,
    )
    .await;
    owner.close().await;
}

#[tokio::test]
async fn tenant_messages_are_limited_and_tool_versions_counted() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    set_limit(&app, acme.id, "webhook_messages", Some(1)).await;
    let publish = || {
        as_tenant(&app, &acme, Method::POST, "/v1/webhooks/messages")
            .json(&json!({ "event_type": "order.paid", "payload": { "n": 1 } }))
            .send()
    };
    assert_eq!(publish().await.unwrap().status(), StatusCode::ACCEPTED);
    assert_quota_problem(publish().await.unwrap(), "webhook_messages", 1, 1).await;
    assert_eq!(quota(&app, &acme, "webhook_messages").await, (1, Some(1)));

    set_limit(&app, acme.id, "tool_versions", Some(1)).await;
    let created = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/tools",
        Some(json!({
            "name": "weather",
            "description": "Returns the forecast.",
            "input_schema": { "type": "object" },
            "endpoint_url": "https://tools.example/run",
        })),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(quota(&app, &acme, "tools").await.0, 1);
    assert_eq!(quota(&app, &acme, "tool_versions").await.0, 1);
    // A new version would be the second: refused, and the tool keeps its first.
    let updated = call_as(
        &app,
        &acme,
        Method::PATCH,
        "/v1/tools/weather",
        Some(json!({ "description": "Returns the forecast, better." })),
    )
    .await;
    assert_quota_problem(updated, "tool_versions", 1, 1).await;
    let deleted = call_as(&app, &acme, Method::DELETE, "/v1/tools/weather", None).await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    // Deleting the tool deletes its versions, which frees both.
    assert_eq!(quota(&app, &acme, "tools").await.0, 0);
    assert_eq!(quota(&app, &acme, "tool_versions").await.0, 0);
}

#[tokio::test]
async fn the_serving_role_cannot_change_a_limit() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let served = app.db.app_store().await;
    let ctx = TenantContext::for_test(
        acme.id,
        Actor::System { component: "test" },
        RequestId::new(),
    );
    let mut tx = served.begin(&ctx, Access::ReadWrite).await.unwrap();
    let refused = quotas::set_override(&mut tx, "sessions", Some(1_000_000_000)).await;
    assert!(
        matches!(refused, Err(bulkhead_store::StoreError::AccessDenied)),
        "{refused:?}"
    );
    drop(tx);
    // Nor set an override by hand.
    let mut tx = served.begin(&ctx, Access::ReadWrite).await.unwrap();
    let direct = sqlx::query("UPDATE tenant_quotas SET override_limit = 5 WHERE tenant_id = $1")
        .bind(acme.id.uuid())
        .execute(tx.conn())
        .await;
    assert!(direct.is_err());
    drop(tx);
    served.close().await;
}

#[tokio::test]
async fn platform_messages_are_counted_and_never_refused() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_endpoint(
        &app,
        &acme,
        json!({ "url": "https://hooks.receiver.example/in",
                       "event_types": ["session.created"] }),
    )
    .await;
    set_limit(&app, acme.id, "webhook_messages", Some(0)).await;
    // Creating a session raises `session.created` for the endpoint: a platform message, stored
    // and counted past the limit, since refusing it would refuse the session.
    create_session(&app, &acme, "one").await;
    create_session(&app, &acme, "two").await;
    // Counted apart, in `platform_messages` (and their payloads in `platform_bytes`), never in
    // the counters that refuse the tenant's own writes: they cannot lock the tenant out.
    assert_eq!(quota(&app, &acme, "platform_messages").await, (2, None));
    assert!(quota(&app, &acme, "platform_bytes").await.0 > 0);
    assert_eq!(quota(&app, &acme, "webhook_messages").await, (0, Some(0)));
    set_limit(&app, acme.id, "webhook_messages", Some(1)).await;
    let publish = || {
        as_tenant(&app, &acme, Method::POST, "/v1/webhooks/messages")
            .json(&json!({ "event_type": "order.paid", "payload": {} }))
            .send()
    };
    assert_eq!(publish().await.unwrap().status(), StatusCode::ACCEPTED);
    // The tenant's own messages are refused at its limit.
    assert_quota_problem(publish().await.unwrap(), "webhook_messages", 1, 1).await;
}

#[tokio::test]
async fn writers_of_two_kinds_at_once_do_not_deadlock() {
    // A session create whose platform message an endpoint receives counts bytes, sessions and
    // webhook messages; a published message counts webhook messages and bytes. Run together,
    // they must queue on the counters, never hold one each and wait for the other (PostgreSQL
    // would abort one of them: a 500).
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_endpoint(
        &app,
        &acme,
        json!({ "url": "https://hooks.receiver.example/in",
                       "event_types": ["session.created"] }),
    )
    .await;
    let (app, acme) = (&app, &acme);
    let sessions = (0..12).map(|n| async move {
        try_create_session(app, acme, &format!("s{n}"))
            .await
            .status()
    });
    let messages = (0..12).map(|n| async move {
        call_as(
            app,
            acme,
            Method::POST,
            "/v1/webhooks/messages",
            Some(json!({ "event_type": "order.paid", "payload": { "n": n } })),
        )
        .await
        .status()
    });
    let (sessions, messages) = tokio::join!(
        futures::future::join_all(sessions),
        futures::future::join_all(messages)
    );
    assert!(
        sessions.iter().all(|s| *s == StatusCode::CREATED),
        "{sessions:?}"
    );
    assert!(
        messages.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{messages:?}"
    );
    assert_eq!(quota(app, acme, "webhook_messages").await.0, 12);
    assert_eq!(quota(app, acme, "platform_messages").await.0, 12);
}

/// An endpoint subscribed to everything, and one tenant message delivered to it.
async fn endpoint_and_message(app: &TestApp, tenant: &TestTenant) -> (String, String) {
    let endpoint = create_endpoint(
        app,
        tenant,
        json!({ "url": "https://hooks.receiver.example/in" }),
    )
    .await;
    let message = publish_order_paid(app, tenant).await;
    (endpoint["id"].as_str().unwrap().to_owned(), message)
}

/// Writes one attempt as the delivery worker does (the serving role, in the tenant's context),
/// with a 4,000-byte response sample, for every delivery of the tenant's messages of `source`.
async fn record_attempts(app: &TestApp, tenant: TenantId, source: &str) -> u64 {
    let served = app.db.app_store().await;
    let ctx = TenantContext::for_test(
        tenant,
        Actor::System {
            component: "webhook-worker",
        },
        RequestId::new(),
    );
    let mut tx = served.begin(&ctx, Access::ReadWrite).await.unwrap();
    let done = sqlx::query(
        "INSERT INTO webhook_attempts (tenant_id, id, delivery_id, message_id, endpoint_id, \
         attempted_at, outcome, status_code, error, response_sample) \
         SELECT d.tenant_id, gen_random_uuid(), d.id, d.message_id, d.endpoint_id, now(), \
                'failed', 500, 'boom', repeat('x', 3996) \
         FROM webhook_deliveries d JOIN webhook_messages m \
           ON m.tenant_id = d.tenant_id AND m.id = d.message_id \
         WHERE m.source = $1",
    )
    .bind(source)
    .execute(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    served.close().await;
    done.rows_affected()
}

#[tokio::test]
async fn delivery_attempts_count_in_stored_bytes_and_are_never_refused() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    endpoint_and_message(&app, &acme).await;
    let (bytes, _) = quota(&app, &acme, "stored_bytes").await;
    // At the limit already: the worker's attempt is stored and counted all the same.
    set_limit(&app, acme.id, "stored_bytes", Some(bytes)).await;
    assert_eq!(record_attempts(&app, acme.id, "tenant").await, 1);
    assert_eq!(
        quota(&app, &acme, "stored_bytes").await,
        (bytes + 4000, Some(bytes))
    );
    assert_eq!(quota(&app, &acme, "webhook_attempts").await, (1, None));
}

#[tokio::test]
async fn resend_and_recover_are_refused_at_the_bytes_or_messages_limit() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (endpoint, message) = endpoint_and_message(&app, &acme).await;
    let resend = || {
        as_tenant(
            &app,
            &acme,
            Method::POST,
            &format!("/v1/webhooks/messages/{message}/resend"),
        )
        .send()
    };
    let recover = || {
        as_tenant(
            &app,
            &acme,
            Method::POST,
            &format!("/v1/webhooks/endpoints/{endpoint}/recover"),
        )
        .json(&json!({ "since": "2020-01-01T00:00:00Z" }))
        .send()
    };
    assert_eq!(resend().await.unwrap().status(), StatusCode::OK);
    assert_eq!(recover().await.unwrap().status(), StatusCode::OK);
    let (bytes, _) = quota(&app, &acme, "stored_bytes").await;
    set_limit(&app, acme.id, "stored_bytes", Some(bytes)).await;
    assert_quota_problem(resend().await.unwrap(), "stored_bytes", bytes, bytes).await;
    assert_quota_problem(recover().await.unwrap(), "stored_bytes", bytes, bytes).await;
    set_limit(&app, acme.id, "stored_bytes", None).await;
    set_limit(&app, acme.id, "webhook_messages", Some(1)).await;
    assert_quota_problem(resend().await.unwrap(), "webhook_messages", 1, 1).await;
    let refusals = audit_events(&app, &acme, "quota.exceeded").await;
    assert_eq!(refusals.len(), 3, "{refusals:?}");
}

#[tokio::test]
async fn endpoint_tests_count_and_are_refused_as_the_tenants_messages() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let (endpoint, _) = endpoint_and_message(&app, &acme).await;
    let test = || {
        as_tenant(
            &app,
            &acme,
            Method::POST,
            &format!("/v1/webhooks/endpoints/{endpoint}/test"),
        )
        .send()
    };
    assert_eq!(test().await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(quota(&app, &acme, "webhook_messages").await.0, 2);
    assert_eq!(quota(&app, &acme, "platform_messages").await.0, 0);
    // Its attempts are the tenant's bytes too.
    let (bytes, _) = quota(&app, &acme, "stored_bytes").await;
    assert_eq!(record_attempts(&app, acme.id, "platform").await, 1);
    assert_eq!(quota(&app, &acme, "stored_bytes").await.0, bytes + 4000);
    set_limit(&app, acme.id, "webhook_messages", Some(2)).await;
    assert_quota_problem(test().await.unwrap(), "webhook_messages", 2, 2).await;
}

#[tokio::test]
async fn attempts_of_platform_messages_count_apart() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_endpoint(
        &app,
        &acme,
        json!({ "url": "https://hooks.receiver.example/in",
                       "event_types": ["session.created"] }),
    )
    .await;
    create_session(&app, &acme, "one").await;
    let (bytes, _) = quota(&app, &acme, "stored_bytes").await;
    let (platform, _) = quota(&app, &acme, "platform_bytes").await;
    assert_eq!(record_attempts(&app, acme.id, "platform").await, 1);
    assert_eq!(quota(&app, &acme, "stored_bytes").await.0, bytes);
    assert_eq!(
        quota(&app, &acme, "platform_bytes").await.0,
        platform + 4000
    );
}

#[tokio::test]
async fn screening_decisions_are_counted() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let served = app.db.app_store().await;
    let ctx = TenantContext::for_test(
        acme.id,
        Actor::System { component: "test" },
        RequestId::new(),
    );
    let mut tx = served.begin(&ctx, Access::ReadWrite).await.unwrap();
    sqlx::query(
        "INSERT INTO screening_decisions (tenant_id, id, subject, field, policy, verdict, rules, \
         rules_version, actor_id, request_id) \
         VALUES ($1, gen_random_uuid(), 'tool:x', 'description', 'reject', 'rejected', '{}', \
         'v1', 'key:x', 'r')",
    )
    .bind(acme.id.uuid())
    .execute(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    served.close().await;
    assert_eq!(quota(&app, &acme, "screening_decisions").await, (1, None));
}

#[tokio::test]
async fn disabling_a_user_frees_room() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    set_limit(&app, acme.id, "users", Some(1)).await;
    let create = |email: &'static str| {
        as_tenant(&app, &acme, Method::POST, "/v1/users")
            .json(&json!({ "email": email, "password": "a long enough password" }))
            .send()
    };
    let first = create("ada@example.com").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_quota_problem(create("bob@example.com").await.unwrap(), "users", 1, 1).await;
    let id = first["id"].as_str().unwrap();
    let disabled = call_as(
        &app,
        &acme,
        Method::PATCH,
        &format!("/v1/users/{id}"),
        Some(json!({ "status": "disabled" })),
    )
    .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    assert_eq!(quota(&app, &acme, "users").await.0, 0);
    assert_eq!(
        create("bob@example.com").await.unwrap().status(),
        StatusCode::CREATED
    );
    // Enabling the first again would make two: refused like a create.
    let enabled = call_as(
        &app,
        &acme,
        Method::PATCH,
        &format!("/v1/users/{id}"),
        Some(json!({ "status": "active" })),
    )
    .await;
    assert_quota_problem(enabled, "users", 1, 1).await;
}

#[tokio::test]
async fn a_full_users_quota_is_refused_before_any_hashing() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    set_limit(&app, acme.id, "users", Some(0)).await;
    let hashes = app.state.hashing().hashes_started();
    let refused = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/users",
        Some(json!({ "email": "ada@example.com", "password": "a long enough password" })),
    )
    .await;
    assert_quota_problem(refused, "users", 0, 0).await;
    assert_eq!(
        app.state.hashing().hashes_started(),
        hashes,
        "a full quota still cost a password hash"
    );
    assert_eq!(audit_events(&app, &acme, "quota.exceeded").await.len(), 1);
}

#[tokio::test]
async fn rotating_a_key_at_the_keys_limit_is_not_refused() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    // The bootstrap key is the only one, and the limit.
    set_limit(&app, acme.id, "api_keys", Some(1)).await;
    let listed = call_as(&app, &acme, Method::GET, "/v1/api-keys", None).await;
    let listed: Value = listed.json().await.unwrap();
    let id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let rotated = rotate_key(&app, &acme, &id, None).await;
    let status = rotated.status();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        rotated.text().await.unwrap()
    );
    assert_eq!(quota(&app, &acme, "api_keys").await, (1, Some(1)));
    // A second key is still refused.
    let created = request_key(&app, &acme, &json!({ "scopes": ["sessions:read"] })).await;
    assert_quota_problem(created, "api_keys", 1, 1).await;
}

#[tokio::test]
async fn the_serving_role_cannot_write_the_counters() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_session(&app, &acme, "one").await;
    let served = app.db.app_store().await;
    let ctx = TenantContext::for_test(
        acme.id,
        Actor::System { component: "test" },
        RequestId::new(),
    );
    for sql in [
        "UPDATE tenant_quotas SET used = 0 WHERE tenant_id = $1",
        "INSERT INTO tenant_quotas (tenant_id, kind, used) VALUES ($1, 'sessions', 0) \
         ON CONFLICT (tenant_id, kind) DO UPDATE SET used = 0",
        "SELECT bulkhead.quota_charge($1, 'sessions', -1, false)",
    ] {
        let mut tx = served.begin(&ctx, Access::ReadWrite).await.unwrap();
        let direct = sqlx::query(sql)
            .bind(acme.id.uuid())
            .execute(tx.conn())
            .await;
        assert!(direct.is_err(), "{sql} was allowed");
        drop(tx);
    }
    served.close().await;
    assert_eq!(quota(&app, &acme, "sessions").await.0, 1);
}

#[tokio::test]
async fn a_prefix_confined_credential_is_not_told_the_tenant_wide_usage() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    set_limit(&app, acme.id, "sessions", Some(0)).await;
    let (_, delegated, prefixed) =
        crate::helpers::oauth::admin_and_delegated_tokens(&app, &acme).await;
    let create = |token: String| {
        app.client
            .post(app.tenant_url("acme", "/v1/sessions"))
            .bearer_auth(token)
            .json(&json!({ "agent_id": "campaign-bot", "namespace": "marketing/spring" }))
            .send()
    };
    // An unconfined credential is told the usage.
    assert_quota_problem(create(delegated).await.unwrap(), "sessions", 0, 0).await;
    let (status, body) = problem(create(prefixed).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["quota"], "sessions", "{body}");
    assert_eq!(body["limit"], 0, "{body}");
    assert!(body.get("usage").is_none(), "{body}");
    assert!(!body["detail"].as_str().unwrap().contains("used"), "{body}");
    // Still audited, with the usage.
    assert_eq!(audit_events(&app, &acme, "quota.exceeded").await.len(), 2);
}

/// Marks every delivery of the tenant finished, as the worker does after an answer.
async fn finish_deliveries(app: &TestApp, tenant: TenantId) {
    let served = app.db.app_store().await;
    let ctx = TenantContext::for_test(
        tenant,
        Actor::System {
            component: "webhook-worker",
        },
        RequestId::new(),
    );
    let mut tx = served.begin(&ctx, Access::ReadWrite).await.unwrap();
    sqlx::query("UPDATE webhook_deliveries SET status = 'succeeded'")
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    served.close().await;
}

#[tokio::test]
async fn the_retention_sweep_deletes_finished_messages_and_frees_their_room() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_endpoint(
        &app,
        &acme,
        json!({ "url": "https://hooks.receiver.example/in" }),
    )
    .await;
    let publish = || publish_order_paid(&app, &acme);
    let old = publish().await;
    // A platform message too (the endpoint takes every event type).
    create_session(&app, &acme, "one").await;
    let (stored, _) = quota(&app, &acme, "stored_bytes").await;
    record_attempts(&app, acme.id, "tenant").await;
    record_attempts(&app, acme.id, "platform").await;
    finish_deliveries(&app, acme.id).await;
    // One more, still pending: kept whatever its age.
    let pending = publish().await;
    assert_eq!(quota(&app, &acme, "webhook_messages").await.0, 2);
    assert_eq!(quota(&app, &acme, "platform_messages").await.0, 1);
    assert_eq!(quota(&app, &acme, "webhook_attempts").await.0, 2);
    // The tenant's attempt is in its bytes, the platform's in the platform's.
    assert!(quota(&app, &acme, "stored_bytes").await.0 > stored + 4000);
    assert!(quota(&app, &acme, "platform_bytes").await.0 > 4000);

    let worker = bulkhead_server::service::worker::Worker::new(app.db.app_store().await);
    // Within the retention window: nothing goes.
    let now = chrono::Utc::now();
    assert_eq!(worker.sweep_webhook_retention(now).await.unwrap(), 0);
    let later =
        now + chrono::Duration::days(bulkhead_server::service::worker::WEBHOOK_RETENTION_DAYS + 1);
    assert_eq!(worker.sweep_webhook_retention(later).await.unwrap(), 2);
    assert_eq!(quota(&app, &acme, "webhook_messages").await.0, 1);
    assert_eq!(quota(&app, &acme, "platform_messages").await.0, 0);
    assert_eq!(quota(&app, &acme, "platform_bytes").await.0, 0);
    assert_eq!(quota(&app, &acme, "webhook_attempts").await.0, 0);
    // Left: the endpoint, the session and the pending message's payload (as many bytes as the
    // old one's).
    assert_eq!(quota(&app, &acme, "stored_bytes").await.0, stored);
    let fetch = |id: String| {
        as_tenant(
            &app,
            &acme,
            Method::GET,
            &format!("/v1/webhooks/messages/{id}"),
        )
        .send()
    };
    assert_eq!(fetch(old).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(fetch(pending).await.unwrap().status(), StatusCode::OK);
}

/// A change that writes its audit event before a platform event (a key mint: the key, its
/// audit event, then `api_key.created`) never holds the `audit_events` counter while it waits
/// for `stored_bytes`: a publish takes `stored_bytes` and then `audit_events` at its commit, so
/// the other order deadlocks. It held when the platform event's charge was deferred to commit
/// along with the tenant's messages (a review caught it before that landed; migration 0045
/// defers the tenant's messages only).
#[tokio::test]
async fn a_mint_waiting_for_the_bytes_counter_does_not_hold_the_audit_counter() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    create_endpoint(
        &app,
        &acme,
        json!({ "url": "https://hooks.receiver.example/in", "event_types": ["api_key.created"] }),
    )
    .await;
    // Every counter row exists, so the probe below sees the ones the waiter holds.
    assert_eq!(
        request_key(&app, &acme, &json!({ "scopes": ["sessions:read"] }))
            .await
            .status(),
        StatusCode::CREATED
    );
    let su = sqlx::PgPool::connect_with(app.db.superuser_options.clone())
        .await
        .unwrap();
    let blocker = BytesCounterHeld::take(&su, acme.id.uuid()).await;
    let minting = async {
        request_key(&app, &acme, &json!({ "scopes": ["sessions:read"] }))
            .await
            .status()
    };
    let checking = async {
        blocker.wait_for_a_waiter("the mint").await;
        let free = blocker.others_free("kind = 'audit_events'").await;
        blocker.release().await;
        free
    };
    let (status, free) = tokio::join!(minting, checking);
    assert!(
        free.is_ok(),
        "a mint waiting for stored_bytes held the audit counter: {free:?}"
    );
    assert_eq!(status, StatusCode::CREATED);
}

/// The serving role cannot switch the counters off for a definer function it may call: the
/// retention purge (`bulkhead.webhook_purge_finished`, SECURITY DEFINER) lowers the counters of
/// what it deletes even when the serving session has set the moves' `bulkhead.quota_replay`
/// (which the triggers believed from any `current_user` but the serving role's, and inside a
/// definer function that is the owner: migration 0046).
#[tokio::test]
async fn the_serving_role_cannot_purge_without_lowering_the_counters() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    publish_order_paid(&app, &acme).await;
    assert_eq!(quota(&app, &acme, "webhook_messages").await.0, 1);
    let served = sqlx::PgPool::connect_with(app.db.app_options.clone())
        .await
        .unwrap();
    let mut tx = served.begin().await.unwrap();
    sqlx::query(
        "SELECT set_config('bulkhead.tenant_id', $1, true), \
                set_config('bulkhead.quota_replay', 'on', true)",
    )
    .bind(acme.id.uuid().to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
    let purged: i32 =
        sqlx::query_scalar("SELECT bulkhead.webhook_purge_finished(now() + interval '1 day', 100)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    served.close().await;
    assert_eq!(purged, 1, "the finished message was purged");
    assert_eq!(
        quota(&app, &acme, "webhook_messages").await.0,
        0,
        "the purge left the counter up"
    );
}
