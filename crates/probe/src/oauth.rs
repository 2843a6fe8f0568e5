//! The OAuth browser routes and grants across tenants (issue 20), column `oauthx`: A registers
//! a protected resource and an OAuth client and holds a token for its resource; B tries them
//! from its side. `/v1/oauth-resources/{id}` and `/v1/oauth-clients/{id}` are attacked with
//! A's ids by the per-operation columns (`ids`, `same404`, `filters`), like every `/v1` route.

use anyhow::anyhow;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::operations::random_marker;
use crate::probe::Probe;
use crate::report::{Attack, Verdict};
use crate::tenants::{Attacker, Host, Victim};

/// A registered redirect URI (a loopback one: nothing is ever sent to it).
pub(crate) const REDIRECT: &str = "http://127.0.0.1/callback";
/// The S256 challenge of the probe's PKCE verifier (`pages::VERIFIER`); where it is only
/// presented, its verifier is never sent.
pub(crate) const CHALLENGE: &str = "XnhicrDUe-6WTFEoXmdyDVn0w_OaXj9Zck7mYuM8YKw";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

impl Probe {
    /// Gives A a protected resource (on A's own origin, accepting `sessions:read`), a public
    /// OAuth client, and a `client_credentials` token of A's agent key for the resource.
    pub(crate) async fn set_up_victim_oauth(
        &self,
        v: &mut Victim,
        tag: &str,
        marker: &str,
    ) -> anyhow::Result<()> {
        // The identifier must be on A's origin (its issuer): the scheme and port of the
        // deployment's issuer, which the probe does not know. Try the base URL's scheme and
        // port, then `https` with that port, then `https` with none.
        let mut origin = self.config.base_url.clone();
        let _ = origin.set_host(Some(&format!(
            "{}.{}",
            self.config.tenant_a.slug, self.config.base_domain
        )));
        let mut candidates = vec![origin.clone()];
        let _ = origin.set_scheme("https");
        candidates.push(origin.clone());
        let _ = origin.set_port(None);
        candidates.push(origin);
        candidates.dedup();
        let mut created = None;
        for mut candidate in candidates {
            candidate.set_path(&format!("/probe-{tag}"));
            let body = json!({
                "identifier": candidate.as_str(),
                "name": marker,
                "scopes": ["sessions:read"],
            });
            if let Ok(value) = self
                .as_a(Method::POST, "/v1/oauth-resources", Some(body))
                .await
            {
                created = Some((candidate.to_string(), value));
                break;
            }
        }
        let (identifier, resource) =
            created.ok_or_else(|| anyhow!("tenant A could not register a protected resource"))?;
        let id = resource["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no id in the protected resource answer"))?
            .to_owned();
        v.secrets.extend([id.clone(), identifier.clone()]);
        v.ids.insert("oauth-resources", id.clone());
        v.resource_identifier = identifier.clone();
        let path = format!("/v1/oauth-resources/{id}");
        let value = self.as_a(Method::GET, &path, None).await?;
        v.snapshots.push((format!("oauth-resources {path}"), value));

