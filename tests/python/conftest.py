"""Shared fixtures: real `ingest-emulator` servers on ephemeral ports and stores.

A test gets a server from `server` (default arguments, its own process) or starts servers with
extra arguments through `server_factory("--clock-skew-secs", "315360000")`. Module-scoped
`shared_server` serves tests whose state does not matter.

The server binary is `target/debug/ingest-emulator` (or `$INGEST_EMULATOR_BIN`).

On this machine `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE` are set and `requests` lets them override a
session's `verify`: every session made here has `trust_env = False` and `verify = <server CA>`.
Clients that build their own sessions (exchangelib) get the CA through `use_server_ca`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("INGEST_EMULATOR_BIN", REPO / "target" / "debug" / "ingest-emulator"))

TENANT = "11111111-1111-1111-1111-111111111111"
TENANT_DOMAIN = "contoso.onmicrosoft.com"
TENANT_VANITY_DOMAIN = "contoso.com"
APP_ID = "22222222-2222-2222-2222-222222222222"
APP_SECRET = "dev-secret-value"
UNCONSENTED_APP_ID = "33333333-3333-3333-3333-333333333333"
UNCONSENTED_SECRET = "unconsented-secret"
DISABLED_APP_ID = "44444444-4444-4444-4444-444444444444"
DISABLED_SECRET = "disabled-secret"
EXCHANGE_SCOPE = "https://outlook.office365.com/.default"
SERVICE_PATH = "/service/ThirdPartyIngestionService.svc"
EWS_PATH = "/EWS/Exchange.asmx"

NS = {
    "s": "http://schemas.xmlsoap.org/soap/envelope/",
    "m": "http://schemas.microsoft.com/exchange/services/2006/messages",
    "t": "http://schemas.microsoft.com/exchange/services/2006/types",
}

STARTUP_TIMEOUT = float(os.environ.get("INGEST_TEST_STARTUP_TIMEOUT", "60"))
BANNER_URL = re.compile(r"^\s*Base URL:\s*(\S+)")
BANNER_CA = re.compile(r"^\s*CA certificate:\s*(.+?)\s*$")
BANNER_END = re.compile(r"^\s*Store:")


def new_session(verify) -> requests.Session:
    """A session that ignores REQUESTS_CA_BUNDLE & co. and trusts exactly `verify`."""
    session = requests.Session()
    session.trust_env = False
    session.verify = verify
    return session


@dataclass
class Server:
    proc: subprocess.Popen
    base_url: str
    ca_path: str | None
    admin_key: str
    args: list[str]
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    # ----- plumbing -----
    @property
    def netloc(self) -> str:
        return urlsplit(self.base_url).netloc

    @property
    def ews_url(self) -> str:
        return self.base_url + SERVICE_PATH

    def session(self) -> requests.Session:
        return new_session(self.ca_path if self.ca_path else True)

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    # ----- admin API -----
    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        headers.setdefault("Authorization", f"Bearer {self.admin_key}")
        with self.session() as s:
            return s.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)

    def ingestion(self, correlation_id: str, tenant: str = TENANT) -> dict:
        r = self.admin("GET", f"/api/tenants/{tenant}/ingestions/{correlation_id}")
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def register_app(self, name: str, tenant: str = TENANT) -> dict:
        r = self.admin("POST", f"/api/tenants/{tenant}/applications", json={"displayName": name})
        assert r.status_code in (200, 201), (r.status_code, r.text)
        body = r.json()
        assert body.get("appId") and body.get("clientSecret"), body
        return body

    def consent(self, app_id: str, tenant: str = TENANT) -> dict:
        r = self.admin("POST", f"/api/tenants/{tenant}/servicePrincipals", json={"appId": app_id})
        assert r.status_code in (200, 201), (r.status_code, r.text)
        return r.json()

    # ----- Entra-like issuer -----
    def token_response(self, client_id=APP_ID, secret=APP_SECRET, tenant=TENANT,
                       scope=EXCHANGE_SCOPE) -> requests.Response:
        with self.session() as s:
            return s.post(
                f"{self.base_url}/{tenant}/oauth2/v2.0/token",
                data={"client_id": client_id, "client_secret": secret,
                      "grant_type": "client_credentials", "scope": scope},
                timeout=30,
            )

    def token(self, client_id=APP_ID, secret=APP_SECRET, tenant=TENANT,
              scope=EXCHANGE_SCOPE) -> str:
        r = self.token_response(client_id, secret, tenant, scope)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["access_token"]

    # ----- EWS -----
    def ews(self, body: str, token: str | None, path: str = SERVICE_PATH,
            headers: dict | None = None) -> requests.Response:
        h = {"Content-Type": "text/xml; charset=utf-8"}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        with self.session() as s:
            return s.post(self.base_url + path, data=body.encode("utf-8"), headers=h, timeout=60)


def _start_server(extra_args, tmp_root: Path) -> Server:
    if not BIN.exists():
        pytest.fail(f"server binary {BIN} not found: run `cargo build` (or set INGEST_EMULATOR_BIN)")
    admin_key = "py-admin-" + secrets.token_hex(16)
    args = [str(BIN), "serve", "--ephemeral", "--listen", "127.0.0.1:0",
            "--admin-key", admin_key, *extra_args]
    stderr_path = tmp_root / f"server-{uuid.uuid4().hex[:8]}.stderr.log"
    stderr_file = open(stderr_path, "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr_file,
                            stdin=subprocess.DEVNULL, env=env)
    stderr_file.close()

    lines: list[str] = []
    banner: dict = {}
    ready = threading.Event()

    def drain():
        # Keeps reading stdout for the server's whole life, so it never blocks on a full pipe.
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if m := BANNER_URL.match(line):
                banner["url"] = m.group(1)
            elif m := BANNER_CA.match(line):
                banner["ca"] = m.group(1)
            elif BANNER_END.match(line):
                ready.set()
        ready.set()  # EOF: the server exited

    threading.Thread(target=drain, name="ingest-emulator-stdout", daemon=True).start()
    if not ready.wait(STARTUP_TIMEOUT) or "url" not in banner:
        code = proc.poll()
        if code is None:
            proc.kill()
            proc.wait(timeout=10)
        err = stderr_path.read_text(errors="replace")[-4000:]
        pytest.fail(f"ingest-emulator did not print its banner (exit {code}); args {args[1:]};\n"
                    f"stdout: {lines}\nstderr: {err}")
    ca = banner.get("ca")
    if ca and not os.path.isfile(ca):
        ca = None  # plain HTTP or a user-supplied certificate
    return Server(proc=proc, base_url=banner["url"].rstrip("/"), ca_path=ca, admin_key=admin_key,
                  args=list(extra_args), stderr_path=stderr_path, stdout_lines=lines)


@pytest.fixture(scope="session")
def _logs_dir():
    d = tempfile.TemporaryDirectory(prefix="ingest-emulator-pytest-")
    yield Path(d.name)
    d.cleanup()


@pytest.fixture
def server_factory(_logs_dir):
    started: list[Server] = []

    def start(*extra_args: str) -> Server:
        srv = _start_server(list(extra_args), _logs_dir)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def server(server_factory) -> Server:
    return server_factory()


@pytest.fixture(scope="module")
def shared_server(_logs_dir):
    srv = _start_server([], _logs_dir)
    yield srv
    srv.stop()


@pytest.fixture
def use_server_ca(monkeypatch):
    """For clients that build their own `requests` sessions: trust `server`'s CA via env."""

    def apply(srv: Server):
        if srv.ca_path:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", srv.ca_path)
            monkeypatch.setenv("CURL_CA_BUNDLE", srv.ca_path)
        return srv

    return apply


