//! App credentials: client secrets (stored as SHA-256, compared in constant time) and
//! certificates (stored as DER with their thumbprints).

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::store::model::{CertificateRecord, SecretRecord};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("not a PEM certificate")]
    NotPem,
    #[error("invalid X.509 certificate: {0}")]
    Invalid(String),
    #[error("the certificate's key is not RSA")]
    NotRsa,
}

/// A new random client secret in Entra's style (40 characters).
pub fn generate_secret() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";
    let mut rng = rand::thread_rng();
    (0..40)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn secret_record(value: &str, end: Option<DateTime<Utc>>) -> SecretRecord {
    SecretRecord {
        key_id: Uuid::new_v4(),
        hint: value.chars().take(3).collect(),
        sha256: hex(&Sha256::digest(value.as_bytes())),
        end_date_time: end,
    }
}

/// Outcome of checking a presented secret against an app's secrets.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretCheck {
    Valid,
    Expired,
    Wrong,
}

/// Compares `presented` with every stored secret in constant time (per secret).
pub fn check_secret(secrets: &[SecretRecord], presented: &str, now: DateTime<Utc>) -> SecretCheck {
    let digest = hex(&Sha256::digest(presented.as_bytes()));
    let mut outcome = SecretCheck::Wrong;
    for secret in secrets {
        if bool::from(secret.sha256.as_bytes().ct_eq(digest.as_bytes())) {
            outcome = match secret.end_date_time {
                Some(end) if end <= now => SecretCheck::Expired,
                _ => return SecretCheck::Valid,
            };
        }
    }
    outcome
}

/// Parses a PEM certificate (first CERTIFICATE block) into a stored record.
pub fn certificate_record(pem: &str) -> Result<CertificateRecord, CertificateError> {
    let der = rustls_pemfile::certs(&mut pem.trim().as_bytes())
        .next()
        .ok_or(CertificateError::NotPem)?
        .map_err(|_| CertificateError::NotPem)?;
    certificate_record_der(der.as_ref())
}

pub fn certificate_record_der(der: &[u8]) -> Result<CertificateRecord, CertificateError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertificateError::Invalid(e.to_string()))?;
    rsa_public_key_der(der)?;
    Ok(CertificateRecord {
        key_id: Uuid::new_v4(),
        der_base64: STANDARD.encode(der),
        x5t: URL_SAFE_NO_PAD.encode(Sha1::digest(der)),
        x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(der)),
        subject: cert.subject().to_string(),
    })
}

/// A certificate's validity period (notBefore, notAfter), as Entra keeps it for a key
/// credential (`startDateTime`, `endDateTime`).
pub fn certificate_validity(
    cert_der: &[u8],
) -> Result<(DateTime<Utc>, DateTime<Utc>), CertificateError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CertificateError::Invalid(e.to_string()))?;
    let at = |t: x509_parser::time::ASN1Time| {
        DateTime::<Utc>::from_timestamp(t.timestamp(), 0)
            .ok_or_else(|| CertificateError::Invalid("a validity date is out of range".into()))
    };
    let validity = cert.validity();
    Ok((at(validity.not_before)?, at(validity.not_after)?))
}

/// The PKCS#1 RSAPublicKey DER inside a certificate.
pub fn rsa_public_key_der(cert_der: &[u8]) -> Result<Vec<u8>, CertificateError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CertificateError::Invalid(e.to_string()))?;
    let spki = cert.public_key();
    // rsaEncryption
    if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
        return Err(CertificateError::NotRsa);
    }
    Ok(spki.subject_public_key.data.to_vec())
}

/// Decodes a thumbprint as clients send it: base64url or standard base64, padded or not.
pub fn decode_thumbprint(value: &str) -> Option<Vec<u8>> {
    let trimmed = value.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
        .or_else(|| STANDARD.decode(value.trim()).ok())
        .or_else(|| URL_SAFE.decode(value.trim()).ok())
        .or_else(|| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(trimmed)
                .ok()
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_and_expire() {
        let now = Utc::now();
        let valid = secret_record("s3cret", None);
        let expired = secret_record("old", Some(now - chrono::Duration::days(1)));
        let secrets = [valid, expired];
        assert_eq!(check_secret(&secrets, "s3cret", now), SecretCheck::Valid);
        assert_eq!(check_secret(&secrets, "old", now), SecretCheck::Expired);
        assert_eq!(check_secret(&secrets, "nope", now), SecretCheck::Wrong);
    }

    #[test]
    fn thumbprints_decode_in_every_alphabet() {
        let bytes = decode_thumbprint("GGUBH52Uh5DidmXTlmAFvaA3xL0=").unwrap();
        assert_eq!(bytes.len(), 20);
        assert_eq!(
            decode_thumbprint("GGUBH52Uh5DidmXTlmAFvaA3xL0").unwrap(),
            bytes
        );
        let s256 = decode_thumbprint("hPMH09zqbw1J2cWIE0SPF1xlzNyHUISKRO1e_olHOX4=").unwrap();
        assert_eq!(s256.len(), 32);
    }
}
