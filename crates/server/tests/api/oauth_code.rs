//! The authorization-code flow with PKCE (issue 20), driven over real HTTP by a client that
//! reads the pages' forms the way a browser does (cookies, hidden fields, CSRF tokens), and the
//! attacks it must refuse.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bulkhead_test_support::{spawn_app, TestApp, TestTenant};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::users::PASSWORD;
use crate::helpers::{audit_events, call, call_as};

pub(crate) const VERIFIER: &str =
    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-and-some-more-entropy";

pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A user made over the API holding `role`; returns its email.
pub(crate) async fn user_with_role(app: &TestApp, tenant: &TestTenant, email: &str, role: &str) {
    let user = call_as(
        app,
        tenant,
        Method::POST,
        "/v1/users",
        Some(json!({ "email": email, "password": PASSWORD })),
    )
    .await;
    assert_eq!(user.status(), StatusCode::CREATED);
    let user: Value = user.json().await.unwrap();
    let assigned = call_as(
        app,
        tenant,
        Method::POST,
        "/v1/role-assignments",
        Some(json!({ "role": role, "user_id": user["id"] })),
    )
    .await;
    assert_eq!(assigned.status(), StatusCode::CREATED);
}

pub(crate) async fn register_client(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    let response = call_as(app, tenant, Method::POST, "/v1/oauth-clients", Some(body)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// The HTML entities the templates write (named and numeric).
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let end = after.find(';').unwrap();
        let entity = &after[1..end];
        let decoded = match entity {
            "amp" => '&',
            "quot" => '"',
            "lt" => '<',
            "gt" => '>',
            "apos" => '\'',
            _ if entity.starts_with("#x") => {
                char::from_u32(u32::from_str_radix(&entity[2..], 16).unwrap()).unwrap()
            }
            _ if entity.starts_with('#') => char::from_u32(entity[1..].parse().unwrap()).unwrap(),
            _ => panic!("unknown entity {entity}"),
        };
        out.push(decoded);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The attributes of every `<tag …>` in `html`.
fn tags(html: &str, tag: &str) -> Vec<Vec<(String, String)>> {
    let open = format!("<{tag} ");
    html.match_indices(&open)
        .map(|(at, _)| {
            let rest = &html[at + open.len()..];
            let inside = &rest[..rest.find('>').unwrap()];
            let mut attributes = Vec::new();
            let mut text = inside;
            while let Some(eq) = text.find("=\"") {
                let name = text[..eq].trim().rsplit(' ').next().unwrap().to_owned();
                let after = &text[eq + 2..];
                let end = after.find('"').unwrap();
                attributes.push((name, unescape(&after[..end])));
                text = &after[end + 1..];
            }
            attributes
        })
        .collect()
}

fn attribute<'a>(tag: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tag.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The form's fields a browser would send: hidden inputs, and the checked checkboxes.
pub(crate) fn form_fields(html: &str) -> Vec<(String, String)> {
    tags(html, "input")
        .iter()
        .filter(|t| match attribute(t, "type") {
            Some("hidden") => true,
            Some("checkbox") => t.iter().any(|(n, _)| n == "checked") || html_checked(html, t),
            _ => false,
        })
        .map(|t| {
            (
                attribute(t, "name").unwrap().to_owned(),
                attribute(t, "value").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `checked` is a bare attribute: the tag's text ends with it.
fn html_checked(html: &str, tag: &[(String, String)]) -> bool {
    let id = attribute(tag, "id").unwrap();
    let at = html.find(&format!("id=\"{id}\"")).unwrap();
    let rest = &html[at..];
    rest[..rest.find('>').unwrap()].contains("checked")
}

/// A browser: a cookie, the pages it was shown.
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    slug: String,
    pub(crate) cookie: Option<String>,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp, slug: &str) -> Self {
        Self {
            app,
            slug: slug.to_owned(),
            cookie: None,
        }
    }

    fn remember(&mut self, response: &Response) {
        if let Some(set) = response.headers().get("set-cookie") {
            let set = set.to_str().unwrap();
            let value = set.split(';').next().unwrap();
            let (name, value) = value.split_once('=').unwrap();
            assert_eq!(name, "__Host-bulkhead-oauth");
            self.cookie = Some(value.to_owned());
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Response {
        let mut request = self.app.client.get(self.app.tenant_url(&self.slug, path));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", format!("__Host-bulkhead-oauth={cookie}"));
        }
        let response = request.send().await.unwrap();
        self.remember(&response);
        response
    }

    pub(crate) async fn post(&mut self, path: &str, fields: &[(String, String)]) -> Response {
        let mut request = self
            .app
            .client
            .post(self.app.tenant_url(&self.slug, path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(fields)
                    .finish(),
            );
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", format!("__Host-bulkhead-oauth={cookie}"));
        }
        let response = request.send().await.unwrap();
        self.remember(&response);
        response
    }
}

pub(crate) fn authorize_path(
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> String {
    let challenge = challenge(VERIFIER);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("response_type", "code");
    query.append_pair("client_id", client_id);
    query.append_pair("redirect_uri", redirect_uri);
    query.append_pair("scope", scope);
    query.append_pair("state", "xyz-state");
    query.append_pair("code_challenge", &challenge);
    query.append_pair("code_challenge_method", "S256");
    for (name, value) in extra {
        query.append_pair(name, value);
    }
    format!("/oauth/authorize?{}", query.finish())
}

fn assert_page_headers(response: &Response) {
    let headers = response.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

/// Signs in through the login page; the browser then holds the signed-in session.
pub(crate) async fn sign_in(browser: &mut Browser<'_>, authorize: &str, email: &str) -> String {
    let page = browser.get(authorize).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("action=\"/oauth/authorize/login\""), "{html}");
    let mut fields = form_fields(&html);
    fields.push(("email".into(), email.into()));
    fields.push(("password".into(), PASSWORD.into()));
    let consent = browser.post("/oauth/authorize/login", &fields).await;
    assert_eq!(consent.status(), StatusCode::OK);
    consent.text().await.unwrap()
}

/// The query of the link the return page navigates to.
pub(crate) fn returned(html: &str) -> (String, Vec<(String, String)>) {
    let link = tags(html, "a")
        .into_iter()
        .find(|t| attribute(t, "id") == Some("continue"))
        .unwrap_or_else(|| panic!("no continue link: {html}"));
    let href = attribute(&link, "href").unwrap().to_owned();
    assert!(html.contains("http-equiv=\"refresh\""));
    let url = url::Url::parse(&href).unwrap();
    let pairs = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (href, pairs)
}

pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) async fn token(app: &TestApp, slug: &str, form: &[(&str, &str)]) -> Response {
    app.client
        .post(app.tenant_url(slug, "/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_user_authorizes_a_public_client_with_pkce_and_a_narrowed_scope() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "Desktop assistant",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read", "sessions:write"],
        }),
    )
    .await;
    assert!(client.get("client_secret").is_none());
    let client_id = client["id"].as_str().unwrap();
    assert!(client_id.starts_with("oac_"));
    let redirect = "http://127.0.0.1:49152/callback";
    let authorize = authorize_path(client_id, redirect, "sessions:read sessions:write", &[]);

    // The login page: its headers and cookie.
    let mut browser = Browser::new(&app, "acme");
    let page = browser.get(&authorize).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_page_headers(&page);
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in [
        "__Host-bulkhead-oauth=",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<label for=\"email\">") && html.contains("<label for=\"password\">"));
    assert!(!html.contains("<script"));
    let anonymous = browser.cookie.clone().unwrap();

    // A login without its CSRF token, or with a wrong password, signs nobody in.
    let mut fields = form_fields(&html);
    let without_csrf: Vec<_> = fields
        .iter()
        .filter(|(n, _)| n != "csrf")
        .cloned()
        .collect();
    let mut tampered = without_csrf.clone();
    tampered.push(("email".into(), "ada@acme.example".into()));
    tampered.push(("password".into(), PASSWORD.into()));
    let refused = browser.post("/oauth/authorize/login", &tampered).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    fields.push(("email".into(), "ada@acme.example".into()));
    let mut wrong = fields.clone();
    wrong.push(("password".into(), "not the password at all".into()));
    let refused = browser.post("/oauth/authorize/login", &wrong).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("Wrong email or password"));

    // Signing in replaces the session (no fixation).
    fields.push(("password".into(), PASSWORD.into()));
    let consent = browser.post("/oauth/authorize/login", &fields).await;
    assert_eq!(consent.status(), StatusCode::OK);
    let fresh = browser.cookie.clone().unwrap();
    assert_ne!(fresh, anonymous);
    // The planted (pre-login) session is worth nothing: it shows the login page again.
    browser.cookie = Some(anonymous.clone());
    let planted = browser.get(&authorize).await.text().await.unwrap();
    assert!(planted.contains("/oauth/authorize/login"));
    browser.cookie = Some(fresh.clone());
    let again = browser.get(&authorize).await;
    assert!(again
        .text()
        .await
        .unwrap()
        .contains("action=\"/oauth/authorize\""));
    assert_eq!(browser.cookie.as_deref(), Some(fresh.as_str()));

    // The consent page: the client's name, the redirect's host, the scopes in words.
    assert_page_headers(&consent);
    let html = consent.text().await.unwrap();
    assert!(html.contains("Desktop assistant"));
    assert!(
        html.contains("<strong id=\"redirect-host\">127.0.0.1:49152</strong>"),
        "{html}"
    );
    assert!(html.contains("Read agent sessions"));
    let fields = form_fields(&html);
    assert_eq!(fields.iter().filter(|(n, _)| n == "grant").count(), 2);

    // The consent form without or with a wrong CSRF token is refused, nothing issued.
    let mut allow: Vec<_> = fields
        .iter()
        .filter(|(n, v)| !(n == "grant" && v == "sessions:write"))
        .cloned()
        .collect();
    allow.push(("decision".into(), "allow".into()));
    let no_csrf: Vec<_> = allow.iter().filter(|(n, _)| n != "csrf").cloned().collect();
    assert_eq!(
        browser.post("/oauth/authorize", &no_csrf).await.status(),
        StatusCode::FORBIDDEN
    );
    let wrong_csrf: Vec<_> = allow
        .iter()
        .map(|(n, v)| {
            if n == "csrf" {
                (n.clone(), "A".repeat(43))
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect();
    assert_eq!(
        browser.post("/oauth/authorize", &wrong_csrf).await.status(),
        StatusCode::FORBIDDEN
    );

    // Allowed with sessions:write unticked: a page that returns to the client (no cross-origin
    // redirect after the POST), with the code, the state and the issuer.
    let answer = browser.post("/oauth/authorize", &allow).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.headers().get("location").is_none());
    assert_page_headers(&answer);
    let (href, back) = returned(&answer.text().await.unwrap());
    assert!(href.starts_with(redirect));
    assert_eq!(param(&back, "state"), Some("xyz-state"));
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    assert_eq!(param(&back, "iss"), Some(issuer.as_str()));
    let code = param(&back, "code").unwrap().to_owned();

    // A wrong verifier, another redirect URI, no client: refused, and the code stays unused.
    let exchange = |verifier: &'static str, redirect: &'static str| {
        let code = code.clone();
        let client_id = client_id.to_owned();
        let app = &app;
        async move {
            token(
                app,
                "acme",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("client_id", &client_id),
                    ("code_verifier", verifier),
                ],
            )
            .await
        }
    };
    let wrong = exchange(
        "wrong-verifier-wrong-verifier-wrong-verifier-0000",
        "http://127.0.0.1:49152/callback",
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let other = exchange(VERIFIER, "http://127.0.0.1:49153/callback").await;
    assert_eq!(
        other.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let granted = exchange(VERIFIER, "http://127.0.0.1:49152/callback").await;
    assert_eq!(granted.status(), StatusCode::OK);
    assert_eq!(granted.headers()["cache-control"], "no-store");
    let tokens: Value = granted.json().await.unwrap();
    assert_eq!(tokens["scope"], "sessions:read");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let read = call(&app, "acme", &access, Method::GET, "/v1/sessions", None).await;
    assert_eq!(read.status(), StatusCode::OK);
    let write = call(
        &app,
        "acme",
        &access,
        Method::POST,
        "/v1/sessions",
        Some(json!({ "agent_id": "a", "title": "t" })),
    )
    .await;
    assert_eq!(write.status(), StatusCode::FORBIDDEN);

    // The refresh token is bound to the client: without its client_id it is refused.
    let unbound = token(
        &app,
        "acme",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(unbound.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        unbound.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let rotated = token(
        &app,
        "acme",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", client_id),
        ],
    )
    .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    let second_access = rotated["access_token"].as_str().unwrap().to_owned();

    // The code again: refused, and every token issued from it stops working, audited.
    let reused = exchange(VERIFIER, "http://127.0.0.1:49152/callback").await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    for bearer in [&access, &second_access] {
        let after = call(&app, "acme", bearer, Method::GET, "/v1/sessions", None).await;
        assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    }
    let next_refresh = rotated["refresh_token"].as_str().unwrap();
    let dead = token(
        &app,
        "acme",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", next_refresh),
            ("client_id", client_id),
        ],
    )
    .await;
    assert_eq!(dead.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        audit_events(&app, &acme, "security.authorization_code_reuse")
            .await
            .len(),
        1
    );
    assert_eq!(
        audit_events(&app, &acme, "oauth_client.create").await.len(),
        1
    );
    assert!(!audit_events(&app, &acme, "oauth.authorize")
        .await
        .is_empty());
}

#[tokio::test]
async fn authorization_requests_that_must_be_refused_are() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    user_with_role(&app, &acme, "dev@acme.example", "developer").await;
    let registered = "https://app.example/cb";
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "Confidential app",
            "redirect_uris": [registered],
            "token_endpoint_auth_method": "client_secret_post",
            "scopes": ["sessions:read", "roles:manage"],
        }),
    )
    .await;
    let client_id = client["id"].as_str().unwrap().to_owned();
    let secret = client["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("bkcs_"));
    let theirs = register_client(
        &app,
        &other,
        json!({ "name": "Theirs", "redirect_uris": [registered], "scopes": ["sessions:read"] }),
    )
    .await;

    // Registration refuses redirect URIs that could not be matched exactly.
    for bad in [
        "http://app.example/cb",
        "https://app.example/cb#f",
        "https://u@app.example/cb",
        "HTTPS://app.example/cb",
    ] {
        let response = call_as(
            &app,
            &acme,
            Method::POST,
            "/v1/oauth-clients",
            Some(json!({ "name": "x", "redirect_uris": [bad], "scopes": ["sessions:read"] })),
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }

    let mut browser = Browser::new(&app, "acme");
    // Redirect URI variations, an unknown client, another tenant's client: a page, never a
    // redirect, and the last two answer alike.
    for variation in [
        "https://app.example/cb/",
        "https://APP.example/cb",
        "https://app.example/cb/extra",
        "https://app.example:8443/cb",
        "https://user@app.example/cb",
        "https://app.example/cb#fragment",
        "https://evil.example/cb",
    ] {
        let page = browser
            .get(&authorize_path(&client_id, variation, "sessions:read", &[]))
            .await;
        assert_eq!(page.status(), StatusCode::BAD_REQUEST, "{variation}");
        assert!(page.headers().get("location").is_none());
        assert_page_headers(&page);
    }
    let unknown = browser
        .get(&authorize_path(
            &bulkhead_core::OAuthClientId::new().to_string(),
            registered,
            "sessions:read",
            &[],
        ))
        .await;
    let foreign = browser
        .get(&authorize_path(
            theirs["id"].as_str().unwrap(),
            registered,
            "sessions:read",
            &[],
        ))
        .await;
    assert_eq!(unknown.status(), foreign.status());
    assert_eq!(unknown.text().await.unwrap(), foreign.text().await.unwrap());

    // With the redirect URI trusted, refusals go back to the client with state and iss.
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    let refused_back = |response: &Response| {
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = response.headers()["location"].to_str().unwrap();
        assert!(location.starts_with(registered));
        let url = url::Url::parse(location).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(param(&pairs, "state"), Some("xyz-state"));
        assert_eq!(param(&pairs, "iss"), Some(issuer.as_str()));
        param(&pairs, "error").unwrap().to_owned()
    };
    let challenge = challenge(VERIFIER);
    let mut no_pkce = form_urlencoded::Serializer::new(String::new());
    no_pkce.extend_pairs([
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", registered),
        ("state", "xyz-state"),
    ]);
    let response = browser
        .get(&format!("/oauth/authorize?{}", no_pkce.finish()))
        .await;
    assert_eq!(refused_back(&response), "invalid_request");
    let mut plain = form_urlencoded::Serializer::new(String::new());
    plain.extend_pairs([
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", registered),
        ("state", "xyz-state"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "plain"),
    ]);
    let response = browser
        .get(&format!("/oauth/authorize?{}", plain.finish()))
        .await;
    assert_eq!(refused_back(&response), "invalid_request");
    let mut implicit = form_urlencoded::Serializer::new(String::new());
    implicit.extend_pairs([
        ("response_type", "token"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", registered),
        ("state", "xyz-state"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let response = browser
        .get(&format!("/oauth/authorize?{}", implicit.finish()))
        .await;
    assert_eq!(refused_back(&response), "unsupported_response_type");
    let response = browser
        .get(&authorize_path(
            &client_id,
            registered,
            "sessions:read billing:manage",
            &[],
        ))
        .await;
    assert_eq!(refused_back(&response), "invalid_scope");
    let repeated = browser
        .get(&authorize_path(
            &client_id,
            registered,
            "sessions:read",
            &[("state", "again")],
        ))
        .await;
    assert_eq!(repeated.status(), StatusCode::BAD_REQUEST);

    // Scope widening: a developer cannot grant roles:manage, even by adding it to the form.
    let authorize = authorize_path(&client_id, registered, "sessions:read roles:manage", &[]);
    let html = sign_in(&mut browser, &authorize, "dev@acme.example").await;
    assert!(html.contains("you do not hold them yourself"), "{html}");
    let mut fields = form_fields(&html);
    assert_eq!(fields.iter().filter(|(n, _)| n == "grant").count(), 1);
    fields.push(("grant".into(), "roles:manage".into()));
    fields.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &fields).await;
    let (_, back) = returned(&answer.text().await.unwrap());
    let code = param(&back, "code").unwrap().to_owned();

    // A confidential client must authenticate with its method: no secret, Basic instead of
    // post, a wrong secret are invalid_client; then the right one gets only sessions:read.
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", registered),
        ("client_id", client_id.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let bare = token(&app, "acme", &base).await;
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    let basic = app
        .client
        .post(app.tenant_url("acme", "/oauth/token"))
        .basic_auth(&client_id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&base)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let wrong_secret = format!("{}x", &secret[..secret.len() - 1]);
    let mut with_wrong = base.to_vec();
    with_wrong.push(("client_secret", &wrong_secret));
    assert_eq!(
        token(&app, "acme", &with_wrong).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The code on another tenant's host is refused like an unknown one.
    let mut with_secret = base.to_vec();
    with_secret.push(("client_secret", &secret));
    let elsewhere = token(&app, "other", &with_secret).await;
    assert_eq!(elsewhere.status(), StatusCode::BAD_REQUEST);
    let granted = token(&app, "acme", &with_secret).await;
    assert_eq!(granted.status(), StatusCode::OK);
    let granted: Value = granted.json().await.unwrap();
    assert_eq!(granted["scope"], "sessions:read");

    // Confined or delegated credentials register nothing; escalation is refused.
    let viewer_scoped = call_as(
        &app,
        &acme,
        Method::POST,
        "/v1/oauth-clients",
        Some(json!({ "name": "x", "redirect_uris": [registered], "scopes": ["sessions:read"] })),
    )
    .await;
    assert_eq!(viewer_scoped.status(), StatusCode::CREATED);
    let access = granted["access_token"].as_str().unwrap();
    let by_token = call(&app, "acme", access, Method::GET, "/v1/oauth-clients", None).await;
    assert_eq!(by_token.status(), StatusCode::FORBIDDEN);

    // The metadata names the endpoint and what it supports.
    let metadata: Value = app
        .client
        .get(app.tenant_url("acme", "/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["response_types_supported"], json!(["code"]));
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(
        metadata["authorization_response_iss_parameter_supported"],
        json!(true)
    );
    assert!(metadata["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("authorization_code")));
    assert!(metadata["authorization_endpoint"]
        .as_str()
        .unwrap()
        .ends_with("/oauth/authorize"));
}

/// authlib (Python), an off-the-shelf client, completes the flow with PKCE: it builds the
/// authorization URL (its own verifier and challenge), the test's browser signs in and consents,
/// and authlib checks the callback's `state` and exchanges the code. The Python is
/// `BULKHEAD_TEST_PYTHON` (`.ci/run` makes a venv with a pinned authlib), else `python3`.
/// Skipped, loudly, where it has no authlib, except in CI (`CI` set), where that fails.
#[tokio::test]
async fn authlib_completes_the_flow_with_pkce() {
    use std::io::{BufRead, BufReader, Write};
    let python = std::env::var("BULKHEAD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let available = std::process::Command::new(&python)
        .args(["-c", "import authlib, requests"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} has no authlib: CI must run the off-the-shelf client (see .ci/run)"
        );
        eprintln!("SKIPPED: {python} with authlib is not installed");
        return;
    }
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let redirect = "http://127.0.0.1/authlib";
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "authlib",
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read"],
        }),
    )
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/authlib_pkce.py");
    // authlib is given the tenant's issuer only: it discovers the rest.
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .arg(&issuer)
        .arg(app.addr.port().to_string())
        .arg(client["id"].as_str().unwrap())
        .arg("http://127.0.0.1:61000/authlib")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    // authlib discovers the server (served by this runtime) before it prints: read on a
    // blocking thread.
    let (mut stdout, line) = tokio::task::spawn_blocking(move || {
        let mut stdout = stdout;
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (stdout, line)
    })
    .await
    .unwrap();
    let url = url::Url::parse(line.trim()).unwrap();
    assert_eq!(
        url[..url::Position::AfterPath],
        format!("{issuer}/oauth/authorize"),
        "the metadata names the authorization endpoint on the tenant's origin"
    );
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(param(&query, "code_challenge_method"), Some("S256"));
    let path = format!("/oauth/authorize?{}", url.query().unwrap());
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &path, "ada@acme.example").await;
    let mut fields = form_fields(&html);
    fields.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &fields).await;
    let (href, _) = returned(&answer.text().await.unwrap());
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{href}").unwrap();
    drop(stdin);
    let mut token_line = String::new();
    // The exchange runs in the child while this runtime serves it: read on a blocking thread.
    let token_line = tokio::task::spawn_blocking(move || {
        stdout.read_line(&mut token_line).unwrap();
        token_line
    })
    .await
    .unwrap();
    assert!(child.wait().unwrap().success(), "authlib failed");
    let token: Value = serde_json::from_str(&token_line).unwrap();
    assert_eq!(token["scope"], "sessions:read");
    let access = token["access_token"].as_str().unwrap();
    let read = call(&app, "acme", access, Method::GET, "/v1/sessions", None).await;
    assert_eq!(read.status(), StatusCode::OK);
}

/// oauth4webapi (Node), a second off-the-shelf client, completes the flow with PKCE: it reads
/// the server's metadata and checks its issuer, builds the authorization URL (its own verifier,
/// challenge and state), the test's browser signs in and consents, and oauth4webapi checks the
/// callback's `iss` (RFC 9207) and `state` and exchanges the code. Node is `BULKHEAD_TEST_NODE`
/// (else `node`), the library `BULKHEAD_TEST_OAUTH4WEBAPI` (`.ci/run` installs a pinned one).
/// Skipped, loudly, where they are missing, except in CI, where that fails.
#[tokio::test]
async fn oauth4webapi_completes_the_flow_with_pkce() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let test = "oauth4webapi_completes_the_flow_with_pkce";
    let Some((node, module)) = crate::helpers::clients::oauth4webapi(test) else {
        return;
    };
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "oauth4webapi",
            "redirect_uris": ["http://127.0.0.1/oauth4webapi"],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read", "sessions:write"],
        }),
    )
    .await;
    // oauth4webapi is given the tenant's issuer only: it discovers the rest.
    let issuer = crate::helpers::oauth::tenant_issuer(&app, "acme");
    let mut child = tokio::process::Command::new(&node)
        .arg(crate::helpers::clients::script("oauth4webapi_pkce.mjs"))
        .arg(&module)
        .arg(&issuer)
        .arg(app.addr.port().to_string())
        .arg(client["id"].as_str().unwrap())
        .arg("http://127.0.0.1:61001/oauth4webapi")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("NODE_OPTIONS")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let limit = std::time::Duration::from_secs(30);
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(limit, stdout.next_line())
        .await
        .expect("oauth4webapi printed no authorization URL in time")
        .unwrap()
        .expect("oauth4webapi ended before printing the authorization URL");
    let url = url::Url::parse(line.trim()).unwrap();
    assert_eq!(
        url[..url::Position::AfterPath],
        format!("{issuer}/oauth/authorize")
    );
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(param(&query, "code_challenge_method"), Some("S256"));
    assert!(param(&query, "state").is_some_and(|s| s.len() >= 32));
    let path = format!("/oauth/authorize?{}", url.query().unwrap());
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &path, "ada@acme.example").await;
    let mut fields = form_fields(&html);
    fields.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &fields).await;
    let (href, _) = returned(&answer.text().await.unwrap());
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{href}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let token_line = tokio::time::timeout(limit, stdout.next_line())
        .await
        .expect("oauth4webapi printed no token in time")
        .unwrap()
        .expect("oauth4webapi failed (its error is on the test's standard error)");
    assert!(child.wait().await.unwrap().success(), "oauth4webapi failed");
    let token: Value = serde_json::from_str(&token_line).unwrap();
    assert_eq!(token["scope"], "sessions:read");
    assert_eq!(
        token["token_type"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("bearer")
    );
    let access = token["access_token"].as_str().unwrap();
    let read = call(&app, "acme", access, Method::GET, "/v1/sessions", None).await;
    assert_eq!(read.status(), StatusCode::OK);
}

/// Changing or deleting a client is a grant of every scope it holds: a `keys:manage` admin
/// lacking one cannot point its redirect URIs at their own host (then phish an owner through the
/// genuine consent page), rename it, or delete it.
#[tokio::test]
async fn changing_a_client_needs_every_scope_it_holds() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let strong = register_client(
        &app,
        &acme,
        json!({
            "name": "Admin console",
            "redirect_uris": ["https://console.example/cb"],
            "token_endpoint_auth_method": "none",
            "scopes": ["roles:manage", "users:write"],
        }),
    )
    .await;
    let weak = register_client(
        &app,
        &acme,
        json!({
            "name": "Reader",
            "redirect_uris": ["https://reader.example/cb"],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read"],
        }),
    )
    .await;
    let (manager, _) = crate::helpers::keys::mint_key(
        &app,
        &acme,
        json!({ "scopes": ["keys:manage", "sessions:read"] }),
    )
    .await;
    let strong_path = format!("/v1/oauth-clients/{}", strong["id"].as_str().unwrap());
    let weak_path = format!("/v1/oauth-clients/{}", weak["id"].as_str().unwrap());

    for body in [
        json!({ "redirect_uris": ["https://attacker.example/cb"] }),
        json!({ "name": "Renamed" }),
        json!({ "scopes": ["sessions:read"] }),
    ] {
        let refused = call_as(&app, &manager, Method::PATCH, &strong_path, Some(body)).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    let refused = call_as(&app, &manager, Method::DELETE, &strong_path, None).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let unchanged: Value = call_as(&app, &acme, Method::GET, &strong_path, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["name"], "Admin console");
    assert_eq!(
        unchanged["redirect_uris"],
        json!(["https://console.example/cb"])
    );
    assert_eq!(unchanged["scopes"].as_array().unwrap().len(), 2);
    assert!(audit_events(&app, &acme, "oauth_client.update")
        .await
        .is_empty());

    // Within the manager's scopes, both succeed.
    let changed = call_as(
        &app,
        &manager,
        Method::PATCH,
        &weak_path,
        Some(json!({ "redirect_uris": ["https://reader2.example/cb"], "name": "Reader 2" })),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(
        changed["redirect_uris"],
        json!(["https://reader2.example/cb"])
    );
    let deleted = call_as(&app, &manager, Method::DELETE, &weak_path, None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}

/// Narrowing a client's scopes ends its sessions: a refresh would otherwise keep the old scopes.
#[tokio::test]
async fn narrowing_a_client_ends_its_sessions() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "Desktop assistant",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read", "sessions:write"],
        }),
    )
    .await;
    let client_id = client["id"].as_str().unwrap();
    let path = format!("/v1/oauth-clients/{client_id}");
    let redirect = "http://127.0.0.1:49152/callback";
    let authorize = authorize_path(client_id, redirect, "sessions:read sessions:write", &[]);
    let mut browser = Browser::new(&app, "acme");
    let html = sign_in(&mut browser, &authorize, "ada@acme.example").await;
    let mut allow = form_fields(&html);
    allow.push(("decision".into(), "allow".into()));
    let answer = browser.post("/oauth/authorize", &allow).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let (_, back) = returned(&answer.text().await.unwrap());
    let code = param(&back, "code").unwrap().to_owned();
    let granted = token(
        &app,
        "acme",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(granted.status(), StatusCode::OK);
    let tokens: Value = granted.json().await.unwrap();
    assert_eq!(tokens["scope"], "sessions:read sessions:write");
    let refresh = |rt: String| {
        let app = &app;
        async move {
            token(
                app,
                "acme",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", client_id),
                ],
            )
            .await
        }
    };

    // A change that does not narrow (a rename, the same scopes) leaves the session alive.
    let renamed = call_as(
        &app,
        &acme,
        Method::PATCH,
        &path,
        Some(json!({ "name": "Renamed", "scopes": ["sessions:write", "sessions:read"] })),
    )
    .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let rotated = refresh(tokens["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    let access = rotated["access_token"].as_str().unwrap().to_owned();

    let narrowed = call_as(
        &app,
        &acme,
        Method::PATCH,
        &path,
        Some(json!({ "scopes": ["sessions:read"] })),
    )
    .await;
    assert_eq!(narrowed.status(), StatusCode::OK);
    let dead = refresh(rotated["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(dead.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        dead.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let after = call(&app, "acme", &access, Method::GET, "/v1/sessions", None).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let updates = audit_events(&app, &acme, "oauth_client.update").await;
    assert_eq!(updates.len(), 2);
    assert!(updates
        .iter()
        .any(|e| e.to_string().contains("\"sessions_ended\":1")));
}
