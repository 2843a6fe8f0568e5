//! HTTP integration tests: the real app on a loopback port, each test with its own database.
// Test helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod api_keys;
mod audit;
mod auth;
mod browser;
mod confinement;
mod delegation;
mod deletion;
mod embedded;
mod helpers;
mod isolation;
mod jobs;
mod move_safety;
mod oauth_audiences;
mod oauth_code;
mod oauth_grants;
mod oauth_issuer;
mod oauth_mcp;
mod oauth_metadata_document;
mod oauth_register;
mod oauth_resources;
mod oidc;
mod oidc_clients;
mod openapi;
mod operator;
mod operator_audit;
mod operator_moves;
mod operator_openapi;
mod operator_quotas;
mod platform;
mod portability;
mod probe;
mod quotas;
mod ratelimit;
mod rbac;
mod resource_server;
mod resources;
mod sessions;
mod shredding;
mod standing;
mod tiers;
mod tokens;
mod tools;
mod webhooks;
