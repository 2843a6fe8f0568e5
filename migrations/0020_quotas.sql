-- Per-tenant quotas (issue 28, item 4; docs/quotas.md): rows per resource kind, stored bytes of
-- tenant-supplied text and JSON, webhook messages retained. Enforced here, in the transaction
-- that writes: every counted INSERT, UPDATE or DELETE adjusts the tenant's counter row for its
-- kind in the same transaction. The counter row's UPDATE takes its row lock, so concurrent
-- writers of one tenant and kind queue behind each other until commit and none can see a stale
-- count; the trigger refuses with SQLSTATE BQ001 when the new total would pass the limit, and
-- the refused statement (with its counter change) is rolled back. Audit events are counted, at
-- commit (a deferred trigger, so the counter is held only briefly), and never refused.

------------------------------------------------------------------------------------------------
-- The checked-in defaults per plan. Not tenant data: the same for every tenant of a plan. A NULL
-- limit means counted, never refused. Changing a default is a new migration.
CREATE TABLE bulkhead.quota_plan_limits (
    plan      text   NOT NULL CHECK (plan IN ('free', 'standard', 'enterprise')),
    kind      text   NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    max_value bigint CHECK (max_value >= 0),
    PRIMARY KEY (plan, kind)
);
GRANT SELECT ON bulkhead.quota_plan_limits TO bulkhead_app;

INSERT INTO bulkhead.quota_plan_limits (plan, kind, max_value) VALUES
    ('free', 'sessions', 1000),
    ('standard', 'sessions', 100000),
    ('enterprise', 'sessions', 10000000),
    ('free', 'users', 25),
    ('standard', 'users', 1000),
    ('enterprise', 'users', 100000),
    ('free', 'agents', 25),
    ('standard', 'agents', 1000),
    ('enterprise', 'agents', 100000),
    ('free', 'api_keys', 25),
    ('standard', 'api_keys', 500),
    ('enterprise', 'api_keys', 10000),
    ('free', 'roles', 10),
    ('standard', 'roles', 200),
    ('enterprise', 'roles', 2000),
    ('free', 'role_assignments', 100),
    ('standard', 'role_assignments', 10000),
    ('enterprise', 'role_assignments', 1000000),
    ('free', 'webhook_endpoints', 5),
    ('standard', 'webhook_endpoints', 50),
    ('enterprise', 'webhook_endpoints', 500),
    ('free', 'webhook_messages', 10000),
    ('standard', 'webhook_messages', 1000000),
    ('enterprise', 'webhook_messages', 100000000),
    ('free', 'tools', 20),
    ('standard', 'tools', 500),
    ('enterprise', 'tools', 5000),
    ('free', 'tool_versions', 200),
    ('standard', 'tool_versions', 10000),
    ('enterprise', 'tool_versions', 200000),
    -- 50 MiB, 5 GiB, 500 GiB.
    ('free', 'stored_bytes', 52428800),
    ('standard', 'stored_bytes', 5368709120),
    ('enterprise', 'stored_bytes', 536870912000),
    ('free', 'audit_events', NULL),
    ('standard', 'audit_events', NULL),
    ('enterprise', 'audit_events', NULL);

------------------------------------------------------------------------------------------------
-- tenant_quotas: one counter row per tenant and kind, and the operator override of its limit
-- (NULL: the plan default). Tenant data (it moves with the tenant). The application role may
-- write only the counter, never the override: the operator sets that as the owner.
CREATE TABLE bulkhead.tenant_quotas (
    tenant_id      uuid        NOT NULL,
    kind           text        NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    used           bigint      NOT NULL DEFAULT 0,
    override_limit bigint      CHECK (override_limit >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind)
);
ALTER TABLE bulkhead.tenant_quotas ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.tenant_quotas FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.tenant_quotas
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT ON bulkhead.tenant_quotas TO bulkhead_app;
GRANT INSERT (tenant_id, kind, used, updated_at) ON bulkhead.tenant_quotas TO bulkhead_app;
GRANT UPDATE (used, updated_at) ON bulkhead.tenant_quotas TO bulkhead_app;
GRANT SELECT, DELETE ON bulkhead.tenant_quotas TO bulkhead_tenant_mover;

------------------------------------------------------------------------------------------------
-- A move copies every tenant table verbatim, this one included, so its triggers must not count
-- the copied rows again: the move marks its transactions with bulkhead.quota_replay. Only a role
-- other than the serving role is believed (the serving role setting it gains nothing), and the
-- mover role, which only deletes old copies, is never counted.
CREATE FUNCTION bulkhead.quota_bypassed() RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT current_user = 'bulkhead_tenant_mover'
        OR (current_user <> 'bulkhead_app'
            AND coalesce(current_setting('bulkhead.quota_replay', true), '') = 'on')
$$;

-- Adds p_delta to the tenant counter of p_kind; when p_enforce and the total grows past the
-- limit (the override, else the plan default), refuses with BQ001 and a JSON detail naming the
-- kind, the limit and the usage before this write.
CREATE FUNCTION bulkhead.quota_charge(p_tenant uuid, p_kind text, p_delta bigint,
                                      p_enforce boolean) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_used     bigint;
    v_override bigint;
    v_limit    bigint;
BEGIN
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

-- The row trigger of every counted table: TG_ARGV[0] names the row kind. What a row counts
-- (1 or 0) and weighs (bytes of the text and JSON a tenant chose) is read per table below.
CREATE FUNCTION bulkhead.quota_track() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind    text := TG_ARGV[0];
    v_tenant  uuid;
    v_rows    bigint := 0;
    v_bytes   bigint := 0;
    v_enforce boolean := true;
    v_new     boolean := TG_OP IN ('INSERT', 'UPDATE');
    v_old     boolean := TG_OP IN ('UPDATE', 'DELETE');
