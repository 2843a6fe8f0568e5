//! The authorization endpoint (OAuth 2.1 §4.1.1) with its login and consent pages, served on the
//! tenant's subdomain.
//!
//! # The request
//! `GET /oauth/authorize`: `response_type=code` only; PKCE `S256` required (missing or `plain`
//! refused); `redirect_uri` required and compared exactly with the client's registered ones
//! (loopback: any port, [`crate::service::oauth::redirect_uri`]); `state` echoed; `iss` in every
//! authorization response (RFC 9207). Until the client and its redirect URI are known good,
//! every refusal is an error page, never a redirect. A parameter given twice is refused.
//!
//! # The pages
//! Server-rendered (askama: the templates are compiled into the binary and escape by default),
//! without any script, under `default-src 'none'; style-src 'self'; form-action 'self';
//! frame-ancestors 'none'; base-uri 'none'`. The authorization request travels in hidden fields
//! and is checked again, whole, on every POST. A browser session is a `__Host-` cookie (Secure,
//! HttpOnly, SameSite=Lax, Path=/); signed out, nothing is stored ([`super::browser`]); every
//! form carries a CSRF token, an HMAC of the cookie's value under a server key, compared in
//! constant time. A login stores a new session (new cookie value), so a planted session id is
//! worth nothing after it. A remembered consent that covers the whole request skips the consent
//! page (the user still signs in).
//!
//! # Leaving for the client
//! Chrome applies `form-action` to the redirects that follow a form POST, so answering the
//! consent POST with a cross-origin 302 would be blocked under `form-action 'self'`. The consent
//! POST (and any refusal after it) therefore answers 200 with a small page that navigates by
//! `<meta http-equiv="refresh">` and a plain link; the CSP stays `form-action 'self'` everywhere.
//! Only `GET /oauth/authorize` itself redirects (303) to the client: with an error, or with the
//! code of a remembered consent.

use std::net::{IpAddr, SocketAddr};

use askama::Template;

use super::back::{refusal_page, unavailable, Back, Refusal};
use super::browser::{
    cookie_hash, cookie_value, csrf_matches, csrf_token, find_session, new_cookie_value,
    set_cookie, SESSION_SECS,
};
use super::pages::{
    error_page, html, identity_items, items, page, page_tenant, stylesheet, ConsentPage, LoginPage,
};
use super::params::{Params, MAX_INPUT};
use super::prompt::Prompt;
use crate::service::oauth::oidc::{Identity, MAX_NONCE_LEN};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bulkhead_core::{OAuthClientId, ScopeSet, UserId};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::tenant::oauth::{self as store_oauth, OAuthClient};
use bulkhead_store::tenant::oauth_resources::{self, OAuthResource};
use bulkhead_store::{Access, StoreError};
use serde_json::json;

use crate::http::apidoc::OpDoc;
use crate::http::authz::{RouteAccess, RouteTable};
use crate::http::error::ApiError;
use crate::http::routes::kit::login::{audit_login, check_password, PasswordLogin};
use crate::http::state::AppState;
use crate::service::oauth::authorization_code::{self, ConsentError, Consented, ConsentedOidc};
use crate::service::oauth::{is_malformed_resource, is_own_api, shown_client_name};
use crate::service::oauth::{metadata_document, redirect_uri, shown_resource_name};

