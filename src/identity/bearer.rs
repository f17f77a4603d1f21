//! Access token validation on the ingestion endpoint (`Authorization: Bearer <jwt>`), and the
//! optional legacy HTTP Basic of the third-party data mailbox.
//!
//! Order of the checks: algorithm (RS256 only, refused before any key lookup), key id (ours or a
//! trusted external issuer's JWKS file), signature, `exp`/`nbf` (with the configured skew; done
//! here from the JSON so floats and huge skews are safe), `iss`/`tid` and the tenant, `aud`,
//! application id, service principal (looked up on every request unless the revocation mode is
//! `token-lifetime`), role `full_access_as_app`.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::{RevocationMode, TrustedIssuer};
use crate::domain::{AppId, Principal, TenantId};
use crate::identity::keys::KeySet;

/// Exchange Online's application id, also an accepted audience.
pub const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
/// The emulator's own resource, accepted as an alias of the ingestion service.
pub const EMULATOR_RESOURCE: &str = "api://m365-ingestion-emulator";
/// The role an app-only token must carry.
pub const REQUIRED_ROLE: &str = "full_access_as_app";
/// Resource identifiers (and `aud` values) of the ingestion service, without trailing slash.
pub const ACCEPTED_AUDIENCES: &[&str] = &[
    "https://outlook.office365.com",
    "https://outlook.office.com",
    EXCHANGE_APP_ID,
    EMULATOR_RESOURCE,
];

/// Whether `aud` (or a requested resource) names the ingestion service: case-insensitive, with
/// or without a trailing slash.
pub fn is_accepted_audience(aud: &str) -> bool {
    let aud = aud.trim();
    let aud = aud.strip_suffix('/').unwrap_or(aud);
    ACCEPTED_AUDIENCES
        .iter()
        .any(|a| a.eq_ignore_ascii_case(aud))
}

/// Why a request was not authenticated. Rendered as 401 with [`AuthError::www_authenticate`]
/// and [`AuthError::diagnostics`] (`x-ms-diagnostics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization header")]
    Missing,
    #[error("the Authorization scheme is not supported")]
    UnsupportedScheme,
    #[error("the token cannot be parsed")]
    Unparseable,
    #[error("the token's signing algorithm is not accepted (RS256 only)")]
    Algorithm,
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not yet valid")]
    NotYetValid,
    #[error("the token's audience is not the ingestion service")]
    WrongAudience,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's tenant (tid) does not match its issuer")]
    IssuerTenantMismatch,
    #[error("the token's tenant is unknown")]
    UnknownTenant,
    #[error("the token has no application id")]
    NoAppId,
    #[error("the application is not consented in the tenant")]
    NotConsented,
    #[error("the application's service principal is disabled")]
    Disabled,
    #[error("the token lacks the role full_access_as_app")]
    MissingRole,
    #[error("Basic authentication is not enabled")]
    BasicNotAllowed,
    #[error("the Basic credentials are wrong")]
    LegacyBadCredentials,
}

const CHALLENGE: &str = "Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\", \
     trusted_issuers=\"00000001-0000-0000-c000-000000000000@*\", \
     token_types=\"app_asserted_user_v1 service_asserted_app_v1\", \
     authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\"";

impl AuthError {
    /// Exchange's `WWW-Authenticate` challenge; `error="invalid_token"` only when a token was
    /// sent. Wrong legacy credentials get a Basic challenge.
    pub fn www_authenticate(&self) -> String {
        match self {
            AuthError::Missing | AuthError::UnsupportedScheme | AuthError::BasicNotAllowed => {
                CHALLENGE.to_string()
            }
            AuthError::LegacyBadCredentials => {
                format!("Basic realm=\"outlook.office365.com\", {CHALLENGE}")
            }
            _ => format!("{CHALLENGE}, error=\"invalid_token\""),
        }
    }

