"""An off-the-shelf OAuth client (authlib) completing the authorization-code flow with PKCE.

Driven by tests/api/oauth_code.rs: argv is the authorization endpoint, the token endpoint, the
client id and the redirect URI. Prints the authorization URL authlib builds, reads the URL the
browser step was sent back to, lets authlib check it and exchange the code, and prints the
token response as JSON. Talks to loopback only (the token endpoint is a 127.0.0.1 URL).
"""

import json
import sys

from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

authorize_url, token_url, client_id, redirect_uri = sys.argv[1:5]
session = OAuth2Session(
    client_id,
    redirect_uri=redirect_uri,
    scope="sessions:read",
    code_challenge_method="S256",
    token_endpoint_auth_method="none",
)
session.trust_env = False
verifier = generate_token(64)
url, state = session.create_authorization_url(authorize_url, code_verifier=verifier)
print(url, flush=True)
callback = sys.stdin.readline().strip()
token = session.fetch_token(
    token_url, authorization_response=callback, code_verifier=verifier, state=state
)
print(json.dumps(token), flush=True)
