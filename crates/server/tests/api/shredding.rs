//! Crypto-shredding (issue 19, migration 0039): a tenant's webhook and tool secrets are sealed
//! under its own data key, which lives only in the registry and which the purge destroys, so a
//! copy of the sealed secrets taken before the purge (what a backup of the tenant's location
//! holds) opens neither then with the master key alone nor, once the key is gone, at all.

use base64::Engine as _;
use bulkhead_core::{EndpointId, TenantId};
use bulkhead_store::Access;
use bulkhead_test_support::{
    spawn_app_with, test_master_key, AppOptions, TestApp, TestTenant, TestTier,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::call;
use crate::helpers::webhooks::create_endpoint;
use crate::operator::{operator_key, ALL};
use crate::tiers::system;

/// The endpoint's secret as a backup of the tenant's location holds it (read as the tenant,
/// wherever it lives).
async fn sealed_copy(app: &TestApp, tenant: TenantId, endpoint: EndpointId) -> Vec<u8> {
    let mut tx = app
        .state
        .store()
        .begin(&system(tenant), Access::ReadOnly)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT secret FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.uuid())
        .bind(endpoint.uuid())
        .fetch_one(tx.conn())
        .await
        .unwrap()
}

/// The keys the dispatcher signs the endpoint's deliveries with.
async fn endpoint_keys(
    app: &TestApp,
    tenant: TenantId,
    endpoint: EndpointId,
) -> bulkhead_store::tenant::webhooks::EndpointKeys {
    let mut tx = app
        .state
        .store()
        .begin(&system(tenant), Access::ReadOnly)
        .await
        .unwrap();
    bulkhead_store::tenant::webhooks::endpoint_keys(
        &mut tx,
        endpoint,
        chrono::Utc::now(),
        &test_master_key(),
    )
    .await
    .unwrap()
}

/// The tenant's sealed data key as the registry holds it, if it still does.
async fn stored_key(registry: &PgPool, tenant: TenantId) -> Option<Vec<u8>> {
    sqlx::query_scalar("SELECT sealed FROM bulkhead.tenant_keys WHERE id = $1")
        .bind(tenant.uuid())
        .fetch_optional(registry)
        .await
        .unwrap()
}

fn binding(tenant: TenantId, endpoint: EndpointId) -> Vec<u8> {
    let mut binding = tenant.uuid().as_bytes().to_vec();
    binding.extend_from_slice(endpoint.uuid().as_bytes());
    binding
}

/// Rotates the endpoint's secret with a minute's grace; the answer (with the new secret).
async fn rotate(app: &TestApp, tenant: &TestTenant, endpoint: EndpointId) -> Value {
    let rotated = call(
        app,
        &tenant.slug,
        &tenant.key,
        Method::POST,
        &format!("/v1/webhooks/endpoints/{endpoint}/rotate-secret"),
        Some(json!({ "grace_seconds": 60 })),
    )
    .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    rotated.json().await.unwrap()
}

/// The secret shown once at creation, as bytes.
fn shown_secret(created: &Value) -> Vec<u8> {
    let text = created["secret"].as_str().unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(text.strip_prefix("whsec_").unwrap())
        .unwrap()
}

