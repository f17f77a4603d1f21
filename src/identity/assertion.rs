//! Client assertions (`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`):
//! a JWT the app signs with the private key of a certificate registered on it.
//!
//! - The certificate is found by the header's `x5t#S256` (SHA-256) or `x5t` (SHA-1) thumbprint,
//!   in any base64 alphabet, padded or not (MSAL Python pads), or by `kid` when it is a thumbprint,
//!   or by the thumbprint of the leaf of `x5c`. The verification key is always the registered
//!   certificate's, never one taken from `x5c`.
//! - RS256/384/512 and PS256/384/512 are accepted.
//! - The signature is checked with jsonwebtoken; the claims are checked here from the JSON,
//!   because `exp`/`nbf`/`iat` may be floats (MSAL Python) which jsonwebtoken refuses.
//! - `jti` reuse is not refused: MSAL reuses one assertion for minutes.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::credentials::{certificate_validity, decode_thumbprint, rsa_public_key_der};
use super::errors::EntraError;
use crate::store::model::{AppRecord, CertificateRecord};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

const CERT_DOC: &str =
    "Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .";

/// What a valid assertion proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// `keyId` of the registered certificate that signed it.
    pub certificate_key_id: uuid::Uuid,
    pub jti: Option<String>,
}

/// Verifies `assertion` for `app` (whose id is `client_id`, as sent). `audience_ok` tells
/// whether an `aud` value names this token endpoint. Errors are Entra's (all `invalid_client`,
/// 401): 50027 malformed, 700027 unknown certificate, bad signature or a certificate outside its
/// validity period, 700021 `iss`/`sub` not the
/// client id, 700024 outside the validity period (with `skew_secs`), 700023 wrong audience.
pub fn verify_client_assertion(
    assertion: &str,
    client_id: &str,
    app: &AppRecord,
    audience_ok: impl Fn(&str) -> bool,
    skew_secs: u64,
    now: DateTime<Utc>,
) -> Result<VerifiedAssertion, EntraError> {
    let malformed = || EntraError::invalid_client(50027, "JWT token is invalid or malformed.");
    let parts: Vec<&str> = assertion.trim().split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts[..] else {
        return Err(malformed());
    };
    let header = decode_json(header_b64).ok_or_else(malformed)?;
    let payload = decode_json(payload_b64).ok_or_else(malformed)?;
    if !header.is_object() || !payload.is_object() {
        return Err(malformed());
    }

    let algorithm = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Algorithm::RS256,
        Some("RS384") => Algorithm::RS384,
        Some("RS512") => Algorithm::RS512,
        Some("PS256") => Algorithm::PS256,
        Some("PS384") => Algorithm::PS384,
        Some("PS512") => Algorithm::PS512,
        other => {
            return Err(EntraError::invalid_client(
                700027,
                format!(
                    "Client assertion contains an invalid signature. [Reason - The signing \
                     algorithm '{}' is not supported; use RS256 or PS256.] {CERT_DOC}",
                    other.unwrap_or("")
                ),
            ))
        }
    };

    let (certificate, shown_thumbprint) = find_certificate(&header, &app.certificates).map_err(|shown| {
        EntraError::invalid_client(
            700027,
            format!(
                "The certificate with identifier used to sign the client assertion is not \
                 registered on application. [Reason - The key was not found., Thumbprint of key \
                 used by client: '{shown}', Please visit the Azure Portal, Graph Explorer or \
                 directly use MS Graph to see configured keys for app Id '{}'. Review the \
                 documentation at \
                 https://docs.microsoft.com/en-us/graph/deployments#app-registration-and-token-service-root-endpoints \
                 to know more about the endpoints.]",
                app.app_id
            ),
        )
    })?;

    let der = STANDARD.decode(&certificate.der_base64).unwrap_or_default();
    // Entra names the key's validity period in every signature error.
    let validity = certificate_validity(&der).ok();
    let found_key = validity
        .map(|(start, end)| {
            format!(
                ", Found key 'Start={}, End={}'",
                start.format("%m/%d/%Y %H:%M:%S"),
                end.format("%m/%d/%Y %H:%M:%S")
            )
        })
        .unwrap_or_default();
    let invalid_signature = |reason: &str| {
        EntraError::invalid_client(
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - {reason}, Thumbprint \
                 of key used by client: '{shown_thumbprint}'{found_key}, Please visit the Azure \
                 Portal, Graph Explorer or directly use MS Graph to see configured keys for app \
                 Id '{}'.] {CERT_DOC}",
                app.app_id
            ),
        )
    };
    let bad_signature = || {
        invalid_signature(
            "The provided signature value did not match the expected signature value.",
        )
    };
    // A certificate outside its validity period signs nothing, whatever the signature.
    match validity {
        Some((_, end)) if now > end => return Err(invalid_signature("The key used is expired.")),
        Some((start, _)) if now < start => {
            return Err(invalid_signature("The key used is not yet valid."))
        }
        Some(_) => {}
        None => return Err(bad_signature()),
    }
    let public_key = rsa_public_key_der(&der).map_err(|_| bad_signature())?;
    let key = DecodingKey::from_rsa_der(&public_key);
    let message = format!("{header_b64}.{payload_b64}");
    match jsonwebtoken::crypto::verify(signature_b64, message.as_bytes(), &key, algorithm) {
        Ok(true) => {}
        _ => return Err(bad_signature()),
    }

    // Claims, from the JSON (floats allowed).
    let iss = payload.get("iss").and_then(Value::as_str);
    let sub = payload.get("sub").and_then(Value::as_str);
    let matches_client =
        |v: Option<&str>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case(client_id.trim()));
    if !matches_client(iss) || !matches_client(sub) {
        return Err(EntraError::invalid_client(
            700021,
            format!("Client assertion application identifier doesn't match 'client_id' parameter. {CERT_DOC}"),
        ));
    }

    let exp = payload
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or_else(malformed)?;
    let nbf = payload.get("nbf").and_then(Value::as_f64);
    let iat = payload.get("iat").and_then(Value::as_f64);
    let now_secs = now.timestamp_millis() as f64 / 1000.0;
    let skew = skew_secs as f64;
    let expired = now_secs > exp + skew;
    let early = nbf.is_some_and(|nbf| now_secs + skew < nbf);
    if expired || early {
        let from = nbf
            .or(iat)
            .map(show_time)
            .unwrap_or_else(|| "(not given)".into());
        return Err(EntraError::invalid_client(
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, \
                 assertion valid from {from}, expiry time of assertion {}. {CERT_DOC}",
                show_time(now_secs),
                show_time(exp),
            ),
        ));
    }

    let audiences: Vec<&str> = match payload.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.iter().any(|aud| audience_ok(aud)) {
        return Err(EntraError::invalid_client(
            700023,
            format!("Client assertion audience claim does not match Realm issuer. {CERT_DOC}"),
        ));
    }

    Ok(VerifiedAssertion {
        certificate_key_id: certificate.key_id,
        jti: payload
            .get("jti")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

fn decode_json(segment: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `2024-04-05T23:01:54.2089203Z`, Entra's format; the raw number when out of range.
fn show_time(secs: f64) -> String {
    if !secs.is_finite() || secs.abs() > 1e13 {
        return secs.to_string();
    }
    let mut whole = secs.floor();
    let mut ticks = ((secs - whole) * 1e7).round() as u32;
    if ticks >= 10_000_000 {
        whole += 1.0;
        ticks = 0;
    }
    match DateTime::<Utc>::from_timestamp(whole as i64, ticks * 100) {
        Some(t) => format!("{}.{ticks:07}Z", t.format("%Y-%m-%dT%H:%M:%S")),
        None => secs.to_string(),
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The registered certificate the header designates, with the thumbprint shown in messages;
/// `Err(shown thumbprint)` when none matches.
fn find_certificate<'a>(
    header: &Value,
    certificates: &'a [CertificateRecord],
) -> Result<(&'a CertificateRecord, String), String> {
    // (digest bytes, is SHA-256) for every identifier the header offers.
    let mut wanted: Vec<(Vec<u8>, bool)> = Vec::new();
    if let Some(t) = header.get("x5t#S256").and_then(Value::as_str) {
        if let Some(bytes) = decode_thumbprint(t) {
            wanted.push((bytes, true));
        }
    }
    if let Some(t) = header.get("x5t").and_then(Value::as_str) {
        if let Some(bytes) = decode_thumbprint(t) {
            wanted.push((bytes, false));
        }
    }
    if let Some(kid) = header.get("kid").and_then(Value::as_str) {
        let bytes = hex_decode(kid).or_else(|| decode_thumbprint(kid));
        if let Some(bytes) = bytes {
            match bytes.len() {
                20 => wanted.push((bytes, false)),
                32 => wanted.push((bytes, true)),
                _ => {}
            }
        }
    }
    if let Some(leaf) = header
        .get("x5c")
        .and_then(Value::as_array)
        .and_then(|chain| chain.first())
        .and_then(Value::as_str)
    {
        let compact: String = leaf.chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = STANDARD.decode(compact) {
            // Only used to find a registered certificate with the same thumbprint: the key
            // still comes from the registration.
            wanted.push((Sha256::digest(&der).to_vec(), true));
        }
    }

    for (digest, s256) in &wanted {
        for cert in certificates {
            let registered = if *s256 {
                decode_thumbprint(&cert.x5t_s256)
            } else {
                decode_thumbprint(&cert.x5t)
            };
            if registered.as_deref() == Some(digest.as_slice()) {
                return Ok((cert, hex_upper(digest)));
            }
        }
    }
    Err(wanted
        .first()
        .map(|(digest, _)| hex_upper(digest))
        .unwrap_or_default())
}

/// The thumbprints of a DER certificate, for tests and admin displays: (x5t, x5t#S256).
pub fn thumbprints(der: &[u8]) -> (String, String) {
    (
        URL_SAFE_NO_PAD.encode(Sha1::digest(der)),
        URL_SAFE_NO_PAD.encode(Sha256::digest(der)),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::credentials::certificate_record_der;
    use jsonwebtoken::{EncodingKey, Header};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};

    pub(crate) const APP: &str = "22222222-2222-2222-2222-222222222222";

    /// MSAL Python 1.39 captures (expired on 2026-11-22): PS256 with x5t#S256 + x5c, RS256 with
    /// x5t, and PS256 signed by an unregistered "attacker" certificate.
    pub(crate) const CAPTURED_PS256: &str = include_str!("testdata/assertion_ps256.jwt");
    pub(crate) const CAPTURED_RS256: &str = include_str!("testdata/assertion_rs256.jwt");
    pub(crate) const CAPTURED_ATTACKER: &str = include_str!("testdata/assertion_attacker.jwt");
    pub(crate) const CAPTURED_AUD: &str =
        "https://127.0.0.1:8443/11111111-1111-1111-1111-111111111111/oauth2/v2.0/token";

    pub(crate) struct TestCert {
        pub record: CertificateRecord,
        pub pkcs1: Vec<u8>,
        pub der: Vec<u8>,
    }

    pub(crate) fn test_cert(cn: &str) -> TestCert {
        test_cert_valid(cn, None)
    }

    /// A certificate valid `from`..`until` (rcgen's default period without one).
    pub(crate) fn test_cert_valid(
        cn: &str,
        period: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) -> TestCert {
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
        let key_pair =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if let Some((from, until)) = period {
            params.not_before = from;
            params.not_after = until;
        }
        let cert = params.self_signed(&key_pair).unwrap();
        let der = cert.der().as_ref().to_vec();
        TestCert {
            record: certificate_record_der(&der).unwrap(),
            pkcs1: private.to_pkcs1_der().unwrap().as_bytes().to_vec(),
            der,
        }
    }

    pub(crate) fn app_with(certs: Vec<CertificateRecord>) -> AppRecord {
        AppRecord {
            app_id: APP.parse().unwrap(),
            home_tenant: uuid::Uuid::nil(),
            display_name: "test".into(),
            required_roles: vec!["full_access_as_app".into()],
            secrets: vec![],
            certificates: certs,
            created: Utc::now(),
            redirect_uris: Vec::new(),
        }
    }

    pub(crate) fn sign(
        cert: &TestCert,
        alg: Algorithm,
        header_extra: Value,
        claims: Value,
    ) -> String {
        let mut header = Header::new(alg);
        if let Some(t) = header_extra.get("x5t").and_then(Value::as_str) {
            header.x5t = Some(t.into());
        }
        if let Some(t) = header_extra.get("x5t#S256").and_then(Value::as_str) {
            header.x5t_s256 = Some(t.into());
        }
        if let Some(t) = header_extra.get("kid").and_then(Value::as_str) {
            header.kid = Some(t.into());
        }
        if let Some(chain) = header_extra.get("x5c").and_then(Value::as_array) {
            header.x5c = Some(
                chain
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            );
        }
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&cert.pkcs1)).unwrap()
    }

    pub(crate) fn claims(aud: &str, exp_offset: f64) -> Value {
        let now = Utc::now().timestamp_millis() as f64 / 1000.0;
        serde_json::json!({
            "aud": aud, "iss": APP, "sub": APP,
            "exp": now + exp_offset, "iat": now - 10.5, "nbf": now - 10.5,
            "jti": uuid::Uuid::new_v4().to_string(),
        })
    }

    const AUD: &str = "https://login.test/t/oauth2/v2.0/token";

    fn verify(
        assertion: &str,
        app: &AppRecord,
        skew: u64,
    ) -> Result<VerifiedAssertion, EntraError> {
        verify_client_assertion(assertion, APP, app, |aud| aud == AUD, skew, Utc::now())
    }

    #[test]
    fn accepts_rs256_and_ps256_by_every_thumbprint_form() {
        let cert = test_cert("connector");
        let other = test_cert("other");
        let app = app_with(vec![other.record.clone(), cert.record.clone()]);
        let padded = STANDARD.encode(Sha256::digest(&cert.der));
        let sha1_hex = hex_upper(&Sha1::digest(&cert.der));
        // x5c with line breaks, as MSAL Python sends it.
        let b64 = STANDARD.encode(&cert.der);
        let wrapped: String = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let cases = [
            (
                Algorithm::PS256,
                serde_json::json!({"x5t#S256": padded, "x5c": [wrapped]}),
            ),
            (
                Algorithm::RS256,
                serde_json::json!({"x5t": cert.record.x5t}),
            ),
            (
                Algorithm::RS256,
                serde_json::json!({"x5t": STANDARD.encode(Sha1::digest(&cert.der))}),
            ),
            (Algorithm::PS256, serde_json::json!({"kid": sha1_hex})),
            (Algorithm::RS256, serde_json::json!({"x5c": [b64]})),
            (
                Algorithm::PS512,
                serde_json::json!({"x5t#S256": cert.record.x5t_s256}),
            ),
        ];
        for (alg, header) in cases {
            let assertion = sign(&cert, alg, header.clone(), claims(AUD, 600.25));
            let verified =
                verify(&assertion, &app, 300).unwrap_or_else(|e| panic!("{header}: {e}"));
            assert_eq!(verified.certificate_key_id, cert.record.key_id);
        }
        // The same assertion (same jti) is accepted again.
        let assertion = sign(
            &cert,
            Algorithm::RS256,
            serde_json::json!({"x5t": cert.record.x5t}),
            claims(AUD, 600.0),
        );
        verify(&assertion, &app, 300).unwrap();
        verify(&assertion, &app, 300).unwrap();
    }

    #[test]
    fn refuses_unregistered_keys_and_bad_signatures() {
        let cert = test_cert("connector");
        let attacker = test_cert("attacker");
        let app = app_with(vec![cert.record.clone()]);
        // Attacker's own cert: not registered.
        let a = sign(
            &attacker,
            Algorithm::PS256,
            serde_json::json!({"x5t#S256": attacker.record.x5t_s256, "x5c": [STANDARD.encode(&attacker.der)]}),
            claims(AUD, 600.0),
        );
        assert_eq!(verify(&a, &app, 300).unwrap_err().code, 700027);
        // Registered thumbprint, attacker's key (and x5c): signature fails.
        let b = sign(
            &attacker,
            Algorithm::RS256,
            serde_json::json!({"x5t": cert.record.x5t, "x5c": [STANDARD.encode(&attacker.der)]}),
            claims(AUD, 600.0),
        );
        let e = verify(&b, &app, 300).unwrap_err();
        assert_eq!(
            (e.code, e.error, e.status.as_u16()),
            (700027, "invalid_client", 401)
        );
        // No identifier at all.
        let c = sign(
            &cert,
            Algorithm::RS256,
            serde_json::json!({}),
            claims(AUD, 600.0),
        );
        assert_eq!(verify(&c, &app, 300).unwrap_err().code, 700027);
        // HS256 keyed with the certificate: refused.
        let mut header = Header::new(Algorithm::HS256);
        header.x5t = Some(cert.record.x5t.clone());
        let d = jsonwebtoken::encode(
            &header,
            &claims(AUD, 600.0),
            &EncodingKey::from_secret(&cert.der),
        )
        .unwrap();
        assert_eq!(verify(&d, &app, 300).unwrap_err().code, 700027);
        // Tampered payload.
        let good = sign(
            &cert,
            Algorithm::RS256,
            serde_json::json!({"x5t": cert.record.x5t}),
            claims(AUD, 600.0),
        );
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        let mut payload = claims(AUD, 900.0);
        payload["sub"] = APP.into();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert_eq!(
            verify(&parts.join("."), &app, 300).unwrap_err().code,
            700027
        );
        // Garbage.
        assert_eq!(verify("not-a-jwt", &app, 300).unwrap_err().code, 50027);
        assert_eq!(verify("a.b.c", &app, 300).unwrap_err().code, 50027);
    }

    /// A certificate outside its validity period is refused as Entra refuses it (700027, "The
    /// key used is expired." / "not yet valid", with the period), even with a good signature;
    /// a bad signature names the period too.
    #[test]
    fn refuses_certificates_outside_their_validity_period() {
        let day = time::Duration::days(1);
        let now = time::OffsetDateTime::now_utc();
        let expired = test_cert_valid("expired", Some((now - 400 * day, now - day)));
        let early = test_cert_valid("early", Some((now + day, now + 400 * day)));
        for (cert, reason) in [
            (&expired, "The key used is expired."),
            (&early, "The key used is not yet valid."),
        ] {
            let app = app_with(vec![cert.record.clone()]);
            let signed = sign(
                cert,
                Algorithm::RS256,
                serde_json::json!({"x5t": cert.record.x5t}),
                claims(AUD, 600.0),
            );
            let e = verify(&signed, &app, 300).unwrap_err();
            assert_eq!((e.code, e.status.as_u16()), (700027, 401), "{e}");
            assert!(
                e.message.starts_with(&format!(
                    "Client assertion contains an invalid signature. [Reason - {reason}, \
                     Thumbprint of key used by client: '"
                )),
                "{e}"
            );
            assert!(e.message.contains(", Found key 'Start="), "{e}");
        }
        let valid = test_cert("valid");
        let app = app_with(vec![valid.record.clone()]);
        let other = test_cert("other");
        let forged = sign(
            &other,
            Algorithm::RS256,
            serde_json::json!({"x5t": valid.record.x5t}),
            claims(AUD, 600.0),
        );
        let e = verify(&forged, &app, 300).unwrap_err();
        assert!(e.message.contains("[Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '"), "{e}");
        assert!(e.message.contains(", Found key 'Start="), "{e}");
    }

    #[test]
    fn checks_claims() {
        let cert = test_cert("connector");
        let app = app_with(vec![cert.record.clone()]);
        let header = serde_json::json!({"x5t": cert.record.x5t});
        let mut wrong_iss = claims(AUD, 600.0);
        wrong_iss["iss"] = "99999999-9999-9999-9999-999999999999".into();
        let mut wrong_sub = claims(AUD, 600.0);
        wrong_sub["sub"] = "someone".into();
        let mut future = claims(AUD, 1200.0);
        future["nbf"] = (Utc::now().timestamp() as f64 + 900.0).into();
        let cases = [
            (wrong_iss, 700021),
            (wrong_sub, 700021),
            (claims(AUD, -400.0), 700024),
            (future, 700024),
            (
                claims(
                    "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                    600.0,
                ),
                700023,
            ),
        ];
        for (claims, code) in cases {
            let assertion = sign(&cert, Algorithm::RS256, header.clone(), claims.clone());
            let e = verify(&assertion, &app, 300).unwrap_err();
            assert_eq!(e.code, code, "{claims}: {e}");
            assert_eq!(e.status.as_u16(), 401);
        }
        // Within the skew: accepted.
        let assertion = sign(&cert, Algorithm::RS256, header.clone(), claims(AUD, -200.0));
        verify(&assertion, &app, 300).unwrap();
        // aud as an array.
        let mut list = claims(AUD, 600.0);
        list["aud"] = serde_json::json!(["x", AUD]);
        verify(&sign(&cert, Algorithm::RS256, header, list), &app, 300).unwrap();
    }

    fn fixture_app() -> AppRecord {
        let fixture = crate::fixture::Fixture::parse(crate::fixture::DEFAULT_FIXTURE, "t").unwrap();
        let pem = &fixture.apps[0].certificates[0];
        app_with(vec![
            crate::identity::credentials::certificate_record(pem).unwrap()
        ])
    }

    #[test]
    fn captured_msal_assertions_expired_under_default_skew() {
        let app = fixture_app();
        for assertion in [CAPTURED_PS256, CAPTURED_RS256] {
            let e = verify_client_assertion(
                assertion,
                APP,
                &app,
                |a| a == CAPTURED_AUD,
                300,
                Utc::now(),
            )
            .unwrap_err();
            assert_eq!(e.code, 700024, "{e}");
            assert!(e.message.contains("Current time: "), "{e}");
        }
    }

    #[test]
    fn captured_msal_assertions_accepted_with_large_skew() {
        let app = fixture_app();
        let skew = 10 * 365 * 86_400;
        for assertion in [CAPTURED_PS256, CAPTURED_RS256] {
            verify_client_assertion(
                assertion,
                APP,
                &app,
                |a| a == CAPTURED_AUD,
                skew,
                Utc::now(),
            )
            .unwrap();
            verify_client_assertion(
                assertion,
                APP,
                &app,
                |a| a == CAPTURED_AUD,
                u64::MAX,
                Utc::now(),
            )
            .unwrap();
        }
        let e = verify_client_assertion(
            CAPTURED_ATTACKER,
            APP,
            &app,
            |a| a == CAPTURED_AUD,
            skew,
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(e.code, 700027);
        assert!(e.message.contains("not registered"), "{e}");
    }

    #[test]
    fn shows_times_like_entra() {
        assert_eq!(
            show_time(1795440273.8159418),
            "2026-11-23T13:24:33.8159418Z"
        );
    }
}
