-- Tenant data. Every table here follows the same rules, which tests/catalog_lint.rs checks:
--   * tenant_id uuid NOT NULL, primary key (tenant_id, id), unique constraints start with tenant_id;
--   * ids are UUIDv7 made by the application: no sequence is shared between tenants;
--   * ENABLE + FORCE ROW LEVEL SECURITY and a policy whose USING and WITH CHECK are
--       tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid
--     so a connection with no tenant context sees nothing and can write nothing;
--   * the application role gets only the privileges it needs.
--
-- Two lookups must work before a tenant context exists: finding the tenant of a presented API key,
-- and claiming due jobs across tenants. Each is a SECURITY DEFINER function owned by the migration
-- owner, and the owner's own policy on the table is true only while that function runs (the
-- function sets `bulkhead.definer` for its own duration). Neither the application role nor the
-- owner outside those functions can read across tenants. (PostgreSQL lets only a superuser put a
-- custom setting in a function's SET clause, so each function sets and clears it in its body;
-- the marker is transaction-local and the owner's policy is the only one that reads it.)

------------------------------------------------------------------------------------------------
-- agent_sessions: the first tenant-owned resource.
CREATE TABLE bulkhead.agent_sessions (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    agent_id   text        NOT NULL CHECK (agent_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    title      text        NOT NULL CHECK (length(title) <= 500),
    state      text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'closed')),
    metadata   jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE bulkhead.agent_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.agent_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.agent_sessions
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON bulkhead.agent_sessions TO bulkhead_app;
CREATE INDEX agent_sessions_by_agent ON bulkhead.agent_sessions (tenant_id, agent_id, id);

------------------------------------------------------------------------------------------------
-- api_keys: only the peppered HMAC of a key is stored, never the key.
CREATE TABLE bulkhead.api_keys (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    key_hash       bytea       NOT NULL CHECK (length(key_hash) = 32),
    pepper_version smallint    NOT NULL CHECK (pepper_version >= 1),
    environment    text        NOT NULL CHECK (environment IN ('live', 'test')),
    display_prefix text        NOT NULL CHECK (length(display_prefix) <= 16),
    scopes         text[]      NOT NULL,
    description    text        NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    status         text        NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'rotating', 'revoked', 'expired')),
    created_by     text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    last_used_at   timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, key_hash)
);
-- The lookup by hash happens before the tenant is known; a hash is unique in practice (HMAC-SHA256
-- of 256 random bits), and the lookup refuses an ambiguous answer rather than pick one.
CREATE INDEX api_keys_by_hash ON bulkhead.api_keys (key_hash);
ALTER TABLE bulkhead.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.api_keys
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
CREATE POLICY definer_key_lookup ON bulkhead.api_keys FOR SELECT TO CURRENT_USER
    USING (current_setting('bulkhead.definer', true) = 'api_key_lookup');
GRANT SELECT, INSERT, UPDATE ON bulkhead.api_keys TO bulkhead_app;

-- Returns the record of the key whose HMAC is presented. Knowing the HMAC requires the key and the
-- server pepper, so this reveals a row only to its holder. LIMIT 2 lets the caller refuse an
-- (astronomically unlikely) ambiguous match instead of picking one.
CREATE FUNCTION bulkhead.api_key_lookup(p_key_hash bytea)
RETURNS TABLE (key_tenant_id uuid, key_id uuid, key_pepper_version smallint, key_environment text,
               key_scopes text[], key_status text, key_expires_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('bulkhead.definer', 'api_key_lookup', true);
    RETURN QUERY
        SELECT k.tenant_id, k.id, k.pepper_version, k.environment, k.scopes, k.status, k.expires_at
        FROM bulkhead.api_keys k
        WHERE k.key_hash = p_key_hash
        LIMIT 2;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;
REVOKE ALL ON FUNCTION bulkhead.api_key_lookup(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.api_key_lookup(bytea) TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- jobs: background work, always for one tenant, run inside that tenant's context.
CREATE TABLE bulkhead.jobs (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL,
    kind         text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,63}$'),
    payload      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status       text        NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'refused')),
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    run_at       timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX jobs_due ON bulkhead.jobs (run_at) WHERE status IN ('queued', 'running');
ALTER TABLE bulkhead.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.jobs
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
CREATE POLICY definer_job_claim ON bulkhead.jobs FOR ALL TO CURRENT_USER
    USING (current_setting('bulkhead.definer', true) = 'job_claim')
    WITH CHECK (current_setting('bulkhead.definer', true) = 'job_claim');
