-- The audit sequencer visits the tenants that wrote events, not every tenant every second
-- (issue 25, found measuring 100 tenants at once; docs/audit.md "Sequencing").
--
-- Each pass of the sequencer, every second, opened a transaction in every tenant of the registry
-- (the advisory lock, the tree size, the frontier, the audit stream's subscribers, the unsequenced
-- events) whether or not it had written anything: with 302 idle tenants `serve` and PostgreSQL
-- used 38-40 % of a core (the delivery benchmark's idle phase), about 1.3 ms per tenant and pass,
-- so an idle deployment of 1,000 tenants would need more than a core for it.
--
-- Now an insert into `audit_events` announces its tenants on the `bulkhead_audit` channel (one
-- notification per tenant and transaction: PostgreSQL folds identical ones), and marks the
-- transaction (`bulkhead.audit_written`) so that a transaction in a database where no sequencer
-- listens (a dedicated database, another region) has the store forward the notification to the
-- registry's database after commit, as it forwards webhook wake-ups (0021). The sequencer listens
-- there and visits the announced tenants; it still visits every tenant at start, after its
-- listener reconnects (what was announced meanwhile is lost) and at every full sweep.

CREATE FUNCTION bulkhead.audit_written_notify() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = 'auto'
AS $$
DECLARE
    v_tenant uuid;
BEGIN
    FOR v_tenant IN SELECT DISTINCT w.tenant_id FROM written w LOOP
        PERFORM pg_notify('bulkhead_audit', v_tenant::text);
    END LOOP;
    PERFORM set_config('bulkhead.audit_written', 'on', true);
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_events_written AFTER INSERT ON bulkhead.audit_events
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.audit_written_notify();
