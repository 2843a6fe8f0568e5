//! What requests and jobs do, without HTTP: each service takes a tenant context (or an
//! operator's) and the store door, and returns its own results.

pub mod audit_line;
pub mod audit_log;
pub mod auth_sessions;
pub mod ceilings;
pub mod credentials;
pub mod database;
pub mod deletion;
pub mod hashing;
pub mod invalidation;
pub mod keys;
pub mod login_throttle;
pub mod moves;
pub mod oauth;
pub mod operators;
pub mod portability;
pub mod rate_limits;
pub mod scan;
pub mod screen;
pub mod tenant_import;
pub mod tenant_quotas;
pub mod tenants;
pub mod tokens;
pub mod tool_schemas;
pub mod worker;
