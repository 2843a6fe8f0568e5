-- Webhook claim fairness between one tenant's endpoints, and wake-ups that reach every worker
-- (issue 25; redefines the claim of 0019, which is applied and stays as it was).
--
-- 1. Earned windows are per endpoint. Before, a tenant's window was earned by any of its
--    endpoints, so a fast endpoint's successes let a hanging sibling fill the tenant's window
--    (and the process's slots) while the fast one waited. Now:
--    * one endpoint may hold at most half of the tenant's guaranteed share (rounded up) unless
--      it earned more itself (`p_endpoints`/`p_caps`, from fast deliveries to that endpoint);
--    * a tenant may hold its guaranteed share plus what its endpoints earned beyond their half
--      (still at most 256 in flight: the ceiling of 0019).
--    So a hanging endpoint holds at most half of its tenant's guarantee and every other endpoint
--    of the tenant keeps the rest plus its own earned window.
-- 2. The fair choice is its own function, `webhook_fair_pick`, so later changes to the claim
--    (validation, locking, leases) do not copy it again.
-- 3. Paused deliveries (claimed for a tenant that turned out not to be active) are marked, so
--    reactivating the tenant can make exactly those due at once.
-- 4. The due trigger also sets `bulkhead.webhook_due` for its transaction: a tenant transaction
--    in a database other than the registry's (a region, a dedicated database) reads it before
--    committing and forwards the wake-up to the registry database, where every worker listens.

ALTER TABLE bulkhead.webhook_deliveries ADD COLUMN paused boolean NOT NULL DEFAULT false;

------------------------------------------------------------------------------------------------
-- The fair choice of due deliveries. Runs with the rights of the definer function that calls
-- it (not SECURITY DEFINER itself; the app role may not call it). `p_now` is already clamped.
CREATE FUNCTION bulkhead.webhook_fair_pick(p_now timestamptz, p_limit integer, p_per_tenant integer,
                                           p_tenants uuid[], p_endpoints uuid[], p_caps integer[])
RETURNS TABLE (tenant_id uuid, id uuid)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    WITH busy_endpoint AS (
        SELECT d.tenant_id, d.endpoint_id, count(*) AS n
        FROM bulkhead.webhook_deliveries d
        WHERE d.status = 'delivering' AND d.locked_until >= p_now
        GROUP BY d.tenant_id, d.endpoint_id
    ), busy_tenant AS (
        SELECT b.tenant_id, sum(b.n) AS n
        FROM busy_endpoint b
        GROUP BY b.tenant_id
    ), earned AS (
        -- An endpoint's window: what it earned, at most 256; never below its half share.
        SELECT c.tenant_id, c.endpoint_id,
               greatest(least(max(c.cap), 256), (p_per_tenant + 1) / 2) AS cap
        FROM unnest(p_tenants, p_endpoints, p_caps) AS c(tenant_id, endpoint_id, cap)
        GROUP BY c.tenant_id, c.endpoint_id
    ), extra AS (
        SELECT e.tenant_id, sum(e.cap - (p_per_tenant + 1) / 2) AS n
        FROM earned e
        GROUP BY e.tenant_id
    ), due_by_endpoint AS (
        SELECT d.tenant_id, d.endpoint_id, d.id, d.next_attempt_at,
               row_number() OVER (PARTITION BY d.tenant_id, d.endpoint_id
                                  ORDER BY d.next_attempt_at, d.id) AS ern
        FROM bulkhead.webhook_deliveries d
        JOIN bulkhead.tenants t ON t.id = d.tenant_id AND t.status = 'active'
                                 AND t.frozen_since IS NULL AND t.live
        WHERE (d.status = 'pending' AND d.next_attempt_at <= p_now)
           OR (d.status = 'delivering' AND d.locked_until < p_now)
    ), within_endpoint AS (
        -- Each endpoint within its own window first, so the tenant's count below ranks only
        -- what an endpoint may still take.
        SELECT e.tenant_id, e.id, e.ern, e.next_attempt_at
        FROM due_by_endpoint e
        LEFT JOIN busy_endpoint b ON b.tenant_id = e.tenant_id AND b.endpoint_id = e.endpoint_id
        LEFT JOIN earned c ON c.tenant_id = e.tenant_id AND c.endpoint_id = e.endpoint_id
        WHERE e.ern + coalesce(b.n, 0) <= coalesce(c.cap, (p_per_tenant + 1) / 2)
    ), due AS (
        -- Within a tenant its endpoints take turns.
        SELECT w.tenant_id, w.id,
               row_number() OVER (PARTITION BY w.tenant_id
                                  ORDER BY w.ern, w.next_attempt_at, w.id) AS rn
        FROM within_endpoint w
    )
    SELECT due.tenant_id, due.id
    FROM due
    LEFT JOIN busy_tenant b ON b.tenant_id = due.tenant_id
    LEFT JOIN extra x ON x.tenant_id = due.tenant_id
    WHERE due.rn + coalesce(b.n, 0)
          <= least(p_per_tenant + coalesce(x.n, 0), greatest(p_per_tenant, 256))
    -- Rounds of p_per_tenant: every tenant's next share before anyone's following one, the
    -- tenant with fewer in flight first, and a tenant's share together.
    ORDER BY ceil((due.rn + coalesce(b.n, 0))::numeric / p_per_tenant), due.tenant_id, due.rn
    LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION bulkhead.webhook_fair_pick(timestamptz, integer, integer, uuid[], uuid[], integer[]) FROM PUBLIC;

------------------------------------------------------------------------------------------------
DROP FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz, uuid[], integer[]);