        let client = self
            .as_a(
                Method::POST,
                "/v1/oauth-clients",
                Some(json!({
                    "name": marker,
                    "redirect_uris": [REDIRECT],
                    "token_endpoint_auth_method": "none",
                    "scopes": ["sessions:read"],
                })),
            )
            .await?;
        let client_id = client["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no id in the OAuth client answer"))?
            .to_owned();
        v.secrets.push(client_id.clone());
        v.ids.insert("oauth-clients", client_id.clone());
        let path = format!("/v1/oauth-clients/{client_id}");
        let value = self.as_a(Method::GET, &path, None).await?;
        v.snapshots.push((format!("oauth-clients {path}"), value));

        let (status, text) = self
            .form(
                Host::A,
                Some((&v.agent_key_id, &v.agent_key)),
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", &identifier),
                ],
            )
            .await?;
        if !status.is_success() {
            return Err(anyhow!(
                "tenant A's client_credentials grant for its resource answered {status}: {text}"
            ));
        }
        let issued: Value = serde_json::from_str(&text)?;
        v.resource_token = issued["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        v.secrets.push(v.resource_token.clone());
        if let Some(refresh) = issued["refresh_token"].as_str() {
            v.secrets.push(refresh.to_owned());
        }
        Ok(())
    }

    /// The authorization endpoint's answer on `host` for `client_id`, and whether it is exactly
    /// (status and page) the answer for a client id that exists in no tenant.
    pub(crate) async fn authorize_as_unknown(
        &self,
        host: Host,
        client_id: &str,
    ) -> anyhow::Result<(StatusCode, String, bool)> {
        let ask = |client_id: String| {
            let query = [
                ("response_type", "code".to_owned()),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT.to_owned()),
                ("code_challenge", CHALLENGE.to_owned()),
                ("code_challenge_method", "S256".to_owned()),
                ("state", "probe".to_owned()),
            ];
            let request = self
                .client
                .get(self.url(host, "/oauth/authorize"))
                .query(&query);
            async move {
                let response = request.send().await?;
                let status = response.status();
                anyhow::Ok((status, response.text().await.unwrap_or_default()))
            }
        };
        let (status, text) = ask(client_id.to_owned()).await?;
        let nowhere = bulkhead_core::OAuthClientId::new().to_string();
        let (missing_status, missing_text) = ask(nowhere).await?;
        let unknown = status == missing_status && text == missing_text;
        Ok((status, text, unknown))
    }

    /// A leak if anything of A's is in `text`; else refused when `refused` holds.
    fn oauth_verdict(
        &mut self,
        what: &str,
        victim: &Victim,
        status: StatusCode,
        text: &str,
        refused: bool,
    ) {
        let (verdict, detail) = match victim
            .secrets
            .iter()
            .find(|s| !s.is_empty() && text.contains(s.as_str()))
        {
            Some(secret) => {
                let shown: String = secret.chars().take(12).collect();
                (
                    Verdict::Leak,
                    format!("{status}; the answer holds A's {shown}…"),
                )
            }
            None if refused => (Verdict::Refused, format!("{status}")),
            None if status.is_success() || status.is_redirection() => {
                (Verdict::Leak, format!("{status}: accepted"))
            }
            None => (Verdict::Unexpected, format!("{status}: {text}")),
        };
        self.record(what, Attack::OAuthAcrossTenants, verdict, detail);
    }

    /// B's attempts on A's OAuth objects: see the module doc and docs/probe.md.
    pub(crate) async fn oauth_across_tenants(
        &mut self,
        victim: &Victim,
        attacker: &Attacker,
    ) -> anyhow::Result<()> {
        let b_client = (
            attacker.client_key_id.as_str(),
            attacker.client_key.as_str(),
        );
        let resource = victim.resource_identifier.clone();
        // B asks its own host for a token for A's resource: invalid_target, the same answer as
        // for an identifier nobody registered.
        let grant = |r: &str| {
            vec![
                ("grant_type".to_owned(), "client_credentials".to_owned()),
                ("resource".to_owned(), r.to_owned()),
            ]
        };
        let pairs = grant(&resource);
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, text) = self.form(Host::B, Some(b_client), &pairs).await?;
        let missing = format!("{}-{}", resource, &random_marker()[13..]);
        let other = grant(&missing);
        let other: Vec<(&str, &str)> = other
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (missing_status, missing_text) = self.form(Host::B, Some(b_client), &other).await?;
        let refused = status == StatusCode::BAD_REQUEST
            && text.contains("invalid_target")
            && (status, text.as_str()) == (missing_status, missing_text.as_str());
        self.oauth_verdict(
            "POST /oauth/token (client_credentials for A's resource, on B)",
            victim,
            status,
            &text,
            refused,
        );
        // B's key on A's host, for A's resource: the key is no client of A.
        let (status, text) = self.form(Host::A, Some(b_client), &pairs).await?;
        self.oauth_verdict(
            "POST /oauth/token (client_credentials for A's resource, B's key on A)",
            victim,
            status,
            &text,
            status == StatusCode::UNAUTHORIZED,
        );
        // A's resource token exchanged on B's host: no token of B's tenant.
        let (status, text) = self
            .form(
                Host::B,
                Some(b_client),
                &[
                    ("grant_type", TOKEN_EXCHANGE),
                    ("subject_token", &victim.resource_token),
                    ("subject_token_type", ACCESS_TOKEN_TYPE),
                    ("resource", &resource),
                ],
            )
            .await?;
        self.oauth_verdict(
            "POST /oauth/token (exchange of A's resource token, on B)",
            victim,
            status,
            &text,
            status == StatusCode::BAD_REQUEST && text.contains("invalid_grant"),
        );
        // B introspects A's resource token: inactive.
        let response = self
            .client
            .post(self.url(Host::B, "/oauth/introspect"))
            .basic_auth(b_client.0, Some(b_client.1))
            .form(&[("token", victim.resource_token.as_str())])
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let inactive = serde_json::from_str::<Value>(&text).ok() == Some(json!({"active": false}));
        self.oauth_verdict(
            "POST /oauth/introspect (A's resource token, B's key)",
            victim,
            status,
            &text,
            status == StatusCode::OK && inactive,
        );
        // A's client at B's authorization endpoint: the error page of a client that exists
        // nowhere, never a redirect.
        let client_id = victim.ids.get("oauth-clients").cloned().unwrap_or_default();
        let (status, text, unknown) = self.authorize_as_unknown(Host::B, &client_id).await?;
        self.oauth_verdict(
            "GET /oauth/authorize (A's client on B)",
            victim,
            status,
            &text,
            status == StatusCode::BAD_REQUEST && unknown,
        );
        // A's resource metadata on B's host: the unknown id's 404.
        let id = victim
            .ids
            .get("oauth-resources")
            .cloned()
            .unwrap_or_default();
        let (status, text) = self
            .send(
                Host::B,
                None,
                Method::GET,
                &format!("/.well-known/oauth-protected-resource/{id}"),
                None,
            )
            .await?;
        let fresh = bulkhead_core::OAuthResourceId::new().to_string();
        let (missing_status, missing_text) = self
            .send(
                Host::B,
                None,
                Method::GET,
                &format!("/.well-known/oauth-protected-resource/{fresh}"),
                None,
            )
            .await?;
        let same = status == missing_status
            && crate::operations::comparable(&serde_json::from_str(&text).unwrap_or(Value::Null))
                == crate::operations::comparable(
                    &serde_json::from_str(&missing_text).unwrap_or(Value::Null),
                );
        self.oauth_verdict(
            "GET /.well-known/oauth-protected-resource/{id} (A's, on B)",
            victim,
            status,
            &text,
            status == StatusCode::NOT_FOUND && same,
        );
        Ok(())
    }
}
