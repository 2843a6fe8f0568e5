//! The run: two tenants set up, every attack in turn, the verdicts recorded.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::operations::{operations, random_marker, Operation};
use crate::report::{Attack, Finding, ProbeConfig, Report, Verdict};
use crate::tenants::{Attacker, Host, Victim};

pub(crate) struct Probe {
    pub(crate) config: ProbeConfig,
    pub(crate) client: reqwest::Client,
    pub(crate) findings: Vec<Finding>,
}

/// Runs the probe. Errors are failures to set up or talk to the deployment, not findings.
pub async fn run(config: ProbeConfig) -> anyhow::Result<Report> {
    let client = client(&config)?;
    let mut probe = Probe {
        config,
        client,
        findings: Vec::new(),
    };
    let document = probe.document().await?;
    let operations = operations(&document)?;
    if operations.is_empty() {
        bail!("the OpenAPI document lists no operations");
    }
    let mut victim = probe.set_up_victim().await.context("setting up tenant A")?;
    let attacker = probe
        .set_up_attacker()
        .await
        .context("setting up tenant B")?;
    for op in &operations {
        probe.attack(op, &victim, &attacker).await?;
    }
    probe.foreign_tokens(&victim, &attacker).await?;
    probe.client_registration().await?;
    probe.oauth_across_tenants(&victim, &attacker).await?;
    probe.pages_across_tenants(&victim, &attacker).await?;
    probe.confined_token(&operations).await?;
    probe.hostile_schemas().await?;
    probe.audit_stream_scope(&attacker).await?;
    probe.forged_platform_events().await?;
    probe.host_mismatch(&victim).await?;
    probe.slow_neighbour(&victim).await?;
    probe.operator_door(&operations, &victim).await?;
    probe.check_unchanged(&victim).await?;
    probe.clean_up(&mut victim, &attacker).await;
    Ok(Report {
        operations: operations.len(),
        findings: probe.findings,
    })
}

pub(crate) fn client(config: &ProbeConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20));
    // Tenant hosts go to the base URL's address: no name lookup, no other destination.
    if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = config.base_url.host() {
        let addr: SocketAddr = config
            .base_url
            .socket_addrs(|| None)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("base URL has no address"))?;
        for slug in [&config.tenant_a.slug, &config.tenant_b.slug] {
            builder = builder.resolve(&format!("{slug}.{}", config.base_domain), addr);
        }
    }
    Ok(builder.build()?)
}

impl Probe {
    pub(crate) fn url(&self, host: Host, path: &str) -> String {
        let slug = match host {
            Host::A => &self.config.tenant_a.slug,
            Host::B => &self.config.tenant_b.slug,
        };
        let mut url = self.config.base_url.clone();
        let _ = url.set_host(Some(&format!("{slug}.{}", self.config.base_domain)));
        let base = url.as_str().trim_end_matches('/').to_owned();
        format!("{base}{path}")
    }

    pub(crate) async fn send(
        &self,
        host: Host,
        bearer: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let (status, _, text) = self
            .send_noting_retry(host, bearer, method, path, body)
            .await?;
        Ok((status, text))
    }

