//! Bearer validation on the ingestion endpoint: every forged or unacceptable token is refused
//! with 401, Exchange's `WWW-Authenticate` challenge and an `x-ms-diagnostics` reason, and
//! nothing is stored.
//!
//! Claims are forged with a test key the server trusts as an external issuer (the documented
//! offline trust of a real Entra tenant), so each claim check is exercised with a valid
//! signature; signature-level forgeries use the server's own published key id.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

const TRUSTED_KID: &str = "external-test-key";
const OTHER_TENANT: &str = "99999999-0000-0000-0000-000000000000";

struct Forge {
    key: rsa::RsaPrivateKey,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn issuer(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

impl Forge {
    fn new() -> Forge {
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let jwks = json!({"keys": [{
            "kty": "RSA", "use": "sig", "kid": TRUSTED_KID,
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }]});
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks.to_string()).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[[trusted-issuers]]\nissuer = \"{}\"\njwks-file = \"{}\"\n",
                issuer(TENANT),
                jwks_path.display()
            ),
        )
        .unwrap();
        Forge {
            key,
            _dir: dir,
            config,
        }
    }

    fn sign_with(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        let der = self.key.to_pkcs1_der().unwrap();
        encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes())).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(TRUSTED_KID, claims)
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a good app-only token for the test app.
fn good_claims() -> Value {
    json!({
        "aud": "https://outlook.office365.com",
        "iss": issuer(TENANT),
        "iat": now() - 60, "nbf": now() - 60, "exp": now() + 3600,
        "appid": APP_ID, "appidacr": "1", "tid": TENANT, "oid": "00000000-0000-0000-0000-00000000000a",
        "sub": "00000000-0000-0000-0000-00000000000a",
        "roles": ["full_access_as_app"], "ver": "1.0",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn server_kid(server: &Server) -> (String, Value) {
    let jwks: Value = server
        .get(&format!("/{TENANT}/discovery/v2.0/keys"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let key = jwks["keys"][0].clone();
    (key["kid"].as_str().unwrap().to_string(), key)
}

/// The server's public key as PEM, for the HMAC key-confusion forgery.
fn public_pem(jwk: &Value) -> String {
    use rsa::pkcs1::EncodeRsaPublicKey;
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&n),
        rsa::BigUint::from_bytes_be(&e),
    )
    .unwrap();
    key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap()
}

fn refused(server: &Server, name: &str, authorization: Option<String>) -> String {
    let mut request = server
        .post(SERVICE_PATH)
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(create_item(&[Msg::default().xml()]));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let reply = EwsReply::from(request.send().unwrap());
    assert_eq!(reply.status, 401, "{name}: {}", reply.body);
    let challenge = reply
        .headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{name}: challenge"))
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{name}: {challenge}");
    assert!(reply.correlation_id().is_none(), "{name}");
    reply
        .headers
        .get("x-ms-diagnostics")
        .unwrap_or_else(|| panic!("{name}: x-ms-diagnostics"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_forged_or_unacceptable_token_is_refused_with_its_reason() {
    let forge = Forge::new();
    let server = Server::start(&["--config", forge.config.to_str().unwrap()]);
    let token = server.token();
    let (kid, jwk) = server_kid(&server);

    // The trusted external key itself works: the forgeries below differ in one point each.
    let reply = server.ews(
        &forge.sign(&good_claims()),
        &create_item(&[Msg::default().xml()]),
    );
    assert_eq!(
        reply.status, 200,
        "a token of the trusted issuer is accepted: {}",
        reply.body
    );
    let before = server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges");

    let real_claims: Value = {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(&real_claims)
    );
    let hmac = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        encode(
            &header,
            &real_claims,
            &EncodingKey::from_secret(public_pem(&jwk).as_bytes()),
        )
        .unwrap()
    };
    let claims = good_claims;
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "not-a-jwt".into()),
        ("alg none", alg_none),
        ("HMAC keyed with the public key", hmac),
        (
            "other key with a known kid",
            forge.sign_with(&kid, &real_claims),
        ),
        ("unknown kid", forge.sign_with("no-such-kid", &claims())),
        (
            "expired",
            forge.sign(&with(claims(), "exp", json!(now() - 3600))),
        ),
        (
            "not yet valid",
            forge.sign(&with(claims(), "nbf", json!(now() + 3600))),
        ),
        (
            "wrong audience",
            forge.sign(&with(claims(), "aud", json!("https://graph.microsoft.com"))),
        ),
        (
            "wrong issuer",
            forge.sign(&with(claims(), "iss", json!("https://evil.example/"))),
        ),
        (
            "issuer and tenant disagree",
            forge.sign(&with(claims(), "tid", json!(OTHER_TENANT))),
        ),
        ("no appid", forge.sign(&without(claims(), "appid"))),
        ("no role", forge.sign(&with(claims(), "roles", json!([])))),
        (
            "unconsented",
            forge.sign(&with(
                claims(),
                "appid",
                json!("33333333-3333-3333-3333-333333333333"),
            )),
        ),
        (
            "disabled",
            forge.sign(&with(
                claims(),
                "appid",
                json!("44444444-4444-4444-4444-444444444444"),
            )),
        ),
    ];
    let mut reasons = std::collections::BTreeMap::new();
    for (name, token) in cases {
        let diagnostics = refused(&server, name, Some(format!("Bearer {token}")));
        reasons
            .entry(diagnostics)
            .or_insert_with(Vec::new)
            .push(name);
    }
    let missing = refused(&server, "no Authorization header", None);
    assert!(!missing.is_empty());
    // Reasons are told apart (the signature-level forgeries may share one).
    eprintln!("{reasons:#?}");
    assert!(
        reasons.len() >= 10,
        "diagnostics should name distinct reasons: {reasons:#?}"
    );

    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        before,
        "nothing stored by refused requests"
    );
}

#[test]
fn an_unknown_tenant_is_refused() {
    let forge = Forge::new();
    let server = Server::start(&["--config", forge.config.to_str().unwrap()]);
    let claims = with(
        with(good_claims(), "tid", json!(OTHER_TENANT)),
        "iss",
        json!(issuer(OTHER_TENANT)),
    );
    refused(
        &server,
        "unknown tenant",
        Some(format!("Bearer {}", forge.sign(&claims))),
    );
}

#[test]
fn a_100_kb_authorization_header_is_refused_without_harm() {
    let server = Server::start(&[]);
    let huge = format!("Bearer {}", "a".repeat(100 * 1024));
    let response = server
        .post(SERVICE_PATH)
        .header("Authorization", huge)
        .body(create_item(&[Msg::default().xml()]))
        .send();
    if let Ok(response) = response {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    assert_eq!(server.get("/healthz").send().unwrap().status(), 200);
}

#[test]
fn revocation_is_immediate_even_for_an_unexpired_token() {
    let server = Server::start(&[]);
    let token = server.token();
    assert_eq!(
        server
            .ews(&token, &create_item(&[Msg::default().xml()]))
            .status,
        200
    );
    let response = server
        .admin(
            reqwest::Method::PATCH,
            &format!("/api/tenants/{TENANT}/servicePrincipals/{APP_ID}"),
        )
        .json(&json!({"accountEnabled": false}))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    refused(
        &server,
        "disabled after issue",
        Some(format!("Bearer {token}")),
    );
    let response = server
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/tenants/{TENANT}/servicePrincipals/{APP_ID}"),
        )
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    refused(
        &server,
        "revoked after issue",
        Some(format!("Bearer {token}")),
    );
}

#[test]
fn token_lifetime_mode_keeps_issued_tokens_valid_after_revocation() {
    let server = Server::start(&["--revocation", "token-lifetime"]);
    let token = server.token();
    let response = server
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/tenants/{TENANT}/servicePrincipals/{APP_ID}"),
        )
        .send()
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(
        server
            .ews(&token, &create_item(&[Msg::default().xml()]))
            .status,
        200
    );
}

#[test]
fn an_expired_token_of_our_own_issuer_is_refused() {
    let server = Server::start(&["--token-lifetime-secs", "1", "--clock-skew-secs", "0"]);
    let token = server.token();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refused(&server, "expired", Some(format!("Bearer {token}")));
}
