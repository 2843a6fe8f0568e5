//! Every operation attacked as tenant B with tenant A's ids, credentials and subdomain, and
//! A's tokens introspected, revoked and refreshed by B.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::operations::{
    comparable, fill, filter_value, foreign_bodies, fresh_id, param_kind, Operation, INTERNAL_URLS,
};
use crate::probe::Probe;
use crate::report::{Attack, Verdict};
use crate::tenants::{Attacker, Host, Victim};

impl Probe {
    pub(crate) async fn attack(
        &mut self,
        op: &Operation,
        victim: &Victim,
        attacker: &Attacker,
    ) -> anyhow::Result<()> {
        if !op.tenant_api() {
            return Ok(());
        }
        let kind = param_kind(&op.path);
        let a_id = kind.and_then(|k| victim.ids.get(k)).cloned();
        // Credentials that must never authenticate on B's host (or A's).
        let path_any = fill(&op.path, a_id.as_deref().unwrap_or("x"));
        let body = json!({});
        let unauthorized = [StatusCode::UNAUTHORIZED];
        let bad_credentials: Vec<(Attack, Host, Option<String>)> = vec![
            (Attack::NoCredential, Host::B, None),
            (
                Attack::AKeyOnB,
                Host::B,
                Some(self.config.tenant_a.admin_key.clone()),
            ),
            (
                Attack::ATokenOnB,
                Host::B,
                Some(victim.access_token.clone()),
            ),
            (
                Attack::ADelegatedOnB,
                Host::B,
                Some(victim.delegated_token.clone()),
            ),
            (Attack::ARefreshOnB, Host::B, victim.refresh_token.clone()),
            (
                Attack::BKeyOnA,
                Host::A,
                Some(self.config.tenant_b.admin_key.clone()),
            ),
            (
                Attack::RevokedKey,
                Host::B,
                Some(attacker.revoked_key.clone()),
            ),
            (
                Attack::RevokedToken,
                Host::B,
                Some(attacker.revoked_token.clone()),
            ),
            (
                Attack::ExpiredKey,
                Host::B,
                Some(attacker.expired_key.clone()),
            ),
            (
                Attack::AfterGraceKey,
                Host::B,
                Some(attacker.after_grace_key.clone()),
            ),
        ];
        for (attack, host, bearer) in bad_credentials {
            if attack == Attack::ARefreshOnB && bearer.is_none() {
                continue;
            }
            let (status, text) = self
                .send(
                    host,
                    bearer.as_deref(),
                    op.method.clone(),
                    &path_any,
                    Some(&body),
                )
                .await?;
            // B's key on A's host: the answer is about A's tenant, but must say nothing.
            self.judge(op, attack, victim, status, &text, &unauthorized);
        }
        // A credential of B that holds no permission any route needs.
        let (status, text) = self
            .send(
                Host::B,
                Some(&attacker.out_of_scope_key),
                op.method.clone(),
                &path_any,
                Some(&body),
            )
            .await?;
        // 403; 404 for another's resource; 400/422 where the route acts on the caller itself
        // and the credential is not the kind it needs (logout with a key).
        let refusals = [
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::BAD_REQUEST,
            StatusCode::UNPROCESSABLE_ENTITY,
        ];
        self.judge(op, Attack::OutOfScope, victim, status, &text, &refusals);

        let b_key = self.config.tenant_b.admin_key.clone();
        // A's ids in the path: 404, exactly like an id that does not exist.
        if let (Some(kind), Some(a_id)) = (kind, &a_id) {
            let path = fill(&op.path, a_id);
            let (status, text) = self
                .send(Host::B, Some(&b_key), op.method.clone(), &path, Some(&body))
                .await?;
            // 404; or the body's own validation failing first, which says nothing about the id
            // (the comparison with a missing id below checks that).
            let refusals = [
                StatusCode::NOT_FOUND,
                StatusCode::BAD_REQUEST,
                StatusCode::UNPROCESSABLE_ENTITY,
            ];
            self.judge(op, Attack::ForeignIds, victim, status, &text, &refusals);
            if let Some(missing) = fresh_id(kind) {
                let other = fill(&op.path, &missing);
                let (missing_status, missing_text) = self
                    .send(
                        Host::B,
                        Some(&b_key),
                        op.method.clone(),
                        &other,
                        Some(&body),
                    )
                    .await?;
                let same = status == missing_status
                    && comparable(&serde_json::from_str(&text).unwrap_or(Value::Null))
                        == comparable(&serde_json::from_str(&missing_text).unwrap_or(Value::Null));
                let verdict = if same {
                    Verdict::Refused
                } else {
                    Verdict::Leak
                };
                let detail = format!("A's id: {status}, a missing id: {missing_status}");
                self.record(&op.name(), Attack::Indistinguishable, verdict, detail);
            }
        }
        // A's ids in the body, where a body names other resources.
        for body in foreign_bodies(op, victim) {
            let (status, text) = self
                .send(
                    Host::B,
                    Some(&b_key),
                    op.method.clone(),
                    &path_any,
                    Some(&body),
                )
                .await?;
            self.judge(
                op,
                Attack::ForeignIds,
                victim,
                status,
                &text,
                &[StatusCode::NOT_FOUND],
            );
        }
        // List and search filters aimed at A's data.
        if op.method == Method::GET && kind.is_none() && !op.query_params.is_empty() {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for name in &op.query_params {
                if let Some(value) = filter_value(name, victim) {
                    query.append_pair(name, &value);
                }
            }
            let query = query.finish();
            if !query.is_empty() {
                let path = format!("{}?{query}", op.path);
                let (status, text) = self
                    .send(Host::B, Some(&b_key), Method::GET, &path, None)
                    .await?;
                let ok = [
                    StatusCode::OK,
                    StatusCode::BAD_REQUEST,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    StatusCode::NOT_FOUND,
                ];
                self.judge(op, Attack::ListFilters, victim, status, &text, &ok);
            }
        }
        // Webhook endpoints aimed at internal addresses.
        if op.path == "/v1/webhooks/endpoints" && op.method == Method::POST {
            for url in INTERNAL_URLS {
                let body = json!({ "url": url, "description": "bulkhead probe" });
                let (status, text) = self
                    .send(Host::B, Some(&b_key), Method::POST, &op.path, Some(&body))
                    .await?;
                if status.is_success() {
                    // Do not leave it behind.
                    if let Some(id) = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                    {
                        let _ = self
                            .send(
                                Host::B,
                                Some(&b_key),
                                Method::DELETE,
                                &format!("/v1/webhooks/endpoints/{id}"),
                                None,
                            )
                            .await;
                    }
                }
                let before = self.findings.len();
                self.judge(
                    op,
                    Attack::InternalUrls,
                    victim,
                    status,
                    &text,
                    &[StatusCode::UNPROCESSABLE_ENTITY],
                );
                if let Some(f) = self.findings.get_mut(before) {
                    f.detail = format!("{url}: {}", f.detail);
                }
            }
        }
        Ok(())
    }

