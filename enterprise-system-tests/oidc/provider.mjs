// A real OpenID provider on loopback for the enterprise system tests: panva/oidc-provider
// (pinned in package.json) issuing RFC 9068 JWT access tokens for one resource (the
// Decision Gate server under test).
//
//   node provider.mjs CONFIG.json
//
// CONFIG: { "audience": "...", "alg": "RS256" | "ES256", "groups": { "<sub>": ["group", ...] },
//           "clients": [{ "client_id", "client_secret" }] }
// Prints `oidc-provider listening on <issuer>` once it serves. Besides the provider's own
// endpoints it answers a few test routes:
//   GET  /test/login?user=alice&mfa=1   runs authorization code + PKCE through the provider's
//                                       real endpoints, logging `user` in (with an MFA `acr`
//                                       and `amr` when mfa=1), and answers the token response.
//   POST /test/rotate                   puts a new signing key first; the old one stays
//                                       published, as a provider rotating its keys does.
//   GET  /test/keys                     the signing keys in PEM, private and public (the first
//                                       signs), so a test can forge tokens signed by this
//                                       provider.
//   GET  /test/age?seconds=N            the clock offset for auth_time: logins claim they
//                                       happened N seconds ago (stale step-up tests).
import { createServer } from 'node:http';
import { generateKeyPairSync, createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const alg = config.alg ?? 'RS256';
const REDIRECT = 'http://127.0.0.1/callback';
const MFA_ACR = 'urn:decision-gate:mfa';
const PASSWORD_ACR = 'urn:decision-gate:password';

function newKey(n) {
  const kid = `key-${n}-${randomBytes(4).toString('hex')}`;
  const pair = alg === 'ES256'
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    kid,
    pem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }),
    public: pair.publicKey.export({ type: 'spki', format: 'pem' }),
    jwk: { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' },
  };
}

let keys = [newKey(1)];
let loginAge = 0;
let provider;

function build(issuer) {
  const clients = config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials', 'authorization_code'],
    response_types: ['code'],
    redirect_uris: [REDIRECT],
    token_endpoint_auth_method: 'client_secret_basic',
  }));
  const p = new Provider(issuer, {
    clients,
    jwks: { keys: keys.map((k) => k.jwk) },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'mcp',
          audience: config.audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg } },
        }),
      },
    },
    ttl: {
      AccessToken: 300, ClientCredentials: 300, AuthorizationCode: 60, Grant: 600,
      IdToken: 300, Interaction: 600, Session: 600,
    },
    findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
    extraTokenClaims: (ctx, token) => {
      const sub = token.accountId ?? token.clientId;
      const claims = { groups: config.groups?.[sub] ?? [] };
      const code = ctx.oidc.entities.AuthorizationCode;
      if (code) {
        Object.assign(claims, { acr: code.acr, amr: code.amr, auth_time: code.authTime });
      }
      return claims;
    },
  });
  p.proxy = false;
  return p;
}

// The login an interaction is finished with: `user` from login_hint, MFA when it ends in " mfa".
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const [user, factor] = String(params.login_hint ?? 'anonymous').split(' ');
    const mfa = factor === 'mfa';
    await provider.interactionFinished(req, res, {
      login: {
        accountId: user,
        acr: mfa ? MFA_ACR : PASSWORD_ACR,
        amr: mfa ? ['pwd', 'otp'] : ['pwd'],
        ts: Math.floor(Date.now() / 1000) - loginAge,
        remember: false,
      },
    }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  grant.addOIDCScope('openid');
  grant.addResourceScope(config.audience, 'mcp');
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

// Authorization code + PKCE against our own endpoints, as a browser would: follow redirects by
// hand, keep cookies, stop at the client's redirect URI, redeem the code.
async function login(origin, user, mfa) {
  const client = config.clients[0];
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const jar = new Map();
  const query = new URLSearchParams({
    client_id: client.client_id, response_type: 'code', redirect_uri: REDIRECT, scope: 'openid',
    code_challenge: challenge, code_challenge_method: 'S256', resource: config.audience,
    login_hint: mfa ? `${user} mfa` : user, state: randomBytes(8).toString('hex'),
  });
  let url = `${origin}/auth?${query}`;
  for (let hop = 0; hop < 10; hop += 1) {
    if (url.startsWith(REDIRECT)) {
      const code = new URL(url).searchParams.get('code');
      if (!code) throw new Error(`no code in ${url}`);
      const body = new URLSearchParams({
        grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier,
        resource: config.audience,
      });
      const basic = Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64');
      const token = await fetch(`${origin}/token`, {
        method: 'POST', body, headers: { authorization: `Basic ${basic}` },
      });
      return { status: token.status, body: await token.text() };
    }
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const step = await fetch(url, { redirect: 'manual', headers: cookie ? { cookie } : {} });
    for (const set of step.headers.getSetCookie()) {
      const [pair] = set.split(';');
      const eq = pair.indexOf('=');
      jar.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    const next = step.headers.get('location');
    if (!next) return { status: 502, body: `login stopped at ${url}: HTTP ${step.status} ${await step.text()}` };
    url = new URL(next, url).toString();
  }
  return { status: 502, body: 'login did not finish in 10 redirects' };
}

const server = createServer(async (req, res) => {
  const origin = `http://${req.headers.host}`;
  const url = new URL(req.url, origin);
  try {
    if (url.pathname.startsWith('/interaction/')) {
      await interaction(req, res);
      return;
    }
    if (url.pathname === '/test/login') {
      const out = await login(origin, url.searchParams.get('user'), url.searchParams.get('mfa') === '1');
      res.writeHead(out.status, { 'content-type': 'application/json' }).end(out.body);
      return;
    }
    if (url.pathname === '/test/rotate' && req.method === 'POST') {
      keys = [newKey(keys.length + 1), ...keys];
      provider = build(provider.issuer);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kid: keys[0].kid }));
      return;
    }
    if (url.pathname === '/test/keys') {
      const body = keys.map((k) => ({ kid: k.kid, alg, pem: k.pem, public: k.public }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      return;
    }
    if (url.pathname === '/test/age') {
      loginAge = Number(url.searchParams.get('seconds') ?? 0);
      res.writeHead(204).end();
      return;
    }
    provider.callback()(req, res);
  } catch (e) {
    res.writeHead(500, { 'content-type': 'text/plain' }).end(String(e?.stack ?? e));
  }
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  provider = build(issuer);
  process.stdout.write(`oidc-provider listening on ${issuer}\n`);
});
