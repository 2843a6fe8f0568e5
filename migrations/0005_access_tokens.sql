-- Access tokens, refresh-token families, human users and the token denylist.
--
-- Signing keys are deployment-wide control-plane data: the owner role creates and rotates them
-- (`bulkhead signing-key rotate`), the application role only reads them. Private keys are stored
-- sealed (AES-256-GCM under a key derived from the master key, which never enters the database).
--
-- Everything else here is tenant data and follows the rules of 0002 (FORCE RLS, tenant-first keys).

------------------------------------------------------------------------------------------------
-- signing_keys: at most one `next` key (published in the JWKS, signs nothing yet), at most one
-- `current` key (signs), any number of `retired` keys (published until `publish_until`, by which
-- time every token they signed has expired).
CREATE TABLE bulkhead.signing_keys (
    kid                text        PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{8,64}$'),
    algorithm          text        NOT NULL CHECK (algorithm = 'EdDSA'),
    public_key         bytea       NOT NULL CHECK (length(public_key) = 32),
    sealed_private_key bytea       NOT NULL CHECK (length(sealed_private_key) BETWEEN 29 AND 512),
    state              text        NOT NULL CHECK (state IN ('next', 'current', 'retired')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    activated_at       timestamptz,
    retired_at         timestamptz,
    publish_until      timestamptz,
    CHECK (state <> 'retired' OR publish_until IS NOT NULL)
);
CREATE UNIQUE INDEX signing_keys_one_current ON bulkhead.signing_keys ((true)) WHERE state = 'current';
CREATE UNIQUE INDEX signing_keys_one_next ON bulkhead.signing_keys ((true)) WHERE state = 'next';
GRANT SELECT ON bulkhead.signing_keys TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- users: a tenant's humans. Until roles exist, a user's authority is a scope set, as for keys.
CREATE TABLE bulkhead.users (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    email         text        NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    -- argon2id PHC string; never the password.
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    status        text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    scopes        text[]      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);
ALTER TABLE bulkhead.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.users
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE ON bulkhead.users TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- auth_sessions: one refresh-token family (a login, or a long-running agent session).
CREATE TABLE bulkhead.auth_sessions (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    principal_type text        NOT NULL CHECK (principal_type IN ('user', 'agent')),
    principal_id   text        NOT NULL CHECK (length(principal_id) BETWEEN 1 AND 128),
    client_id      text        NOT NULL CHECK (length(client_id) BETWEEN 1 AND 128),
    scopes         text[]      NOT NULL,
    created_at     timestamptz NOT NULL,
    last_used_at   timestamptz NOT NULL,
    -- Absolute end of the family, whatever its use.
    expires_at     timestamptz NOT NULL,
    idle_timeout_seconds integer NOT NULL CHECK (idle_timeout_seconds > 0),
    revoked_at     timestamptz,
    revoked_reason text CHECK (revoked_reason IN ('logout', 'reuse_detected', 'revoked', 'ended')),
    client_ip      inet,
    user_agent     text CHECK (length(user_agent) <= 512),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX auth_sessions_by_principal ON bulkhead.auth_sessions (tenant_id, principal_id, id);
ALTER TABLE bulkhead.auth_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.auth_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.auth_sessions
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE ON bulkhead.auth_sessions TO bulkhead_app;

-- refresh_tokens: only SHA-256 of each token (256 random bits) is kept. Every use rotates: the
-- presented row becomes `rotated` and a new `active` row is made in the same transaction.
CREATE TABLE bulkhead.refresh_tokens (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    session_id  uuid        NOT NULL,
    token_hash  bytea       NOT NULL CHECK (length(token_hash) = 32),
    status      text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'rotated', 'revoked')),
    created_at  timestamptz NOT NULL,
    rotated_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, session_id) REFERENCES bulkhead.auth_sessions (tenant_id, id)
);
CREATE INDEX refresh_tokens_by_session ON bulkhead.refresh_tokens (tenant_id, session_id);
ALTER TABLE bulkhead.refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.refresh_tokens
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE ON bulkhead.refresh_tokens TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- revoked_tokens: the denylist every process holds in memory. `id` is an access token's jti or a
-- whole auth session (every access token minted from it carries it as `sid`). A row is kept until
-- `expires_at`, when every token it covers has expired by itself.
CREATE TABLE bulkhead.revoked_tokens (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('access_token', 'session')),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX revoked_tokens_by_expiry ON bulkhead.revoked_tokens (expires_at);
ALTER TABLE bulkhead.revoked_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.revoked_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.revoked_tokens
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
CREATE POLICY definer_denylist ON bulkhead.revoked_tokens FOR SELECT TO CURRENT_USER
    USING (current_setting('bulkhead.definer', true) = 'revoked_tokens_active');
GRANT SELECT, INSERT ON bulkhead.revoked_tokens TO bulkhead_app;

-- Every process loads the whole denylist at start and after its listener reconnects, before any
-- tenant context exists. Ids of revoked tokens are not secrets: they only say "refuse this".
-- Never truncated: a partial denylist would accept revoked tokens (rows expire within about an
-- hour of their token, which bounds the size).
CREATE FUNCTION bulkhead.revoked_tokens_active(p_now timestamptz)
RETURNS TABLE (revoked_tenant_id uuid, revoked_id uuid, revoked_kind text, revoked_expires_at timestamptz)
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('bulkhead.definer', 'revoked_tokens_active', true);
    RETURN QUERY
        SELECT r.tenant_id, r.id, r.kind, r.expires_at
        FROM bulkhead.revoked_tokens r
        WHERE r.expires_at > p_now;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;
REVOKE ALL ON FUNCTION bulkhead.revoked_tokens_active(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.revoked_tokens_active(timestamptz) TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- login_throttle: failed logins per account name, whether or not the account exists (so a
-- lockout does not reveal which emails are registered). `id` is a UUIDv5 of the lowercased email.
CREATE TABLE bulkhead.login_throttle (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    failures        integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
    locked_until    timestamptz,
    last_failure_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE bulkhead.login_throttle ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.login_throttle FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.login_throttle
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON bulkhead.login_throttle TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- Per-tenant token policy, beside the key policy.
ALTER TABLE bulkhead.tenant_settings
    -- client_credentials grants also return a refresh token (long-running agent sessions).
    ADD COLUMN agent_refresh_tokens boolean NOT NULL DEFAULT false,
    -- A rotated refresh token presented again within this many seconds is treated as a network
    -- race (refused, family kept) rather than theft (family revoked). 0 to 60; default 0.
    ADD COLUMN refresh_reuse_interval_seconds integer NOT NULL DEFAULT 0
        CHECK (refresh_reuse_interval_seconds BETWEEN 0 AND 60),
    ADD COLUMN session_absolute_seconds integer NOT NULL DEFAULT 2592000
        CHECK (session_absolute_seconds BETWEEN 300 AND 31536000),
    ADD COLUMN session_idle_seconds integer NOT NULL DEFAULT 604800
        CHECK (session_idle_seconds BETWEEN 300 AND 31536000);
