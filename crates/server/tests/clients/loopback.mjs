// The tests' stand-in for DNS and TLS, for the Node clients: a `fetch` that sends each request
// for the tenant's issuer (`https://<slug>.bulkhead.test`, exactly its host) to Bulkhead's
// loopback listener over plain HTTP, with the `Host` the server expects; any other destination
// is refused. (Node's own `fetch` drops a `Host` header, hence `node:http`.) The clients
// themselves see only the `https` URLs the metadata names: they discover, and check `issuer`
// and `iss`, as against a real deployment.

import http from 'node:http';

export function loopbackFetch(issuer, port) {
  const expected = new URL(issuer).host;
  return (url, options = {}) => new Promise((resolve, reject) => {
    const target = new URL(url);
    if (target.protocol !== 'https:' || target.host !== expected) {
      reject(new Error(`not a loopback destination: ${url}`));
      return;
    }
    const headers = Object.fromEntries(new Headers(options.headers ?? {}));
    headers.host = target.host;
    const body = options.body == null ? null : Buffer.from(options.body.toString());
    if (body) headers['content-length'] = String(body.length);
    const request = http.request(
      { host: '127.0.0.1', port, path: target.pathname + target.search, method: options.method ?? 'GET', headers },
      (answer) => {
        const chunks = [];
        answer.on('data', (chunk) => chunks.push(chunk));
        answer.on('end', () => {
          const received = new Headers();
          for (const [name, value] of Object.entries(answer.headers)) {
            for (const one of [value].flat()) received.append(name, one);
          }
          const content = chunks.length ? Buffer.concat(chunks) : null;
          resolve(new Response(content, { status: answer.statusCode, headers: received }));
        });
        answer.on('error', reject);
      },
    );
    request.on('error', reject);
    if (body) request.write(body);
    request.end();
  });
}
