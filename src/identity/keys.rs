//! The issuer's signing keys: RSA 2048, generated once per store and kept as
//! [`SigningKeyRecord`]s, each with a self-signed certificate (published as `x5c`). The key id is
//! the certificate's base64url SHA-1 thumbprint (`kid` = `x5t`), as Entra does.
//!
//! Generating an RSA key takes a noticeable time (tens to hundreds of milliseconds, more in
//! unoptimised builds), so a new store gets its first key from a background thread: start-up
//! stays fast and the first signing or JWKS call waits for the thread. Validation never waits:
//! before the first key exists no token of ours can exist.

use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use sha1::{Digest, Sha1};

use crate::store::model::SigningKeyRecord;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a signing key: {0}")]
    Generate(String),
    #[error("stored signing key {kid} is unusable: {reason}")]
    Invalid { kid: String, reason: String },
    #[error("the active signing key {0} cannot be removed; rotate first")]
    ActiveKey(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One key, ready to sign and to verify.
struct LoadedKey {
    kid: String,
    x5t: String,
    certificate_base64: String,
    /// base64url modulus and exponent (JWK `n`, `e`).
    n: String,
    e: String,
    created: chrono::DateTime<Utc>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

#[derive(Default)]
struct Keys {
    /// Oldest first.
    keys: Vec<Arc<LoadedKey>>,
    active: Option<String>,
}

impl Keys {
    fn active(&self) -> Option<Arc<LoadedKey>> {
        let kid = self.active.as_ref()?;
        self.keys.iter().find(|k| &k.kid == kid).cloned()
    }

    fn insert(&mut self, key: LoadedKey, active: bool) {
        let kid = key.kid.clone();
        self.keys.retain(|k| k.kid != kid);
        self.keys.push(Arc::new(key));
        if active {
            self.active = Some(kid);
        }
    }
}

type Pending = JoinHandle<Result<SigningKeyRecord, KeyError>>;

/// The published signing keys, one of them active. Shared behind `Arc` by every request.
pub struct KeySet {
    /// Unique in the process: what a cache shared by several servers of one process (tests)
    /// tells key sets apart by, whatever kids their stores hold.
    id: u64,
    keys: RwLock<Keys>,
    /// The first key of a new store, still being generated.
    pending: Mutex<Option<Pending>>,
    store: Store,
}

impl KeySet {
    /// Loads the store's keys; a store without keys gets one, generated in the background.
    pub fn load_or_create(store: &Store) -> Result<KeySet, KeyError> {
        let mut records = store.signing_keys()?;
        records.sort_by_key(|r| r.created);
        let mut keys = Keys::default();
        let mut pending = None;
        if records.is_empty() {
            let store = store.clone();
            let handle = std::thread::Builder::new()
                .name("signing-key-generator".into())
                .spawn(move || {
                    let record = generate_record()?;
                    store.put_signing_key(&record)?;
                    Ok(record)
                })
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            pending = Some(handle);
        } else {
            for record in &records {
                keys.insert(load(record)?, record.active);
            }
            if keys.active.is_none() {
                // Keys but none active (e.g. edited store): the newest becomes active.
                let newest = records.last().expect("not empty");
                let promoted = SigningKeyRecord {
                    active: true,
                    ..newest.clone()
                };
                store.put_signing_key(&promoted)?;
                keys.active = Some(promoted.kid);
            }
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(KeySet {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            keys: RwLock::new(keys),
            pending: Mutex::new(pending),
            store: store.clone(),
        })
    }

    /// Waits for the background generation of the first key, if any, and installs the key.
    fn ensure_ready(&self) -> Result<(), KeyError> {
        if self.read().active.is_some() {
            return Ok(());
        }
        // Held while generating, so concurrent first callers wait for one key.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = pending.take() {
            match handle.join() {
                Ok(Ok(record)) => self.write().insert(load(&record)?, true),
                Ok(Err(e)) => tracing::warn!("background signing key generation failed: {e}"),
                Err(_) => tracing::warn!("background signing key generation panicked"),
            }
        }
        if self.read().active.is_none() {
            let record = generate_record()?;
            self.store.put_signing_key(&record)?;
            self.write().insert(load(&record)?, true);
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    fn active(&self) -> Result<Arc<LoadedKey>, KeyError> {
        self.ensure_ready()?;
        self.read()
            .active()
            .ok_or_else(|| KeyError::Generate("no active signing key".into()))
    }

    /// The kid new tokens are signed with (waits for the first key of a new store).
    pub fn active_kid(&self) -> Result<String, KeyError> {
        Ok(self.active()?.kid.clone())
    }

    /// Every published kid, oldest first (does not wait for a key being generated).
    pub fn kids(&self) -> Vec<String> {
        self.read().keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// Makes a new key the active one. Old keys stay published and valid until removed.
    pub fn rotate(&self, store: &Store) -> Result<String, KeyError> {
        self.ensure_ready()?;
        let record = generate_record()?;
        store.put_signing_key(&record)?;
        let kid = record.kid.clone();
        self.write().insert(load(&record)?, true);
        Ok(kid)
    }

    /// Removes a published key: tokens it signed stop validating. The active key cannot be
    /// removed. `Ok(false)` when no such key exists.
    pub fn remove(&self, store: &Store, kid: &str) -> Result<bool, KeyError> {
        self.ensure_ready()?;
        let mut keys = self.write();
        if keys.active.as_deref() == Some(kid) {
            return Err(KeyError::ActiveKey(kid.to_string()));
        }
        let known = keys.keys.iter().any(|k| k.kid == kid);
        let removed = store.delete_signing_key(kid)?;
        keys.keys.retain(|k| k.kid != kid);
        Ok(known || removed)
    }

    /// The JWKS document (`{"keys":[...]}`): every published key with `kty`, `use`, `kid`,
    /// `x5t`, `n`, `e` and `x5c`, as Entra publishes them.
    pub fn jwks(&self) -> serde_json::Value {
        if let Err(e) = self.ensure_ready() {
            tracing::error!("signing keys unavailable: {e}");
        }
        let keys: Vec<serde_json::Value> = self
            .read()
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "RSA",
                    "use": "sig",
                    "kid": k.kid,
                    "x5t": k.x5t,
                    "n": k.n,
                    "e": k.e,
                    "x5c": [k.certificate_base64],
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs `claims` as an RS256 JWT with the active key; the header carries `typ`, `kid` and
    /// `x5t` as Entra's access tokens do.
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let key = self.active()?;
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(key.kid.clone());
        header.x5t = Some(key.x5t.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// This key set's id, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether `kid` is one of the keys.
    pub fn has(&self, kid: &str) -> bool {
        self.read().keys.iter().any(|k| k.kid == kid)
    }

    /// The verification key of a published kid (never waits).
    pub fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        self.read()
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| k.decoding.clone())
    }

    /// When a key was created, by kid.
    pub fn created(&self, kid: &str) -> Option<chrono::DateTime<Utc>> {
        self.read()
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| k.created)
    }
}

/// Generates an RSA 2048 key and its self-signed certificate.
pub fn generate_record() -> Result<SigningKeyRecord, KeyError> {
    let mut rng = rand::thread_rng();
    let private =
        RsaPrivateKey::new(&mut rng, 2048).map_err(|e| KeyError::Generate(e.to_string()))?;
    let pkcs8 = private
        .to_pkcs8_der()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let key_pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "m365-ingestion-emulator token signing",
    );
    let today = Utc::now();
    use chrono::Datelike;
    params.not_before = rcgen::date_time_ymd(today.year(), today.month() as u8, today.day() as u8)
        - std::time::Duration::from_secs(86_400);
    params.not_after = rcgen::date_time_ymd(today.year() + 5, today.month() as u8, 1);
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let der = certificate.der().as_ref().to_vec();
    let x5t = URL_SAFE_NO_PAD.encode(Sha1::digest(&der));
    Ok(SigningKeyRecord {
        kid: x5t.clone(),
        private_pkcs8_base64: STANDARD.encode(pkcs8.as_bytes()),
        certificate_base64: STANDARD.encode(&der),
        x5t,
        created: Utc::now(),
        active: true,
    })
}

fn load(record: &SigningKeyRecord) -> Result<LoadedKey, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        kid: record.kid.clone(),
        reason,
    };
    let pkcs8 = STANDARD
        .decode(&record.private_pkcs8_base64)
        .map_err(|e| invalid(e.to_string()))?;
    let private = RsaPrivateKey::from_pkcs8_der(&pkcs8).map_err(|e| invalid(e.to_string()))?;
    let pkcs1 = private.to_pkcs1_der().map_err(|e| invalid(e.to_string()))?;
    let n = URL_SAFE_NO_PAD.encode(private.n().to_bytes_be());
    let e = URL_SAFE_NO_PAD.encode(private.e().to_bytes_be());
    let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(|e| invalid(e.to_string()))?;
    Ok(LoadedKey {
        kid: record.kid.clone(),
        x5t: record.x5t.clone(),
        certificate_base64: record.certificate_base64.clone(),
        n,
        e,
        created: record.created,
        encoding: EncodingKey::from_rsa_der(pkcs1.as_bytes()),
        decoding,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    #[test]
    fn generates_in_background_and_persists() {
        let (_dir, store) = temp_store();
        let started = std::time::Instant::now();
        let keys = KeySet::load_or_create(&store).unwrap();
        let load_time = started.elapsed();
        let kid = keys.active_kid().unwrap();
        let total = started.elapsed();
        eprintln!("load_or_create returned after {load_time:?}; first key ready after {total:?}");
        assert!(
            load_time < std::time::Duration::from_millis(100),
            "{load_time:?}"
        );
        assert_eq!(store.signing_keys().unwrap().len(), 1);

        // A second start loads the same key, quickly.
        let started = std::time::Instant::now();
        let again = KeySet::load_or_create(&store).unwrap();
        eprintln!("reload took {:?}", started.elapsed());
        assert_eq!(again.active_kid().unwrap(), kid);
    }

    #[test]
    fn jwks_shape_and_kid_is_the_certificate_thumbprint() {
        let (_dir, store) = temp_store();
        let keys = KeySet::load_or_create(&store).unwrap();
        let jwks = keys.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["e"], "AQAB");
        let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256);
        let der = STANDARD.decode(key["x5c"][0].as_str().unwrap()).unwrap();
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha1::digest(&der));
        assert_eq!(key["kid"], thumbprint.as_str());
        assert_eq!(key["x5t"], thumbprint.as_str());
        // The certificate carries the same public key.
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let spki = crate::identity::credentials::rsa_public_key_der(&der).unwrap();
        assert!(!spki.is_empty());
        assert!(cert
            .subject()
            .to_string()
            .contains("m365-ingestion-emulator"));
    }

    #[test]
    fn rotation_keeps_old_keys_and_remove_refuses_the_active_one() {
        let (_dir, store) = temp_store();
        let keys = KeySet::load_or_create(&store).unwrap();
        let first = keys.active_kid().unwrap();
        let token_old = keys.sign(&serde_json::json!({"a": 1})).unwrap();
        let second = keys.rotate(&store).unwrap();
        assert_ne!(first, second);
        assert_eq!(keys.active_kid().unwrap(), second);
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 2);
        // Old tokens still verify with the old key.
        let header = jsonwebtoken::decode_header(&token_old).unwrap();
        assert_eq!(header.kid.as_deref(), Some(first.as_str()));
        assert!(keys.decoding_key(&first).is_some());
        // Persisted: a restart sees both, the second active.
        let reloaded = KeySet::load_or_create(&store).unwrap();
        assert_eq!(reloaded.active_kid().unwrap(), second);
        assert_eq!(reloaded.kids().len(), 2);

        assert!(matches!(
            keys.remove(&store, &second),
            Err(KeyError::ActiveKey(_))
        ));
        assert!(keys.remove(&store, &first).unwrap());
        assert!(!keys.remove(&store, &first).unwrap());
        assert!(keys.decoding_key(&first).is_none());
        assert_eq!(store.signing_keys().unwrap().len(), 1);
    }

    #[test]
    fn signed_tokens_have_entra_header() {
        let (_dir, store) = temp_store();
        let keys = KeySet::load_or_create(&store).unwrap();
        let token = keys.sign(&serde_json::json!({"x": "y"})).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid, header.x5t);
        let key = keys.decoding_key(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["x"], "y");
    }

    #[test]
    fn usable_from_many_threads() {
        let (_dir, store) = temp_store();
        let keys = Arc::new(KeySet::load_or_create(&store).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let keys = keys.clone();
                std::thread::spawn(move || keys.sign(&serde_json::json!({})).unwrap())
            })
            .collect();
        let kids: Vec<_> = handles
            .into_iter()
            .map(|h| jsonwebtoken::decode_header(&h.join().unwrap()).unwrap().kid)
            .collect();
        assert!(kids.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(store.signing_keys().unwrap().len(), 1);
    }
}
