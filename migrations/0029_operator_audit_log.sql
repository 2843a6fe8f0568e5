-- The operator audit log becomes tamper-evident like the tenants' logs (issue 19,
-- docs/operator-api.md "The operator audit log").
--
-- operator_audit_events (0027) stays the event store. Each event gets a leaf in one RFC 9162
-- Merkle tree of the deployment's operator log, assigned in the transaction that writes the event,
-- under a transaction-scoped advisory lock (so indexes are gap-free and ordered by commit), with the
-- leaf hash of the event's canonical encoding (bulkhead_audit::SequencedEvent with tenant_id
-- `operator`). operator_audit_checkpoints holds signed (size, root) statements, signed with the
-- same log key as tenant checkpoints but under their own header (bulkhead-operator-audit-checkpoint/v1),
-- so one can never pass for the other.
--
-- Owner role only, like 0027: the application role gets no privilege. Append-only triggers refuse
-- UPDATE, DELETE and TRUNCATE (the owner could still disable them: that is what the signed
-- checkpoints detect). Events written before this migration are sequenced by the first writer
-- after it, oldest first.

CREATE TABLE bulkhead.operator_audit_leaves (
    leaf_index   bigint      PRIMARY KEY CHECK (leaf_index >= 0),
    event_id     uuid        NOT NULL UNIQUE,
    leaf_hash    bytea       NOT NULL CHECK (length(leaf_hash) = 32),
    sequenced_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON bulkhead.operator_audit_leaves FROM PUBLIC;

CREATE TABLE bulkhead.operator_audit_checkpoints (
    id         uuid        PRIMARY KEY,
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash  bytea       NOT NULL CHECK (length(root_hash) = 32),
    signed_at  text        NOT NULL CHECK (length(signed_at) <= 40),
    key_id     text        NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    signature  text        NOT NULL CHECK (length(signature) <= 100),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_audit_checkpoints_by_size
    ON bulkhead.operator_audit_checkpoints (tree_size, id);
REVOKE ALL ON bulkhead.operator_audit_checkpoints FROM PUBLIC;

-- bulkhead.audit_append_only() (0007) lets only bulkhead_audit_maintenance through, and that role
-- has no privilege on these tables: nothing deletes from the operator log.
CREATE TRIGGER operator_audit_events_append_only
    BEFORE UPDATE OR DELETE ON bulkhead.operator_audit_events
    FOR EACH ROW EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER operator_audit_events_no_truncate
    BEFORE TRUNCATE ON bulkhead.operator_audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER operator_audit_leaves_append_only
    BEFORE UPDATE OR DELETE ON bulkhead.operator_audit_leaves
    FOR EACH ROW EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER operator_audit_leaves_no_truncate
    BEFORE TRUNCATE ON bulkhead.operator_audit_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER operator_audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON bulkhead.operator_audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION bulkhead.audit_append_only();
CREATE TRIGGER operator_audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON bulkhead.operator_audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION bulkhead.audit_append_only();
