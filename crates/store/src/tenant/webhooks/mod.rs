//! Webhook endpoints, messages, deliveries and the attempt log. Every function takes the tenant
//! transaction and filters on its tenant explicitly; the claim is the one cross-tenant step and
//! returns ids only.
//!
//! Validation of URLs, headers and event types is the caller's (the egress guard in
//! `bulkhead-webhooks`, the routes); the database checks lengths and shapes again.
//!
//! One repository in three files by job, one way: `endpoints` (and their sealed secrets),
//! `messages` (publishing to the endpoints that take an event), `deliveries` (reading,
//! claiming and recording them), which reads the other two.

mod deliveries;
mod endpoints;
mod messages;

pub use deliveries::*;
pub use endpoints::*;
pub use messages::*;
