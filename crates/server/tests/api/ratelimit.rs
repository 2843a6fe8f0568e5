//! Rate limiting through the HTTP pipeline.

use std::sync::Arc;

use bulkhead_core::Clock;
use bulkhead_ratelimit::{LimitConfig, Plan, Quota};
use bulkhead_server::service::rate_limits::{default_limits, default_preauth_limits, RateLimits};
use bulkhead_test_support::{spawn_app, spawn_app_with, AppOptions};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::keys::mint_key;
use crate::helpers::{call_as, problem};

fn tight_tenant_budget() -> LimitConfig {
    LimitConfig {
        plans: [(Plan::Standard, Quota::per_minute(5).with_burst(5))]
            .into_iter()
            .collect(),
        ..LimitConfig::default()
    }
}

#[tokio::test]
async fn successful_responses_carry_ratelimit_headers() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let response = call_as(&app, &acme, Method::GET, "/v1/sessions", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let policy = response
        .headers()
        .get("ratelimit-policy")
        .expect("RateLimit-Policy")
        .to_str()
        .unwrap();
    let state = response
        .headers()
        .get("ratelimit")
        .expect("RateLimit")
        .to_str()
        .unwrap();
    assert!(policy.contains(";q=") && policy.contains(";w="), "{policy}");
    assert!(state.contains(";r=") && state.contains(";t="), "{state}");
}

#[tokio::test]
async fn a_flooding_tenant_never_throttles_another() {
    let clock = Clock::manual(chrono::Utc::now());
    let limits = RateLimits::in_memory(
        tight_tenant_budget(),
        default_preauth_limits(),
        clock.clone(),
    );
    let app = spawn_app_with(AppOptions {
        clock: Some(clock),
        rate_limits: Some(Arc::new(limits)),
        ..Default::default()
    })
    .await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("bravo").await;
    let mut a_rejected = 0;
    for _ in 0..50 {
        let response = call_as(&app, &a, Method::GET, "/v1/sessions", None).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            a_rejected += 1;
            let retry_after = response
                .headers()
                .get("retry-after")
                .expect("Retry-After")
                .to_str()
                .unwrap()
                .to_owned();
            assert!(retry_after.parse::<u64>().unwrap() >= 1);
            let (_, body) = problem(response).await;
            assert_eq!(body["type"], "https://bulkhead.dev/problems/rate-limited");
            assert!(
                body["detail"].as_str().unwrap().contains("tenant"),
                "{body}"
            );
        }
    }
    assert_eq!(
        a_rejected, 45,
        "a burst of 5 allows exactly 5 of 50 at one instant"
    );
    for _ in 0..5 {
        let response = call_as(&app, &b, Method::GET, "/v1/sessions", None).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "tenant B was throttled by A's flood"
        );
    }
}

