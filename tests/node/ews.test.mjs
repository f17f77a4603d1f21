// ews-javascript-api, unmodified: the Node port of Microsoft's EWS Managed API, whose requests
// and response handling are those of the .NET connectors most archiving partners ship. It
// authenticates with an MSAL Node token, impersonates a mailbox, and saves messages (with
// attachments and MAPI date properties, in batches, as MIME), binds folders, and meets the
// throttling and authentication errors partners must handle. What landed is checked through the
// admin API.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import * as msal from '@azure/msal-node';
import ews from 'ews-javascript-api';

import { APP_ID, APP_SECRET, EXCHANGE_SCOPE, TENANT, startServer } from './harness.mjs';

const ALICE = 'alice@contoso.com';
const CATCH_ALL = 'thirdpartydata@contoso.com';
const PURGES = 'Recoverable Items/Purges';
const SENT = Date.UTC(2024, 2, 1, 12, 0, 0);

// PR_CLIENT_SUBMIT_TIME and PR_MESSAGE_DELIVERY_TIME: how a Managed API connector sets an
// item's dates (`DateTimeSent` and `DateTimeReceived` are read-only there).
const SUBMIT_TIME = new ews.ExtendedPropertyDefinition(0x0039, ews.MapiPropertyType.SystemTime);
const DELIVERY_TIME = new ews.ExtendedPropertyDefinition(0x0e06, ews.MapiPropertyType.SystemTime);

async function appToken(server) {
  const app = new msal.ConfidentialClientApplication({
    auth: { clientId: APP_ID, clientSecret: APP_SECRET, authority: server.authority(), knownAuthorities: [server.host] },
  });
  return (await app.acquireTokenByClientCredential({ scopes: [EXCHANGE_SCOPE] })).accessToken;
}

/** An `ExchangeService` as a connector sets it up: bearer token, endpoint, impersonation. */
function exchange(server, token, mailbox = ALICE) {
  const service = new ews.ExchangeService(ews.ExchangeVersion.Exchange2013_SP1);
  service.Credentials = new ews.OAuthCredentials(token);
  service.Url = new ews.Uri(server.ewsUrl);
  service.ImpersonatedUserId = new ews.ImpersonatedUserId(ews.ConnectingIdType.SmtpAddress, mailbox);
  return service;
}

/** A tweet as a connector maps it: item class, body, participants and its sent time. */
function tweet(service, subject, { to = [ALICE], dated = true } = {}) {
  const message = new ews.EmailMessage(service);
  message.ItemClass = 'IPM.Note.Twitter.Tweet';
  message.Subject = subject;
  message.Body = new ews.MessageBody(ews.BodyType.Text, `text of ${subject}`);
  for (const address of to) message.ToRecipients.Add(address);
  message.From = new ews.EmailAddress('Contoso on Twitter', 'contoso@twitter.example');
  if (dated) {
    message.SetExtendedProperty(SUBMIT_TIME, new ews.DateTime(SENT));
    message.SetExtendedProperty(DELIVERY_TIME, new ews.DateTime(SENT));
  }
  return message;
}

const purges = () => new ews.FolderId(ews.WellKnownFolderName.RecoverableItemsPurges);

async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail('the request was not refused');
}