    /// [`Probe::send`], with the answer's `Retry-After` in seconds when it has one.
    async fn send_noting_retry(
        &self,
        host: Host,
        bearer: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Option<u64>, String)> {
        let mut request = self.client.request(method, self.url(host, path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("request to {path}"))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok((
            status,
            retry_after,
            response.text().await.unwrap_or_default(),
        ))
    }

    pub(crate) async fn as_a(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let key = self.config.tenant_a.admin_key.clone();
        self.expect_ok(Host::A, &key, method, path, body).await
    }

    pub(crate) async fn as_b(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let key = self.config.tenant_b.admin_key.clone();
        self.expect_ok(Host::B, &key, method, path, body).await
    }

    pub(crate) async fn expect_ok(
        &self,
        host: Host,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        // The probe's own set-up and checks of what a tenant may do are paced by the deployment's
        // rate limits like any client's: a 429 is waited out (its `Retry-After`, a few times),
        // not reported as a failure of the deployment. Attacks never come through here.
        let mut waits = 0;
        let (status, text) = loop {
            let (status, retry_after, text) = self
                .send_noting_retry(host, Some(key), method.clone(), path, body.as_ref())
                .await?;
            match retry_after {
                Some(seconds) if status == StatusCode::TOO_MANY_REQUESTS && waits < 3 => {
                    waits += 1;
                    tokio::time::sleep(Duration::from_secs(seconds.clamp(1, 10))).await;
                }
                _ => break (status, text),
            }
        };
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        })
    }

    pub(crate) async fn form(
        &self,
        host: Host,
        basic: Option<(&str, &str)>,
        pairs: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, String)> {
        let mut request = self.client.post(self.url(host, "/oauth/token")).form(pairs);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    pub(crate) async fn document(&self) -> anyhow::Result<Value> {
        if let Some(file) = &self.config.openapi_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            return Ok(serde_json::from_str(&text)?);
        }
        let url = format!(
            "{}/openapi.json",
            self.config.base_url.as_str().trim_end_matches('/')
        );
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .context("GET /openapi.json")?;
        if !response.status().is_success() {
            bail!("GET /openapi.json answered {}", response.status());
        }
        Ok(response.json().await?)
    }

    pub(crate) async fn set_up_victim(&self) -> anyhow::Result<Victim> {
        let mut v = Victim::default();
        let marker = random_marker();
        let tag = &marker[marker.len() - 8..];
        v.secrets.push(marker.clone());
        let keep = |v: &mut Victim, kind: &'static str, value: &Value| -> anyhow::Result<String> {
            let id = value["id"]
                .as_str()
                .or_else(|| value["api_key"]["id"].as_str())
                .ok_or_else(|| anyhow!("no id in the {kind} answer"))?
                .to_owned();
            v.secrets.push(id.clone());
            v.ids.insert(kind, id.clone());
            Ok(id)
        };
        let session = self
            .as_a(
                Method::POST,
                "/v1/sessions",
                Some(json!({ "agent_id": format!("probe-{tag}"), "title": marker, "metadata": { "marker": marker } })),
            )
            .await?;
        let session_id = keep(&mut v, "sessions", &session)?;
        let agent = self
            .as_a(
                Method::POST,
                "/v1/agents",
                Some(json!({ "name": format!("probe-{tag}"), "description": marker })),
            )
            .await?;
        let agent_id = keep(&mut v, "agents", &agent)?;
        v.browser.email = format!("probe-{tag}@probe.invalid");
        v.browser.password = random_marker();
        let user = self
            .as_a(
                Method::POST,
                "/v1/users",
                Some(json!({ "email": v.browser.email, "password": v.browser.password })),
            )
            .await?;
        let user_id = keep(&mut v, "users", &user)?;
        v.secrets.push(format!("probe-{tag}@probe.invalid"));
        let role = self
            .as_a(
                Method::POST,
                "/v1/roles",
                Some(json!({ "name": format!("probe-{tag}"), "description": marker, "permissions": ["sessions:read", "sessions:write"] })),
            )
            .await?;
        let role_id = keep(&mut v, "roles", &role)?;
        let assignment = self
            .as_a(
                Method::POST,
                "/v1/role-assignments",
                Some(json!({ "role_id": role_id, "agent_id": agent_id })),
            )
            .await?;
        keep(&mut v, "role-assignments", &assignment)?;
        let key = self
            .as_a(
                Method::POST,
                "/v1/api-keys",
                Some(json!({ "scopes": ["sessions:read", "sessions:write"], "agent_id": agent_id, "description": marker })),
            )
            .await?;
        v.agent_key_id = keep(&mut v, "api-keys", &key)?;
        v.agent_key = key["key"].as_str().unwrap_or_default().to_owned();
        v.secrets.push(v.agent_key.clone());
        let endpoint = self
            .as_a(
                Method::POST,
                "/v1/webhooks/endpoints",
                Some(json!({ "url": format!("https://hooks-{tag}.example/probe"), "description": marker })),
            )
            .await?;
        keep(&mut v, "endpoints", &endpoint)?;
        let message = self
            .as_a(
                Method::POST,
                "/v1/webhooks/messages",
                Some(json!({ "event_type": "probe.check", "payload": { "marker": marker } })),
            )
            .await?;
        keep(&mut v, "messages", &message)?;
        let tool_name = format!("probe_{tag}");
        self.as_a(
            Method::POST,
            "/v1/tools",
            Some(json!({
                "name": tool_name,
                "description": format!("Looks up the weather. {marker}"),
                "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } },
                "endpoint_url": format!("https://tools-{tag}.example/run"),
            })),
        )
        .await?;
        v.ids.insert("tools", tool_name.clone());
        v.secrets.push(tool_name.clone());
        // Agent refresh tokens on, for a refresh token to attack with (restored at clean-up).
        let policy = self.as_a(Method::GET, "/v1/token-policy", None).await?;
        let mut wanted = policy.clone();
        wanted["agent_refresh_tokens"] = json!(true);
        if self
            .as_a(Method::PUT, "/v1/token-policy", Some(wanted))
            .await
            .is_ok()
        {
            v.token_policy = Some(policy);
        }
        let (status, text) = self
            .form(
                Host::A,
                Some((&v.agent_key_id, &v.agent_key)),
                &[("grant_type", "client_credentials")],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant A's client_credentials grant answered {status}: {text}");
        }
        let issued: Value = serde_json::from_str(&text)?;
        v.access_token = issued["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        v.refresh_token = issued["refresh_token"].as_str().map(str::to_owned);
        if let Some(sid) = issued["session_id"].as_str() {
            v.ids.insert("auth-sessions", sid.to_owned());
            v.secrets.push(sid.to_owned());
        }
        v.secrets.push(v.access_token.clone());
        v.secrets.extend(v.refresh_token.clone());
        let (status, text) = self
            .form(
                Host::A,
                None,
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", &v.access_token),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("audience", "probe-sub-agent"),
                    ("scope", "sessions:read"),
                ],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant A's token exchange answered {status}: {text}");
        }
        let delegated: Value = serde_json::from_str(&text)?;
        v.delegated_token = delegated["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        v.secrets.push(v.delegated_token.clone());
        self.set_up_victim_oauth(&mut v, tag, &marker).await?;
        self.set_up_victim_browser(&mut v, &role_id, &user_id)
            .await?;
        // Snapshots of what B must not be able to change.
        for (kind, path) in [
            ("sessions", format!("/v1/sessions/{session_id}")),
            ("agents", format!("/v1/agents/{agent_id}")),
            ("users", format!("/v1/users/{user_id}")),
            ("roles", format!("/v1/roles/{role_id}")),
            (
                "endpoints",
                format!("/v1/webhooks/endpoints/{}", v.ids["endpoints"]),
            ),
            ("tools", format!("/v1/tools/{tool_name}")),
            (
                "role-assignments",
                format!("/v1/role-assignments?agent_id={agent_id}"),
            ),
        ] {
            let value = self.as_a(Method::GET, &path, None).await?;
            v.snapshots.push((format!("{kind} {path}"), value));
        }
        Ok(v)
    }

    pub(crate) async fn set_up_attacker(&self) -> anyhow::Result<Attacker> {
        let mut b = Attacker::default();
        let mint = |scopes: Value| json!({ "scopes": scopes, "description": "bulkhead probe" });
        let scopeless = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(mint(json!(["billing:manage"]))),
            )
            .await?;
        b.out_of_scope_key = scopeless["key"].as_str().unwrap_or_default().to_owned();
        b.made_keys
            .extend(scopeless["api_key"]["id"].as_str().map(str::to_owned));
        let revoked = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(mint(json!(["sessions:read"]))),
            )
            .await?;
        b.revoked_key = revoked["key"].as_str().unwrap_or_default().to_owned();
        let revoked_id = revoked["api_key"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.as_b(
            Method::POST,
            &format!("/v1/api-keys/{revoked_id}/revoke"),
            Some(json!({})),
        )
        .await?;
        // A key that expires in a second, and one rotated with no grace: both dead by the
        // time the attacks start (the wait below).
        let expiring = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(json!({
                    "scopes": ["sessions:read"],
                    "description": "bulkhead probe",
                    "expires_at": chrono::Utc::now() + chrono::Duration::seconds(1),
                })),
            )
            .await?;
        b.expired_key = expiring["key"].as_str().unwrap_or_default().to_owned();
        b.made_keys
            .extend(expiring["api_key"]["id"].as_str().map(str::to_owned));
        let rotated = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(mint(json!(["sessions:read"]))),
            )
            .await?;
        b.after_grace_key = rotated["key"].as_str().unwrap_or_default().to_owned();
        let rotated_id = rotated["api_key"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let successor = self
            .as_b(
                Method::POST,
                &format!("/v1/api-keys/{rotated_id}/rotate"),
                Some(json!({ "grace_seconds": 0 })),
            )
            .await?;
        b.made_keys
            .extend(successor["api_key"]["id"].as_str().map(str::to_owned));
        // `webhooks:manage` without `audit:read` also makes it the key of the `audstrm` attack
        // (minting one more key per run would run into the key-minting budget).
        let client = self
            .as_b(
                Method::POST,
                "/v1/api-keys",
                Some(mint(json!(["sessions:read", "webhooks:manage"]))),
            )
            .await?;
        b.client_key = client["key"].as_str().unwrap_or_default().to_owned();
        b.client_key_id = client["api_key"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        b.made_keys.push(b.client_key_id.clone());
        let (status, text) = self
            .form(
                Host::B,
                Some((&b.client_key_id, &b.client_key)),
                &[("grant_type", "client_credentials")],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant B's client_credentials grant answered {status}: {text}");
        }
        let issued: Value = serde_json::from_str(&text)?;
        b.revoked_token = issued["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let response = self
            .client
            .post(self.url(Host::B, "/oauth/revoke"))
            .basic_auth(&b.client_key_id, Some(&b.client_key))
            .form(&[("token", b.revoked_token.as_str())])
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "tenant B could not revoke its own token: {}",
                response.status()
            );
        }
        // Past the expiring key's expiry (whole seconds, and leeway for clock steps).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        Ok(b)
    }

    pub(crate) fn record(&mut self, op: &str, attack: Attack, verdict: Verdict, detail: String) {
        self.findings.push(Finding {
            operation: op.to_owned(),
            attack,
            verdict,
            detail,
        });
    }

    /// Judges one answer to B: a leak if anything of A's is in it, else refused if the status is
    /// one of `refusals`, else allowed-own for a successful read, else unexpected.
    pub(crate) fn judge(
        &mut self,
        op: &Operation,
        attack: Attack,
        victim: &Victim,
        status: StatusCode,
        text: &str,
        refusals: &[StatusCode],
    ) {
        if let Some(secret) = victim
            .secrets
            .iter()
            .find(|s| !s.is_empty() && text.contains(s.as_str()))
        {
            let shown: String = secret.chars().take(12).collect();
            let detail = format!("{status}; the answer holds A's {shown}…");
            return self.record(&op.name(), attack, Verdict::Leak, detail);
        }
        let verdict = if refusals.contains(&status) {
            Verdict::Refused
        } else if status.is_success() && op.method == Method::GET {
            Verdict::AllowedOwn
        } else if status.is_success() {
            // A write of B's succeeded: B's own data, unless the final comparison finds A's
            // changed; still not what the attack expected.
            Verdict::Unexpected
        } else {
            Verdict::Unexpected
        };
        let detail = format!("{status} (expected one of {refusals:?})");
        self.record(&op.name(), attack, verdict, detail);
    }
}
