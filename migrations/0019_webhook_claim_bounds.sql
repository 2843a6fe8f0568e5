-- Review finding 9 on the webhook claim (redefines the function of 0012; 0012 is applied
-- and stays as it was).
--
-- * The lease and the per-tenant caps come from the app role. A compromised app role could claim
--   every due delivery of a tenant and lock it for an hour. The function now clamps the lease to
--   300 seconds (the dispatcher asks for 60; a lease must only outlast one attempt's total
--   timeout) and every tenant's cap to 256 in flight (four times the dispatcher's default
--   concurrency of 64; a cap beyond any sane concurrency can only come from a hostile caller).
--   (Clamping caps to the call's batch limit instead would collapse every earned window under
--   load: the dispatcher claims as few rows as it has free slots, so a tenant with 60 in flight
--   and 4 free slots would get nothing.)
DROP FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz, uuid[], integer[]);

CREATE FUNCTION bulkhead.claim_webhook_deliveries(p_limit integer, p_per_tenant integer,
                                                  p_lease_seconds integer, p_now timestamptz,
                                                  p_tenants uuid[], p_caps integer[])
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
       OR cardinality(p_tenants) <> cardinality(p_caps) OR cardinality(p_tenants) > 10000 THEN
        RAISE EXCEPTION 'claim_webhook_deliveries: limit and per-tenant cap must be 1..1000, lease 1..3600 seconds, and tenants and caps pair up'
            USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('bulkhead.definer', 'webhook_claim', true);
    RETURN QUERY
        WITH busy AS (
            SELECT d.tenant_id, count(*) AS n
            FROM bulkhead.webhook_deliveries d
            WHERE d.status = 'delivering' AND d.locked_until >= v_now
            GROUP BY d.tenant_id
        ), caps AS (
            SELECT c.tenant_id, least(max(c.cap), 256) AS cap
            FROM unnest(p_tenants, p_caps) AS c(tenant_id, cap)
            GROUP BY c.tenant_id
        ), due_by_endpoint AS (
            SELECT d.tenant_id, d.id, d.next_attempt_at,
                   row_number() OVER (PARTITION BY d.tenant_id, d.endpoint_id
                                      ORDER BY d.next_attempt_at, d.id) AS ern
            FROM bulkhead.webhook_deliveries d
            JOIN bulkhead.tenants t ON t.id = d.tenant_id AND t.status = 'active'
                                     AND t.frozen_since IS NULL AND t.live
            WHERE (d.status = 'pending' AND d.next_attempt_at <= v_now)
               OR (d.status = 'delivering' AND d.locked_until < v_now)
        ), due AS (
            SELECT e.tenant_id, e.id,
                   row_number() OVER (PARTITION BY e.tenant_id
                                      ORDER BY e.ern, e.next_attempt_at, e.id) AS rn
            FROM due_by_endpoint e
        ), fair AS (
            SELECT due.tenant_id, due.id
            FROM due
            LEFT JOIN busy ON busy.tenant_id = due.tenant_id
            LEFT JOIN caps ON caps.tenant_id = due.tenant_id
            WHERE due.rn + coalesce(busy.n, 0)
                  <= least(greatest(p_per_tenant, coalesce(caps.cap, 0)), 1000)
            -- Rounds of p_per_tenant: every tenant's next share before anyone's following
            -- one, and a tenant's share together (one read and one write per tenant and batch).
            ORDER BY ceil((due.rn + coalesce(busy.n, 0))::numeric / p_per_tenant), due.tenant_id, due.rn
            LIMIT p_limit
        ), picked AS (
            SELECT d.tenant_id, d.id
            FROM bulkhead.webhook_deliveries d
            JOIN fair f ON f.tenant_id = d.tenant_id AND f.id = d.id
            WHERE (d.status = 'pending' AND d.next_attempt_at <= v_now)
               OR (d.status = 'delivering' AND d.locked_until < v_now)
            FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE bulkhead.webhook_deliveries d
        SET status       = 'delivering',
            locked_until = v_now + make_interval(secs => v_lease),
            updated_at   = now()
        FROM picked
        WHERE d.tenant_id = picked.tenant_id AND d.id = picked.id
        RETURNING d.tenant_id, d.id;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;
REVOKE ALL ON FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz, uuid[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz, uuid[], integer[]) TO bulkhead_app;
