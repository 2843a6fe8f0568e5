-- Control plane: the tenant registry. Not tenant data: it holds routing metadata only, and the
-- application role may read it (tenant resolution happens before any tenant context exists) but
-- never write it. Tenants are created and suspended by operator commands running as the owner.
--
-- The schema `bulkhead` is created by the migrator before this file runs (the migration ledger
-- lives in it), so everything here is schema-qualified and search_path is never relied upon.

REVOKE ALL ON SCHEMA bulkhead FROM PUBLIC;
GRANT USAGE ON SCHEMA bulkhead TO bulkhead_app;
GRANT SELECT ON bulkhead._sqlx_migrations TO bulkhead_app;

CREATE TABLE bulkhead.tenants (
    id             uuid        PRIMARY KEY,
    slug           text        NOT NULL UNIQUE
                   CHECK (slug ~ '^[a-z][a-z0-9-]{1,46}[a-z0-9]$' AND position('--' IN slug) = 0),
    display_name   text        NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    plan           text        NOT NULL DEFAULT 'standard'
                   CHECK (plan IN ('free', 'standard', 'enterprise')),
    -- Only `shared` is served today; the column is ready for the schema and dedicated tiers.
    isolation_tier text        NOT NULL DEFAULT 'shared'
                   CHECK (isolation_tier IN ('shared', 'schema', 'dedicated')),
    region         text        NOT NULL DEFAULT 'default' CHECK (region ~ '^[a-z][a-z0-9-]{0,31}$'),
    status         text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT ON bulkhead.tenants TO bulkhead_app;
