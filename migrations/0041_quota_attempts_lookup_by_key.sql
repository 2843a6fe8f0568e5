-- The attempt log's quota trigger looks each attempt's message up by its primary key (issue 25).
--
-- 0024's statement trigger joined the statement's attempts with `webhook_messages` on the
-- message's key. The trigger keeps its plan for the session (0025), and a plan made while the
-- tenant had a few messages was a bitmap scan of all the tenant's messages (by the
-- `webhook_messages_by_age` index, on `tenant_id` alone) filtered by the join, once per attempt:
-- kept as the tenant grew, it read every message of the tenant for every attempt recorded.
-- Measured in the webhook_serve benchmark's phase (a) on a new database: 3,939 such scans read
-- 9.3 million index entries while 5,000 messages were delivered, and the attempt insert was the
-- statement found running in 128 of 300 samples of `pg_stat_activity`. Reproduced by hand: the
-- plan kept after eight recordings against three messages read all 5,003 entries per attempt
-- once 5,000 more were stored.
--
-- Now each attempt's message is a correlated lookup of both key columns, which no plan can
-- serve but by the primary key. Amounts, rules and lock order are 0024's.

CREATE OR REPLACE FUNCTION bulkhead.quota_track_attempts() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = 'auto'
AS $$
DECLARE
    v_context        text := current_setting('bulkhead.tenant_id', true);
    v_sign           bigint := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
    v_tenant         uuid;
    v_rows           bigint;
    v_tenant_bytes   bigint;
    v_platform_bytes bigint;
BEGIN
    IF bulkhead.quota_bypassed() THEN
        RETURN NULL;
    END IF;
    FOR v_tenant IN SELECT DISTINCT c.tenant_id FROM changed c ORDER BY c.tenant_id LOOP
        -- The counters are written in the rows' tenant context (their RLS), and the message
        -- lookup below sees only that tenant's messages.
        IF current_setting('bulkhead.tenant_id', true) IS DISTINCT FROM v_tenant::text THEN
            PERFORM set_config('bulkhead.tenant_id', v_tenant::text, true);
        END IF;
        SELECT count(*),
               coalesce(sum(x.bytes) FILTER (WHERE NOT x.platform), 0),
               coalesce(sum(x.bytes) FILTER (WHERE x.platform), 0)
          INTO v_rows, v_tenant_bytes, v_platform_bytes
        FROM (
            SELECT coalesce(octet_length(c.response_sample), 0)
                   + coalesce(octet_length(c.error), 0)
                   + coalesce(octet_length(c.error_class), 0) AS bytes,
                   coalesce((SELECT NOT bulkhead.quota_tenant_message(m.source, m.event_type)
                             FROM bulkhead.webhook_messages m
                             WHERE m.tenant_id = c.tenant_id AND m.id = c.message_id), false)
                       AS platform
            FROM changed c
            WHERE c.tenant_id = v_tenant
            -- Kept a subquery, so each row's lookup runs once for both sums.
            OFFSET 0
        ) x;
        PERFORM bulkhead.quota_lock_bytes(v_tenant);
        PERFORM bulkhead.quota_charge(v_tenant, 'stored_bytes', v_sign * v_tenant_bytes, false);
        PERFORM bulkhead.quota_charge(v_tenant, 'platform_bytes', v_sign * v_platform_bytes, false);
        PERFORM bulkhead.quota_charge(v_tenant, 'webhook_attempts', v_sign * v_rows, false);
    END LOOP;
    IF current_setting('bulkhead.tenant_id', true) IS DISTINCT FROM v_context THEN
        PERFORM set_config('bulkhead.tenant_id', coalesce(v_context, ''), true);
    END IF;
    RETURN NULL;
END
$$;