/// The routes: the pages authenticate the user themselves (no credential in front).
pub fn routes() -> RouteTable {
    const SELF: RouteAccess = RouteAccess::SelfAuthenticating;
    RouteTable::tagged("oauth")
        .get("/oauth/authorize", SELF, authorize)
        .doc(
            html(200, "The login or the consent page")
                .summary(
                    "OAuth 2.1 authorization endpoint (authorization code with PKCE S256), \
                    on the tenant's subdomain.",
                )
                .answer(
                    303,
                    "Back to the client's redirect URI with an error, `state` and `iss`",
                )
                .with_html(
                    400,
                    "An error page: the client or redirect URI cannot be trusted",
                ),
        )
        .post("/oauth/authorize", SELF, consent)
        .doc(
            html(
                200,
                "A page that returns to the client with a code (or an error)",
            )
            .summary("The consent form's answer.")
            .with_html(400, "An error page")
            .with_html(
                403,
                "An error page: the session or CSRF token is missing or wrong",
            ),
        )
        .post("/oauth/authorize/login", SELF, login)
        .doc(
            html(
                200,
                "Signed in: the consent page, under a new session cookie",
            )
            .summary("The login form of the authorization endpoint.")
            .with_html(401, "The login page again: wrong email or password")
            .with_html(
                403,
                "An error page: the session or CSRF token is missing or wrong",
            )
            .with_html(429, "The login page again: too many failed logins"),
        )
        .get("/oauth/style.css", RouteAccess::Public, stylesheet)
        .doc(
            OpDoc::inline(
                200,
                "The pages' stylesheet",
                "text/css",
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .into(),
            )
            .summary("The stylesheet of the login and consent pages."),
        )
}

/// An authorization request whose client and redirect URI are known good.
struct Valid {
    tenant: Tenant,
    client: OAuthClient,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    requested: ScopeSet,
    /// The protected resource asked for (RFC 8707); `None`: Bulkhead's own API.
    resource: Option<OAuthResource>,
    /// `prompt` and `max_age` ([`super::prompt`]).
    prompt: Prompt,
    /// The OpenID Connect identity scopes asked for, and the `nonce`.
    identity: Identity,
    nonce: Option<String>,
}

impl Valid {
    /// The resource's identifier as stored with codes and grants (`""`: Bulkhead's own API).
    fn resource_identifier(&self) -> &str {
        self.resource
            .as_ref()
            .map_or(authorization_code::OWN_API, |r| r.identifier.as_str())
    }

    /// An error for the client at its redirect URI.
    fn back(&self, state: &AppState, error: &'static str, description: &str) -> Back {
        let valid_part = (
            &self.tenant,
            &self.client,
            self.redirect_uri.as_str(),
            self.state.as_deref(),
        );
        let issuer = super::tenant_issuer(state, &self.tenant);
        Back::error(valid_part, error, description, &issuer)
    }
}

/// A signed-in browser's user and when they signed in.
type SignedIn = (UserId, chrono::DateTime<chrono::Utc>);

