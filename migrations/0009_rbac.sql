-- Tenant-scoped RBAC: agents (machine principals), roles (built-in and custom permission sets)
-- and role assignments. Every table follows the tenant-table rules of 0002 (tenant_id first,
-- FORCE RLS, the tenant_isolation policy); catalog_lint.rs checks them.
--
-- Assignments reference roles, users and agents through composite foreign keys that include
-- tenant_id, so a principal of tenant A can never hold a role of tenant B: the database refuses
-- the row even if a bug in the application asked for it.

------------------------------------------------------------------------------------------------
-- agents: machine identities. Keys may belong to one (api_keys.agent_id); a disabled agent's keys
-- and tokens stop working.
CREATE TABLE bulkhead.agents (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    name          text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    description   text        NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    owner_user_id uuid,
    status        text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name),
    FOREIGN KEY (tenant_id, owner_user_id) REFERENCES bulkhead.users (tenant_id, id)
);
ALTER TABLE bulkhead.agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.agents
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE ON bulkhead.agents TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- roles: named permission sets. Built-in roles (admin, developer, agent, viewer) exist as rows in
-- every tenant so that assignments can reference them by foreign key; their permissions are
-- defined by the binary (bulkhead_auth::rbac), never by the row, so that a new permission reaches
-- them without a data migration. Custom roles carry their permissions in the row.
CREATE TABLE bulkhead.roles (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    name        text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    description text        NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    built_in    boolean     NOT NULL DEFAULT false,
    permissions text[]      NOT NULL DEFAULT '{}' CHECK (cardinality(permissions) <= 64),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name),
    CHECK (NOT built_in OR (name IN ('admin', 'developer', 'agent', 'viewer') AND permissions = '{}'))
);
ALTER TABLE bulkhead.roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.roles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.roles
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON bulkhead.roles TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- role_assignments: one principal (a user or an agent, exactly one) holds one role.
CREATE TABLE bulkhead.role_assignments (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    role_id    uuid        NOT NULL,
    user_id    uuid,
    agent_id   uuid,
    created_by text        NOT NULL CHECK (length(created_by) BETWEEN 1 AND 128),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK ((user_id IS NULL) <> (agent_id IS NULL)),
    FOREIGN KEY (tenant_id, role_id) REFERENCES bulkhead.roles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES bulkhead.users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES bulkhead.agents (tenant_id, id) ON DELETE CASCADE,
    UNIQUE NULLS NOT DISTINCT (tenant_id, role_id, user_id, agent_id)
);
ALTER TABLE bulkhead.role_assignments ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.role_assignments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.role_assignments
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, DELETE ON bulkhead.role_assignments TO bulkhead_app;
CREATE INDEX role_assignments_by_user ON bulkhead.role_assignments (tenant_id, user_id) WHERE user_id IS NOT NULL;
CREATE INDEX role_assignments_by_agent ON bulkhead.role_assignments (tenant_id, agent_id) WHERE agent_id IS NOT NULL;

------------------------------------------------------------------------------------------------
-- A key may belong to an agent: then its effective permissions are its scopes ∩ the agent's
-- roles. A key without an agent is a tenant service key, bounded by its scopes alone (only a
-- caller holding those scopes could mint it).
ALTER TABLE bulkhead.api_keys ADD COLUMN agent_id uuid;
ALTER TABLE bulkhead.api_keys
    ADD FOREIGN KEY (tenant_id, agent_id) REFERENCES bulkhead.agents (tenant_id, id);

------------------------------------------------------------------------------------------------
-- Existing tenants get the built-in roles; existing users (whose authority was their scope set)
-- become admins, which keeps them exactly as strong as they were: effective = roles ∩ scopes.
-- FORCE row-level security binds the owner too, so each tenant's rows are written in its own
-- context.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT id FROM bulkhead.tenants LOOP
        PERFORM set_config('bulkhead.tenant_id', t.id::text, true);
        INSERT INTO bulkhead.roles (tenant_id, id, name, description, built_in)
        SELECT t.id, gen_random_uuid(), r.name, r.description, true
        FROM (VALUES
            ('admin', 'everything in the tenant'),
            ('developer', 'read and write, no billing, no role administration'),
            ('agent', 'only the session and tool permissions granted to it'),
            ('viewer', 'read-only')
        ) AS r (name, description);
        INSERT INTO bulkhead.role_assignments (tenant_id, id, role_id, user_id, created_by)
        SELECT u.tenant_id, gen_random_uuid(), r.id, u.id, 'system:migration'
        FROM bulkhead.users u
        JOIN bulkhead.roles r ON r.tenant_id = u.tenant_id AND r.name = 'admin'
        WHERE u.tenant_id = t.id;
    END LOOP;
    PERFORM set_config('bulkhead.tenant_id', '', true);
END
$$;
