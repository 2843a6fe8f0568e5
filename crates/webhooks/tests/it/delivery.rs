//! Durable delivery against loopback TLS receivers: signatures, retries on an injected clock,
//! 410, auto-disable, the circuit breaker, rebinding, redirects, fairness, lease expiry.
//!
//! Receivers listen on 127.0.0.1 (the only special-purpose address the test policy allows);
//! canaries listen on 127.0.0.2, which the policy denies, and must see no connection at all.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_core::{Actor, Clock, EndpointId, MessageId, RequestId, TenantContext, TenantId};
use bulkhead_store::audit;
use bulkhead_store::tenant::webhooks::{self as store, MessageSource, NewEndpoint};
use bulkhead_store::{Access, Store};
use bulkhead_test_support::receiver::{NamedReceivers, Receiver, Reply};
use bulkhead_test_support::{
    create_tenant, create_tenant_in, create_tenant_in_region, test_master_key, TestDb, TestTier,
};
use bulkhead_webhooks::delivery::{Delivered, DeliveryConfig, Dispatcher};
use bulkhead_webhooks::{verify, EgressConfig, Secret};
use chrono::Utc;
use serde_json::json;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const CANARY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A database, its serving store, loopback receivers and a clock (also used by `plans`).
pub(crate) struct Rig {
    pub(crate) db: TestDb,
    pub(crate) store: Store,
    receivers: NamedReceivers,
    clock: Clock,
}

impl Rig {
    pub(crate) async fn new(clock: Clock) -> Rig {
        let db = TestDb::new().await;
        let store = db.app_store().await;
        Rig {
            db,
            store,
            receivers: NamedReceivers::new(),
            clock,
        }
    }

    /// Sets the manual clock and the database's definer clock with it.
    async fn set_clock(&self, at: chrono::DateTime<Utc>) {
        self.clock.set(at);
        self.db.set_definer_clock(at.into()).await;
    }

    /// Advances the manual clock and the database's definer clock with it.
    async fn advance(&self, by: chrono::Duration) {
        self.set_clock(self.clock.now() + by).await;
    }

    fn dispatcher(&self, config: DeliveryConfig, timeout: Duration) -> Dispatcher {
        self.dispatcher_on(self.store.clone(), config, timeout)
    }

    /// A dispatcher on a store of its own (as in another process).
    fn dispatcher_on(&self, store: Store, config: DeliveryConfig, timeout: Duration) -> Dispatcher {
        let egress = EgressConfig {
            total_timeout: timeout,
            ..self.receivers.egress_config()
        };
        let client = self.receivers.egress_client(&egress);
        Dispatcher::new(
            store,
            client,
            self.clock.clone(),
            config,
            Arc::new(test_master_key()),
        )
    }

    pub(crate) async fn tenant(&self, slug: &str) -> TenantContext {
        let t = create_tenant(&self.db, slug).await;
        ctx(t.id)
    }

