// An off-the-shelf OAuth client in Node (oauth4webapi) completing the authorization-code flow
// with PKCE.
//
// Driven by tests/api/oauth_code.rs. argv: the path of oauth4webapi's build/index.js (installed
// from the npm registry by .ci/run), the metadata URL (RFC 8414), the authorization endpoint,
// the token endpoint, the client id, the redirect URI. oauth4webapi reads the server's metadata
// (and checks its issuer), builds the authorization URL with its own verifier, challenge and
// state, and prints it; the test does the browser step and writes back the URL it was sent
// to; oauth4webapi checks `iss` (RFC 9207) and `state`, exchanges the code, and the token
// response is printed as JSON. The endpoints are the tenant's, reached on loopback: the
// metadata names them under the deployment's issuer, which the test cannot resolve.

import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const [modulePath, metadataUrl, authorizeUrl, tokenUrl, clientId, redirectUri, issuer] =
  process.argv.slice(2);
const oauth = await import(pathToFileURL(modulePath).href);
const insecure = { [oauth.allowInsecureRequests]: true };

const metadata = await oauth.processDiscoveryResponse(new URL(issuer), await fetch(metadataUrl));
if (!metadata.code_challenge_methods_supported?.includes('S256')) {
  throw new Error('the server does not announce PKCE S256');
}
const as = { ...metadata, authorization_endpoint: authorizeUrl, token_endpoint: tokenUrl };
const client = { client_id: clientId };

const verifier = oauth.generateRandomCodeVerifier();
const state = oauth.generateRandomState();
const url = new URL(as.authorization_endpoint);
url.searchParams.set('response_type', 'code');
url.searchParams.set('client_id', client.client_id);
url.searchParams.set('redirect_uri', redirectUri);
url.searchParams.set('scope', 'sessions:read');
url.searchParams.set('state', state);
url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(verifier));
url.searchParams.set('code_challenge_method', 'S256');
console.log(url.href);

const lines = createInterface({ input: process.stdin });
const callback = await new Promise((resolve) => lines.once('line', resolve));
lines.close();
const params = oauth.validateAuthResponse(as, client, new URL(callback.trim()), state);
const response = await oauth.authorizationCodeGrantRequest(
  as, client, oauth.None(), params, redirectUri, verifier, insecure,
);
const result = await oauth.processAuthorizationCodeResponse(as, client, response);
console.log(JSON.stringify(result));