GRANT SELECT, INSERT, UPDATE ON bulkhead.jobs TO bulkhead_app;

-- Claims up to p_limit due jobs (queued and due, or running with an expired lease) with
-- FOR UPDATE SKIP LOCKED, so concurrent workers never take the same job. A job whose tenant is
-- missing from the registry or not active is marked `refused` here, in the same statement, and is
-- never handed to a worker; the caller records those refusals. Only ids and the verdict leave
-- this function: payloads are read later, inside the job's own tenant context.
CREATE FUNCTION bulkhead.claim_jobs(p_limit integer, p_lease_seconds integer)
RETURNS TABLE (job_tenant_id uuid, job_id uuid, job_kind text, job_attempts integer,
               job_max_attempts integer, verdict text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('bulkhead.definer', 'job_claim', true);
    RETURN QUERY
        WITH picked AS (
            SELECT j.tenant_id, j.id
            FROM bulkhead.jobs j
            WHERE (j.status = 'queued' AND j.run_at <= now())
               OR (j.status = 'running' AND j.locked_until < now())
            ORDER BY j.run_at, j.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ), judged AS (
            SELECT p.tenant_id, p.id,
                   CASE WHEN t.id IS NULL THEN 'tenant_missing'
                        WHEN t.status <> 'active' THEN 'tenant_' || t.status
                        ELSE 'run' END AS verdict
            FROM picked p LEFT JOIN bulkhead.tenants t ON t.id = p.tenant_id
        )
        UPDATE bulkhead.jobs j
        SET status       = CASE WHEN judged.verdict = 'run' THEN 'running' ELSE 'refused' END,
            attempts     = j.attempts + CASE WHEN judged.verdict = 'run' THEN 1 ELSE 0 END,
            locked_until = CASE WHEN judged.verdict = 'run'
                                THEN now() + make_interval(secs => p_lease_seconds) END,
            last_error   = CASE WHEN judged.verdict = 'run' THEN j.last_error
                                ELSE 'refused: ' || judged.verdict END,
            updated_at   = now()
        FROM judged
        WHERE j.tenant_id = judged.tenant_id AND j.id = judged.id
        RETURNING j.tenant_id, j.id, j.kind, j.attempts, j.max_attempts, judged.verdict;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;
REVOKE ALL ON FUNCTION bulkhead.claim_jobs(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.claim_jobs(integer, integer) TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- audit_events: written in the same transaction as the change they record (so a change cannot
-- commit without its event). Append-only for the application role: INSERT and SELECT only.
-- The tamper-evident log (Merkle tree, checkpoints) builds on this table.
CREATE TABLE bulkhead.audit_events (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor_id    text        NOT NULL,
    actor_type  text        NOT NULL CHECK (actor_type IN ('api_key', 'human', 'agent', 'system')),
    action      text        NOT NULL CHECK (action ~ '^[a-z][a-z0-9_.]{0,63}$'),
    resource_id text,
    outcome     text        NOT NULL CHECK (outcome IN ('success', 'failure', 'blocked')),
    request_id  text,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb
                CHECK (jsonb_typeof(metadata) = 'object' AND pg_column_size(metadata) <= 8192),
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE bulkhead.audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.audit_events
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT ON bulkhead.audit_events TO bulkhead_app;
