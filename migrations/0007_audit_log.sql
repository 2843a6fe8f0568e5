-- The tamper-evident audit log (docs/audit.md).
--
-- audit_events (0002) stays the outbox: every change writes its event in its own transaction.
-- The sequencer (worker, app role, inside each tenant's own transaction) gives each event a leaf
-- index in its tenant's RFC 9162 Merkle tree by INSERTing into audit_leaves; the event body is
-- never updated. audit_nodes caches the hash of every complete aligned subtree, so proofs read
-- O(log² n) rows. audit_checkpoints holds signed (size, root) statements.
--
-- Append-only: the app role may only INSERT and SELECT these tables, and triggers refuse UPDATE,
-- DELETE and TRUNCATE for every role but bulkhead_audit_maintenance, which may only DELETE event
-- bodies (retention); leaves, nodes and checkpoints are never removed, so proofs keep working
-- after a purge. A superuser (or the owner disabling a trigger) can still rewrite rows: that is
-- what the signed checkpoints and proofs detect.

------------------------------------------------------------------------------------------------
-- The maintenance role: NOLOGIN, and nobody is a member of it at rest. A retention purge (run by
-- the owner) grants it to itself, SET LOCAL ROLE, deletes, and revokes it again inside the same
-- transaction, so no membership is ever committed (the serving-role checks also refuse any role
-- that is a member of another). Roles are cluster-wide, so creation tolerates a concurrent creator.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bulkhead_audit_maintenance') THEN
        CREATE ROLE bulkhead_audit_maintenance NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOINHERIT NOREPLICATION NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT USAGE ON SCHEMA bulkhead TO bulkhead_audit_maintenance;

------------------------------------------------------------------------------------------------
-- The event schema grows the fields the issue names. NULL where there was no client.
ALTER TABLE bulkhead.audit_events
    ADD COLUMN ip_address inet,
    ADD COLUMN user_agent text CHECK (length(user_agent) <= 256),
    ADD COLUMN delegation text[] CHECK (cardinality(delegation) BETWEEN 1 AND 16);
-- Failed authentication has no authenticated actor.
ALTER TABLE bulkhead.audit_events DROP CONSTRAINT audit_events_actor_type_check;
ALTER TABLE bulkhead.audit_events ADD CONSTRAINT audit_events_actor_type_check
    CHECK (actor_type IN ('api_key', 'human', 'agent', 'system', 'anonymous'));
GRANT SELECT, DELETE ON bulkhead.audit_events TO bulkhead_audit_maintenance;

------------------------------------------------------------------------------------------------
-- audit_leaves: one row per sequenced event. Primary key (tenant_id, leaf_index): the leaf index
-- is the row's identity (gap-free from 0 per tenant, assigned under a per-tenant advisory lock).
-- No foreign key to audit_events: retention removes bodies and keeps leaves.
CREATE TABLE bulkhead.audit_leaves (
    tenant_id    uuid        NOT NULL,
    leaf_index   bigint      NOT NULL CHECK (leaf_index >= 0),
    event_id     uuid        NOT NULL,
    leaf_hash    bytea       NOT NULL CHECK (length(leaf_hash) = 32),
    sequenced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, leaf_index),
    UNIQUE (tenant_id, event_id)
);
ALTER TABLE bulkhead.audit_leaves ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.audit_leaves FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.audit_leaves
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT ON bulkhead.audit_leaves TO bulkhead_app;
GRANT SELECT ON bulkhead.audit_leaves TO bulkhead_audit_maintenance;

-- audit_nodes: hash of the complete subtree of 2^level leaves starting at node_index * 2^level
-- (level >= 1; level 0 is audit_leaves).
CREATE TABLE bulkhead.audit_nodes (
    tenant_id  uuid     NOT NULL,
    level      smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    node_index bigint   NOT NULL CHECK (node_index >= 0),
    hash       bytea    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant_id, level, node_index)
);
ALTER TABLE bulkhead.audit_nodes ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.audit_nodes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.audit_nodes
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT ON bulkhead.audit_nodes TO bulkhead_app;

-- audit_checkpoints: signed (tenant, size, root, time) statements.
CREATE TABLE bulkhead.audit_checkpoints (
    tenant_id uuid        NOT NULL,
    id        uuid        NOT NULL,
    tree_size bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash bytea       NOT NULL CHECK (length(root_hash) = 32),
    signed_at text        NOT NULL CHECK (length(signed_at) <= 40),
    key_id    text        NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    signature text        NOT NULL CHECK (length(signature) <= 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_checkpoints_by_size ON bulkhead.audit_checkpoints (tenant_id, tree_size, id);
ALTER TABLE bulkhead.audit_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.audit_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.audit_checkpoints
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT ON bulkhead.audit_checkpoints TO bulkhead_app;

-- Retention, per tenant (days an event body is kept after it happened).
ALTER TABLE bulkhead.tenant_settings
    ADD COLUMN audit_retention_days integer NOT NULL DEFAULT 365
        CHECK (audit_retention_days BETWEEN 1 AND 36500);
GRANT SELECT ON bulkhead.tenant_settings TO bulkhead_audit_maintenance;

------------------------------------------------------------------------------------------------
-- Append-only triggers. current_user inside a (non-definer) trigger function is the role running
-- the statement, so only a session that did SET ROLE bulkhead_audit_maintenance passes; its
-- grants then allow only DELETE on audit_events.
CREATE FUNCTION bulkhead.audit_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_user = 'bulkhead_audit_maintenance' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'bulkhead.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
REVOKE ALL ON FUNCTION bulkhead.audit_append_only() FROM PUBLIC;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON bulkhead.audit_events
    FOR EACH ROW EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON bulkhead.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER audit_leaves_append_only BEFORE UPDATE OR DELETE ON bulkhead.audit_leaves
    FOR EACH ROW EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER audit_leaves_no_truncate BEFORE TRUNCATE ON bulkhead.audit_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER audit_nodes_append_only BEFORE UPDATE OR DELETE ON bulkhead.audit_nodes
    FOR EACH ROW EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER audit_nodes_no_truncate BEFORE TRUNCATE ON bulkhead.audit_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON bulkhead.audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON bulkhead.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.audit_append_only();
