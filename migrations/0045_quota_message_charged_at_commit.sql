-- A message the tenant publishes charges its quota counters at commit (issue 25).
--
-- Measured with the webhook_serve benchmark against a cluster that writes as `serve`'s does
-- (synchronous commit on): one tenant's message insert waited 8.2 ms on average for the tenant's
-- `stored_bytes` counter row. Each publish locked it at its insert (0043's row trigger) and held
-- it through a round trip to the client, the COMMIT, and the commit's WAL flush; so one tenant's
-- publishes committed one at a time, with a client round trip inside every hold.
--
-- Now the same trigger function runs at commit, as a deferred constraint trigger, for the
-- messages counted as the tenant's (`quota_tenant_message`: published through the API, and
-- endpoint tests): the counter is held from the commit's start to its end. Amounts, order
-- (`stored_bytes` first) and refusals are 0043's; a refusal (SQLSTATE BQ001) now ends the
-- COMMIT instead of the INSERT, the transaction rolls back with the message as before, and the
-- store maps BQ001 from any statement, COMMIT included, so the answer is the same.
--
-- The platform's messages (events raised by other changes, the audit stream) keep the
-- immediate trigger. Why the split: PostgreSQL runs deferred triggers at commit in the order
-- their rows were written, and the audit event's charge (0020, deferred) locks the
-- `audit_events` counter only, not `stored_bytes`. A key mint writes its audit event and then
-- its `api_key.created` event; charged at commit, that would take `audit_events` and then
-- `stored_bytes`, while a publish (message, then audit event) takes them the other way round:
-- a deadlock, found by review before this landed. The two paths that write a tenant's message
-- (the publish route and the endpoint test, `http/routes/webhooks/deliveries.rs`) write it
-- before their audit event, so at their commit `stored_bytes` comes first, as in every other
-- transaction that takes both.
--
-- Other orders are unchanged: a publishing transaction holds, when it takes the counters at
-- its commit, the row locks it held at its insert (its endpoints `FOR KEY SHARE`, the tenant's
-- anchor row `FOR SHARE`) plus its audit event's insert, which nobody else locks; and once it
-- holds a counter it waits for nothing but counters. Moves copy messages with
-- `bulkhead.quota_replay` set for the whole transaction and as the owner at commit, so the
-- charge is still skipped there.

DROP TRIGGER quota_track_inserted ON bulkhead.webhook_messages;
CREATE TRIGGER quota_track_inserted AFTER INSERT ON bulkhead.webhook_messages
    FOR EACH ROW
    WHEN (NOT bulkhead.quota_tenant_message(NEW.source, NEW.event_type))
    EXECUTE FUNCTION bulkhead.quota_track_message_inserted();
CREATE CONSTRAINT TRIGGER quota_track_inserted_at_commit AFTER INSERT ON bulkhead.webhook_messages
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (bulkhead.quota_tenant_message(NEW.source, NEW.event_type))
    EXECUTE FUNCTION bulkhead.quota_track_message_inserted();
