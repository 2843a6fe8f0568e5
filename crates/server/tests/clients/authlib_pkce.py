"""An off-the-shelf OAuth client (authlib) completing the authorization-code flow with PKCE.

Driven by tests/api/oauth_code.rs: argv is the tenant's issuer (`https://acme.bulkhead.test`),
Bulkhead's loopback port, the client id and the redirect URI. authlib discovers the server from
the issuer's RFC 8414 metadata (which must name exactly that issuer), builds the authorization
URL from the metadata's endpoint and prints it, reads the URL the browser step was sent back
to, checks its `iss` (RFC 9207) and `state`, exchanges the code at the metadata's token
endpoint and prints the token response as JSON. Every request goes through `loopback.py`.
"""

import json
import sys

from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from loopback import check_iss, discover, mount

issuer, port, client_id, redirect_uri = sys.argv[1:5]
session = OAuth2Session(
    client_id,
    redirect_uri=redirect_uri,
    scope="sessions:read",
    code_challenge_method="S256",
    token_endpoint_auth_method="none",
)
mount(session, issuer, int(port))
metadata = discover(session, issuer)
verifier = generate_token(64)
url, state = session.create_authorization_url(
    metadata["authorization_endpoint"], code_verifier=verifier
)
print(url, flush=True)
callback = sys.stdin.readline().strip()
check_iss(callback, issuer)
token = session.fetch_token(
    metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier, state=state
)
print(json.dumps(token), flush=True)
