//! The operator API's own OpenAPI 3.1 document, served at `GET /operator/v1/openapi.json` on the
//! operator listener only (the tenant listener has no `/operator` route and its `/openapi.json`
//! names no operator route).
//!
//! Built like the tenant document ([`crate::http::routes::openapi`]): one operation per route of
//! the [operator route table](super::route_table) from the [`OpDoc`] declared beside it, the
//! security requirement from the route's operator scope (scheme [`OPERATOR_KEY`]), and what every
//! operation shares added in one place: 400, 401, 403, 503 and the problem body of every error;
//! 413, 415 and 422 where a JSON body is taken. The answer types of the operator handlers are
//! described by the types below (the handlers serialize the store's records); schemathesis checks
//! them against the real answers in CI (`.ci/schemathesis.sh`).

use std::sync::OnceLock;

use axum::response::Response;
use serde::Serialize;
use utoipa::openapi::path::{Operation, OperationBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder, ResponsesBuilder};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{OperatorRouteSpec, OperatorRoutes};
use crate::http::apidoc::OpDoc;
use crate::http::error::Problem;

/// Where the document is served (on the operator listener; no credential needed: it holds no
/// data, and the listener is the owner's alone).
pub const PATH: &str = "/operator/v1/openapi.json";

/// The security scheme of the operator API: `Authorization: Bearer bk_op_…`.
pub const OPERATOR_KEY: &str = "operator_key";

/// `GET /operator/v1/openapi.json`: the document, built once.
pub async fn serve() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    crate::http::apidoc::serve_document(&DOCUMENT, openapi)
}

/// The document.
///
/// # Panics
/// If an operator route is not documented (a programming error every test run catches).
pub fn openapi() -> utoipa::openapi::OpenApi {
    document(&super::route_table())
}

fn document(table: &OperatorRoutes) -> utoipa::openapi::OpenApi {
    let mut doc = OperatorApiDoc::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        OPERATOR_KEY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An operator key (`bk_op_…`, `bulkhead operator key create`). The roles of a \
                     requirement name the operator scope the operation needs. Tenant API keys \
                     and access tokens are refused (401).",
                ))
                .build(),
        ),
    );
    for (spec, op) in table.docs() {
        let op = op.unwrap_or_else(|| {
            panic!("undocumented operator route: {} {}", spec.method, spec.path)
        });
        components.schemas.extend(op.schemas.iter().cloned());
        doc.paths.add_path_operation(
            spec.path,
            vec![crate::http::routes::openapi::http_method(&spec.method)],
            operation(spec, op),
        );
    }
    let document = ObjectBuilder::new().schema_type(Type::Object).build();
    doc.paths.add_path_operation(
        PATH,
        vec![utoipa::openapi::path::HttpMethod::Get],
        OperationBuilder::new()
            .tags(Some(["meta"]))
            .summary(Some("This document (no credential needed)."))
            .operation_id(Some("openapi"))
            // `security: []`: callable without a credential.
            .securities(Some(Vec::<SecurityRequirement>::new()))
            .responses(
                ResponsesBuilder::new().response(
                    "200",
                    ResponseBuilder::new()
                        .description("The OpenAPI 3.1 document of the operator API")
                        .content(
                            "application/json",
                            utoipa::openapi::content::ContentBuilder::new()
                                .schema(Some(document))
                                .build(),
                        )
                        .build(),
                ),
            )
            .build(),
    );
    shared(&mut doc);
    if let Some(components) = doc.components.as_mut() {
        crate::http::routes::openapi::open_flattened_schemas(components);
    }
    doc
}

fn operation(spec: &OperatorRouteSpec, op: &OpDoc) -> Operation {
    let security = vec![SecurityRequirement::new(
        OPERATOR_KEY,
        [spec.scope.as_str()],
    )];
    op.operation(Some(security))
}

