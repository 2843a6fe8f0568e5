//! The authorization pages across tenants (issue 20), column `pages`. At set-up A's user signs
//! in on A's host and consents to A's client, which leaves the probe holding what a browser of
//! A's holds: a signed-in session cookie, the consent form it was shown, a code, and a
//! remembered consent (whose id the per-operation columns then try on `/v1/auth/grants/{id}`).
//! B's side presents each on B's host: the cookie at B's authorization endpoint, the consent
//! form and cookie at B's consent form, A's user's password at B's login form, and A's code at
//! B's token endpoint.

use anyhow::{anyhow, bail};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::oauth::{CHALLENGE, REDIRECT};
use crate::probe::Probe;
use crate::report::{Attack, Verdict};
use crate::tenants::{Attacker, Host, Victim};

/// The pages' session cookie (`__Host-`: sent back by hand, the probe keeps no cookie jar).
const COOKIE: &str = "__Host-bulkhead-oauth";
/// The PKCE verifier of A's codes; [`CHALLENGE`] is its S256 challenge (checked by a test).
const VERIFIER: &str = "bulkhead-probe-pkce-verifier-0123456789-abcdefghij";

/// One page as a browser gets it.
struct Page {
    status: StatusCode,
    /// The session cookie the answer set, if it set one.
    cookie: Option<String>,
    html: String,
}

/// The text of an HTML attribute value as the templates escape it.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An attribute of one tag's text (`name="value"`), unescaped.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// What a browser submits of a page's form: hidden inputs and ticked checkboxes.
fn form_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            let kind = attribute(tag, "type")?;
            let ticked = kind == "checkbox" && tag.contains(" checked");
            if kind != "hidden" && !ticked {
                return None;
            }
            Some((attribute(tag, "name")?, attribute(tag, "value")?))
        })
        .collect()
}

/// The code in the link a return page leads back to the client with.
fn returned_code(html: &str) -> Option<String> {
    let rest = html.split("code=").nth(1)?;
    rest.split(['&', '"']).next().map(unescape)
}

/// The query of an authorization request of `client_id` for `sessions:read`, at `resource`
/// when given (required once a tenant registers resources, as A has).
fn authorize_path(client_id: &str, resource: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.extend_pairs([
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "sessions:read"),
        ("state", "probe"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]);
    if let Some(resource) = resource {
        query.append_pair("resource", resource);
    }
    format!("/oauth/authorize?{}", query.finish())
}

const LOGIN_FORM: &str = "action=\"/oauth/authorize/login\"";
const CONSENT_FORM: &str = "action=\"/oauth/authorize\"";

