-- Clients that register themselves (issue 20), both off unless the tenant's admins enable them
-- (`PUT /v1/oauth-settings`):
--
-- - dynamic client registration (RFC 7591) at `POST /oauth/register`;
-- - client ID metadata documents (draft-ietf-oauth-client-id-metadata-document): a `client_id`
--   that is an `https` URL, whose document Bulkhead fetches through the egress guard. Such a
--   client's row is made when a user first consents to it, under an id derived from the tenant
--   and the URL (`metadata_url`), so nothing is stored for a document nobody consented to.
--
-- - `oauth_clients.registered_by`: `admin` (`/v1/oauth-clients`), `dynamic` (`/oauth/register`)
--   or `metadata_document`. All count in the same per-tenant cap.
-- - `oauth_clients.last_used_at`: when the client last obtained a code, exchanged one or
--   refreshed; a self-registered client (dynamic or metadata document) unused for 30 days is
--   refused at once and deleted by a later registration in the tenant.
-- - `tenant_settings.oauth_dynamic_registration`, `.oauth_client_metadata_documents`: the two
--   switches; `oauth_dynamic_client_scopes`: the most a self-registered client may be granted,
--   chosen by the admin from scopes they hold.

ALTER TABLE bulkhead.oauth_clients
    ADD COLUMN registered_by text NOT NULL DEFAULT 'admin'
        CHECK (registered_by IN ('admin', 'dynamic', 'metadata_document')),
    ADD COLUMN last_used_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN metadata_url text CHECK (length(metadata_url) <= 2048),
    -- A metadata-document client is named by its URL, and is public.
    ADD CONSTRAINT oauth_clients_metadata_url
        CHECK ((registered_by = 'metadata_document') = (metadata_url IS NOT NULL)),
    ADD CONSTRAINT oauth_clients_metadata_public
        CHECK (registered_by <> 'metadata_document' OR token_endpoint_auth_method = 'none');

CREATE UNIQUE INDEX oauth_clients_by_metadata_url ON bulkhead.oauth_clients (tenant_id, metadata_url)
    WHERE metadata_url IS NOT NULL;
CREATE INDEX oauth_clients_self_registered_by_use ON bulkhead.oauth_clients (tenant_id, last_used_at)
    WHERE registered_by <> 'admin';

ALTER TABLE bulkhead.tenant_settings
    ADD COLUMN oauth_dynamic_registration boolean NOT NULL DEFAULT false,
    ADD COLUMN oauth_client_metadata_documents boolean NOT NULL DEFAULT false,
    ADD COLUMN oauth_dynamic_client_scopes text[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(oauth_dynamic_client_scopes) <= 64),
    -- Either way of registering, once on, always has something to grant.
    ADD CONSTRAINT oauth_self_registration_has_scopes
        CHECK (NOT (oauth_dynamic_registration OR oauth_client_metadata_documents)
               OR cardinality(oauth_dynamic_client_scopes) >= 1);
