"""The official MCP Python SDK (`mcp`, 2.x) against Bulkhead, on loopback only.

Driven by tests/api/oauth_mcp.rs with one JSON argument (see `config` below). The script:

1. starts a small MCP server (the SDK's own `MCPServer`, one tool) on a free 127.0.0.1 port; its
   bearer check verifies Bulkhead's tokens from Bulkhead's JWKS (signature, `iss`, `aud` = the
   registered resource's identifier, `exp`, `tenant_id`, the `sessions:read` scope) and answers a
   401 with `WWW-Authenticate: Bearer resource_metadata="<Bulkhead's RFC 9728 URL of the
   resource>"`;
2. runs the SDK client (`OAuthClientProvider`) against the resource's identifier URL: it meets the
   401, reads the protected-resource metadata (RFC 9728), then the authorization-server metadata
   (RFC 8414), identifies itself by its client ID metadata document (`client_metadata_url`) or
   registers (RFC 7591), and sends the user to the authorization endpoint: the URL is printed as
   `{"authorize": url}` and the test's browser step answers with the redirect it was sent back to
   (one line on standard input);
3. exchanges the code with its PKCE verifier, initializes the MCP session and calls the tool,
   and prints `{"tool": text, "client_id": …, "scope": …}`.

Loopback: the SDK believes the `https` URLs the metadata names, all on the tenant's origin
(`https://acme.bulkhead.test`: Bulkhead's issuer for the tenant, and the resource, which the
MCP gateway will serve there); an httpx transport sends the resource's path to the MCP server
and the rest to Bulkhead, each to its loopback listener over plain HTTP, keeping the `Host` the
server expects. This stands in for DNS and TLS only: nothing leaves 127.0.0.1, and every URL is
the one the metadata names.
"""

import asyncio
import json
import socket
import sys
import threading
import urllib.parse

import httpx2
import jwt
import uvicorn
from mcp.client.auth import OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

config = json.loads(sys.argv[1])
RESOURCE = config["resource"]  # https://acme.bulkhead.test/mcp/search
ISSUER = config["issuer"]  # https://acme.bulkhead.test: the tenant's own issuer
RESOURCE_PATH = urllib.parse.urlsplit(RESOURCE).path


def serve_mcp():
    """The resource server: one tool behind a bearer check against Bulkhead's JWKS."""
    server = MCPServer("search")

    @server.tool()
    def search(query: str) -> str:
        return f"results for {query}"

    app = server.streamable_http_app(streamable_http_path=RESOURCE_PATH)
    jwks = jwt.PyJWKClient(config["jwks_url"])
    challenge = f'Bearer resource_metadata="{config["resource_metadata"]}", scope="sessions:read"'

    def verified(authorization):
        if not authorization.startswith("Bearer "):
            return False
        token = authorization[len("Bearer "):]
        try:
            key = jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token, key.key, algorithms=["EdDSA"], audience=RESOURCE, issuer=ISSUER
            )
        except jwt.PyJWTError:
            return False
        return (
            claims.get("tenant_id") == config["tenant_id"]
            and "sessions:read" in claims.get("scope", "").split()
        )

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if not verified(headers.get(b"authorization", b"").decode()):
                await send({
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"www-authenticate", challenge.encode()),
                                (b"content-length", b"0")],
                })
                await send({"type": "http.response.body", "body": b""})
                return
        await app(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    uv = uvicorn.Server(uvicorn.Config(guarded, log_level="warning", lifespan="on"))
    threading.Thread(target=lambda: asyncio.run(uv.serve(sockets=[sock])), daemon=True).start()
    return sock.getsockname()[1]


class Loopback(httpx2.AsyncBaseTransport):
    """Sends the resource's URLs to the MCP server, and the tenant's issuer's to Bulkhead, over
    plain HTTP on 127.0.0.1; anything else (another host, plain http) is refused."""

    def __init__(self, mcp_port):
        self.inner = httpx2.AsyncHTTPTransport()
        self.mcp_port = mcp_port

    async def handle_async_request(self, request):
        url = request.url
        if url.host == "127.0.0.1" and url.port in (self.mcp_port, config["bulkhead_port"]):
            # Already sent once (the SDK retries the same request object with its token).
            return await self.inner.handle_async_request(request)
        if url.scheme != "https":
            raise httpx2.ConnectError(f"not a loopback destination: {url}")
        if url.host == urllib.parse.urlsplit(RESOURCE).hostname and url.path.startswith(RESOURCE_PATH):
            port, host = self.mcp_port, f"127.0.0.1:{self.mcp_port}"
        elif url.host == urllib.parse.urlsplit(ISSUER).hostname:
            port, host = config["bulkhead_port"], url.host
        else:
            raise httpx2.ConnectError(f"not a loopback destination: {url.host}")
        request.url = url.copy_with(scheme="http", host="127.0.0.1", port=port)
        request.headers["host"] = host
        return await self.inner.handle_async_request(request)


class Memory:
    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


async def main():
    mcp_port = serve_mcp()
    storage = Memory()

    async def redirect(url):
        print(json.dumps({"authorize": url}), flush=True)

    async def callback():
        line = await asyncio.to_thread(sys.stdin.readline)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(line.strip()).query))
        return AuthorizationCodeResult(
            code=query["code"], state=query.get("state"), iss=query.get("iss")
        )

    provider = OAuthClientProvider(
        server_url=RESOURCE,
        client_metadata=OAuthClientMetadata(
            client_name="MCP SDK test client",
            redirect_uris=[config["redirect_uri"]],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect,
        callback_handler=callback,
        client_metadata_url=config.get("client_metadata_url"),
    )
    async with httpx2.AsyncClient(transport=Loopback(mcp_port), auth=provider, timeout=30) as http:
        async with streamable_http_client(RESOURCE, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                result = await session.call_tool("search", {"query": "bulkhead"})
    text = "".join(getattr(part, "text", "") for part in result.content)
    print(json.dumps({
        "tool": text,
        "is_error": bool(result.is_error),
        "client_id": storage.client.client_id if storage.client else None,
        "scope": storage.tokens.scope if storage.tokens else None,
    }), flush=True)


asyncio.run(main())
