// An off-the-shelf OAuth client in Node (oauth4webapi) completing the authorization-code flow
// with PKCE.
//
// Driven by tests/api/oauth_code.rs. argv: the path of oauth4webapi's build/index.js (installed
// from the npm registry by .ci/run), the tenant's issuer (`https://acme.bulkhead.test`),
// Bulkhead's loopback port, the client id, the redirect URI. oauth4webapi discovers the server
// from the issuer's RFC 8414 metadata (and checks that it names exactly that issuer), builds
// the authorization URL from the metadata's endpoint with its own verifier, challenge and
// state, and prints it; the test does the browser step and writes back the URL it was sent
// to; oauth4webapi checks `iss` (RFC 9207) and `state`, exchanges the code at the metadata's
// token endpoint, and the token response is printed as JSON. Every request goes through
// `loopback.mjs` (DNS and TLS stand in for, nothing else).

import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

import { loopbackFetch } from './loopback.mjs';

const [modulePath, issuer, port, clientId, redirectUri] = process.argv.slice(2);
const oauth = await import(pathToFileURL(modulePath).href);
const via = { [oauth.customFetch]: loopbackFetch(issuer, Number(port)) };

const issuerUrl = new URL(issuer);
const as = await oauth.processDiscoveryResponse(
  issuerUrl,
  await oauth.discoveryRequest(issuerUrl, { ...via, algorithm: 'oauth2' }),
);
if (!as.code_challenge_methods_supported?.includes('S256')) {
  throw new Error('the server does not announce PKCE S256');
}
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
  as, client, oauth.None(), params, redirectUri, verifier, via,
);
const result = await oauth.processAuthorizationCodeResponse(as, client, response);
console.log(JSON.stringify(result));
