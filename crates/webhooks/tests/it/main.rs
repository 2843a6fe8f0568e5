//! Webhook integration tests: the egress policy on hostile input, Standard Webhooks vectors,
//! and durable delivery against loopback TLS receivers (real PostgreSQL, real TLS, loopback
//! only: test host names resolve through an injected map to 127.0.0.0/8).
// Test helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod delivery;
mod plans;
mod policy;
mod signing;
