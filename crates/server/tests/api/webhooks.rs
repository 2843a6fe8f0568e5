//! `/v1/webhooks`: the endpoint lifecycle, the URL policy at registration, publishing, and
//! another tenant's ids answering exactly like missing ones. No delivery happens here (the
//! delivery worker is tested in `bulkhead-webhooks`); nothing in this file connects anywhere.

use bulkhead_core::{Actor, EndpointId, MessageId, TenantContext};
use bulkhead_store::tenant::webhooks as store;
use bulkhead_store::Access;
use bulkhead_test_support::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::mint_key;
use crate::helpers::webhooks::create_endpoint;
use crate::helpers::{as_tenant, call_as, get_json, problem};

#[tokio::test]
async fn endpoint_lifecycle_shows_the_secret_once() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let created = create_endpoint(
        &app,
        &a,
        json!({ "url": "https://hooks.receiver.example/in", "description": "billing",
                "event_types": ["invoice.paid"], "rate_limit_per_second": 10,
                "headers": { "X-Team": "billing" } }),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ep_"));
    let secret = created["secret"].as_str().unwrap();
    assert!(bulkhead_webhooks::Secret::parse(secret).is_ok());

    let got: Value = get_json(&app, &a, &format!("/v1/webhooks/endpoints/{id}")).await;
    assert!(got.get("secret").is_none(), "GET must not show the secret");
    assert_eq!(got["url"], "https://hooks.receiver.example/in");
    assert_eq!(got["event_types"], json!(["invoice.paid"]));

    let listed: Value = get_json(&app, &a, "/v1/webhooks/endpoints?limit=1").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(listed["data"][0].get("secret").is_none());

    let patched: Value = call_as(
        &app,
        &a,
        Method::PATCH,
        &format!("/v1/webhooks/endpoints/{id}"),
        Some(json!({ "enabled": false, "rate_limit_per_second": null })),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(patched["enabled"], false);
    assert!(patched["rate_limit_per_second"].is_null());

    let rotated: Value = call_as(
        &app,
        &a,
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/rotate-secret"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);

    let tested = call_as(
        &app,
        &a,
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/test"),
        None,
    )
    .await;
    assert_eq!(tested.status(), StatusCode::ACCEPTED);
    let tested: Value = tested.json().await.unwrap();
    assert_eq!(tested["deliveries"], 1);
    let message = tested["id"].as_str().unwrap();
    let shown: Value = get_json(&app, &a, &format!("/v1/webhooks/messages/{message}")).await;
    assert_eq!(shown["message"]["event_type"], "webhook.test");
    assert_eq!(shown["deliveries"][0]["status"], "pending");

    let deleted = call_as(
        &app,
        &a,
        Method::DELETE,
        &format!("/v1/webhooks/endpoints/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = call_as(
        &app,
        &a,
        Method::GET,
        &format!("/v1/webhooks/endpoints/{id}"),
        None,
    )
    .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registration_refuses_hostile_urls_and_headers_with_a_named_rule() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    for (url, rule) in [
        ("http://hooks.receiver.example/", "scheme"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://0x7f.2/", "canonical dotted decimal"),
        ("https://010.0.0.1/", "canonical dotted decimal"),
        ("https://user@hooks.receiver.example/", "user name"),
        ("https://hooks.receiver.example:22/", "port 22"),
        ("https://acme.bulkhead.test/", "platform-owned"),
        ("https://metadata.google.internal/", "special-use"),
        ("https://hooks.receiver.example\\@127.0.0.1/", "backslash"),
    ] {
        let response = call_as(
            &app,
            &a,
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(json!({ "url": url })),
        )
        .await;
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(rule), "{url}: {detail}");
    }
    for headers in [
        json!({ "Authorization": "Bearer x" }),
        json!({ "Host": "evil" }),
        json!({ "Transfer-Encoding": "chunked" }),
        json!({ "webhook-signature": "v1,x" }),
    ] {
        let response = call_as(
            &app,
            &a,
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(json!({ "url": "https://hooks.receiver.example/", "headers": headers })),
        )
        .await;
        let (status, _) = problem(response).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // Every refusal of a URL is an audit event.
    let ctx = TenantContext::for_test(
        a.id,
        Actor::System { component: "test" },
        Default::default(),
    );
    let mut tx = app
        .state
        .store()
        .begin(&ctx, Access::ReadOnly)
        .await
        .unwrap();
    let events = bulkhead_store::audit::recent(&mut tx, 50).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == "webhook.blocked" && e.outcome == "blocked")
            .count(),
        10
    );
}

#[tokio::test]
async fn bad_input_is_a_problem_never_a_500() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let cases: Vec<(Method, &str, Option<&str>, StatusCode)> = vec![
        (
            Method::POST,
            "/v1/webhooks/endpoints",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(r#"{"url": 5}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(r#"{"url": "https://a.receiver.example/", "event_types": ["Bad Type"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(r#"{"url": "https://a.receiver.example/", "rate_limit_per_second": 0}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/v1/webhooks/endpoints/not-an-id",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/webhooks/endpoints?limit=1000",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/v1/webhooks/messages/msg_zz",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/webhooks/messages",
            Some(r#"{"event_type": "security.refresh_token_reuse", "payload": {}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/webhooks/messages",
            Some(r#"{"event_type": "", "payload": {}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/webhooks/messages",
            Some(r#"{"event_type": "a.b", "payload": {"x": "\u0000"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (method, path, body, expected) in cases {
        let mut request = as_tenant(&app, &a, method.clone(), path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let (status, _) = problem(request.send().await.unwrap()).await;
        assert_eq!(status, expected, "{method} {path} {body:?}");
    }
    // The rotate body is optional but, when present, must be valid.
    let created = create_endpoint(&app, &a, json!({ "url": "https://a.receiver.example/" })).await;
    let id = created["id"].as_str().unwrap();
    let response = as_tenant(
        &app,
        &a,
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/rotate-secret"),
    )
    .body("{\"grace_seconds\": -1}")
    .send()
    .await
    .unwrap();
    assert_eq!(problem(response).await.0, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_tenant_publishes_to_its_own_subscribed_endpoints_only() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("bravo").await;
    create_endpoint(&app, &a, json!({ "url": "https://all.receiver.example/" })).await;
    create_endpoint(
        &app,
        &a,
        json!({ "url": "https://paid.receiver.example/", "event_types": ["invoice.paid"] }),
    )
    .await;
    create_endpoint(
        &app,
        &a,
        json!({ "url": "https://other.receiver.example/", "event_types": ["invoice.void"] }),
    )
    .await;
    create_endpoint(
        &app,
        &a,
        json!({ "url": "https://off.receiver.example/", "enabled": false }),
    )
    .await;
    create_endpoint(
        &app,
        &b,
        json!({ "url": "https://bravo.receiver.example/" }),
    )
    .await;
    let response = call_as(&app, &a, Method::POST, "/v1/webhooks/messages", Some(json!({ "event_type": "invoice.paid", "payload": { "type": "invoice.paid", "amount": 42 } }))).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let queued: Value = response.json().await.unwrap();
    assert_eq!(queued["deliveries"], 2);
    let id = queued["id"].as_str().unwrap();
    let attempts: Value = get_json(&app, &a, &format!("/v1/webhooks/messages/{id}/attempts")).await;
    assert_eq!(attempts["data"], json!([]));
}

#[tokio::test]
async fn other_features_raise_platform_events_inside_their_own_transaction() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    create_endpoint(&app, &a, json!({ "url": "https://sec.receiver.example/", "event_types": ["security.refresh_token_reuse"] })).await;
    create_endpoint(
        &app,
        &a,
        json!({ "url": "https://misc.receiver.example/", "event_types": ["session.created"] }),
    )
    .await;
    let ctx = TenantContext::for_test(
        a.id,
        Actor::System { component: "test" },
        Default::default(),
    );
    let store = app.state.store();
    // Rolled back: nothing is queued.
    let mut tx = store.begin(&ctx, Access::ReadWrite).await.unwrap();
    let dropped = store::enqueue_platform_event(
        &mut tx,
        "security.refresh_token_reuse",
        json!({ "family": "f1" }),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    // Committed: one message, delivered to the subscribed endpoint only.
    let mut tx = store.begin(&ctx, Access::ReadWrite).await.unwrap();
    let kept = store::enqueue_platform_event(
        &mut tx,
        "security.refresh_token_reuse",
        json!({ "family": "f2" }),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (dropped, kept) = (dropped.unwrap(), kept.unwrap());
    let mut tx = store.begin(&ctx, Access::ReadOnly).await.unwrap();
    assert!(matches!(
        store::get_message(&mut tx, dropped).await,
        Err(bulkhead_store::StoreError::NotFound)
    ));
    let message = store::get_message(&mut tx, kept).await.unwrap();
    assert_eq!(message.source, "platform");
    assert_eq!(message.payload["data"]["family"], "f2");
    assert_eq!(store::deliveries_of(&mut tx, kept).await.unwrap().len(), 1);
    drop(tx);
    // No subscriber: nothing is stored.
    let mut tx = store.begin(&ctx, Access::ReadWrite).await.unwrap();
    let none = store::enqueue_platform_event(&mut tx, "api_key.rotation_due", json!({}))
        .await
        .unwrap();
    assert_eq!(none, None);
}

#[tokio::test]
async fn anothers_endpoint_and_message_ids_answer_exactly_like_missing_ones() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("bravo").await;
    let a_endpoint = create_endpoint(
        &app,
        &a,
        json!({ "url": "https://alpha.receiver.example/" }),
    )
    .await;
    let a_endpoint = a_endpoint["id"].as_str().unwrap().to_owned();
    let published: Value = call_as(
        &app,
        &a,
        Method::POST,
        "/v1/webhooks/messages",
        Some(json!({ "event_type": "invoice.paid", "payload": {} })),
    )
    .await
    .json()
    .await
    .unwrap();
    let a_message = published["id"].as_str().unwrap().to_owned();
    let missing_endpoint = EndpointId::new().to_string();
    let missing_message = MessageId::new().to_string();
    let since = json!({ "since": "2020-01-01T00:00:00Z" });
    let cases: Vec<(Method, String, Option<Value>, bool)> = vec![
        (Method::GET, "/v1/webhooks/endpoints/{e}".into(), None, true),
        (
            Method::PATCH,
            "/v1/webhooks/endpoints/{e}".into(),
            Some(json!({ "url": "https://pwned.receiver.example/" })),
            true,
        ),
        (
            Method::DELETE,
            "/v1/webhooks/endpoints/{e}".into(),
            None,
            true,
        ),
        (
            Method::POST,
            "/v1/webhooks/endpoints/{e}/rotate-secret".into(),
            None,
            true,
        ),
        (
            Method::POST,
            "/v1/webhooks/endpoints/{e}/test".into(),
            None,
            true,
        ),
        (
            Method::POST,
            "/v1/webhooks/endpoints/{e}/recover".into(),
            Some(since),
            true,
        ),
        (Method::GET, "/v1/webhooks/messages/{m}".into(), None, false),
        (
            Method::GET,
            "/v1/webhooks/messages/{m}/attempts".into(),
            None,
            false,
        ),
        (
            Method::POST,
            "/v1/webhooks/messages/{m}/resend".into(),
            None,
            false,
        ),
    ];
    for (method, template, body, is_endpoint) in cases {
        let send = |id: &str| {
            let path = if is_endpoint {
                template.replace("{e}", id)
            } else {
                template.replace("{m}", id)
            };
            let request = as_tenant(&app, &b, method.clone(), &path);
            match &body {
                Some(v) => request.json(v),
                None => request,
            }
        };
        let (theirs, missing) = if is_endpoint {
            (&a_endpoint, &missing_endpoint)
        } else {
            (&a_message, &missing_message)
        };
        let r1 = send(theirs).send().await.unwrap();
        let (s1, h1) = (r1.status(), r1.headers().clone());
        let b1 = r1.bytes().await.unwrap();
        let r2 = send(missing).send().await.unwrap();
        let (s2, h2) = (r2.status(), r2.headers().clone());
        let b2 = r2.bytes().await.unwrap();
        assert_eq!(s1, StatusCode::NOT_FOUND, "{method} {template}");
        assert_eq!(s1, s2, "{method} {template}");
        assert_eq!(b1, b2, "{method} {template}: bodies differ");
        assert_eq!(h1.get("content-type"), h2.get("content-type"));
        assert_eq!(h1.get("content-length"), h2.get("content-length"));
    }
    // A's endpoint is untouched and still has its URL.
    let got: Value = get_json(&app, &a, &format!("/v1/webhooks/endpoints/{a_endpoint}")).await;
    assert_eq!(got["url"], "https://alpha.receiver.example/");
}

#[tokio::test]
async fn webhook_routes_need_the_webhooks_manage_scope() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let (reader, _) = mint_key(&app, &a, json!({ "scopes": ["sessions:read"] })).await;
    let response = call_as(&app, &reader, Method::GET, "/v1/webhooks/endpoints", None).await;
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("webhooks:manage"));
}

#[tokio::test]
async fn session_and_key_changes_raise_platform_events_for_subscribers() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    create_endpoint(
        &app,
        &a,
        json!({ "url": "https://audit.receiver.example/", "event_types": ["session.created", "session.deleted", "api_key.created"] }),
    )
    .await;
    let session = crate::helpers::create_session(&app, &a, "watched").await;
    let id = session["id"].as_str().unwrap();
    let deleted = call_as(
        &app,
        &a,
        Method::DELETE,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    mint_key(&app, &a, json!({ "scopes": ["sessions:read"] })).await;
    let ctx = TenantContext::for_test(
        a.id,
        Actor::System { component: "test" },
        Default::default(),
    );
    let mut tx = app
        .state
        .store()
        .begin(&ctx, Access::ReadOnly)
        .await
        .unwrap();
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM bulkhead.webhook_messages WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(a.id.uuid())
    .fetch_all(tx.conn())
    .await
    .unwrap();
    assert_eq!(
        types,
        vec!["session.created", "session.deleted", "api_key.created"]
    );
}

#[tokio::test]
async fn signing_secrets_are_stored_sealed_never_in_the_clear() {
    use base64::Engine as _;
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let created = create_endpoint(
        &app,
        &a,
        json!({ "url": "https://hooks.receiver.example/in" }),
    )
    .await;
    let shown = created["secret"].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(shown.strip_prefix("whsec_").unwrap())
        .unwrap();
    let su = app.db.superuser_pool().await;
    let (stored,): (Vec<u8>,) = sqlx::query_as("SELECT secret FROM bulkhead.webhook_endpoints")
        .fetch_one(&su)
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        raw.len() + bulkhead_auth::master::SEAL_OVERHEAD
    );
    assert!(
        !stored.windows(raw.len()).any(|w| w == raw.as_slice()),
        "the secret is stored in the clear"
    );
    // The sealed value opens only under the tenant's own data key (itself sealed under the
    // master key, bound to the tenant), for its own endpoint; not under the master key itself.
    let id = EndpointId::parse(created["id"].as_str().unwrap()).unwrap();
    let master = bulkhead_test_support::test_master_key();
    let (sealed_key,): (Vec<u8>,) =
        sqlx::query_as("SELECT sealed FROM bulkhead.tenant_keys WHERE id = $1")
            .bind(a.id.uuid())
            .fetch_one(&su)
            .await
            .unwrap();
    let data_key = master
        .open_tenant_data_key(a.id.uuid().as_bytes(), &sealed_key)
        .unwrap();
    let mut binding = a.id.uuid().as_bytes().to_vec();
    binding.extend_from_slice(id.uuid().as_bytes());
    assert_eq!(
        &*data_key.open_webhook_secret(&binding, &stored).unwrap(),
        raw.as_slice()
    );
    assert!(master.open_webhook_secret(&binding, &stored).is_err());
    binding[20] ^= 1;
    assert!(data_key.open_webhook_secret(&binding, &stored).is_err());
}

/// Found by schemathesis (two workers): a platform event raised while another request deletes a
/// subscribed endpoint. The delete is in flight (uncommitted) when the event is raised; it then
/// commits. The event's transaction must neither fail (it answered 500 on the unrelated
/// request, a foreign-key violation on the delivery insert) nor leave a delivery to the deleted
/// endpoint.
#[tokio::test]
async fn a_platform_event_racing_an_endpoint_delete_neither_fails_nor_delivers_to_it() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let endpoint = create_endpoint(
        &app,
        &a,
        json!({ "url": "https://gone.receiver.example/", "event_types": ["session.deleted"] }),
    )
    .await;
    let endpoint = EndpointId::parse(endpoint["id"].as_str().unwrap()).unwrap();
    let ctx = TenantContext::for_test(
        a.id,
        Actor::System { component: "test" },
        Default::default(),
    );
    let store = app.state.store().clone();
    let mut deleting = store.begin(&ctx, Access::ReadWrite).await.unwrap();
    store::delete_endpoint(&mut deleting, endpoint)
        .await
        .unwrap();

    let raising = {
        let (store, ctx) = (store.clone(), ctx.clone());
        tokio::spawn(async move {
            let mut tx = store.begin(&ctx, Access::ReadWrite).await?;
            let id = store::enqueue_platform_event(&mut tx, "session.deleted", json!({})).await?;
            tx.commit().await?;
            Ok::<_, bulkhead_store::StoreError>(id)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    deleting.commit().await.unwrap();
    let raised = raising
        .await
        .unwrap()
        .expect("the event's transaction must not fail");
    // The endpoint was its only subscriber and is gone: nothing was queued for it.
    assert_eq!(raised, None);
}

/// Issue 17, item 3: a tenant could publish `audit.event` or `tool.…` messages that were
/// delivered with the same body shape and a valid signature as the platform's own. Every
/// platform namespace is now refused at publish, and every body says who raised it, inside the
/// signed bytes.
#[tokio::test]
async fn tenants_cannot_forge_platform_events_and_every_body_names_its_source() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    create_endpoint(&app, &a, json!({ "url": "https://all.receiver.example/" })).await;
    for reserved in [
        "audit.event",
        "audit",
        "audit.anything.else",
        "tool.call",
        "tool",
        "security.refresh_token_reuse",
        "webhook.test",
        "endpoint.disabled",
    ] {
        let response = call_as(
            &app,
            &a,
            Method::POST,
            "/v1/webhooks/messages",
            Some(json!({ "event_type": reserved, "payload": { "actor_id": "user_forged" } })),
        )
        .await;
        let (status, body) = problem(response).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{reserved}: {body}"
        );
        assert!(body["detail"].as_str().unwrap().contains("reserved"));
    }
    // A name that merely starts with the same letters is the tenant's own.
    let response = call_as(
        &app,
        &a,
        Method::POST,
        "/v1/webhooks/messages",
        Some(json!({ "event_type": "auditor.report", "payload": {} })),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // A tenant payload dressed as a platform body stays the tenant's `data`.
    let forged = json!({ "type": "audit.event", "source": "platform", "data": { "x": 1 } });
    let response = call_as(
        &app,
        &a,
        Method::POST,
        "/v1/webhooks/messages",
        Some(json!({ "event_type": "invoice.paid", "payload": forged })),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id: Value = response.json().await.unwrap();
    let id = MessageId::parse(id["id"].as_str().unwrap()).unwrap();
    let ctx = TenantContext::for_test(
        a.id,
        Actor::System { component: "test" },
        Default::default(),
    );
    let store_handle = app.state.store();
    let mut tx = store_handle.begin(&ctx, Access::ReadWrite).await.unwrap();
    let message = store::get_message(&mut tx, id).await.unwrap();
    assert_eq!(
        message.payload,
        json!({ "type": "invoice.paid", "source": "tenant", "data": forged })
    );
    // The platform's own events carry `"source": "platform"`.
    let platform = store::enqueue_platform_event(&mut tx, "session.created", json!({ "n": 1 }))
        .await
        .unwrap()
        .unwrap();
    let platform = store::get_message(&mut tx, platform).await.unwrap();
    assert_eq!(
        platform.payload,
        json!({ "type": "session.created", "source": "platform", "data": { "n": 1 } })
    );
    // The store holds the same line for callers other than the route: no tenant message in a
    // platform namespace, no platform event outside one.
    let tenant_forgery = store::publish(
        &mut tx,
        "audit.event",
        &json!({}),
        store::MessageSource::Tenant,
        None,
        chrono::Utc::now(),
    )
    .await;
    assert!(matches!(
        tenant_forgery,
        Err(bulkhead_store::StoreError::Invalid(_))
    ));
    let stray = store::enqueue_platform_event(&mut tx, "invoice.paid", json!({})).await;
    assert!(matches!(stray, Err(bulkhead_store::StoreError::Invalid(_))));
}
