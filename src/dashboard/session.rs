//! Dashboard sessions: what a browser holds after signing in with the admin key, instead of the
//! key itself.
//!
//! A session is a random 256-bit id (the cookie) with a random 256-bit CSRF token and an expiry,
//! kept in memory only (a restart signs everyone out). The table is keyed by the SHA-256 of the
//! id, so looking a presented cookie up compares hashes, never the secret itself. A request
//! authenticated by its cookie that changes something (POST, PUT, PATCH, DELETE) must also carry
//! the session's CSRF token in `X-CSRF-Token`, compared in constant time.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{header, HeaderMap, Method};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie. `__Host-`: browsers keep it only if it is `Secure`, has `Path=/` and no
/// `Domain`, so no sibling host can plant or shadow it.
pub const COOKIE: &str = "__Host-ingest-session";
/// The header that carries the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in (absolute, not sliding).
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions kept at once; signing in beyond that ends the one closest to expiry.
const MAX_SESSIONS: usize = 1024;

/// Every live session of this process.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Session>>,
}

struct Session {
    csrf: String,
    expires: Instant,
}

/// A session just created: the cookie value and the CSRF token.
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

/// Why a request that presented a session cookie is refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("The dashboard session has expired or was signed out: sign in again.")]
    Unknown,
    #[error("A signed-in request that changes something must carry the X-CSRF-Token header.")]
    MissingCsrf,
    #[error("The X-CSRF-Token header does not match the session.")]
    WrongCsrf,
}

impl Sessions {
    /// Starts a session.
    pub fn create(&self) -> NewSession {
        let id = random_token();
        let csrf = random_token();
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, s| s.expires > now);
        if live.len() >= MAX_SESSIONS {
            if let Some(oldest) = live.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                live.remove(&oldest);
            }
        }
        live.insert(
            digest(&id),
            Session {
                csrf: csrf.clone(),
                expires: now + LIFETIME,
            },
        );
        NewSession { id, csrf }
    }

    /// The CSRF token of the live session `id`.
    pub fn csrf_token(&self, id: &str) -> Option<String> {
        let now = Instant::now();
        self.lock()
            .get(&digest(id))
            .filter(|s| s.expires > now)
            .map(|s| s.csrf.clone())
    }

    /// Accepts a request authenticated by the session `id`: the session is live and, when
    /// `method` changes something, `headers` carry its CSRF token.
    pub fn authorize(
        &self,
        id: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(), SessionError> {
        let csrf = self.csrf_token(id).ok_or(SessionError::Unknown)?;
        if is_safe(method) {
            return Ok(());
        }
        let presented = headers
            .get(CSRF_HEADER)
            .ok_or(SessionError::MissingCsrf)?
            .as_bytes();
        let expected = csrf.as_bytes();
        match presented.len() == expected.len() && bool::from(presented.ct_eq(expected)) {
            true => Ok(()),
            false => Err(SessionError::WrongCsrf),
        }
    }

    /// Ends the session `id` (sign-out).
    pub fn remove(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The session id in the request's cookies, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` value that hands `id` to the browser.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Methods that change nothing on this server.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_csrf(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CSRF_HEADER, token.parse().expect("header value"));
        headers
    }

    #[test]
    fn reads_need_a_live_session_writes_its_csrf_token_too() {
        let sessions = Sessions::default();
        let s = sessions.create();
        assert_eq!(s.id.len(), 43, "256 bits, base64url");
        assert!(sessions
            .authorize(&s.id, &Method::GET, &HeaderMap::new())
            .is_ok());
        assert!(matches!(
            sessions.authorize(&s.id, &Method::PUT, &HeaderMap::new()),
            Err(SessionError::MissingCsrf)
        ));
        assert!(matches!(
            sessions.authorize(&s.id, &Method::DELETE, &with_csrf(&s.id)),
            Err(SessionError::WrongCsrf)
        ));
        assert!(sessions
            .authorize(&s.id, &Method::POST, &with_csrf(&s.csrf))
            .is_ok());
        sessions.remove(&s.id);
        assert!(matches!(
            sessions.authorize(&s.id, &Method::GET, &HeaderMap::new()),
            Err(SessionError::Unknown)
        ));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}=xyz ; c=d").parse().expect("value"),
        );
        assert_eq!(cookie(&headers), Some("xyz"));
        headers.insert(header::COOKIE, "other=1".parse().expect("value"));
        assert_eq!(cookie(&headers), None);
    }
}
