-- Webhook throughput and the definer functions' clock (issues 25 and 17 item 6).
--
-- 1. SECURITY DEFINER functions no longer trust the caller's clock. `p_now` is clamped to within
--    5 seconds of the database's own clock (plus `definer_clock_skew`, an owner-only offset that
--    test suites use to move time; the application role can neither read nor write it). An app
--    role passing 'infinity' therefore claims only what is due now.
-- 2. The delivery claim is work-conserving: `p_per_tenant` is the share every tenant is
--    guaranteed, and a worker may grant a tenant a larger in-flight cap (`p_tenants`/`p_caps`,
--    earned by fast deliveries in that worker), so a lone tenant with a fast receiver uses every
--    slot while a hanging receiver never holds more than the guaranteed share. The batch is
--    filled in rounds of `p_per_tenant` per tenant, counting what each has in flight (tenants
--    with fewer in flight first), and within a tenant its endpoints take turns.
-- 3. Deliveries becoming due wake the workers: an insert (publish), or an update that makes a
--    delivery pending and due at once (resend, recover, a paused delivery), sends NOTIFY
--    `bulkhead_webhooks` when its transaction commits. Polling stays only as a fallback.

------------------------------------------------------------------------------------------------
CREATE TABLE bulkhead.definer_clock_skew (
    only_row boolean  PRIMARY KEY DEFAULT true CHECK (only_row),
    skew     interval NOT NULL DEFAULT '0 seconds'
);
INSERT INTO bulkhead.definer_clock_skew DEFAULT VALUES;
REVOKE ALL ON bulkhead.definer_clock_skew FROM PUBLIC;

-- The time a definer function acts at: the caller's value, but never more than 5 s away from the
-- database's clock (shifted by the owner's skew). Not SECURITY DEFINER itself: it runs with the
-- rights of the definer function that calls it, and the app role may not call it directly.
CREATE FUNCTION bulkhead.definer_now(p_now timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT greatest(least(p_now, s.t + interval '5 seconds'), s.t - interval '5 seconds')
    FROM (SELECT now() + coalesce((SELECT skew FROM bulkhead.definer_clock_skew), interval '0') AS t) s
$$;
REVOKE ALL ON FUNCTION bulkhead.definer_now(timestamptz) FROM PUBLIC;

------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bulkhead.revoked_tokens_active(p_now timestamptz)
RETURNS TABLE (revoked_tenant_id uuid, revoked_id uuid, revoked_kind text, revoked_expires_at timestamptz)
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := bulkhead.definer_now(p_now);
BEGIN
    PERFORM set_config('bulkhead.definer', 'revoked_tokens_active', true);
    RETURN QUERY
        SELECT r.tenant_id, r.id, r.kind, r.expires_at
        FROM bulkhead.revoked_tokens r
        WHERE r.expires_at > v_now;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;

------------------------------------------------------------------------------------------------
DROP FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz);

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
            SELECT c.tenant_id, max(c.cap) AS cap
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
            locked_until = v_now + make_interval(secs => p_lease_seconds),
            updated_at   = now()
        FROM picked
        WHERE d.tenant_id = picked.tenant_id AND d.id = picked.id
        RETURNING d.tenant_id, d.id;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;
REVOKE ALL ON FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz, uuid[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulkhead.claim_webhook_deliveries(integer, integer, integer, timestamptz, uuid[], integer[]) TO bulkhead_app;

------------------------------------------------------------------------------------------------
-- Wake the dispatchers when work becomes due. Runs as the writer (the app role may NOTIFY); the
-- notification leaves only if the transaction commits, and PostgreSQL folds repeats within one
-- transaction into one.
CREATE FUNCTION bulkhead.webhook_due_notify() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('bulkhead_webhooks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_deliveries_inserted
    AFTER INSERT ON bulkhead.webhook_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.webhook_due_notify();

CREATE TRIGGER webhook_deliveries_due_again
    AFTER UPDATE ON bulkhead.webhook_deliveries
    FOR EACH ROW
    WHEN (NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending'
          AND NEW.next_attempt_at <= NEW.updated_at)
    EXECUTE FUNCTION bulkhead.webhook_due_notify();
