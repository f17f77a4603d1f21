//! Forged tokens under concurrency, and oversized Authorization headers: every one refused with
//! 401 and a `WWW-Authenticate: Bearer` challenge, nothing stored, the server unharmed.
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

fn forged_tokens(server: &Server, forge: &Forge, token: &str) -> Vec<(&'static str, String)> {
    let (kid, jwk) = server_kid(server);
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
    vec![
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
    ]
}

fn assert_refused(reply: &EwsReply, name: &str) {
    assert_eq!(reply.status, 401, "{name}: {}", reply.body);
    let challenge = reply
        .headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{name}: challenge"))
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Bearer"), "{name}: {challenge}");
    assert!(
        reply.correlation_id().is_none(),
        "{name}: no correlation id"
    );
}

#[test]
fn forged_tokens_sent_concurrently_are_all_refused() {
    let forge = Forge::new();
    let server = Server::start(&["--config", forge.config.to_str().unwrap()]);
    let token = server.token();
    let before = server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges");
    let forged = forged_tokens(&server, &forge, &token);
    let threads = 8;
    let per_thread = 50;
    let refused: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (server, forged) = (&server, &forged);
                scope.spawn(move || {
                    let body = create_item(&[Msg::default().xml()]);
                    let mut refused = 0;
                    for i in 0..per_thread {
                        let (name, forged_token) = &forged[(t * per_thread + i) % forged.len()];
                        let reply = EwsReply::from(
                            server
                                .post(SERVICE_PATH)
                                .header("Authorization", format!("Bearer {forged_token}"))
                                .header("Content-Type", "text/xml; charset=utf-8")
                                .body(body.clone())
                                .send()
                                .unwrap(),
                        );
                        assert_refused(&reply, name);
                        refused += 1;
                    }
                    refused
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(refused, threads * per_thread);
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        before,
        "nothing stored by refused requests"
    );
    // The server is unharmed: a good token still works, the trusted issuer's too.
    assert_eq!(
        server
            .ews(&token, &create_item(&[Msg::default().xml()]))
            .status,
        200
    );
    assert_eq!(
        server
            .ews(
                &forge.sign(&good_claims()),
                &create_item(&[Msg::default().xml()])
            )
            .status,
        200
    );
}

#[test]
fn a_100_kb_authorization_header_is_refused_over_http1_and_http2() {
    let server = Server::start(&[]);
    let token = server.token();
    for (name, value) in [
        (
            "100 kB of garbage",
            format!("Bearer {}", "a".repeat(100 * 1024)),
        ),
        (
            "100 kB JWT-shaped",
            format!(
                "Bearer {}.{}.{}",
                "e".repeat(50 * 1024),
                "e".repeat(50 * 1024),
                "x"
            ),
        ),
        (
            "100 kB after a valid token",
            format!("Bearer {token}{}", " x".repeat(50 * 1024)),
        ),
    ] {
        for http2 in [false, true] {
            let mut builder = reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .tls_built_in_root_certs(false)
                .add_root_certificate(
                    reqwest::Certificate::from_pem(
                        &std::fs::read(server.ca_cert.as_ref().unwrap()).unwrap(),
                    )
                    .unwrap(),
                );
            builder = if http2 {
                builder.http2_prior_knowledge()
            } else {
                builder.http1_only()
            };
            let client = builder.build().unwrap();
            let response = client
                .post(format!("{}{SERVICE_PATH}", server.url))
                .header("Authorization", &value)
                .body(create_item(&[Msg::default().xml()]))
                .send();
            match response {
                // HTTP/1.1: the bearer check refuses it (401).
                Ok(response) => {
                    let status = response.status().as_u16();
                    eprintln!("{name} (http2 {http2}): {status}");
                    assert!(
                        status == 401 || status == 431,
                        "{name} (http2 {http2}): {status}"
                    );
                }
                // HTTP/2: a header list over the server's limit may be refused at the protocol
                // level (stream reset): also a refusal.
                Err(e) => {
                    eprintln!("{name} (http2 {http2}): {e}");
                    assert!(http2, "{name} over HTTP/1.1: {e}")
                }
            }
        }
    }
    assert_eq!(server.get("/healthz").send().unwrap().status(), 200);
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        0
    );
    assert_eq!(
        server
            .ews(&token, &create_item(&[Msg::default().xml()]))
            .status,
        200
    );
}
