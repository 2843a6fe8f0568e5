-- A tool call (and every other outbound action a tenant triggers) is recorded as `started` in a
-- committed transaction before anything leaves the process; its result is a second event that
-- names the same call id. The outcome column gains that value.
ALTER TABLE bulkhead.audit_events DROP CONSTRAINT audit_events_outcome_check;
ALTER TABLE bulkhead.audit_events ADD CONSTRAINT audit_events_outcome_check
    CHECK (outcome IN ('success', 'failure', 'blocked', 'started'));
