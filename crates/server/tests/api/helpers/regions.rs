//! Deployments of two regions: "us" served by the store's own database, "eu" by another.

use std::sync::Arc;

use bulkhead_store::placement::location::Placement;
use bulkhead_store::placement::registry::{NewTenant, Plan};
use bulkhead_store::Store;
use bulkhead_test_support::{test_master_key, test_peppers, TestTenant};
use sqlx::PgPool;

/// `store` reconfigured to serve "us" (its own database, the default) and "eu" through
/// `eu_pool`.
pub(crate) fn us_and_eu(store: Store, eu_pool: PgPool) -> Store {
    store.reconfigured(move |t| {
        t.default_region = "us".into();
        t.regions = vec![("eu".into(), eu_pool)];
        t.master_key = Some(Arc::new(test_master_key()));
    })
}

/// Onboards a shared-tier tenant of `region` through the server's onboarding on `owner` (a
/// store of [`us_and_eu`]), as `bulkhead tenant create --region` does.
pub(crate) async fn onboard_in_region(owner: &Store, slug: &str, region: &str) -> TestTenant {
    let onboarded = bulkhead_server::service::tenants::onboard(
        owner,
        &test_peppers(),
        bulkhead_auth::KeyEnvironment::Live,
        &NewTenant {
            slug: bulkhead_core::TenantSlug::parse(slug).unwrap(),
            display_name: slug.into(),
            plan: Plan::Standard,
            region: region.into(),
            placement: Placement::Shared,
        },
        "cli:test",
    )
    .await
    .unwrap();
    TestTenant {
        id: onboarded.tenant.id,
        slug: slug.into(),
        key: onboarded.admin_key.expose_secret().to_owned(),
    }
}
