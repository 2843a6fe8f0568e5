-- A tenant's own request budget (issue 19: "change plan, status and per-tenant rate-limit
-- overrides"), replacing its plan's at the tenant level of the limiter: so many requests a
-- minute, with a burst of at least 10 (the costliest request) and at most one minute's worth.
-- Both or neither; NULL follows the plan. Control-plane data like the plan, read with the
-- registry row (cached for `--registry-cache-secs`), never by tenant requests.
ALTER TABLE bulkhead.tenants
    ADD COLUMN rate_limit_per_minute integer
        CHECK (rate_limit_per_minute BETWEEN 10 AND 10000000),
    ADD COLUMN rate_limit_burst integer,
    ADD CONSTRAINT tenants_rate_limit_whole
        CHECK ((rate_limit_per_minute IS NULL) = (rate_limit_burst IS NULL)),
    ADD CONSTRAINT tenants_rate_limit_burst
        CHECK (rate_limit_burst BETWEEN 10 AND rate_limit_per_minute);
