//! Proxies from the environment are ignored: with `HTTPS_PROXY` and friends pointing at a
//! loopback canary, a delivery still goes straight to the receiver and the canary sees nothing.
//! Its own test binary (one process, one test) because it sets process-wide variables.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_test_support::receiver::{Receiver, TestCa};
use bulkhead_test_support::test_egress_policy;
use bulkhead_webhooks::egress::SendOutcome;
use bulkhead_webhooks::{EgressClient, EgressConfig, StaticResolver};

#[tokio::test]
async fn environment_proxies_are_ignored() {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let ca = TestCa::new();
    let receiver =
        Receiver::start(loopback, 0, Some(ca.server_config(&["receiver.example"]))).await;
    let proxy = Receiver::start(loopback, 0, None).await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.addr.port());
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(var, &proxy_url);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let resolver = StaticResolver::new();
    resolver.insert("receiver.example", vec![loopback]);
    let client = EgressClient::new(
        test_egress_policy(),
        Arc::new(resolver),
        &EgressConfig {
            extra_roots_der: vec![ca.cert_der.clone()],
            total_timeout: Duration::from_secs(5),
            ..EgressConfig::default()
        },
    )
    .unwrap();
    let url = format!("https://receiver.example:{}/", receiver.addr.port());
    let outcome = client
        .post(
            bulkhead_core::TenantId::from_uuid(uuid::Uuid::from_u128(1)),
            &url,
            http::HeaderMap::new(),
            bytes::Bytes::from_static(b"{}"),
        )
        .await;
    assert!(
        matches!(outcome, SendOutcome::Response { status: 200, .. }),
        "{outcome:?}"
    );
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(proxy.connections(), 0, "the environment's proxy was used");
}
