//! Store-level tests against a real PostgreSQL, as the application role.
// Test helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod audit_log;
mod catalog_lint;
mod door;
mod heavy_reads;
mod jobs;
mod list_indexes;
mod rls;
mod tools;
