//! What the OpenAPI document says of one operation, declared beside its route in the
//! [`RouteTable`](crate::http::authz::RouteTable) (`.doc(...)` after `.confine(...)`).
//!
//! An [`OpDoc`] holds only what is particular to its operation: its name and summary, its
//! parameters, body, success and own refusals. What operations share is written once, here or
//! in [`crate::http::routes::openapi`]: the `{id}` parameter and its 404 ([`OpDoc::on`]), the
//! security requirement (from the route's [`RouteAccess`](crate::http::authz::RouteAccess)), the
//! tag (one per route module, [`RouteTable::tagged`](crate::http::authz::RouteTable::tagged)),
//! and the refusals of the pipeline and the error bodies (`openapi::Shared`). Every schema an
//! operation names by reference is collected with it, for the document's components.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{
    Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Ref, RefOr, Required, Response, ResponseBuilder, ResponsesBuilder};
use utoipa::{IntoParams, ToSchema};

/// The security scheme of the tenant API: `Authorization: Bearer <API key or access token>`.
pub const BEARER: &str = "bearer";
/// The OAuth client authentication by HTTP Basic (`client_id` = key id, secret = the key).
pub const CLIENT_BASIC: &str = "client_basic";

/// The document's view of one operation. See the module doc.
#[derive(Clone)]
pub struct OpDoc {
    /// `operationId`: the handler's name, set by the table.
    pub operation_id: &'static str,
    /// The tag, set by the table the route is declared in.
    pub tag: Option<&'static str>,
    /// What the operation does.
    pub summary: Option<&'static str>,
    /// Path, then query parameters, in their order.
    pub parameters: Vec<Parameter>,
    /// The body, if the operation takes one.
    pub request_body: Option<RequestBody>,
    /// Answers by status: the success and the operation's own refusals.
    pub responses: Vec<(u16, Response)>,
    /// Security requirements other than the one the route's access implies.
    pub security: Option<Vec<SecurityRequirement>>,
    /// The schemas its body and answers refer to, with theirs.
    pub schemas: Vec<(String, RefOr<Schema>)>,
}

impl OpDoc {
    /// The operation this doc describes, with `security` as its requirements (`None`: none
    /// stated, so the document's default applies).
    pub fn operation(&self, security: Option<Vec<SecurityRequirement>>) -> Operation {
        let mut responses = ResponsesBuilder::new();
        for (status, response) in &self.responses {
            responses = responses.response(status.to_string(), response.clone());
        }
        OperationBuilder::new()
            .tags(self.tag.map(|tag| [tag]))
            .summary(self.summary)
            .operation_id(Some(self.operation_id))
            .parameters((!self.parameters.is_empty()).then(|| self.parameters.clone()))
            .request_body(self.request_body.clone())
            .responses(responses)
            .securities(security)
            .build()
    }

    /// An operation that answers `status`, described as `description`, with a JSON body of
    /// schema `T`.
    pub fn ok<T: ToSchema>(status: u16, description: &str) -> Self {
        Self::blank().also::<T>(status, description)
    }

    /// A list: a page of schema `P` (200, described as `description`), chosen by `limit` and
    /// `cursor` (a string; [`OpDoc::cursor`] names an id) and the route's filters `F`, in that
    /// order: the parameters of its `ListQuery` (`routes/kit/page.rs`).
    pub fn page<P: ToSchema, F: IntoParams>(description: &str) -> Self {
        Self::ok::<P>(200, description)
            .query::<PageParams>()
            .query::<F>()
    }

    /// The list's `cursor` is an id of schema `C`.
    pub fn cursor<C: ToSchema>(mut self) -> Self {
        self.param_mut("cursor").schema = Some(reference::<C>());
        self
    }

    /// Another description of parameter `name` (`None`: none).
    pub fn describe(mut self, name: &str, description: Option<&str>) -> Self {
        self.param_mut(name).description = description.map(str::to_owned);
        self
    }

    fn param_mut(&mut self, name: &str) -> &mut Parameter {
        self.parameters
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{} has no parameter {name}", self.operation_id))
    }

    /// An operation that answers `status` without a body.
    pub fn empty(status: u16, description: &str) -> Self {
        Self::blank().answer(status, description)
    }

    /// An operation that answers `status` with a body of `content_type` whose `schema` is
    /// written inline.
    pub fn inline(
        status: u16,
        description: &str,
        content_type: &str,
        schema: RefOr<Schema>,
    ) -> Self {
        let content = ContentBuilder::new().schema(Some(schema)).build();
        let response = ResponseBuilder::new()
            .description(description)
            .content(content_type, content)
            .build();
        Self::blank().with(status, response)
    }

    /// Another answer `status` with an HTML page (the OAuth login and consent pages).
    pub fn with_html(self, status: u16, description: &str) -> Self {
        let schema: RefOr<Schema> = utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .into();
        let content = ContentBuilder::new().schema(Some(schema)).build();
        let response = ResponseBuilder::new()
            .description(description)
            .content("text/html", content)
            .build();
        self.with(status, response)
    }

    /// Another answer `status` with a JSON body of schema `T`.
    pub fn also<T: ToSchema>(mut self, status: u16, description: &str) -> Self {
        T::collect(&mut self.schemas);
        let content = ContentBuilder::new().schema(Some(reference::<T>())).build();
        let response = ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build();
        self.with(status, response)
    }

    /// The answer `status`, described as `description`, without a body of its own (an error
    /// gets the shared error body).
    pub fn answer(self, status: u16, description: &str) -> Self {
        let response = ResponseBuilder::new().description(description).build();
        self.with(status, response)
    }