/// Checks the whole authorization request: the client and redirect URI first (refusals on a
/// page), then everything else (refusals back to the client).
async fn check_request(
    state: &AppState,
    tenant: &Tenant,
    params: &Params,
    client_ip: Option<IpAddr>,
) -> Result<Valid, Refusal> {
    let slug = tenant.slug.as_str().to_owned();
    let unknown_client = || {
        Refusal::Page(
            StatusCode::BAD_REQUEST,
            slug.clone(),
            "The application that sent you here is not registered with this organisation.",
        )
    };
    // A URL names a client ID metadata document (`metadata_client`); else an `oac_…` id.
    let document = match params.get("client_id") {
        Some(url) if metadata_document::is_url(url) => Some(
            super::metadata_client::resolve(state, tenant, url, client_ip)
                .await
                .map_err(|(status, message)| Refusal::Page(status, slug.clone(), message))?,
        ),
        _ => None,
    };
    let client_id = match &document {
        Some(client) => client.id,
        None => params
            .get("client_id")
            .and_then(|id| OAuthClientId::parse(id).ok())
            .ok_or_else(unknown_client)?,
    };
    let ctx = crate::http::resolve::oauth_context(tenant.id);
    // `resource` equal to an issuer names Bulkhead's own API (its metadata's `resource`).
    let deployment = &state.config().tokens.issuer;
    let tenant_issuer = super::tenant_issuer(state, tenant);
    let own_api = |resource: &str| is_own_api(deployment, &tenant_issuer, resource);
    let looked_up = async {
        let mut tx = state.store().begin(&ctx, Access::ReadOnly).await?;
        let client = match &document {
            Some(client) => client.clone(),
            None => store_oauth::get_client(&mut tx, client_id).await?,
        };
        // The tenant's protected resources (RFC 8707): whether it has any, and the one named.
        let has_resources = oauth_resources::any(&mut tx).await?;
        let named = match params.get("resource") {
            Some(identifier) if !own_api(identifier) && !is_malformed_resource(identifier) => {
                oauth_resources::by_identifier(&mut tx, identifier).await?
            }
            _ => None,
        };
        tx.commit().await?;
        Ok::<_, StoreError>((client, has_resources, named))
    }
    .await;
    // Another tenant's client is exactly an unknown one; so is an expired dynamic client, and a
    // document's client named by its row id (only its URL names it: the setting is checked).
    let cutoff = store_oauth::idle_cutoff(state.clock().now());
    let by_row_id = |c: &OAuthClient| document.is_none() && c.metadata_url.is_some();
    let (client, has_resources, resource) = match looked_up {
        Ok((c, _, _)) if store_oauth::is_expired(&c, cutoff) || by_row_id(&c) => {
            return Err(unknown_client())
        }
        Ok(found) => found,
        Err(StoreError::NotFound) => return Err(unknown_client()),
        Err(_) => {
            return Err(Refusal::Page(
                StatusCode::SERVICE_UNAVAILABLE,
                slug,
                "The service is temporarily unavailable. Try again shortly.",
            ))
        }
    };
    let redirect_uri = params
        .get("redirect_uri")
        .and_then(|presented| {
            redirect_uri::matching(&client.redirect_uris, presented).map(|_| presented.to_owned())
        })
        .ok_or(Refusal::Page(
            StatusCode::BAD_REQUEST,
            slug,
            "The application asked to return to an address it has not registered.",
        ))?;
    let state_param = params.get("state").map(str::to_owned);
    let back = |error: &'static str, description: &str| {
        Refusal::Client(Box::new(Back::error(
            (tenant, &client, &redirect_uri, state_param.as_deref()),
            error,
            description,
            &tenant_issuer,
        )))
    };
    if params.get("response_type") != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    let Some(code_challenge) = params.get("code_challenge") else {
        return Err(back(
            "invalid_request",
            "PKCE is required: send code_challenge with S256",
        ));
    };
    if params.get("code_challenge_method") != Some("S256") {
        return Err(back(
            "invalid_request",
            "code_challenge_method must be S256",
        ));
    }
    if !bulkhead_auth::code::is_s256_challenge(code_challenge) {
        return Err(back(
            "invalid_request",
            "code_challenge is not an S256 challenge",
        ));
    }
    let prompt = Prompt::parse(params.get("prompt"), params.get("max_age"))
        .map_err(|description| back("invalid_request", description))?;
    let nonce = params.get("nonce");
    if nonce.is_some_and(|n| n.len() > MAX_NONCE_LEN || n.chars().any(char::is_control)) {
        return Err(back("invalid_request", "nonce is too long or malformed"));
    }
    // A tenant with protected resources issues tokens for one of them only; one without names
    // none. The scopes are then what the client and the resource both accept.
    let mut allowed = client.scope_set();
    match (&resource, params.get("resource"), has_resources) {
        (Some(resource), _, _) => allowed = allowed.intersection(&resource.scope_set()),
        (None, Some(asked), _) if is_malformed_resource(asked) => {
            return Err(back(
                "invalid_target",
                "resource is not a valid resource identifier",
            ))
        }
        // Bulkhead's own API, allowed whether or not the tenant has resources.
        (None, Some(asked), _) if own_api(asked) => {}
        (None, Some(_), _) => {
            return Err(back(
                "invalid_target",
                "resource is not a protected resource of this organisation",
            ))
        }
        (None, None, true) => {
            return Err(back(
                "invalid_target",
                "resource is required: name the protected resource the token is for",
            ))
        }
        (None, None, false) => {}
    }
    // The identity scopes (OpenID Connect) are not permissions: any client may ask for them.
    let scope_text = params.get("scope");
    let names = scope_text.unwrap_or_default().split(' ');
    let identity = Identity::from_names(names.clone());
    let permissions: Vec<&str> = names.filter(|n| !Identity::is_identity_scope(n)).collect();
    let requested = match scope_text {
        None => allowed,
        Some(_) => match crate::service::tokens::parse_scope_param(&permissions.join(" ")) {
            Ok(requested) if allowed.is_superset(&requested) => requested,
            _ => {
                return Err(back(
                    "invalid_scope",
                    "a requested scope is unknown or not allowed for this client",
                ))
            }
        },
    };
    Ok(Valid {
        tenant: tenant.clone(),
        code_challenge: code_challenge.to_owned(),
        state: state_param.clone(),
        redirect_uri: redirect_uri.clone(),
        requested,
        client,
        resource,
        prompt,
        identity,
        nonce: nonce.map(str::to_owned),
    })
}

