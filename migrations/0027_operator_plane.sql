-- The operator plane (issue 19): operator keys (`bk_op_…`) and the operator audit log.
--
-- Control plane, not tenant data: no tenant_id, no row-level security. Only the owner role (the
-- operator listener's pool and the CLI) reads or writes these tables; the application role that
-- serves tenants gets no privilege on them at all, so nothing reachable from a tenant route can
-- read an operator key's hash or the operator log. The operator listener authenticates through
-- the owner pool, so no SECURITY DEFINER lookup is needed.

CREATE TABLE bulkhead.operator_keys (
    id             uuid        PRIMARY KEY,
    name           text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- HMAC-SHA256(pepper, key text), as for tenant keys; never the key.
    key_hash       bytea       NOT NULL CHECK (octet_length(key_hash) = 32),
    pepper_version smallint    NOT NULL CHECK (pepper_version >= 1),
    display_prefix text        NOT NULL CHECK (display_prefix LIKE 'bk\_op\_%'),
    scopes         text[]      NOT NULL CHECK (cardinality(scopes) >= 1),
    created_by     text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    last_used_at   timestamptz,
    revoked_at     timestamptz,
    CONSTRAINT operator_keys_hash_unique UNIQUE (key_hash)
);
REVOKE ALL ON bulkhead.operator_keys FROM PUBLIC;

-- Every operator action and every refused operator credential. Append-only by convention of the
-- code (the owner could change it; the Merkle/checkpoint log of the tenants' audit is not yet
-- extended to it: docs/operator-api.md).
CREATE TABLE bulkhead.operator_audit_events (
    id          uuid        PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    -- `opkey_…` of the acting key, `cli:<account>` for the command line, `anonymous` for a
    -- refused credential.
    actor       text        NOT NULL,
    action      text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('started', 'success', 'failure', 'blocked')),
    resource_id text,
    reason      text,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX operator_audit_events_time ON bulkhead.operator_audit_events (occurred_at, id);
REVOKE ALL ON bulkhead.operator_audit_events FROM PUBLIC;
