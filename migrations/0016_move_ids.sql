-- Moves write their audit events exactly once (docs/isolation-tiers.md, "Moves").
--
-- A move's events live in the tenant's own log (its location), while its record lives here; no
-- transaction spans both. So each event's id is chosen and recorded here before the event is
-- written, and the event is written only if that id is not in the tenant's log yet: a move
-- killed between the two writes and run again finds its event and does not write a second one.
-- move_id is also the id of the move's `tenant.move.start` event (and named in the metadata of
-- all three); end_event_id is that of `tenant.move` or `tenant.move.abandon`. A move begun
-- before this migration has no move_id until it is resumed.
ALTER TABLE bulkhead.tenant_moves
    ADD COLUMN move_id uuid,
    ADD COLUMN end_event_id uuid;
