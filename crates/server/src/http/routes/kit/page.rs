//! The one page-size rule of every list route: `limit` defaults to [`DEFAULT_PAGE_SIZE`] and is
//! refused (422) outside `1..=`[`MAX_PAGE_SIZE`], never silently clamped. One pair for every
//! resource: a client learns it once, and the OpenAPI parameters (`minimum = 1, maximum = 200`)
//! say the same everywhere.
//!
//! Every list route's query is one [`ListQuery`]: `limit` and `cursor` are read here, and the
//! rest of the query string is the route's own filter struct (with `deny_unknown_fields`, so an
//! unknown parameter is still a 400). serde's `flatten` cannot do this: it does not work with
//! `deny_unknown_fields`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use bulkhead_core::id::IdKind;
use bulkhead_core::{PrefixedId, TenantContext};
use bulkhead_store::TenantTx;
use serde::de::DeserializeOwned;
use utoipa::openapi::path::{Parameter, ParameterIn};

use super::{tx, validate};
use crate::http::error::ApiError;
use crate::http::state::AppState;

// Defined with the limits, which charge a page by its size (`http::limits::page_cost`).
pub(crate) use crate::config::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// The page size a list request asked for, or [`DEFAULT_PAGE_SIZE`]; outside
/// `1..=MAX_PAGE_SIZE` is refused (422), not silently clamped.
pub(crate) fn page_limit(requested: Option<u32>) -> Result<u32, ApiError> {
    let limit = requested.unwrap_or(DEFAULT_PAGE_SIZE);
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(ApiError::Invalid(
            format!("limit is between 1 and {MAX_PAGE_SIZE}").into(),
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

/// The page a list request asked for: its size (checked by [`page_limit`]) and the cursor it
/// starts after. Made before the route's own filters are checked, so that a bad size or cursor
/// is the refusal a client sees first on every list route.
pub(crate) struct PageRequest<C> {
    limit: u32,
    after: Option<C>,
}

impl<C> PageRequest<C> {
    /// The size checked first, then the cursor read by `parse`.
    pub(crate) fn new(
        limit: Option<u32>,
        cursor: Option<&str>,
        parse: impl FnOnce(&str) -> Result<C, ApiError>,
    ) -> Result<Self, ApiError> {
        let limit = page_limit(limit)?;
        let after = cursor.map(parse).transpose()?;
        Ok(Self { limit, after })
    }

    /// The number of rows to fetch (one more than the page, see [`into_page`]), the page size,
    /// and the cursor, for a list that is not read in a tenant's transaction (the operator's).
    pub(crate) fn fetch_parts(self) -> (u32, u32, Option<C>) {
        (self.limit + 1, self.limit, self.after)
    }

    /// Reads the page in one read-only transaction: `rows` gets the cursor and the number of
    /// rows to fetch (one more than the page, see [`into_page`]); the page is cut from them, and
    /// `cursor_of` names the next page's cursor.
    pub(crate) async fn read<T, N>(
        self,
        state: &AppState,
        ctx: &TenantContext,
        rows: impl AsyncFnOnce(&mut TenantTx, Option<C>, u32) -> Result<Vec<T>, ApiError>,
        cursor_of: impl Fn(&T) -> N,
    ) -> Result<(Vec<T>, Option<N>), ApiError> {
        let Self { limit, after } = self;
        let rows = tx::read(state, ctx, async move |tx| rows(tx, after, limit + 1).await).await?;
        Ok(into_page(rows, limit, cursor_of))
    }
}

/// The query of a list route: the page's `limit` and `cursor`, and the route's filters `F`
/// (none by default). Parsed once, as axum's `Query` would: a malformed query string, a
/// parameter given twice, a `limit` that is not a number or a parameter `F` does not know is a
/// 400 (`Failed to deserialize query string: …`); the size rule (422) is [`PageRequest`]'s.
pub(crate) struct ListQuery<F = NoFilters> {
    limit: Option<u32>,
    cursor: Option<String>,
    /// The route's own parameters.
    pub(crate) filter: F,
}

impl<F> ListQuery<F> {
    /// The page asked for, its cursor read by `parse`.
    pub(crate) fn page<C>(
        &self,
        parse: impl FnOnce(&str) -> Result<C, ApiError>,
    ) -> Result<PageRequest<C>, ApiError> {
        PageRequest::new(self.limit, self.cursor.as_deref(), parse)
    }

    /// The page of a list whose cursor is an id of its items.
    pub(crate) fn page_of_ids<K: IdKind>(&self) -> Result<PageRequest<PrefixedId<K>>, ApiError> {
        self.page(validate::id)
    }
}

impl<F: DeserializeOwned> ListQuery<F> {
    fn parse(query: &str) -> Result<Self, serde_urlencoded::de::Error> {
        use serde::de::Error as _;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)?;
        let (mut limit, mut cursor, mut rest) = (None, None, Vec::new());
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "limit" => &mut limit,
                "cursor" => &mut cursor,
                _ => {
                    rest.push((name, value));
                    continue;
                }
            };
            if slot.replace(value).is_some() {
                return Err(serde_urlencoded::de::Error::custom(format!(
                    "duplicate field `{name}`"
                )));
            }
        }
        let limit = limit
            .map(|l| l.parse::<u32>())
            .transpose()
            .map_err(serde_urlencoded::de::Error::custom)?;
        let rest =
            serde_urlencoded::to_string(rest).map_err(serde_urlencoded::de::Error::custom)?;
        let filter = serde_urlencoded::from_str(&rest)?;
        Ok(Self {
            limit,
            cursor,
            filter,
        })
    }
}

