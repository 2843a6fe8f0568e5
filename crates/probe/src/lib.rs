//! `bulkhead probe`: an adversarial check of a running deployment's tenant isolation.
//!
//! Given two tenants' admin keys, the probe gives tenant A one resource of every kind (each
//! carrying a random marker), reads the deployment's OpenAPI document, and attacks every
//! operation as tenant B: A's ids in the path, body and query; A's credentials on B's subdomain
//! and B's on A's; no credential; revoked credentials; a credential whose scope excludes the
//! operation; list filters aimed at A's data; webhook endpoints aimed at internal addresses;
//! introspection, revocation and refresh of A's tokens by B; A's signed-in browser session,
//! consent form, password and code on B's authorization pages; given the operator listener and an
//! operator key, every operator route with every tenant credential, and every tenant route with
//! the operator key. Every attempt must be refused in the
//! documented way, no response to B may contain any of A's ids or markers, "not yours" must
//! answer exactly like "does not exist", and A's data must be unchanged afterwards.
//!
//! The probe talks only to the base URL it is given: tenant subdomains are resolved to the base
//! URL's address by the probe's own resolver when the base URL is an IP literal, so a probe of a
//! loopback deployment never looks anything up or connects anywhere else.

//!
//! A crate of its own: it knows the deployment only through HTTP and its OpenAPI document, so it
//! depends on nothing of the server (`bulkhead probe` is the server's command that runs it).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attacks;
mod neighbour;
mod oauth;
mod operations;
mod operator;
mod pages;
mod probe;
mod registration;
mod report;
mod scope;
mod tenants;

pub use probe::run;
pub use report::{
    Attack, Finding, OperatorTarget, ProbeConfig, Report, TenantCredentials, Verdict,
};
