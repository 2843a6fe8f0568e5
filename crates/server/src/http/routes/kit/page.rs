//! The one page-size rule of every list route: `limit` defaults to [`DEFAULT_PAGE_SIZE`] and is
//! refused (422) outside `1..=`[`MAX_PAGE_SIZE`], never silently clamped. One pair for every
//! resource: a client learns it once, and the OpenAPI parameters (`minimum = 1, maximum = 200`)
//! say the same everywhere.

use crate::http::error::ApiError;

/// Page size of a list request that names none.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size a list request may ask for.
pub(crate) const MAX_PAGE_SIZE: u32 = 200;

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

    #[test]
    fn the_extra_row_names_the_next_cursor() {
        assert_eq!(into_page(vec![1, 2, 3], 2, |n| *n), (vec![1, 2], Some(2)));
        assert_eq!(into_page(vec![1, 2], 2, |n| *n), (vec![1, 2], None));
    }
}
