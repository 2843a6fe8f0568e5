use std::borrow::Cow;

/// What can go wrong in the store. Callers map these to HTTP in one place (the server).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No row, or a row of another tenant (indistinguishable on purpose).
    #[error("not found")]
    NotFound,
    /// A uniqueness constraint refused the write; names the constraint.
    #[error("conflicts with an existing record ({constraint})")]
    Conflict {
        /// The violated constraint.
        constraint: String,
    },
    /// A check or type constraint refused the write.
    #[error("refused by the database: {0}")]
    Invalid(Cow<'static, str>),
    /// The write would put a resource outside the acting credential's resource prefix.
    #[error("outside the credential's resource prefix")]
    OutsideResourcePrefix,
    /// The database refused access: a sign of a missing context or a misconfigured role. Fail closed.
    #[error("the database refused access")]
    AccessDenied,
    /// The deployment is not set up the way the store's invariants need.
    #[error("unsafe database configuration: {0}")]
    UnsafeConfiguration(String),
    /// The database could not be reached or failed.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// The tenant is frozen for a move (or between a move's switch writes): retry shortly.
    #[error("the tenant is being moved; retry shortly")]
    TenantMoving,
    /// The tenant's data lives in a region this process does not serve (named).
    #[error("the tenant's data lives in region {0}, which this process does not serve")]
    WrongRegion(String),
    /// The location a transaction was opened in does not hold the tenant (a stale route). The
    /// router retries once with a fresh one; callers see [`StoreError::TenantMoving`] at most.
    #[error("the tenant is not at the location it was routed to")]
    LocationMismatch,
    /// A statement ran past the transaction's `statement_timeout` (SQLSTATE 57014): retryable.
    #[error("the statement took too long")]
    Timeout,
    /// The write would pass the tenant's quota of `kind` (SQLSTATE BQ001, migration 0020); the
    /// statement and its transaction are rolled back, nothing was stored.
    #[error("quota {kind} exceeded: {usage} of {limit} used, {requested} more asked")]
    QuotaExceeded {
        /// The kind (`sessions`, `stored_bytes`, ...).
        kind: String,
        /// The limit in force.
        limit: i64,
        /// The usage before the refused write.
        usage: i64,
        /// What the refused write would have added.
        requested: i64,
    },
    /// An append-only log no longer matches its own latest signed checkpoint (leaves removed or
    /// rewritten, or events and leaves disagree): nothing was signed or written. Not retryable;
    /// the log must be restored.
    #[error("the audit log failed its consistency check: {0}")]
    LogInconsistent(Cow<'static, str>),
    /// A tenant's sealed secret opens under no key this deployment holds: sealed under another
    /// deployment's data key or a destroyed one (an imported or restored row). Not retryable:
    /// the secret must be replaced (a webhook endpoint's rotation, a tool made again).
    #[error("the {0} secret cannot be opened in this deployment: replace it")]
    SecretUnopenable(&'static str),
    /// Migrations failed.
    #[error("migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => return StoreError::NotFound,
            sqlx::Error::Database(db) => {
                // SQLSTATE classes: 23505 unique, 23514 check, 22P02 bad text repr,
                // 42501 insufficient privilege / RLS WITH CHECK failure.
                match db.code().as_deref() {
                    Some("23505") => {
                        return StoreError::Conflict {
                            constraint: db.constraint().unwrap_or("unique").to_owned(),
                        }
                    }
                    // 22P05: a NUL in text or JSON; 22021: bad byte sequence for the encoding.
                    Some("23514") | Some("23502") | Some("22P02") | Some("22001")
                    | Some("22P05") | Some("22021") => {
                        return StoreError::Invalid(Cow::Owned(
                            db.constraint().unwrap_or("constraint").to_owned(),
                        ))
                    }
                    Some("42501") => return StoreError::AccessDenied,
                    Some("57014") => return StoreError::Timeout,
                    Some("BQ001") => {
                        if let Some(refusal) = quota_refusal(db.as_ref()) {
                            return refusal;
                        }
                    }
                    // A foreign key names no row of this tenant (composite keys include
                    // tenant_id): to the caller, the referenced thing does not exist.
                    Some("23503") => return StoreError::NotFound,
                    _ => {}
                }
            }
            _ => {}
        }
        StoreError::Database(err)
    }
}

/// The refusal a quota trigger raised: its detail is JSON naming the kind, limit and usage.
fn quota_refusal(db: &dyn sqlx::error::DatabaseError) -> Option<StoreError> {
    #[derive(serde::Deserialize)]
    struct Detail {
        kind: String,
        limit: i64,
        usage: i64,
        requested: i64,
    }
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
    let detail: Detail = serde_json::from_str(pg.detail()?).ok()?;
    Some(StoreError::QuotaExceeded {
        kind: detail.kind,
        limit: detail.limit,
        usage: detail.usage,
        requested: detail.requested,
    })
}