/// The app with the shipped limits but an agent budget of `per_minute` (burst the same), on a
/// stopped clock, so that a test spends it exactly.
async fn app_with_agent_budget(per_minute: u32) -> bulkhead_test_support::TestApp {
    let clock = Clock::manual(chrono::Utc::now());
    let config = LimitConfig {
        per_agent: Some(Quota::per_minute(per_minute).with_burst(per_minute)),
        ..default_limits()
    };
    let limits = RateLimits::in_memory(config, default_preauth_limits(), clock.clone());
    spawn_app_with(AppOptions {
        clock: Some(clock),
        rate_limits: Some(Arc::new(limits)),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn the_agent_level_is_named_and_spares_the_tenants_other_keys() {
    let app = app_with_agent_budget(12).await;
    let acme = app.create_tenant("acme").await;
    let (agent, _) = mint_key(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    // Minting cost the admin key 10 of its 12; the new key has its own 12.
    let mut last = None;
    for _ in 0..13 {
        last = Some(call_as(&app, &agent, Method::GET, "/v1/sessions", None).await);
    }
    let (status, body) = problem(last.unwrap()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["detail"].as_str().unwrap().contains("agent"), "{body}");
    // The admin key of the same tenant still has its own agent budget and the tenant's.
    let admin = call_as(&app, &acme, Method::GET, "/v1/sessions", None).await;
    assert_eq!(admin.status(), StatusCode::OK);
}

#[tokio::test]
async fn unauthenticated_floods_are_limited_per_address_before_any_lookup() {
    let clock = Clock::manual(chrono::Utc::now());
    let preauth = LimitConfig {
        plans: [(Plan::Standard, Quota::per_minute(3).with_burst(3))]
            .into_iter()
            .collect(),
        ..LimitConfig::default()
    };
    let limits = RateLimits::in_memory(default_limits(), preauth, clock.clone());
    let app = spawn_app_with(AppOptions {
        clock: Some(clock),
        rate_limits: Some(Arc::new(limits)),
        ..Default::default()
    })
    .await;
    let key = bulkhead_auth::ApiKey::generate(bulkhead_auth::KeyEnvironment::Live);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = app
            .client
            .get(app.url("/v1/sessions"))
            .bearer_auth(key.expose_secret())
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    // The refusal names the level it is: the address, in the body and the headers.
    let response = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(key.expose_secret())
        .send()
        .await
        .unwrap();
    let policy = response.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let state = response.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(response.headers().get("retry-after").is_some());
    assert!(policy.starts_with("\"address\";"), "{policy}");
    assert!(state.starts_with("\"address\";r=0;"), "{state}");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        body["detail"].as_str().unwrap().contains("address level"),
        "{body}"
    );
}

/// Issue 17 item 10: many tenants share egress addresses. Tenant A's authenticated flood from
/// one address must not spend the per-address budget that tenant B, behind the same address,
/// needs; only missing or failed authentication is charged there.
#[tokio::test]
async fn a_flood_of_one_tenant_spares_another_behind_the_same_address() {
    let clock = Clock::manual(chrono::Utc::now());
    let preauth = LimitConfig {
        plans: [(Plan::Standard, Quota::per_minute(10).with_burst(10))]
            .into_iter()
            .collect(),
        ..LimitConfig::default()
    };
    let limits = RateLimits::in_memory(tight_tenant_budget(), preauth, clock.clone());
    let app = spawn_app_with(AppOptions {
        clock: Some(clock),
        rate_limits: Some(Arc::new(limits)),
        ..Default::default()
    })
    .await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("bravo").await;
    // A: 50 authenticated requests from 127.0.0.1, far past the address budget of 10.
    for _ in 0..50 {
        call_as(&app, &a, Method::GET, "/v1/sessions", None).await;
    }
    // B, same address: none refused.
    let mut refused = 0;
    for _ in 0..5 {
        let response = call_as(&app, &b, Method::GET, "/v1/sessions", None).await;
        if response.status() != StatusCode::OK {
            refused += 1;
        }
    }
    assert_eq!(refused, 0, "tenant B was refused because of A's flood");
}

#[tokio::test]
async fn a_page_of_200_rows_costs_four_default_pages() {
    let app = app_with_agent_budget(24).await;
    let acme = app.create_tenant("acme").await;
    let (big, _) = mint_key(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    let (small, _) = mint_key(&app, &acme, json!({ "scopes": ["sessions:read"] })).await;
    // Six pages of up to 200 rows spend the key's 24 units; the seventh is refused. (Minting
    // the two keys spent the admin key's units, not theirs.)
    for _ in 0..6 {
        let page = call_as(&app, &big, Method::GET, "/v1/sessions?limit=200", None).await;
        assert_eq!(page.status(), StatusCode::OK);
    }
    let refused = call_as(&app, &big, Method::GET, "/v1/sessions?limit=200", None).await;
    let (status, body) = problem(refused).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["detail"].as_str().unwrap().contains("agent"), "{body}");
    // Twenty-four pages of the default size fit the same budget.
    for n in 0..24 {
        let page = call_as(&app, &small, Method::GET, "/v1/sessions", None).await;
        assert_eq!(page.status(), StatusCode::OK, "page {n}");
    }
}
