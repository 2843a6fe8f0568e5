-- Publishing no longer sends NOTIFY from inside the publishing transaction (issue 25).
--
-- A transaction that notifies takes one cluster-wide lock from its pre-commit to the end of its
-- commit (PostgreSQL's PreCommit_Notify), so every notifying transaction of the cluster commits
-- one at a time; with synchronous_commit = on that is one WAL flush at a time, and group commit
-- is lost (pgbench, 8 clients, one insert per transaction: 10,700-12,200 commits/s without the
-- NOTIFY, 4,830-4,950 with it; docs/webhooks.md). Every publish notified through the due
-- trigger below.
--
-- A transaction opened by the store's door for writing now sets `bulkhead.webhook_wake` to
-- `after_commit`: the trigger then only leaves its mark (`bulkhead.webhook_due`), and the store
-- wakes its own process's dispatchers in memory after the commit and every other process with
-- one NOTIFY of its own, outside the writers' transactions (crates/store/src/placement/wake.rs).
-- Any other writer (the CLI's direct transactions, moves, a transaction without the setting)
-- notifies as before.
CREATE OR REPLACE FUNCTION bulkhead.webhook_due_notify() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = 'auto'
AS $$
BEGIN
    IF coalesce(current_setting('bulkhead.webhook_wake', true), '') <> 'after_commit' THEN
        PERFORM pg_notify('bulkhead_webhooks', '');
    END IF;
    -- Read by the store before committing (crates/store/src/placement/door.rs).
    PERFORM set_config('bulkhead.webhook_due', 'on', true);
    RETURN NULL;
END
$$;
