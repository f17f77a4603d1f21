"""Real MSAL for Python (1.39.0, unmodified) against the emulator's Entra-like issuer, and the
tokens it gets used on the ingestion endpoint."""

from __future__ import annotations

import datetime as dt
import uuid

import msal
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from conftest import (APP_ID, APP_SECRET, EXCHANGE_SCOPE, NS, TENANT, TENANT_DOMAIN,
                      create_item_xml, decode_jwt_unverified, message_xml, response_messages)


def msal_app(srv, client_id=APP_ID, credential=APP_SECRET, tenant=TENANT):
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential,
        authority=f"{srv.base_url}/{tenant}",
        instance_discovery=False,
        http_client=srv.session(),
    )


def acquire(srv, **kwargs) -> dict:
    return msal_app(srv, **kwargs).acquire_token_for_client(scopes=[EXCHANGE_SCOPE])


def post_item(srv, token: str, subject: str = "msal live test"):
    """POST one small CreateItem; returns (response, correlation id)."""
    r = srv.ews(create_item_xml(message_xml(subject=subject)), token)
    return r, r.headers.get("x-IngestionCorrelationID")


def assert_item_created(srv, token: str, subject: str = "msal live test"):
    r, correlation = post_item(srv, token, subject)
    assert r.status_code == 200, (r.status_code, dict(r.headers), r.text[:2000])
    msgs = response_messages(r.text)
    assert msgs and all(m.get("ResponseClass") == "Success" for m in msgs), r.text[:2000]
    assert msgs[0].find(".//t:ItemId", NS) is not None, r.text[:2000]
    assert correlation, dict(r.headers)
    return correlation


def assert_refused(srv, token: str, what: str):
    r, _ = post_item(srv, token)
    assert r.status_code == 401, (what, r.status_code, dict(r.headers), r.text[:1000])
    assert r.headers.get("x-ms-diagnostics"), (what, dict(r.headers))
    return r


@pytest.mark.parametrize("tenant", [TENANT, TENANT_DOMAIN], ids=["guid", "domain"])
def test_secret_flow_token_works_on_ingestion(shared_server, tenant):
    result = acquire(shared_server, tenant=tenant)
    assert "access_token" in result, result
    assert result.get("token_type", "").lower() == "bearer", result
    _, claims = decode_jwt_unverified(result["access_token"])
    assert claims.get("tid") == TENANT, claims
    assert "full_access_as_app" in claims.get("roles", []), claims
    correlation = assert_item_created(shared_server, result["access_token"], f"via {tenant}")
    record = shared_server.ingestion(correlation)
    stored = [i for i in record["items"] if i.get("result") == "stored"]
    assert len(stored) == 1, record
    copies = stored[0]["copies"]
    assert any(c["mailbox"].lower() == "alice@contoso.com" and "purges" in c["folder"].lower()
               for c in copies), record


def test_token_signature_verifies_with_published_jwks(shared_server):
    import jwt  # PyJWT, an MSAL dependency

    result = acquire(shared_server)
    token = result["access_token"]
    with shared_server.session() as s:
        conf = s.get(f"{shared_server.base_url}/{TENANT}/v2.0/.well-known/openid-configuration",
                     timeout=30).json()
        jwks = s.get(conf["jwks_uri"], timeout=30).json()
    header, _ = decode_jwt_unverified(token)
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = jwt.PyJWK(key).key
    claims = jwt.decode(token, public, algorithms=[header["alg"]],
                        options={"verify_aud": False})
    assert claims["tid"] == TENANT


def test_msal_cache_returns_same_token(shared_server):
    app = msal_app(shared_server)
    first = app.acquire_token_for_client(scopes=[EXCHANGE_SCOPE])
    second = app.acquire_token_for_client(scopes=[EXCHANGE_SCOPE])
    assert first["access_token"] == second["access_token"]
    assert second.get("token_source") == "cache", second


def test_wrong_secret(shared_server):
    result = acquire(shared_server, credential="wrong-secret")
    assert "access_token" not in result, result
    assert result.get("error") == "invalid_client", result
    assert result.get("error_codes") == [7000215], result
    assert result.get("error_description", "").startswith("AADSTS7000215:"), result


# ----- certificate credentials -----

