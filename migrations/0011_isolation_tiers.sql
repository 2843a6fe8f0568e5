-- Isolation tiers (docs/isolation-tiers.md): where a tenant's rows live, and moving them.
--
-- This file, like every migration, is applied to every location: the shared schema `bulkhead`
-- of each region's database, each tenant schema (`tenant_<hex>`, with `bulkhead.` rewritten to
-- the schema's name by the applier) and each dedicated database. The `tenants` table of the
-- registry database is the registry; in every other location it holds only the rows of the
-- tenants stored there: the anchor the location check and the claim functions read.

------------------------------------------------------------------------------------------------
-- Where a tenant lives. `shared`: tables of schema bulkhead in its region's database. `schema`:
-- schema_name in the region's database. `dedicated`: the database registered as database_name.
-- frozen_since is set for the write freeze of a move: read-write transactions and job claims
-- are refused (a retryable 503) until the move switches or is abandoned.
ALTER TABLE bulkhead.tenants
    ADD COLUMN schema_name text CHECK (schema_name ~ '^tenant_[0-9a-f]{32}$'),
    ADD COLUMN database_name text CHECK (database_name ~ '^[a-z][a-z0-9_]{0,62}$'),
    ADD COLUMN frozen_since timestamptz,
    -- Whether this location holds the tenant's live rows. An anchor written ahead of a move's
    -- switch, the old copy after it, and the registry row of a tenant stored elsewhere are not
    -- live: the location check refuses them and the claim functions skip them.
    ADD COLUMN live boolean NOT NULL DEFAULT true,
    ADD CONSTRAINT tenants_location_check CHECK (
        (isolation_tier = 'shared' AND schema_name IS NULL AND database_name IS NULL)
        OR (isolation_tier = 'schema' AND schema_name IS NOT NULL AND database_name IS NULL)
        OR (isolation_tier = 'dedicated' AND schema_name IS NULL AND database_name IS NOT NULL));
