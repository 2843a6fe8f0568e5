//! The permission a 403 `missing-scope` lacked (its text form): the error type leaves it on the
//! response, and the step-up challenge (`http::challenge`) reads it from there.

/// See the module doc.
#[derive(Debug, Clone)]
pub(crate) struct NeededScope(pub(crate) String);
