//! Adversarial cross-tenant tests: tenant A's credential aimed at tenant B's resources.

use bulkhead_test_support::{spawn_app, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{as_tenant, call_as, create_session, get_json, problem};

async fn two_tenants() -> (TestApp, TestTenant, TestTenant, String) {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("bravo").await;
    let b_session = create_session(&app, &b, "bravo-secret-marker").await;
    let b_id = b_session["id"].as_str().unwrap().to_owned();
    (app, a, b, b_id)
}

#[tokio::test]
async fn anothers_session_id_answers_exactly_like_a_missing_one() {
    let (app, a, b, b_id) = two_tenants().await;
    let missing = bulkhead_core::SessionId::new().to_string();
    for (method, body) in [
        (Method::GET, None),
        (
            Method::PATCH,
            Some(json!({ "title": "pwned", "state": "closed" })),
        ),
        (Method::DELETE, None),
    ] {
        let send = |id: &str| {
            let request = as_tenant(&app, &a, method.clone(), &format!("/v1/sessions/{id}"));
            match &body {
                Some(b) => request.json(b),
                None => request,
            }
        };
        let theirs = send(&b_id).send().await.unwrap();
        let (theirs_status, theirs_headers) = (theirs.status(), theirs.headers().clone());
        let theirs_body = theirs.bytes().await.unwrap();
        let nobody = send(&missing).send().await.unwrap();
        let (nobody_status, nobody_headers) = (nobody.status(), nobody.headers().clone());
        let nobody_body = nobody.bytes().await.unwrap();
        assert_eq!(theirs_status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(theirs_status, nobody_status, "{method}");
        assert_eq!(theirs_body, nobody_body, "{method}: bodies differ");
        assert_eq!(
            theirs_headers.get("content-type"),
            nobody_headers.get("content-type")
        );
        assert_eq!(
            theirs_headers.get("content-length"),
            nobody_headers.get("content-length")
        );
    }
    // B's session is untouched.
    let got: Value = get_json(&app, &b, &format!("/v1/sessions/{b_id}")).await;
    assert_eq!(got["title"], "bravo-secret-marker");
    assert_eq!(got["state"], "active");
}

#[tokio::test]
async fn list_filters_and_cursors_never_reach_another_tenant() {
    let (app, a, _b, b_id) = two_tenants().await;
    create_session(&app, &a, "alpha-own").await;
    for query in [
        "".to_owned(),
        "?agent_id=agent-7".to_owned(),
        "?state=active".to_owned(),
        // B's id as a cursor: just a position, it cannot select B's rows.
        format!("?cursor={}", b_id),
        "?cursor=sess_00000000000000000000000000".to_owned(),
    ] {
        let response = call_as(&app, &a, Method::GET, &format!("/v1/sessions{query}"), None).await;
        assert_eq!(response.status(), StatusCode::OK, "{query}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("bravo-secret-marker"),
            "{query}: leaked B's data: {text}"
        );
        assert!(!text.contains(&b_id), "{query}: leaked B's id");
    }
}

#[tokio::test]
async fn a_credential_on_another_tenants_subdomain_is_refused_before_anything_runs() {
    let (app, a, b, b_id) = two_tenants().await;
    // A's key on B's subdomain: 401, the same response as no credential at all.
    let mismatch = app
        .client
        .get(app.tenant_url(&b.slug, &format!("/v1/sessions/{b_id}")))
        .bearer_auth(&a.key)
        .send()
        .await
        .unwrap();
    let anonymous = app
        .client
        .get(app.tenant_url(&b.slug, &format!("/v1/sessions/{b_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        mismatch.headers().get("www-authenticate"),
        anonymous.headers().get("www-authenticate")
    );
    let (s1, body1) = problem(mismatch).await;
    let (s2, body2) = problem(anonymous).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(body1, body2);
    // A write attempt through the mismatch changes nothing.
    let write = app
        .client
        .post(app.tenant_url(&b.slug, "/v1/sessions"))
        .bearer_auth(&a.key)
        .json(&json!({ "agent_id": "intruder", "title": "planted" }))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::UNAUTHORIZED);
    let page: Value = get_json(&app, &b, "/v1/sessions").await;
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        1,
        "nothing was planted in B"
    );
    // Without a subdomain, A's key resolves to A, and B's ids are still not found.
    let bare = app
        .client
        .get(app.url(&format!("/v1/sessions/{b_id}")))
        .bearer_auth(&a.key)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tenants_with_equal_data_stay_apart() {
    // Same titles, same agent ids, same metadata: nothing but the tenant tells them apart.
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("bravo").await;
    let sa = create_session(&app, &a, "same").await;
    let sb = create_session(&app, &b, "same").await;
    let page_a: Value = get_json(&app, &a, "/v1/sessions").await;
    let page_b: Value = get_json(&app, &b, "/v1/sessions").await;
    assert_eq!(
        page_a["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].clone())
            .collect::<Vec<_>>(),
        vec![sa["id"].clone()]
    );
    assert_eq!(
        page_b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].clone())
            .collect::<Vec<_>>(),
        vec![sb["id"].clone()]
    );
}
