-- Quota charges at commit (issue 25: one tenant's publishers no longer queue on its counters).
--
-- Until now every counted row charged the tenant's counters as it was written, and the counter
-- row's lock was held to the end of the transaction: one tenant's writers of rows that weigh
-- bytes (every published message) ran one at a time from their first counted write to their
-- commit. Measured at stop 36 (docs/webhooks.md): the publishing transaction with eight clients
-- did 930 transactions a second, 1,430 with the message trigger deferred to commit.
--
-- Now every quota row trigger is a constraint trigger, DEFERRABLE INITIALLY DEFERRED, as the
-- audit events' already was (0020): the counters are charged at commit, from the same rows (a
-- deferred trigger sees each row as it was written), with the same amounts and rules, so a
-- counter is held only from the commit's first charge to the commit's end.
--
-- What changes for writers:
-- * A write past a limit is refused at COMMIT, not at its statement: the transaction fails with
--   the same SQLSTATE BQ001 and detail (the store maps it from any statement, COMMIT included),
--   and nothing of it is stored, as before. Limits stay exact: the check runs under the counter
--   row's lock, after the charge.
-- * Lock order: every charge now takes the tenant's `stored_bytes` counter first, whatever its
--   kind (0023 did so only for tables whose rows weigh bytes). The charges of a transaction run
--   in the order its rows were written, so without one counter every transaction takes first, a
--   transaction writing an audit event then a message and another writing a message then an
--   audit event would each hold one counter and wait for the other's (which is what kept the
--   message trigger immediate until now).
-- * The attempt log's statement triggers (0024) stay immediate: they take `stored_bytes` first
--   as well, and only the delivery worker writes attempts, in short transactions.
-- * The bypass of moves and imports (`bulkhead.quota_replay`, transaction-local) is still set
--   at commit; the mover role's deletes run in transactions that set it too.

-- The row trigger of 0023 with one change: the `stored_bytes` counter first for every kind.
CREATE OR REPLACE FUNCTION bulkhead.quota_track() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = 'auto'
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
    -- The lock order (0020, 0023, and now every kind): the tenant's `stored_bytes` counter
    -- first, whatever this row charges. These charges run at commit, in the order the rows were
    -- written, so a transaction's first counter is always this one: two transactions never hold
    -- one counter each while waiting for the other's.
    IF v_rows <> 0 OR v_bytes <> 0 THEN
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
-- Every row trigger of 0020 and 0023, again, deferred to commit.
DROP TRIGGER quota_track ON bulkhead.agent_sessions;
DROP TRIGGER quota_track_update ON bulkhead.agent_sessions;
DROP TRIGGER quota_track ON bulkhead.users;
DROP TRIGGER quota_track_update ON bulkhead.users;
DROP TRIGGER quota_track ON bulkhead.agents;
DROP TRIGGER quota_track_update ON bulkhead.agents;
DROP TRIGGER quota_track ON bulkhead.api_keys;
DROP TRIGGER quota_track_update ON bulkhead.api_keys;
DROP TRIGGER quota_track ON bulkhead.roles;
DROP TRIGGER quota_track ON bulkhead.role_assignments;
DROP TRIGGER quota_track ON bulkhead.webhook_endpoints;
DROP TRIGGER quota_track_update ON bulkhead.webhook_endpoints;
DROP TRIGGER quota_track ON bulkhead.webhook_messages;
DROP TRIGGER quota_track ON bulkhead.tools;
DROP TRIGGER quota_track_update ON bulkhead.tools;
DROP TRIGGER quota_track ON bulkhead.tool_versions;
DROP TRIGGER quota_track ON bulkhead.screening_decisions;

CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.agent_sessions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('sessions');
CREATE CONSTRAINT TRIGGER quota_track_update AFTER UPDATE OF title, metadata
    ON bulkhead.agent_sessions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('sessions');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.users
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('users');
CREATE CONSTRAINT TRIGGER quota_track_update AFTER UPDATE OF status ON bulkhead.users
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('users');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.agents
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('agents');
CREATE CONSTRAINT TRIGGER quota_track_update AFTER UPDATE OF status ON bulkhead.agents
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('agents');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.api_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('api_keys');
CREATE CONSTRAINT TRIGGER quota_track_update AFTER UPDATE OF status ON bulkhead.api_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('api_keys');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.roles
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('roles');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.role_assignments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('role_assignments');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.webhook_endpoints
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('webhook_endpoints');
CREATE CONSTRAINT TRIGGER quota_track_update AFTER UPDATE OF url, description, headers
    ON bulkhead.webhook_endpoints
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('webhook_endpoints');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.webhook_messages
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('webhook_messages');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.tools
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('tools');
CREATE CONSTRAINT TRIGGER quota_track_update AFTER UPDATE OF description, input_schema
    ON bulkhead.tools
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('tools');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.tool_versions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('tool_versions');
CREATE CONSTRAINT TRIGGER quota_track AFTER INSERT OR DELETE ON bulkhead.screening_decisions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bulkhead.quota_track('screening_decisions');
