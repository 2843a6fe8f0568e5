//! Client ID metadata documents (issue 20): a `client_id` that is an `https` URL, whose document
//! Bulkhead fetches through the egress guard from a TLS receiver on loopback (a test CA, names
//! pointed at loopback by the injected resolver), completes the code flow; hostile documents
//! are refused on a page, audited by class, and a document on a private address is never
//! connected to.

use std::net::IpAddr;
use std::time::Duration;

use bulkhead_test_support::receiver::{NamedReceivers, Receiver, Reply};
use bulkhead_test_support::{spawn_app_with, AppOptions, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{audit_events, call_as, get_ok_json};
use crate::oauth_code::{
    authorize_path, form_fields, param, returned, sign_in, token, user_with_role, Browser, VERIFIER,
};

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

struct Rig {
    app: TestApp,
    receivers: NamedReceivers,
    docs: Receiver,
    acme: TestTenant,
}

impl Rig {
    async fn new() -> Rig {
        let receivers = NamedReceivers::new();
        let app = spawn_app_with(AppOptions {
            document_client: Some(receivers.egress_client(&receivers.egress_config())),
            ..AppOptions::default()
        })
        .await;
        let docs = receivers
            .start("docs.example", IpAddr::from(LOOPBACK))
            .await;
        let acme = app.create_tenant("acme").await;
        Rig {
            app,
            receivers,
            docs,
            acme,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://docs.example:{}{path}", self.docs.addr.port())
    }

    fn serve(&self, path: &str, status: u16, headers: &[(&str, &str)], body: String) {
        let headers = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        self.docs
            .set_route(path, Reply::Status(status, headers, body));
    }

    fn document(&self, path: &str, client_id: &str) {
        let body = json!({
            "client_id": client_id,
            "client_name": "Research agent",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "scope": "sessions:read",
        });
        self.serve(
            path,
            200,
            &[
                ("content-type", "application/json"),
                ("cache-control", "public, max-age=600"),
            ],
            body.to_string(),
        );
    }

    async fn accept_documents(&self, on: bool) {
        let response = call_as(
            &self.app,
            &self.acme,
            Method::PUT,
            "/v1/oauth-settings",
            Some(json!({
                "dynamic_registration": false,
                "client_id_metadata_documents": on,
                "dynamic_client_scopes": ["sessions:read", "sessions:write"],
            })),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Signs `email` in at the authorization request for the document at `url` and allows:
    /// the answer to the consent POST.
    async fn consent(&self, url: &str, email: &str) -> reqwest::Response {
        let authorize =
            authorize_path(url, "http://127.0.0.1:49200/callback", "sessions:read", &[]);
        let mut browser = Browser::new(&self.app, "acme");
        let consent = sign_in(&mut browser, &authorize, email).await;
        let mut fields = form_fields(&consent);
        fields.push(("decision".into(), "allow".into()));
        browser.post("/oauth/authorize", &fields).await
    }

    /// The reasons of the tenant's refused fetches, in the order the audit log lists them.
    async fn refusals(&self) -> Vec<String> {
        let reasons: Vec<String> =
            audit_events(&self.app, &self.acme, "oauth_client.metadata_fetch")
                .await
                .iter()
                .filter(|e| e["outcome"] == "failure" || e["outcome"] == "blocked")
                .map(|e| e["metadata"]["reason"].as_str().unwrap().to_owned())
                .collect();
        reasons
    }
}

#[tokio::test]
async fn a_client_named_by_its_metadata_document_completes_the_code_flow() {
    let rig = Rig::new().await;
    let app = &rig.app;
    user_with_role(app, &rig.acme, "ada@acme.example", "admin").await;
    let url = rig.url("/oauth/client.json");
    rig.document("/oauth/client.json", &url);
    let metadata: Value = app
        .client
        .get(app.tenant_url("acme", "/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["client_id_metadata_document_supported"], true);

    let redirect = "http://127.0.0.1:49200/callback";
    let authorize = authorize_path(&url, redirect, "openid sessions:read", &[]);
    // Off by default: an error page, nothing fetched.
    let off = Browser::new(app, "acme").get(&authorize).await;
    assert_eq!(off.status(), StatusCode::BAD_REQUEST);
    assert!(off.headers().get("location").is_none());
    assert_eq!(rig.docs.connections(), 0);
    // Anyone may ask, as often as they like: the log line only, no stored row.
    assert!(rig.refusals().await.is_empty());

    rig.accept_documents(true).await;
    let mut browser = Browser::new(app, "acme");
    let consent = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    assert!(consent.contains("Research agent"), "{consent}");
    let host = format!("docs.example:{}", rig.docs.addr.port());
    assert!(
        consent.contains(&format!("<strong id=\"client-host\">{host}</strong>")),
        "{consent}"
    );
    let mut fields = form_fields(&consent);
    fields.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &fields).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let (_, back) = returned(&answer.text().await.unwrap());
    let code = param(&back, "code").unwrap().to_owned();
    // The consent POST and the login used the cached document: one fetch in all.
    assert_eq!(rig.docs.requests().len(), 1);
    assert_eq!(rig.docs.requests()[0].method, "GET");

    let tokens = token(
        app,
        "acme",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", &url),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(tokens.status(), StatusCode::OK);
    let tokens: Value = tokens.json().await.unwrap();
    let scope = tokens["scope"].as_str().unwrap();
    assert!(scope.split(' ').any(|s| s == "sessions:read"), "{scope}");
    // The ID token is for the client_id the client knows: its document's URL, not the row's id.
    let id_token = crate::helpers::oauth::claims(tokens["id_token"].as_str().expect("an ID token"));
    assert_eq!(id_token["aud"], url.as_str());
    assert_eq!(id_token["azp"], url.as_str());
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let refreshed = token(
        app,
        "acme",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &url),
        ],
    )
    .await;
    assert_eq!(refreshed.status(), StatusCode::OK);

    // Stored at consent, listed for the admins by its URL.
    let clients = get_ok_json(app, &rig.acme, "/v1/oauth-clients").await;
    let listed = &clients["data"][0];
    assert_eq!(listed["registered_by"], "metadata_document");
    assert_eq!(listed["metadata_url"], url.as_str());
    let fetches = audit_events(app, &rig.acme, "oauth_client.metadata_fetch").await;
    let outcomes: Vec<&str> = fetches
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["started", "success"]);
    let registered = audit_events(app, &rig.acme, "oauth_client.register").await;
    assert_eq!(registered.len(), 1);
}

#[tokio::test]
async fn hostile_metadata_documents_are_refused_on_a_page_and_audited_by_class() {
    let rig = Rig::new().await;
    rig.accept_documents(true).await;
    // A name that resolves to a loopback address the egress policy does not allow, with a
    // canary listening there.
    let canary = Receiver::start(
        IpAddr::from([127, 0, 0, 2]),
        0,
        Some(rig.receivers.ca.server_config(&["internal.example"])),
    )
    .await;
    rig.receivers
        .resolver
        .insert("internal.example", vec![IpAddr::from([127, 0, 0, 2])]);
    let private = format!(
        "https://internal.example:{}/client.json",
        canary.addr.port()
    );

    rig.serve(
        "/big.json",
        200,
        &[("content-type", "application/json")],
        format!("{{\"pad\": \"{}\"}}", "x".repeat(6 * 1024)),
    );
    rig.docs.set_route(
        "/slow.json",
        Reply::After(Duration::from_secs(7), Box::new(Reply::status(200))),
    );
    let elsewhere = rig.url("/client.json");
    rig.serve(
        "/redirect.json",
        302,
        &[("location", &elsewhere)],
        String::new(),
    );
    rig.document("/other.json", &rig.url("/someone-else.json"));
    rig.document("/client.json", &elsewhere);

    let cases = [
        (private, "private_address"),
        (rig.url("/big.json"), "too_large"),
        (rig.url("/slow.json"), "timeout"),
        (rig.url("/redirect.json"), "redirect"),
        (rig.url("/other.json"), "client_id_mismatch"),
        (
            format!("http://docs.example:{}/client.json", rig.docs.addr.port()),
            "http_scheme",
        ),
        (
            format!("https://docs.example:{}", rig.docs.addr.port()),
            "no_path",
        ),
    ];
    for (url, _) in &cases {
        let authorize =
            authorize_path(url, "http://127.0.0.1:49201/callback", "sessions:read", &[]);
        let page = Browser::new(&rig.app, "acme").get(&authorize).await;
        assert_eq!(page.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(page.headers().get("location").is_none(), "{url}");
        let html = page.text().await.unwrap();
        assert!(!html.contains("127.0.0.2"), "{html}");
    }
    let expected: Vec<&str> = cases.iter().map(|(_, class)| *class).collect();
    assert_eq!(rig.refusals().await, expected);
    // The private address was never connected to; the redirect was not followed.
    assert_eq!(canary.connections(), 0);
    let paths: Vec<String> = rig.docs.requests().iter().map(|r| r.path.clone()).collect();
    assert!(!paths.contains(&"/client.json".to_owned()), "{paths:?}");
    // No audit event names the address a name resolved to (the caller's own `ip_address`, the
    // browser's, is recorded as on every event).
    let events = audit_events(&rig.app, &rig.acme, "oauth_client.metadata_fetch").await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("127.0.0.2"), "{text}");
    for event in &events {
        assert!(
            !event["metadata"].to_string().contains("127.0.0"),
            "{event}"
        );
    }
}

#[tokio::test]
async fn documents_are_not_fetched_under_the_operators_webhook_exceptions() {
    // The operator lets webhooks and tool calls reach every loopback address and sends them
    // through a proxy; metadata documents get none of it (the guard's own policy, ports widened
    // only because a test receiver cannot listen on 443).
    let receivers = NamedReceivers::new();
    let proxy = Receiver::start(IpAddr::from([127, 0, 0, 3]), 0, None).await;
    let everything: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
    let mut operator = bulkhead_test_support::test_egress_policy();
    operator.allow = everything;
    let mut tool_config = receivers.egress_config();
    tool_config.proxy = Some(
        format!("http://127.0.0.3:{}", proxy.addr.port())
            .parse()
            .unwrap(),
    );
    let tool_client = bulkhead_webhooks::EgressClient::new(
        operator.clone(),
        std::sync::Arc::new(receivers.resolver.clone()),
        &tool_config,
    )
    .unwrap();
    let mut documents = bulkhead_server::service::oauth::metadata_document::egress_policy(
        bulkhead_test_support::BASE_DOMAIN,
    );
    documents.allowed_ports.push(1024..=65535);
    let document_client = bulkhead_webhooks::EgressClient::new(
        documents,
        std::sync::Arc::new(receivers.resolver.clone()),
        &receivers.egress_config(),
    )
    .unwrap();
    let app = spawn_app_with(AppOptions {
        webhook_egress: Some(operator),
        tool_client: Some(tool_client),
        document_client: Some(document_client),
        ..AppOptions::default()
    })
    .await;
    let canary = receivers
        .start("internal.example", IpAddr::from([127, 0, 0, 2]))
        .await;
    let url = format!(
        "https://internal.example:{}/client.json",
        canary.addr.port()
    );
    canary.set_route(
        "/client.json",
        Reply::Status(200, Vec::new(), json!({ "client_id": url }).to_string()),
    );
    let acme = app.create_tenant("acme").await;
    let rig = Rig {
        app,
        receivers,
        docs: canary.clone(),
        acme,
    };
    rig.accept_documents(true).await;
    let authorize = authorize_path(
        &url,
        "http://127.0.0.1:49201/callback",
        "sessions:read",
        &[],
    );
    let page = Browser::new(&rig.app, "acme").get(&authorize).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert_eq!(rig.refusals().await, ["private_address"]);
    assert_eq!(canary.connections(), 0);
    assert_eq!(proxy.connections(), 0);
}

#[tokio::test]
async fn refusals_store_rows_only_within_the_source_address_budget() {
    let rig = Rig::new().await;
    let app = &rig.app;
    let plain = format!("http://docs.example:{}/client.json", rig.docs.addr.port());
    let authorize = authorize_path(
        &plain,
        "http://127.0.0.1:49201/callback",
        "sessions:read",
        &[],
    );
    // Off (the default): refused on a page as often as asked, nothing stored.
    for _ in 0..12 {
        let page = Browser::new(app, "acme").get(&authorize).await;
        assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    }
    assert!(rig.refusals().await.is_empty());
    // On: each refusal is a row, but only within the address's burst of 10; then 429 pages.
    rig.accept_documents(true).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(Browser::new(app, "acme").get(&authorize).await.status());
    }
    assert_eq!(statuses[..10], [StatusCode::BAD_REQUEST; 10]);
    assert_eq!(statuses[10..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    assert_eq!(rig.refusals().await, vec!["http_scheme"; 10]);
    // A good document is no longer fetched for this address either: its budget is spent.
    let url = rig.url("/client.json");
    rig.document("/client.json", &url);
    let good = authorize_path(&url, "http://127.0.0.1/callback", "sessions:read", &[]);
    let page = Browser::new(app, "acme").get(&good).await;
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rig.docs.connections(), 0);
}

#[tokio::test]
async fn storing_a_documents_client_sweeps_expired_self_registered_ones_first() {
    let rig = Rig::new().await;
    let app = &rig.app;
    user_with_role(app, &rig.acme, "ada@acme.example", "admin").await;
    rig.accept_documents(true).await;
    // The self-registered cap is full of clients unused for 31 days.
    let pool = app.db.superuser_pool().await;
    sqlx::query(
        "INSERT INTO bulkhead.oauth_clients (tenant_id, id, name, redirect_uris, \
         token_endpoint_auth_method, scopes, registered_by, last_used_at) \
         SELECT $1, gen_random_uuid(), 'Stale ' || g, ARRAY['http://127.0.0.1/cb'], 'none', \
         ARRAY['sessions:read'], 'dynamic', now() - interval '31 days' \
         FROM generate_series(1, 100) g",
    )
    .bind(rig.acme.id.uuid())
    .execute(&pool)
    .await
    .unwrap();
    let url = rig.url("/client.json");
    rig.document("/client.json", &url);
    let answer = rig.consent(&url, "ada@acme.example").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let (_, back) = returned(&answer.text().await.unwrap());
    assert!(param(&back, "code").is_some(), "{back:?}");
    let expired = audit_events(app, &rig.acme, "oauth_client.expire").await;
    assert_eq!(expired.len(), 10);
}

#[tokio::test]
async fn a_documents_client_is_the_documents_and_cannot_be_patched() {
    let rig = Rig::new().await;
    let app = &rig.app;
    user_with_role(app, &rig.acme, "ada@acme.example", "admin").await;
    rig.accept_documents(true).await;
    let url = rig.url("/client.json");
    rig.document("/client.json", &url);
    assert_eq!(
        rig.consent(&url, "ada@acme.example").await.status(),
        StatusCode::OK
    );
    let clients = get_ok_json(app, &rig.acme, "/v1/oauth-clients").await;
    let id = clients["data"][0]["id"].as_str().unwrap().to_owned();
    let patch = call_as(
        app,
        &rig.acme,
        Method::PATCH,
        &format!("/v1/oauth-clients/{id}"),
        Some(json!({ "redirect_uris": ["https://evil.example/cb"] })),
    )
    .await;
    assert_eq!(patch.status(), StatusCode::CONFLICT);
    let problem: Value = patch.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("client_id_metadata_documents"), "{detail}");
    let client = get_ok_json(app, &rig.acme, &format!("/v1/oauth-clients/{id}")).await;
    assert_eq!(
        client["redirect_uris"],
        json!(["http://127.0.0.1/callback"])
    );
}

#[tokio::test]
async fn a_documents_client_is_named_only_by_its_url_and_only_while_documents_are_accepted() {
    let rig = Rig::new().await;
    let app = &rig.app;
    user_with_role(app, &rig.acme, "ada@acme.example", "admin").await;
    rig.accept_documents(true).await;
    let url = rig.url("/client.json");
    rig.document("/client.json", &url);
    let answer = rig.consent(&url, "ada@acme.example").await;
    let (_, back) = returned(&answer.text().await.unwrap());
    let code = param(&back, "code").unwrap().to_owned();
    let clients = get_ok_json(app, &rig.acme, "/v1/oauth-clients").await;
    let id = clients["data"][0]["id"].as_str().unwrap().to_owned();
    // Its row id is not a name for it at the authorization endpoint (that would skip the
    // document and the setting).
    let by_id = authorize_path(&id, "http://127.0.0.1:49200/callback", "sessions:read", &[]);
    let page = Browser::new(app, "acme").get(&by_id).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(page.headers().get("location").is_none());
    // Documents turned off: the token endpoint refuses the stored client, by URL or by id.
    rig.accept_documents(false).await;
    for client_id in [url.as_str(), id.as_str()] {
        let refused = token(
            app,
            "acme",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:49200/callback"),
                ("client_id", client_id),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{client_id}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }
    // On again: the code (not burnt by the refusals) is exchanged.
    rig.accept_documents(true).await;
    let tokens = token(
        app,
        "acme",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:49200/callback"),
            ("client_id", &url),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(tokens.status(), StatusCode::OK);
}