CREATE FUNCTION bulkhead.claim_webhook_deliveries(p_limit integer, p_per_tenant integer,
                                                  p_lease_seconds integer, p_now timestamptz,
                                                  p_tenants uuid[], p_endpoints uuid[],
                                                  p_caps integer[])
RETURNS TABLE (delivery_tenant_id uuid, delivery_id uuid)
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := bulkhead.definer_now(p_now);
    v_lease integer := least(p_lease_seconds, 300);
BEGIN
    IF p_limit NOT BETWEEN 1 AND 1000 OR p_per_tenant NOT BETWEEN 1 AND 1000
       OR p_lease_seconds NOT BETWEEN 1 AND 3600
       OR cardinality(p_tenants) <> cardinality(p_caps)
       OR cardinality(p_endpoints) <> cardinality(p_caps) OR cardinality(p_caps) > 10000 THEN
        RAISE EXCEPTION 'claim_webhook_deliveries: limit and per-tenant cap must be 1..1000, lease 1..3600 seconds, and tenants, endpoints and caps pair up'
            USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('bulkhead.definer', 'webhook_claim', true);
    RETURN QUERY
        WITH picked AS (
            SELECT d.tenant_id, d.id
            FROM bulkhead.webhook_deliveries d
            JOIN bulkhead.webhook_fair_pick(v_now, p_limit, p_per_tenant, p_tenants, p_endpoints, p_caps) f
              ON f.tenant_id = d.tenant_id AND f.id = d.id
            WHERE (d.status = 'pending' AND d.next_attempt_at <= v_now)
               OR (d.status = 'delivering' AND d.locked_until < v_now)
            FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE bulkhead.webhook_deliveries d
        SET status       = 'delivering',
            locked_until = v_now + make_interval(secs => v_lease),
            paused       = false,
            updated_at   = now()
        FROM picked
        WHERE d.tenant_id = picked.tenant_id AND d.id = picked.id
        RETURNING d.tenant_id, d.id;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;
REVOKE ALL ON FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz, uuid[], uuid[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz, uuid[], uuid[], integer[]) TO bulkhead_app;

------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bulkhead.webhook_due_notify() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('bulkhead_webhooks', '');
    -- For a transaction outside the registry database, whose NOTIFY no worker hears: the
    -- store reads this before committing and forwards the wake-up (crates/store/src/door.rs).
    PERFORM set_config('bulkhead.webhook_due', 'on', true);
    RETURN NULL;
END
$$;
