-- Hierarchical namespaces on agent sessions, for credentials confined to a resource prefix.
-- The check is the same grammar as bulkhead_core::Namespace: 1-8 segments of [a-z0-9._-], each
-- starting with a letter or digit (so never '.' or '..'), joined by '/'. NULL: no namespace,
-- reachable only by credentials without a prefix.
ALTER TABLE bulkhead.agent_sessions
    ADD COLUMN namespace text
        CHECK (namespace IS NULL OR namespace ~ '^[a-z0-9][a-z0-9._-]{0,62}(/[a-z0-9][a-z0-9._-]{0,62}){0,7}$');
CREATE INDEX agent_sessions_by_namespace ON bulkhead.agent_sessions (tenant_id, namespace text_pattern_ops);
