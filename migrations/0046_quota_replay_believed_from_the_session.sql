-- The quota triggers believe `bulkhead.quota_replay` only from a session that is not the
-- serving role's (found by review at stop 45).
--
-- `bulkhead.quota_bypassed()` (0020, 0025) skipped the charge when `current_user` was not the
-- serving role and the transaction had set `bulkhead.quota_replay = on`: moves set it, as the
-- owner, so that copied rows are not counted twice. But inside a SECURITY DEFINER function
-- `current_user` is the function's owner, and the serving role may set that setting itself:
-- with arbitrary SQL as the serving role, `SET bulkhead.quota_replay = on` followed by
-- `bulkhead.webhook_purge_finished(...)` (a definer function the serving role may call) deleted
-- a tenant's messages and attempts without lowering its counters, leaving usage with no rows
-- behind it. Now the session user must not be the serving role either: a definer function
-- changes `current_user`, never `session_user`, and the serving role can become no other role
-- (it is a member of none; `verify_app_role`). Moves and the owner's commands connect as the
-- owner and keep the bypass.

CREATE OR REPLACE FUNCTION bulkhead.quota_bypassed() RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN current_user = 'bulkhead_tenant_mover'
        OR (current_user <> 'bulkhead_app'
            AND session_user <> 'bulkhead_app'
            AND coalesce(current_setting('bulkhead.quota_replay', true), '') = 'on');
END
$$;
