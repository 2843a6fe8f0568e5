-- OpenID Connect for the authorization-code flow (issue 20): the identity scopes (`openid`,
-- `profile`, `email`) a user consented to are not permissions, so they are kept beside the
-- permission scopes, on the code and on the remembered consent. A code also keeps the `nonce` of
-- its authorization request and the time the user signed in (`auth_time`), for its ID token.

ALTER TABLE bulkhead.oauth_codes
    ADD COLUMN identity_scopes text[] NOT NULL DEFAULT '{}'
        CHECK (identity_scopes <@ ARRAY['openid', 'profile', 'email']::text[]),
    ADD COLUMN nonce text CHECK (length(nonce) <= 512),
    ADD COLUMN auth_time timestamptz;

ALTER TABLE bulkhead.oauth_grants
    ADD COLUMN identity_scopes text[] NOT NULL DEFAULT '{}'
        CHECK (identity_scopes <@ ARRAY['openid', 'profile', 'email']::text[]);
