-- OAuth 2.1 authorization code with PKCE (issue 20): clients registered by the tenant's admins,
-- the browser sessions of the login and consent pages, and the authorization codes. Every table
-- follows the tenant-table rules of 0002 (tenant_id first in every key, FORCE RLS, the
-- tenant_isolation policy); catalog_lint.rs checks them. No function here crosses tenants: the
-- authorization endpoint is served on the tenant's subdomain, and a code names its tenant.

------------------------------------------------------------------------------------------------
-- oauth_clients: a client's secret is kept only as HMAC-SHA256 under a key derived from the
-- master key, bound to the client's tenant and id; a public client (`none`) has no secret.
CREATE TABLE bulkhead.oauth_clients (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    name           text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    redirect_uris  text[]      NOT NULL CHECK (cardinality(redirect_uris) BETWEEN 1 AND 10),
    token_endpoint_auth_method text NOT NULL
                   CHECK (token_endpoint_auth_method IN ('none', 'client_secret_basic', 'client_secret_post')),
    secret_hash    bytea       CHECK (length(secret_hash) = 32),
    scopes         text[]      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- A confidential client has a secret, a public one none.
    CHECK ((token_endpoint_auth_method = 'none') = (secret_hash IS NULL))
);
ALTER TABLE bulkhead.oauth_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.oauth_clients FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.oauth_clients
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON bulkhead.oauth_clients TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- oauth_browser_sessions: the cookie of the login and consent pages. Only SHA-256 of the cookie
-- value (256 random bits) is kept; `user_id` is set by a login, which always makes a new row (a
-- new cookie value), so a session id planted before the login is worth nothing after it.
CREATE TABLE bulkhead.oauth_browser_sessions (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    token_hash  bytea       NOT NULL CHECK (length(token_hash) = 32),
    user_id     uuid,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES bulkhead.users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX oauth_browser_sessions_by_expiry ON bulkhead.oauth_browser_sessions (tenant_id, expires_at);
ALTER TABLE bulkhead.oauth_browser_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.oauth_browser_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.oauth_browser_sessions
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, DELETE ON bulkhead.oauth_browser_sessions TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- oauth_codes: only SHA-256 of each code is kept. A code is good once, for 60 s, for the client,
-- redirect URI, PKCE challenge, user and scopes it was issued with. `session_id` is the auth
-- session its exchange started: a code presented again ends that session (every token issued
-- from the code), so the row outlives its use until it would have expired anyway.
CREATE TABLE bulkhead.oauth_codes (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    code_hash      bytea       NOT NULL CHECK (length(code_hash) = 32),
    client_id      uuid        NOT NULL,
    redirect_uri   text        NOT NULL CHECK (length(redirect_uri) <= 2048),
    code_challenge text        NOT NULL CHECK (code_challenge ~ '^[A-Za-z0-9_-]{43}$'),
    user_id        uuid        NOT NULL,
    scopes         text[]      NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    session_id     uuid,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, code_hash),
    FOREIGN KEY (tenant_id, client_id) REFERENCES bulkhead.oauth_clients (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES bulkhead.users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, session_id) REFERENCES bulkhead.auth_sessions (tenant_id, id)
);
CREATE INDEX oauth_codes_by_expiry ON bulkhead.oauth_codes (tenant_id, expires_at);
ALTER TABLE bulkhead.oauth_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.oauth_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.oauth_codes
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON bulkhead.oauth_codes TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- A tenant move reads and deletes these rows like every other tenant table's (0011).
GRANT SELECT, DELETE ON bulkhead.oauth_clients, bulkhead.oauth_browser_sessions,
    bulkhead.oauth_codes TO bulkhead_tenant_mover;
