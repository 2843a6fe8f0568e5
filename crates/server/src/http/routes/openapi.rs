//! The OpenAPI 3.1 document of the whole HTTP API, served at `GET /openapi.json`.
//!
//! The operations come from the route table: each route declares its [`OpDoc`] beside its
//! access and confinement (its name, summary, parameters, body, its success and its specific
//! refusals), and the table gives its method, path, tag and security requirement (the bearer
//! credential with the scope its [`RouteAccess`] requires). This module builds one operation per
//! route from those, registers the schemas they name, and adds, in one place, what every
//! operation of a kind shares, mirroring the one error mapping in [`crate::http::error`]:
//! - every error response (4xx/5xx) written without a body gets the body the server really
//!   sends: RFC 9457 `application/problem+json` ([`Problem`]), or the RFC 6749 §5.2 JSON error
//!   ([`OAuthErrorBody`]) on `/oauth/*`;
//! - every `/v1` operation behind tenant resolution gets 400 (malformed request), 401 (no or a
//!   bad credential), 403 (missing scope, suspended tenant), 404 (unknown tenant subdomain),
//!   429 (rate limited) and 503 (credential checks unavailable);
//! - every operation with a JSON body gets 413 and 415.
//!
//! Types built only for this document (the OAuth form bodies the handlers parse by hand, and the
//! answers the OAuth and auth handlers still assemble with `json!`) live here; they are checked
//! against the server's real answers by schemathesis in CI (`.ci/schemathesis.sh`).

use std::sync::OnceLock;

use axum::http::Method;
use axum::response::Response;
use bulkhead_store::tenant::tokens::AuthSession;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, Response as OaResponse, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::http::apidoc::OpDoc;
use crate::http::authz::{RouteAccess, RouteSpec, RouteTable};
use crate::http::error::Problem;

pub use crate::http::apidoc::{BEARER, CLIENT_BASIC};

/// The route of this document: public, like `/healthz`.
pub fn routes() -> RouteTable {
    let document = ObjectBuilder::new().schema_type(Type::Object).build();
    RouteTable::tagged("meta")
        .get("/openapi.json", RouteAccess::Public, serve)
        .doc(
            OpDoc::inline(
                200,
                "The OpenAPI 3.1 document of this API",
                "application/json",
                document.into(),
            )
            .summary(
                "`GET /openapi.json`: this document (no credential needed, like \
                `/healthz`).",
            ),
        )
}

/// `GET /openapi.json`: this document, built once.
pub async fn serve() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    crate::http::apidoc::serve_document(&DOCUMENT, openapi)
}

/// The document: the info, tags and shared schemas of [`ApiDoc`], one operation for every route
/// of the [route table](super::route_table) from the [`OpDoc`] declared beside it, then what
/// operations share ([`Shared`]) added over the whole.
///
/// # Panics
/// If a route is not documented (a programming error every test run catches).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    for (spec, op) in super::route_table().docs() {
        let op = op.unwrap_or_else(|| panic!("undocumented route: {} {}", spec.method, spec.path));
        components.schemas.extend(op.schemas.iter().cloned());
        doc.paths.add_path_operation(
            spec.path,
            vec![http_method(&spec.method)],
            operation(spec, op),
        );
    }
    Shared.modify(&mut doc);
    doc
}

/// The operation of a documented route: its [`OpDoc`], and the security requirement its access
/// declares (the bearer credential with the scope it requires) unless the doc names its own.
fn operation(spec: &RouteSpec, op: &OpDoc) -> Operation {
    let bearer = |scopes: &[&str]| vec![SecurityRequirement::new(BEARER, scopes.iter().copied())];
    let security = op.security.clone().or_else(|| match spec.access {
        RouteAccess::Requires(scope) => Some(bearer(&[scope.as_str()])),
        RouteAccess::Authenticated => Some(bearer(&[])),
        RouteAccess::Public | RouteAccess::SelfAuthenticating => None,
    });
    op.operation(security)
}