// ------------------------------------------------------------------------------------------------
// Handlers.

async fn authorize(State(state): State<AppState>, request: Request) -> Response {
    let headers = request.headers().clone();
    let tenant = match page_tenant(&state, &headers).await {
        Ok(tenant) => tenant,
        Err(page) => return page,
    };
    let query = request
        .uri()
        .query()
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let params = match Params::parse(&query, None) {
        Ok(params) => params,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, tenant.slug.as_str(), message),
    };
    let ip = super::metadata_client::source(&state, request.extensions(), &headers);
    let valid = match check_request(&state, &tenant, &params, ip).await {
        Ok(valid) => valid,
        Err(refusal) => return refusal_page(refusal, false),
    };
    // Signed out is stateless: a cookie naming no live session is a signed-out browser, and a
    // browser without a cookie gets a fresh value that is stored nowhere (see `browser`).
    let login_required = || {
        let description = "the user must sign in";
        valid.back(&state, "login_required", description).redirect()
    };
    let Some(cookie) = cookie_value(&headers) else {
        if valid.prompt.none {
            return login_required();
        }
        let cookie = new_cookie_value();
        let mut response = login_page(&state, &valid, &params, &cookie, "", None, StatusCode::OK);
        response
            .headers_mut()
            .insert(header::SET_COOKIE, set_cookie(&cookie));
        return response;
    };
    // `prompt=login` or a session older than `max_age`: the login page again, whose login
    // replaces the session (see `prompt`).
    let now = state.clock().now();
    match find_session(&state, &tenant, &cookie).await {
        Ok(Some(session)) => match session.user_id {
            Some(user) if !valid.prompt.needs_login(session.created_at, now) => {
                let user = (user, session.created_at);
                signed_in(&state, &valid, &params, &cookie, user, false).await
            }
            _ if valid.prompt.none => login_required(),
            _ => login_page(&state, &valid, &params, &cookie, "", None, StatusCode::OK),
        },
        Ok(None) if valid.prompt.none => login_required(),
        Ok(None) => login_page(&state, &valid, &params, &cookie, "", None, StatusCode::OK),
        Err(_) => unavailable(&tenant),
    }
}

fn login_page(
    state: &AppState,
    valid: &Valid,
    params: &Params,
    cookie: &str,
    email: &str,
    problem: Option<&str>,
    status: StatusCode,
) -> Response {
    let csrf = csrf_token(state, &valid.tenant, cookie);
    page(
        status,
        LoginPage {
            tenant: valid.tenant.slug.as_str(),
            client_name: shown_client_name(&valid.client),
            csrf: &csrf,
            hidden: params.request_fields(),
            email,
            problem,
        }
        .render(),
    )
}