def make_cert(cn: str = "pytest-connector"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
    return key_pem, cert_pem, thumbprint


@pytest.fixture(scope="module")
def uploaded_cert(shared_server):
    key_pem, cert_pem, thumbprint = make_cert()
    r = shared_server.admin("POST", f"/api/tenants/{TENANT}/applications/{APP_ID}/certificates",
                            json={"pem": cert_pem})
    assert r.status_code in (200, 201), (r.status_code, r.text)
    view = r.json()
    assert view.get("thumbprint", "").upper() == thumbprint, view
    return key_pem, cert_pem, thumbprint


def test_certificate_thumbprint_rs256(shared_server, uploaded_cert):
    key_pem, _, thumbprint = uploaded_cert
    result = acquire(shared_server, credential={"private_key": key_pem, "thumbprint": thumbprint})
    assert "access_token" in result, result
    assert_item_created(shared_server, result["access_token"], "cert RS256 x5t")


def test_certificate_public_certificate_ps256(shared_server, uploaded_cert):
    key_pem, cert_pem, _ = uploaded_cert
    result = acquire(shared_server,
                     credential={"private_key": key_pem, "public_certificate": cert_pem})
    assert "access_token" in result, result
    assert_item_created(shared_server, result["access_token"], "cert PS256 x5t#S256 x5c")


@pytest.mark.parametrize("tenant", [TENANT_DOMAIN], ids=["domain"])
def test_certificate_with_domain_authority(shared_server, uploaded_cert, tenant):
    """The assertion's `aud` is the domain-named token endpoint MSAL found in the discovery."""
    key_pem, cert_pem, _ = uploaded_cert
    result = acquire(shared_server, tenant=tenant,
                     credential={"private_key": key_pem, "public_certificate": cert_pem})
    assert "access_token" in result, result


def test_unregistered_certificate_refused(shared_server):
    key_pem, cert_pem, _ = make_cert("CN-not-registered")
    result = acquire(shared_server,
                     credential={"private_key": key_pem, "public_certificate": cert_pem})
    assert "access_token" not in result, result
    assert 700027 in result.get("error_codes", []), result


# ----- consent lifecycle -----

def test_consent_lifecycle(server):
    app = server.register_app(f"pytest connector {uuid.uuid4().hex[:6]}")
    app_id, secret = app["appId"], app["clientSecret"]

    # Registered but not consented in the tenant: Entra refuses the token.
    result = acquire(server, client_id=app_id, credential=secret)
    assert "access_token" not in result, result
    assert 700016 in result.get("error_codes", []), result

    # Admin consent. A new MSAL app: MSAL caches a 400 answer for 60 s per app instance.
    server.consent(app_id)
    result = acquire(server, client_id=app_id, credential=secret)
    assert "access_token" in result, result
    token = result["access_token"]
    assert_item_created(server, token, "after consent")

    # Disabled: the still-valid token is refused at once (revocation mode immediate, default).
    r = server.admin("PATCH", f"/api/tenants/{TENANT}/servicePrincipals/{app_id}",
                     json={"accountEnabled": False})
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json().get("accountEnabled") is False, r.text
    assert_refused(server, token, "disabled service principal")
    result = acquire(server, client_id=app_id, credential=secret)
    assert 7000112 in result.get("error_codes", []), result

    # Enabled again: works again.
    r = server.admin("PATCH", f"/api/tenants/{TENANT}/servicePrincipals/{app_id}",
                     json={"accountEnabled": True})
    assert r.status_code == 200, (r.status_code, r.text)
    assert_item_created(server, token, "re-enabled")

    # Revoked (service principal deleted): refused too, and no new token.
    r = server.admin("DELETE", f"/api/tenants/{TENANT}/servicePrincipals/{app_id}")
    assert r.status_code in (200, 204), (r.status_code, r.text)
    assert_refused(server, token, "revoked consent")
    result = acquire(server, client_id=app_id, credential=secret)
    assert 700016 in result.get("error_codes", []), result


def test_unconsented_fixture_app(shared_server):
    result = acquire(shared_server, client_id="33333333-3333-3333-3333-333333333333",
                     credential="unconsented-secret")
    assert 700016 in result.get("error_codes", []), result


def test_disabled_fixture_app(shared_server):
    result = acquire(shared_server, client_id="44444444-4444-4444-4444-444444444444",
                     credential="disabled-secret")
    assert 7000112 in result.get("error_codes", []), result
