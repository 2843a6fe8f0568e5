-- The claim's fair pick keeps its plan, and is planned for the batch it returns (issue 25).
--
-- Profiled in the webhook_serve benchmark's phase (a) (one tenant, 5,000 messages published by
-- eight clients while they are delivered; `pg_stat_statements` with `track_planning` on the
-- bench's cluster): 684 claims, and the fair pick's first statement alone planned on every one
-- of them, 465 ms of planning in an 11.5 s phase on the one core `serve` and PostgreSQL share.
-- 0033's fair pick is a SQL function with `SET search_path`, which PostgreSQL cannot inline
-- and so parses and plans on every call (a SQL function keeps no plan between calls).
--
-- Now:
-- * the same query, unchanged, is the body of a PL/pgSQL function, which keeps its plan for the
--   session. `plan_cache_mode = force_generic_plan` keeps the plan the SQL function had: a SQL
--   function's statements are planned without their parameters' values (a generic plan), so
--   this is the plan every claim has used since 0033, now made once per connection instead of
--   once per claim;
-- * the function declares the rows it returns (`ROWS 64`, the dispatcher's batch; it returns
--   at most `p_limit`) instead of PostgreSQL's default of 1,000 for a set-returning function,
--   so the claim's join of the picked rows to `webhook_deliveries` is planned for a batch.
-- The choice itself (order, caps, earned windows) is 0021's and 0033's, unchanged.

CREATE OR REPLACE FUNCTION bulkhead.webhook_fair_pick(p_now timestamptz, p_limit integer, p_per_tenant integer,
                                                      p_tenants uuid[], p_endpoints uuid[], p_caps integer[])
RETURNS TABLE (tenant_id uuid, id uuid)
LANGUAGE plpgsql STABLE STRICT
ROWS 64
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = 'force_generic_plan'
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
        LIMIT p_limit;
END
$$;