# ----- EWS helpers shared by the test modules -----

def soap_envelope(body: str, impersonate: str | None = "alice@contoso.com",
                  version: str = "Exchange2016") -> str:
    imp = ""
    if impersonate:
        imp = ("<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>"
               f"{impersonate}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>")
    return ("<?xml version='1.0' encoding='utf-8'?>"
            f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:m="{NS["m"]}" xmlns:t="{NS["t"]}">'
            f'<s:Header><t:RequestServerVersion Version="{version}"/>{imp}</s:Header>'
            f"<s:Body>{body}</s:Body></s:Envelope>")


def message_xml(subject="Hello from pytest", to=("alice@contoso.com",), cc=(),
                sender="contoso@twitter.example", item_class="IPM.Note.Twitter.Tweet",
                sent="2024-03-01T12:00:00Z", body="<p>hello</p>") -> str:
    def mailboxes(addrs):
        return "".join(f"<t:Mailbox><t:EmailAddress>{a}</t:EmailAddress></t:Mailbox>" for a in addrs)

    cc_xml = f"<t:CcRecipients>{mailboxes(cc)}</t:CcRecipients>" if cc else ""
    from xml.sax.saxutils import escape
    return (
        "<t:Message>"
        f"<t:Subject>{escape(subject)}</t:Subject>"
        f'<t:Body BodyType="HTML">{escape(body)}</t:Body>'
        '<t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="0x39" PropertyType="SystemTime"/>'
        f"<t:Value>{sent}</t:Value></t:ExtendedProperty>"
        '<t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="0x1a" PropertyType="String"/>'
        f"<t:Value>{item_class}</t:Value></t:ExtendedProperty>"
        f"<t:ToRecipients>{mailboxes(to)}</t:ToRecipients>{cc_xml}"
        f"<t:From><t:Mailbox><t:EmailAddress>{sender}</t:EmailAddress></t:Mailbox></t:From>"
        "</t:Message>"
    )