    /// (code, reason, error_category) of `x-ms-diagnostics`. Codes 2000000, 2000001, 2000003,
    /// 2000004 and 2000008 and their reasons are Exchange's; the others are the emulator's.
    pub fn diagnostic_parts(&self) -> (u32, &'static str, &'static str) {
        match self {
            AuthError::BadSignature => (2000000, "The token has an invalid signature.", "invalid_signature"),
            AuthError::Unparseable => (
                2000001,
                "OAuth token submitted with the request cannot be parsed.",
                "invalid_token",
            ),
            AuthError::WrongAudience => (2000003, "The audience claim value is invalid 'aud'.", "invalid_resource"),
            AuthError::UnknownTenant => (
                2000004,
                "The tenant for tenant guid in the token does not exist.",
                "invalid_tenant",
            ),
            AuthError::MissingRole => (
                2000008,
                "The token should have valid permissions or linked account associated with partner application '00000002-0000-0ff1-ce00-000000000000'.",
                "invalid_grant",
            ),
            AuthError::Missing => (2000010, "No bearer token was presented in the Authorization header.", "invalid_request"),
            AuthError::UnsupportedScheme => (
                2000011,
                "The Authorization scheme is not supported; use Bearer.",
                "invalid_request",
            ),
            AuthError::Algorithm => (
                2000012,
                "The token is signed with an algorithm that is not accepted; RS256 is required.",
                "invalid_token",
            ),
            AuthError::UnknownKey => (
                2000013,
                "The token is signed with a key that no trusted issuer publishes.",
                "invalid_signature",
            ),
            AuthError::Expired => (2000014, "The token has expired.", "invalid_token"),
            AuthError::NotYetValid => (2000015, "The token is not yet valid.", "invalid_token"),
            AuthError::WrongIssuer => (2000016, "The issuer claim value is invalid 'iss'.", "invalid_token"),
            AuthError::IssuerTenantMismatch => (
                2000017,
                "The tenant id claim 'tid' does not match the issuer.",
                "invalid_tenant",
            ),
            AuthError::NoAppId => (
                2000018,
                "The token has no application id claim ('appid' or 'azp').",
                "invalid_token",
            ),
            AuthError::NotConsented => (
                2000019,
                "The application has no service principal in the tenant: consent was never granted or was revoked.",
                "invalid_grant",
            ),
            AuthError::Disabled => (
                2000021,
                "The application's service principal is disabled in the tenant.",
                "invalid_grant",
            ),
            AuthError::BasicNotAllowed => (
                2000022,
                "Basic authentication is disabled for this service; use OAuth.",
                "invalid_request",
            ),
            AuthError::LegacyBadCredentials => (2000023, "The user name or password is incorrect.", "invalid_user"),
        }
    }

    /// The `x-ms-diagnostics` header value, e.g.
    /// `2000014;reason="The token has expired.";error_category="invalid_token"`.
    pub fn diagnostics(&self) -> String {
        let (code, reason, category) = self.diagnostic_parts();
        format!("{code};reason=\"{reason}\";error_category=\"{category}\"")
    }
}

/// Authenticates a request of the ingestion endpoint.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, AuthError> {
    authenticate_at(state, headers, Utc::now())
}

/// [`authenticate`] at a given time.
pub fn authenticate_at(
    state: &AppState,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<Principal, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Unparseable)?.trim();
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        validate_token(state, rest.trim(), now)
    } else if scheme.eq_ignore_ascii_case("basic") {
        legacy_basic(state, rest.trim())
    } else {
        Err(AuthError::UnsupportedScheme)
    }
}

fn decode_segment(segment: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Where a token's key came from.
enum KeySource<'a> {
    Ours,
    External(&'a TrustedIssuer),
}

/// Validates a bearer token (the part after `Bearer `).
pub fn validate_token(
    state: &AppState,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Principal, AuthError> {
    let (claims, source) = match remembered_claims(token, &state.keys) {
        // Verified before: these very bytes, so the header that passed below (RS256, a key
        // of ours, still in the set) and the same claims.
        Some(claims) => (claims, KeySource::Ours),
        None => verify(state, token)?,
    };
    if !claims.is_object() {
        return Err(AuthError::Unparseable);
    }
    checked_principal(state, &claims, source, now)
}

/// The header checks and the signature of a token not verified before (see [`verified_claims`]).
fn verify<'a>(state: &'a AppState, token: &str) -> Result<(Arc<Value>, KeySource<'a>), AuthError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(AuthError::Unparseable);
    }
    let header = decode_segment(parts[0]).ok_or(AuthError::Unparseable)?;
    if !header.is_object() {
        return Err(AuthError::Unparseable);
    }
    // Pinned before any key lookup: `none`, HS256 (keyed with our public key) and the rest.
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(AuthError::Algorithm);
    }
    let kid = header
        .get("kid")
        .or_else(|| header.get("x5t"))
        .and_then(Value::as_str)
        .ok_or(AuthError::UnknownKey)?;
    let (key, source) = match state.keys.decoding_key(kid) {
        Some(key) => (key, KeySource::Ours),
        None => external_key(&state.config.trusted_issuers, kid).ok_or(AuthError::UnknownKey)?,
    };

    let ours = matches!(source, KeySource::Ours).then_some(&*state.keys);
    let claims = verified_claims(token, kid, &key, ours)?;
    Ok((claims, source))
}

