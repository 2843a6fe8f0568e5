//! The tool tables under row-level security, as the application role: one tenant's tools,
//! versions and screening decisions are invisible and unwritable from another's transaction,
//! and a sealed tool secret opens only for its own tenant and tool.

use bulkhead_core::{Actor, RequestId, TenantContext, TenantId, ToolName};
use bulkhead_store::tenant::tools::{self, NewDecision, NewTool, ToolPatch, Visible};
use bulkhead_store::{Access, StoreError};
use bulkhead_test_support::{create_tenant, test_master_key, TestDb};
use serde_json::json;

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

#[tokio::test]
async fn tools_versions_and_decisions_stay_in_their_tenant() {
    let db = TestDb::new().await;
    let a = create_tenant(&db, "alpha").await;
    let b = create_tenant(&db, "beta").await;
    let store = db.app_store().await;
    let master = test_master_key();
    let name = ToolName::parse("search").unwrap();

    let mut tx = store.begin(&ctx(a.id), Access::ReadWrite).await.unwrap();
    let tool = tools::create(
        &mut tx,
        &NewTool {
            name: name.clone(),
            description: "Searches.".into(),
            input_schema: json!({ "type": "object" }),
            endpoint_url: "https://tools.example/run".into(),
            enabled: true,
            screening: "clean",
            secret: vec![7; 32],
        },
        &master,
    )
    .await
    .unwrap();
    tools::update(
        &mut tx,
        &name,
        &ToolPatch {
            description: Some("Searches well.".into()),
            screening: "clean",
            ..ToolPatch::default()
        },
    )
    .await
    .unwrap();
    tools::record_decision(
        &mut tx,
        &NewDecision {
            subject: "tool:search",
            field: "description",
            policy: "reject",
            verdict: "rejected",
            rules: &["markup.hidden-tag".to_owned()],
            rules_version: "v1",
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Beta's transaction: nothing of alpha's, by name, by listing, or by raw SQL.
    let mut tx = store.begin(&ctx(b.id), Access::ReadWrite).await.unwrap();
    assert!(matches!(
        tools::get(&mut tx, &name).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        tools::versions(&mut tx, &name).await,
        Err(StoreError::NotFound)
    ));
    assert!(tools::list(&mut tx, &Visible::All, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(tools::decisions(&mut tx, "tool:search")
        .await
        .unwrap()
        .is_empty());
    for table in ["tools", "tool_versions", "screening_decisions"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM bulkhead.{table}"))
            .fetch_one(tx.conn())
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} leaks across tenants");
    }
    let updated = sqlx::query("UPDATE bulkhead.tools SET enabled = false")
        .execute(tx.conn())
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    // Writing a row for alpha from beta's context is refused by the policy's WITH CHECK.
    let err = sqlx::query(
        "INSERT INTO bulkhead.tool_versions (tenant_id, tool_id, version, description, input_schema, endpoint_url, enabled, screening, actor_id) \
         VALUES ($1, $2, 9, 'x', '{}'::jsonb, 'https://x.example', true, 'clean', 'me')",
    )
    .bind(a.id.uuid())
    .bind(tool.id.uuid())
    .execute(tx.conn())
    .await
    .unwrap_err();
    assert!(err.as_database_error().is_some());
    drop(tx);

    // Alpha sees its two versions, and its secret opens.
    let mut tx = store.begin(&ctx(a.id), Access::ReadOnly).await.unwrap();
    let versions = tools::versions(&mut tx, &name).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 1]
    );
    let secret = tools::signing_secret(&mut tx, &tool, &master)
        .await
        .unwrap();
    assert_eq!(secret.as_slice(), &[7; 32]);
    assert_eq!(
        tools::decisions(&mut tx, "tool:search")
            .await
            .unwrap()
            .len(),
        1
    );
    // The sealed value does not open as a webhook secret (its own key purpose).
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT secret FROM bulkhead.tools")
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert!(
        !sealed.windows(32).any(|w| w == [7; 32]),
        "stored in the clear"
    );
    let mut binding = [0u8; 32];
    binding[..16].copy_from_slice(a.id.uuid().as_bytes());
    binding[16..].copy_from_slice(tool.id.uuid().as_bytes());
    let sealed_key: Vec<u8> =
        sqlx::query_scalar("SELECT sealed FROM bulkhead.tenant_keys WHERE id = $1")
            .bind(a.id.uuid())
            .fetch_one(tx.conn())
            .await
            .unwrap();
    let data_key = master
        .open_tenant_data_key(a.id.uuid().as_bytes(), &sealed_key)
        .unwrap();
    assert!(data_key.open_webhook_secret(&binding, &sealed).is_err());
    assert!(data_key.open_tool_secret(&binding, &sealed).is_ok());
    // Under the tenant's data key, not the master key.
    assert!(master.open_tool_secret(&binding, &sealed).is_err());
}
