-- The quota and wake-up triggers keep their plans (issue 25).
--
-- Every tenant transaction sets `plan_cache_mode = force_custom_plan` (the door, so that list
-- filters of the form `$n IS NULL OR col = $n` are planned with their values), and PL/pgSQL
-- obeys it: every statement of the triggers that run on each publish and each recorded attempt
-- was planned again on every call. The non-inlinable SQL functions they call (a `SET
-- search_path` keeps PostgreSQL from inlining them) were parsed and planned on every call too.
-- A profile of the delivery benchmark's publishing phase showed the server's PostgreSQL backends
-- spending most of their time in the parser and planner. None of these statements has an
-- optional filter: a plan kept for the session is the right one.

ALTER FUNCTION bulkhead.quota_track() SET plan_cache_mode = 'auto';
ALTER FUNCTION bulkhead.quota_track_attempts() SET plan_cache_mode = 'auto';
ALTER FUNCTION bulkhead.quota_charge(uuid, text, bigint, boolean) SET plan_cache_mode = 'auto';
ALTER FUNCTION bulkhead.quota_lock_bytes(uuid) SET plan_cache_mode = 'auto';
ALTER FUNCTION bulkhead.webhook_due_notify() SET plan_cache_mode = 'auto';

-- The same answers, as PL/pgSQL (an expression PL/pgSQL evaluates without the executor).
CREATE OR REPLACE FUNCTION bulkhead.quota_bypassed() RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN current_user = 'bulkhead_tenant_mover'
        OR (current_user <> 'bulkhead_app'
            AND coalesce(current_setting('bulkhead.quota_replay', true), '') = 'on');
END
$$;

CREATE OR REPLACE FUNCTION bulkhead.quota_tenant_message(p_source text, p_event_type text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN p_source = 'tenant' OR p_event_type = 'webhook.test';
END
$$;
