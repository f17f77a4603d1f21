//! The Entra-like issuer over the wire: OpenID documents, JWKS, the token endpoints, their
//! AADSTS errors, certificate assertions, and the admin consent page.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use sha1::Digest;

fn token_request(server: &Server, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = server
        .post(&format!("/{tenant}/oauth2/v2.0/token"))
        .form(form)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

fn claims_of(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let header =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    (header, claims)
}

/// Asserts Entra's error shape and returns the AADSTS code.
fn assert_entra_error(status: u16, body: &Value, expected_status: u16, error: &str, code: u64) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
}

fn secret_form<'a>(client_id: &'a str, secret: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", EXCHANGE_SCOPE),
    ]
}

#[test]
fn openid_documents_name_the_scheme_host_and_port_the_client_used() {
    let server = Server::start(&[]);
    for tenant in [TENANT, TENANT_DOMAIN, "contoso.com"] {
        let doc: Value = server
            .get(&format!("/{tenant}/v2.0/.well-known/openid-configuration"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        for field in [
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "issuer",
        ] {
            let url = doc[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} in {doc}"));
            assert!(
                url.starts_with(&server.url),
                "{field} = {url} is not on {}",
                server.url
            );
        }
        assert!(doc["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth2/v2.0/token"));
        assert!(
            doc["issuer"].as_str().unwrap().contains(TENANT),
            "issuer names the tenant GUID"
        );
        let v1: Value = server
            .get(&format!("/{tenant}/.well-known/openid-configuration"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v1["issuer"], format!("https://sts.windows.net/{TENANT}/"));
        assert!(v1["token_endpoint"]
            .as_str()
            .unwrap()
            .starts_with(&server.url));
    }
    let response = server
        .get("/nosuch.onmicrosoft.com/v2.0/.well-known/openid-configuration")
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap();
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS90002"),
        "{body}"
    );
}

/// The correlation id of a token answer is the client's `client-request-id`: MSAL for Python
/// and .NET send it as a header, MSAL Node and MSAL.js in the query string and the form.
#[test]
fn the_correlation_id_is_the_client_request_id_wherever_the_client_puts_it() {
    let server = Server::start(&[]);
    let id = "9d40706e-5d3e-4a4c-9f7e-2f4f6a0b1c2d";
    let path = format!("/{TENANT}/oauth2/v2.0/token");
    let wrong = secret_form(APP_ID, "not-the-secret");
    let mut in_form = wrong.clone();
    in_form.push(("client-request-id", id));
    for request in [
        server
            .post(&path)
            .header("client-request-id", id)
            .form(&wrong),
        server
            .post(&format!("{path}?client-request-id={id}"))
            .form(&wrong),
        server.post(&path).form(&in_form),
    ] {
        let response = request.send().unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(response.headers()["client-request-id"], id);
        let body: Value = response.json().unwrap();
        assert_eq!(body["correlation_id"], id, "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(&format!("Correlation ID: {id}")),
            "{body}"
        );
    }
    // A success echoes it too; without one, each answer has its own.
    let mut good = secret_form(APP_ID, APP_SECRET);
    good.push(("client-request-id", id));
    let response = server.post(&path).form(&good).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["client-request-id"], id);
    let response = server.post(&path).form(&wrong).send().unwrap();
    assert_ne!(response.headers()["client-request-id"], id);
}

/// Behind a proxy that terminates TLS (`--no-tls`), clients use HTTPS: the documents say
/// `https` when the proxy says so, else MSAL Node refuses the issuer (its scheme and host must
/// be the authority's) and a client assertion's audience (the HTTPS token endpoint) would not
/// match.
#[test]
fn openid_documents_behind_a_tls_terminating_proxy_name_https() {
    let server = Server::start(&["--no-tls"]);
    let document = |forwarded: Option<(&str, &str)>| -> Value {
        let mut request = server
            .get(&format!(
                "/{TENANT_DOMAIN}/v2.0/.well-known/openid-configuration"
            ))
            .header("Host", "ingest.example");
        if let Some((name, value)) = forwarded {
            request = request.header(name, value);
        }
        request.send().unwrap().json().unwrap()
    };
    let direct = document(None);
    assert!(
        direct["token_endpoint"]
            .as_str()
            .unwrap()
            .starts_with("http://ingest.example/"),
        "{direct}"
    );
    for forwarded in [
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=10.0.0.1;proto=https;host=ingest.example"),
    ] {
        let doc = document(Some(forwarded));
        for field in [
            "token_endpoint",
            "jwks_uri",
            "issuer",
            "authorization_endpoint",
        ] {
            assert!(
                doc[field]
                    .as_str()
                    .unwrap()
                    .starts_with("https://ingest.example/"),
                "{forwarded:?}: {field} in {doc}"
            );
        }
    }
    // Only the proxy's word for HTTPS counts; anything else is plain HTTP.
    let other = document(Some(("X-Forwarded-Proto", "ws")));
    assert!(
        other["issuer"].as_str().unwrap().starts_with("http://"),
        "{other}"
    );
}

#[test]
fn jwks_publishes_kid_x5t_n_e_and_x5c_and_tokens_look_like_entra_v1_app_tokens() {
    let server = Server::start(&[]);
    let jwks: Value = server
        .get(&format!("/{TENANT}/discovery/v2.0/keys"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let key = &jwks["keys"][0];
    for field in ["kid", "x5t", "n", "e"] {
        assert!(key[field].is_string(), "{field} in {key}");
    }
    let cert = STANDARD.decode(key["x5c"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&cert)),
        key["x5t"].as_str().unwrap()
    );
    let v1: Value = server
        .get(&format!("/{TENANT_DOMAIN}/discovery/keys"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v1["keys"][0]["kid"], key["kid"]);

    let (status, body) = token_request(&server, TENANT_DOMAIN, &secret_form(APP_ID, APP_SECRET));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 3000);
    assert!(body["ext_expires_in"].is_u64());
    let (header, claims) = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], key["kid"]);
    assert_eq!(header["x5t"], key["x5t"]);
    assert_eq!(claims["aud"], "https://outlook.office365.com");
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["appid"], APP_ID);
    assert_eq!(claims["appidacr"], "1");
    assert_eq!(claims["roles"], json!(["full_access_as_app"]));
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["oid"], claims["sub"]);
    for field in ["iat", "nbf", "exp"] {
        assert!(claims[field].is_number(), "{field}");
    }
}

