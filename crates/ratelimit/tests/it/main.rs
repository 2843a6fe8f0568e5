//! Integration tests of the limiter: the in-process store, a real `redis-server` started by the
//! tests on a loopback port, and the concurrency limiter.
// A failing unwrap in a test or its helpers is exactly the failure report wanted.
#![allow(clippy::unwrap_used)]

mod concurrency;
mod memory;
mod redis_backend;
mod support;
