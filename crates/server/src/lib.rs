//! The Bulkhead server: the axum application, its request pipeline, the job worker, and the
//! `bulkhead` command line.
//!
//! # Rooms
//! - [`http`]: the door: the application and its router ([`http::app`]), the request pipeline
//!   (listener, resolution, limits, authorization declarations, extractors, errors mapped to
//!   RFC 9457 once), the routes and the OpenAPI document. It calls services and the store.
//! - [`service`]: what requests and jobs do, with no HTTP in it: credentials, keys, tokens,
//!   ceilings, tenants, hashing, screening, outbound scanning, the audit log, the job worker.
//! - [`cli`]: the `bulkhead` command line, one file per command group.
//! - [`config`]: the settings (flags, environment variables and their checked-in defaults).
//!
//! The cross-tenant attack run of `bulkhead probe` is a crate of its own (`bulkhead-probe`): it
//! knows a deployment only through HTTP.
//!
//! # Request pipeline
//! A request flows: request id → trace span → metrics → body limit → tenant resolution and
//! authentication ([`http::resolve`]) → the route's declared permission ([`http::authz`]) → handler → store
//! door → SQL. Handlers under `/v1` cannot be
//! reached without a [`TenantContext`](bulkhead_core::TenantContext) in the request: the
//! [`http::resolve`] middleware is the only place that makes one, and the
//! [`http::extract::Tenant`] extractor fails closed (401) if it is absent.
//!
//! # Invariants
//! - Every error leaves as an RFC 9457 `application/problem+json` body, mapped in one place
//!   ([`http::error::ApiError`]); internal details are logged, never sent.
//! - Another tenant's resource answers exactly like a missing one.
//! - Every route is declared in one [`http::authz::RouteTable`] with who may call it; there is no
//!   other way to mount a route.
//! - Every authentication decision is logged as an audit event (target `bulkhead::audit`), and
//!   every tenant-data change writes an audit row in its own transaction.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod http;
pub mod service;
