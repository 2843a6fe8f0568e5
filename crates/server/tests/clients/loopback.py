"""The tests' stand-in for DNS and TLS, for the Python clients that use requests (authlib).

`mount(session, issuer, port)` makes every `https` request for the tenant's issuer host
(`https://acme.bulkhead.test`, exactly that host and its port) go to Bulkhead's loopback
listener over plain HTTP, with the `Host` the server expects; any other destination is refused.
The clients see only the `https` URLs the metadata names: they discover the server from the
issuer and check `issuer` and `iss` as against a real deployment.
"""

import urllib.parse

import requests
from requests.adapters import HTTPAdapter


class Loopback(HTTPAdapter):
    def __init__(self, issuer, port):
        super().__init__()
        self.host = urllib.parse.urlsplit(issuer).netloc
        self.port = port

    def send(self, request, **kwargs):
        url = urllib.parse.urlsplit(request.url)
        if url.scheme != "https" or url.netloc != self.host:
            raise requests.ConnectionError(f"not a loopback destination: {request.url}")
        request.headers["Host"] = url.netloc
        request.url = urllib.parse.urlunsplit(
            ("http", f"127.0.0.1:{self.port}", url.path, url.query, "")
        )
        return super().send(request, **kwargs)


def mount(session, issuer, port):
    session.trust_env = False
    session.mount("https://", Loopback(issuer, port))
    session.mount("http://", Loopback(issuer, port))


def discover(session, issuer, suffix="oauth-authorization-server"):
    """The issuer's metadata (RFC 8414 §3, OpenID Connect Discovery §4), refused unless it names
    exactly that issuer (RFC 8414 §3.3)."""
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata, get_well_known_url

    url = get_well_known_url(issuer, external=True, suffix=suffix)
    # Before any token: authlib's session sends nothing without one unless told.
    answer = session.get(url, withhold_token=True)
    answer.raise_for_status()
    metadata = AuthorizationServerMetadata(answer.json())
    metadata.validate()
    if metadata["issuer"] != issuer:
        raise ValueError(f"the metadata names another issuer: {metadata['issuer']}")
    return metadata


def check_iss(callback, issuer):
    """RFC 9207: the authorization response names the issuer the client started with."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
    if query.get("iss") != issuer:
        raise ValueError(f"mix-up: the authorization response names {query.get('iss')!r}")