/// What every operator operation shares, and the problem body of every error answer.
fn shared(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let authenticated = path != PATH;
        let ops = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for op in ops.into_iter().flatten() {
            let json_body = op
                .request_body
                .as_ref()
                .is_some_and(|body| body.content.contains_key("application/json"));
            let mut common: Vec<(&str, &str)> = Vec::new();
            if authenticated {
                common.extend([
                    ("400", "Malformed request: syntax, a malformed id, an unknown query parameter"),
                    ("401", "No operator key, or one that is malformed, unknown, expired or revoked; any tenant credential"),
                    ("403", "The operator key lacks the scope (named)"),
                    ("503", "The key check is temporarily unavailable; retry later"),
                ]);
            }
            if json_body {
                common.extend([
                    ("400", "The body is not valid JSON"),
                    ("413", "The body is larger than the route accepts (1 MiB)"),
                    ("415", "The body is not `application/json`"),
                    ("422", "The body is well-formed but invalid"),
                ]);
            }
            let responses = &mut op.responses.responses;
            for (status, description) in common {
                responses.entry(status.to_owned()).or_insert_with(|| {
                    RefOr::T(ResponseBuilder::new().description(description).build())
                });
            }
            for (status, response) in responses.iter_mut() {
                let error = status.starts_with('4') || status.starts_with('5');
                if let (true, RefOr::T(response)) = (error, response) {
                    if response.content.is_empty() {
                        response.content.insert(
                            "application/problem+json".to_owned(),
                            utoipa::openapi::content::ContentBuilder::new()
                                .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                                .build(),
                        );
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bulkhead operator API",
        description = "The control plane of a Bulkhead deployment, on its own listener \
            (`--operator-listen`: a Unix socket, or loopback TCP): tenants, operator keys and the \
            operator's verifiable audit log. Every operation but this document carries \
            `Authorization: Bearer bk_op_…`; tenant credentials are refused. Errors are RFC 9457 \
            `application/problem+json`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem)),
    tags(
        (name = "meta", description = "This document"),
        (name = "tenants", description = "Onboarding and changing tenants"),
        (name = "operator-keys", description = "The operator keys (`bk_op_…`)"),
        (name = "operator-audit", description = "The operator's verifiable audit log"),
    ),
)]
struct OperatorApiDoc;

/// The documents' view of a tenant plan.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanName {
    /// Free.
    Free,
    /// Standard.
    Standard,
    /// Enterprise.
    Enterprise,
}

/// A tenant status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    /// Served.
    Active,
    /// Refused with 403.
    Suspended,
}

/// A tier the operator API onboards (`dedicated` is refused: 422).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TierName {
    /// Shared tables.
    Shared,
    /// A schema of its own.
    Schema,
}

/// A tenant's registry record.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDoc {
    /// `tnt_…`.
    pub id: String,
    /// Its subdomain label.
    pub slug: String,
    /// Display name.
    pub display_name: String,
    /// Plan.
    pub plan: PlanName,
    /// `shared`, `schema` or `dedicated`.
    pub isolation_tier: String,
    /// Data region.
    pub region: String,
    /// Status.
    pub status: StatusName,
    /// When it was onboarded (RFC 3339).
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Its schema (tier `schema`).
    pub schema_name: Option<String>,
    /// Its database (tier `dedicated`).
    pub database_name: Option<String>,
    /// Whether a move has frozen its writes.
    pub frozen: bool,
    /// Its own request budget, replacing its plan's (`null`: the plan's).
    pub rate_limit: Option<RateLimitDoc>,
}

/// A tenant's own request budget: the tenant level of the rate limiter uses it instead of the
/// plan's (docs/rate-limits.md).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitDoc {
    /// Requests a minute, sustained.
    #[schema(minimum = 10, maximum = 10_000_000)]
    pub requests_per_minute: u32,
    /// How many may come at once after a quiet spell: at least 10 (the costliest request), at
    /// most `requests_per_minute` (its default).
    #[schema(minimum = 10, maximum = 10_000_000)]
    pub burst: Option<u32>,
}

/// `POST /operator/v1/tenants`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantDoc {
    /// Subdomain label: lowercase letters, digits and single `-`, starting with a letter (the
    /// pattern is a subset, so generated examples are valid; reserved labels are refused, 422).
    #[schema(pattern = "^[a-z][a-z0-9]{2,30}$")]
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Default `standard`.
    pub plan: Option<PlanName>,
    /// Default `default`.
    pub region: Option<String>,
    /// Default `shared`.
    pub tier: Option<TierName>,
}

/// A new tenant, with its admin key shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenantDoc {
    /// The tenant.
    pub tenant: TenantDoc,
    /// `key_…` id of its admin key.
    pub admin_api_key_id: String,
    /// The admin key (shown once).
    pub admin_api_key: String,
}

/// A page of tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPageDoc {
    /// Tenants in id order.
    pub data: Vec<TenantDoc>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// The filters of `GET /operator/v1/tenants`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // a type for the document only
pub struct TenantFiltersDoc {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `active` or `suspended`.
    status: Option<String>,
    /// `free`, `standard` or `enterprise`.
    plan: Option<String>,
    /// Only this region.
    region: Option<String>,
}