#[tokio::test]
async fn a_purged_tenants_secrets_do_not_open_from_any_copy() {
    let app = spawn_app_with(AppOptions::default()).await;
    let op = app.spawn_operator().await;
    let (_, key) = operator_key(&op, ALL).await;
    let registry = app.db.superuser_pool().await;
    let master = test_master_key();
    for (slug, tier) in [
        ("shred-shared", TestTier::Shared),
        ("shred-schema", TestTier::Schema),
        ("shred-dedicated", TestTier::Dedicated),
    ] {
        let tenant = app.create_tenant_in(slug, tier).await;
        let created = create_endpoint(
            &app,
            &tenant,
            json!({ "url": "https://hooks.receiver.example/in" }),
        )
        .await;
        let endpoint = EndpointId::parse(created["id"].as_str().unwrap()).unwrap();
        let secret = shown_secret(&created);
        let copy = sealed_copy(&app, tenant.id, endpoint).await;
        let binding = binding(tenant.id, endpoint);
        // Whether anything this deployment still holds opens the copy: the tenant's data key
        // (if the registry still has it) under the master key, or the master key alone.
        let opens = |sealed_key: Option<Vec<u8>>| {
            let under_data_key = sealed_key
                .and_then(|k| {
                    master
                        .open_tenant_data_key(tenant.id.uuid().as_bytes(), &k)
                        .ok()
                })
                .and_then(|data_key| data_key.open_webhook_secret(&binding, &copy).ok())
                .is_some_and(|opened| *opened == secret);
            under_data_key || master.open_webhook_secret(&binding, &copy).is_ok()
        };
        // Before the purge the registry's key opens the copy (so the check below can fail);
        // the master key alone never does.
        let before = stored_key(&registry, tenant.id).await;
        assert!(before.is_some(), "{slug}: no data key");
        assert!(opens(before), "{slug}");
        assert!(master.open_webhook_secret(&binding, &copy).is_err());

        let path = format!("/operator/v1/tenants/{slug}/deletion");
        let (status, body) = op
            .request(Method::POST, &path, Some(&key), Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, purged) = op
            .request(Method::POST, &format!("{path}/purge"), Some(&key), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{slug}: {purged}");
        // The receipt says the key was destroyed; the registry no longer holds it, and the
        // copy opens with nothing this deployment has.
        assert_eq!(purged["receipt"]["tables"]["tenant_keys"], 1, "{purged:#}");
        let after = stored_key(&registry, tenant.id).await;
        assert!(after.is_none(), "{slug}: the data key outlived the purge");
        assert!(!opens(after), "{slug}");
    }
}

#[tokio::test]
async fn a_secret_sealed_before_data_keys_still_signs_and_moves_under_the_key_when_rotated() {
    let app = spawn_app_with(AppOptions::default()).await;
    let acme = app.create_tenant("acme").await;
    let created = create_endpoint(
        &app,
        &acme,
        json!({ "url": "https://hooks.receiver.example/in" }),
    )
    .await;
    let endpoint = EndpointId::parse(created["id"].as_str().unwrap()).unwrap();
    let secret = shown_secret(&created);
    let master = test_master_key();
    let binding = binding(acme.id, endpoint);
    // As a deployment before migration 0039 stored it: under the master key.
    let su = app.db.superuser_pool().await;
    sqlx::query("UPDATE bulkhead.webhook_endpoints SET secret = $2 WHERE id = $1")
        .bind(endpoint.uuid())
        .bind(master.seal_webhook_secret(&binding, &secret))
        .execute(&su)
        .await
        .unwrap();
    assert_eq!(endpoint_keys(&app, acme.id, endpoint).await.current, secret);

    // Rotated: the new secret is under the tenant's data key, the old one still signs.
    let rotated = rotate(&app, &acme, endpoint).await;
    let fresh = shown_secret(&rotated);
    let now = endpoint_keys(&app, acme.id, endpoint).await;
    assert_eq!(now.current, fresh);
    assert_eq!(now.previous.as_deref(), Some(secret.as_slice()));
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret FROM bulkhead.webhook_endpoints WHERE id = $1")
            .bind(endpoint.uuid())
            .fetch_one(&su)
            .await
            .unwrap();
    assert!(master.open_webhook_secret(&binding, &stored).is_err());

    // A secret sealed under a key this deployment never had (an imported endpoint): refused
    // as unopenable, not as a fault; rotated even with a grace period, the endpoint signs with
    // its new secret alone.
    let foreign = bulkhead_auth::TenantDataKey::generate().seal_webhook_secret(&binding, &secret);
    sqlx::query(
        "UPDATE bulkhead.webhook_endpoints SET secret = $2, previous_secret = NULL, \
         previous_secret_expires_at = NULL WHERE id = $1",
    )
    .bind(endpoint.uuid())
    .bind(&foreign)
    .execute(&su)
    .await
    .unwrap();
    let mut tx = app
        .state
        .store()
        .begin(&system(acme.id), Access::ReadOnly)
        .await
        .unwrap();
    let refused = bulkhead_store::tenant::webhooks::endpoint_keys(
        &mut tx,
        endpoint,
        chrono::Utc::now(),
        &master,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            refused,
            bulkhead_store::StoreError::SecretUnopenable("webhook")
        ),
        "{refused:?}"
    );
    drop(tx);
    let rotated = rotate(&app, &acme, endpoint).await;
    let now = endpoint_keys(&app, acme.id, endpoint).await;
    assert_eq!(now.current, shown_secret(&rotated));
    assert!(now.previous.is_none());
}
