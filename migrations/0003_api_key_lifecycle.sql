-- API key lifecycle: who a key acts for, where it may be used from, rotation with grace, and a
-- per-tenant key policy. Rotation links are composite foreign keys (tenant_id, other_id), so a
-- key can only ever be linked to a key of its own tenant.

ALTER TABLE bulkhead.api_keys
    ADD COLUMN principal text NOT NULL DEFAULT 'tenant-admin'
        CHECK (principal ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    ADD COLUMN allowed_ips cidr[] NOT NULL DEFAULT '{}' CHECK (cardinality(allowed_ips) <= 64),
    ADD COLUMN last_used_ip inet,
    ADD COLUMN predecessor_id uuid,
    ADD COLUMN successor_id uuid,
    ADD COLUMN rotated_at timestamptz,
    ADD COLUMN grace_until timestamptz,
    ADD COLUMN revoked_at timestamptz,
    -- When the rotation-deadline and maximum-age reminders were raised (each at most once).
    ADD COLUMN deadline_notified_at timestamptz,
    ADD COLUMN age_reminded_at timestamptz,
    ADD CONSTRAINT api_keys_predecessor FOREIGN KEY (tenant_id, predecessor_id)
        REFERENCES bulkhead.api_keys (tenant_id, id),
    ADD CONSTRAINT api_keys_successor FOREIGN KEY (tenant_id, successor_id)
        REFERENCES bulkhead.api_keys (tenant_id, id),
    ADD CONSTRAINT api_keys_rotating_has_grace CHECK (status <> 'rotating' OR grace_until IS NOT NULL);
CREATE INDEX api_keys_by_principal ON bulkhead.api_keys (tenant_id, principal);

-- Per-tenant key policy; a tenant without a row uses the defaults below.
CREATE TABLE bulkhead.tenant_settings (
    tenant_id              uuid        NOT NULL PRIMARY KEY,
    -- How long a rotated key keeps working: 0 to 30 days (default 7).
    key_grace_seconds      integer     NOT NULL DEFAULT 604800 CHECK (key_grace_seconds BETWEEN 0 AND 2592000),
    -- Keys older than this are due for rotation (90 standard, 30 regulated).
    key_max_age_days       integer     NOT NULL DEFAULT 90 CHECK (key_max_age_days BETWEEN 1 AND 3650),
    -- How long before a grace deadline a still-used old key raises an event (default 48 h).
    key_deadline_warning_seconds integer NOT NULL DEFAULT 172800
        CHECK (key_deadline_warning_seconds BETWEEN 0 AND 2592000),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE bulkhead.tenant_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.tenant_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.tenant_settings
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE ON bulkhead.tenant_settings TO bulkhead_app;

-- The lookup now takes the hashes of the presented key under every pepper version the server
-- holds (current first), so a key hashed under an old pepper still verifies, in one round trip,
-- and the caller learns which hash matched in order to re-hash it under the current pepper.
DROP FUNCTION bulkhead.api_key_lookup(bytea);
CREATE FUNCTION bulkhead.api_key_lookup(p_key_hashes bytea[])
RETURNS TABLE (key_tenant_id uuid, key_id uuid, key_hash bytea, key_pepper_version smallint,
               key_environment text, key_scopes text[], key_status text,
               key_expires_at timestamptz, key_grace_until timestamptz,
               key_allowed_ips text[], key_principal text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF cardinality(p_key_hashes) > 8 THEN
        RAISE EXCEPTION 'too many hashes' USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('bulkhead.definer', 'api_key_lookup', true);
    RETURN QUERY
        SELECT k.tenant_id, k.id, k.key_hash, k.pepper_version, k.environment, k.scopes, k.status,
               k.expires_at, k.grace_until, k.allowed_ips::text[], k.principal
        FROM bulkhead.api_keys k
        WHERE k.key_hash = ANY (p_key_hashes)
        LIMIT 2;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;
REVOKE ALL ON FUNCTION bulkhead.api_key_lookup(bytea[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.api_key_lookup(bytea[]) TO bulkhead_app;
