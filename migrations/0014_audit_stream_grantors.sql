-- Issue 17, item 2: the audit stream (`audit.event`) reaches an endpoint only while whoever
-- subscribed it still holds `audit:read`. `audit_grantors` names that principal: the key of an
-- API-key caller, the subject (and, for a token issued to a key, that key) of a token caller, or
-- `system:<component>`. The delivery side checks each one's current effective permissions
-- whenever it fans an audit event out. Endpoints made before this migration have no grantor and
-- stop receiving the stream until someone holding `audit:read` subscribes them again (fail
-- closed: who made them is not known).
ALTER TABLE bulkhead.webhook_endpoints
    ADD COLUMN audit_grantors text[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(audit_grantors) <= 4);
