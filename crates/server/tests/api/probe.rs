//! `bulkhead probe` against a real deployment on loopback: it passes on the real server, and it
//! catches a deliberately weakened tenant check (the test-only `probe-weakness` feature).

use bulkhead_probe::{
    self as probe, Attack, OperatorTarget, ProbeConfig, Report, TenantCredentials, Verdict,
};
use bulkhead_test_support::{spawn_app_with, AppOptions, TestApp, BASE_DOMAIN};

use crate::helpers::production_egress;

async fn probe(app: &TestApp, operator: Option<OperatorTarget>) -> Report {
    let a = app.create_tenant("victim").await;
    let b = app.create_tenant("attacker").await;
    probe::run(ProbeConfig {
        base_url: format!("http://{}", app.addr).parse().unwrap(),
        base_domain: BASE_DOMAIN.into(),
        tenant_a: TenantCredentials {
            slug: a.slug,
            admin_key: a.key,
        },
        tenant_b: TenantCredentials {
            slug: b.slug,
            admin_key: b.key,
        },
        // The served /openapi.json, as an operator's probe reads it.
        openapi_file: None,
        operator,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_probe_finds_nothing_on_the_real_server() {
    let app = spawn_app_with(production_egress()).await;
    // The operator door too: the operator API on loopback TCP, with an operator key holding
    // every operator scope.
    let op = app.spawn_operator_tcp().await;
    let spec = bulkhead_server::service::operators::OperatorKeySpec {
        name: "probe".into(),
        scopes: bulkhead_core::OperatorScopes::parse_all(&[
            "tenants:read",
            "tenants:write",
            "tenants:delete",
            "operators:manage",
        ])
        .unwrap(),
        expires_at: None,
    };
    let (_, operator_key) = bulkhead_server::service::operators::mint(
        &op.owner,
        &bulkhead_test_support::test_peppers(),
        &spec,
        "cli:probe",
    )
    .await
    .unwrap();
    let operator = OperatorTarget {
        base_url: op.tcp.clone().unwrap().parse().unwrap(),
        operator_key: operator_key.expose_secret().to_owned(),
    };
    let report = probe(&app, Some(operator)).await;
    println!("{}\n{}", report.table(), report.summary());
    assert!(report.passed(), "{}", report.table());
    assert!(report.operations > 40);
    // Every kind of attack ran somewhere.
    for attack in [
        Attack::AKeyOnB,
        Attack::ForeignIds,
        Attack::Indistinguishable,
        Attack::InternalUrls,
        Attack::ForeignTokens,
        Attack::OutOfScope,
        Attack::ExpiredKey,
        Attack::AfterGraceKey,
        Attack::HostileSchema,
        Attack::SlowNeighbour,
        Attack::OperatorKeyOnTenant,
        Attack::TenantCredentialOnOperator,
    ] {
        assert!(
            report.findings.iter().any(|f| f.attack == attack),
            "{attack:?} never ran"
        );
    }
    op.stop().await;
}

#[tokio::test]
async fn the_probe_catches_a_weakened_tenant_check() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|config| config.weaken_host_check = true),
        ..production_egress()
    })
    .await;
    let report = probe(&app, None).await;
    assert!(!report.passed());
    let leaks: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.verdict == Verdict::Leak)
        .collect();
    assert!(
        leaks
            .iter()
            .any(|f| f.attack == Attack::AKeyOnB && f.operation == "GET /v1/sessions"),
        "{}",
        report.table()
    );
}