#[test]
fn client_secret_by_http_basic_the_v1_endpoint_and_unknown_form_fields_work() {
    let server = Server::start(&[]);
    let response = server
        .post(&format!("/{TENANT}/oauth2/v2.0/token"))
        .basic_auth(APP_ID, Some(APP_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", EXCHANGE_SCOPE),
            ("client_info", "1"),
            ("x-anything", "y"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);

    let response = server
        .post(&format!("/{TENANT_DOMAIN}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            ("client_secret", APP_SECRET),
            ("resource", "https://outlook.office365.com"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    let (_, claims) = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "https://outlook.office365.com");
    // The v1 token works on the ingestion endpoint.
    let reply = server.ews(
        body["access_token"].as_str().unwrap(),
        &create_item(&[Msg::default().xml()]),
    );
    assert_eq!(reply.status, 200);
}

#[test]
fn each_token_error_has_its_aadsts_code() {
    let server = Server::start(&[]);
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str, u64);
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            TENANT,
            secret_form(APP_ID, "wrong"),
            401,
            "invalid_client",
            7000215,
        ),
        (
            "no credential",
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", APP_ID),
                ("scope", EXCHANGE_SCOPE),
            ],
            401,
            "invalid_client",
            7000216,
        ),
        (
            "unknown app",
            TENANT,
            secret_form("99999999-9999-9999-9999-999999999999", "x"),
            400,
            "unauthorized_client",
            700016,
        ),
        (
            "never consented",
            TENANT,
            secret_form("33333333-3333-3333-3333-333333333333", "unconsented-secret"),
            400,
            "unauthorized_client",
            700016,
        ),
        (
            "disabled",
            TENANT,
            secret_form("44444444-4444-4444-4444-444444444444", "disabled-secret"),
            400,
            "unauthorized_client",
            7000112,
        ),
        (
            "unknown tenant",
            "nosuch.onmicrosoft.com",
            secret_form(APP_ID, APP_SECRET),
            400,
            "invalid_request",
            90002,
        ),
        (
            "missing grant_type",
            TENANT,
            vec![
                ("client_id", APP_ID),
                ("client_secret", APP_SECRET),
                ("scope", EXCHANGE_SCOPE),
            ],
            400,
            "invalid_request",
            900144,
        ),
        (
            "scope without /.default",
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", APP_ID),
                ("client_secret", APP_SECRET),
                (
                    "scope",
                    "https://outlook.office365.com/EWS.AccessAsUser.All",
                ),
            ],
            400,
            "invalid_scope",
            1002012,
        ),
        (
            "unknown resource",
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", APP_ID),
                ("client_secret", APP_SECRET),
                ("scope", "https://nosuch.example/.default"),
            ],
            400,
            "invalid_resource",
            500011,
        ),
        (
            "unsupported grant",
            TENANT,
            vec![
                ("grant_type", "password"),
                ("client_id", APP_ID),
                ("client_secret", APP_SECRET),
                ("scope", EXCHANGE_SCOPE),
            ],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            "bad assertion",
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", APP_ID),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
                ("scope", EXCHANGE_SCOPE),
            ],
            401,
            "invalid_client",
            700027,
        ),
    ];
    for (name, tenant, form, status, error, code) in cases {
        let (got, body) = token_request(&server, tenant, &form);
        assert_eq!(got, status, "{name}: {body}");
        assert_entra_error(got, &body, status, error, code);
    }
}

