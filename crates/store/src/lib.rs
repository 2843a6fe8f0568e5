//! Bulkhead's PostgreSQL store: the only door to tenant data.
//!
//! # Rooms
//! Each room may use the rooms listed before it and none after it (the architecture checker,
//! `crates/architecture`, fails on an import cycle):
//!
//! - `error` ([`StoreError`]) and `text_enum` (closed sets of values stored as text): leaves.
//! - [`hooks`]: named points where a test may stop or pause a long operation (off in releases).
//! - [`cluster`]: a PostgreSQL cluster itself: the embedded one Bulkhead starts, provisioning
//!   its owner role and databases, and the PostgreSQL roles the store relies on
//!   ([`cluster::pg_roles`], not to be confused with a tenant's RBAC roles in [`tenant::rbac`]).
//! - [`placement`]: where a tenant's rows live and how a transaction reaches them: the door
//!   ([`Store`], [`TenantTx`]), the connection gate, locations and their router, the registry,
//!   migrations and the tiers. Placement knows no tenant table beyond the registry's anchor rows.
//! - [`tenant`]: the repositories of tenant data (keys, tokens, sessions, users, agents, RBAC,
//!   tools, webhooks, jobs, quotas). Each function takes a [`TenantTx`] (or, for work across
//!   tenants, the [`Store`], and enters each tenant through the door).
//! - [`audit`]: the tenant's audit events, the verifiable log sequenced from them, and retention.
//!   Above the repositories because the log streams events to webhook endpoints.
//! - [`lifecycle`]: what happens to a whole tenant: onboarding (registry row, built-in roles,
//!   first key, audit events), suspension and reactivation, and moves between locations. It
//!   writes the registry, the repositories and the audit log, so it sits above all of them.
//! - [`signing_keys`]: deployment-wide token signing keys (no tenant), owner only.
//! - [`operators`]: the operator plane's keys and audit log (no tenant), owner only.
//!
//! # Invariants
//! - Tenant tables are reached only through a [`TenantTx`], which [`Store::begin`] opens for one
//!   [`TenantContext`]: one transaction, whose first statement sets `bulkhead.tenant_id` with
//!   `set_config(..., true)`: `tenant_enter` (migration 0047), sent with the `BEGIN` in one simple
//!   query, its values written as quoted literals of ours (never request input). The setting is
//!   transaction-local, so it ends with the transaction; a connection that carries a
//!   session-level value is refused and cleared before it is entered, so nothing can leak from
//!   one pooled use to the next. An entry the database refuses (the tenant is not where the route says, or is frozen
//!   for a write) is rolled back before its connection returns to the pool.
//! - Requests are served through the application role, which owns nothing, is not superuser and
//!   has `NOBYPASSRLS` and can create nothing, temporary objects and triggers included
//!   (migration 0044);
//!   [`cluster::pg_roles::verify_app_role`] refuses to serve otherwise. Every
//!   tenant table has `ENABLE` and `FORCE ROW LEVEL SECURITY`, so the database enforces the
//!   tenant boundary even if a query forgets its own `tenant_id` predicate (every query here
//!   still has one).
//! - Read-only access ([`Access::ReadOnly`]) runs in a `READ ONLY` transaction.
//! - Migrations run as the owner role, never as the application role.
//! - Control-plane data (the tenant registry, the signing keys) is separate: the application role
//!   may read it and never write it.
//!
//! [`TenantContext`]: bulkhead_core::TenantContext
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod text_enum;

pub mod audit;
pub mod cluster;
pub mod hooks;
pub mod lifecycle;
pub mod operators;
pub mod placement;
pub mod signing_keys;
pub mod tenant;

pub use error::StoreError;
pub use placement::door::{Access, Store, TenantTx};
pub use placement::location::{Location, Placement, PoolRole, Topology};
