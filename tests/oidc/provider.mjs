// A real OpenID provider for the test suite: node oidc-provider with a small, fixed config.
//   node provider.mjs CONFIG.json
// CONFIG: {"port": 0, "clients": [...], "accounts": {"alice": {"groups": ["dev"]}}}
// Prints "listening <issuer>" once it accepts connections. Sign-in uses the package's
// development login form: the login name picks the account (any password).
//
// As "a CI platform": clients with the client_credentials grant and a `workload` (the claims
// their jobs' tokens carry, e.g. {"repository": "acme/web"}) get signed JWT access tokens,
// their audience the resource they ask for with its "urn:aud:" prefix cut ("urn:aud:bastion"
// gives aud "bastion"), like a CI job asking its platform for a token for an audience.
import { readFileSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts;
// Signing keys made for this run (the package's quick-start keys are public).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };
// Tests that need a token only the provider could sign (an expired one, say) read it here.
if (config.signing_key_file) writeFileSync(config.signing_key_file, JSON.stringify(signingKey), { mode: 0o600 });

const provider = new Provider(`http://127.0.0.1:${config.port}`, {
  clients: config.clients,
  cookies: { keys: [randomBytes(32).toString('hex')] },
  jwks: { keys: [signingKey] },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, resource) => ({
        scope: 'workload',
        audience: resource.replace(/^urn:aud:/, ''),
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraClientMetadata: { properties: ['workload'] },
  async extraTokenClaims(ctx, token) {
    if (token.kind !== 'ClientCredentials') return undefined;
    const client = await ctx.oidc.provider.Client.find(token.clientId);
    return client?.workload ?? undefined;
  },
  pkce: { required: () => true },
  ttl: {
    IdToken: config.id_token_ttl ?? 3600,
    DeviceCode: config.device_code_ttl ?? 300,
    ClientCredentials: config.workload_token_ttl ?? 300,
  },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: account.username ?? id,
          name: account.name ?? id,
          email: account.email ?? `${id}@example.test`,
          email_verified: true,
          groups: account.groups ?? [],
        };
      },
    };
  },
  // First-party client: no consent screen.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      accountId: ctx.oidc.session.accountId,
      clientId: ctx.oidc.client.clientId,
    });
    grant.addOIDCScope('openid profile email groups');
    grant.addOIDCClaims(['preferred_username', 'name', 'email', 'email_verified', 'groups']);
    await grant.save();
    return grant;
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`listening http://127.0.0.1:${server.address().port}`);
});
