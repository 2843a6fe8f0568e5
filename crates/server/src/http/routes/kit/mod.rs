//! The route kit: what every resource module shares, so that a rule is written once and a new
//! resource takes it instead of writing its own copy.
//!
//! - [`by_id`]: the one request of a by-id handler (state, tenant, `{id}`) and its one read
//!   and delete;
//! - [`validate`]: the one description rule, the one id parser, the one NUL check;
//! - [`page`]: the one page-size rule and the cut of a `limit + 1` query into a page;
//! - [`write`]: the one tail of a write (audit event, platform events, ceiling change, commit);
//! - [`policy`]: the one get/put of a tenant-wide policy row;
//! - [`login`]: the one password check of a human login (JSON and the OAuth login page);
//! - [`tx`]: the one transaction of a handler (begin, store calls, commit or write tail).

pub(crate) mod by_id;
pub(crate) mod login;
pub(crate) mod page;
pub(crate) mod policy;
pub(crate) mod tx;
pub(crate) mod validate;
pub(crate) mod write;