/// Every check of a verified token's claims, run on every request.
fn checked_principal(
    state: &AppState,
    claims: &Value,
    source: KeySource<'_>,
    now: DateTime<Utc>,
) -> Result<Principal, AuthError> {
    // Lifetime, with skew; floats and any skew are fine in f64.
    let now_secs = now.timestamp_millis() as f64 / 1000.0;
    let skew = state.config.clock_skew_secs as f64;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(AuthError::Unparseable)?;
    if now_secs > exp + skew {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
        if now_secs + skew < nbf {
            return Err(AuthError::NotYetValid);
        }
    }

    // Issuer and tenant.
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(AuthError::WrongIssuer)?;
    let tid = claims
        .get("tid")
        .and_then(Value::as_str)
        .and_then(|t| Uuid::parse_str(t).ok());
    let tenant = match source {
        KeySource::Ours => {
            let from_iss = issuer_tenant(iss).ok_or(AuthError::WrongIssuer)?;
            if tid != Some(from_iss) {
                return Err(AuthError::IssuerTenantMismatch);
            }
            from_iss
        }
        KeySource::External(trusted) => {
            let tid = tid.ok_or(AuthError::IssuerTenantMismatch)?;
            // The issuer as configured, `{tenantid}` standing for the token's tenant.
            let names_issuer = |tenant: Uuid| {
                trusted
                    .issuer
                    .replace("{tenantid}", &tenant.to_string())
                    .eq_ignore_ascii_case(iss.trim())
            };
            match issuer_tenant(iss) {
                Some(from_iss) if from_iss != tid => {
                    return Err(if names_issuer(from_iss) {
                        AuthError::IssuerTenantMismatch
                    } else {
                        AuthError::WrongIssuer
                    })
                }
                _ if !names_issuer(tid) => return Err(AuthError::WrongIssuer),
                _ => {}
            }
            tid
        }
    };
    let tenant = TenantId(tenant);
    match state.store.has_tenant(tenant) {
        Ok(true) => {}
        Ok(false) => return Err(AuthError::UnknownTenant),
        Err(e) => {
            tracing::error!("store error while authenticating: {e}");
            return Err(AuthError::UnknownTenant);
        }
    }

    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => is_accepted_audience(aud),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(is_accepted_audience),
        _ => false,
    };
    if !audience_ok {
        return Err(AuthError::WrongAudience);
    }

    let app_id = claims
        .get("appid")
        .or_else(|| claims.get("azp"))
        .and_then(Value::as_str)
        .and_then(|a| Uuid::parse_str(a).ok())
        .ok_or(AuthError::NoAppId)?;
    let roles: Vec<String> = claims
        .get("roles")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();

    if state.config.revocation == RevocationMode::Immediate {
        let sp = match state.store.service_principal(tenant, app_id) {
            Ok(Some(sp)) => sp,
            Ok(None) => return Err(AuthError::NotConsented),
            Err(e) => {
                tracing::error!("store error while authenticating: {e}");
                return Err(AuthError::NotConsented);
            }
        };
        if !sp.account_enabled {
            return Err(AuthError::Disabled);
        }
        if !sp.app_roles.iter().any(|r| r == REQUIRED_ROLE) {
            return Err(AuthError::MissingRole);
        }
    }
    if !roles.iter().any(|r| r == REQUIRED_ROLE) {
        return Err(AuthError::MissingRole);
    }
    Ok(Principal {
        tenant,
        app_id: AppId(app_id),
        roles,
    })
}

/// Tokens whose signature was verified, with their claims, so a client reusing its token (all
/// of them do, for its lifetime) costs one RSA verification, not one per request. Only the
/// signature is cached: lifetime, issuer, tenant, audience, roles and the service principal are
/// checked on every request. An entry names the key that verified it (key set and kid), and is
/// used only by that key set while the key is still in it (a removed key's tokens fail).
///
/// Entries are found by a keyed hash of the token's last bytes (its signature's), then the
/// presented token is compared with the remembered one whole, in constant time: a token that
/// shares the tail (a genuine signature under other claims) is verified like a new one. This
/// costs ~0.1 µs a request where a SHA-256 of the whole token (~1.5 kB) cost ~0.75 µs.
struct VerifiedTokens {
    hasher: RandomState,
    entries: HashMap<u64, Verified>,
}

#[derive(Clone)]
struct Verified {
    /// The whole token, compared in constant time with the one presented.
    token: Arc<str>,
    key_set: u64,
    kid: Arc<str>,
    claims: Arc<Value>,
}

/// Most tokens remembered; when full, a new one takes the place of an arbitrary one (the map's
/// order is random), so a flood of new tokens does not wipe every client's at once.
const VERIFIED_TOKENS: usize = 4096;

/// Bytes at the end of a token that find its entry: inside an RS256 signature (342 characters),
/// so as unpredictable as it, for a token of ours.
const TOKEN_TAIL: usize = 64;

impl VerifiedTokens {
    fn slot(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        self.hasher
            .hash_one(&bytes[bytes.len().saturating_sub(TOKEN_TAIL)..])
    }
}

fn verified_tokens() -> &'static Mutex<VerifiedTokens> {
    static CACHE: OnceLock<Mutex<VerifiedTokens>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(VerifiedTokens {
            hasher: RandomState::new(),
            entries: HashMap::new(),
        })
    })
}

/// The claims of `token`, if these very bytes were verified before by a key that is still in
/// `keys`.
fn remembered_claims(token: &str, keys: &KeySet) -> Option<Arc<Value>> {
    let verified = {
        let cache = verified_tokens()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let verified = cache.entries.get(&cache.slot(token))?;
        if !same_secret(verified.token.as_bytes(), token.as_bytes()) {
            return None;
        }
        verified.clone()
    };
    // (The key set's lock is taken after the cache's is released.)
    (verified.key_set == keys.id() && keys.has(&verified.kid)).then_some(verified.claims)
}

