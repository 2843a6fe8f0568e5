-- Remembered consents of the authorization-code flow (issue 20): one grant per (user, client,
-- resource), holding the scopes the user consented to last. A later authorization request for a
-- subset of them skips the consent page (the user still signs in). The auth sessions (refresh
-- families) a grant's codes started name it, so revoking the grant ends them. Follows the
-- tenant-table rules of 0002; catalog_lint.rs checks them.

------------------------------------------------------------------------------------------------
-- oauth_grants: `resource` is the RFC 8707 resource indicator the consent was for; '' is the
-- tenant's own API (no indicator). A user or client that goes takes its grants with it.
CREATE TABLE bulkhead.oauth_grants (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    client_id   uuid        NOT NULL,
    resource    text        NOT NULL DEFAULT '' CHECK (length(resource) <= 2048),
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, user_id, client_id, resource),
    FOREIGN KEY (tenant_id, user_id) REFERENCES bulkhead.users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, client_id) REFERENCES bulkhead.oauth_clients (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX oauth_grants_by_client ON bulkhead.oauth_grants (tenant_id, client_id);
ALTER TABLE bulkhead.oauth_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.oauth_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.oauth_grants
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON bulkhead.oauth_grants TO bulkhead_app;
GRANT SELECT, DELETE ON bulkhead.oauth_grants TO bulkhead_tenant_mover;

------------------------------------------------------------------------------------------------
-- The grant an auth session was started under (a code's exchange). No foreign key: revoking a
-- grant ends its sessions first, and an ended session's stale link is harmless (ids are never
-- reused).
ALTER TABLE bulkhead.auth_sessions ADD COLUMN grant_id uuid;
-- The protected resource (RFC 8707) its access tokens are for, their `aud`; NULL: Bulkhead's own
-- API. A refresh keeps it.
ALTER TABLE bulkhead.auth_sessions ADD COLUMN resource text CHECK (length(resource) <= 2048);
-- The resource a code was issued for ('' : Bulkhead's own API).
ALTER TABLE bulkhead.oauth_codes ADD COLUMN resource text NOT NULL DEFAULT ''
    CHECK (length(resource) <= 2048);
CREATE INDEX auth_sessions_by_grant ON bulkhead.auth_sessions (tenant_id, grant_id)
    WHERE grant_id IS NOT NULL;

------------------------------------------------------------------------------------------------
-- oauth_resources: the protected resources a tenant runs (an API, an MCP server), each with
-- its identifier URL (RFC 8707 `resource`, RFC 9728 `resource`) and the scopes it accepts.
CREATE TABLE bulkhead.oauth_resources (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    identifier  text        NOT NULL CHECK (length(identifier) BETWEEN 1 AND 2048),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, identifier)
);
ALTER TABLE bulkhead.oauth_resources ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.oauth_resources FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.oauth_resources
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON bulkhead.oauth_resources TO bulkhead_app;
GRANT SELECT, DELETE ON bulkhead.oauth_resources TO bulkhead_tenant_mover;
