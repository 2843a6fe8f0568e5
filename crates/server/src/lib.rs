//! The Bulkhead server: the axum application, its request pipeline, the job worker, and the
//! `bulkhead` command line.
//!
//! # Request pipeline
//! A request flows: request id → trace span → metrics → body limit → tenant resolution and
//! authentication ([`resolve`]) → the route's declared permission ([`authz`]) → handler → store
//! door → SQL. Handlers under `/v1` cannot be
//! reached without a [`TenantContext`](bulkhead_core::TenantContext) in the request: the
//! [`resolve`] middleware is the only place that makes one, and the
//! [`extract::Tenant`] extractor fails closed (401) if it is absent.
//!
//! # Invariants
//! - Every error leaves as an RFC 9457 `application/problem+json` body, mapped in one place
//!   ([`error::ApiError`]); internal details are logged, never sent.
//! - Another tenant's resource answers exactly like a missing one.
//! - Every route is declared in one [`authz::RouteTable`] with who may call it; there is no
//!   other way to mount a route.
//! - Every authentication decision is logged as an audit event (target `bulkhead::audit`), and
//!   every tenant-data change writes an audit row in its own transaction.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
mod audit_cli;
pub mod audit_log;
pub mod authz;
pub mod ceilings;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod database;
pub mod error;
pub mod extract;
pub mod hashing;
mod key_cli;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod openapi;
pub mod probe;
mod quota_cli;
pub mod quotas;
pub mod resolve;
pub mod routes;
pub mod scan;
pub mod screen;
pub mod state;
pub mod telemetry;
pub mod tenants;
pub mod tokens;
pub mod worker;
