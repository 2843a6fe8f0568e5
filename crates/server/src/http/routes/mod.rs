//! HTTP routes, one module per resource.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod context;
pub mod health;
pub(crate) mod kit;
pub mod oauth;
pub mod oauth_clients;
pub mod oauth_grants;
pub mod oauth_resources;
pub mod oauth_settings;
pub mod openapi;
pub mod principals;
pub mod roles;
pub mod sessions;
pub mod tools;
pub mod usage;
pub mod webhooks;

use axum::http::Method;

use crate::http::authz::RouteTable;

/// Every route of the application with its authorization declaration. The router is built from
/// this table alone (see [`crate::http::authz`]).
pub fn route_table() -> RouteTable {
    RouteTable::new()
        .merge(health::routes())
        .merge(openapi::routes())
        .merge(oauth::routes())
        .merge(oauth_clients::routes())
        .merge(oauth_grants::routes())
        .merge(oauth_resources::routes())
        .merge(oauth_settings::routes())
        .merge(audit::routes())
        .merge(sessions::routes())
        .merge(api_keys::routes())
        .merge(auth::routes())
        .merge(webhooks::routes())
        .merge(principals::routes())
        .merge(roles::routes())
        .merge(tools::routes())
        .merge(context::routes())
        .merge(usage::routes())
}

/// Every (method, path) the app serves, paths in the router's `{param}` form: the route table
/// the router is built from. Checked against the OpenAPI document by `tests/api/openapi.rs`.
pub fn served_routes() -> Vec<(Method, &'static str)> {
    route_table()
        .specs()
        .map(|spec| (spec.method.clone(), spec.path))
        .collect()
}
