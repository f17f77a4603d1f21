"""Replay every request MSAL for Python 1.39.0 sent (captured in
/work/shared/conformance/auth/msal-python/requests.jsonl) and check the answer.

Each request's expected outcome is derived from its content (tenant, client_id, credential,
scope, assertion header), not from its line number.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import APP_ID, TENANT, TENANT_DOMAIN, decode_jwt_unverified, error_json_ok

CAPTURE = Path(os.environ.get(
    "MSAL_CAPTURE", "/work/shared/conformance/auth/msal-python/requests.jsonl"))
SKEW = "315360000"  # ten years: the captured assertions (expired) are inside the window again
KNOWN_TENANTS = {TENANT, TENANT_DOMAIN, "contoso.com"}
KNOWN_SECRETS = {
    "22222222-2222-2222-2222-222222222222": "dev-secret-value",
    "33333333-3333-3333-3333-333333333333": "unconsented-secret",
    "44444444-4444-4444-4444-444444444444": "disabled-secret",
}
UNCONSENTED = {"33333333-3333-3333-3333-333333333333"}
DISABLED = {"44444444-4444-4444-4444-444444444444"}
KNOWN_RESOURCES = {"https://outlook.office365.com", "https://outlook.office.com",
                   "api://m365-ingestion-emulator"}

if not CAPTURE.exists():
    pytest.skip(f"capture {CAPTURE} not present", allow_module_level=True)


def _load():
    out = []
    with CAPTURE.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                out.append((n, json.loads(line)))
    return out


REQUESTS = _load()


def _b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _norm_thumb(value: str) -> str:
    """Thumbprints in any base64 alphabet, padded or not -> unpadded base64url."""
    return value.replace("+", "-").replace("/", "_").rstrip("=")


# The registered certificate of the connector app, from the default fixture.
def _registered_thumbprints() -> set[str]:
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "contoso.toml"
    text = fixture.read_text()
    out = set()
    for pem in re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S):
        der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
        out.add(_norm_thumb(base64.urlsafe_b64encode(hashlib.sha1(der).digest()).decode()))
        out.add(_norm_thumb(base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode()))
    return out


REGISTERED = _registered_thumbprints()


@dataclass
class Expect:
    kind: str                 # "discovery", "instance", "token-ok", "token-error"
    status: tuple = ()        # acceptable HTTP statuses (empty: any non-5xx)
    codes: tuple = ()         # acceptable AADSTS codes
    why: str = ""


def assertion_signer(assertion: str) -> str:
    """'registered' when the header names the app's registered certificate, 'attacker' when it
    carries (x5c) or names another one."""
    header = _b64url_json(assertion.split(".")[0])
    if header.get("x5c"):
        der = base64.b64decode(re.sub(r"\s|\\n", "", header["x5c"][0]))
        cert = x509.load_der_x509_certificate(der)
        cn = cert.subject.rfc4514_string()
        digest = _norm_thumb(base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode())
        return "registered" if digest in REGISTERED else f"other ({cn})"
    for key in ("x5t#S256", "x5t"):
        if key in header:
            return "registered" if _norm_thumb(header[key]) in REGISTERED else "other"
    return "other"


def expectation(req: dict, skewed: bool) -> Expect:
    method, path = req["method"], req["path"]
    split = urlsplit(path)
    segments = [s for s in split.path.split("/") if s]
    if method == "GET" and split.path.startswith("/common/discovery/instance"):
        return Expect("instance", why="MSAL instance discovery: any non-5xx answer")
    if method == "GET" and split.path.endswith("/v2.0/.well-known/openid-configuration"):
        tenant = segments[0]
        if tenant in KNOWN_TENANTS:
            return Expect("discovery", (200,), why=f"openid-configuration of {tenant}")
        return Expect("token-error", (400,), (90002,), f"unknown tenant {tenant}")
    assert method == "POST" and split.path.endswith("/oauth2/v2.0/token"), path
    tenant = segments[0]
    form = dict(parse_qsl(req["body"], keep_blank_values=True))
    if tenant not in KNOWN_TENANTS:
        return Expect("token-error", (400,), (90002,), f"unknown tenant {tenant}")
    client_id = form.get("client_id", "")
    scope = form.get("scope", "")
    if client_id not in KNOWN_SECRETS:
        return Expect("token-error", (400,), (700016,), f"unknown app {client_id}")
    if "client_assertion" in form:
        signer = assertion_signer(form["client_assertion"])
        payload = _b64url_json(form["client_assertion"].split(".")[1])
        if not skewed:
            # Expired: the lifetime check (700024) may or may not come before the signature
            # check of an unregistered certificate (700027).
            codes = (700024,) if signer == "registered" else (700024, 700027)
            return Expect("token-error", (401,), codes,
                          f"expired assertion (exp {payload.get('exp')}) signed by {signer}")
        if signer != "registered":
            return Expect("token-error", (401,), (700027,), f"assertion signed by {signer}")
        credential_ok = True
        cred_why = f"assertion by the registered certificate (jti {payload.get('jti')})"
    elif "client_secret" in form:
        if form["client_secret"] != KNOWN_SECRETS[client_id]:
            return Expect("token-error", (401,), (7000215,), "wrong secret")
        credential_ok = True
        cred_why = "right secret"
    else:
        return Expect("token-error", (401,), (7000216,), "no credential")
    assert credential_ok
    if client_id in UNCONSENTED:
        return Expect("token-error", (400,), (700016,), "app not consented")
    if client_id in DISABLED:
        return Expect("token-error", (400,), (7000112,), "app disabled")
    if not scope.endswith("/.default"):
        return Expect("token-error", (400,), (1002012,), f"scope {scope} without /.default")
    resource = scope[: -len("/.default")]
    if resource not in KNOWN_RESOURCES:
        return Expect("token-error", (400,), (500011,), f"unknown resource {resource}")
    return Expect("token-ok", (200,), why=f"{cred_why}, scope {scope}")


def replay(srv, req: dict, keep_host: bool = False):
    """Send a captured request. `Host` and `Content-Length` are the capture's own and dropped,
    except that `keep_host` keeps the captured Host: a client assertion's `aud` names the token
    endpoint as the client saw it (https://127.0.0.1:8443/...), and the server checks `aud`
    against the host the request names."""
    drop = ("content-length",) if keep_host else ("host", "content-length")
    headers = {k: v for k, v in req["headers"].items() if k.lower() not in drop}
    with srv.session() as s:
        return s.request(req["method"], srv.base_url + req["path"], headers=headers,
                         data=req["body"].encode() if req["body"] else None, timeout=30,
                         allow_redirects=False)


def check(srv, n: int, req: dict, exp: Expect, keep_host: bool = False):
    r = replay(srv, req, keep_host)
    ctx = f"line {n}: {req['method']} {req['path'][:90]} ({exp.why}) -> {r.status_code} {r.text[:600]}"
    if exp.kind == "instance":
        assert r.status_code < 500, ctx
        return r
    if exp.status:
        assert r.status_code in exp.status, ctx
    try:
        body = r.json()
    except ValueError:
        pytest.fail(f"not JSON: {ctx}")
    if exp.kind == "discovery":
        for key in ("authorization_endpoint", "token_endpoint"):
            url = urlsplit(body.get(key, ""))
            assert url.scheme == "https", (key, ctx)
            assert url.netloc == srv.netloc, (key, srv.netloc, ctx)
        assert urlsplit(body["token_endpoint"]).path.endswith("/oauth2/v2.0/token"), ctx
        tenant = urlsplit(req["path"]).path.split("/")[1]
        first = urlsplit(body["token_endpoint"]).path.split("/")[1]
        assert first in (tenant, TENANT), ("token_endpoint names another tenant", ctx)
        assert body.get("issuer") and TENANT in body["issuer"], ctx
        assert body.get("jwks_uri"), ctx
    elif exp.kind == "token-ok":
        assert body.get("token_type", "").lower() == "bearer", ctx
        assert isinstance(body.get("expires_in"), int) and body["expires_in"] > 0, ctx
        header, claims = decode_jwt_unverified(body["access_token"])
        assert claims.get("appid", claims.get("azp")) == dict(parse_qsl(req["body"]))["client_id"], ctx
        assert claims.get("tid") == TENANT, ctx
    else:
        assert r.status_code >= 400, ctx
        ok = any(code in body.get("error_codes", []) for code in exp.codes)
        assert ok, (f"expected one of AADSTS{exp.codes}", ctx)
        code = next(c for c in exp.codes if c in body["error_codes"])
        try:
            error_json_ok(body, code)
        except AssertionError as e:
            raise AssertionError(f"error JSON shape: {e}; {ctx}") from None
    return r


def _ids(items):
    return [f"line{n:02d}-{req['method']}-{urlsplit(req['path']).path.split('/')[-1] or 'root'}"
            for n, req in items]


@pytest.mark.parametrize("n,req", REQUESTS, ids=_ids(REQUESTS))
def test_replay_default_server(shared_server, n, req):
    """Every captured request against a default server (assertions are expired there)."""
    check(shared_server, n, req, expectation(req, skewed=False))


@pytest.fixture(scope="module")
def skewed_server(_logs_dir):
    from conftest import _start_server
    srv = _start_server(["--clock-skew-secs", SKEW], _logs_dir)
    yield srv
    srv.stop()


ASSERTION_REQUESTS = [(n, r) for n, r in REQUESTS if "client_assertion=" in (r["body"] or "")]


@pytest.mark.parametrize("n,req", ASSERTION_REQUESTS, ids=_ids(ASSERTION_REQUESTS))
def test_replay_assertions_with_clock_skew(skewed_server, n, req):
    """With ten years of allowed skew, the registered certificate's PS256/x5t#S256 and RS256/x5t
    assertions succeed (a reused assertion too); the attacker's certificate fails (700027).
    The captured Host is kept: the assertions' `aud` is https://127.0.0.1:8443/{tenant}/...,
    and the server checks it against the host the request names."""
    check(skewed_server, n, req, expectation(req, skewed=True), keep_host=True)


def test_assertion_audience_bound_to_requested_host(skewed_server):
    """The same valid assertion sent to the server under another host:port than its `aud`
    names: Entra refuses an audience that is not its token endpoint (AADSTS700023)."""
    n, req = next((n, r) for n, r in ASSERTION_REQUESTS
                  if expectation(r, skewed=True).kind == "token-ok")
    r = replay(skewed_server, req, keep_host=False)
    assert r.status_code == 401, r.text
    error_json_ok(r.json(), 700023)


def test_capture_covers_the_expected_cases():
    """Sanity: the capture holds what the brief says (so the replay tests mean something)."""
    kinds = {}
    for n, req in REQUESTS:
        for skewed in (False, True):
            e = expectation(req, skewed)
            kinds.setdefault((skewed, e.kind, e.codes), []).append(n)
    assert (False, "discovery", ()) in kinds
    assert (False, "token-ok", ()) in kinds
    for code in (7000215, 700016, 7000112, 1002012, 500011, 90002):
        assert any(code in k[2] for k in kinds), code
    assert (True, "token-error", (700027,)) in kinds
    ok_assertions = [n for n, r in ASSERTION_REQUESTS if expectation(r, True).kind == "token-ok"]
    assert len(ok_assertions) >= 4
    jtis = [_b64url_json(dict(parse_qsl(r["body"]))["client_assertion"].split(".")[1])["jti"]
            for n, r in ASSERTION_REQUESTS]
    assert len(jtis) != len(set(jtis)), "the capture reuses an assertion"


def test_correlation_id_echoes_client_request_id(shared_server):
    """Entra answers `correlation_id` = the `client-request-id` header the client sent."""
    n, req = next((n, r) for n, r in REQUESTS
                  if "client_secret=wrong" in (r["body"] or ""))
    r = replay(shared_server, req)
    assert r.status_code == 401, r.text
    assert r.json()["correlation_id"] == req["headers"]["client-request-id"], r.text


def test_v1_token_endpoint_with_resource(shared_server):
    """The v1 endpoint (`resource=`) issues a token too, and names an unknown resource 500011."""
    with shared_server.session() as s:
        url = f"{shared_server.base_url}/{TENANT}/oauth2/token"
        form = {"grant_type": "client_credentials", "client_id": APP_ID,
                "client_secret": "dev-secret-value", "resource": "https://outlook.office365.com"}
        r = s.post(url, data=form, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json().get("access_token"), r.text
        r = s.post(url, data={**form, "resource": "https://nosuch.example"}, timeout=30)
        assert r.status_code == 400, r.text
        error_json_ok(r.json(), 500011)


@pytest.mark.parametrize("form,code", [
    ({"grant_type": "client_credentials", "client_id": APP_ID,
      "scope": "https://outlook.office365.com/.default"}, 7000216),
    ({"grant_type": "client_credentials", "client_secret": "dev-secret-value",
      "scope": "https://outlook.office365.com/.default"}, 900144),
    ({"grant_type": "password", "client_id": APP_ID, "client_secret": "dev-secret-value",
      "scope": "https://outlook.office365.com/.default", "username": "a", "password": "b"}, 70003),
], ids=["no-credential", "no-client-id", "unsupported-grant"])
def test_other_token_errors(shared_server, form, code):
    with shared_server.session() as s:
        r = s.post(f"{shared_server.base_url}/{TENANT}/oauth2/v2.0/token", data=form, timeout=30)
    assert 400 <= r.status_code < 500, r.text
    error_json_ok(r.json(), code)


def test_jwks_published(shared_server):
    with shared_server.session() as s:
        conf = s.get(f"{shared_server.base_url}/{TENANT}/v2.0/.well-known/openid-configuration",
                     timeout=30).json()
        keys = s.get(conf["jwks_uri"], timeout=30)
    assert keys.status_code == 200, keys.text
    jwks = keys.json()
    assert jwks.get("keys") and all(k.get("kid") and k.get("kty") == "RSA" for k in jwks["keys"]), jwks