    /// Introspection, revocation, refresh and exchange of A's tokens by B's client.
    pub(crate) async fn foreign_tokens(
        &mut self,
        victim: &Victim,
        attacker: &Attacker,
    ) -> anyhow::Result<()> {
        let b_client = (
            attacker.client_key_id.as_str(),
            attacker.client_key.as_str(),
        );
        let op = Operation {
            method: Method::POST,
            path: "/oauth/introspect".into(),
            public: true,
            query_params: Vec::new(),
        };
        let response = self
            .client
            .post(self.url(Host::B, "/oauth/introspect"))
            .basic_auth(b_client.0, Some(b_client.1))
            .form(&[("token", victim.access_token.as_str())])
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let inactive = serde_json::from_str::<Value>(&text)
            .ok()
            .is_some_and(|v| v == json!({ "active": false }));
        if inactive {
            self.judge(
                &op,
                Attack::ForeignTokens,
                victim,
                status,
                &text,
                &[StatusCode::OK],
            );
        } else {
            self.record(
                &op.name(),
                Attack::ForeignTokens,
                Verdict::Leak,
                format!("{status}: {text}"),
            );
        }

        // Revocation by B must not touch A's token (RFC 7009 answers 200 either way).
        let response = self
            .client
            .post(self.url(Host::B, "/oauth/revoke"))
            .basic_auth(b_client.0, Some(b_client.1))
            .form(&[("token", victim.access_token.as_str())])
            .send()
            .await?;
        let revoke_status = response.status();
        let (still, _) = self
            .send(
                Host::A,
                Some(&victim.access_token),
                Method::GET,
                "/v1/sessions",
                None,
            )
            .await?;
        let verdict = if still == StatusCode::OK {
            Verdict::Refused
        } else {
            Verdict::Leak
        };
        self.record(
            "POST /oauth/revoke",
            Attack::ForeignTokens,
            verdict,
            format!("revoke {revoke_status}; A's token afterwards {still}"),
        );

        let token_op = Operation {
            method: Method::POST,
            path: "/oauth/token".into(),
            public: true,
            query_params: Vec::new(),
        };
        if let Some(refresh) = &victim.refresh_token {
            let (status, text) = self
                .form(
                    Host::B,
                    Some(b_client),
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh.as_str()),
                    ],
                )
                .await?;
            self.judge(
                &token_op,
                Attack::ForeignTokens,
                victim,
                status,
                &text,
                &[StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED],
            );
        }
        let (status, text) = self
            .form(
                Host::B,
                Some(b_client),
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", &victim.access_token),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                ],
            )
            .await?;
        self.judge(
            &token_op,
            Attack::ForeignTokens,
            victim,
            status,
            &text,
            &[StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED],
        );
        Ok(())
    }
}
