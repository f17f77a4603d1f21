//! Forged tokens for the bearer-validation tests: a test RSA key the server trusts as an external
//! issuer (the documented offline trust of a real Entra tenant), so each claim check runs with a
//! valid signature, plus signature-level forgeries that use the server's own published key id.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

use super::{Server, APP_ID, TENANT};

pub const TRUSTED_KID: &str = "external-test-key";
pub const OTHER_TENANT: &str = "99999999-0000-0000-0000-000000000000";

pub struct Forge {
    key: rsa::RsaPrivateKey,
    _dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
}

pub fn issuer(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

impl Forge {
    pub fn new() -> Forge {
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

    pub fn sign_with(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        let der = self.key.to_pkcs1_der().unwrap();
        encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes())).unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(TRUSTED_KID, claims)
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a good app-only token for the test app.
pub fn good_claims() -> Value {
    json!({
        "aud": "https://outlook.office365.com",
        "iss": issuer(TENANT),
        "iat": now() - 60, "nbf": now() - 60, "exp": now() + 3600,
        "appid": APP_ID, "appidacr": "1", "tid": TENANT, "oid": "00000000-0000-0000-0000-00000000000a",
        "sub": "00000000-0000-0000-0000-00000000000a",
        "roles": ["full_access_as_app"], "ver": "1.0",
    })
}

pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

pub fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

pub fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

pub fn server_kid(server: &Server) -> (String, Value) {
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
pub fn public_pem(jwk: &Value) -> String {
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

pub fn forged_tokens(server: &Server, forge: &Forge, token: &str) -> Vec<(&'static str, String)> {
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
