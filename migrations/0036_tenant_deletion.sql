-- Tenant deletion with verifiable erasure (issue 19): the schedule and the purge's progress, one
-- row per tenant, in the registry. `scheduled` (suspended, grace period running, cancellable) →
-- `purging` (every step idempotent; a crash resumes here) → `purged` (a tombstone: the tenant's
-- id, the times, the row counts removed and its audit log's last signed checkpoint; never its
-- slug, name or data). Written and read by the owner role only: the serving role has no privilege
-- (the operator plane's, like `operator_keys`).
CREATE TABLE bulkhead.tenant_deletions (
    tenant_id         uuid        PRIMARY KEY,
    state             text        NOT NULL DEFAULT 'scheduled'
                                  CHECK (state IN ('scheduled', 'purging', 'purged')),
    -- The status to restore on cancel.
    previous_status   text        NOT NULL CHECK (previous_status IN ('active', 'suspended')),
    grace_seconds     bigint      NOT NULL CHECK (grace_seconds BETWEEN 0 AND 7776000),
    scheduled_at      timestamptz NOT NULL DEFAULT now(),
    purge_after       timestamptz NOT NULL,
    scheduled_by      text        NOT NULL CHECK (length(scheduled_by) <= 200),
    purge_started_at  timestamptz,
    purged_at         timestamptz,
    -- Rows removed, per location, then per table: {"shared in region default": {"api_keys": 2}}.
    removed           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The tenant's audit log's last signed checkpoint, taken before anything was removed.
    tenant_checkpoint jsonb,
    attempts          integer     NOT NULL DEFAULT 0,
    last_error        text        CHECK (length(last_error) <= 1000),
    CHECK ((state = 'scheduled') = (purge_started_at IS NULL)),
    CHECK ((state = 'purged') = (purged_at IS NOT NULL))
);
CREATE INDEX tenant_deletions_due ON bulkhead.tenant_deletions (purge_after)
    WHERE state <> 'purged';
REVOKE ALL ON bulkhead.tenant_deletions FROM PUBLIC;
