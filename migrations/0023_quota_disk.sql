-- Quotas bound disk (review 2: H1, M4, M5, L1, L3; docs/quotas.md).
--
-- * Webhook attempts (the attempt log: a row, up to 4 KiB of response sample, an error) are
--   counted: rows in `webhook_attempts`, bytes in `stored_bytes` (or `platform_bytes` for the
--   attempts of platform messages). Counted, never refused: the delivery worker never fails a
--   delivery for quota; the tenant actions that cause attempts (resend, recover, endpoint test)
--   are refused instead, with bulkhead.quota_require_room, while the counters are at the limit.
-- * Endpoint test messages (`webhook.test`, written with source `platform` because the type is
--   in a platform namespace) are tenant-initiated: counted in `webhook_messages` and
--   `stored_bytes` and refused like the tenant's own messages.
-- * Other platform messages (audit stream, session and key events) are counted apart, in
--   `platform_messages` and `platform_bytes`, never refused, so they can no longer fill the
--   counters that refuse the tenant's writes.
-- * Screening decisions are counted (`screening_decisions`), never refused: a security record,
--   like audit events.
-- * Users and agents count while `active` (disabling frees room: neither can be deleted); API
--   keys count while `active` (a rotation moves the old key out before its successor is stored,
--   so rotating at the limit is net zero).
-- * The serving role can no longer write `tenant_quotas`: the counters are moved only by
--   bulkhead.quota_charge, now SECURITY DEFINER and refusing to run outside a trigger; and
--   `used` is never negative.

INSERT INTO bulkhead.quota_plan_limits (plan, kind, max_value)
SELECT p.plan, k.kind, NULL
FROM (VALUES ('free'), ('standard'), ('enterprise')) p(plan),
     (VALUES ('platform_messages'), ('platform_bytes'), ('webhook_attempts'),
             ('screening_decisions')) k(kind);

------------------------------------------------------------------------------------------------
-- L1: only the trigger functions write counters.
REVOKE INSERT, UPDATE ON bulkhead.tenant_quotas FROM bulkhead_app;
ALTER TABLE bulkhead.tenant_quotas ADD CONSTRAINT tenant_quotas_used_not_negative
    CHECK (used >= 0);

CREATE OR REPLACE FUNCTION bulkhead.quota_charge(p_tenant uuid, p_kind text, p_delta bigint,
                                                 p_enforce boolean) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_used     bigint;
    v_override bigint;
    v_limit    bigint;
BEGIN
    -- Runs as the owner: called only by quota_track, a row trigger, which computes the delta
    -- from the row written. Called directly (trigger depth 0), it would let any role set any
    -- counter.
    IF pg_trigger_depth() < 1 THEN
        RAISE EXCEPTION 'quota_charge runs only inside the quota triggers'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_delta = 0 THEN
        RETURN;
    END IF;
    IF p_delta < 0 THEN
        UPDATE bulkhead.tenant_quotas q
        SET used = greatest(q.used + p_delta, 0), updated_at = now()
        WHERE q.tenant_id = p_tenant AND q.kind = p_kind;
        RETURN;
    END IF;
    INSERT INTO bulkhead.tenant_quotas AS q (tenant_id, kind, used)
    VALUES (p_tenant, p_kind, p_delta)
    ON CONFLICT (tenant_id, kind) DO UPDATE SET used = q.used + EXCLUDED.used, updated_at = now()
    RETURNING q.used, q.override_limit INTO v_used, v_override;
    IF NOT p_enforce THEN
        RETURN;
    END IF;
    v_limit := coalesce(v_override,
        (SELECT l.max_value
         FROM bulkhead.quota_plan_limits l
         WHERE l.kind = p_kind
           AND l.plan = coalesce((SELECT t.plan FROM bulkhead.tenants t WHERE t.id = p_tenant),
                                 'free')));
    IF v_limit IS NOT NULL AND v_used > v_limit THEN
        RAISE EXCEPTION 'quota exceeded: %', p_kind
            USING ERRCODE = 'BQ001',
                  DETAIL = json_build_object('kind', p_kind, 'limit', v_limit,
                                             'usage', v_used - p_delta,
                                             'requested', p_delta)::text;
    END IF;
