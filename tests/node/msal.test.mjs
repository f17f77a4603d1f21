// MSAL Node (`@azure/msal-node`), unmodified, against the emulator's Entra ID: client
// credentials with a secret and with a certificate (SHA-256 thumbprint: PS256 and `x5t#S256`;
// SHA-1 thumbprint: RS256 and `x5t`), its token cache, and the AADSTS errors it turns into
// `ServerError`s.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import * as msal from '@azure/msal-node';

import { makeCertificate } from './certificates.mjs';
import {
  APP_ID,
  APP_SECRET,
  DISABLED_APP_ID,
  DISABLED_SECRET,
  EXCHANGE_SCOPE,
  TENANT,
  TENANT_DOMAIN,
  UNCONSENTED_APP_ID,
  UNCONSENTED_SECRET,
  startServer,
  withServer,
} from './harness.mjs';

/** A confidential client of `server`'s authority, as a connector would configure MSAL. */
function client(server, { clientId = APP_ID, tenant = TENANT_DOMAIN, ...credential } = {}) {
  if (!credential.clientSecret && !credential.clientCertificate) credential.clientSecret = APP_SECRET;
  return new msal.ConfidentialClientApplication({
    auth: {
      clientId,
      authority: server.authority(tenant),
      // The emulator is not one of Microsoft's hosts: MSAL must not ask Microsoft's instance
      // discovery about it (the network is offline), and must trust it as an authority.
      knownAuthorities: [server.host],
      ...credential,
    },
  });
}

function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

/** The MSAL error of a refused token request. */
async function refusal(app) {
  try {
    await app.acquireTokenByClientCredential({ scopes: [EXCHANGE_SCOPE] });
  } catch (e) {
    return e;
  }
  assert.fail('the token request was not refused');
}

describe('MSAL Node against the emulated Entra ID', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('a client secret gets an app-only Exchange token, by tenant domain and by tenant id', async () => {
    for (const tenant of [TENANT_DOMAIN, TENANT]) {
      const result = await client(server, { tenant }).acquireTokenByClientCredential({ scopes: [EXCHANGE_SCOPE] });
      assert.equal(result.tokenType, 'Bearer');
      assert.ok(result.expiresOn > new Date(Date.now() + 30 * 60_000), `expires ${result.expiresOn}`);
      const c = claims(result.accessToken);
      assert.equal(c.aud, 'https://outlook.office365.com');
      assert.equal(c.tid, TENANT);
      assert.equal(c.appid, APP_ID);
      assert.ok(c.roles.includes('full_access_as_app'), JSON.stringify(c.roles));
    }
  });

  test('a second request for the same scope is answered from MSAL\'s cache', async () => {
    const app = client(server);
    const first = await app.acquireTokenByClientCredential({ scopes: [EXCHANGE_SCOPE] });
    assert.equal(first.fromCache, false);
    const second = await app.acquireTokenByClientCredential({ scopes: [EXCHANGE_SCOPE] });
    assert.equal(second.fromCache, true);
    assert.equal(second.accessToken, first.accessToken);
  });

  test('a certificate signs the client assertion: PS256 with x5t#S256, and RS256 with x5t', async () => {
    const cert = makeCertificate('node-msal-connector');
    const view = await server.adminOk('POST', `/api/tenants/${TENANT}/applications/${APP_ID}/certificates`, { pem: cert.certPem });
    assert.equal(view.thumbprint.toUpperCase(), cert.sha1);
    const forms = [
      { thumbprintSha256: cert.sha256, privateKey: cert.keyPem, x5c: cert.certPem },
      { thumbprint: cert.sha1, privateKey: cert.keyPem },
    ];
    for (const clientCertificate of forms) {
      const result = await client(server, { clientCertificate }).acquireTokenByClientCredential({ scopes: [EXCHANGE_SCOPE] });
      assert.equal(claims(result.accessToken).appid, APP_ID);
    }
  });

  test('a certificate the app does not have is refused with AADSTS700027', async () => {
    const stranger = makeCertificate('not-registered');
    const e = await refusal(client(server, {
      clientCertificate: { thumbprintSha256: stranger.sha256, privateKey: stranger.keyPem },
    }));
    assert.equal(e.errorCode, 'invalid_client');
    assert.match(e.errorMessage, /Description: AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application\./);
  });

  test('a wrong secret is AADSTS7000215, as a ServerError MSAL does not retry', async () => {
    // MSAL Node sends the request's correlation id as `client-request-id` in the query string
    // and the form (no header); the answer must carry it back.
    const correlationId = randomUUID();
    const app = client(server, { clientSecret: 'not-the-secret' });
    let e;
    try {
      await app.acquireTokenByClientCredential({ scopes: [EXCHANGE_SCOPE], correlationId });
      assert.fail('the token request was not refused');
    } catch (error) {
      e = error;
    }
    assert.ok(e instanceof msal.ServerError, e.constructor.name);
    assert.equal(e.errorCode, 'invalid_client');
    assert.equal(String(e.errorNo), '7000215');
    assert.match(e.errorMessage, /Description: AADSTS7000215: Invalid client secret provided\./);
    assert.match(e.errorMessage, /Trace ID: [0-9a-f-]{36}/);
    // MSAL reports the correlation id of the answer: the one it sent.
    assert.equal(e.correlationId, correlationId);
    assert.ok(e.errorMessage.includes(`Correlation ID: ${correlationId}`), e.errorMessage);
  });

  test('unconsented, disabled and unknown apps are refused as Entra refuses them', async () => {
    const cases = [
      [{ clientId: UNCONSENTED_APP_ID, clientSecret: UNCONSENTED_SECRET }, 'unauthorized_client', '700016'],
      [{ clientId: DISABLED_APP_ID, clientSecret: DISABLED_SECRET }, 'unauthorized_client', '7000112'],
      [{ clientId: '99999999-9999-9999-9999-999999999999', clientSecret: 'x' }, 'unauthorized_client', '700016'],
    ];
    for (const [options, error, code] of cases) {
      const e = await refusal(client(server, options));
      assert.ok(e instanceof msal.ServerError, e.constructor.name);
      assert.equal(e.errorCode, error, `${options.clientId}: ${e.message}`);
      assert.equal(String(e.errorNo), code, `${options.clientId}: ${e.message}`);
    }
  });

  test('revoking consent stops new tokens at once', async () => {
    await withServer([], async (own) => {
      const app = await own.adminOk('POST', `/api/tenants/${TENANT}/applications`, { displayName: 'node revocation' });
      await own.adminOk('POST', `/api/tenants/${TENANT}/servicePrincipals`, { appId: app.appId });
      const granted = await client(own, { clientId: app.appId, clientSecret: app.clientSecret })
        .acquireTokenByClientCredential({ scopes: [EXCHANGE_SCOPE] });
      assert.equal(claims(granted.accessToken).appid, app.appId);
      await own.adminOk('DELETE', `/api/tenants/${TENANT}/servicePrincipals/${app.appId}`);
      const e = await refusal(client(own, { clientId: app.appId, clientSecret: app.clientSecret }));
      assert.equal(String(e.errorNo), '700016', e.message);
    });
  });
});
