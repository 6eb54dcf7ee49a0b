// A real OpenID Connect provider (panva's oidc-provider) on plain http://127.0.0.1 for the
// browser-login end-to-end tests (tests/e2e/test_login.py, through tests/e2e/oidc_support.py).
//
//   node idp.mjs --port 0 --client-id portcullis-demo --client-secret demo-secret \
//     --redirect-uri http://127.0.0.1:10000/oauth2/callback \
//     --post-logout-redirect-uri http://127.0.0.1:10000/ [--auth-method client_secret_post] \
//     [--key-file /tmp/idp-key.json] [--id-token-ttl 62] [--refresh-tokens]
//
// Prints `ready <port>` on stdout once it listens (port 0 = a free port, chosen before the
// issuer is fixed, so the issuer is always http://127.0.0.1:<the real port>).
//
// What it is set up to be: one confidential client, authorization code flow only, PKCE (S256,
// the only method oidc-provider 9 knows) required for every request, the development login and
// consent pages (any login name and any password; the account's sub is the login name and its
// email <name>@example.test), RP-initiated logout, and ID tokens signed RS256 that carry the
// email and profile claims themselves (conformIdTokenClaims off: the plugin reads only the
// id_token, never the userinfo endpoint). Endpoints are oidc-provider's defaults, which are the
// ones the login spec names: /auth, /token, /jwks, /session/end.
//
// The signing key is generated at start; with --key-file it is kept in that file (read when it
// exists), so a test can stop this provider and start it again on the same port with the same
// key, and a proxy that cached the JWKS still verifies its tokens.
//
// Test controls, outside the OpenID routes (loopback only, no auth: this is a test fixture):
//   GET /__test/token?mode=normal            the token endpoint works
//   GET /__test/token?mode=delay&ms=3000     it answers after that long
//   GET /__test/token?mode=status&code=500   it answers that status with an OAuth error body
//   GET /__test/token?mode=junk              it answers 200 with a body that is not JSON
//   GET /__test/token?mode=drop              it closes the connection without an answer
//   GET /__test/stats                        {"auth": n, "token": n, "end_session": n, ...}
// Every request is logged on stdout as `METHOD path status` (no query: it holds codes).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.IDP_PORT ?? '0' },
    'client-id': { type: 'string', default: process.env.IDP_CLIENT_ID ?? 'portcullis-demo' },
    'client-secret': { type: 'string', default: process.env.IDP_CLIENT_SECRET ?? 'demo-secret' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'post-logout-redirect-uri': { type: 'string', multiple: true, default: [] },
    'auth-method': { type: 'string', default: process.env.IDP_AUTH_METHOD ?? 'client_secret_basic' },
    'key-file': { type: 'string' },
    // Seconds an ID token lives (oidc-provider's default is an hour).
    'id-token-ttl': { type: 'string' },
    // Also issue refresh tokens (and allow the refresh_token grant), for session refresh tests.
    'refresh-tokens': { type: 'boolean', default: false },
  },
  strict: true,
});

const authMethods = ['client_secret_basic', 'client_secret_post'];
if (!authMethods.includes(args['auth-method'])) {
  console.error(`idp: --auth-method must be one of ${authMethods.join(', ')}`);
  process.exit(2);
}
if (args['redirect-uri'].length === 0) {
  console.error('idp: at least one --redirect-uri is required');
  process.exit(2);
}

// RS256 signing key: the JWK is kept private in the provider's keystore; the provider
// publishes only its public part at /jwks.
function signingKey() {
  const file = args['key-file'];
  if (file && existsSync(file)) {
    return JSON.parse(readFileSync(file, 'utf8'));
  }
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = {
    ...privateKey.export({ format: 'jwk' }), kid: `e2e-idp-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig',
  };
  if (file) writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

// What the test controls set; read by the middleware in front of the token endpoint.
const tokenBehaviour = { mode: 'normal', ms: 0, code: 500 };
const stats = {
  auth: 0, token: 0, end_session: 0, jwks: 0, interaction: 0,
};
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// Listen first, so a free port (0) is known before the issuer, which contains it, is fixed.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    redirect_uris: args['redirect-uri'],
    post_logout_redirect_uris: args['post-logout-redirect-uri'],
    token_endpoint_auth_method: args['auth-method'],
    grant_types: args['refresh-tokens'] ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
    response_types: ['code'],
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingKey()] },
  // Any login name is an account; sub is that name.
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id, email: `${id}@example.test`, email_verified: true, name: id,
        };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  scopes: ['openid', 'email', 'profile'],
  conformIdTokenClaims: false,
  // Without offline_access oidc-provider issues no refresh token; the tests ask for one by flag.
  issueRefreshToken: async (ctx, client) => args['refresh-tokens'] && client.grantTypeAllowed('refresh_token'),
  ...(args['id-token-ttl'] ? { ttl: { IdToken: Number(args['id-token-ttl']) } } : {}),
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // Signs oidc-provider's own cookies; fresh per start (its sessions are in memory anyway).
  cookies: { keys: [randomBytes(32).toString('base64url')] },
});

provider.on('server_error', (ctx, err) => console.error(`idp: server_error ${ctx.path}: ${err.stack}`));
for (const event of ['authorization.error', 'grant.error', 'end_session.error']) {
  provider.on(event, (ctx, err) => console.error(`idp: ${event} ${ctx.path}: ${err.message} ${err.error_description ?? ''}`));
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/token') {
    tokenBehaviour.mode = ctx.query.mode ?? 'normal';
    tokenBehaviour.ms = Number(ctx.query.ms ?? 0);
    tokenBehaviour.code = Number(ctx.query.code ?? 500);
    ctx.body = { ...tokenBehaviour };
    return;
  }
  if (ctx.path === '/__test/stats') {
    ctx.body = stats;
    return;
  }
  if (ctx.path === '/auth' || ctx.path.startsWith('/auth/')) stats.auth += 1;
  if (ctx.path === '/jwks') stats.jwks += 1;
  if (ctx.path.startsWith('/session/end')) stats.end_session += 1;
  if (ctx.path.startsWith('/interaction/')) stats.interaction += 1;
  if (ctx.path === '/token') {
    stats.token += 1;
    const { mode } = tokenBehaviour;
    if (mode === 'delay') {
      await sleep(tokenBehaviour.ms);
    } else if (mode === 'status') {
      ctx.status = tokenBehaviour.code;
      ctx.body = { error: 'server_error', error_description: 'made to fail by the test' };
      return;
    } else if (mode === 'junk') {
      ctx.status = 200;
      ctx.type = 'text/html';
      ctx.body = '<html>this is not a token response</html>';
      return;
    } else if (mode === 'drop') {
      ctx.req.socket.destroy();
      ctx.respond = false;
      return;
    }
  }
  await next();
  console.log(`${ctx.method} ${ctx.path} ${ctx.status}`);
});

server.on('request', provider.callback());
console.log(`ready ${port}`);

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
