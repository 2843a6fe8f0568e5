//! The answer for the client at its trusted redirect URI: a 303 from `GET /oauth/authorize`, or
//! after a form POST a page that navigates there (see [`super::authorize`]).

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::tenant::oauth::OAuthClient;

use super::pages::{error_page, page, page_headers, RedirectPage};

/// An answer for the client at its (trusted) redirect URI.
pub(super) struct Back {
    pub(super) tenant: Tenant,
    pub(super) client_name: String,
    pub(super) redirect_uri: String,
    pub(super) params: Vec<(&'static str, String)>,
}

impl Back {
    pub(super) fn error(
        valid_part: (&Tenant, &OAuthClient, &str, Option<&str>),
        error: &'static str,
        description: &str,
        issuer: &str,
    ) -> Back {
        let (tenant, client, redirect_uri, state) = valid_part;
        let mut params = vec![
            ("error", error.to_owned()),
            ("error_description", description.to_owned()),
        ];
        if let Some(state) = state {
            params.push(("state", state.to_owned()));
        }
        params.push(("iss", issuer.to_owned()));
        Back {
            tenant: tenant.clone(),
            client_name: crate::service::oauth::shown_client_name(client),
            redirect_uri: redirect_uri.to_owned(),
            params,
        }
    }

    pub(super) fn target(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.params {
            query.append_pair(name, value);
        }
        let separator = if self.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}{}", self.redirect_uri, query.finish())
    }

    pub(super) fn host(&self) -> String {
        url_host(&self.redirect_uri)
    }

    /// A 303 to the client (from `GET /oauth/authorize` only: no form is involved).
    pub(super) fn redirect(&self) -> Response {
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(location) = HeaderValue::from_str(&self.target()) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        page_headers(response.headers_mut());
        response
    }

    /// The page that returns to the client after a form POST (see the module doc).
    pub(super) fn page(&self, message: &str) -> Response {
        let target = self.target();
        page(
            StatusCode::OK,
            RedirectPage {
                tenant: self.tenant.slug.as_str(),
                client_name: &self.client_name,
                redirect_host: &self.host(),
                target: &target,
                message,
            }
            .render(),
        )
    }
}

/// The host (and port, when not the default) of a URL, as shown plainly on the pages.
pub(super) fn url_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(port) => format!("{h}:{port}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_default()
}

/// Why an authorization request is refused: on a page (the redirect URI is not trusted), or back
/// to the client.
pub(super) enum Refusal {
    Page(StatusCode, String, &'static str),
    Client(Box<Back>),
}

/// The answer to a refusal: the error page, or back to the client (a page after a form POST).
pub(super) fn refusal_page(refusal: Refusal, after_post: bool) -> Response {
    match refusal {
        Refusal::Page(status, slug, message) => error_page(status, &slug, message),
        Refusal::Client(back) if after_post => back.page("The request could not be completed."),
        Refusal::Client(back) => back.redirect(),
    }
}

/// The page of a store failure.
pub(super) fn unavailable(tenant: &Tenant) -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        tenant.slug.as_str(),
        "The service is temporarily unavailable. Try again shortly.",
    )
}
