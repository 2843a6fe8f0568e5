"""authlib as an OpenID Connect relying party: the authorization-code flow with PKCE and
`openid email`, the ID token validated by authlib's own OpenID Connect support (signature
against the JWKS, `iss`, `aud`, `exp`, `iat`, `nonce`), and userinfo.

Driven by tests/api/oidc_clients.rs: argv is the tenant's issuer, Bulkhead's loopback port, the
client id and the redirect URI. Every endpoint comes from the issuer's OpenID Connect discovery
document (which must name exactly that issuer), reached through `loopback.py`. Prints the
authorization URL authlib builds, reads the URL the browser step was sent back to (its `iss`
checked, RFC 9207), and prints one JSON line: the validated claims and the userinfo answer.
"""

import json
import sys
import warnings

warnings.simplefilter("ignore")  # authlib.jose announces its move to joserfc

from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken

from loopback import check_iss, discover, mount

issuer, port, client_id, redirect_uri = sys.argv[1:5]
session = OAuth2Session(
    client_id,
    redirect_uri=redirect_uri,
    scope="openid email sessions:read",
    code_challenge_method="S256",
    token_endpoint_auth_method="none",
)
mount(session, issuer, int(port))
metadata = discover(session, issuer, suffix="openid-configuration")
verifier = generate_token(64)
nonce = generate_token(32)
url, state = session.create_authorization_url(
    metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
)
print(url, flush=True)
callback = sys.stdin.readline().strip()
check_iss(callback, issuer)
token = session.fetch_token(
    metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier, state=state
)
jwks = JsonWebKey.import_key_set(session.get(metadata["jwks_uri"]).json())
claims = jwt.decode(
    token["id_token"],
    jwks,
    claims_cls=CodeIDToken,
    claims_options={"iss": {"essential": True, "value": issuer}},
    claims_params={"nonce": nonce, "client_id": client_id},
)
claims.validate()
info = session.get(metadata["userinfo_endpoint"]).json()
print(json.dumps({"claims": dict(claims), "userinfo": info, "nonce": nonce}), flush=True)
