//! Off-the-shelf OpenID Connect relying parties (issue 20) complete the code flow with `openid`
//! and check the ID token with their own OpenID Connect support, its signature against the
//! JWKS: authlib (`jwt.decode` with `CodeIDToken`, Python) and oauth4webapi
//! (`processAuthorizationCodeResponse` with `expectedNonce`, `validateApplicationLevelSignature`,
//! `getValidatedIdTokenClaims`, `processUserInfoResponse`, Node). Skipped, loudly, where the
//! tools are missing, except in CI, where that fails (see `helpers::clients`). Each is given the
//! tenant's issuer only and discovers every endpoint from its metadata, which must name exactly
//! that issuer; `loopback.py`/`loopback.mjs` stand in for DNS and TLS (the issuer's host to the
//! loopback listener over plain HTTP), and the browser step is the test's.

use bulkhead_test_support::{spawn_app, TestApp};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::oauth_code::{
    form_fields, param, register_client, returned, sign_in, user_with_role, Browser,
};

/// Runs a relying-party script: it prints the authorization URL, the test's browser signs in
/// and consents to everything, the script gets the callback and prints one JSON line.
async fn relying_party(app: &TestApp, mut command: tokio::process::Command) -> Value {
    let mut child = command
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
        .expect("no authorization URL in time")
        .unwrap()
        .expect("the client ended before printing the authorization URL");
    let url = url::Url::parse(line.trim()).unwrap();
    assert_eq!(
        url[..url::Position::AfterPath],
        format!(
            "{}/oauth/authorize",
            crate::helpers::oauth::tenant_issuer(app, "acme")
        ),
        "discovered from the tenant's issuer"
    );
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(param(&query, "code_challenge_method"), Some("S256"));
    assert!(param(&query, "nonce").is_some_and(|n| n.len() >= 20));
    let path = format!("/oauth/authorize?{}", url.query().unwrap());
    let mut browser = Browser::new(app, "acme");
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
    let result = tokio::time::timeout(limit, stdout.next_line())
        .await
        .expect("no result in time")
        .unwrap()
        .expect("the client failed (its error is on the test's standard error)");
    assert!(child.wait().await.unwrap().success(), "the client failed");
    serde_json::from_str(&result).unwrap()
}

async fn app_with_client(redirect: &str) -> (TestApp, String) {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    user_with_role(&app, &acme, "ada@acme.example", "admin").await;
    let client = register_client(
        &app,
        &acme,
        json!({
            "name": "Relying party",
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
            "scopes": ["sessions:read"],
        }),
    )
    .await;
    let id = client["id"].as_str().unwrap().to_owned();
    (app, id)
}

/// What both clients must have seen.
fn assert_validated(app: &TestApp, client_id: &str, result: &Value) {
    let claims = &result["claims"];
    let issuer = crate::helpers::oauth::tenant_issuer(app, "acme");
    assert_eq!(claims["iss"], issuer.as_str(), "the tenant's own issuer");
    assert_eq!(claims["aud"], client_id);
    assert_eq!(claims["nonce"], result["nonce"]);
    assert!(claims["sub"].as_str().unwrap().starts_with("user_"));
    assert_eq!(claims["email"], "ada@acme.example");
    assert_eq!(result["userinfo"]["sub"], claims["sub"]);
    assert_eq!(result["userinfo"]["email"], "ada@acme.example");
}

#[tokio::test]
async fn oauth4webapi_validates_the_id_token() {
    let Some((node, module)) =
        crate::helpers::clients::oauth4webapi("oauth4webapi_validates_the_id_token")
    else {
        return;
    };
    let (app, client_id) = app_with_client("http://127.0.0.1/oidc").await;
    let mut command = tokio::process::Command::new(&node);
    command
        .arg(crate::helpers::clients::script("oauth4webapi_oidc.mjs"))
        .arg(&module)
        .arg(crate::helpers::oauth::tenant_issuer(&app, "acme"))
        .arg(app.addr.port().to_string())
        .arg(&client_id)
        .arg("http://127.0.0.1:61002/oidc");
    let result = relying_party(&app, command).await;
    assert_validated(&app, &client_id, &result);
}

#[tokio::test]
async fn authlib_validates_the_id_token() {
    let python = std::env::var("BULKHEAD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let available = std::process::Command::new(&python)
        .args(["-c", "import authlib, requests, cryptography"])
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
    let (app, client_id) = app_with_client("http://127.0.0.1/oidc").await;
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(crate::helpers::clients::script("authlib_oidc.py"))
        .arg(crate::helpers::oauth::tenant_issuer(&app, "acme"))
        .arg(app.addr.port().to_string())
        .arg(&client_id)
        .arg("http://127.0.0.1:61003/oidc");
    let result = relying_party(&app, command).await;
    assert_validated(&app, &client_id, &result);
}