describe('ews-javascript-api (the EWS Managed API) against the ingestion endpoint', () => {
  let server;
  let token;
  before(async () => {
    server = await startServer();
    token = await appToken(server);
  });
  after(async () => {
    await server?.stop();
  });

  test('a saved message lands whole in the Purges folder, with its attachment and dates', async () => {
    const service = exchange(server, token);
    const message = tweet(service, 'saved with an attachment');
    const content = Buffer.from('id,text\r\n1,caf\xe9\r\n', 'latin1');
    message.Attachments.AddFileAttachment('export.csv', content.toString('base64'));
    await message.Save(purges());

    const id = message.Id.UniqueId;
    assert.ok(id, 'the Managed API read the new item id');
    const item = await server.item(id);
    assert.equal(item.subject, 'saved with an attachment');
    assert.equal(item.itemClass, 'IPM.Note.Twitter.Tweet');
    assert.equal(new Date(item.sent).getTime(), SENT);
    assert.deepEqual(item.copies, [{ mailbox: ALICE, folder: PURGES }]);
    assert.equal(item.attachments.length, 1);
    assert.equal(item.attachments[0].name, 'export.csv');
    assert.deepEqual(await server.adminBytes(`/api/tenants/${TENANT}/items/${id}/attachments/0`), content);
  });

  test('a batch answers per item: an undated item is ErrorItemSave, the others are stored', async () => {
    const service = exchange(server, token);
    const batch = [
      tweet(service, 'batch first'),
      tweet(service, 'batch undated', { dated: false }),
      tweet(service, 'batch third'),
    ];
    const responses = await service.CreateItems(batch, purges(), ews.MessageDisposition.SaveOnly, null);
    const results = responses.Responses.map((r) => [r.Result, r.ErrorCode]);
    assert.deepEqual(results, [
      [ews.ServiceResult.Success, ews.ServiceError.NoError],
      [ews.ServiceResult.Error, ews.ServiceError.ErrorItemSave],
      [ews.ServiceResult.Success, ews.ServiceError.NoError],
    ]);
    assert.match(responses.Responses[1].ErrorMessage, /DATE/);
    const subjects = (await server.folderItems(ALICE)).map((i) => i.subject);
    assert.ok(subjects.includes('batch first') && subjects.includes('batch third'), subjects.join());
    assert.ok(!subjects.includes('batch undated'), subjects.join());
  });

  test('a message given as MIME is stored with the MIME headers\' subject and date', async () => {
    const service = exchange(server, token);
    const message = new ews.EmailMessage(service);
    message.ItemClass = 'IPM.Note.SMS';
    const mime = [
      'From: +1 555 0100 <15550100@sms.example>',
      `To: ${ALICE}`,
      'Subject: an SMS as MIME',
      'Date: Fri, 01 Mar 2024 12:00:00 +0000',
      'Message-ID: <sms-1@sms.example>',
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      '',
      'See you at 5',
      '',
    ].join('\r\n');
    message.MimeContent = new ews.MimeContent('UTF-8', Buffer.from(mime).toString('base64'));
    await message.Save(purges());
    const item = await server.item(message.Id.UniqueId);
    assert.equal(item.subject, 'an SMS as MIME');
    assert.equal(new Date(item.sent).getTime(), SENT);
    assert.deepEqual(item.copies, [{ mailbox: ALICE, folder: PURGES }]);
  });

  test('a MIME message with its own attachment and one more added gets the ids of the added one only', async () => {
    // The Managed API matches the reply's attachment ids to its attachment collection: one
    // id too many and it sends the attachment again with CreateAttachment (stored twice).
    const service = exchange(server, token);
    const message = new ews.EmailMessage(service);
    message.ItemClass = 'IPM.Note.Slack.Message';
    const mime = [
      'From: someone@slack.example',
      `To: ${ALICE}`,
      'Subject: MIME with an attachment',
      'Date: Fri, 01 Mar 2024 12:00:00 +0000',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b"',
      '',
      '--b',
      'Content-Type: text/plain',
      '',
      'see attached',
      '--b',
      'Content-Type: application/octet-stream',
      'Content-Disposition: attachment; filename="in-mime.bin"',
      'Content-Transfer-Encoding: base64',
      '',
      Buffer.from([0, 1, 2, 3]).toString('base64'),
      '--b--',
      '',
    ].join('\r\n');
    message.MimeContent = new ews.MimeContent('UTF-8', Buffer.from(mime).toString('base64'));
    message.Attachments.AddFileAttachment('added.txt', Buffer.from('added').toString('base64'));
    await message.Save(purges());

    const item = await server.item(message.Id.UniqueId);
    // Exactly these two: a CreateAttachment after the save would have added `added.txt` again.
    assert.deepEqual(item.attachments.map((a) => a.name), ['in-mime.bin', 'added.txt']);
    assert.equal(message.Attachments.Items[0].Id, `${message.Id.UniqueId}.1`);
  });

  test('ConvertIds answers every id it was given (each an error: this service converts none)', async () => {
    const service = exchange(server, token);
    const ids = ['AAMkAD1', 'AAMkAD2'].map((id) => new ews.AlternateId(ews.IdFormat.EwsId, id, ALICE));
    const responses = await service.ConvertIds(ids, ews.IdFormat.EwsId);
    assert.equal(responses.Count, 2);
    for (const response of responses.Responses) {
      assert.equal(response.Result, ews.ServiceResult.Error);
      assert.equal(response.ErrorCode, ews.ServiceError.ErrorInvalidRequest);
    }
  });

  test('impersonation by user principal name binds that user\'s folders', async () => {
    // A user whose UPN is not its SMTP address.
    await server.adminOk('POST', `/api/tenants/${TENANT}/users`, {
      userPrincipalName: 'erin.upn@contoso.com',
      displayName: 'Erin',
      mail: 'erin@contoso.com',
    });
    const service = exchange(server, token);
    service.ImpersonatedUserId = new ews.ImpersonatedUserId(ews.ConnectingIdType.PrincipalName, 'erin.upn@contoso.com');
    const folder = await ews.Folder.Bind(service, ews.WellKnownFolderName.Inbox);
    assert.equal(folder.DisplayName, 'Inbox');
    assert.equal(folder.TotalCount, 0);
  });

  test('a sender of the tenant without an active mailbox: 401, the reason in x-ms-diagnostics', async () => {
    const service = exchange(server, token);
    const message = tweet(service, 'from a disabled mailbox');
    message.From = new ews.EmailAddress('dave@contoso.com');
    const refused = await rejection(message.Save(purges()));
    assert.equal(refused.HttpStatusCode, 401);
    assert.match(refused.Message, /^ErrorAccessDenied;reason="One or more messages in the Request failed to be delivered to either From or Sender email address\./);
  });

  test('an item no participant of which has a mailbox goes to the third-party data mailbox', async () => {
    const service = exchange(server, token);
    const message = tweet(service, 'nobody here', { to: ['someone@elsewhere.example'] });
    await message.Save(purges());
    const item = await server.item(message.Id.UniqueId);
    assert.deepEqual(item.copies, [{ mailbox: CATCH_ALL, folder: 'Inbox' }]);
  });

  test('Folder.Bind reads the well-known folders of the impersonated mailbox', async () => {
    const service = exchange(server, token);
    const stored = (await server.folderItems(ALICE)).length;
    const folder = await ews.Folder.Bind(service, ews.WellKnownFolderName.RecoverableItemsPurges);
    assert.equal(folder.DisplayName, 'Purges');
    assert.equal(folder.TotalCount, stored);
    const inbox = await ews.Folder.Bind(service, ews.WellKnownFolderName.Inbox);
    assert.equal(inbox.DisplayName, 'Inbox');
    // Bound again by the id it was given.
    const again = await ews.Folder.Bind(service, folder.Id);
    assert.equal(again.DisplayName, 'Purges');
  });

  test('throttling: ErrorServerBusy reaches the Managed API with its BackOffMilliseconds', async () => {
    const service = exchange(server, token);
    const before = (await server.folderItems(ALICE)).length;

    await server.adminOk('PUT', '/api/faults', [
      { operation: 'CreateItem', count: 1, fault: { kind: 'serverBusy', backOffMilliseconds: 1234 } },
    ]);
    const fault = await rejection(tweet(service, 'throttled request').Save(purges()));
    assert.equal(fault.HttpStatusCode, 500);
    assert.equal(fault.ResponseCode, ews.ServiceError.ErrorServerBusy);
    assert.equal(fault.ErrorDetails.get('BackOffMilliseconds'), '1234');

    await server.adminOk('PUT', '/api/faults', [
      { operation: 'CreateItem', count: 1, fault: { kind: 'itemServerBusy', backOffMilliseconds: 2500 } },
    ]);
    const itemError = await rejection(tweet(service, 'throttled item').Save(purges()));
    assert.ok(itemError instanceof ews.ServiceResponseException, itemError.constructor.name);
    assert.equal(itemError.ErrorCode, ews.ServiceError.ErrorServerBusy);
    assert.equal(itemError.Response.ErrorDetails.get('BackOffMilliseconds'), '2500');

    await server.adminOk('PUT', '/api/faults', [{ operation: 'CreateItem', count: 1, fault: { kind: 'http503' } }]);
    const unavailable = await rejection(tweet(service, 'unavailable').Save(purges()));
    assert.equal(unavailable.HttpStatusCode, 503);

    assert.equal((await server.folderItems(ALICE)).length, before, 'a faulted request stores nothing');
    const retried = tweet(service, 'after the faults');
    await retried.Save(purges());
    assert.equal((await server.item(retried.Id.UniqueId)).subject, 'after the faults');
  });

  test('a token the service cannot use is HTTP 401 with its x-ms-diagnostics reason', async () => {
    const service = exchange(server, 'not.a.token');
    const refused = await rejection(tweet(service, 'unauthenticated').Save(purges()));
    assert.equal(refused.HttpStatusCode, 401);
    assert.match(refused.Message, /^2000001;reason="OAuth token submitted with the request cannot be parsed\."/);
  });
});
