-- Agent tools (issue 11): a tenant's tool registry, its version history, and the screening
-- decisions made about tenant-supplied text that can reach a model. Every table follows the
-- tenant-table rules of 0002 (tenant_id first in every key, FORCE RLS, the tenant_isolation
-- policy); catalog_lint.rs checks them. No function here crosses tenants.

-- The tenant's screening policy: what happens when text matches a screening rule.
ALTER TABLE bulkhead.tenant_settings
    ADD COLUMN screening_policy text NOT NULL DEFAULT 'reject'
        CHECK (screening_policy IN ('reject', 'flag', 'sanitize'));

------------------------------------------------------------------------------------------------
-- tools: one row per tool, holding the current version. `secret` signs calls to the tool's
-- endpoint (Standard Webhooks); it is stored sealed by the master key, bound to tenant and
-- tool, and shown once at creation.
CREATE TABLE bulkhead.tools (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL,
    name             text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,63}$'),
    description      text        NOT NULL CHECK (length(description) <= 4000),
    input_schema     jsonb       NOT NULL
                     CHECK (jsonb_typeof(input_schema) = 'object' AND pg_column_size(input_schema) <= 65536),
    endpoint_url     text        NOT NULL CHECK (length(endpoint_url) <= 2048),
    enabled          boolean     NOT NULL DEFAULT true,
    current_version  integer     NOT NULL DEFAULT 1 CHECK (current_version >= 1),
    -- Outcome of screening the current version: 'clean' or 'flagged' (rejected text is never stored).
    screening        text        NOT NULL DEFAULT 'clean' CHECK (screening IN ('clean', 'flagged')),
    -- Sealed: nonce (12) ‖ 32 secret bytes ‖ tag (16).
    secret           bytea       NOT NULL CHECK (length(secret) BETWEEN 44 AND 92),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT tools_name_unique UNIQUE (tenant_id, name)
);
ALTER TABLE bulkhead.tools ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.tools FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.tools
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON bulkhead.tools TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- tool_versions: every version a tool has had, as stored (append-only for the app role).
CREATE TABLE bulkhead.tool_versions (
    tenant_id     uuid        NOT NULL,
    tool_id       uuid        NOT NULL,
    version       integer     NOT NULL CHECK (version >= 1),
    description   text        NOT NULL CHECK (length(description) <= 4000),
    input_schema  jsonb       NOT NULL CHECK (jsonb_typeof(input_schema) = 'object'),
    endpoint_url  text        NOT NULL CHECK (length(endpoint_url) <= 2048),
    enabled       boolean     NOT NULL,
    screening     text        NOT NULL CHECK (screening IN ('clean', 'flagged')),
    actor_id      text        NOT NULL CHECK (length(actor_id) <= 256),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, tool_id, version),
    FOREIGN KEY (tenant_id, tool_id) REFERENCES bulkhead.tools (tenant_id, id) ON DELETE CASCADE
);
ALTER TABLE bulkhead.tool_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.tool_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.tool_versions
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT ON bulkhead.tool_versions TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- screening_decisions: one row per screened field that matched a rule (or was refused), kept
-- even when the write it screened was refused. Holds rule ids, never the screened text.
-- `subject` names what was screened (`tool:<name>`, `session:<id>`); no foreign key, since a
-- refused tool never exists.
CREATE TABLE bulkhead.screening_decisions (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    subject       text        NOT NULL CHECK (length(subject) <= 200),
    field         text        NOT NULL CHECK (length(field) <= 200),
    policy        text        NOT NULL CHECK (policy IN ('reject', 'flag', 'sanitize')),
    verdict       text        NOT NULL CHECK (verdict IN ('clean', 'flagged', 'sanitized', 'rejected')),
    rules         text[]      NOT NULL,
    rules_version text        NOT NULL CHECK (length(rules_version) <= 64),
    actor_id      text        NOT NULL CHECK (length(actor_id) <= 256),
    request_id    text        NOT NULL CHECK (length(request_id) <= 64),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX screening_decisions_by_subject ON bulkhead.screening_decisions (tenant_id, subject, id);
ALTER TABLE bulkhead.screening_decisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.screening_decisions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.screening_decisions
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT ON bulkhead.screening_decisions TO bulkhead_app;
