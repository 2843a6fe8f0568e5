-- The door's entry statement as a function that refuses inside the database (issue 23 §1,
-- issue 25).
--
-- `Store::begin` opened a tenant transaction in two round trips: `BEGIN`, then one statement
-- that set the context and returned the tenant's anchor row, which the client compared with the
-- location it expected. Now `BEGIN` and a call of this function travel as one simple query, so
-- the client never sees a row: the function sets the same transaction-local context, reads the
-- same anchor row (locked `FOR SHARE` when writing, so a freeze waits for the transaction) and
-- raises when the row is not what the caller expected:
--   BE001  no live anchor row at this location, or one that names another location (a stale
--          route after a move; the store reads the registry again and retries)
--   BE002  the tenant is frozen for a move and the transaction writes
--   BE003  the connection carries a session-level tenant context (a bug elsewhere): the store
--          clears it outside any transaction and enters again
-- An error leaves the transaction aborted; the store rolls the connection back before it
-- returns to the pool.
--
-- SECURITY INVOKER and with no `SET` clause, on purpose: a function's `SET search_path` would
-- undo, when it returns, the transaction-local `search_path` it exists to set. Its own
-- statements name their schema. The caller could run every statement in it directly; it grants
-- nothing.
--
-- Arguments are text because the caller writes them as literals into the simple query
-- (`placement::entry::sql_literal`): the tenant id, the search path, the statement timeout in
-- milliseconds (NULL keeps the database's), whether the transaction writes, whether the due
-- trigger leaves waking to the store (migration 0030), and the expected location: tier,
-- schema, database and region.
CREATE FUNCTION bulkhead.tenant_enter(
    p_tenant text,
    p_search_path text,
    p_statement_timeout text,
    p_writes boolean,
    p_wake_after_commit boolean,
    p_tier text,
    p_schema text,
    p_database text,
    p_region text
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    anchor record;
BEGIN
    -- A session-level context (left by a bug somewhere with is_local = false) is refused, not
    -- reset here: a reset inside this transaction would be undone by the ROLLBACK that ends a
    -- read-only one (door.rs). The store clears it outside any transaction and enters again.
    IF coalesce(current_setting('bulkhead.tenant_id', true), '') <> '' THEN
        RAISE EXCEPTION 'a session-level tenant context is set on this connection'
            USING ERRCODE = 'BE003';
    END IF;
    PERFORM set_config('bulkhead.tenant_id', p_tenant, true);
    IF p_writes THEN
        SELECT t.isolation_tier, t.schema_name, t.database_name, t.region,
               t.frozen_since IS NOT NULL AS frozen, t.live
          INTO anchor FROM bulkhead.tenants t WHERE t.id = p_tenant::uuid FOR SHARE;
    ELSE
        SELECT t.isolation_tier, t.schema_name, t.database_name, t.region,
               t.frozen_since IS NOT NULL AS frozen, t.live
          INTO anchor FROM bulkhead.tenants t WHERE t.id = p_tenant::uuid;
    END IF;
    IF NOT FOUND OR NOT anchor.live
       OR anchor.isolation_tier IS DISTINCT FROM p_tier
       OR anchor.schema_name IS DISTINCT FROM p_schema
       OR anchor.database_name IS DISTINCT FROM p_database
       OR anchor.region IS DISTINCT FROM p_region THEN
        RAISE EXCEPTION 'the tenant is not at the expected location' USING ERRCODE = 'BE001';
    END IF;
    IF p_writes AND anchor.frozen THEN
        RAISE EXCEPTION 'the tenant is frozen for a move' USING ERRCODE = 'BE002';
    END IF;
    -- The search path last: changed before the read above, it made PostgreSQL check and
    -- rebuild the read's cached plan on every call (about 35 us of a 150 us call, pgbench).
    PERFORM set_config('search_path', p_search_path, true);
    IF p_statement_timeout IS NOT NULL THEN
        PERFORM set_config('statement_timeout', p_statement_timeout, true);
    END IF;
    IF p_writes THEN
        IF p_wake_after_commit THEN
            PERFORM set_config('bulkhead.webhook_wake', 'after_commit', true);
        END IF;
    ELSE
        -- Read-only transactions plan each statement with its values (see door.rs).
        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    END IF;
END;
$$;

REVOKE ALL ON FUNCTION bulkhead.tenant_enter(text, text, text, boolean, boolean, text, text, text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.tenant_enter(text, text, text, boolean, boolean, text, text, text, text)
    TO bulkhead_app;
