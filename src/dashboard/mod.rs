//! The status dashboard at `/`: a sign-in page (the admin key, once, for a session cookie), then
//! one page of plain HTML, CSS and JavaScript, all embedded in the binary, that reads and acts
//! through the admin API (`/api/...`) with the session cookie and its CSRF token.
//!
//! Routes: `GET /` (the app, or the sign-in form), `POST /signin`, `POST /signout`,
//! `GET /static/app.js`, `GET /static/app.css`. The pages send a strict Content-Security-Policy:
//! no inline script or style, nothing from anywhere but this server; the script builds the DOM
//! with `textContent`, never from HTML strings.

pub mod session;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::admin::ApiError;
use crate::app::AppState;
use session::SessionError;

const INDEX: &str = include_str!("assets/index.html");
const SIGN_IN: &str = include_str!("assets/signin.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/signin", post(sign_in))
        .route("/signout", post(sign_out))
        .route(
            "/static/app.js",
            get(|| asset(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/static/app.css",
            get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
}

/// The dashboard for a signed-in browser (its CSRF token in a `<meta>` tag), else the sign-in
/// form.
async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session::cookie(&headers).and_then(|id| state.sessions.csrf_token(id)) {
        // The token is base64url: nothing in it needs escaping in an attribute.
        Some(csrf) => html(
            StatusCode::OK,
            INDEX.replace("{{csrf}}", &csrf),
            "no-referrer",
        ),
        None => sign_in_page(StatusCode::OK, ""),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SignInForm {
    key: String,
}

/// `POST /signin` (form: `key`): on the right key a new session, its cookie and a redirect to
/// the dashboard; otherwise the form again with what went wrong.
async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&state, &headers) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            "This sign-in was not sent from this server's own page.",
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<SignInForm>(&body) else {
        return sign_in_page(
            StatusCode::BAD_REQUEST,
            "The sign-in form could not be read.",
        );
    };
    let key = form.key.trim();
    if key.is_empty() || !state.admin_key.matches(key) {
        return sign_in_page(StatusCode::UNAUTHORIZED, "The admin key is not valid.");
    }
    if !cookie_kept(&state, &headers) {
        return sign_in_page(
            StatusCode::BAD_REQUEST,
            "Browsers keep the dashboard's session cookie only over HTTPS or on this machine: \
             open the dashboard with https://, or at http://localhost or http://127.0.0.1.",
        );
    }
    let session = state.sessions.create();
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    set_cookie(&mut response, &session::set_cookie(&session.id));
    response
}

/// `POST /signout`: ends the session (with its CSRF token, like every signed-in change).
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(id) = session::cookie(&headers) {
        match state.sessions.authorize(id, &Method::POST, &headers) {
            Ok(()) => state.sessions.remove(id),
            Err(SessionError::Unknown) => {}
            Err(refused) => return Err(refused.into()),
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, &session::clear_cookie());
    Ok(response)
}

/// Whether a browser keeps the `Secure` session cookie: over HTTPS, or over plain HTTP on a
/// loopback host (browsers treat those as secure). Elsewhere it is dropped without a word and
/// the sign-in would land back on the form.
fn cookie_kept(state: &AppState, headers: &HeaderMap) -> bool {
    if !matches!(state.config.tls, crate::config::TlsSource::None) {
        return true;
    }
    // Behind a proxy that terminates TLS, the browser is on HTTPS: it keeps the cookie.
    if crate::http::forwarded_https(headers) {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Login CSRF: a browser names the page a form was sent from (`Origin`, else `Referer`). When it
/// does, it must be this server. Clients that name none (curl, tests) are not browsers being
/// tricked, and the cookie is `SameSite=Strict` in any case.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let own = crate::http::base_url(state, headers);
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let claimed = match (text(header::ORIGIN), text(header::REFERER)) {
        (Some(origin), _) => origin,
        (None, Some(referer)) => origin_of(referer),
        (None, None) => return true,
    };
    claimed.eq_ignore_ascii_case(&own)
}

/// `scheme://authority` of an absolute URL (empty when it is not one).
fn origin_of(url: &str) -> &str {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return "";
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    &url[..end]
}

/// The sign-in form, with `error` (always one of the fixed messages above, never input).
fn sign_in_page(status: StatusCode, error: &'static str) -> Response {
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null` with
    // the form, and the login CSRF check above could not tell this page from any other.
    html(status, SIGN_IN.replace("{{error}}", error), "same-origin")
}

fn html(status: StatusCode, body: String, referrer_policy: &'static str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static(referrer_policy),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    nosniff(response)
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    let response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    nosniff(response)
}

fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn origin_of_a_referer() {
        assert_eq!(
            origin_of("https://127.0.0.1:8443/?x#y"),
            "https://127.0.0.1:8443"
        );
        assert_eq!(origin_of("https://host"), "https://host");
        assert_eq!(origin_of("https://evil.example/x"), "https://evil.example");
        assert_eq!(origin_of("not a url"), "");
    }
}
