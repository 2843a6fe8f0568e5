//! Confined and delegated tokens, the audit stream's scope, forged platform events and host
//! mismatches.

use anyhow::{anyhow, bail};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::neighbour::raw_exchange;
use crate::operations::{confined_body, fill, random_marker, Operation};
use crate::probe::Probe;
use crate::report::{Attack, Verdict};
use crate::tenants::{Attacker, Host, Victim};

impl Probe {
    /// A token of B's own, delegated and confined to `probe-in`, holding every permission (issue
    /// 27 item 4): every creating or changing operation is refused (403), or at least not done;
    /// every list either refuses (403) or shows nothing outside the prefix (B's session in
    /// `probe-out`, whose creation the audit log also names).
    pub(crate) async fn confined_token(&mut self, operations: &[Operation]) -> anyhow::Result<()> {
        let admin_key = self.config.tenant_b.admin_key.clone();
        let (status, text) = self
            .form(
                Host::B,
                None,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_secret", &admin_key),
                ],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant B's client_credentials grant answered {status}: {text}");
        }
        let root: Value = serde_json::from_str(&text)?;
        let root = root["access_token"].as_str().unwrap_or_default().to_owned();
        let (status, text) = self
            .form(
                Host::B,
                None,
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", &root),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("audience", "probe-confined"),
                    ("resource_prefix", "probe-in"),
                ],
            )
            .await?;
        if !status.is_success() {
            bail!("tenant B's confined token exchange answered {status}: {text}");
        }
        let confined: Value = serde_json::from_str(&text)?;
        let confined = confined["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // What the confined token must never see: a session of B outside its prefix.
        let marker = random_marker();
        let outside = self
            .as_b(
                Method::POST,
                "/v1/sessions",
                Some(json!({ "agent_id": "probe-outside", "namespace": "probe-out", "title": marker })),
            )
            .await?;
        let outside_id = outside["id"].as_str().unwrap_or_default().to_owned();
        let fence = Victim {
            secrets: vec![outside_id.clone(), marker],
            ..Victim::default()
        };
        let tag = &random_marker()[13..21];
        for op in operations.iter().filter(|op| op.tenant_api()) {
            let listing = op.method == Method::GET && !op.path.contains('{');
            if op.method == Method::GET && !listing {
                continue;
            }
            // Ending its own session is always allowed (and would end the subject's).
            if op.path == "/v1/auth/logout" {
                continue;
            }
            let path = fill(&op.path, "x");
            let body = if listing {
                None
            } else if op.method == Method::PUT {
                // The current value: refusing it is the route's declaration, not validation.
                Some(
                    self.as_b(Method::GET, &op.path, None)
                        .await
                        .unwrap_or_else(|_| json!({})),
                )
            } else {
                Some(confined_body(op, tag))
            };
            let (status, text) = self
                .send(
                    Host::B,
                    Some(&confined),
                    op.method.clone(),
                    &path,
                    body.as_ref(),
                )
                .await?;
            // A write answered 429 (the tenant's key-minting budget, spent by the probe's own
            // set-up) did nothing either.
            let refusals: &[StatusCode] = if listing {
                &[StatusCode::FORBIDDEN]
            } else {
                &[
                    StatusCode::FORBIDDEN,
                    StatusCode::NOT_FOUND,
                    StatusCode::BAD_REQUEST,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    StatusCode::TOO_MANY_REQUESTS,
                ]
            };
            self.judge(op, Attack::ConfinedToken, &fence, status, &text, refusals);
        }
        let _ = self
            .as_b(Method::DELETE, &format!("/v1/sessions/{outside_id}"), None)
            .await;
        Ok(())
    }

    /// Issue 17, item 2: the audit stream is the audit log, so a key holding `webhooks:manage`
    /// without `audit:read` must not subscribe an endpoint to `audit.event`, neither at creation
    /// nor by a patch. It uses B's client key (`sessions:read`, `webhooks:manage`) and removes
    /// the endpoints it made.
    pub(crate) async fn audit_stream_scope(&mut self, attacker: &Attacker) -> anyhow::Result<()> {
        let key = attacker.client_key.clone();
        let marker = random_marker();
        let tag = &marker[marker.len() - 8..];
        let url = format!("https://siem-{tag}.example/in");
        let mut made = Vec::new();
        // Create with the stream: refused.
        let op = "POST /v1/webhooks/endpoints (audit.event)";
        let body = json!({ "url": url, "event_types": ["audit.event"] });
        let (status, text) = self
            .send(
                Host::B,
                Some(&key),
                Method::POST,
                "/v1/webhooks/endpoints",
                Some(&body),
            )
            .await?;
        if status.is_success() {
            made.extend(
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned)),
            );
        }
        self.record_stream(op, status);
        // Create without it, then patch it in: refused.
        let body = json!({ "url": url, "event_types": ["probe.plain"] });
        let (status, text) = self
            .send(
                Host::B,
                Some(&key),
                Method::POST,
                "/v1/webhooks/endpoints",
                Some(&body),
            )
            .await?;
        let plain = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned));
        match (status.is_success(), plain) {
            (true, Some(id)) => {
                let path = format!("/v1/webhooks/endpoints/{id}");
                let patch = json!({ "event_types": ["probe.plain", "audit.event"] });
                let (status, _) = self
                    .send(Host::B, Some(&key), Method::PATCH, &path, Some(&patch))
                    .await?;
                self.record_stream("PATCH /v1/webhooks/endpoints/{id} (audit.event)", status);
                made.push(id);
            }
            _ => self.record(
                "PATCH /v1/webhooks/endpoints/{id} (audit.event)",
                Attack::AuditStream,
                Verdict::Unexpected,
                format!("could not create a plain endpoint to patch: {status}"),
            ),
        }
        for id in made {
            let _ = self
                .as_b(
                    Method::DELETE,
                    &format!("/v1/webhooks/endpoints/{id}"),
                    None,
                )
                .await;
        }
        Ok(())
    }

    pub(crate) fn record_stream(&mut self, op: &str, status: StatusCode) {
        let verdict = if status == StatusCode::FORBIDDEN {
            Verdict::Refused
        } else if status.is_success() {
            // The key could now read the whole audit log through its endpoint.
            Verdict::Leak
        } else {
            Verdict::Unexpected
        };
        self.record(
            op,
            Attack::AuditStream,
            verdict,
            format!("{status} (expected 403)"),
        );
    }

    /// Issue 17, item 3: a tenant must not publish in a platform namespace, and a message it
    /// publishes must say `"source": "tenant"` in its body whatever its payload claims.
    pub(crate) async fn forged_platform_events(&mut self) -> anyhow::Result<()> {
        let key = self.config.tenant_b.admin_key.clone();
        let op = "POST /v1/webhooks/messages (platform namespace)";
        for event_type in [
            "audit.event",
            "audit",
            "tool.call",
            "security.refresh_token_reuse",
            "endpoint.disabled",
            "webhook.test",
        ] {
            let body =
                json!({ "event_type": event_type, "payload": { "actor_id": "user_forged" } });
            let (status, _) = self
                .send(
                    Host::B,
                    Some(&key),
                    Method::POST,
                    "/v1/webhooks/messages",
                    Some(&body),
                )
                .await?;
            let verdict = if status == StatusCode::UNPROCESSABLE_ENTITY {
                Verdict::Refused
            } else if status.is_success() {
                Verdict::Leak
            } else {
                Verdict::Unexpected
            };
            self.record(
                op,
                Attack::ForgedEvents,
                verdict,
                format!("{event_type}: {status} (expected 422)"),
            );
        }
        // A payload dressed as a platform body stays the tenant's data.
        let op = "POST /v1/webhooks/messages (dressed as platform)";
        let forged = json!({ "type": "audit.event", "source": "platform", "data": {} });
        let body = json!({ "event_type": "probe.forge", "payload": forged });
        let (status, text) = self
            .send(
                Host::B,
                Some(&key),
                Method::POST,
                "/v1/webhooks/messages",
                Some(&body),
            )
            .await?;
        let id = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned));
        let Some(id) = id.filter(|_| status.is_success()) else {
            self.record(
                op,
                Attack::ForgedEvents,
                Verdict::Unexpected,
                format!("publishing an ordinary type answered {status}"),
            );
            return Ok(());
        };
        let message = self
            .as_b(Method::GET, &format!("/v1/webhooks/messages/{id}"), None)
            .await?;
        let sent = &message["message"]["payload"];
        let (verdict, detail) = if sent["type"] == "probe.forge"
            && sent["source"] == "tenant"
            && sent["data"] == forged
        {
            (Verdict::Refused, "the body says source tenant".to_owned())
        } else {
            (Verdict::Leak, format!("the body sent is {sent}"))
        };
        self.record(op, Attack::ForgedEvents, verdict, detail);
        Ok(())
    }

    /// Issue 17, item 7: a request whose absolute-form target names one tenant while `Host` names
    /// the other must be refused (400) on the API, OAuth and login paths alike. Written on a raw
    /// connection to the base URL's address (an HTTP client writes the target itself); an
    /// `https` base URL is not attacked this way (recorded as unexpected, so it is seen).
    pub(crate) async fn host_mismatch(&mut self, victim: &Victim) -> anyhow::Result<()> {
        if self.config.base_url.scheme() != "http" {
            self.record(
                "absolute-form targets",
                Attack::HostMismatch,
                Verdict::Unexpected,
                "not attacked: the base URL is not http".into(),
            );
            return Ok(());
        }
        let addr = self
            .config
            .base_url
            .socket_addrs(|| Some(80))?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("base URL has no address"))?;
        let port = addr.port();
        let host_of = |slug: &str| format!("{slug}.{}:{port}", self.config.base_domain);
        let (a_host, b_host) = (
            host_of(&self.config.tenant_a.slug),
            host_of(&self.config.tenant_b.slug),
        );
        let b_key = self.config.tenant_b.admin_key.clone();
        let cases = [
            ("GET", "/v1/sessions", a_host.clone(), b_host.clone(), ""),
            ("GET", "/v1/sessions", b_host.clone(), a_host.clone(), ""),
            (
                "POST",
                "/oauth/token",
                a_host.clone(),
                b_host.clone(),
                "grant_type=client_credentials",
            ),
            (
                "POST",
                "/v1/auth/login",
                a_host.clone(),
                b_host.clone(),
                r#"{"email":"probe@probe.invalid","password":"probe"}"#,
            ),
        ];
        for (method, path, target_host, header_host, body) in cases {
            let content_type = if path.starts_with("/oauth") {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            let request = format!(
                "{method} http://{target_host}{path} HTTP/1.1\r\nHost: {header_host}\r\nAuthorization: Bearer {b_key}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let (status, text) = raw_exchange(addr, &request).await?;
            let op = format!("{method} {path} (target {target_host}, Host {header_host})");
            let leaked = victim
                .secrets
                .iter()
                .any(|s| !s.is_empty() && text.contains(s.as_str()));
            let verdict = if leaked || (200..300).contains(&status) {
                Verdict::Leak
            } else if status == 400 {
                Verdict::Refused
            } else {
                Verdict::Unexpected
            };
            self.record(
                &op,
                Attack::HostMismatch,
                verdict,
                format!("{status} (expected 400)"),
            );
        }
        Ok(())
    }
}