/// Whether `a` and `b` are the same bytes, in a time that depends on their lengths only (eight
/// bytes a step: a token takes ~25 ns, where `subtle`'s byte loop takes ~1.5 µs).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let mut differ = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        differ |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        differ |= u64::from(x ^ y);
    }
    bool::from(differ.ct_eq(&0))
}

/// The claims of `token` if its signature verifies with `key` (RS256 only).
fn verified_claims(
    token: &str,
    kid: &str,
    key: &DecodingKey,
    ours: Option<&KeySet>,
) -> Result<Arc<Value>, AuthError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<Value>(token, key, &validation) {
        Ok(data) => Arc::new(data.claims),
        Err(e) => {
            return Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
                _ => AuthError::Unparseable,
            })
        }
    };
    if let Some(keys) = ours {
        let verified = Verified {
            token: Arc::from(token),
            key_set: keys.id(),
            kid: Arc::from(kid),
            claims: claims.clone(),
        };
        let mut cache = verified_tokens()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = cache.slot(token);
        if cache.entries.len() >= VERIFIED_TOKENS && !cache.entries.contains_key(&slot) {
            if let Some(evicted) = cache.entries.keys().next().copied() {
                cache.entries.remove(&evicted);
            }
        }
        cache.entries.insert(slot, verified);
    }
    Ok(claims)
}

/// The tenant of `https://sts.windows.net/{tid}/` or `{anything}/{tid}/v2.0`.
fn issuer_tenant(iss: &str) -> Option<Uuid> {
    let trimmed = iss.trim();
    if let Some(rest) = trimmed.strip_prefix("https://sts.windows.net/") {
        let tid = rest.strip_suffix('/').unwrap_or(rest);
        return Uuid::parse_str(tid).ok();
    }
    let without = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let before = without.strip_suffix("/v2.0")?;
    let segment = before.rsplit('/').next()?;
    Uuid::parse_str(segment).ok()
}

/// Per JWKS file: its modification time when read (`None`: unreadable), when it was read, and
/// its keys.
type JwksCache = HashMap<PathBuf, (Option<SystemTime>, Instant, Vec<(String, DecodingKey)>)>;

/// How long an unreadable JWKS file is not read again: tokens with an unknown `kid` arrive at
/// request rate, and each would re-read it and log a warning.
const UNREADABLE_JWKS_RETRY: Duration = Duration::from_secs(5);

fn jwks_cache() -> &'static Mutex<JwksCache> {
    static CACHE: OnceLock<Mutex<JwksCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The key `kid` from the JWKS files of the trusted external issuers (cached, reloaded when the
/// file changes).
fn external_key<'a>(
    issuers: &'a [TrustedIssuer],
    kid: &str,
) -> Option<(DecodingKey, KeySource<'a>)> {
    for issuer in issuers {
        let modified = std::fs::metadata(&issuer.jwks_file)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = jwks_cache().lock().unwrap_or_else(|e| e.into_inner());
        let fresh = match cache.get(&issuer.jwks_file) {
            Some((read, _, _)) if modified.is_some() => *read == modified,
            Some((None, at, _)) => at.elapsed() < UNREADABLE_JWKS_RETRY,
            _ => false,
        };
        if !fresh {
            let keys = load_jwks_file(&issuer.jwks_file);
            cache.insert(issuer.jwks_file.clone(), (modified, Instant::now(), keys));
        }
        if let Some((_, _, keys)) = cache.get(&issuer.jwks_file) {
            if let Some((_, key)) = keys.iter().find(|(k, _)| k == kid) {
                return Some((key.clone(), KeySource::External(issuer)));
            }
        }
    }
    None
}

fn load_jwks_file(path: &std::path::Path) -> Vec<(String, DecodingKey)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!("cannot read trusted issuer JWKS {}: {e}", path.display());
            return Vec::new();
        }
    };
    let json: Value = match serde_json::from_str(&text) {
        Ok(json) => json,
        Err(e) => {
            tracing::warn!("invalid trusted issuer JWKS {}: {e}", path.display());
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for key in json
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if key.get("kty").and_then(Value::as_str) != Some("RSA")
            || key
                .get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let (Some(n), Some(e)) = (
            key.get("n").and_then(Value::as_str),
            key.get("e").and_then(Value::as_str),
        ) else {
            continue;
        };
        let Ok(decoding) = DecodingKey::from_rsa_components(n, e) else {
            continue;
        };
        for id in ["kid", "x5t"] {
            if let Some(id) = key.get(id).and_then(Value::as_str) {
                out.push((id.to_string(), decoding.clone()));
            }
        }
    }
    out
}