    pub(crate) async fn endpoint(&self, ctx: &TenantContext, url: &str) -> (EndpointId, Secret) {
        let secret = Secret::generate();
        let mut tx = self.store.begin(ctx, Access::ReadWrite).await.unwrap();
        let e = store::create_endpoint(
            &mut tx,
            &NewEndpoint {
                url: url.into(),
                description: String::new(),
                event_types: Vec::new(),
                rate_limit_per_second: None,
                headers: json!({ "x-team": "payments" }),
                secret: secret.expose_bytes().to_vec(),
                enabled: true,
            },
            &test_master_key(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        (e.id, secret)
    }

    pub(crate) async fn publish(&self, ctx: &TenantContext, n: u32) -> MessageId {
        let mut tx = self.store.begin(ctx, Access::ReadWrite).await.unwrap();
        let (id, _) = store::publish(
            &mut tx,
            "invoice.paid",
            &json!({ "n": n }),
            MessageSource::Tenant,
            None,
            self.clock.now(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    async fn endpoint_row(&self, ctx: &TenantContext, id: EndpointId) -> store::Endpoint {
        let mut tx = self.store.begin(ctx, Access::ReadOnly).await.unwrap();
        store::get_endpoint(&mut tx, id).await.unwrap()
    }

    async fn attempts(&self, ctx: &TenantContext, id: MessageId) -> Vec<store::Attempt> {
        let mut tx = self.store.begin(ctx, Access::ReadOnly).await.unwrap();
        store::attempts_of(&mut tx, id).await.unwrap()
    }

    async fn audit_actions(&self, ctx: &TenantContext) -> Vec<String> {
        let mut tx = self.store.begin(ctx, Access::ReadOnly).await.unwrap();
        audit::recent(&mut tx, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }
}

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::for_test(
        tenant,
        Actor::System { component: "test" },
        RequestId::new(),
    )
}

fn url(name: &str, r: &Receiver) -> String {
    format!("https://{name}:{}/hook", r.addr.port())
}

#[tokio::test]
async fn a_delivery_is_signed_verifiable_and_carries_the_message_id() {
    let rig = Rig::new(Clock::system()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    let (_, secret) = rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let message = rig.publish(&a, 1).await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.headers["webhook-id"], message.to_string().as_str());
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["x-team"], "payments");
    verify(&secret, &req.headers, &req.body, Utc::now()).unwrap();
    assert!(verify(&Secret::generate(), &req.headers, &req.body, Utc::now()).is_err());
    // Nothing is left to do.
    assert!(d.run_once().await.unwrap().is_empty());
    let attempts = rig.attempts(&a, message).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_until_the_old_one_expires() {
    let clock = Clock::manual(Utc::now());
    let rig = Rig::new(clock.clone()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    let (id, old) = rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let new = Secret::generate();
    let mut tx = rig.store.begin(&a, Access::ReadWrite).await.unwrap();
    store::rotate_secret(
        &mut tx,
        id,
        new.expose_bytes(),
        clock.now() + chrono::Duration::hours(24),
        &test_master_key(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    rig.publish(&a, 1).await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    let req = &receiver.requests()[0];
    let sigs = req.headers["webhook-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(sigs.split(' ').count(), 2, "{sigs}");
    verify(&new, &req.headers, &req.body, clock.now()).unwrap();
    verify(&old, &req.headers, &req.body, clock.now()).unwrap();

    rig.advance(chrono::Duration::hours(25)).await;
    rig.publish(&a, 2).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    let req = &receiver.requests()[1];
    assert_eq!(
        req.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    verify(&new, &req.headers, &req.body, clock.now()).unwrap();
    assert!(verify(&old, &req.headers, &req.body, clock.now()).is_err());
}

#[tokio::test]
async fn failures_retry_on_the_schedule_without_sleeping_and_honour_retry_after() {
    let start = Utc::now();
    let clock = Clock::manual(start);
    let rig = Rig::new(clock.clone()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    receiver.script(vec![
        Reply::status(500),
        Reply::Status(
            503,
            vec![("retry-after".into(), "900".into())],
            "busy".into(),
        ),
        Reply::status(502),
        Reply::status(200),
    ]);
    let a = rig.tenant("alpha").await;
    let (endpoint, secret) = rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let message = rig.publish(&a, 1).await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));

    let Delivered::Failed(Some(first)) = d.run_once().await.unwrap()[0].clone() else {
        panic!()
    };
    let delay = (first - clock.now()).num_seconds();
    assert!((4..=6).contains(&delay), "first retry after {delay}s");
    assert!(d.run_once().await.unwrap().is_empty(), "not due yet");
    rig.set_clock(first).await;
    // Second failure asks for 900 s; the schedule says about 300 s: the longer one wins.
    let Delivered::Failed(Some(second)) = d.run_once().await.unwrap()[0].clone() else {
        panic!()
    };
    assert_eq!((second - clock.now()).num_seconds(), 900);
    rig.set_clock(second).await;
    let Delivered::Failed(Some(third)) = d.run_once().await.unwrap()[0].clone() else {
        panic!()
    };
    let delay = (third - clock.now()).num_seconds();
    assert!((1620..=1980).contains(&delay), "third retry after {delay}s");
    rig.set_clock(third).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);

    // Every attempt carried the same webhook-id, each signed at its own time.
    let got = receiver.requests();
    assert_eq!(got.len(), 4);
    for req in &got {
        assert_eq!(req.headers["webhook-id"], message.to_string().as_str());
    }
    verify(&secret, &got[3].headers, &got[3].body, clock.now()).unwrap();
    let attempts = rig.attempts(&a, message).await;
    let codes: Vec<Option<i32>> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, vec![Some(500), Some(503), Some(502), Some(200)]);
    assert_eq!(attempts[1].response_sample.as_deref(), Some("busy"));
    assert_eq!(attempts[0].error_class.as_deref(), Some("http_status"));
    // The streak ended with the success.
    let row = rig.endpoint_row(&a, endpoint).await;
    assert_eq!(row.consecutive_failures, 0);
    assert!(row.failing_since.is_none());
}

#[tokio::test]
async fn a_delivery_gives_up_after_the_last_scheduled_retry() {
    let clock = Clock::manual(Utc::now());
    let rig = Rig::new(clock.clone()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    receiver.set_default(Reply::status(500));
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let message = rig.publish(&a, 1).await;
    // A breaker that never opens, so every scheduled attempt is made.
    let config = DeliveryConfig {
        circuit_after: 1000,
        ..DeliveryConfig::default()
    };
    let d = rig.dispatcher(config, Duration::from_secs(5));
    let mut made = 0;
    loop {
        let r = d.run_once().await.unwrap();
        assert_eq!(r.len(), 1);
        made += 1;
        match &r[0] {
            Delivered::Failed(Some(at)) => rig.set_clock(*at).await,
            Delivered::Failed(None) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(made, bulkhead_webhooks::schedule::max_attempts());
    assert_eq!(rig.attempts(&a, message).await.len(), 8);
    rig.advance(chrono::Duration::days(2)).await;
    assert!(
        d.run_once().await.unwrap().is_empty(),
        "a failed delivery is not retried"
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_tells_the_other_endpoints() {
    let rig = Rig::new(Clock::system()).await;
    let gone = rig.receivers.start("gone.example", LOOPBACK).await;
    gone.set_default(Reply::status(410));
    let watcher = rig.receivers.start("watcher.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    let (gone_id, _) = rig.endpoint(&a, &url("gone.example", &gone)).await;
    rig.endpoint(&a, &url("watcher.example", &watcher)).await;
    rig.publish(&a, 1).await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    let mut results = d.run_once().await.unwrap();
    results.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(results, vec![Delivered::Failed(None), Delivered::Succeeded]);
    let row = rig.endpoint_row(&a, gone_id).await;
    assert!(!row.enabled);
    assert!(row.disabled_reason.unwrap().contains("410"));
    assert!(rig
        .audit_actions(&a)
        .await
        .contains(&"webhook.endpoint_disabled".to_owned()));
    // The endpoint.disabled event reaches the watcher only.
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    let last = watcher.requests().pop().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(body["type"], "endpoint.disabled");
    assert_eq!(body["source"], "platform");
    assert_eq!(body["data"]["endpoint_id"], gone_id.to_string());
    assert_eq!(gone.requests().len(), 1);
}

#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled() {
    let clock = Clock::manual(Utc::now());
    let rig = Rig::new(clock.clone()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    receiver.set_default(Reply::status(500));
    let a = rig.tenant("alpha").await;
    let (id, _) = rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let config = DeliveryConfig {
        circuit_after: 1000,
        ..DeliveryConfig::default()
    };
    let d = rig.dispatcher(config, Duration::from_secs(5));
    rig.publish(&a, 1).await;
    assert!(matches!(
        d.run_once().await.unwrap()[0],
        Delivered::Failed(Some(_))
    ));
    rig.advance(chrono::Duration::days(4)).await;
    rig.publish(&a, 2).await;
    let r = d.run_once().await.unwrap();
    assert!(
        r.iter().all(|x| matches!(x, Delivered::Failed(Some(_)))),
        "{r:?}"
    );
    assert!(
        rig.endpoint_row(&a, id).await.enabled,
        "four days is not enough"
    );
    rig.advance(chrono::Duration::days(1) + chrono::Duration::seconds(1))
        .await;
    rig.publish(&a, 3).await;
    let r = d.run_once().await.unwrap();
    assert!(r.contains(&Delivered::Failed(None)), "{r:?}");
    let row = rig.endpoint_row(&a, id).await;
    assert!(!row.enabled);
    assert!(row.disabled_reason.unwrap().contains("5 days"));
    let mut tx = rig.store.begin(&a, Access::ReadOnly).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bulkhead.webhook_messages WHERE tenant_id = $1 AND event_type = 'endpoint.disabled'",
    )
    .bind(a.tenant_id().uuid())
    .fetch_one(tx.conn())
    .await
    .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_circuit_breaker_holds_deliveries_back_without_connecting() {
    let clock = Clock::manual(Utc::now());
    let rig = Rig::new(clock.clone()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    receiver.set_default(Reply::status(500));
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let config = DeliveryConfig {
        circuit_after: 2,
        circuit_cooldown: chrono::Duration::seconds(60),
        // One endpoint may hold half of this: room for the three below in one claim.
        per_tenant: 6,
        ..DeliveryConfig::default()
    };
    let d = rig.dispatcher(config, Duration::from_secs(5));
    rig.publish(&a, 1).await;
    rig.publish(&a, 2).await;
    assert_eq!(d.run_once().await.unwrap().len(), 2);
    assert_eq!(receiver.connections(), 2);
    rig.publish(&a, 3).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Deferred]);
    assert_eq!(
        receiver.connections(),
        2,
        "an open circuit makes no connection"
    );
    rig.advance(chrono::Duration::seconds(61)).await;
    receiver.set_default(Reply::status(200));
    // The two retries and the held-back delivery all go once the breaker closes.
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded; 3]);
}

#[tokio::test]
async fn a_denied_address_is_blocked_audited_and_never_retried() {
    let clock = Clock::manual(Utc::now());
    let rig = Rig::new(clock.clone()).await;
    let canary = Receiver::start(
        CANARY_IP,
        0,
        Some(rig.receivers.ca.server_config(&["canary.example"])),
    )
    .await;
    rig.receivers
        .resolver
        .insert("canary.example", vec![CANARY_IP]);
    let a = rig.tenant("alpha").await;
    let (endpoint, _) = rig.endpoint(&a, &url("canary.example", &canary)).await;
    let message = rig.publish(&a, 1).await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Blocked]);
    rig.advance(chrono::Duration::days(1)).await;
    assert!(d.run_once().await.unwrap().is_empty());
    assert_eq!(canary.connections(), 0);
    let attempts = rig.attempts(&a, message).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "blocked");
    assert_eq!(attempts[0].error_class.as_deref(), Some("blocked_address"));
    assert!(rig
        .audit_actions(&a)
        .await
        .contains(&"webhook.blocked".to_owned()));
    // A blocked attempt is not a receiver failure.
    assert_eq!(rig.endpoint_row(&a, endpoint).await.consecutive_failures, 0);
}

#[tokio::test]
async fn rebinding_cannot_move_a_connection_to_an_unchecked_address() {
    let rig = Rig::new(Clock::system()).await;
    let receiver = Receiver::start(
        LOOPBACK,
        0,
        Some(
            rig.receivers
                .ca
                .server_config(&["rebind.example", "mixed.example"]),
        ),
    )
    .await;
    let port = receiver.addr.port();
    let canary = Receiver::start(
        CANARY_IP,
        port,
        Some(
            rig.receivers
                .ca
                .server_config(&["rebind.example", "mixed.example"]),
        ),
    )
    .await;
    // First answer allowed, every later one denied.
    rig.receivers
        .resolver
        .insert_sequence("rebind.example", vec![vec![LOOPBACK], vec![CANARY_IP]]);
    // One answer mixing an allowed and a denied address: refused whole.
    rig.receivers
        .resolver
        .insert("mixed.example", vec![LOOPBACK, CANARY_IP]);
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &format!("https://rebind.example:{port}/"))
        .await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    rig.publish(&a, 1).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    rig.publish(&a, 2).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Blocked]);
    assert_eq!(receiver.connections(), 1);

    let b = rig.tenant("bravo").await;
    rig.endpoint(&b, &format!("https://mixed.example:{port}/"))
        .await;
    rig.publish(&b, 1).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Blocked]);
    assert_eq!(receiver.connections(), 1);
    assert_eq!(canary.connections(), 0, "the canary was reached");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let rig = Rig::new(Clock::system()).await;
    let canary = rig.receivers.start("canary.example", LOOPBACK).await;
    let denied_canary = Receiver::start(
        CANARY_IP,
        0,
        Some(rig.receivers.ca.server_config(&["inside.example"])),
    )
    .await;
    rig.receivers
        .resolver
        .insert("inside.example", vec![CANARY_IP]);
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    receiver.script(vec![
        Reply::Status(
            302,
            vec![("location".into(), url("canary.example", &canary))],
            String::new(),
        ),
        Reply::Status(
            307,
            vec![("location".into(), url("inside.example", &denied_canary))],
            String::new(),
        ),
    ]);
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let m1 = rig.publish(&a, 1).await;
    let m2 = rig.publish(&a, 2).await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    let r = d.run_once().await.unwrap();
    assert!(
        r.iter().all(|x| matches!(x, Delivered::Failed(Some(_)))),
        "{r:?}"
    );
    assert_eq!(canary.connections(), 0);
    assert_eq!(denied_canary.connections(), 0);
    for m in [m1, m2] {
        let attempts = rig.attempts(&a, m).await;
        assert_eq!(attempts[0].error_class.as_deref(), Some("redirect"));
    }
}

#[tokio::test]
async fn response_bodies_are_read_only_up_to_the_sample_cap() {
    let rig = Rig::new(Clock::system()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    receiver.script(vec![Reply::Status(200, Vec::new(), "x".repeat(200_000))]);
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let m = rig.publish(&a, 1).await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    let attempts = rig.attempts(&a, m).await;
    assert_eq!(
        attempts[0].response_sample.as_ref().map(String::len),
        Some(4096)
    );
}

#[tokio::test]
async fn a_tenant_with_a_hanging_endpoint_does_not_delay_another() {
    let rig = Rig::new(Clock::system()).await;
    let hanging = rig.receivers.start("hang.example", LOOPBACK).await;
    hanging.set_default(Reply::Hang);
    let healthy = rig.receivers.start("healthy.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    let b = rig.tenant("bravo").await;
    rig.endpoint(&a, &url("hang.example", &hanging)).await;
    rig.endpoint(&b, &url("healthy.example", &healthy)).await;
    for n in 0..12 {
        rig.publish(&a, n).await;
    }
    rig.publish(&b, 0).await;
    let config = DeliveryConfig {
        per_tenant: 2,
        concurrency: 4,
        idle_poll: Duration::from_millis(50),
        ..DeliveryConfig::default()
    };
    let d = Arc::new(rig.dispatcher(config, Duration::from_secs(20)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(d.clone().run(stopped));
    let started = std::time::Instant::now();
    assert!(
        healthy.wait_for(1, Duration::from_secs(5)).await,
        "B's delivery waited behind A's"
    );
    let waited = started.elapsed();
    // B kept flowing while A's slots hang; A never held more than its cap.
    rig.publish(&b, 1).await;
    assert!(healthy.wait_for(2, Duration::from_secs(5)).await);
    assert!(
        hanging.connections() <= 2,
        "A held {} slots",
        hanging.connections()
    );
    assert!(waited < Duration::from_secs(5));
    let _ = stop.send(true);
    run.abort();
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_loses_nothing() {
    let clock = Clock::manual(Utc::now());
    let rig = Rig::new(clock.clone()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let m = rig.publish(&a, 1).await;
    // A worker claims the delivery and dies before recording anything.
    let claimed = rig
        .store
        .claim_webhook_deliveries(10, 4, 30, clock.now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    assert!(
        d.run_once().await.unwrap().is_empty(),
        "the lease still holds"
    );
    rig.advance(chrono::Duration::seconds(31)).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(rig.attempts(&a, m).await.len(), 1);
}

#[tokio::test]
async fn the_claim_is_round_robin_and_caps_each_tenant() {
    let rig = Rig::new(Clock::system()).await;
    let a = rig.tenant("alpha").await;
    let b = rig.tenant("bravo").await;
    rig.endpoint(&a, "https://a.example/").await;
    rig.endpoint(&b, "https://b.example/").await;
    for n in 0..10 {
        rig.publish(&a, n).await;
    }
    rig.publish(&b, 0).await;
    rig.publish(&b, 1).await;
    // A tenant is guaranteed 4 in flight, one endpoint of it half of that (migration 0021).
    let claimed = rig
        .store
        .claim_webhook_deliveries(3, 4, 60, Utc::now())
        .await
        .unwrap();
    let from_b = claimed
        .iter()
        .filter(|c| c.tenant_id == b.tenant_id())
        .count();
    assert_eq!(claimed.len(), 3);
    assert!(from_b >= 1, "B got nothing from a batch of 3");
    let more = rig
        .store
        .claim_webhook_deliveries(100, 4, 60, Utc::now())
        .await
        .unwrap();
    let a_total = claimed
        .iter()
        .chain(&more)
        .filter(|c| c.tenant_id == a.tenant_id())
        .count();
    assert_eq!(a_total, 2, "A's one endpoint may hold half of A's 4");
    // A second endpoint of A takes the other half, and no more than that.
    rig.endpoint(&a, "https://a2.example/").await;
    rig.publish(&a, 100).await;
    rig.publish(&a, 101).await;
    rig.publish(&a, 102).await;
    let third = rig
        .store
        .claim_webhook_deliveries(100, 4, 60, Utc::now())
        .await
        .unwrap();
    assert_eq!(third.len(), 2, "A's second endpoint got {third:?}");
    // Hostile arguments from the app role are refused.
    assert!(rig
        .store
        .claim_webhook_deliveries(0, 2, 60, Utc::now())
        .await
        .is_err());
    assert!(rig
        .store
        .claim_webhook_deliveries(10, 2, 100_000, Utc::now())
        .await
        .is_err());
}

#[tokio::test]
async fn the_per_endpoint_rate_limit_defers_without_connecting() {
    let clock = Clock::manual(Utc::now());
    let rig = Rig::new(clock.clone()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    let (id, _) = rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let mut tx = rig.store.begin(&a, Access::ReadWrite).await.unwrap();
    let patch = store::EndpointPatch {
        rate_limit_per_second: Some(Some(1)),
        ..Default::default()
    };
    store::update_endpoint(&mut tx, id, &patch).await.unwrap();
    tx.commit().await.unwrap();
    rig.publish(&a, 1).await;
    rig.publish(&a, 2).await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    let mut r = d.run_once().await.unwrap();
    r.sort_by_key(|x| format!("{x:?}"));
    assert_eq!(r, vec![Delivered::Deferred, Delivered::Succeeded]);
    assert_eq!(receiver.connections(), 1);
    rig.advance(chrono::Duration::seconds(1)).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn the_app_role_cannot_claim_early_by_passing_a_future_clock() {
    // Issue 17 item 6: the claim trusted the caller's `p_now`; `infinity` claimed every
    // tenant's deliveries regardless of backoff and leased them forever.
    let rig = Rig::new(Clock::system()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    rig.publish(&a, 1).await;
    // The delivery is backing off: due in an hour (set as the superuser, past RLS).
    let owner = rig.db.superuser_pool().await;
    sqlx::query(
        "UPDATE bulkhead.webhook_deliveries SET next_attempt_at = now() + interval '1 hour'",
    )
    .execute(&owner)
    .await
    .unwrap();
    let far = Utc::now() + chrono::Duration::days(365 * 100);
    let claimed = rig
        .store
        .claim_webhook_deliveries(10, 4, 60, far)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "a future clock claimed {claimed:?}");
    let app = rig.db.app_pool(1).await;
    let rows: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "SELECT * FROM bulkhead.claim_webhook_deliveries(10, 4, 60, 'infinity', '{}', '{}', '{}')",
    )
    .fetch_all(&app)
    .await
    .unwrap();
    assert!(rows.is_empty(), "'infinity' claimed {rows:?}");
    // Nor can the app role move the definer clock.
    assert!(
        sqlx::query("UPDATE bulkhead.definer_clock_skew SET skew = interval '1 day'")
            .execute(&app)
            .await
            .is_err()
    );
    // Once really due, it is claimed, and its lease is measured from the database's clock.
    sqlx::query("UPDATE bulkhead.webhook_deliveries SET next_attempt_at = now()")
        .execute(&owner)
        .await
        .unwrap();
    let claimed = rig
        .store
        .claim_webhook_deliveries(10, 4, 60, far)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let lease_left: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM locked_until - now())::float8 FROM bulkhead.webhook_deliveries",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert!(lease_left <= 70.0, "lease of {lease_left}s");
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn the_app_role_cannot_lease_for_an_hour_or_lift_a_tenant_past_the_cap_ceiling() {
    // Review finding 9: the claim trusted the caller's lease (up to 3600 s) and per-tenant caps
    // (up to 1000): a compromised app role could claim every due delivery of a tenant and lock
    // it for an hour. The function clamps the lease to 300 s and a cap to 256.
    let rig = Rig::new(Clock::system()).await;
    let a = rig.tenant("alpha").await;
    let (e1, _) = rig.endpoint(&a, "https://receiver.example/hook").await;
    let (e2, _) = rig.endpoint(&a, "https://other.example/hook").await;
    for n in 0..200 {
        rig.publish(&a, n).await;
    }
    // Two endpoints, each granted 1000: neither an endpoint nor the tenant passes 256.
    let claimed = rig
        .store
        .claim_webhook_deliveries_capped(
            1000,
            1,
            3600,
            Utc::now(),
            &[(a.tenant_id(), e1, 1000), (a.tenant_id(), e2, 1000)],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 256, "the cap was not clamped");
    let owner = rig.db.superuser_pool().await;
    let longest: f64 = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM locked_until - now()))::float8 \
         FROM bulkhead.webhook_deliveries WHERE status = 'delivering'",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert!(longest <= 310.0, "lease of {longest}s");
}

#[tokio::test]
async fn a_suspended_tenants_deliveries_pause_and_resume_on_activation() {
    // Issue 17 item 12: delivery did not re-check the tenant's status; a delivery claimed just
    // before a suspension still went out.
    use bulkhead_store::placement::registry::TenantStatus;
    let rig = Rig::new(Clock::system()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let message = rig.publish(&a, 1).await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    // Claimed while active, then the tenant is suspended before the send.
    let claimed = rig
        .store
        .claim_webhook_deliveries(10, 4, 60, Utc::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let owner = rig.db.owner_store().await;
    owner
        .set_tenant_status(a.tenant_id(), TenantStatus::Suspended)
        .await
        .unwrap();
    assert_eq!(d.deliver(claimed[0]).await, Delivered::Deferred);
    assert_eq!(
        receiver.connections(),
        0,
        "a suspended tenant's message went out"
    );
    // Paused, not failed: pending, no attempt counted, nothing in the attempt log.
    let mut tx = rig.store.begin(&a, Access::ReadOnly).await.unwrap();
    let deliveries = store::deliveries_of(&mut tx, message).await.unwrap();
    drop(tx);
    assert_eq!(deliveries[0].status, "pending");
    assert_eq!(deliveries[0].attempts, 0);
    assert!(rig.attempts(&a, message).await.is_empty());
    // While suspended nothing is claimed.
    assert!(d.run_once().await.unwrap().is_empty());
    assert_eq!(receiver.connections(), 0);
    // The pause backs off (review finding 9b: while the anchor and the registry disagreed, an
    // at-once-due pause spun claim/pause/NOTIFY), but activation, once both copies agree, makes
    // it due at once (issue 25), with the same webhook-id.
    owner
        .set_tenant_status(a.tenant_id(), TenantStatus::Active)
        .await
        .unwrap();
    let claimed = rig
        .store
        .claim_webhook_deliveries(10, 4, 60, Utc::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(d.deliver(claimed[0]).await, Delivered::Succeeded);
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["webhook-id"], message.to_string().as_str());
}

#[tokio::test]
async fn a_lone_tenant_with_a_fast_receiver_earns_more_than_its_guaranteed_share() {
    // Issue 25: the per-tenant cap idled the workers when nobody else was waiting.
    let rig = Rig::new(Clock::system()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    for n in 0..40 {
        rig.publish(&a, n).await;
    }
    let config = DeliveryConfig {
        per_tenant: 4,
        batch: 16,
        concurrency: 16,
        ..DeliveryConfig::default()
    };
    let d = rig.dispatcher(config, Duration::from_secs(5));
    // The endpoint's share of the guarantee (half of 4) first, then one more slot per fast
    // success.
    assert_eq!(d.run_once().await.unwrap().len(), 2);
    assert_eq!(d.run_once().await.unwrap().len(), 4);
    assert_eq!(d.run_once().await.unwrap().len(), 8);
    assert_eq!(d.run_once().await.unwrap().len(), 16);
    assert_eq!(receiver.requests().len(), 30);
}

#[tokio::test]
async fn the_dispatcher_wakes_on_publish_without_waiting_for_its_poll() {
    // Issue 25: with nothing due the dispatcher slept its whole poll interval; new work now
    // wakes it: in memory when the publisher shares its store, by NOTIFY from another process.
    let rig = Rig::new(Clock::system()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let config = DeliveryConfig {
        // A poll so long that only a wake-up can deliver within the test.
        idle_poll: Duration::from_secs(600),
        ..DeliveryConfig::default()
    };
    let d = Arc::new(rig.dispatcher(config, Duration::from_secs(5)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(d.clone().run(stopped));
    // Let the loop reach its sleep and the listener start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.publish(&a, 1).await;
    assert!(
        receiver.wait_for(1, Duration::from_secs(10)).await,
        "the publish did not wake the dispatcher"
    );
    let _ = stop.send(true);
    run.abort();
}

#[tokio::test]
async fn a_publish_notifies_other_processes_after_its_commit_not_from_inside_it() {
    // Issue 25: the due trigger sent NOTIFY from inside the publishing transaction, and a
    // notifying transaction holds a cluster-wide lock through its commit, so every publish of
    // every tenant committed one at a time. Now the store wakes its own dispatchers in memory
    // and tells other processes with a NOTIFY of its own after the commit.
    let rig = Rig::new(Clock::system()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    // Another process: a store of its own over the same database, and its dispatcher on a
    // 600 s poll, so only a notification can make it deliver within the test.
    let other = rig.db.app_store().await;
    let config = DeliveryConfig {
        idle_poll: Duration::from_secs(600),
        ..DeliveryConfig::default()
    };
    let d = Arc::new(rig.dispatcher_on(other, config, Duration::from_secs(5)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(d.clone().run(stopped));
    let mut listener = sqlx::postgres::PgListener::connect_with(&rig.db.owner_pool().await)
        .await
        .unwrap();
    listener.listen("bulkhead_webhooks").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut tx = rig.store.begin(&a, Access::ReadWrite).await.unwrap();
    let publisher: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(tx.conn())
        .await
        .unwrap();
    store::publish(
        &mut tx,
        "invoice.paid",
        &json!({ "n": 1 }),
        MessageSource::Tenant,
        None,
        rig.clock.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let heard = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("no process was told of the publish")
        .unwrap();
    assert_ne!(
        heard.process_id() as i32,
        publisher,
        "the publishing transaction notified from inside itself"
    );
    let woke = receiver.wait_for(1, Duration::from_secs(10)).await;
    let _ = stop.send(true);
    run.abort();
    assert!(woke, "the other process's dispatcher was not woken");
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_slow_its_tenants_other_endpoint() {
    // Review finding on issue 25: the earned window was per tenant, so the fast endpoint's
    // successes widened the window its hanging sibling kept filling, until the hanging one held
    // every slot of the process and the fast one waited for those attempts to time out.
    let rig = Rig::new(Clock::system()).await;
    let hanging = rig.receivers.start("hang.example", LOOPBACK).await;
    hanging.set_default(Reply::Hang);
    let fast = rig.receivers.start("fast.example", LOOPBACK).await;
    fast.set_keep_alive(true);
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("hang.example", &hanging)).await;
    rig.endpoint(&a, &url("fast.example", &fast)).await;
    // Every message goes to both endpoints.
    for n in 0..60 {
        rig.publish(&a, n).await;
    }
    let config = DeliveryConfig {
        concurrency: 8,
        batch: 8,
        idle_poll: Duration::from_millis(50),
        ..DeliveryConfig::default()
    };
    let d = Arc::new(rig.dispatcher(config, Duration::from_secs(30)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(d.clone().run(stopped));
    let all = fast.wait_for(60, Duration::from_secs(10)).await;
    let held = hanging.requests().len();
    let _ = stop.send(true);
    run.abort();
    assert!(
        all,
        "the fast endpoint got {} of 60 while its sibling hung",
        fast.requests().len()
    );
    // The hanging endpoint never held more than half of its tenant's guaranteed 4.
    assert!(held <= 2, "the hanging endpoint held {held} slots");
}

#[tokio::test]
async fn reactivating_a_tenant_delivers_its_waiting_messages_at_once() {
    // Issue 25: a reactivated tenant's deliveries waited for the fallback poll (those due while
    // it was suspended) or the pause backoff (those paused at the send).
    use bulkhead_store::placement::registry::TenantStatus;
    let rig = Rig::new(Clock::system()).await;
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    let a = rig.tenant("alpha").await;
    rig.endpoint(&a, &url("receiver.example", &receiver)).await;
    let owner = rig.db.owner_store().await;
    let config = DeliveryConfig {
        // Only a wake-up can deliver within the test.
        idle_poll: Duration::from_secs(600),
        ..DeliveryConfig::default()
    };
    let d = Arc::new(rig.dispatcher(config, Duration::from_secs(5)));
    // One delivery paused at the send (claimed, then the tenant was suspended) ...
    rig.publish(&a, 1).await;
    let claimed = rig
        .store
        .claim_webhook_deliveries(10, 4, 60, Utc::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    owner
        .set_tenant_status(a.tenant_id(), TenantStatus::Suspended)
        .await
        .unwrap();
    assert_eq!(d.deliver(claimed[0]).await, Delivered::Deferred);
    // ... and one published while suspended.
    rig.publish(&a, 2).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(d.clone().run(stopped));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.connections(),
        0,
        "a suspended tenant's message went out"
    );
    let started = std::time::Instant::now();
    owner
        .set_tenant_status(a.tenant_id(), TenantStatus::Active)
        .await
        .unwrap();
    // Well within the pause backoff (5 s) and the poll (600 s).
    let both = receiver.wait_for(2, Duration::from_secs(3)).await;
    let _ = stop.send(true);
    run.abort();
    assert!(
        both,
        "{} of 2 delivered {:?} after reactivation",
        receiver.requests().len(),
        started.elapsed()
    );
}

/// Publishes once the dispatcher sleeps on a 600 s poll, and expects the delivery within 10 s:
/// only the NOTIFY wake-up can do that.
async fn assert_publish_wakes(rig: &Rig, a: &TenantContext) {
    let receiver = rig.receivers.start("receiver.example", LOOPBACK).await;
    rig.endpoint(a, &url("receiver.example", &receiver)).await;
    let config = DeliveryConfig {
        idle_poll: Duration::from_secs(600),
        ..DeliveryConfig::default()
    };
    let d = Arc::new(rig.dispatcher(config, Duration::from_secs(5)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(d.clone().run(stopped));
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.publish(a, 1).await;
    let woke = receiver.wait_for(1, Duration::from_secs(10)).await;
    let _ = stop.send(true);
    run.abort();
    assert!(woke, "the publish did not wake the dispatcher");
}

#[tokio::test]
async fn a_publish_wakes_the_dispatcher_for_a_dedicated_database_tenant() {
    // Issue 25: the due trigger notified the tenant's own database, where no worker listens.
    let rig = Rig::new(Clock::system()).await;
    let t = create_tenant_in(&rig.db, "dedicated-co", TestTier::Dedicated).await;
    assert_publish_wakes(&rig, &ctx(t.id)).await;
}

#[tokio::test]
async fn a_publish_wakes_the_dispatcher_for_a_tenant_of_another_region() {
    let mut rig = Rig::new(Clock::system()).await;
    let eu = TestDb::new().await;
    let eu_pool = eu.app_pool(5).await;
    let eu_owner_pool = eu.owner_pool().await;
    rig.store = rig.store.reconfigured(move |t| {
        t.regions = vec![("eu".into(), eu_pool)];
    });
    let owner = rig.db.owner_store().await.reconfigured(move |t| {
        t.regions = vec![("eu".into(), eu_owner_pool)];
    });
    let t = create_tenant_in_region(&owner, "eu-co", "eu").await;
    assert_eq!(
        rig.store.location_of(t.id).await.unwrap().region,
        "eu",
        "the tenant is not in the EU database"
    );
    assert_publish_wakes(&rig, &ctx(t.id)).await;
}

#[tokio::test]
async fn deliveries_speak_http2_when_offered_on_one_connection_per_host_and_address() {
    // Issue 25: HTTP/2 where the receiver offers it (ALPN), with the guard's pinning intact.
    let rig = Rig::new(Clock::system()).await;
    let names = ["h2.example", "alias.example", "rebind.example"];
    let receiver =
        Receiver::start(LOOPBACK, 0, Some(rig.receivers.ca.server_config_h2(&names))).await;
    let port = receiver.addr.port();
    // The same port on a denied address: must never be reached, even with an HTTP/2 connection
    // to a name of the same certificate open.
    let canary = Receiver::start(
        CANARY_IP,
        port,
        Some(rig.receivers.ca.server_config_h2(&names)),
    )
    .await;
    rig.receivers.resolver.insert("h2.example", vec![LOOPBACK]);
    rig.receivers
        .resolver
        .insert("alias.example", vec![LOOPBACK]);
    rig.receivers
        .resolver
        .insert("rebind.example", vec![CANARY_IP]);
    let a = rig.tenant("alpha").await;
    let (_, secret) = rig
        .endpoint(&a, &format!("https://h2.example:{port}/hook"))
        .await;
    let d = rig.dispatcher(DeliveryConfig::default(), Duration::from_secs(5));
    rig.publish(&a, 0).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    for n in 1..6 {
        rig.publish(&a, n).await;
    }
    for _ in 0..10 {
        if receiver.requests().len() >= 6 {
            break;
        }
        d.run_once().await.unwrap();
    }
    let got = receiver.requests();
    assert_eq!(got.len(), 6);
    assert!(
        got.iter().all(|r| r.version == http::Version::HTTP_2),
        "not all over HTTP/2: {:?}",
        got.iter().map(|r| r.version).collect::<Vec<_>>()
    );
    let last = got.last().unwrap();
    verify(&secret, &last.headers, &last.body, Utc::now()).unwrap();
    // Every attempt to that host shared the one connection the guard judged.
    assert_eq!(receiver.connections(), 1);
    assert_eq!(rig.receivers.resolver.lookups("h2.example"), 1);
    // Another host name of the same certificate and address gets its own connection, after its
    // own lookup and verdict (no HTTP/2 connection coalescing across names) ...
    let b = rig.tenant("bravo").await;
    rig.endpoint(&b, &format!("https://alias.example:{port}/hook"))
        .await;
    rig.publish(&b, 0).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Succeeded]);
    assert_eq!(receiver.connections(), 2);
    assert_eq!(rig.receivers.resolver.lookups("alias.example"), 1);
    // ... so a name of that certificate resolving to a denied address is refused, not sent
    // down the open connection.
    let c = rig.tenant("charlie").await;
    rig.endpoint(&c, &format!("https://rebind.example:{port}/hook"))
        .await;
    rig.publish(&c, 0).await;
    assert_eq!(d.run_once().await.unwrap(), vec![Delivered::Blocked]);
    assert_eq!(receiver.requests().len(), 7);
    assert_eq!(canary.connections(), 0, "the canary was reached");
}

#[tokio::test]
async fn a_tenant_hanging_its_route_on_a_shared_http2_host_does_not_stall_another() {
    // Review 2, M1: one multi-tenant relay host speaking HTTP/2 that allows two streams per
    // connection. A's route hangs and A holds two deliveries in flight there; B's route on the
    // same host must still be delivered at once, not queued behind A's streams.
    let rig = Rig::new(Clock::system()).await;
    let receiver = Receiver::start(
        LOOPBACK,
        0,
        Some(rig.receivers.ca.server_config_h2(&["relay.example"])),
    )
    .await;
    receiver.set_max_concurrent_streams(2);
    receiver.set_route("/a", Reply::Hang);
    rig.receivers
        .resolver
        .insert("relay.example", vec![LOOPBACK]);
    let port = receiver.addr.port();
    let a = rig.tenant("alpha").await;
    let b = rig.tenant("bravo").await;
    rig.endpoint(&a, &format!("https://relay.example:{port}/a"))
        .await;
    rig.endpoint(&b, &format!("https://relay.example:{port}/b"))
        .await;
    for n in 0..8 {
        rig.publish(&a, n).await;
    }
    let config = DeliveryConfig {
        per_tenant: 4,
        concurrency: 8,
        idle_poll: Duration::from_millis(50),
        ..DeliveryConfig::default()
    };
    let d = Arc::new(rig.dispatcher(config, Duration::from_secs(20)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(d.clone().run(stopped));
    // A's two hanging streams use up the connection's limit.
    assert!(receiver.wait_for(2, Duration::from_secs(5)).await);
    let to_b = |r: &bulkhead_test_support::receiver::Received| r.path == "/b";
    for n in 0..3 {
        rig.publish(&b, n).await;
        let started = std::time::Instant::now();
        while receiver.requests().iter().filter(|r| to_b(r)).count() <= n as usize
            && started.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B's delivery {n} queued behind A's hanging streams"
        );
    }
    let got = receiver.requests();
    assert!(got.iter().all(|r| r.version == http::Version::HTTP_2));
    assert_eq!(got.iter().filter(|r| r.path == "/a").count(), 2);
    let _ = stop.send(true);
    run.abort();
}

/// A batch of successes and a failure of the same endpoint, one with a failure streak, recorded
/// at the same time (review of issue 25): both writers take the tenant's `stored_bytes` quota
/// lock before the endpoint row, so they queue instead of deadlocking. With the success batch
/// written as one statement, its endpoint update locked the row first and PostgreSQL killed one
/// of the two after `deadlock_timeout`, so the batch's successes were sent again.
#[tokio::test]
async fn a_success_batch_and_a_failure_of_one_failing_endpoint_record_without_deadlock() {
    let rig = Rig::new(Clock::system()).await;
    let a = rig.tenant("lockorder").await;
    let (endpoint, _) = rig.endpoint(&a, "https://flaky.test:443/hook").await;
    rig.publish(&a, 1).await;
    rig.publish(&a, 2).await;
    let claimed = rig
        .store
        .claim_webhook_deliveries(10, 4, 60, Utc::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let ids: Vec<_> = claimed.iter().map(|c| c.id).collect();
    let mut tx = rig.store.begin(&a, Access::ReadWrite).await.unwrap();
    store::endpoint_failed(
        &mut tx,
        endpoint,
        Utc::now(),
        5,
        chrono::Duration::seconds(60),
    )
    .await
    .unwrap();
    let work = store::load_work_batch(&mut tx, &ids).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(work.len(), 2);
    assert_eq!(rig.endpoint_row(&a, endpoint).await.consecutive_failures, 1);

    // The failure path first writes its attempt (taking the quota lock) ...
    let mut failing = rig.store.begin(&a, Access::ReadWrite).await.unwrap();
    store::record_attempt(
        &mut failing,
        &work[1],
        &store::NewAttempt {
            attempted_at: Utc::now(),
            outcome: "failed",
            status_code: Some(503),
            latency_ms: 3,
            error_class: Some("http_status".into()),
            error: Some("the receiver answered 503".into()),
            response_sample: None,
        },
    )
    .await
    .unwrap();
    // ... meanwhile the recorder writes a success of the same endpoint ...
    let (store2, a2, success) = (
        rig.store.clone(),
        a.clone(),
        store::Success {
            delivery: work[0].delivery.id,
            message: work[0].message.id,
            endpoint,
            attempted_at: Utc::now(),
            status_code: 200,
            latency_ms: 2,
            response_sample: String::new(),
        },
    );
    let recorder = tokio::spawn(async move {
        let mut tx = store2.begin(&a2, Access::ReadWrite).await?;
        store::record_successes(&mut tx, &[success]).await?;
        tx.commit().await
    });
    // (long enough for the recorder to take whatever locks it takes before it must wait)
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and the failure path then updates the endpoint's streak.
    store::endpoint_failed(
        &mut failing,
        endpoint,
        Utc::now(),
        5,
        chrono::Duration::seconds(60),
    )
    .await
    .expect("the failure path is not a deadlock victim");
    failing.commit().await.unwrap();
    recorder
        .await
        .unwrap()
        .expect("the success batch is not a deadlock victim");
    // The success came last: the streak is reset and both attempts are in the log.
    assert_eq!(rig.endpoint_row(&a, endpoint).await.consecutive_failures, 0);
    let mut outcomes: Vec<String> = Vec::new();
    for w in &work {
        outcomes.extend(
            rig.attempts(&a, w.message.id)
                .await
                .into_iter()
                .map(|x| x.outcome),
        );
    }
    outcomes.sort();
    assert_eq!(outcomes, ["failed", "succeeded"]);
}