impl Probe {
    async fn page(
        &self,
        host: Host,
        path: &str,
        cookie: Option<&str>,
        form: Option<&[(String, String)]>,
    ) -> anyhow::Result<Page> {
        let method = if form.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let mut request = self.client.request(method, self.url(host, path));
        if let Some(cookie) = cookie {
            request = request.header("cookie", format!("{COOKIE}={cookie}"));
        }
        if let Some(form) = form {
            request = request.form(form);
        }
        let response = request.send().await?;
        let status = response.status();
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let pair = v.split(';').next()?;
                let (name, value) = pair.split_once('=')?;
                (name.trim() == COOKIE).then(|| value.to_owned())
            });
        let html = response.text().await.unwrap_or_default();
        Ok(Page {
            status,
            cookie,
            html,
        })
    }

    /// A's user (given the role the probe made) signs in on A's host and consents to A's client
    /// for `sessions:read`; the remembered consent's id becomes A's `grants` id.
    pub(crate) async fn set_up_victim_browser(
        &self,
        v: &mut Victim,
        role_id: &str,
        user_id: &str,
    ) -> anyhow::Result<()> {
        let assignment = self
            .as_a(
                Method::POST,
                "/v1/role-assignments",
                Some(json!({ "role_id": role_id, "user_id": user_id })),
            )
            .await?;
        v.browser.assignment = assignment["id"].as_str().map(str::to_owned);
        let client_id = v.ids.get("oauth-clients").cloned().unwrap_or_default();
        let login = self
            .page(
                Host::A,
                &authorize_path(&client_id, Some(&v.resource_identifier)),
                None,
                None,
            )
            .await?;
        if login.status != StatusCode::OK || !login.html.contains(LOGIN_FORM) {
            bail!(
                "A's authorization endpoint showed no login page: {}",
                login.status
            );
        }
        let mut fields = form_fields(&login.html);
        fields.push(("email".into(), v.browser.email.clone()));
        fields.push(("password".into(), v.browser.password.clone()));
        let consent = self
            .page(
                Host::A,
                "/oauth/authorize/login",
                login.cookie.as_deref(),
                Some(&fields),
            )
            .await?;
        let cookie = consent.cookie.clone().or(login.cookie);
        if consent.status != StatusCode::OK || !consent.html.contains(CONSENT_FORM) {
            bail!("A's user could not sign in on A's host: {}", consent.status);
        }
        v.browser.cookie = cookie.ok_or_else(|| anyhow!("A's pages set no cookie"))?;
        v.browser.consent_form = form_fields(&consent.html);
        let mut allow = v.browser.consent_form.clone();
        allow.push(("decision".into(), "allow".into()));
        let back = self
            .page(
                Host::A,
                "/oauth/authorize",
                Some(&v.browser.cookie),
                Some(&allow),
            )
            .await?;
        v.browser.code = returned_code(&back.html)
            .ok_or_else(|| anyhow!("A's consent returned no code: {}", back.status))?;
        v.secrets.extend([
            v.browser.code.clone(),
            v.browser.cookie.clone(),
            v.browser.password.clone(),
        ]);
        let grants = self.as_a(Method::GET, "/v1/auth/grants", None).await?;
        let grant = grants["data"]
            .as_array()
            .and_then(|items| items.iter().find(|g| g["client_id"] == client_id.as_str()))
            .and_then(|g| g["id"].as_str())
            .ok_or_else(|| anyhow!("A's consent is not among A's grants: {grants}"))?
            .to_owned();
        v.secrets.push(grant.clone());
        v.ids.insert("grants", grant);
        Ok(())
    }

    /// B's side of the pages with what A's browser holds.
    pub(crate) async fn pages_across_tenants(
        &mut self,
        victim: &Victim,
        _attacker: &Attacker,
    ) -> anyhow::Result<()> {
        let own = self
            .as_b(
                Method::POST,
                "/v1/oauth-clients",
                Some(json!({
                    "name": "bulkhead probe",
                    "redirect_uris": [REDIRECT],
                    "token_endpoint_auth_method": "none",
                    "scopes": ["sessions:read"],
                })),
            )
            .await?;
        let b_client = own["id"].as_str().unwrap_or_default().to_owned();
        let result = self.pages_with_b_client(victim, &b_client).await;
        let _ = self
            .as_b(
                Method::DELETE,
                &format!("/v1/oauth-clients/{b_client}"),
                None,
            )
            .await;
        result
    }

    async fn pages_with_b_client(&mut self, v: &Victim, b_client: &str) -> anyhow::Result<()> {
        let signed_in = &v.browser;
        // A's signed-in cookie at B's authorization endpoint: B's login page, as for a browser
        // with no session (A's session means nothing on B's host).
        let page = self
            .page(
                Host::B,
                &authorize_path(b_client, None),
                Some(&signed_in.cookie),
                None,
            )
            .await?;
        let login_shown = page.status == StatusCode::OK && page.html.contains(LOGIN_FORM);
        self.pages_verdict(
            "GET /oauth/authorize (A's signed-in cookie, B's client, on B)",
            v,
            &page,
            login_shown,
        );

        // A's consent form and cookie posted to B's consent form, naming B's own client (and
        // no resource: B has none), so that only the session and its CSRF token are wrong:
        // 403, no code.
        let mut allow: Vec<(String, String)> = signed_in
            .consent_form
            .iter()
            .filter(|(name, _)| name != "resource")
            .map(|(name, value)| match name.as_str() {
                "client_id" => (name.clone(), b_client.to_owned()),
                _ => (name.clone(), value.clone()),
            })
            .collect();
        allow.push(("decision".into(), "allow".into()));
        let page = self
            .page(
                Host::B,
                "/oauth/authorize",
                Some(&signed_in.cookie),
                Some(&allow),
            )
            .await?;
        let refused = page.status == StatusCode::FORBIDDEN && !page.html.contains("code=");
        self.pages_verdict(
            "POST /oauth/authorize (A's consent form and cookie on B)",
            v,
            &page,
            refused,
        );

        // A's user's email and password at B's login form: exactly the answer for an email
        // that exists nowhere (the email itself is echoed in the field, so it is set aside).
        let login = self
            .page(Host::B, &authorize_path(b_client, None), None, None)
            .await?;
        let cookie = login.cookie.clone();
        let fields = form_fields(&login.html);
        let attempt = |email: &str| {
            let mut fields = fields.clone();
            fields.push(("email".into(), email.to_owned()));
            fields.push(("password".into(), signed_in.password.clone()));
            fields
        };
        let with_a = self
            .page(
                Host::B,
                "/oauth/authorize/login",
                cookie.as_deref(),
                Some(&attempt(&signed_in.email)),
            )
            .await?;
        let nobody_email = format!("{}@probe.invalid", crate::operations::random_marker());
        let nobody = self
            .page(
                Host::B,
                "/oauth/authorize/login",
                cookie.as_deref(),
                Some(&attempt(&nobody_email)),
            )
            .await?;
        let same = with_a.status == nobody.status
            && with_a.html.replace(&signed_in.email, "") == nobody.html.replace(&nobody_email, "");
        let verdict = if with_a.html.contains(CONSENT_FORM) || with_a.status.is_redirection() {
            Verdict::Leak
        } else if with_a.status == StatusCode::UNAUTHORIZED && same {
            Verdict::Refused
        } else {
            Verdict::Unexpected
        };
        self.record(
            "POST /oauth/authorize/login (A's user's password on B)",
            Attack::BrowserPages,
            verdict,
            format!(
                "{}{}",
                with_a.status,
                if same {
                    ""
                } else {
                    ", not the unknown email's answer"
                }
            ),
        );

        // A fresh code of A's (a code lives 60 s) at B's token endpoint, with A's client and
        // with B's own, and the right verifier: B never issued it (`invalid_grant`) or does not
        // know the client (`invalid_client`). Then A's endpoint exchanges the same code: it was
        // live, and B's attempts neither took nor spent it.
        let code = match self.fresh_code(v).await {
            Ok(code) => code,
            Err(err) => {
                self.record(
                    "POST /oauth/token (A's live code on B)",
                    Attack::BrowserPages,
                    Verdict::Unexpected,
                    format!("not tried: {err}"),
                );
                return Ok(());
            }
        };
        let a_client = v.ids.get("oauth-clients").cloned().unwrap_or_default();
        let exchange = |host: Host, client: &str| {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("client_id", client),
                ("code_verifier", VERIFIER),
            ];
            let request = self.client.post(self.url(host, "/oauth/token")).form(&form);
            async move {
                let response = request.send().await?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let error = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                anyhow::Ok((status, error))
            }
        };
        let on_b = [
            ("A's client", exchange(Host::B, &a_client).await?),
            ("B's client", exchange(Host::B, b_client).await?),
        ];
        let (live_status, live_error) = exchange(Host::A, &a_client).await?;
        for (whose, (status, error)) in on_b {
            let verdict = match (status, error.as_str()) {
                (s, _) if s.is_success() => Verdict::Leak,
                // A refusal proves something only of a code A's endpoint then took.
                _ if live_status != StatusCode::OK => Verdict::Unexpected,
                (StatusCode::BAD_REQUEST, "invalid_grant")
                | (StatusCode::UNAUTHORIZED, "invalid_client") => Verdict::Refused,
                _ => Verdict::Unexpected,
            };
            self.record(
                &format!("POST /oauth/token (A's live code, {whose}, on B)"),
                Attack::BrowserPages,
                verdict,
                format!("{status} {error}; then on A: {live_status} {live_error}"),
            );
        }
        Ok(())
    }

    /// A new code of A's for A's client: A's signed-in browser asks again, and its remembered
    /// consent (or the consent form, allowed) returns to the client with the code.
    async fn fresh_code(&self, v: &Victim) -> anyhow::Result<String> {
        let client_id = v.ids.get("oauth-clients").cloned().unwrap_or_default();
        let path = authorize_path(&client_id, Some(&v.resource_identifier));
        let mut page = self
            .page(Host::A, &path, Some(&v.browser.cookie), None)
            .await?;
        if page.html.contains(CONSENT_FORM) {
            let mut allow = form_fields(&page.html);
            allow.push(("decision".into(), "allow".into()));
            page = self
                .page(
                    Host::A,
                    "/oauth/authorize",
                    Some(&v.browser.cookie),
                    Some(&allow),
                )
                .await?;
        }
        returned_code(&page.html)
            .ok_or_else(|| anyhow!("A's browser got no new code: {}", page.status))
    }

    /// A leak if the page holds anything of A's, or signs B's host in as A's user; else refused
    /// when `refused` holds, else unexpected.
    fn pages_verdict(&mut self, what: &str, victim: &Victim, page: &Page, refused: bool) {
        let shown = victim
            .secrets
            .iter()
            .find(|s| !s.is_empty() && page.html.contains(s.as_str()));
        let (verdict, detail) = match shown {
            Some(secret) => {
                let start: String = secret.chars().take(12).collect();
                (
                    Verdict::Leak,
                    format!("{}; the page holds A's {start}…", page.status),
                )
            }
            // A consent page on B for A's session: B took A's user as signed in.
            None if page.html.contains(CONSENT_FORM) => {
                (Verdict::Leak, format!("{}: a consent page", page.status))
            }
            None if refused => (Verdict::Refused, page.status.to_string()),
            None if page.html.contains("code=") || page.status.is_redirection() => {
                (Verdict::Leak, format!("{}: accepted", page.status))
            }
            None => (Verdict::Unexpected, page.status.to_string()),
        };
        self.record(what, Attack::BrowserPages, verdict, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_yields_what_a_browser_submits() {
        let html = r#"<form><input type="hidden" name="csrf" value="a&amp;b&#x2f;c">
<input type="checkbox" id="grant-1" name="grant" value="sessions:read" checked>
<input type="checkbox" id="grant-2" name="grant" value="sessions:write">
<input id="email" name="email" type="email" value=""></form>"#;
        assert_eq!(
            form_fields(html),
            vec![
                ("csrf".to_owned(), "a&b/c".to_owned()),
                ("grant".to_owned(), "sessions:read".to_owned()),
            ]
        );
        assert_eq!(unescape("&#39;&quot;&lt;&unknown;"), "'\"<&unknown;");
    }

    #[test]
    fn the_challenge_is_the_verifiers() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(VERIFIER.as_bytes());
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
            CHALLENGE
        );
    }
}
