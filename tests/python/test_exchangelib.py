"""exchangelib 5.6.0, unmodified, as a connector uses it: a fixed service endpoint, a ready
app-only bearer token, impersonation of alice@contoso.com. Items are checked through the
emulator (GetFolder counts of the Purges folders, seen through exchangelib itself)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from oauthlib.oauth2 import OAuth2Token

from exchangelib import (IMPERSONATION, OAUTH2, Account, Build, Configuration, ExtendedProperty,
                         FileAttachment, HTMLBody, Identity, Mailbox, Message,
                         OAuth2AuthorizationCodeCredentials, Version)
from exchangelib.ewsdatetime import UTC, EWSDateTime
from exchangelib.protocol import FaultTolerance, Protocol

from conftest import SERVICE_PATH, TENANT, folder_total_count

EXCHANGE_2016 = Build(15, 1)


class ItemClass(ExtendedProperty):
    """PidTagMessageClass: exchangelib's own item_class field is read-only."""
    property_tag = 0x001A
    property_type = "String"


class SubmitTime(ExtendedProperty):
    """PidTagClientSubmitTime: exchangelib's datetime_sent is read-only."""
    property_tag = 0x0039
    property_type = "SystemTime"


class DeliveryTime(ExtendedProperty):
    property_tag = 0x0E06
    property_type = "SystemTime"


class MessageFlags(ExtendedProperty):
    property_tag = 0x0E07
    property_type = "Integer"


PROPS = {"ingest_item_class": ItemClass, "ingest_submit_time": SubmitTime,
         "ingest_delivery_time": DeliveryTime, "ingest_flags": MessageFlags}


@pytest.fixture(scope="module", autouse=True)
def registered_properties():
    for name, cls in PROPS.items():
        Message.register(name, cls)
    yield
    for name in PROPS:
        Message.deregister(name)


@pytest.fixture(autouse=True)
def _fresh_protocol_cache():
    # exchangelib caches protocols (and their sessions) per endpoint+credentials.
    yield
    Protocol.clear_cache()


def make_account(srv, monkeypatch, pinned: bool, mailbox="alice@contoso.com",
                 path=SERVICE_PATH) -> Account:
    # exchangelib builds its own sessions: it trusts a CA through REQUESTS_CA_BUNDLE.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", srv.ca_path)
    monkeypatch.setenv("CURL_CA_BUNDLE", srv.ca_path)
    token = srv.token()
    credentials = OAuth2AuthorizationCodeCredentials(
        access_token=OAuth2Token({"access_token": token, "token_type": "Bearer",
                                  "expires_in": 3599}),
        identity=Identity(primary_smtp_address=mailbox),
    )
    kwargs = {}
    if pinned:
        kwargs["version"] = Version(build=EXCHANGE_2016)
    config = Configuration(service_endpoint=srv.base_url + path, credentials=credentials,
                           auth_type=OAUTH2, retry_policy=FaultTolerance(max_wait=30), **kwargs)
    return Account(primary_smtp_address=mailbox, config=config, autodiscover=False,
                   access_type=IMPERSONATION)


def when(minutes=0):
    return EWSDateTime(2024, 3, 1, 12, minutes, tzinfo=UTC)


def tweet(account, n=0, **extra) -> Message:
    return Message(
        account=account,
        folder=account.inbox,
        subject=f"Tweet {n} from @contoso: hello world & <friends> {uuid.uuid4().hex[:6]}",
        body=HTMLBody("<html><body><p>Hello <b>world</b> #archiving</p></body></html>"),
        to_recipients=[Mailbox(name="Alice", email_address="alice@contoso.com")],
        cc_recipients=[Mailbox(email_address="bob@contoso.com")],
        author=Mailbox(name="Contoso (Twitter)", email_address="contoso@twitter.example"),
        ingest_item_class="IPM.Note.Twitter.Tweet",
        ingest_submit_time=when(n),
        ingest_delivery_time=when(n),
        ingest_flags=1,
        **extra,
    )


def purges(srv, mailbox):
    return folder_total_count(srv, srv.token(), "recoverableitemspurges", mailbox)


PINNED = pytest.mark.parametrize("pinned", [False, True], ids=["version-probe", "version-pinned"])


@PINNED
def test_folders(server, monkeypatch, pinned):
    account = make_account(server, monkeypatch, pinned)
    root = account.root
    assert root.id
    inbox = account.inbox
    assert inbox.id and inbox.name
    assert inbox.total_count is not None
    if not pinned:
        # The ConvertId probe found the version from the ServerVersionInfo header.
        assert account.version.build >= Build(15, 0), account.version


def test_folder_bound_by_its_id(server, monkeypatch):
    """A folder found once is fetched again by its FolderId (no DistinguishedFolderId, as
    for any folder a connector stored the id of): the same folder, the same count."""
    from exchangelib.folders import Folder
    account = make_account(server, monkeypatch, pinned=True)
    purges = account.recoverable_items_purges
    tweet(account).save()
    purges.refresh()
    by_id = Folder(root=account.root, id=purges.id, changekey=purges.changekey)
    by_id.refresh()
    assert by_id.id == purges.id
    assert by_id.total_count == purges.total_count >= 1


@PINNED
def test_save_one_message(server, monkeypatch, pinned):
    account = make_account(server, monkeypatch, pinned)
    before_alice, before_bob = purges(server, "alice@contoso.com"), purges(server, "bob@contoso.com")
    m = tweet(account)
    m.attach(FileAttachment(name="tweet.json", content=b'{"id": 1, "text": "hello world"}',
                            content_type="application/json"))
    m.save()
    assert m.id, "CreateItem gave no ItemId"
    assert m.changekey
    # Alice (To) and Bob (Cc) each get a copy in Recoverable Items/Purges.
    assert purges(server, "alice@contoso.com") == before_alice + 1
    assert purges(server, "bob@contoso.com") == before_bob + 1