/// Legacy HTTP Basic: the third-party data mailbox's UPN and its configured password.
fn legacy_basic(state: &AppState, credentials: &str) -> Result<Principal, AuthError> {
    if !state.config.legacy_basic_auth {
        return Err(AuthError::BasicNotAllowed);
    }
    let decoded = STANDARD
        .decode(credentials)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(AuthError::LegacyBadCredentials)?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or(AuthError::LegacyBadCredentials)?;
    let user = user.trim();
    let expected = state
        .config
        .legacy_passwords
        .iter()
        .find(|(upn, _)| upn.eq_ignore_ascii_case(user))
        .map(|(_, password)| password.as_str());
    // Compare digests, so neither the length nor the content leaks through timing; a missing
    // user costs the same comparison.
    let presented = Sha256::digest(password.as_bytes());
    let wanted = Sha256::digest(expected.unwrap_or("\u{0}no-such-user").as_bytes());
    let password_ok = bool::from(presented.ct_eq(&wanted)) && expected.is_some();
    let tenant = state.store.tenants().ok().into_iter().flatten().find(|t| {
        t.third_party_mailbox
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(user))
    });
    match (password_ok, tenant) {
        (true, Some(tenant)) => Ok(Principal {
            tenant: TenantId(tenant.id),
            app_id: AppId(Uuid::nil()),
            roles: vec!["legacy_basic_auth".to_string()],
        }),
        _ => Err(AuthError::LegacyBadCredentials),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Config, ServeArgs};
    use crate::identity::assertion::tests::test_cert;
    use jsonwebtoken::{EncodingKey, Header};

    pub(crate) const TENANT: &str = "11111111-1111-1111-1111-111111111111";
    pub(crate) const APP: &str = "22222222-2222-2222-2222-222222222222";

    pub(crate) const ADMIN_KEY: &str = "test-admin-key";

    /// A state over a new store seeded with the default fixture (contoso), admin key
    /// [`ADMIN_KEY`], HTTPS.
    pub(crate) fn test_state_with(
        configure: impl FnOnce(&mut Config),
    ) -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::resolve(ServeArgs {
            admin_key: Some(ADMIN_KEY.into()),
            ..ServeArgs::default()
        })
        .unwrap();
        configure(&mut config);
        let state = AppState::open(config, dir.path()).unwrap();
        // The index is built in the background at first open: done before the test can end,
        // so nothing writes into the directory while it is removed.
        state.search.wait_ready().unwrap();
        (dir, state)
    }

    pub(crate) fn test_state() -> (tempfile::TempDir, AppState) {
        test_state_with(|_| {})
    }

    pub(crate) fn good_claims(now: i64) -> Value {
        serde_json::json!({
            "aud": "https://outlook.office365.com",
            "iss": format!("https://sts.windows.net/{TENANT}/"),
            "iat": now, "nbf": now, "exp": now + 3599,
            "appid": APP, "appidacr": "1",
            "roles": ["full_access_as_app"],
            "tid": TENANT, "ver": "1.0",
        })
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    fn check(state: &AppState, claims: &Value) -> Result<Principal, AuthError> {
        let token = state.keys.sign(claims).unwrap();
        authenticate(state, &bearer(&token))
    }

    fn forge(header: Value, claims: &Value, signature: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            signature
        )
    }

    #[test]
    fn accepts_a_good_token() {
        let (_dir, state) = test_state();
        let now = Utc::now().timestamp();
        let principal = check(&state, &good_claims(now)).unwrap();
        assert_eq!(principal.tenant.0.to_string(), TENANT);
        assert_eq!(principal.app_id.0.to_string(), APP);
        assert_eq!(principal.roles, vec!["full_access_as_app".to_string()]);
        // Every accepted audience, with or without slash, and the v2 issuer form with azp.
        for aud in [
            "https://outlook.office.com/",
            EXCHANGE_APP_ID,
            "api://m365-ingestion-emulator",
            "HTTPS://OUTLOOK.OFFICE365.COM/",
        ] {
            let mut claims = good_claims(now);
            claims["aud"] = aud.into();
            check(&state, &claims).unwrap_or_else(|e| panic!("{aud}: {e}"));
        }
        let mut v2 = good_claims(now);
        v2["iss"] = format!("https://127.0.0.1:8443/{TENANT}/v2.0").into();
        v2.as_object_mut().unwrap().remove("appid");
        v2["azp"] = APP.into();
        check(&state, &v2).unwrap();
    }

    #[test]
    fn each_reason_is_reported() {
        let (_dir, state) = test_state();
        let now = Utc::now().timestamp();
        let with = |key: &str, value: Value| {
            let mut c = good_claims(now);
            if value.is_null() {
                c.as_object_mut().unwrap().remove(key);
            } else {
                c[key] = value;
            }
            c
        };
        let cases: Vec<(Value, AuthError)> = vec![
            (with("exp", (now - 3600).into()), AuthError::Expired),
            (with("nbf", (now + 3600).into()), AuthError::NotYetValid),
            (
                with("aud", "https://graph.microsoft.com".into()),
                AuthError::WrongAudience,
            ),
            (
                with("iss", "https://evil.example/issuer".into()),
                AuthError::WrongIssuer,
            ),
            (
                with("tid", "55555555-5555-5555-5555-555555555555".into()),
                AuthError::IssuerTenantMismatch,
            ),
            (
                {
                    let other = "55555555-5555-5555-5555-555555555555";
                    let mut c = with("tid", other.into());
                    c["iss"] = format!("https://sts.windows.net/{other}/").into();
                    c
                },
                AuthError::UnknownTenant,
            ),
            (with("appid", Value::Null), AuthError::NoAppId),
            (
                with("roles", serde_json::json!(["Mail.Read"])),
                AuthError::MissingRole,
            ),
            (
                with("appid", "33333333-3333-3333-3333-333333333333".into()),
                AuthError::NotConsented,
            ),
            (
                with("appid", "44444444-4444-4444-4444-444444444444".into()),
                AuthError::Disabled,
            ),
        ];
        for (claims, expected) in cases {
            assert_eq!(check(&state, &claims), Err(expected), "{claims}");
        }
        // Within the skew: fine.
        check(&state, &with("exp", (now - 200).into())).unwrap();
    }

    #[test]
    fn forged_tokens_are_refused() {
        let (_dir, state) = test_state();
        let now = Utc::now().timestamp();
        let claims = good_claims(now);
        let kid = state.keys.active_kid().unwrap();

        // alg none.
        let none = forge(
            serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid}),
            &claims,
            "",
        );
        assert_eq!(
            authenticate(&state, &bearer(&none)),
            Err(AuthError::Algorithm)
        );

        // HS256 keyed with our public key (PEM of the published certificate).
        let jwks = state.keys.jwks();
        let cert = &jwks["keys"][0]["x5c"][0];
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            cert.as_str().unwrap()
        );
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let hs = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(pem.as_bytes()))
            .unwrap();
        assert_eq!(
            authenticate(&state, &bearer(&hs)),
            Err(AuthError::Algorithm)
        );

        // Another RSA key claiming our kid.
        let other = test_cert("attacker");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.clone());
        let rs = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&other.pkcs1))
            .unwrap();
        assert_eq!(
            authenticate(&state, &bearer(&rs)),
            Err(AuthError::BadSignature)
        );

        // Unknown kid.
        header.kid = Some("unknown-kid".into());
        let unknown =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&other.pkcs1))
                .unwrap();
        assert_eq!(
            authenticate(&state, &bearer(&unknown)),
            Err(AuthError::UnknownKey)
        );

        // Garbage and missing.
        for garbage in ["garbage", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9"] {
            assert_eq!(
                authenticate(&state, &bearer(garbage)),
                Err(AuthError::Unparseable),
                "{garbage}"
            );
        }
        assert_eq!(
            authenticate(&state, &HeaderMap::new()),
            Err(AuthError::Missing)
        );
        let mut negotiate = HeaderMap::new();
        negotiate.insert(
            http::header::AUTHORIZATION,
            "Negotiate abc".parse().unwrap(),
        );
        assert_eq!(
            authenticate(&state, &negotiate),
            Err(AuthError::UnsupportedScheme)
        );

        // Tampered claims with a genuine signature.
        let genuine = state.keys.sign(&claims).unwrap();
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let mut more = claims.clone();
        more["tid"] = "55555555-5555-5555-5555-555555555555".into();
        let tampered_claims = URL_SAFE_NO_PAD.encode(more.to_string());
        parts[1] = &tampered_claims;
        assert_eq!(
            authenticate(&state, &bearer(&parts.join("."))),
            Err(AuthError::BadSignature)
        );
    }

    /// A remembered token is found by its signature's last bytes but taken on trust only when
    /// the presented token is the same whole: the genuine signature under other claims, or
    /// under another header, is verified (and refused) even while the genuine token is
    /// remembered, and does not displace it.
    #[test]
    fn a_remembered_signature_under_other_claims_is_refused() {
        let (_dir, state) = test_state();
        let claims = good_claims(Utc::now().timestamp());
        let genuine = state.keys.sign(&claims).unwrap();
        let principal = authenticate(&state, &bearer(&genuine)).unwrap();
        let parts: Vec<&str> = genuine.split('.').collect();
        let mut other = claims.clone();
        other["roles"] = serde_json::json!(["full_access_as_app", "Mail.ReadWrite"]);
        other["tid"] = "55555555-5555-5555-5555-555555555555".into();
        let other_claims = URL_SAFE_NO_PAD.encode(other.to_string());
        let other_header = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": state.keys.active_kid().unwrap(), "x": 1})
                .to_string(),
        );
        for tampered in [
            [parts[0], &other_claims, parts[2]].join("."),
            [&other_header, parts[1], parts[2]].join("."),
            // One character of the payload changed: same length, same tail.
            {
                let mut bytes = genuine.clone().into_bytes();
                let at = parts[0].len() + 5;
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                String::from_utf8(bytes).unwrap()
            },
        ] {
            assert!(tampered.len() >= TOKEN_TAIL);
            assert_eq!(
                &tampered.as_bytes()[tampered.len() - TOKEN_TAIL..],
                &genuine.as_bytes()[genuine.len() - TOKEN_TAIL..]
            );
            let result = authenticate(&state, &bearer(&tampered));
            assert!(
                matches!(
                    result,
                    Err(AuthError::BadSignature | AuthError::Unparseable)
                ),
                "{tampered}: {result:?}"
            );
        }
        assert_eq!(authenticate(&state, &bearer(&genuine)).unwrap(), principal);
    }

    #[test]
    fn secrets_are_the_same_only_when_every_byte_is() {
        let a: Vec<u8> = (0..1461u32).map(|i| (i % 251) as u8).collect();
        assert!(same_secret(&a, &a.clone()));
        assert!(same_secret(b"", b""));
        assert!(!same_secret(&a, &a[..1460]));
        for at in [0, 7, 8, 700, 1455, 1456, 1460] {
            let mut b = a.clone();
            b[at] ^= 0x80;
            assert!(!same_secret(&a, &b), "a difference at {at}");
        }
    }

    #[test]
    fn revocation_modes() {
        let now = Utc::now().timestamp();
        for (mode, expect_ok) in [
            (RevocationMode::Immediate, false),
            (RevocationMode::TokenLifetime, true),
        ] {
            let (_dir, state) = test_state_with(|c| c.revocation = mode);
            let token = state.keys.sign(&good_claims(now)).unwrap();
            authenticate(&state, &bearer(&token)).unwrap();
            let tenant = TenantId(Uuid::parse_str(TENANT).unwrap());
            let app = Uuid::parse_str(APP).unwrap();
            let mut sp =
                Arc::unwrap_or_clone(state.store.service_principal(tenant, app).unwrap().unwrap());
            sp.account_enabled = false;
            state.store.put_service_principal(&sp).unwrap();
            let result = authenticate(&state, &bearer(&token));
            assert_eq!(result.is_ok(), expect_ok, "{mode:?} disabled: {result:?}");
            if !expect_ok {
                assert_eq!(result, Err(AuthError::Disabled));
            }
            state.store.delete_service_principal(tenant, app).unwrap();
            let result = authenticate(&state, &bearer(&token));
            assert_eq!(result.is_ok(), expect_ok, "{mode:?} deleted: {result:?}");
        }
    }

    /// A token remembered as verified still has its lifetime checked on every request, and
    /// another key set (another server of the process) does not take it on trust.
    #[test]
    fn a_remembered_token_is_checked_again_on_every_request() {
        let (_dir, state) = test_state();
        let now = Utc::now();
        let token = state.keys.sign(&good_claims(now.timestamp())).unwrap();
        authenticate_at(&state, &bearer(&token), now).unwrap();
        assert_eq!(
            authenticate_at(&state, &bearer(&token), now + chrono::Duration::hours(3)),
            Err(AuthError::Expired)
        );
        assert_eq!(
            authenticate_at(&state, &bearer(&token), now - chrono::Duration::hours(3)),
            Err(AuthError::NotYetValid)
        );
        authenticate_at(&state, &bearer(&token), now).unwrap();
        // Another server whose store has another key under the same kid.
        let kid = state.keys.active_kid().unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        {
            let store = crate::store::Store::open(&other_dir.path().join("store")).unwrap();
            let mut record = crate::identity::keys::generate_record().unwrap();
            record.kid = kid.clone();
            record.active = true;
            store.put_signing_key(&record).unwrap();
        }
        let config = Config::resolve(ServeArgs {
            admin_key: Some(ADMIN_KEY.into()),
            ..ServeArgs::default()
        })
        .unwrap();
        let other = AppState::open(config, other_dir.path()).unwrap();
        other.search.wait_ready().unwrap();
        assert_eq!(other.keys.active_kid().unwrap(), kid);
        assert_eq!(
            authenticate_at(&other, &bearer(&token), now),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn tokens_signed_by_rotated_out_keys_still_validate_until_removed() {
        let (_dir, state) = test_state();
        let token = state
            .keys
            .sign(&good_claims(Utc::now().timestamp()))
            .unwrap();
        let old = state.keys.active_kid().unwrap();
        state.keys.rotate(&state.store).unwrap();
        authenticate(&state, &bearer(&token)).unwrap();
        state.keys.remove(&state.store, &old).unwrap();
        assert_eq!(
            authenticate(&state, &bearer(&token)),
            Err(AuthError::UnknownKey)
        );
    }

    #[test]
    fn trusted_external_issuer() {
        let other = test_cert("external-issuer");
        let dir = tempfile::tempdir().unwrap();
        let jwks_path = dir.path().join("jwks.json");
        let public = {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::from_pkcs1_der(&other.pkcs1).unwrap();
            (
                URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            )
        };
        std::fs::write(
            &jwks_path,
            serde_json::json!({"keys": [{"kty": "RSA", "kid": "ext-1", "n": public.0, "e": public.1}]}).to_string(),
        )
        .unwrap();
        let (_d, state) = test_state_with(|c| {
            c.trusted_issuers = vec![TrustedIssuer {
                issuer: "https://sts.windows.net/{tenantid}/".into(),
                jwks_file: jwks_path.clone(),
            }]
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("ext-1".into());
        let token = jsonwebtoken::encode(
            &header,
            &good_claims(Utc::now().timestamp()),
            &EncodingKey::from_rsa_der(&other.pkcs1),
        )
        .unwrap();
        authenticate(&state, &bearer(&token)).unwrap();
    }

    #[test]
    fn legacy_basic_auth() {
        let basic = |user: &str, password: &str| {
            let mut headers = HeaderMap::new();
            let value = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        let (_dir, off) = test_state();
        assert_eq!(
            authenticate(&off, &basic("thirdpartydata@contoso.com", "pw")),
            Err(AuthError::BasicNotAllowed)
        );
        let (_dir2, on) = test_state_with(|c| {
            c.legacy_basic_auth = true;
            c.legacy_passwords
                .insert("thirdpartydata@contoso.com".into(), "Pa55word!".into());
            c.legacy_passwords
                .insert("alice@contoso.com".into(), "alice".into());
        });
        let principal =
            authenticate(&on, &basic("ThirdPartyData@contoso.com", "Pa55word!")).unwrap();
        assert_eq!(principal.app_id, AppId(Uuid::nil()));
        assert_eq!(principal.roles, vec!["legacy_basic_auth".to_string()]);
        assert_eq!(principal.tenant.0.to_string(), TENANT);
        assert_eq!(
            authenticate(&on, &basic("thirdpartydata@contoso.com", "wrong")),
            Err(AuthError::LegacyBadCredentials)
        );
        // A user with a password who is not the third-party data mailbox.
        assert_eq!(
            authenticate(&on, &basic("alice@contoso.com", "alice")),
            Err(AuthError::LegacyBadCredentials)
        );
        assert_eq!(
            authenticate(&on, &basic("nobody@contoso.com", "x")),
            Err(AuthError::LegacyBadCredentials)
        );
    }

    #[test]
    fn challenge_and_diagnostics() {
        assert!(!AuthError::Missing.www_authenticate().contains("error="));
        assert!(AuthError::Expired
            .www_authenticate()
            .ends_with("error=\"invalid_token\""));
        assert!(AuthError::Expired
            .www_authenticate()
            .starts_with("Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\""));
        let all = [
            AuthError::Missing,
            AuthError::UnsupportedScheme,
            AuthError::Unparseable,
            AuthError::Algorithm,
            AuthError::UnknownKey,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongAudience,
            AuthError::WrongIssuer,
            AuthError::IssuerTenantMismatch,
            AuthError::UnknownTenant,
            AuthError::NoAppId,
            AuthError::NotConsented,
            AuthError::Disabled,
            AuthError::MissingRole,
            AuthError::BasicNotAllowed,
            AuthError::LegacyBadCredentials,
        ];
        let mut codes: Vec<u32> = all.iter().map(|e| e.diagnostic_parts().0).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for e in all {
            let d = e.diagnostics();
            assert!(http::HeaderValue::from_str(&d).is_ok());
            assert!(http::HeaderValue::from_str(&e.www_authenticate()).is_ok());
        }
        assert_eq!(
            AuthError::Expired.diagnostics(),
            "2000014;reason=\"The token has expired.\";error_category=\"invalid_token\""
        );
    }
    /// Keys of a trusted issuer's JWKS file: encryption keys are not signature keys; an
    /// unreadable file is read again after a pause, not once per token (each would log).
    #[test]
    fn trusted_issuer_keys_skip_encryption_keys_and_unreadable_files_wait() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        use rsa::traits::PublicKeyParts;
        let dir = tempfile::tempdir().unwrap();
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let jwk = |kid: &str, usage: &str| {
            serde_json::json!({"kty": "RSA", "use": usage, "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())})
        };
        let file = dir.path().join("jwks.json");
        let document =
            serde_json::json!({"keys": [jwk("signing", "sig"), jwk("encrypting", "enc")]});
        std::fs::write(&file, document.to_string()).unwrap();
        let issuers = [TrustedIssuer {
            issuer: "https://sts.windows.net/x/".into(),
            jwks_file: file,
        }];
        assert!(external_key(&issuers, "signing").is_some());
        assert!(external_key(&issuers, "encrypting").is_none());

        let missing = [TrustedIssuer {
            issuer: "https://sts.windows.net/x/".into(),
            jwks_file: dir.path().join("missing.json"),
        }];
        let read_at = || {
            jwks_cache()
                .lock()
                .unwrap()
                .get(&missing[0].jwks_file)
                .map(|(_, at, _)| *at)
        };
        assert!(external_key(&missing, "signing").is_none());
        let first = read_at().expect("cached as unreadable");
        for _ in 0..100 {
            assert!(external_key(&missing, "signing").is_none());
        }
        assert_eq!(read_at(), Some(first), "not read again at once");
    }
}