-- Every read-write tenant transaction holds FOR SHARE on its tenant's row (so a freeze, which
-- updates the row, waits for the writers in flight). PostgreSQL lets a role lock rows only if it
-- may UPDATE some column: this one, which means nothing and which nothing reads.
ALTER TABLE bulkhead.tenants ADD COLUMN lock_fence boolean NOT NULL DEFAULT false;
GRANT UPDATE (lock_fence) ON bulkhead.tenants TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- Dedicated databases, registered by name. The URLs carry passwords: they are sealed with the
-- master key (AES-256-GCM bound to the name and the role), never stored in the clear.
CREATE TABLE bulkhead.tenant_databases (
    name             text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    region           text        NOT NULL CHECK (region ~ '^[a-z][a-z0-9-]{0,31}$'),
    sealed_owner_url bytea       NOT NULL,
    sealed_app_url   bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON bulkhead.tenant_databases TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- A move in progress: the step it reached, so that a crashed move resumes where it stopped.
CREATE TABLE bulkhead.tenant_moves (
    tenant_id     uuid        PRIMARY KEY,
    from_tier     text        NOT NULL,
    from_schema   text,
    from_database text,
    to_tier       text        NOT NULL CHECK (to_tier IN ('shared', 'schema', 'dedicated')),
    to_schema     text,
    to_database   text,
    from_region   text        NOT NULL,
    to_region     text        NOT NULL,
    step          text        NOT NULL
                  CHECK (step IN ('prepare', 'copy', 'freeze', 'catch_up', 'verify', 'switch', 'cleanup')),
    report        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

------------------------------------------------------------------------------------------------
-- API keys carry no tenant, so a key presented without a subdomain is found by its hash. The
-- shared tier's keys are found by bulkhead.api_key_lookup; a key of a tenant stored elsewhere is
-- found through this routing index (hash to tenant: routing metadata, no key material beyond the
-- peppered HMAC already stored with the key). The serving role writes it only through route_key,
-- and a route is only where to look: the lookup in that location must find the key, under that
-- tenant, or the key is unknown.
CREATE TABLE bulkhead.key_routes (
    key_hash   bytea       PRIMARY KEY CHECK (length(key_hash) = 32),
    tenant_id  uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX key_routes_by_tenant ON bulkhead.key_routes (tenant_id);
GRANT SELECT ON bulkhead.key_routes TO bulkhead_app;

CREATE FUNCTION bulkhead.route_key(p_hash bytea, p_tenant uuid) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO bulkhead.key_routes (key_hash, tenant_id) VALUES (p_hash, p_tenant)
    ON CONFLICT (key_hash) DO NOTHING;
END
$$;
REVOKE ALL ON FUNCTION bulkhead.route_key(bytea, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.route_key(bytea, uuid) TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- The mover: NOLOGIN, nobody is a member at rest. The last step of a move (run by the owner)
-- grants it to itself, SET LOCAL ROLE, deletes the old copy of one tenant's rows inside that
-- tenant's own context, and revokes it again in the same transaction. It is the only role the
-- append-only audit triggers let delete leaves, nodes and checkpoints, and only because the
-- same rows already exist, verified, in the tenant's new location.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bulkhead_tenant_mover') THEN
        CREATE ROLE bulkhead_tenant_mover NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOINHERIT NOREPLICATION NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT USAGE ON SCHEMA bulkhead TO bulkhead_tenant_mover;
GRANT SELECT, DELETE ON bulkhead.agent_sessions, bulkhead.api_keys, bulkhead.jobs,
    bulkhead.audit_events, bulkhead.tenant_settings, bulkhead.users, bulkhead.auth_sessions,
    bulkhead.refresh_tokens, bulkhead.revoked_tokens, bulkhead.login_throttle,
    bulkhead.webhook_endpoints, bulkhead.webhook_messages, bulkhead.webhook_deliveries,
    bulkhead.webhook_attempts, bulkhead.audit_leaves, bulkhead.audit_nodes,
    bulkhead.audit_checkpoints, bulkhead.agents, bulkhead.roles, bulkhead.role_assignments,
    bulkhead.tools, bulkhead.tool_versions, bulkhead.screening_decisions
    TO bulkhead_tenant_mover;

CREATE OR REPLACE FUNCTION bulkhead.audit_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_user = 'bulkhead_audit_maintenance'
       OR (current_user = 'bulkhead_tenant_mover' AND TG_OP = 'DELETE') THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'bulkhead.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

------------------------------------------------------------------------------------------------
-- A frozen tenant's jobs and deliveries wait (the freeze must stop every writer, workers too), and
-- so do those of a copy that is not live (a move's target before its switch, its source after).
CREATE OR REPLACE FUNCTION bulkhead.claim_jobs(p_limit integer, p_lease_seconds integer)
RETURNS TABLE (job_tenant_id uuid, job_id uuid, job_kind text, job_attempts integer,
               job_max_attempts integer, verdict text)
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF p_limit NOT BETWEEN 1 AND 1000 OR p_lease_seconds NOT BETWEEN 1 AND 3600 THEN
        RAISE EXCEPTION 'claim_jobs: limit must be 1..1000 and lease 1..3600 seconds'
            USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('bulkhead.definer', 'job_claim', true);
    RETURN QUERY
        WITH picked AS (
            SELECT j.tenant_id, j.id
            FROM bulkhead.jobs j
            WHERE ((j.status = 'queued' AND j.run_at <= now())
                   OR (j.status = 'running' AND j.locked_until < now()))
              AND NOT EXISTS (SELECT 1 FROM bulkhead.tenants f
                              WHERE f.id = j.tenant_id
                                AND (f.frozen_since IS NOT NULL OR NOT f.live))
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

CREATE OR REPLACE FUNCTION bulkhead.claim_webhook_deliveries(p_limit integer, p_per_tenant integer,
                                                  p_lease_seconds integer, p_now timestamptz)
RETURNS TABLE (delivery_tenant_id uuid, delivery_id uuid)
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF p_limit NOT BETWEEN 1 AND 1000 OR p_per_tenant NOT BETWEEN 1 AND 1000
       OR p_lease_seconds NOT BETWEEN 1 AND 3600 THEN
        RAISE EXCEPTION 'claim_webhook_deliveries: limit and per-tenant cap must be 1..1000 and lease 1..3600 seconds'
            USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('bulkhead.definer', 'webhook_claim', true);
    RETURN QUERY
        WITH busy AS (
            SELECT d.tenant_id, count(*) AS n
            FROM bulkhead.webhook_deliveries d
            WHERE d.status = 'delivering' AND d.locked_until >= p_now
            GROUP BY d.tenant_id
        ), due AS (
            SELECT d.tenant_id, d.id,
                   row_number() OVER (PARTITION BY d.tenant_id ORDER BY d.next_attempt_at, d.id) AS rn
            FROM bulkhead.webhook_deliveries d
            JOIN bulkhead.tenants t ON t.id = d.tenant_id AND t.status = 'active'
                                     AND t.frozen_since IS NULL AND t.live
            WHERE (d.status = 'pending' AND d.next_attempt_at <= p_now)
               OR (d.status = 'delivering' AND d.locked_until < p_now)
        ), fair AS (
            SELECT due.tenant_id, due.id
            FROM due LEFT JOIN busy ON busy.tenant_id = due.tenant_id
            WHERE due.rn + coalesce(busy.n, 0) <= p_per_tenant
            ORDER BY due.rn, due.id
            LIMIT p_limit
        ), picked AS (
            SELECT d.tenant_id, d.id
            FROM bulkhead.webhook_deliveries d
            JOIN fair f ON f.tenant_id = d.tenant_id AND f.id = d.id
            WHERE (d.status = 'pending' AND d.next_attempt_at <= p_now)
               OR (d.status = 'delivering' AND d.locked_until < p_now)
            FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE bulkhead.webhook_deliveries d
        SET status       = 'delivering',
            locked_until = p_now + make_interval(secs => p_lease_seconds),
            updated_at   = now()
        FROM picked
        WHERE d.tenant_id = picked.tenant_id AND d.id = picked.id
        RETURNING d.tenant_id, d.id;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;