async fn consent_page(
    state: &AppState,
    valid: &Valid,
    params: &Params,
    cookie: &str,
    user: UserId,
) -> Response {
    let ctx = crate::http::resolve::login_context(&valid.tenant);
    let looked_up = async {
        let mut tx = state.store().begin(&ctx, Access::ReadOnly).await?;
        let grantable = authorization_code::user_grantable(&mut tx, user).await?;
        let record = bulkhead_store::tenant::users::get(&mut tx, user).await?;
        tx.commit().await?;
        Ok::<_, StoreError>((grantable, record.email))
    }
    .await;
    let (grantable, email) = match looked_up {
        Ok((Some(grantable), email)) => (grantable, email),
        // Disabled (or gone) since the login: sign in again.
        Ok((None, _)) | Err(StoreError::NotFound) => {
            return login_page(state, valid, params, cookie, "", None, StatusCode::OK)
        }
        Err(_) => return unavailable(&valid.tenant),
    };
    let offered = valid.requested.intersection(&grantable);
    let withheld: ScopeSet = ScopeSet::parse_all(
        valid
            .requested
            .to_strings()
            .into_iter()
            .filter(|s| !offered.to_strings().contains(s)),
    )
    .unwrap_or_default();
    let csrf = csrf_token(state, &valid.tenant, cookie);
    let back = valid.back(state, "access_denied", "");
    page(
        StatusCode::OK,
        ConsentPage {
            tenant: valid.tenant.slug.as_str(),
            client_name: shown_client_name(&valid.client),
            client_url_host: valid
                .client
                .metadata_url
                .as_deref()
                .map(super::back::url_host),
            user_email: &email,
            redirect_host: &back.host(),
            resource: valid
                .resource
                .as_ref()
                .map(|r| (shown_resource_name(r), r.identifier.as_str())),
            csrf: &csrf,
            hidden: params.request_fields(),
            offered: identity_items(valid.identity.names())
                .into_iter()
                .chain(items(&offered))
                .collect(),
            withheld: items(&withheld),
        }
        .render(),
    )
}

