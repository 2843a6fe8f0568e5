-- Crypto-shredding (issue 19): each tenant has its own data key, 32 random bytes sealed under
-- the master key and bound to the tenant's id, under which its secrets (webhook and tool
-- secrets) are sealed. The key lives only here, in the registry: never in the tenant's location
-- (its shared rows, schema or dedicated database), never in an export. The purge deletes it
-- with the registry row, so every copy of the tenant's sealed secrets — a backup of its schema
-- or dedicated database, an export archive — can no longer be opened, not even with the master
-- key. Backups of the registry database keep this table on a retention of its own
-- (docs/operator-api.md, "Crypto-shredding").
--
-- The serving role reads keys and adds a tenant's missing one on first use (INSERT … ON
-- CONFLICT DO NOTHING, then reads back whichever won); it can neither change nor delete one.
CREATE TABLE bulkhead.tenant_keys (
    id         uuid        PRIMARY KEY REFERENCES bulkhead.tenants (id) ON DELETE CASCADE,
    sealed     bytea       NOT NULL CHECK (length(sealed) = 12 + 32 + 16),
    created_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON bulkhead.tenant_keys TO bulkhead_app;
GRANT INSERT (id, sealed) ON bulkhead.tenant_keys TO bulkhead_app;