#[test]
fn an_expired_secret_is_refused_with_7000222() {
    let server = Server::start(&[]);
    let end = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let response = server
        .admin(
            reqwest::Method::POST,
            &format!("/api/tenants/{TENANT}/applications/{APP_ID}/secrets"),
        )
        .json(&json!({"endDateTime": end}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().unwrap();
    let secret = body["secretText"].as_str().unwrap().to_string();
    let (status, _) = token_request(&server, TENANT, &secret_form(APP_ID, &secret));
    assert_eq!(status, 200, "valid before it expires");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (status, body) = token_request(&server, TENANT, &secret_form(APP_ID, &secret));
    assert_entra_error(status, &body, 401, "invalid_client", 7000222);
}

/// A new RSA key and self-signed certificate (PEM), and the key as PKCS#1 DER.
fn certificate() -> (String, Vec<u8>, Vec<u8>) {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pkcs8 = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let pair =
        rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["connector".into()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    (
        cert.pem(),
        cert.der().to_vec(),
        key.to_pkcs1_der().unwrap().as_bytes().to_vec(),
    )
}

#[test]
fn certificate_assertions_rs256_with_x5t_and_ps256_with_padded_x5t_s256_are_accepted() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let server = Server::start(&[]);
    let (pem, der, key) = certificate();
    let response = server
        .admin(
            reqwest::Method::POST,
            &format!("/api/tenants/{TENANT}/applications/{APP_ID}/certificates"),
        )
        .json(&json!({"pem": pem}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let audience = format!("{}/{TENANT}/oauth2/v2.0/token", server.url);
    let now = chrono::Utc::now().timestamp() as f64 + 0.25;
    let claims = json!({"aud": audience, "iss": APP_ID, "sub": APP_ID, "jti": uuid::Uuid::new_v4(), "iat": now, "nbf": now, "exp": now + 600.0});
    let sha1 = STANDARD.encode(sha1::Sha1::digest(&der));
    let sha256 = base64::engine::general_purpose::URL_SAFE.encode(sha2::Sha256::digest(&der));

    let mut rs256 = Header::new(Algorithm::RS256);
    rs256.x5t = Some(sha1);
    let mut ps256 = Header::new(Algorithm::PS256);
    ps256.x5t_s256 = Some(sha256);
    ps256.x5c = Some(vec![STANDARD.encode(&der)]);
    for header in [rs256, ps256] {
        let assertion = encode(&header, &claims, &EncodingKey::from_rsa_der(&key)).unwrap();
        let (status, body) = token_request(
            &server,
            TENANT,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", APP_ID),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
                ("scope", EXCHANGE_SCOPE),
            ],
        );
        assert_eq!(status, 200, "{:?}: {body}", header.alg);
        let (_, token_claims) = claims_of(body["access_token"].as_str().unwrap());
        assert_eq!(token_claims["appidacr"], "2");
    }

    // Signed by a key that is not registered, though it names a registered thumbprint.
    let (_, _, other_key) = certificate();
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(STANDARD.encode(sha1::Sha1::digest(&der)));
    let forged = encode(&header, &claims, &EncodingKey::from_rsa_der(&other_key)).unwrap();
    let (status, body) = token_request(
        &server,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &forged),
            ("scope", EXCHANGE_SCOPE),
        ],
    );
    assert_entra_error(status, &body, 401, "invalid_client", 700027);
}

fn consent_form<'a>(key: &'a str, action: &'a str, client_id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", client_id),
        ("redirect_uri", "https://partner.example/done"),
        ("state", "xyz"),
        ("admin_key", key),
        ("action", action),
    ]
}

