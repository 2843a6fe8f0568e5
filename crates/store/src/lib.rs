//! Bulkhead's PostgreSQL store: the only door to tenant data.
//!
//! # Invariants
//! - Tenant tables are reached only through a [`TenantTx`], which [`Store::begin`] opens for one
//!   [`TenantContext`]: one transaction, whose first statement sets `bulkhead.tenant_id` with
//!   `set_config(..., true)` from a bound parameter. The setting is transaction-local, so it ends
//!   with the transaction; the same statement also clears any session-level value a connection may
//!   carry, so nothing can leak from one pooled use to the next.
//! - Requests are served through the application role, which owns nothing, is not superuser and
//!   has `NOBYPASSRLS`; [`roles::verify_app_role`] refuses to serve otherwise. Every tenant table
//!   has `ENABLE` and `FORCE ROW LEVEL SECURITY`, so the database enforces the tenant boundary
//!   even if a query forgets its own `tenant_id` predicate (every query here still has one).
//! - Read-only access ([`Access::ReadOnly`]) runs in a `READ ONLY` transaction.
//! - Migrations run as the owner role, never as the application role.
//! - Control-plane data (the tenant registry) is separate: the application role may read it and
//!   never write it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod audit_log;
pub mod audit_retention;
pub mod door;
pub mod embedded;
mod error;
pub mod gate;
pub mod hooks;
pub mod jobs;
pub mod location;
pub mod migrate;
pub mod moves;
pub mod provision;
pub mod quotas;
pub mod rbac;
pub mod registry;
pub mod roles;
pub mod sessions;
pub mod signing_keys;
pub mod tiers;
pub mod tokens;
pub mod tools;
pub mod users;
pub mod webhooks;

pub use door::{Access, Store, TenantTx};
pub use error::StoreError;
pub use location::{Location, Placement, PoolRole, Topology};