    /// 403: what the operation refuses beyond the scope its route requires.
    pub fn forbidden(self, description: &str) -> Self {
        self.answer(403, description)
    }

    /// 409: the state the operation refuses to change.
    pub fn conflict(self, description: &str) -> Self {
        self.answer(409, description)
    }

    /// 422: what of the request is well-formed but refused.
    pub fn invalid(self, description: &str) -> Self {
        self.answer(422, description)
    }

    fn with(mut self, status: u16, response: Response) -> Self {
        self.responses.push((status, response));
        self
    }

    fn blank() -> Self {
        Self {
            operation_id: "",
            tag: None,
            summary: None,
            parameters: Vec::new(),
            request_body: None,
            responses: Vec::new(),
            security: None,
            schemas: Vec::new(),
        }
    }

    /// What the operation does.
    pub fn summary(mut self, summary: &'static str) -> Self {
        self.summary = Some(summary);
        self
    }

    /// One `noun` of the tenant named by the `{id}` of an id of schema `I`: the parameter ("The
    /// `noun`") and the 404 that answers a missing one and another tenant's alike. Declared once
    /// per resource in the table ([`RouteTable::resource`](crate::http::authz::RouteTable::resource)).
    pub fn one<I: ToSchema>(noun: &str) -> Self {
        Self::blank()
            .id::<I>(&format!("The {noun}"))
            .not_found(noun)
    }

    /// A path parameter `name` of `schema`, described as `description`.
    pub fn named(name: &str, schema: RefOr<Schema>, description: &str) -> Self {
        Self::blank().param(name, schema, description)
    }

    /// This operation of a resource: its path parameter first, and its answers (the 404).
    pub fn under(mut self, resource: &OpDoc) -> Self {
        self.parameters
            .splice(0..0, resource.parameters.iter().cloned());
        self.responses.extend(resource.responses.iter().cloned());
        self
    }

    /// The route's `{id}`, an id of schema `I`, described as `description`; the operation says
    /// its own 404.
    pub fn id<I: ToSchema>(self, description: &str) -> Self {
        self.param("id", reference::<I>(), description)
    }

    /// The 404 of a `noun` that does not exist or is another tenant's (the same answer).
    pub fn not_found(self, noun: &str) -> Self {
        self.answer(404, &format!("No such {noun} (or another tenant's)"))
    }

    /// A path parameter `name` of `schema`.
    pub fn param(mut self, name: &str, schema: RefOr<Schema>, description: &str) -> Self {
        self.parameters.push(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(schema))
                .build(),
        );
        self
    }

    /// The query parameters `Q` declares.
    pub fn query<Q: IntoParams>(mut self) -> Self {
        self.parameters.extend(Q::into_params(|| None));
        self
    }

    /// A required JSON body of schema `B`.
    pub fn body<B: ToSchema>(self) -> Self {
        self.request(B::collect, "application/json", reference::<B>(), true)
    }

    /// A JSON body of schema `B` that may be left out (an empty body).
    pub fn optional_body<B: ToSchema>(self) -> Self {
        self.request(B::collect, "application/json", reference::<B>(), false)
    }

    /// A required form body (`application/x-www-form-urlencoded`) of the fields of `B`.
    pub fn form<B: ToSchema>(self) -> Self {
        let form = "application/x-www-form-urlencoded";
        self.request(B::collect, form, reference::<B>(), true)
    }

    fn request(
        mut self,
        collect: fn(&mut Vec<(String, RefOr<Schema>)>),
        content_type: &str,
        schema: RefOr<Schema>,
        required: bool,
    ) -> Self {
        collect(&mut self.schemas);
        let content = ContentBuilder::new().schema(Some(schema)).build();
        let required = if required {
            Required::True
        } else {
            Required::False
        };
        self.request_body = Some(
            RequestBodyBuilder::new()
                .content(content_type, content)
                .required(Some(required))
                .build(),
        );
        self
    }

    /// The bearer credential holding `scope`, for a route open to any credential whose handler
    /// checks the scope itself (in place of the requirement its access implies).
    pub fn bearer(mut self, scope: &str) -> Self {
        self.security = Some(vec![SecurityRequirement::new(BEARER, [scope])]);
        self
    }

    /// OAuth client authentication by HTTP Basic; `optional`: or none (the client may send its
    /// key in the form instead, or no credential at all).
    pub fn client_auth(mut self, optional: bool) -> Self {
        let basic = SecurityRequirement::new(CLIENT_BASIC, Vec::<String>::new());
        self.security = Some(if optional {
            vec![SecurityRequirement::default(), basic]
        } else {
            vec![basic]
        });
        self
    }
}

impl std::fmt::Debug for OpDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpDoc({})", self.operation_id)
    }
}

/// A schema with a name the document refers to, collected with the schemas it refers to.
trait Collect {
    fn collect(schemas: &mut Vec<(String, RefOr<Schema>)>);
}

impl<T: ToSchema> Collect for T {
    fn collect(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}

/// `$ref` to the component schema of `T`.
/// What the document says of every list's `limit` and `cursor` (a list whose cursor is an id
/// names the id's schema instead, [`OpDoc::cursor`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // a type for the document only, never made
struct PageParams {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn reference<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// Answers `GET …/openapi.json` with the document `build` makes, serialised once into `cell`
/// (the tenant API's and the operator API's documents).
pub fn serve_document(
    cell: &'static std::sync::OnceLock<String>,
    build: fn() -> utoipa::openapi::OpenApi,
) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let text = cell.get_or_init(|| {
        build()
            .to_json()
            .unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}
