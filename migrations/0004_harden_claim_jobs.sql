-- claim_jobs is callable by the application role: make hostile arguments harmless. STRICT turns
-- NULL arguments into no claim at all (a NULL lease would have left jobs running forever), and
-- the bounds refuse negative or absurd batches and leases.
CREATE OR REPLACE FUNCTION bulkhead.claim_jobs(p_limit integer, p_lease_seconds integer)
RETURNS TABLE (job_tenant_id uuid, job_id uuid, job_kind text, job_attempts integer,
               job_max_attempts integer, verdict text)
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF p_limit NOT BETWEEN 1 AND 1000 OR p_lease_seconds NOT BETWEEN 1 AND 3600 THEN
        RAISE EXCEPTION 'claim_jobs: limit must be 1..1000 and lease 1..3600 seconds'
            USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('bulkhead.definer', 'job_claim', true);
    RETURN QUERY
        WITH picked AS (
            SELECT j.tenant_id, j.id
            FROM bulkhead.jobs j
            WHERE (j.status = 'queued' AND j.run_at <= now())
               OR (j.status = 'running' AND j.locked_until < now())
            ORDER BY j.run_at, j.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ), judged AS (
            SELECT p.tenant_id, p.id,
                   CASE WHEN t.id IS NULL THEN 'tenant_missing'
                        WHEN t.status <> 'active' THEN 'tenant_' || t.status
                        ELSE 'run' END AS verdict
            FROM picked p LEFT JOIN bulkhead.tenants t ON t.id = p.tenant_id
        )
        UPDATE bulkhead.jobs j
        SET status       = CASE WHEN judged.verdict = 'run' THEN 'running' ELSE 'refused' END,
            attempts     = j.attempts + CASE WHEN judged.verdict = 'run' THEN 1 ELSE 0 END,
            locked_until = CASE WHEN judged.verdict = 'run'
                                THEN now() + make_interval(secs => p_lease_seconds) END,
            last_error   = CASE WHEN judged.verdict = 'run' THEN j.last_error
                                ELSE 'refused: ' || judged.verdict END,
            updated_at   = now()
        FROM judged
        WHERE j.tenant_id = judged.tenant_id AND j.id = judged.id
        RETURNING j.tenant_id, j.id, j.kind, j.attempts, j.max_attempts, judged.verdict;
    PERFORM set_config('bulkhead.definer', '', true);
END
$$;