BEGIN
    IF bulkhead.quota_bypassed() THEN
        RETURN NULL;
    END IF;
    IF v_new THEN
        v_tenant := NEW.tenant_id;
    ELSE
        v_tenant := OLD.tenant_id;
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
    ELSIF TG_TABLE_NAME = 'api_keys' THEN
        -- Keys not revoked or expired: a revocation frees room.
        IF v_new AND NEW.status IN ('active', 'rotating') THEN
            v_rows := v_rows + 1;
        END IF;
        IF v_old AND OLD.status IN ('active', 'rotating') THEN
            v_rows := v_rows - 1;
        END IF;
    ELSIF TG_TABLE_NAME = 'roles' THEN
        -- The built-in roles every tenant starts with are not counted.
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
        -- Platform events (the audit stream among them) are counted, never refused: refusing
        -- one would refuse the change or the audit event that raised it.
        IF v_new THEN
            v_rows := v_rows + 1;
            v_bytes := v_bytes + octet_length(NEW.payload::text);
            v_enforce := NEW.source = 'tenant';
        END IF;
        IF v_old THEN
            v_rows := v_rows - 1;
            v_bytes := v_bytes - octet_length(OLD.payload::text);
        END IF;
    ELSIF TG_TABLE_NAME = 'audit_events' THEN
        v_enforce := false;
        IF v_new THEN
            v_rows := v_rows + 1;
        END IF;
        IF v_old THEN
            v_rows := v_rows - 1;
        END IF;
    ELSE
        -- users, agents, role_assignments: one row each.
        IF v_new THEN
            v_rows := v_rows + 1;
        END IF;
        IF v_old THEN
            v_rows := v_rows - 1;
        END IF;
    END IF;
    -- Bytes first: every write that stores bytes takes the tenant's bytes counter before the
    -- counter of its kind, so two transactions writing two kinds (a session and its platform
    -- message, say, against a published message) queue on the same row instead of each holding
    -- a counter the other waits for.
    PERFORM bulkhead.quota_charge(v_tenant, 'stored_bytes', v_bytes, v_enforce);
    PERFORM bulkhead.quota_charge(v_tenant, v_kind, v_rows, v_enforce);
    RETURN NULL;
END
$$;

CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.agent_sessions
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('sessions');
CREATE TRIGGER quota_track_update AFTER UPDATE OF title, metadata ON bulkhead.agent_sessions
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('sessions');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.users
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('users');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.agents
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('agents');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.api_keys
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('api_keys');
CREATE TRIGGER quota_track_update AFTER UPDATE OF status ON bulkhead.api_keys
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('api_keys');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.roles
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('roles');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.role_assignments
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('role_assignments');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('webhook_endpoints');
CREATE TRIGGER quota_track_update AFTER UPDATE OF url, description, headers
    ON bulkhead.webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('webhook_endpoints');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.webhook_messages
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('webhook_messages');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.tools
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('tools');
CREATE TRIGGER quota_track_update AFTER UPDATE OF description, input_schema ON bulkhead.tools
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('tools');
CREATE TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.tool_versions
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('tool_versions');
-- Audit events: counted at commit, so every writer of the tenant is not queued behind the
-- counter for the length of its transaction; never refused.
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.audit_events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('audit_events');

------------------------------------------------------------------------------------------------
-- The counters of the rows stored before this migration, one tenant context at a time (row-level
-- security is forced on the owner too).
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT id FROM bulkhead.tenants LOOP
        PERFORM set_config('bulkhead.tenant_id', t.id::text, true);
        INSERT INTO bulkhead.tenant_quotas (tenant_id, kind, used)
        SELECT t.id, k.kind, k.used FROM (
            SELECT 'sessions' AS kind, count(*) AS used
                FROM bulkhead.agent_sessions WHERE tenant_id = t.id
            UNION ALL SELECT 'users', count(*) FROM bulkhead.users WHERE tenant_id = t.id
            UNION ALL SELECT 'agents', count(*) FROM bulkhead.agents WHERE tenant_id = t.id
            UNION ALL SELECT 'api_keys', count(*) FROM bulkhead.api_keys
                WHERE tenant_id = t.id AND status IN ('active', 'rotating')
            UNION ALL SELECT 'roles', count(*) FROM bulkhead.roles
                WHERE tenant_id = t.id AND NOT built_in
            UNION ALL SELECT 'role_assignments', count(*) FROM bulkhead.role_assignments
                WHERE tenant_id = t.id
            UNION ALL SELECT 'webhook_endpoints', count(*) FROM bulkhead.webhook_endpoints
                WHERE tenant_id = t.id
            UNION ALL SELECT 'webhook_messages', count(*) FROM bulkhead.webhook_messages
                WHERE tenant_id = t.id
            UNION ALL SELECT 'tools', count(*) FROM bulkhead.tools WHERE tenant_id = t.id
            UNION ALL SELECT 'tool_versions', count(*) FROM bulkhead.tool_versions
                WHERE tenant_id = t.id
            UNION ALL SELECT 'audit_events', count(*) FROM bulkhead.audit_events
                WHERE tenant_id = t.id
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
                UNION ALL SELECT octet_length(payload::text)
                    FROM bulkhead.webhook_messages WHERE tenant_id = t.id
            ) bytes
        ) k
        WHERE k.used > 0;
    END LOOP;
    PERFORM set_config('bulkhead.tenant_id', '', true);
END
$$;
