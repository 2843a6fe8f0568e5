-- A published message charges its counters in one statement (issue 25).
--
-- Every message insert ran 0023's general row trigger, which calls three SECURITY DEFINER
-- functions for it (the `stored_bytes` lock, then one charge per counter), each with its own
-- `SET` clauses to apply and undo and its own statements: five statements and three function
-- calls with settings per message. Profiled in the webhook_serve benchmark's phase (a) after
-- 0042 (`perf record` on the core `serve` and PostgreSQL share): PL/pgSQL triggers were 21 % of
-- that core, most of it this one.
--
-- Now an inserted message calls one SECURITY DEFINER function, which charges every counter of
-- the message in one `INSERT ... ON CONFLICT DO UPDATE` whose rows are written in the order they
-- are listed: the tenant's `stored_bytes` first (charged with the message's bytes, or with 0 for
-- a platform message, which takes its lock all the same), then the others. Lock order, amounts,
-- which counters, and the refusal (SQLSTATE BQ001, the same detail, `stored_bytes` checked
-- before `webhook_messages`) are 0023's, with one difference: the statement charges every
-- counter before any is checked, so a message refused at `stored_bytes` has also taken its
-- `webhook_messages` row (in the same order a publish that passes takes it; the refusal rolls
-- both back). A deleted message still goes through 0023's trigger.

CREATE FUNCTION bulkhead.quota_charge_message(p_tenant uuid, p_platform boolean, p_bytes bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = 'auto'
AS $$
DECLARE
    v_kind     text;
    v_used     bigint;
    v_override bigint;
    v_delta    bigint;
    v_limit    bigint;
BEGIN
    -- Runs as the owner: only the message trigger may call it (see quota_charge, 0020).
    IF pg_trigger_depth() < 1 THEN
        RAISE EXCEPTION 'quota_charge_message runs only inside the quota triggers'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_bytes < 0 THEN
        RAISE EXCEPTION 'quota_charge_message charges an inserted message'
            USING ERRCODE = '22023';
    END IF;
    FOR v_kind, v_used, v_override IN
        INSERT INTO bulkhead.tenant_quotas AS q (tenant_id, kind, used)
        SELECT p_tenant, c.kind, c.delta
        FROM (VALUES (1, 'stored_bytes', CASE WHEN p_platform THEN 0 ELSE p_bytes END),
                     (2, CASE WHEN p_platform THEN 'platform_bytes' END, p_bytes),
                     (3, CASE WHEN p_platform THEN 'platform_messages' ELSE 'webhook_messages' END,
                      1::bigint)) AS c(n, kind, delta)
        WHERE c.kind IS NOT NULL
        ORDER BY c.n
        ON CONFLICT (tenant_id, kind) DO UPDATE
            SET used = q.used + EXCLUDED.used, updated_at = now()
            -- A platform message's `stored_bytes` row: locked (an existing row is locked before
            -- this is judged), neither rewritten nor returned, as 0023's lock left it.
            WHERE EXCLUDED.used <> 0
        RETURNING q.kind, q.used, q.override_limit
    LOOP
        -- The platform's messages are counted, never refused (refusing one would refuse the
        -- change or the audit event that raised it).
        CONTINUE WHEN p_platform;
        v_delta := CASE v_kind WHEN 'stored_bytes' THEN p_bytes ELSE 1 END;
        CONTINUE WHEN v_delta = 0;
        v_limit := coalesce(v_override,
            (SELECT l.max_value
             FROM bulkhead.quota_plan_limits l
             WHERE l.kind = v_kind
               AND l.plan = coalesce((SELECT t.plan FROM bulkhead.tenants t WHERE t.id = p_tenant),
                                     'free')));
        IF v_limit IS NOT NULL AND v_used > v_limit THEN
            RAISE EXCEPTION 'quota exceeded: %', v_kind
                USING ERRCODE = 'BQ001',
                      DETAIL = json_build_object('kind', v_kind, 'limit', v_limit,
                                                 'usage', v_used - v_delta,
                                                 'requested', v_delta)::text;
        END IF;
    END LOOP;
END
$$;
-- Still executable by every role (the trigger runs as the writer): the depth check is the guard.

CREATE FUNCTION bulkhead.quota_track_message_inserted() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = 'auto'
AS $$
DECLARE
    v_context text := current_setting('bulkhead.tenant_id', true);
BEGIN
    IF bulkhead.quota_bypassed() THEN
        RETURN NULL;
    END IF;
    -- The counters are written in the row's tenant context, as in quota_track (0023).
    IF v_context IS DISTINCT FROM NEW.tenant_id::text THEN
        PERFORM set_config('bulkhead.tenant_id', NEW.tenant_id::text, true);
    END IF;
    PERFORM bulkhead.quota_charge_message(
        NEW.tenant_id,
        NOT bulkhead.quota_tenant_message(NEW.source, NEW.event_type),
        octet_length(NEW.payload::text));
    IF v_context IS DISTINCT FROM NEW.tenant_id::text THEN
        PERFORM set_config('bulkhead.tenant_id', coalesce(v_context, ''), true);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER quota_track ON bulkhead.webhook_messages;
CREATE TRIGGER quota_track AFTER DELETE ON bulkhead.webhook_messages
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('webhook_messages');
CREATE TRIGGER quota_track_inserted AFTER INSERT ON bulkhead.webhook_messages
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track_message_inserted();