#[test]
fn the_consent_page_creates_the_service_principal_on_accept() {
    let server = Server::start(&[]);
    let unconsented = "33333333-3333-3333-3333-333333333333";
    let page = server
        .get(&format!("/{TENANT_DOMAIN}/adminconsent?client_id={unconsented}&redirect_uri=https://partner.example/done&state=xyz"))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().unwrap();
    assert!(html.contains("Fabrikam Chat Connector"), "shows the app");
    assert!(html.contains("full_access_as_app"), "shows the permission");

    // A wrong admin key shows the page again, 401, and consents to nothing.
    let response = server
        .post(&format!("/{TENANT_DOMAIN}/adminconsent"))
        .form(&consent_form("wrong", "accept", unconsented))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    let (status, _) = token_request(
        &server,
        TENANT,
        &secret_form(unconsented, "unconsented-secret"),
    );
    assert_eq!(status, 400);

    // Cancel redirects with Entra's error parameters.
    let response = server
        .post(&format!("/{TENANT_DOMAIN}/adminconsent"))
        .form(&consent_form(&server.admin_key, "cancel", unconsented))
        .send()
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("https://partner.example/done?"),
        "{location}"
    );
    assert!(location.contains("error=access_denied"), "{location}");

    // Accept redirects with admin_consent=True and the tenant; tokens now work.
    let response = server
        .post(&format!("/{TENANT_DOMAIN}/adminconsent"))
        .form(&consent_form(&server.admin_key, "accept", unconsented))
        .send()
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("admin_consent=True"), "{location}");
    assert!(location.contains(&format!("tenant={TENANT}")), "{location}");
    assert!(location.contains("state=xyz"), "{location}");
    let (status, body) = token_request(
        &server,
        TENANT,
        &secret_form(unconsented, "unconsented-secret"),
    );
    assert_eq!(status, 200, "{body}");
    let reply = server.ews(
        body["access_token"].as_str().unwrap(),
        &create_item(&[Msg::default().xml()]),
    );
    assert_eq!(reply.status, 200);
}