/// The OpenAPI method of an HTTP method.
pub(crate) fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::GET => HttpMethod::Get,
        Method::PUT => HttpMethod::Put,
        Method::POST => HttpMethod::Post,
        Method::DELETE => HttpMethod::Delete,
        Method::PATCH => HttpMethod::Patch,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        _ => HttpMethod::Trace,
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bulkhead",
        description = "The security backbone of a multi-tenant platform: tenant-scoped sessions, API keys, \
            OAuth 2.0 tokens, webhooks and a verifiable audit log. Every `/v1` request carries \
            `Authorization: Bearer <API key or access token>` and may come through the tenant's \
            subdomain; another tenant's resource answers exactly like a missing one (404). Errors are \
            RFC 9457 `application/problem+json`, except on `/oauth/*` (RFC 6749 §5.2). Every `/v1` \
            response carries `RateLimit-Policy` and `RateLimit` headers; 429 answers carry `Retry-After`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem, OAuthErrorBody)),
    tags(
        (name = "meta", description = "Health and this document"),
        (name = "oauth", description = "OAuth 2.0 token, revocation and introspection endpoints, and the JWKS"),
        (name = "auth", description = "Human login, auth sessions and the token policy"),
        (name = "sessions", description = "Agent sessions"),
        (name = "api-keys", description = "The API-key lifecycle and the key policy"),
        (name = "webhooks", description = "Webhook endpoints, messages and the attempt log"),
        (name = "audit", description = "The tenant's verifiable audit log"),
        (name = "principals", description = "The tenant's users and agents"),
        (name = "roles", description = "Built-in and custom roles, and who holds them"),
        (name = "tools", description = "The tenant's tool registry, screening policy and tool calls"),
        (name = "usage", description = "The tenant's quotas: usage and limit per kind"),
    ),
)]
struct ApiDoc;

/// Adds what operations share (see the module doc) and the security schemes.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`bk_live_…`/`bk_test_…`) or an access token (EdDSA JWT from \
                         `/oauth/token` or `/v1/auth/login`). The roles of a requirement name the \
                         scope the operation needs.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            CLIENT_BASIC,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "OAuth client authentication (RFC 6749 §2.3.1): `client_id` is the API key's \
                         `key_…` id, the password is the key. The key may instead be sent as \
                         `client_secret` in the form body, never both.",
                    ))
                    .build(),
            ),
        );

        open_flattened_schemas(components);

        for (path, item) in doc.paths.paths.iter_mut() {
            // OpenID Connect's userinfo is behind tenant resolution, with problem+json errors.
            let userinfo = path == crate::http::authz::USERINFO_PATH;
            let oauth = path.starts_with("/oauth/") && !userinfo;
            let tenant_api = (path.starts_with("/v1/") && path != "/v1/auth/login") || userinfo;
            let ops = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                let responses = &mut op.responses.responses;
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|body| body.content.contains_key("application/json"));
                let form_body = op.request_body.as_ref().is_some_and(|body| {
                    body.content
                        .contains_key("application/x-www-form-urlencoded")
                });
                let mut shared: Vec<(&str, &str)> = Vec::new();
                if tenant_api {
                    shared.extend([
                        ("400", "Malformed request: syntax, a malformed id, an unknown query parameter"),
                        ("401", "No credential, or one that is malformed, unknown, expired, revoked or for another tenant"),
                        ("403", "The credential lacks the scope, or the tenant is suspended"),
                        ("404", "No such resource (another tenant's answers the same), or the subdomain names no tenant"),
                        ("429", "Rate limited (the level is named); see `Retry-After`"),
                        ("503", "Credential checks are temporarily unavailable; retry later"),
                    ]);
                }
                if json_body {
                    shared.extend([
                        ("400", "The body is not valid JSON"),
                        ("413", "The body is larger than the route accepts (1 MiB; a tool call 256 KiB)"),
                        ("415", "The body is not `application/json`"),
                        ("422", "The body is well-formed but invalid"),
                    ]);
                }
                if form_body {
                    shared.extend([
                        ("400", "A parameter is missing, repeated or malformed (`invalid_request`), or the grant or scope is refused"),
                        ("401", "Client authentication failed (`invalid_client`)"),
                        ("413", "The body is larger than the route accepts (1 MiB; a tool call 256 KiB)"),
                        ("429", "Rate limited; see `Retry-After`"),
                        ("503", "Temporarily unavailable (`temporarily_unavailable`)"),
                    ]);
                }
                for (status, description) in shared {
                    responses.entry(status.to_owned()).or_insert_with(|| {
                        RefOr::T(ResponseBuilder::new().description(description).build())
                    });
                }
                for (status, response) in responses.iter_mut() {
                    let error = status.starts_with('4') || status.starts_with('5');
                    if let (true, RefOr::T(response)) = (error, response) {
                        fill_error_body(response, oauth);
                    }
                }
            }
        }
    }
}

