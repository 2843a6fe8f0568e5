-- The fair pick reads the due deliveries once per claim, not once per active tenant (issue 25,
-- phase (c) of the webhook_serve benchmark: every round of 100 tenants was slower than the one
-- before it).
--
-- 0021's pick joined the due deliveries with the active tenants, and the planner drove that join
-- from the tenants: for every active tenant a bitmap scan of the whole due index (it has no
-- usable bound: the due condition is an OR over two statuses) ANDed with the tenant's entries.
-- Measured on the benchmark's database in its third round: 302 tenants, 8,900 entries in the due
-- index (most of them dead versions of delivered rows: bitmap scans never mark entries dead, and
-- autovacuum visits the table at most once a minute), one pick 130-470 ms and 4,000-19,000
-- buffers. So a claim cost grew with the number of tenants times the deliveries made since the
-- last vacuum.
--
-- Now:
-- * the due rows are read first, by two bounded index scans (pending rows by `next_attempt_at`
--   on the existing due index, expired leases by `locked_until` on a new partial index), and
--   materialized, so no plan can rescan them per tenant;
-- * each due row's tenant is checked by a primary-key probe of `tenants`, so the cost follows
--   the due rows, not the size of the registry;
-- * the in-flight counts use the new lease index too.
-- The choice itself (order, caps, earned windows) is 0021's, unchanged.

CREATE INDEX webhook_deliveries_leased ON bulkhead.webhook_deliveries (locked_until)
    WHERE status = 'delivering';

CREATE OR REPLACE FUNCTION bulkhead.webhook_fair_pick(p_now timestamptz, p_limit integer, p_per_tenant integer,
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
    ), due_rows AS MATERIALIZED (
        -- Read once, each branch bounded by its own index.
        SELECT d.tenant_id, d.endpoint_id, d.id, d.next_attempt_at
        FROM bulkhead.webhook_deliveries d
        WHERE d.status = 'pending' AND d.next_attempt_at <= p_now
        UNION ALL
        SELECT d.tenant_id, d.endpoint_id, d.id, d.next_attempt_at
        FROM bulkhead.webhook_deliveries d
        WHERE d.status = 'delivering' AND d.locked_until < p_now
    ), due_by_endpoint AS (
        SELECT r.tenant_id, r.endpoint_id, r.id, r.next_attempt_at,
               row_number() OVER (PARTITION BY r.tenant_id, r.endpoint_id
                                  ORDER BY r.next_attempt_at, r.id) AS ern
        FROM due_rows r
        WHERE EXISTS (SELECT 1 FROM bulkhead.tenants t
                      WHERE t.id = r.tenant_id AND t.status = 'active'
                        AND t.frozen_since IS NULL AND t.live)
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