/// The consent page redirects only to a redirect URI registered on the app, as Entra does:
/// any other is refused with AADSTS50011 and never redirected to, on the page and on its
/// form, cancel included (which needs no admin key: otherwise any site could bounce a
/// visitor through the emulator to any address). Loopback URIs match on any port.
#[test]
fn the_consent_page_redirects_only_to_registered_redirect_uris() {
    let server = Server::start(&[]);
    let unconsented = "33333333-3333-3333-3333-333333333333";
    for foreign in [
        "https://evil.example/steal",
        "https://partner.example/done/../other",
        "https://partner.example/done?x=1",
        "http://partner.example/done",
    ] {
        let page = server
            .get(&format!("/{TENANT_DOMAIN}/adminconsent"))
            .query(&[("client_id", unconsented), ("redirect_uri", foreign)])
            .send()
            .unwrap();
        assert_eq!(page.status(), 400, "{foreign}");
        let html = page.text().unwrap();
        assert!(html.contains("AADSTS50011"), "{foreign}: {html}");
        for (key, action) in [("", "cancel"), (server.admin_key.as_str(), "accept")] {
            let response = server
                .post(&format!("/{TENANT_DOMAIN}/adminconsent"))
                .form(&[
                    ("client_id", unconsented),
                    ("redirect_uri", foreign),
                    ("admin_key", key),
                    ("action", action),
                ])
                .send()
                .unwrap();
            assert_eq!(response.status(), 400, "{foreign} {action}");
            assert!(response.headers().get("location").is_none());
        }
    }
    let (status, _) = token_request(
        &server,
        TENANT,
        &secret_form(unconsented, "unconsented-secret"),
    );
    assert_eq!(status, 400, "nothing was consented");

    // The fixture registers http://localhost/consent: any port matches, the path must.
    for (uri, registered) in [
        ("http://localhost:53117/consent", true),
        ("http://localhost/consent", true),
        ("http://localhost:53117/other", false),
    ] {
        let response = server
            .post(&format!("/{TENANT_DOMAIN}/adminconsent"))
            .form(&[
                ("client_id", unconsented),
                ("redirect_uri", uri),
                ("action", "cancel"),
            ])
            .send()
            .unwrap();
        let expected = if registered { 302 } else { 400 };
        assert_eq!(response.status(), expected, "{uri}");
    }

    // An admin registers another one through the admin API; the page then redirects to it.
    let app = format!("/api/tenants/{TENANT}/applications/{unconsented}");
    let (status, body) = call(
        &server,
        reqwest::Method::PATCH,
        &app,
        Some(serde_json::json!({"redirectUris": ["https://connector.example/consented"]})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["redirectUris"],
        serde_json::json!(["https://connector.example/consented"])
    );
    let response = server
        .post(&format!("/{TENANT_DOMAIN}/adminconsent"))
        .form(&[
            ("client_id", unconsented),
            ("redirect_uri", "https://connector.example/consented"),
            ("action", "cancel"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 302);
    // The list was replaced: the fixture's URI no longer redirects.
    let response = server
        .post(&format!("/{TENANT_DOMAIN}/adminconsent"))
        .form(&consent_form("", "cancel", unconsented))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    for bad in [
        serde_json::json!({"redirectUris": ["not a url"]}),
        serde_json::json!({"redirectUris": ["https://x.example/#fragment"]}),
        serde_json::json!({"redirectUris": ["ftp://x.example/"]}),
        serde_json::json!({"displayName": " "}),
        serde_json::json!({"requiredRoles": ["x"]}),
    ] {
        let (status, body) = call(&server, reqwest::Method::PATCH, &app, Some(bad.clone()));
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[test]
fn legacy_basic_auth_is_off_by_default_and_accepts_the_third_party_mailbox_when_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("legacy.toml");
    std::fs::write(&config, "legacy-basic-auth = true\n[legacy-passwords]\n\"thirdpartydata@contoso.com\" = \"P@ssw0rd-legacy\"\n").unwrap();
    let send = |server: &Server, user: &str, password: &str| {
        EwsReply::from(
            server
                .post(SERVICE_PATH)
                .basic_auth(user, Some(password))
                .body(create_item(&[Msg::default().xml()]))
                .send()
                .unwrap(),
        )
    };
    let off = Server::start(&[]);
    assert_eq!(
        send(&off, "thirdpartydata@contoso.com", "P@ssw0rd-legacy").status,
        401
    );
    let on = Server::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(
        send(&on, "thirdpartydata@contoso.com", "P@ssw0rd-legacy").status,
        200
    );
    assert_eq!(send(&on, "thirdpartydata@contoso.com", "wrong").status, 401);
    assert_eq!(
        send(&on, "alice@contoso.com", "P@ssw0rd-legacy").status,
        401
    );
}