def create_item_xml(*messages: str, mailbox="alice@contoso.com") -> str:
    return soap_envelope(
        '<m:CreateItem MessageDisposition="SaveOnly">'
        '<m:SavedItemFolderId><t:DistinguishedFolderId Id="inbox"><t:Mailbox>'
        f"<t:EmailAddress>{mailbox}</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>"
        f"</m:SavedItemFolderId><m:Items>{''.join(messages) or message_xml()}</m:Items>"
        "</m:CreateItem>",
        impersonate=mailbox,
    )


def get_folder_xml(folder_id: str, mailbox="alice@contoso.com") -> str:
    return soap_envelope(
        "<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>"
        f'<m:FolderIds><t:DistinguishedFolderId Id="{folder_id}"><t:Mailbox>'
        f"<t:EmailAddress>{mailbox}</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>"
        "</m:FolderIds></m:GetFolder>",
        impersonate=mailbox,
    )


def response_messages(xml_text: str) -> list[ET.Element]:
    """The `*ResponseMessage` elements of an EWS reply."""
    root = ET.fromstring(xml_text.encode("utf-8") if isinstance(xml_text, str) else xml_text)
    return [el for el in root.iter() if el.tag.endswith("ResponseMessage")]


def folder_total_count(srv: Server, token: str, folder_id: str, mailbox: str) -> int:
    r = srv.ews(get_folder_xml(folder_id, mailbox), token)
    assert r.status_code == 200, (r.status_code, r.text[:2000])
    msgs = response_messages(r.text)
    assert msgs and msgs[0].get("ResponseClass") == "Success", r.text[:2000]
    count = msgs[0].find(".//t:TotalCount", NS)
    assert count is not None, r.text[:2000]
    return int(count.text)


# The OAuth `error` Entra pairs with each AADSTS code.
AADSTS_ERROR = {
    7000215: "invalid_client", 7000222: "invalid_client", 7000216: "invalid_client",
    700027: "invalid_client", 700024: "invalid_client", 700023: "invalid_client",
    700016: "unauthorized_client", 7000112: "unauthorized_client", 90002: "invalid_tenant",
    900144: "invalid_request", 1002012: "invalid_scope", 500011: "invalid_resource",
    70003: "unsupported_grant_type",
}


def error_json_ok(body: dict, code: int) -> None:
    """Entra's error shape: error, error_description 'AADSTS<code>: ...', error_codes, timestamp,
    trace_id, correlation_id."""
    assert isinstance(body.get("error"), str) and body["error"], body
    if code in AADSTS_ERROR:
        assert body["error"] == AADSTS_ERROR[code], (code, body)
    desc = body.get("error_description")
    assert isinstance(desc, str) and desc.startswith(f"AADSTS{code}:"), body
    assert isinstance(body.get("error_codes"), list) and code in body["error_codes"], body
    for key in ("timestamp", "trace_id", "correlation_id"):
        assert isinstance(body.get(key), str) and body[key], (key, body)
    uuid.UUID(body["trace_id"])
    uuid.UUID(body["correlation_id"])


def decode_jwt_unverified(token: str) -> tuple[dict, dict]:
    import base64

    def part(p):
        return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))

    h, p, _ = token.split(".")
    return part(h), part(p)