/// A `#[serde(flatten)]` field becomes `allOf: [<the flattened type>, <the other fields>]`; a
/// flattened type that refuses unknown fields when deserialized (`deny_unknown_fields`, hence
/// `additionalProperties: false`) would then refuse the other fields, and no real answer would
/// match. Such schemas are opened up: they describe answers here, which the strict
/// deserialization never reads.
pub(crate) fn open_flattened_schemas(components: &mut utoipa::openapi::Components) {
    let flattened: Vec<String> = components
        .schemas
        .values()
        .filter_map(|schema| match schema {
            RefOr::T(Schema::AllOf(all_of)) => Some(all_of.items.iter()),
            _ => None,
        })
        .flatten()
        .filter_map(|item| match item {
            RefOr::Ref(reference) => reference
                .ref_location
                .strip_prefix("#/components/schemas/")
                .map(str::to_owned),
            RefOr::T(_) => None,
        })
        .collect();
    for name in flattened {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) {
            object.additional_properties = None;
        }
    }
}

/// An error response written without content gets the body the server sends.
fn fill_error_body(response: &mut OaResponse, oauth: bool) {
    if !response.content.is_empty() {
        return;
    }
    let (content_type, schema) = if oauth {
        ("application/json", "OAuthErrorBody")
    } else {
        ("application/problem+json", "Problem")
    };
    response.content.insert(
        content_type.to_owned(),
        ContentBuilder::new()
            .schema(Some(utoipa::openapi::Ref::from_schema_name(schema)))
            .build(),
    );
}

/// An OAuth 2.0 error (RFC 6749 §5.2, RFC 7009 §2.2.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// The RFC 6749 error code.
    #[schema(example = "invalid_request")]
    pub error: String,
    /// What was wrong; never echoes a credential.
    pub error_description: String,
}

/// The form of `POST /oauth/token` (RFC 6749 §4.4 and §6, RFC 8693 §2.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`, `refresh_token` or `urn:ietf:params:oauth:grant-type:token-exchange`.
    #[schema(example = "client_credentials")]
    pub grant_type: String,
    /// Space-separated scopes to narrow to; all the client holds when absent.
    pub scope: Option<String>,
    /// With `client_secret_post`: the API key's `key_…` id (optional).
    pub client_id: Option<String>,
    /// With `client_secret_post`: the API key.
    pub client_secret: Option<String>,
    /// For `refresh_token`.
    pub refresh_token: Option<String>,
    /// For token exchange: the access token being delegated.
    pub subject_token: Option<String>,
    /// For token exchange: `urn:ietf:params:oauth:token-type:access_token`.
    pub subject_token_type: Option<String>,
    /// For token exchange: the party that will act.
    pub actor_token: Option<String>,
    /// For token exchange: the actor token's type.
    pub actor_token_type: Option<String>,
    /// For token exchange: only access tokens are issued.
    pub requested_token_type: Option<String>,
    /// For token exchange: the actor's principal name when no credential names it; or, for a
    /// protected resource's subject token, that resource's identifier (any other is
    /// `invalid_target`).
    pub audience: Option<String>,
    /// RFC 8707: the protected resource the token is for (a registered identifier; the
    /// tenant's issuer or the deployment's `--issuer` names Bulkhead's own API). `client_credentials`: the token's `aud`. Refresh and token
    /// exchange keep the audience: only the same one may be named.
    pub resource: Option<String>,
    /// For token exchange: a namespace the new token is confined to.
    pub resource_prefix: Option<String>,
}

