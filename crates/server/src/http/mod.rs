//! The door: how a request reaches a handler and how its answer leaves.
//!
//! A request flows: listener (connection caps, header and body timeouts) → request id, trace
//! span, metrics, body limit ([`app`]) → tenant resolution and authentication ([`resolve`]) →
//! the tenant's limits ([`limits`]) → the route's declared permission ([`authz`]) → handler
//! ([`routes`]) → a service or the store door. Errors are mapped to RFC 9457 once ([`error`]).
//! Nothing here is reached by services: the dependency goes from `http` to `service`, never back.

pub mod apidoc;
pub mod app;
pub mod authz;
pub(crate) mod challenge;
pub mod error;
pub mod extract;
pub mod limits;
pub mod listener;
pub(crate) mod needed_scope;
pub mod operator;
pub mod quotas;
pub mod resolve;
pub mod routes;
pub mod state;
pub mod telemetry;
