//! Tenants' tool input schemas: the bounds they are held to and the cache of compiled ones
//! (evaluation itself runs on the bounded pool of `bulkhead_schema`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// Largest input schema, serialized.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// The bounds a tenant's input schema is held to (`bulkhead_schema`): the shipped defaults,
/// with the size cap this API documents.
pub(crate) fn schema_limits() -> bulkhead_schema::Limits {
    bulkhead_schema::Limits {
        max_bytes: MAX_SCHEMA_BYTES,
        ..bulkhead_schema::Limits::default()
    }
}

/// Key of a compiled input schema: the tenant is part of it, so one tenant's entry can never
/// answer for another's tool even if ids collided.
pub(crate) type SchemaKey = (String, String, i32);

/// A stored schema and what compiling it gave (refusals are cached too: a stored schema that no
/// longer passes the bounds is not re-checked on every call).
#[derive(Debug)]
pub(crate) struct CachedSchema {
    pub(crate) schema: Value,
    pub(crate) compiled: Result<bulkhead_schema::BoundedSchema, bulkhead_schema::SchemaError>,
}

/// Compiled input schemas (`AppState::schema_cache`), weighed by their approximate size.
pub(crate) type SchemaCache = moka::sync::Cache<SchemaKey, Arc<CachedSchema>>;

/// At most about 64 MiB of compiled schemas, each kept `idle` (the settings' schema cache
/// lifetime) after its last use.
pub(crate) fn new_schema_cache(idle: Duration) -> SchemaCache {
    moka::sync::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(|_, v: &Arc<CachedSchema>| {
            let bytes = v
                .compiled
                .as_ref()
                .map_or(0, bulkhead_schema::BoundedSchema::approx_bytes)
                .saturating_add(MAX_SCHEMA_BYTES as u64);
            u32::try_from(bytes).unwrap_or(u32::MAX)
        })
        .time_to_idle(idle)
        .build()
}