def test_purges_folder_through_exchangelib(server, monkeypatch):
    account = make_account(server, monkeypatch, pinned=True)
    folder = account.recoverable_items_purges
    start = folder.total_count
    tweet(account).save()
    folder.refresh()
    assert folder.total_count == start + 1


@PINNED
def test_bulk_create(server, monkeypatch, pinned):
    account = make_account(server, monkeypatch, pinned)
    before = purges(server, "alice@contoso.com")
    items = []
    for n in range(3):
        items.append(Message(
            account=account, folder=account.inbox, subject=f"Chat message {n}",
            body=f"plain text chat line {n}",
            to_recipients=[Mailbox(email_address="alice@contoso.com")],
            author=Mailbox(email_address=f"user{n}@chat.example"),
            ingest_item_class="IPM.Note.Chat.Message", ingest_submit_time=when(n + 1),
            ingest_flags=1,
        ))
    results = account.bulk_create(folder=account.inbox, items=items)
    assert len(results) == 3
    for r in results:
        assert not isinstance(r, Exception), r
        assert r.id, r
    assert len({r.id for r in results}) == 3
    assert purges(server, "alice@contoso.com") == before + 3


def test_bulk_create_with_a_bad_item(server, monkeypatch):
    """A per-item error (no message class) comes back in place; the other items are stored."""
    account = make_account(server, monkeypatch, pinned=True)
    good = tweet(account, 1)
    bad = Message(account=account, folder=account.inbox, subject="no class",
                  to_recipients=[Mailbox(email_address="alice@contoso.com")],
                  author=Mailbox(email_address="x@chat.example"), ingest_submit_time=when(2))
    results = account.bulk_create(folder=account.inbox, items=[good, bad, tweet(account, 3)])
    assert len(results) == 3
    assert results[0].id and results[2].id, results
    assert isinstance(results[1], Exception), results
    assert "ErrorItemSave" in type(results[1]).__name__, results[1]


@PINNED
def test_mime_content(server, monkeypatch, pinned):
    account = make_account(server, monkeypatch, pinned)
    mime = (b"From: SMS Gateway <+15551234567@sms.example>\r\n"
            b"To: Alice <alice@contoso.com>\r\n"
            b"Subject: SMS from +1 555 123 4567\r\n"
            b"Date: Fri, 01 Mar 2024 12:10:00 +0000\r\n"
            b"Message-ID: <sms-" + uuid.uuid4().hex.encode() + b"@sms.example>\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
            b"Running late, see you at 5.\r\n")
    before = purges(server, "alice@contoso.com")
    m = Message(account=account, folder=account.inbox, mime_content=mime,
                ingest_item_class="IPM.Note.SMS")
    m.save()
    assert m.id
    assert purges(server, "alice@contoso.com") == before + 1


def test_attachment_added_after_save(server, monkeypatch):
    """Attaching to a saved item makes exchangelib call CreateAttachment."""
    account = make_account(server, monkeypatch, pinned=True)
    m = tweet(account)
    m.save()
    a = FileAttachment(name="later.txt", content=b"added after the item")
    m.attach(a)
    assert a.attachment_id is not None and a.attachment_id.id


def test_legacy_ews_path(server, monkeypatch):
    account = make_account(server, monkeypatch, pinned=False, path="/EWS/Exchange.asmx")
    m = tweet(account)
    m.save()
    assert m.id


def test_catch_all_when_nobody_maps(server, monkeypatch):
    """Items whose participants map to nobody land in the third-party mailbox's Inbox."""
    account = make_account(server, monkeypatch, pinned=True)
    token = server.token()
    before = folder_total_count(server, token, "inbox", "thirdpartydata@contoso.com")
    m = Message(account=account, folder=account.inbox, subject="nobody we know",
                to_recipients=[Mailbox(email_address="stranger@elsewhere.example")],
                author=Mailbox(email_address="other@elsewhere.example"),
                ingest_item_class="IPM.Note.Chat.Message", ingest_submit_time=when(5))
    m.save()
    assert m.id
    assert folder_total_count(server, token, "inbox", "thirdpartydata@contoso.com") == before + 1


def test_client_credentials_grant_by_exchangelib(server, monkeypatch):
    """exchangelib's own client-credentials flow, its token URL pointed at the emulator (what a
    connector does for a sovereign cloud): exchangelib fetches the token itself."""
    from exchangelib import OAuth2Credentials

    token_url = f"{server.base_url}/{TENANT}/oauth2/v2.0/token"

    class EmulatorCredentials(OAuth2Credentials):
        @property
        def token_url(self):
            return token_url

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_path)
    monkeypatch.setenv("CURL_CA_BUNDLE", server.ca_path)
    credentials = EmulatorCredentials(client_id="22222222-2222-2222-2222-222222222222",
                                      client_secret="dev-secret-value", tenant_id=TENANT,
                                      identity=Identity(primary_smtp_address="alice@contoso.com"))
    config = Configuration(service_endpoint=server.ews_url, credentials=credentials,
                           auth_type=OAUTH2, version=Version(build=EXCHANGE_2016))
    account = Account(primary_smtp_address="alice@contoso.com", config=config,
                      autodiscover=False, access_type=IMPERSONATION)
    m = tweet(account)
    m.save()
    assert m.id
