// Two more ways Node connectors meet the service, unmodified: `@azure/identity` (the Azure SDK's
// credentials, over MSAL Node, with `authorityHost` pointed at the emulator) for the token, and
// `soap` (node-soap), a generic SOAP client built from the served WSDL, for CreateItem and
// GetFolder.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ClientCertificateCredential, ClientSecretCredential } from '@azure/identity';
import soap from 'soap';

import { makeCertificate } from './certificates.mjs';
import { APP_ID, APP_SECRET, EXCHANGE_SCOPE, TENANT, TENANT_DOMAIN, startServer } from './harness.mjs';

const ALICE = 'alice@contoso.com';
const TYPES = 'http://schemas.microsoft.com/exchange/services/2006/types';

function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

/** The Azure SDK's options for a non-Microsoft authority host (no instance discovery). */
function options(server) {
  return { authorityHost: server.baseUrl, disableInstanceDiscovery: true };
}

describe('@azure/identity and node-soap against the emulator', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('ClientSecretCredential and ClientCertificateCredential get Exchange app tokens', async () => {
    const secret = new ClientSecretCredential(TENANT_DOMAIN, APP_ID, APP_SECRET, options(server));
    const bySecret = await secret.getToken(EXCHANGE_SCOPE);
    assert.equal(claims(bySecret.token).appid, APP_ID);
    assert.ok(bySecret.expiresOnTimestamp > Date.now() + 30 * 60_000);

    const cert = makeCertificate('azure-identity-connector');
    await server.adminOk('POST', `/api/tenants/${TENANT}/applications/${APP_ID}/certificates`, { pem: cert.certPem });
    const certificate = new ClientCertificateCredential(
      TENANT,
      APP_ID,
      { certificate: cert.keyPem + cert.certPem },
      { ...options(server), sendCertificateChain: true },
    );
    const byCertificate = await certificate.getToken(EXCHANGE_SCOPE);
    assert.equal(claims(byCertificate.token).tid, TENANT);
  });

  test('a wrong secret fails with the text of the AADSTS7000215 answer', async () => {
    const wrong = new ClientSecretCredential(TENANT_DOMAIN, APP_ID, 'not-the-secret', options(server));
    await assert.rejects(wrong.getToken(EXCHANGE_SCOPE), (e) => {
      // The Azure SDK wraps every MSAL server error so, keeping MSAL's message.
      assert.equal(e.name, 'AuthenticationRequiredError');
      assert.match(e.message, /^invalid_client: Error\(s\): 7000215 - .* Description: AADSTS7000215: Invalid client secret provided/);
      return true;
    });
  });

  test('a client built from the served WSDL creates an item and reads a folder', async () => {
    const credential = new ClientSecretCredential(TENANT_DOMAIN, APP_ID, APP_SECRET, options(server));
    const { token } = await credential.getToken(EXCHANGE_SCOPE);
    const client = await soap.createClientAsync(`${server.ewsUrl}?wsdl`);
    const operations = Object.keys(client.describe().ThirdPartyIngestionService.ExchangeServicePort);
    for (const operation of ['CreateItem', 'GetFolder']) assert.ok(operations.includes(operation), operations.join());
    client.setEndpoint(server.ewsUrl);
    client.addHttpHeader('Authorization', `Bearer ${token}`);
    client.addSoapHeader({ RequestServerVersion: { attributes: { Version: 'Exchange2016' } } }, '', 't', TYPES);

    const [created] = await client.CreateItemAsync({
      attributes: { MessageDisposition: 'SaveOnly' },
      SavedItemFolderId: { DistinguishedFolderId: { attributes: { Id: 'recoverableitemspurges' } } },
      Items: {
        Message: [{
          ItemClass: 'IPM.Note.Twitter.Tweet',
          Subject: 'through node-soap & the WSDL',
          Body: { attributes: { BodyType: 'Text' }, $value: 'hello <world>' },
          DateTimeSent: '2024-03-01T12:00:00Z',
          ToRecipients: { Mailbox: [{ EmailAddress: ALICE }] },
          From: { Mailbox: { EmailAddress: 'contoso@twitter.example' } },
        }],
      },
    });
    const message = created.ResponseMessages.CreateItemResponseMessage;
    assert.equal(message.attributes.ResponseClass, 'Success');
    const id = message.Items.Message[0].ItemId.attributes.Id;
    const item = await server.item(id);
    assert.equal(item.subject, 'through node-soap & the WSDL');
    assert.equal(item.body, 'hello <world>');

    const [folders] = await client.GetFolderAsync({
      FolderShape: { BaseShape: 'Default' },
      FolderIds: { DistinguishedFolderId: [{ attributes: { Id: 'recoverableitemspurges' }, Mailbox: { EmailAddress: ALICE } }] },
    });
    const folder = folders.ResponseMessages.GetFolderResponseMessage.Folders.Folder[0];
    assert.equal(folder.DisplayName, 'Purges');
    assert.equal(Number(folder.TotalCount), (await server.folderItems(ALICE)).length);
  });
});