/// `PATCH /operator/v1/tenants/{tenant}`: at least one field.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantDoc {
    /// New plan.
    pub plan: Option<PlanName>,
    /// New status.
    pub status: Option<StatusName>,
    /// The tenant's own request budget; `null` returns it to its plan's.
    pub rate_limit: Option<RateLimitDoc>,
}

/// An operator key's record (never the key, never its hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorKeyDoc {
    /// `opkey_…`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `bk_op_` and four characters.
    pub display_prefix: String,
    /// Operator scopes.
    pub scopes: Vec<String>,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Expiry.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Last use (at most once a minute).
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Revocation.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `POST /operator/v1/operator-keys`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperatorKeyDoc {
    /// 1 to 100 characters.
    pub name: String,
    /// One or more operator scopes.
    pub scopes: Vec<OperatorScopeName>,
    /// Expiry, in the future.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An operator scope.
#[derive(Debug, Serialize, ToSchema)]
pub enum OperatorScopeName {
    /// List and read tenants.
    #[serde(rename = "tenants:read")]
    TenantsRead,
    /// Create and change tenants.
    #[serde(rename = "tenants:write")]
    TenantsWrite,
    /// Delete tenants.
    #[serde(rename = "tenants:delete")]
    TenantsDelete,
    /// Manage operator keys and read the operator log.
    #[serde(rename = "operators:manage")]
    OperatorsManage,
}

/// A new operator key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedOperatorKeyDoc {
    /// Its record.
    pub operator_key: OperatorKeyDoc,
    /// The key (shown once).
    pub key: String,
}

/// Every operator key.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorKeyListDoc {
    /// Oldest first.
    pub data: Vec<OperatorKeyDoc>,
}

/// An event of the operator log.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorEventDoc {
    /// `opevt_…`.
    pub id: String,
    /// When.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// `opkey_…`, `cli:<account>` or `anonymous`.
    pub actor: String,
    /// What.
    pub action: String,
    /// `started`, `success`, `failure` or `blocked`.
    pub outcome: String,
    /// On what.
    pub resource_id: Option<String>,
    /// Why (refusals and failures).
    pub reason: Option<String>,
    /// The rest.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// The operator log's latest events.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorEventListDoc {
    /// Newest first.
    pub data: Vec<OperatorEventDoc>,
}

/// `GET /operator/v1/audit-events`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // a type for the document only
pub struct EventsQueryDoc {
    /// How many, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// The `{tenant}` path parameter.
pub fn tenant_param() -> OpDoc {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(100))
        .build();
    OpDoc::named("tenant", schema.into(), "The tenant's slug or `tnt_…` id")
        .answer(404, "No such tenant")
}

/// The `{id}` path parameter of an operator key.
pub fn key_param() -> OpDoc {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^opkey_[0-9a-z]{26}$"))
        .build();
    OpDoc::named("id", schema.into(), "The operator key's `opkey_…` id")
        .answer(404, "No such operator key")
}

/// A `200` answer of a tar archive.
pub fn tar_archive(description: &str) -> OpDoc {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Binary,
        )))
        .build();
    OpDoc::inline(200, description, "application/x-tar", schema.into())
}

/// A `200` answer of NDJSON lines.
pub fn ndjson(description: &str) -> OpDoc {
    let schema = ObjectBuilder::new().schema_type(Type::String).build();
    OpDoc::inline(200, description, "application/x-ndjson", schema.into())
}

/// `doc` with a request body of a tar archive (binary), required.
pub fn tar_upload(mut doc: OpDoc) -> OpDoc {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Binary,
        )))
        .build();
    doc.request_body = Some(
        utoipa::openapi::request_body::RequestBodyBuilder::new()
            .description(Some(
                "A tenant archive as `GET /operator/v1/tenants/{tenant}/export` writes it",
            ))
            .content(
                "application/x-tar",
                utoipa::openapi::content::ContentBuilder::new()
                    .schema(Some(schema))
                    .build(),
            )
            .required(Some(utoipa::openapi::Required::True))
            .build(),
    );
    doc.answer(415, "The body is not `application/x-tar`")
}

/// The query of `POST /operator/v1/tenant-imports`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // a type for the document only
pub struct ImportQueryDoc {
    /// `shared` (default) or `schema` (`dedicated` is the CLI's, with the server stopped).
    #[param(pattern = "^(shared|schema)$")]
    tier: Option<String>,
    /// Default: the archive's region.
    region: Option<String>,
}

/// An imported tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportedTenantDoc {
    /// The tenant as registered here.
    pub tenant: TenantDoc,
    /// Rows imported per table.
    #[schema(value_type = Object)]
    pub tables: std::collections::BTreeMap<String, u64>,
}
