-- Outbound webhooks: endpoints, messages, deliveries (one message to one endpoint) and the attempt
-- log. Every table follows the tenant-table rules of 0002 (tenant_id first, FORCE RLS, the
-- tenant_isolation policy); catalog_lint.rs checks them. Workers claim due deliveries across
-- tenants only through bulkhead.claim_webhook_deliveries, a SECURITY DEFINER function that
-- returns ids alone; everything else a worker reads or writes happens in the delivery's own
-- tenant context.

------------------------------------------------------------------------------------------------
-- webhook_endpoints: where a tenant's events go. `secret` and `previous_secret` are HMAC keys,
-- stored sealed by the master key;
-- the API shows them once (create, rotate) and never again.
CREATE TABLE bulkhead.webhook_endpoints (
    tenant_id                  uuid        NOT NULL,
    id                         uuid        NOT NULL,
    url                        text        NOT NULL CHECK (length(url) <= 2048),
    description                text        NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    event_types                text[]      NOT NULL DEFAULT '{}',
    enabled                    boolean     NOT NULL DEFAULT true,
    disabled_reason            text,
    rate_limit_per_second      integer     CHECK (rate_limit_per_second BETWEEN 1 AND 10000),
    headers                    jsonb       NOT NULL DEFAULT '{}'::jsonb
                               CHECK (jsonb_typeof(headers) = 'object' AND pg_column_size(headers) <= 16384),
    -- Sealed (AES-256-GCM under the master key, bound to tenant and endpoint): nonce (12) ‖
    -- 16-64 secret bytes ‖ tag (16). Never the secret itself.
    secret                     bytea       NOT NULL CHECK (length(secret) BETWEEN 44 AND 92),
    previous_secret            bytea       CHECK (length(previous_secret) BETWEEN 44 AND 92),
    previous_secret_expires_at timestamptz,
    consecutive_failures       integer     NOT NULL DEFAULT 0,
    failing_since              timestamptz,
    circuit_open_until         timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE bulkhead.webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.webhook_endpoints
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON bulkhead.webhook_endpoints TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- webhook_messages: one event, with the id sent as `webhook-id` on every attempt.
CREATE TABLE bulkhead.webhook_messages (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    event_type text        NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_.-]{0,99}$'),
    source     text        NOT NULL CHECK (source IN ('platform', 'tenant')),
    payload    jsonb       NOT NULL CHECK (pg_column_size(payload) <= 262144),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE bulkhead.webhook_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.webhook_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.webhook_messages
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, DELETE ON bulkhead.webhook_messages TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- webhook_deliveries: one message to one endpoint; the unit workers claim.
CREATE TABLE bulkhead.webhook_deliveries (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    message_id      uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed', 'blocked')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    locked_until    timestamptz,
    last_error      text        CHECK (length(last_error) <= 1000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, message_id) REFERENCES bulkhead.webhook_messages (tenant_id, id)
        ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES bulkhead.webhook_endpoints (tenant_id, id)
        ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON bulkhead.webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_by_message ON bulkhead.webhook_deliveries (tenant_id, message_id);
CREATE INDEX webhook_deliveries_by_endpoint ON bulkhead.webhook_deliveries (tenant_id, endpoint_id, status);
ALTER TABLE bulkhead.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.webhook_deliveries
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
CREATE POLICY definer_webhook_claim ON bulkhead.webhook_deliveries FOR ALL TO CURRENT_USER
    USING (current_setting('bulkhead.definer', true) = 'webhook_claim')
    WITH CHECK (current_setting('bulkhead.definer', true) = 'webhook_claim');
GRANT SELECT, INSERT, UPDATE ON bulkhead.webhook_deliveries TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- webhook_attempts: the attempt log (append-only for the application role).
CREATE TABLE bulkhead.webhook_attempts (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    delivery_id     uuid        NOT NULL,
    message_id      uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    attempted_at    timestamptz NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'blocked')),
    status_code     integer,
    latency_ms      integer     NOT NULL DEFAULT 0,
    error_class     text        CHECK (length(error_class) <= 64),
    error           text        CHECK (length(error) <= 1000),
    response_sample text        CHECK (octet_length(response_sample) <= 4096),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES bulkhead.webhook_deliveries (tenant_id, id)
        ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_by_message ON bulkhead.webhook_attempts (tenant_id, message_id, id);
ALTER TABLE bulkhead.webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulkhead.webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulkhead.webhook_attempts
    USING (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('bulkhead.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT ON bulkhead.webhook_attempts TO bulkhead_app;

-- Claims due deliveries fairly across tenants: each active tenant gets at most p_per_tenant
-- deliveries in flight (counting live leases held by any worker), and the batch is filled
-- round-robin (every tenant's first due delivery before anyone's second). FOR UPDATE SKIP LOCKED
-- keeps concurrent workers apart; an expired lease (a worker that died mid-delivery) makes its
-- delivery due again, so nothing is lost (at-least-once). Suspended or missing tenants' deliveries
-- wait. p_now is the caller's clock (tests use an injected one); only ids leave this function.
CREATE FUNCTION bulkhead.claim_webhook_deliveries(p_limit integer, p_per_tenant integer,
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
REVOKE ALL ON FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz) TO bulkhead_app;