/// Reads a form POST of the pages: the tenant, the body (`application/x-www-form-urlencoded`),
/// the request checked again, and the session cookie with its CSRF token.
async fn form_post(
    state: &AppState,
    request: Request,
    repeatable: Option<&str>,
) -> Result<(Tenant, Params, Valid, String, Option<SignedIn>, HeaderMap), Response> {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let tenant = page_tenant(state, &headers).await?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let body = axum::body::to_bytes(body, MAX_INPUT).await;
    let (true, Ok(body)) = (is_form, body) else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            tenant.slug.as_str(),
            "The form could not be read.",
        ));
    };
    let params = Params::parse(&body, repeatable)
        .map_err(|message| error_page(StatusCode::BAD_REQUEST, tenant.slug.as_str(), message))?;
    let ip = super::metadata_client::source(state, &parts.extensions, &headers);
    let valid = check_request(state, &tenant, &params, ip)
        .await
        .map_err(|refusal| refusal_page(refusal, true))?;
    let expired = || {
        error_page(
            StatusCode::FORBIDDEN,
            tenant.slug.as_str(),
            "This form has expired or did not come from this site.",
        )
    };
    let Some(cookie) = cookie_value(&headers) else {
        return Err(expired());
    };
    if !csrf_matches(state, &tenant, &cookie, params.get("csrf")) {
        return Err(expired());
    }
    // No live session: signed out (nothing is stored for that state).
    let user = find_session(state, &tenant, &cookie)
        .await
        .map_err(|_| unavailable(&tenant))?
        .and_then(|session| session.user_id.map(|user| (user, session.created_at)));
    Ok((tenant, params, valid, cookie, user, headers))
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (tenant, params, valid, cookie, _user, headers) =
        match form_post(&state, request, None).await {
            Ok(read) => read,
            Err(response) => return response,
        };
    let email = params.get("email").unwrap_or_default().to_owned();
    let password = params.get("password").unwrap_or_default().to_owned();
    let client_ip = super::request_ip(&state, peer, &headers);
    let checked = check_password(&state, &tenant, &email, password, client_ip).await;
    let PasswordLogin { user, mut tx, .. } = match checked {
        Ok(checked) => checked,
        Err(ApiError::InvalidLogin) => {
            return login_page(
                &state,
                &valid,
                &params,
                &cookie,
                &email,
                Some("Wrong email or password."),
                StatusCode::UNAUTHORIZED,
            )
        }
        Err(ApiError::LoginThrottled(wait)) => {
            let mut response = login_page(
                &state,
                &valid,
                &params,
                &cookie,
                &email,
                Some("Too many failed attempts. Wait a moment, then try again."),
                StatusCode::TOO_MANY_REQUESTS,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return response;
        }
        Err(_) => return unavailable(&tenant),
    };
    // A new session (a new cookie value) for the signed-in user; the old one is gone, so a
    // session id planted before the login is worth nothing after it.
    let now = state.clock().now();
    let fresh = new_cookie_value();
    let replaced = async {
        if let Some(old) =
            store_oauth::find_browser_session(&mut tx, &cookie_hash(&cookie), now).await?
        {
            store_oauth::delete_browser_session(&mut tx, old.id, now, 64).await?;
        }
        store_oauth::create_browser_session(
            &mut tx,
            &cookie_hash(&fresh),
            Some(user.id),
            now,
            now + chrono::Duration::seconds(SESSION_SECS),
        )
        .await?;
        audit::record(
            &mut tx,
            "auth.login",
            Some(&user.id.to_string()),
            Outcome::Success,
            json!({ "via": "oauth_authorize", "client_id": valid.client.id }),
        )
        .await?;
        tx.commit().await
    }
    .await;
    if replaced.is_err() {
        return unavailable(&tenant);
    }
    audit_login(&tenant, "success", "ok", Some(user.id));
    // The consent page at once (or the code, for a remembered consent), under the new session
    // (its CSRF token is the new cookie's).
    let mut response = signed_in(&state, &valid, &params, &fresh, (user.id, now), true).await;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&fresh));
    response
}

async fn consent(State(state): State<AppState>, request: Request) -> Response {
    let (tenant, params, valid, cookie, user, _headers) =
        match form_post(&state, request, Some("grant")).await {
            Ok(read) => read,
            Err(response) => return response,
        };
    let Some((user, auth_time)) = user else {
        // Not signed in (the session is the login form's): show the login page.
        return login_page(&state, &valid, &params, &cookie, "", None, StatusCode::OK);
    };
    let back = |error: &'static str, description: &str| valid.back(&state, error, description);
    if params.get("decision") != Some("allow") {
        let ctx = crate::http::resolve::login_context(&tenant);
        let recorded = async {
            let mut tx = state.store().begin(&ctx, Access::ReadWrite).await?;
            audit::record(
                &mut tx,
                "oauth.authorize",
                Some(&valid.client.id.to_string()),
                Outcome::Failure,
                json!({ "reason": "user_denied", "user_id": user }),
            )
            .await?;
            tx.commit().await
        }
        .await;
        if recorded.is_err() {
            return unavailable(&tenant);
        }
        return back("access_denied", "the user denied the request").page("You denied access.");
    }
    let ticked_identity = Identity::from_names(&params.repeated);
    let ticked = params
        .repeated
        .iter()
        .filter(|n| !Identity::is_identity_scope(n));
    let Ok(ticked) = ScopeSet::parse_all(ticked) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            tenant.slug.as_str(),
            "The form names an unknown permission.",
        );
    };
    let identity = valid.identity.intersection(&ticked_identity);
    let consented = Consented {
        tenant: tenant.id,
        client: &valid.client,
        redirect_uri: &valid.redirect_uri,
        code_challenge: &valid.code_challenge,
        user,
        ticked: &ticked,
        requested: &valid.requested,
        resource: valid.resource_identifier(),
        remembered: None,
        oidc: ConsentedOidc {
            identity: &identity,
            nonce: valid.nonce.as_deref(),
            auth_time,
        },
    };
    let issued = super::metadata_client::issue_code(&state, &consented).await;
    code_answer(&state, &valid, issued, true)
}

