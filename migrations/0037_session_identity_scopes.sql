-- The identity scopes an authorization code granted, kept on the session its tokens belong to
-- (issue 20, review L9). `userinfo` and a refresh answer what the consent holds now *and* what
-- this session was granted, so a wider consent given later (another sign-in that ticked `email`)
-- never widens an older session's tokens. NULL: a session started before this migration, which
-- keeps its earlier rule (the consent as it is now) until its next refresh fixes them to the
-- consent's at that moment (no backfill here: the table forces row-level security, and codes
-- are swept an hour after they expire, so most sessions' grants could not be recovered anyway).
ALTER TABLE bulkhead.auth_sessions
    ADD COLUMN identity_scopes text[]
        CHECK (identity_scopes <@ ARRAY['openid', 'profile', 'email']::text[]);
