//! The repositories of tenant data, one module per family of tables. Every function takes the
//! tenant transaction ([`crate::TenantTx`]) and filters on its tenant explicitly, beside
//! row-level security; work across tenants takes the [`crate::Store`] and enters each tenant
//! through the door. Repositories use placement types and never the other way round.

pub mod agents;
pub mod api_keys;
pub mod jobs;
pub mod oauth;
pub mod oauth_grants;
pub mod oauth_resources;
pub mod quotas;
pub mod rbac;
pub mod sessions;
pub mod tokens;
pub mod tools;
pub mod users;
pub mod webhooks;