/// A signed-in user's answer: a remembered consent that covers the whole request issues the code
/// at once (the consent page is skipped; the user did sign in); otherwise the consent page.
async fn signed_in(
    state: &AppState,
    valid: &Valid,
    params: &Params,
    cookie: &str,
    (user, auth_time): SignedIn,
    after_post: bool,
) -> Response {
    // RFC 8252 §8.6: a remembered consent is used only when the client's identity is assured,
    // by its secret or by an https redirect URI; a public client on a loopback redirect (any
    // local program can listen there) always gets the consent page.
    let assured = valid.client.token_endpoint_auth_method.is_confidential()
        || valid.redirect_uri.starts_with("https://");
    // `prompt=consent` shows the page whatever is remembered; `prompt=none` shows none.
    let consent_page = move || async move {
        if valid.prompt.none {
            let refused = valid.back(state, "consent_required", "the user must consent");
            return if after_post {
                refused.page("Consent is needed.")
            } else {
                refused.redirect()
            };
        }
        consent_page(state, valid, params, cookie, user).await
    };
    if !assured || valid.prompt.consent {
        return consent_page().await;
    }
    let store = state.store();
    let tenant = valid.tenant.id;
    let resource = valid.resource_identifier();
    let asked = (&valid.requested, &valid.identity);
    match authorization_code::covering_grant(store, (tenant, user), &valid.client, resource, asked)
        .await
    {
        Ok(Some(grant)) => {
            let consented = Consented {
                tenant,
                client: &valid.client,
                redirect_uri: &valid.redirect_uri,
                code_challenge: &valid.code_challenge,
                user,
                ticked: &valid.requested,
                requested: &valid.requested,
                resource: valid.resource_identifier(),
                remembered: Some(&grant),
                oidc: ConsentedOidc {
                    identity: &valid.identity,
                    nonce: valid.nonce.as_deref(),
                    auth_time,
                },
            };
            let issued = super::metadata_client::issue_code(state, &consented).await;
            code_answer(state, valid, issued, after_post)
        }
        Ok(None) => consent_page().await,
        Err(_) => unavailable(&valid.tenant),
    }
}

/// The client's answer to an issued (or refused) code: after a form POST a page that navigates
/// back, after `GET /oauth/authorize` a 303 (see the module doc).
fn code_answer(
    state: &AppState,
    valid: &Valid,
    issued: Result<(bulkhead_auth::AuthorizationCode, ScopeSet), ConsentError>,
    after_post: bool,
) -> Response {
    let (answer, message) = match issued {
        Ok((code, _granted)) => {
            let mut answer = Back {
                tenant: valid.tenant.clone(),
                client_name: shown_client_name(&valid.client),
                redirect_uri: valid.redirect_uri.clone(),
                params: vec![("code", code.expose_secret().to_owned())],
            };
            if let Some(state_param) = &valid.state {
                answer.params.push(("state", state_param.clone()));
            }
            let issuer = super::tenant_issuer(state, &valid.tenant);
            answer.params.push(("iss", issuer));
            (answer, "Access allowed.")
        }
        Err(ConsentError::NothingGranted) => (
            valid.back(
                state,
                "access_denied",
                "nothing requested may be granted by this user",
            ),
            "Nothing was granted.",
        ),
        Err(ConsentError::ClientLimit) => {
            let text = "This organisation has as many applications as it may have.";
            return error_page(StatusCode::CONFLICT, valid.tenant.slug.as_str(), text);
        }
        Err(ConsentError::Store(_)) => return unavailable(&valid.tenant),
    };
    if after_post {
        answer.page(message)
    } else {
        answer.redirect()
    }
}
