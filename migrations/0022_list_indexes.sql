-- Issue 28 item 3: an index led by tenant_id behind every list the API offers, with every
-- documented filter (test: list_indexes::every_list_query_uses_an_index_led_by_tenant_id).

-- GET /v1/auth/sessions for an API key's client (tokens::live_sessions_of by client_id) had no
-- index: it walked every auth session of the tenant.
CREATE INDEX auth_sessions_by_client ON bulkhead.auth_sessions (tenant_id, client_id, id);

-- GET /v1/api-keys?principal= pages in id order: with id in the index a page reads its rows in
-- order instead of sorting all of the principal's keys. It replaces (tenant_id, principal).
CREATE INDEX api_keys_by_principal_id ON bulkhead.api_keys (tenant_id, principal, id);
DROP INDEX bulkhead.api_keys_by_principal;