impl<S: Send + Sync, F: DeserializeOwned> FromRequestParts<S> for ListQuery<F> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::parse(parts.uri.query().unwrap_or_default()).map_err(|err| {
            ApiError::BadRequest(format!("Failed to deserialize query string: {err}").into())
        })
    }
}

/// The filters of a list route that has none: any parameter but `limit` and `cursor` is a 400.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoFilters {}

impl utoipa::IntoParams for NoFilters {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        Vec::new()
    }
}

/// A page type: its items and the cursor of the next page (one concrete type per item, so that
/// each has its own schema in the OpenAPI document).
macro_rules! page {
    ($(#[$doc:meta])* $name:ident, $item:ty, $cursor:ty) => {
        $(#[$doc])*
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            data: Vec<$item>,
            /// Pass as `cursor` for the next page; `null` on the last.
            next_cursor: Option<$cursor>,
        }

        impl $name {
            /// A page and the cursor of the next one.
            pub fn new(data: Vec<$item>, next_cursor: Option<$cursor>) -> Self {
                Self { data, next_cursor }
            }
        }
    };
}
pub(crate) use page;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_and_the_bounds_are_one_pair() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_limit(Some(1)).unwrap(), 1);
        assert_eq!(page_limit(Some(MAX_PAGE_SIZE)).unwrap(), MAX_PAGE_SIZE);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(MAX_PAGE_SIZE + 1)).is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AgentFilter {
        #[serde(default)]
        agent_id: Option<String>,
    }

    #[test]
    fn a_list_query_reads_the_page_and_leaves_the_rest_to_the_filters() {
        let query = ListQuery::<AgentFilter>::parse("cursor=c1&agent_id=a+b&limit=7").unwrap();
        assert_eq!(query.limit, Some(7));
        assert_eq!(query.cursor.as_deref(), Some("c1"));
        assert_eq!(query.filter.agent_id.as_deref(), Some("a b"));
        assert!(ListQuery::<NoFilters>::parse("").is_ok());
        // Each of these was a 400 of axum's Query before, and still is.
        for bad in [
            "limit=x",
            "limit=-1",
            "limit=1&limit=2",
            "cursor=a&cursor=b",
            "agent_id=a&agent_id=b",
            "other=1",
        ] {
            assert!(ListQuery::<AgentFilter>::parse(bad).is_err(), "{bad}");
        }
        assert!(ListQuery::<NoFilters>::parse("agent_id=a").is_err());
    }

    #[test]
    fn the_extra_row_names_the_next_cursor() {
        assert_eq!(into_page(vec![1, 2, 3], 2, |n| *n), (vec![1, 2], Some(2)));
        assert_eq!(into_page(vec![1, 2], 2, |n| *n), (vec![1, 2], None));
    }
}