/// The form of `POST /oauth/revoke` (RFC 7009) and `POST /oauth/introspect` (RFC 7662).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenForm {
    /// The access or refresh token.
    pub token: String,
    /// A hint the server may ignore.
    pub token_type_hint: Option<String>,
    /// With `client_secret_post`: the API key's `key_…` id.
    pub client_id: Option<String>,
    /// With `client_secret_post`: the API key.
    pub client_secret: Option<String>,
}

/// RFC 7662 introspection answer: `{"active": false}` alone for any token that is not active
/// for the caller's tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Introspection {
    /// Whether the token is active.
    pub active: bool,
    /// `Bearer` or `refresh_token`.
    pub token_type: Option<String>,
    /// Space-separated scopes.
    pub scope: Option<String>,
    /// The client the token was issued to.
    pub client_id: Option<String>,
    /// The subject.
    pub sub: Option<String>,
    /// What kind of subject.
    pub sub_type: Option<String>,
    /// Audience.
    pub aud: Option<String>,
    /// Issuer.
    pub iss: Option<String>,
    /// Expiry (seconds since the epoch).
    pub exp: Option<i64>,
    /// Issued at.
    pub iat: Option<i64>,
    /// Not before.
    pub nbf: Option<i64>,
    /// Token id.
    pub jti: Option<String>,
    /// The tenant.
    pub tenant_id: Option<String>,
    /// The auth session.
    pub sid: Option<String>,
    /// The delegation chain (RFC 8693 §4.1).
    #[schema(value_type = Option<Object>)]
    pub act: Option<Value>,
    /// The namespace the token is confined to.
    pub resource_prefix: Option<String>,
    /// The IP allowlists of the keys the token comes from (one CIDR list per key): its caller's
    /// address must lie in a network of every list. Absent: no restriction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_networks: Option<Vec<Vec<String>>>,
}

/// RFC 8414 authorization-server metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    /// The tenant's issuer: its own origin, `https://<slug>.<base-domain>`.
    pub issuer: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// The JWKS.
    pub jwks_uri: String,
    /// The revocation endpoint.
    pub revocation_endpoint: String,
    /// The introspection endpoint.
    pub introspection_endpoint: String,
    /// Supported grants.
    pub grant_types_supported: Vec<String>,
    /// Empty: there is no authorization endpoint.
    pub response_types_supported: Vec<String>,
    /// `client_secret_basic`, `client_secret_post`.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Also `none`: possession suffices to revoke.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// `client_secret_basic`, `client_secret_post`.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// Every scope.
    pub scopes_supported: Vec<String>,
    /// `EdDSA`.
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// RFC 7591 dynamic registration, on each tenant's subdomain (403 where the tenant has not
    /// enabled it).
    pub registration_endpoint: String,
    /// `true`: a `client_id` may be the `https` URL of a client ID metadata document (where the
    /// tenant has enabled it).
    pub client_id_metadata_document_supported: bool,
}

/// A JSON Web Key Set (RFC 7517).
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwks {
    /// The keys (Ed25519, `OKP`).
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<Value>,
}

/// One of the caller's auth sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthSessionView {
    /// The session.
    #[serde(flatten)]
    pub session: AuthSession,
    /// Whether the calling token belongs to it.
    pub current: bool,
}

/// The caller's live auth sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthSessionList {
    /// Sessions.
    pub data: Vec<AuthSessionView>,
}
