"""zeep (a WSDL-driven SOAP client) loads the WSDL the server serves and calls CreateItem and
GetFolder with it."""

from __future__ import annotations

import uuid

import pytest
import zeep
from zeep.transports import Transport

from conftest import SERVICE_PATH, TENANT, folder_total_count

TYPES = "http://schemas.microsoft.com/exchange/services/2006/types"
MESSAGES = "http://schemas.microsoft.com/exchange/services/2006/messages"


@pytest.fixture(scope="module")
def zeep_env(shared_server):
    session = shared_server.session()
    client = zeep.Client(wsdl=f"{shared_server.base_url}{SERVICE_PATH}?wsdl",
                         transport=Transport(session=session, timeout=30))
    session.headers["Authorization"] = f"Bearer {shared_server.token()}"
    yield shared_server, client
    session.close()


def headers(client, mailbox="alice@contoso.com"):
    t = client.type_factory(TYPES)
    return {
        "Impersonation": t.ExchangeImpersonationType(
            ConnectingSID=t.ConnectingSIDType(PrimarySmtpAddress=mailbox)),
        "RequestVersion": {"Version": "Exchange2016"},
    }


def test_wsdl_loads(shared_server):
    with shared_server.session() as session:
        client = zeep.Client(wsdl=f"{shared_server.base_url}{SERVICE_PATH}?wsdl",
                             transport=Transport(session=session, timeout=30))
        ops = set(client.service._binding._operations)
        assert {"CreateItem", "GetFolder", "ConvertId", "CreateAttachment"} <= ops, ops
        # The served WSDL names this server, not the file's localhost:8443 placeholder.
        address = client.service._binding_options["address"]
        assert address == shared_server.base_url + SERVICE_PATH, address


def message(client, subject, to="alice@contoso.com"):
    t = client.type_factory(TYPES)
    return t.MessageType(
        Subject=subject,
        Body=t.BodyType("<p>hello from zeep</p>", BodyType="HTML"),
        ExtendedProperty=[
            t.ExtendedPropertyType(
                ExtendedFieldURI=t.PathToExtendedFieldType(PropertyTag="0x1A",
                                                           PropertyType="String"),
                Value="IPM.Note.Zeep.Message"),
            t.ExtendedPropertyType(
                ExtendedFieldURI=t.PathToExtendedFieldType(PropertyTag="0x0039",
                                                           PropertyType="SystemTime"),
                Value="2024-03-01T12:00:00Z"),
        ],
        ToRecipients=t.ArrayOfRecipientsType(Mailbox=[t.EmailAddressType(EmailAddress=to)]),
        From=t.SingleRecipientType(Mailbox=t.EmailAddressType(
            Name="Zeep", EmailAddress="someone@zeep.example")),
    )


def test_create_item(zeep_env):
    srv, client = zeep_env
    t = client.type_factory(TYPES)
    before = folder_total_count(srv, srv.token(), "recoverableitemspurges", "alice@contoso.com")
    result = client.service.CreateItem(
        _soapheaders=headers(client),
        MessageDisposition="SaveOnly",
        SavedItemFolderId=t.TargetFolderIdType(DistinguishedFolderId=t.DistinguishedFolderIdType(
            Id="inbox", Mailbox=t.EmailAddressType(EmailAddress="alice@contoso.com"))),
        Items=t.NonEmptyArrayOfAllItemsType(Message=[
            message(client, f"zeep {n} {uuid.uuid4().hex[:6]}") for n in range(2)]),
    )
    body = result.body if hasattr(result, "body") else result
    msgs = body.ResponseMessages._value_1
    assert len(msgs) == 2, body
    for entry in msgs:
        rm = entry["CreateItemResponseMessage"]
        assert rm.ResponseClass == "Success", rm
        assert rm.ResponseCode in (None, "NoError"), rm
        assert rm.Items.Message[0].ItemId.Id, rm
    if hasattr(result, "header") and result.header is not None:
        info = result.header.ServerVersion
        assert info.MajorVersion == 15, info
    after = folder_total_count(srv, srv.token(), "recoverableitemspurges", "alice@contoso.com")
    assert after == before + 2


def test_get_folder(zeep_env):
    srv, client = zeep_env
    t = client.type_factory(TYPES)
    result = client.service.GetFolder(
        _soapheaders=headers(client),
        FolderShape=t.FolderResponseShapeType(BaseShape="Default"),
        FolderIds=t.NonEmptyArrayOfBaseFolderIdsType(_value_1=[{"DistinguishedFolderId":
            t.DistinguishedFolderIdType(Id="inbox", Mailbox=t.EmailAddressType(
                EmailAddress="alice@contoso.com"))}]),
    )
    body = result.body if hasattr(result, "body") else result
    rm = body.ResponseMessages._value_1[0]["GetFolderResponseMessage"]
    assert rm.ResponseClass == "Success", rm