END
$$;
-- Still executable by every role (the triggers run as the writer): the depth check is the guard.

-- Takes the tenant's `stored_bytes` counter row lock (creating the row if need be) without
-- changing it. Every write to a table whose rows weigh bytes takes it first, whatever counters
-- it then charges (its kind, `platform_bytes`, `webhook_attempts`, ...) and in whatever order its
-- rows come (a batch of attempts mixes the tenant's and the platform's): one row every such
-- writer of the tenant queues on first, so two of them never hold one counter each while
-- waiting for the other's.
CREATE FUNCTION bulkhead.quota_lock_bytes(p_tenant uuid) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_trigger_depth() < 1 THEN
        RAISE EXCEPTION 'quota_lock_bytes runs only inside the quota triggers'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM 1 FROM bulkhead.tenant_quotas q
    WHERE q.tenant_id = p_tenant AND q.kind = 'stored_bytes' FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO bulkhead.tenant_quotas (tenant_id, kind, used)
        VALUES (p_tenant, 'stored_bytes', 0)
        ON CONFLICT (tenant_id, kind) DO NOTHING;
        PERFORM 1 FROM bulkhead.tenant_quotas q
        WHERE q.tenant_id = p_tenant AND q.kind = 'stored_bytes' FOR UPDATE;
    END IF;
END
$$;

