// oauth4webapi (Node) as an OpenID Connect relying party: the authorization-code flow with PKCE
// and `openid email`, the ID token checked by the library's own OpenID Connect support, its
// signature by the JWKS, and userinfo.
//
// Driven by tests/api/oidc_clients.rs. argv: the path of oauth4webapi's build/index.js, the
// tenant's issuer, Bulkhead's loopback port, the client id and the redirect URI. Everything is
// discovered from the issuer's OpenID Connect metadata (which must name exactly that issuer):
// the authorization, token, JWKS and userinfo endpoints, all reached through `loopback.mjs`.
// Prints the authorization URL, reads the URL the browser step was sent back to, then prints
// one JSON line: the validated ID token claims and the userinfo answer.

import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

import { loopbackFetch } from './loopback.mjs';

const [modulePath, issuer, port, clientId, redirectUri] = process.argv.slice(2);
const oauth = await import(pathToFileURL(modulePath).href);
const via = { [oauth.customFetch]: loopbackFetch(issuer, Number(port)) };

const issuerUrl = new URL(issuer);
const as = await oauth.processDiscoveryResponse(issuerUrl, await oauth.discoveryRequest(issuerUrl, via));
for (const field of ['userinfo_endpoint', 'jwks_uri', 'subject_types_supported', 'id_token_signing_alg_values_supported']) {
  if (!as[field]) throw new Error(`the discovery document lacks ${field}`);
}
const client = { client_id: clientId, id_token_signed_response_alg: 'EdDSA' };

const verifier = oauth.generateRandomCodeVerifier();
const state = oauth.generateRandomState();
const nonce = oauth.generateRandomNonce();
const url = new URL(as.authorization_endpoint);
url.searchParams.set('response_type', 'code');
url.searchParams.set('client_id', client.client_id);
url.searchParams.set('redirect_uri', redirectUri);
url.searchParams.set('scope', 'openid email sessions:read');
url.searchParams.set('state', state);
url.searchParams.set('nonce', nonce);
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
const result = await oauth.processAuthorizationCodeResponse(as, client, response, {
  expectedNonce: nonce,
  requireIdToken: true,
});
// The ID token's signature, against the JWKS (the library fetches it; the token response is
// the reference the library keeps the ID token by).
await oauth.validateApplicationLevelSignature(as, response, via);
const claims = oauth.getValidatedIdTokenClaims(result);
const info = await oauth.processUserInfoResponse(
  as, client, claims.sub, await oauth.userInfoRequest(as, client, result.access_token, via),
);
console.log(JSON.stringify({ claims, userinfo: info, nonce }));
