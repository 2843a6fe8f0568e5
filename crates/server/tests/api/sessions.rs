//! `/v1/sessions`: the resource's behaviour and its bad-input handling.

use bulkhead_test_support::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::keys::mint_key;
use crate::helpers::{as_tenant, call_as, create_session, get_json, problem};

#[tokio::test]
async fn create_get_update_list_delete() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let created = create_session(&app, &acme, "first").await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sess_"));
    assert_eq!(created["state"], "active");
    assert_eq!(created["metadata"], json!({ "marker": "first" }));

    let got: Value = get_json(&app, &acme, &format!("/v1/sessions/{id}")).await;
    assert_eq!(got, created);

    let updated = call_as(
        &app,
        &acme,
        Method::PATCH,
        &format!("/v1/sessions/{id}"),
        Some(json!({ "state": "paused", "title": "renamed" })),
    )
    .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(
        (updated["state"].as_str(), updated["title"].as_str()),
        (Some("paused"), Some("renamed"))
    );
    assert_eq!(
        updated["metadata"], created["metadata"],
        "absent fields stay as they were"
    );

    let deleted = call_as(
        &app,
        &acme,
        Method::DELETE,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = call_as(
        &app,
        &acme,
        Method::GET,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    // Every change left an audit event in the tenant's log, in its own transaction.
    let store = app.db.app_store().await;
    let ctx = bulkhead_core::TenantContext::for_test(
        acme.id,
        bulkhead_core::Actor::System { component: "test" },
        Default::default(),
    );
    let mut tx = store
        .begin(&ctx, bulkhead_store::Access::ReadOnly)
        .await
        .unwrap();
    let actions: Vec<String> = bulkhead_store::audit::recent(&mut tx, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions[..3],
        ["session.delete", "session.update", "session.create"]
    );
}

#[tokio::test]
async fn listing_pages_with_a_cursor_and_filters() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create_session(&app, &acme, &format!("s{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sessions?limit=2&cursor={c}"),
            None => "/v1/sessions?limit=2".to_owned(),
        };
        let page: Value = get_json(&app, &acme, &path).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen, ids,
        "pages cover every session once, in creation order"
    );

    let filtered: Value = get_json(&app, &acme, "/v1/sessions?agent_id=someone-else").await;
    assert_eq!(filtered["data"], json!([]));
    for bad in ["limit=0", "limit=201"] {
        let response = call_as(
            &app,
            &acme,
            Method::GET,
            &format!("/v1/sessions?{bad}"),
            None,
        )
        .await;
        assert_eq!(
            problem(response).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
    for bad in [
        "limit=abc",
        "cursor=tnt_00000000000000000000000000",
        "surprise=1",
        "state=exploded",
    ] {
        let response = call_as(
            &app,
            &acme,
            Method::GET,
            &format!("/v1/sessions?{bad}"),
            None,
        )
        .await;
        assert_eq!(problem(response).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn bad_input_is_a_problem_never_a_500() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let post = |body: reqwest::Body, content_type: &'static str| {
        as_tenant(&app, &acme, Method::POST, "/v1/sessions")
            .header("content-type", content_type)
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "syntax",
            post("{".into(), "application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong type",
            post(r#"{"agent_id": 5}"#.into(), "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field",
            post(
                r#"{"agent_id":"a","tenant_id":"x"}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing field",
            post(r#"{"title":"t"}"#.into(), "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "bad state",
            post(
                r#"{"agent_id":"a","state":"exploded"}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "metadata not an object",
            post(
                r#"{"agent_id":"a","metadata":[1]}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "bad agent id",
            post(r#"{"agent_id":"a b"}"#.into(), "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "control char title",
            post(
                r#"{"agent_id":"a","title":"x\u0000y"}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "long title",
            post(
                json!({"agent_id":"a","title":"x".repeat(501)})
                    .to_string()
                    .into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "big metadata",
            post(
                json!({"agent_id":"a","metadata":{"k":"x".repeat(70_000)}})
                    .to_string()
                    .into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "not json",
            post("agent_id=a".into(), "application/x-www-form-urlencoded"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "oversize",
            post(vec![b' '; 1024 * 1024 + 1].into(), "application/json"),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (name, request, expected) in cases {
        let (status, body) = problem(request.send().await.unwrap()).await;
        assert_eq!(status, expected, "{name}: {body}");
    }
    for bad_id in [
        "nope",
        "sess_",
        "tnt_00000000000000000000000000",
        "sess_8zzzzzzzzzzzzzzzzzzzzzzzzz",
        "SESS_00000000000000000000000000",
    ] {
        let response = call_as(
            &app,
            &acme,
            Method::GET,
            &format!("/v1/sessions/{bad_id}"),
            None,
        )
        .await;
        assert_eq!(
            problem(response).await.0,
            StatusCode::BAD_REQUEST,
            "{bad_id}"
        );
    }
}

#[tokio::test]
async fn scopes_are_enforced_per_operation() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let session = create_session(&app, &acme, "s").await;
    // A read-only key for the same tenant, minted through the API.
    let (reader, _) = mint_key(
        &app,
        &acme,
        json!({ "scopes": ["sessions:read"], "principal": "reader-agent" }),
    )
    .await;

    let id = session["id"].as_str().unwrap();
    let ok = call_as(
        &app,
        &reader,
        Method::GET,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let denied = call_as(
        &app,
        &reader,
        Method::DELETE,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    let (status, body) = problem(denied).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["detail"].as_str().unwrap().contains("sessions:write"),
        "{body}"
    );
}

/// Found by schemathesis: metadata holding 1.7976931348623157e308 was accepted, stored, and
/// then unreadable (jsonb returns it as 309 digits, which the default float parser overflowed
/// on), so the create answered 500 and so did every later list of the tenant's sessions.
/// Whatever number is accepted must read back as the same number.
#[tokio::test]
async fn extreme_numbers_in_metadata_read_back_unchanged() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let metadata = json!({
        "max": f64::MAX,
        "min": f64::MIN,
        "tiny": 5e-324,
        "small": -1.1918367464795858e-63,
        "big_int": 1e20,
        "u64": u64::MAX,
        "i64": i64::MIN,
    });
    let created = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "agent-1", "metadata": metadata })),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["metadata"], metadata);
    let listed = call_as(&app, &acme, Method::GET, "/v1/sessions", None).await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["data"][0]["metadata"], metadata);
}
