//! HTTP routes, one module per resource.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod context;
pub mod health;
pub mod oauth;
pub mod openapi;
pub mod principals;
pub mod roles;
pub mod sessions;
pub mod tools;
pub mod usage;
pub mod webhooks;

use axum::http::Method;

use crate::http::authz::RouteTable;
use crate::http::error::ApiError;

/// Every route of the application with its authorization declaration. The router is built from
/// this table alone (see [`crate::http::authz`]).
pub fn route_table() -> RouteTable {
    RouteTable::new()
        .merge(health::routes())
        .merge(oauth::routes())
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

/// The page size a list request asked for, or `default`; outside `1..=max` is refused (422), not
/// silently clamped.
pub(crate) fn page_limit(requested: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = requested.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(ApiError::Invalid(
            format!("limit is between 1 and {max}").into(),
        ));
    }
    Ok(limit)
}

/// List queries fetch `limit + 1` rows: one extra row tells whether another page exists without
/// a count query. This cuts the page to `limit` and names the cursor of the next page, if any.
pub(crate) fn into_page<T, C>(
    mut rows: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> C,
) -> (Vec<T>, Option<C>) {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        let cursor = rows.last().map(&cursor_of);
        (rows, cursor)
    } else {
        (rows, None)
    }
}
