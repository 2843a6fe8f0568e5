//! `bulkhead probe` against a real deployment on loopback: it passes on the real server, and it
//! catches a deliberately weakened tenant check (the test-only `probe-weakness` feature).

use bulkhead_probe::{self as probe, Attack, ProbeConfig, Report, TenantCredentials, Verdict};
use bulkhead_test_support::{spawn_app_with, AppOptions, TestApp, BASE_DOMAIN};

use crate::helpers::production_egress;

async fn probe(app: &TestApp) -> Report {
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
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_probe_finds_nothing_on_the_real_server() {
    let app = spawn_app_with(production_egress()).await;
    let report = probe(&app).await;
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
    ] {
        assert!(
            report.findings.iter().any(|f| f.attack == attack),
            "{attack:?} never ran"
        );
    }
}

#[tokio::test]
async fn the_probe_catches_a_weakened_tenant_check() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|config| config.weaken_host_check = true),
        ..production_egress()
    })
    .await;
    let report = probe(&app).await;
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