-- The check of a tenant action that makes rows counted but never refused (attempts): refuses
-- with BQ001, as a write would, when the tenant's counter of p_kind plus p_requested passes its
-- limit. A read (the serving role's own tenant, under RLS), not a reservation.
CREATE FUNCTION bulkhead.quota_require_room(p_kind text, p_requested bigint) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid := NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid;
    v_used   bigint;
    v_limit  bigint;
BEGIN
    SELECT coalesce(q.used, 0), coalesce(q.override_limit, l.max_value)
    INTO v_used, v_limit
    FROM bulkhead.quota_plan_limits l
    LEFT JOIN bulkhead.tenant_quotas q ON q.tenant_id = v_tenant AND q.kind = l.kind
    WHERE l.kind = p_kind
      AND l.plan = coalesce((SELECT t.plan FROM bulkhead.tenants t WHERE t.id = v_tenant),
                            'free');
    IF v_limit IS NOT NULL AND v_used + p_requested > v_limit THEN
        RAISE EXCEPTION 'quota exceeded: %', p_kind
            USING ERRCODE = 'BQ001',
                  DETAIL = json_build_object('kind', p_kind, 'limit', v_limit,
                                             'usage', v_used,
                                             'requested', p_requested)::text;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION bulkhead.quota_require_room(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.quota_require_room(text, bigint) TO bulkhead_app;

-- Whether a message counts as the tenant's (its own, or an endpoint test it asked for).
CREATE FUNCTION bulkhead.quota_tenant_message(p_source text, p_event_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_source = 'tenant' OR p_event_type = 'webhook.test'
$$;

CREATE OR REPLACE FUNCTION bulkhead.quota_track() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind       text := TG_ARGV[0];
    v_bytes_kind text := 'stored_bytes';
    v_tenant     uuid;
    v_rows       bigint := 0;
    v_bytes      bigint := 0;
    v_enforce    boolean := true;
    v_new        boolean := TG_OP IN ('INSERT', 'UPDATE');
    v_old        boolean := TG_OP IN ('UPDATE', 'DELETE');
    v_source     text;
    v_event      text;
    v_context    text := current_setting('bulkhead.tenant_id', true);
BEGIN
    IF bulkhead.quota_bypassed() THEN
        RETURN NULL;
    END IF;
    IF v_new THEN
        v_tenant := NEW.tenant_id;
    ELSE
        v_tenant := OLD.tenant_id;
    END IF;
    -- The counters are written by the owner (quota_charge), under the counters' RLS: in the
    -- row's tenant context. The serving role is always in it already (the row passed its RLS);
    -- a superuser writing without a context (a seed) gets it for the charge, then its own back.
    IF v_context IS DISTINCT FROM v_tenant::text THEN
        PERFORM set_config('bulkhead.tenant_id', v_tenant::text, true);
    END IF;
    IF TG_TABLE_NAME = 'agent_sessions' THEN
        IF v_new THEN
            v_rows := v_rows + 1;
            v_bytes := v_bytes + octet_length(NEW.title) + octet_length(NEW.metadata::text);
        END IF;
        IF v_old THEN
            v_rows := v_rows - 1;
            v_bytes := v_bytes - octet_length(OLD.title) - octet_length(OLD.metadata::text);
        END IF;
    ELSIF TG_TABLE_NAME IN ('api_keys', 'users', 'agents') THEN
        -- Active rows only: revoking or expiring a key, disabling a user or an agent frees room.
        -- A rotating key is not counted: its successor takes its place.
        IF v_new AND NEW.status = 'active' THEN
            v_rows := v_rows + 1;
        END IF;
        IF v_old AND OLD.status = 'active' THEN
            v_rows := v_rows - 1;
        END IF;
    ELSIF TG_TABLE_NAME = 'roles' THEN
        IF v_new AND NOT NEW.built_in THEN
            v_rows := v_rows + 1;
        END IF;
        IF v_old AND NOT OLD.built_in THEN
            v_rows := v_rows - 1;
        END IF;
    ELSIF TG_TABLE_NAME IN ('tools', 'tool_versions') THEN
        IF v_new THEN
            v_rows := v_rows + 1;
            v_bytes := v_bytes + octet_length(NEW.description)
                       + octet_length(NEW.input_schema::text);
        END IF;
        IF v_old THEN
            v_rows := v_rows - 1;
            v_bytes := v_bytes - octet_length(OLD.description)
                       - octet_length(OLD.input_schema::text);
        END IF;
    ELSIF TG_TABLE_NAME = 'webhook_endpoints' THEN
        IF v_new THEN
            v_rows := v_rows + 1;
            v_bytes := v_bytes + octet_length(NEW.url) + octet_length(NEW.description)
                       + octet_length(NEW.headers::text);
        END IF;
        IF v_old THEN
            v_rows := v_rows - 1;
            v_bytes := v_bytes - octet_length(OLD.url) - octet_length(OLD.description)
                       - octet_length(OLD.headers::text);
        END IF;
    ELSIF TG_TABLE_NAME = 'webhook_messages' THEN
        -- The tenant's messages (and endpoint tests) are refused at the limit; the platform's
        -- own (audit stream, session and key events) are counted apart and never refused:
        -- refusing one would refuse the change or the audit event that raised it.
        IF v_new THEN
            v_source := NEW.source;
            v_event := NEW.event_type;
            v_rows := v_rows + 1;
            v_bytes := v_bytes + octet_length(NEW.payload::text);
        ELSE
            v_source := OLD.source;
            v_event := OLD.event_type;
            v_rows := v_rows - 1;
            v_bytes := v_bytes - octet_length(OLD.payload::text);
        END IF;
        IF NOT bulkhead.quota_tenant_message(v_source, v_event) THEN
            v_kind := 'platform_messages';
            v_bytes_kind := 'platform_bytes';
            v_enforce := false;
        END IF;
    ELSIF TG_TABLE_NAME = 'webhook_attempts' THEN
        -- Written by the delivery worker: counted, never refused (a delivery never fails for
        -- quota). Charged where the message is: the tenant's bytes, or the platform's.
        v_enforce := false;
        IF v_new THEN
            v_rows := v_rows + 1;
            v_bytes := v_bytes + coalesce(octet_length(NEW.response_sample), 0)
                       + coalesce(octet_length(NEW.error), 0)
                       + coalesce(octet_length(NEW.error_class), 0);
            SELECT m.source, m.event_type INTO v_source, v_event
            FROM bulkhead.webhook_messages m
            WHERE m.tenant_id = NEW.tenant_id AND m.id = NEW.message_id;
        END IF;
        IF v_old THEN
            v_rows := v_rows - 1;
            v_bytes := v_bytes - coalesce(octet_length(OLD.response_sample), 0)
                       - coalesce(octet_length(OLD.error), 0)
                       - coalesce(octet_length(OLD.error_class), 0);
            SELECT m.source, m.event_type INTO v_source, v_event
            FROM bulkhead.webhook_messages m
            WHERE m.tenant_id = OLD.tenant_id AND m.id = OLD.message_id;
        END IF;
        -- A message not found (deleted in this same statement) is charged as the tenant's.
        IF v_source IS NOT NULL AND NOT bulkhead.quota_tenant_message(v_source, v_event) THEN
            v_bytes_kind := 'platform_bytes';
        END IF;
    ELSIF TG_TABLE_NAME IN ('audit_events', 'screening_decisions') THEN
        -- Security records: counted, never refused.
        v_enforce := false;
        IF v_new THEN
            v_rows := v_rows + 1;
        END IF;
        IF v_old THEN
            v_rows := v_rows - 1;
        END IF;
    ELSE
        -- role_assignments: one row each.
        IF v_new THEN
            v_rows := v_rows + 1;
        END IF;
        IF v_old THEN
            v_rows := v_rows - 1;
        END IF;
    END IF;
    -- The lock order that keeps two writers of two kinds apart (see 0020): the tenant's
    -- `stored_bytes` counter first, for every table whose rows weigh bytes, even when this row
    -- charges `platform_bytes` or no bytes at all.
    IF (v_rows <> 0 OR v_bytes <> 0)
       AND TG_TABLE_NAME IN ('agent_sessions', 'tools', 'tool_versions', 'webhook_endpoints',
                             'webhook_messages', 'webhook_attempts') THEN
        PERFORM bulkhead.quota_lock_bytes(v_tenant);
    END IF;
    PERFORM bulkhead.quota_charge(v_tenant, v_bytes_kind, v_bytes, v_enforce);
    PERFORM bulkhead.quota_charge(v_tenant, v_kind, v_rows, v_enforce);
    IF v_context IS DISTINCT FROM v_tenant::text THEN
        PERFORM set_config('bulkhead.tenant_id', coalesce(v_context, ''), true);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER quota_track_update AFTER UPDATE OF status ON bulkhead.users
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('users');
CREATE TRIGGER quota_track_update AFTER UPDATE OF status ON bulkhead.agents
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('agents');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.webhook_attempts
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('webhook_attempts');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.screening_decisions
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('screening_decisions');

------------------------------------------------------------------------------------------------
-- M4: the retention sweep. Deletes up to p_limit of the calling tenant's messages created before
-- p_before whose deliveries are all finished (none pending or delivering), with their
-- deliveries and attempts, attempts first so the quota trigger still finds each attempt's
-- message and decrements the counter it charged. Runs as the owner (the serving role cannot
-- delete attempts or deliveries), only in the tenant context set for the transaction, under
-- RLS. The delivery worker calls it (server/src/worker.rs) with its retention window.
CREATE INDEX webhook_messages_by_age ON bulkhead.webhook_messages (tenant_id, created_at);

CREATE FUNCTION bulkhead.webhook_purge_finished(p_before timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid := NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid;
    v_ids    uuid[];
    v_done   integer;
BEGIN
    IF v_tenant IS NULL OR p_limit IS NULL OR p_limit < 1 OR p_limit > 10000
       OR p_before IS NULL THEN
        RAISE EXCEPTION 'webhook_purge_finished: a tenant context, a time and a limit 1..10000'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(x.id) INTO v_ids FROM (
        SELECT m.id
        FROM bulkhead.webhook_messages m
        WHERE m.tenant_id = v_tenant
          AND m.created_at < p_before
          AND NOT EXISTS (
              SELECT 1 FROM bulkhead.webhook_deliveries d
              WHERE d.tenant_id = m.tenant_id AND d.message_id = m.id
                AND d.status IN ('pending', 'delivering'))
        ORDER BY m.created_at
        LIMIT p_limit
        FOR UPDATE OF m SKIP LOCKED
    ) x;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM bulkhead.webhook_attempts a
    WHERE a.tenant_id = v_tenant AND a.message_id = ANY (v_ids);
    DELETE FROM bulkhead.webhook_deliveries d
    WHERE d.tenant_id = v_tenant AND d.message_id = ANY (v_ids);
    DELETE FROM bulkhead.webhook_messages m
    WHERE m.tenant_id = v_tenant AND m.id = ANY (v_ids);
    GET DIAGNOSTICS v_done = ROW_COUNT;
    RETURN v_done;
END
$$;
REVOKE ALL ON FUNCTION bulkhead.webhook_purge_finished(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.webhook_purge_finished(timestamptz, integer) TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- The counters whose meaning changed, recounted from the rows, one tenant context at a time.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT id FROM bulkhead.tenants LOOP
        PERFORM set_config('bulkhead.tenant_id', t.id::text, true);
        INSERT INTO bulkhead.tenant_quotas AS q (tenant_id, kind, used)
        SELECT t.id, k.kind, k.used FROM (
            SELECT 'users' AS kind, count(*) AS used FROM bulkhead.users
                WHERE tenant_id = t.id AND status = 'active'
            UNION ALL SELECT 'agents', count(*) FROM bulkhead.agents
                WHERE tenant_id = t.id AND status = 'active'
            UNION ALL SELECT 'api_keys', count(*) FROM bulkhead.api_keys
                WHERE tenant_id = t.id AND status = 'active'
            UNION ALL SELECT 'webhook_messages', count(*) FROM bulkhead.webhook_messages
                WHERE tenant_id = t.id AND bulkhead.quota_tenant_message(source, event_type)
            UNION ALL SELECT 'platform_messages', count(*) FROM bulkhead.webhook_messages
                WHERE tenant_id = t.id AND NOT bulkhead.quota_tenant_message(source, event_type)
            UNION ALL SELECT 'webhook_attempts', count(*) FROM bulkhead.webhook_attempts
                WHERE tenant_id = t.id
            UNION ALL SELECT 'screening_decisions', count(*) FROM bulkhead.screening_decisions
                WHERE tenant_id = t.id
            UNION ALL SELECT 'platform_bytes', coalesce(sum(b), 0)::bigint FROM (
                SELECT octet_length(payload::text) AS b FROM bulkhead.webhook_messages
                    WHERE tenant_id = t.id
                      AND NOT bulkhead.quota_tenant_message(source, event_type)
                UNION ALL SELECT coalesce(octet_length(a.response_sample), 0)
                                 + coalesce(octet_length(a.error), 0)
                                 + coalesce(octet_length(a.error_class), 0)
                    FROM bulkhead.webhook_attempts a
                    JOIN bulkhead.webhook_messages m
                      ON m.tenant_id = a.tenant_id AND m.id = a.message_id
                    WHERE a.tenant_id = t.id
                      AND NOT bulkhead.quota_tenant_message(m.source, m.event_type)
            ) platform
            UNION ALL SELECT 'stored_bytes', coalesce(sum(b), 0)::bigint FROM (
                SELECT octet_length(title) + octet_length(metadata::text) AS b
                    FROM bulkhead.agent_sessions WHERE tenant_id = t.id
                UNION ALL SELECT octet_length(description) + octet_length(input_schema::text)
                    FROM bulkhead.tools WHERE tenant_id = t.id
                UNION ALL SELECT octet_length(description) + octet_length(input_schema::text)
                    FROM bulkhead.tool_versions WHERE tenant_id = t.id
                UNION ALL SELECT octet_length(url) + octet_length(description)
                                 + octet_length(headers::text)
                    FROM bulkhead.webhook_endpoints WHERE tenant_id = t.id
                UNION ALL SELECT octet_length(payload::text) FROM bulkhead.webhook_messages
                    WHERE tenant_id = t.id AND bulkhead.quota_tenant_message(source, event_type)
                UNION ALL SELECT coalesce(octet_length(a.response_sample), 0)
                                 + coalesce(octet_length(a.error), 0)
                                 + coalesce(octet_length(a.error_class), 0)
                    FROM bulkhead.webhook_attempts a
                    LEFT JOIN bulkhead.webhook_messages m
                      ON m.tenant_id = a.tenant_id AND m.id = a.message_id
                    WHERE a.tenant_id = t.id
                      AND (m.id IS NULL OR bulkhead.quota_tenant_message(m.source, m.event_type))
            ) tenant_bytes
        ) k
        ON CONFLICT (tenant_id, kind) DO UPDATE SET used = EXCLUDED.used, updated_at = now();
    END LOOP;
    PERFORM set_config('bulkhead.tenant_id', '', true);
END
$$;
