-- Webhook attempts are counted once per statement instead of once per row (issue 25).
--
-- The row trigger of 0023 charged every attempt on its own: a message lookup, the tenant's
-- `stored_bytes` row lock and two counter updates per row. A batch of successes written in one
-- statement (the dispatcher's recorder, up to 512 rows) thus updated the same two counter rows
-- hundreds of times in one transaction, and every update walked the chain of versions the
-- transaction had already made of that row (quadratic in the batch), which is where the
-- delivery benchmark's database time went; the retention sweep's deletes paid the same.
--
-- Now one statement trigger per event (PostgreSQL allows a transition table only on a trigger of
-- one event) sums the statement's rows per tenant and charges each tenant once: the same
-- counters, the same amounts, the same rules as 0023 (bytes of the attempt's response sample,
-- error and error class; `platform_bytes` when the attempt's message is a platform event, else
-- `stored_bytes`, also when the message is not found; never refused), and the same lock order
-- (the tenant's `stored_bytes` row first, tenants in id order when a statement holds several).

DROP TRIGGER quota_track ON bulkhead.webhook_attempts;

CREATE FUNCTION bulkhead.quota_track_attempts() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
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
                   coalesce(NOT bulkhead.quota_tenant_message(m.source, m.event_type), false)
                       AS platform
            FROM changed c
            LEFT JOIN bulkhead.webhook_messages m
              ON m.tenant_id = c.tenant_id AND m.id = c.message_id
            WHERE c.tenant_id = v_tenant
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

CREATE TRIGGER quota_track_inserted AFTER INSERT ON bulkhead.webhook_attempts
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.quota_track_attempts();
CREATE TRIGGER quota_track_deleted AFTER DELETE ON bulkhead.webhook_attempts
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.quota_track_attempts();
