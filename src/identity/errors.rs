//! Entra-style error answers of the token issuer: the JSON body every MSAL/ADAL client parses
//! (`error`, `error_description` starting with `AADSTS<code>: `, `error_codes`, `timestamp`,
//! `trace_id`, `correlation_id`, `error_uri`), and small HTML helpers for the browser pages.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One failure of the token (or discovery) endpoint, as Entra reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError {
    pub status: StatusCode,
    /// OAuth error code: `invalid_client`, `invalid_request`, `unauthorized_client`...
    pub error: &'static str,
    /// The AADSTS number.
    pub code: u32,
    /// Message after `AADSTS<code>: `.
    pub message: String,
}

impl EntraError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        EntraError {
            status,
            error,
            code,
            message: message.into(),
        }
    }

    /// `invalid_client`, 401: a credential was wrong.
    pub fn invalid_client(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
    }

    /// `invalid_request`, 400.
    pub fn invalid_request(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", code, message)
    }

    /// AADSTS900144: a mandatory body parameter is missing.
    pub fn missing_parameter(name: &str) -> Self {
        Self::invalid_request(
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// AADSTS90002: the tenant in the path is not known.
    pub fn unknown_tenant(tenant: &str) -> Self {
        Self::invalid_request(
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud. Check with your subscription \
                 administrator, this may happen if there are no active subscriptions for the \
                 tenant."
            ),
        )
    }

    /// The first line of `error_description`.
    pub fn summary(&self) -> String {
        format!("AADSTS{}: {}", self.code, self.message)
    }

    /// The JSON body, with the given trace and correlation ids and time.
    pub fn body(
        &self,
        trace_id: Uuid,
        correlation_id: &str,
        now: DateTime<Utc>,
    ) -> serde_json::Value {
        let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
        serde_json::json!({
            "error": self.error,
            "error_description": format!(
                "{}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.summary()
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id.to_string(),
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }

    /// The complete HTTP answer; the correlation id is the client's `client-request-id` when it
    /// sent one.
    pub fn into_response_for(self, request_headers: &HeaderMap) -> Response {
        self.into_response_with(correlation_id(request_headers))
    }

    /// The complete HTTP answer, with this correlation id (see [`client_request_id`]).
    pub fn into_response_with(self, correlation: String) -> Response {
        let trace = Uuid::new_v4();
        // The line that ties the client's error (its Trace ID) to this request's logs: the
        // code only (the message echoes what the client sent, which may be a pasted secret).
        tracing::info!(
            code = self.code,
            error = self.error,
            status = self.status.as_u16(),
            trace_id = %trace,
            "identity request refused"
        );
        let body = self.body(trace, &correlation, Utc::now());
        let mut response = (self.status, axum::Json(body)).into_response();
        add_token_headers(response.headers_mut(), trace, &correlation);
        response
    }
}

impl std::fmt::Display for EntraError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

impl std::error::Error for EntraError {}

/// The client's `client-request-id` header when it is a GUID (as Entra), else a new one.
pub fn correlation_id(headers: &HeaderMap) -> String {
    client_request_id(headers, None, &[])
}

/// The correlation id of a token request: the client's `client-request-id`, a GUID, from the
/// header (MSAL for Python, .NET), else the query string, else the form (MSAL Node and MSAL.js
/// send it only there); else a new one.
pub fn client_request_id(headers: &HeaderMap, query: Option<&str>, form: &[u8]) -> String {
    fn in_form(encoded: &[u8]) -> Option<Uuid> {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(encoded)
            .ok()?
            .into_iter()
            .find(|(name, _)| name == "client-request-id")
            .and_then(|(_, value)| Uuid::parse_str(value.trim()).ok())
    }
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .or_else(|| query.and_then(|q| in_form(q.as_bytes())))
        .or_else(|| in_form(form))
        .unwrap_or_else(Uuid::new_v4)
        .to_string()
}

/// Headers Entra puts on every token endpoint answer.
pub fn add_token_headers(headers: &mut HeaderMap, trace: Uuid, correlation: &str) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        headers.insert("x-ms-request-id", value);
    }
    if let Ok(value) = HeaderValue::from_str(correlation) {
        headers.insert("client-request-id", value);
    }
    headers.insert(
        "x-ms-ests-server",
        HeaderValue::from_static("ingest-emulator"),
    );
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A self-contained HTML page (no external assets), with headers that keep it out of frames and
/// caches.
pub fn html_page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n{body_html}\n\
         </main>\n</body>\n</html>\n",
        title = html_escape(title),
    );
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// An Entra-like error page ("Sign in" / "Sorry, but we're having trouble signing you in.").
pub fn html_error_page(error: &EntraError) -> Response {
    let body = format!(
        "<h1>Sign in</h1>\n<p>Sorry, but we&#39;re having trouble signing you in.</p>\n\
         <p class=\"error\">{}</p>\n<dl><dt>Error code</dt><dd>AADSTS{}</dd><dt>Timestamp</dt><dd>{}</dd></dl>",
        html_escape(&error.summary()),
        error.code,
        Utc::now().format("%Y-%m-%d %H:%M:%SZ"),
    );
    html_page(error.status, "Sign in to your account", &body)
}

const STYLE: &str = "body{font-family:Segoe UI,Helvetica,Arial,sans-serif;background:#f2f2f2;margin:0}\n\
main{max-width:32rem;margin:3rem auto;background:#fff;padding:2rem 2.5rem;box-shadow:0 2px 6px rgba(0,0,0,.2)}\n\
h1{font-size:1.5rem;font-weight:600}\n\
.error{color:#a80000}\n\
.muted{color:#605e5c;font-size:.9rem}\n\
ul.perms li{margin:.4rem 0}\n\
label{display:block;margin:1rem 0 .3rem}\n\
input[type=password]{width:100%;padding:.4rem;box-sizing:border-box}\n\
.buttons{margin-top:1.5rem;display:flex;gap:.75rem;justify-content:flex-end}\n\
button{padding:.45rem 1.5rem;border:1px solid #8a8886;background:#fff;cursor:pointer}\n\
button.primary{background:#0067b8;color:#fff;border-color:#0067b8}\n\
code{word-break:break-all}\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_entra_shape() {
        let error = EntraError::invalid_client(7000215, "Invalid client secret provided.");
        let trace = Uuid::new_v4();
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 23, 14, 0, 0).unwrap();
        let body = error.body(trace, "abc", now);
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(body["error_codes"][0], 7000215);
        assert_eq!(body["timestamp"], "2026-11-23 14:00:00Z");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.starts_with("AADSTS7000215: "));
        assert!(description.ends_with(&format!(
            "\r\nTrace ID: {trace}\r\nCorrelation ID: abc\r\nTimestamp: 2026-11-23 14:00:00Z"
        )));
    }

    #[test]
    fn correlation_id_comes_from_client_request_id() {
        let mut headers = HeaderMap::new();
        let id = "3cdd9297-f5f0-4420-bac6-32825cc29cc1";
        headers.insert("client-request-id", HeaderValue::from_static(id));
        assert_eq!(correlation_id(&headers), id);
        assert_ne!(correlation_id(&HeaderMap::new()), id);

        // MSAL Node sends it in the query string and the form, not as a header.
        let other = "9d40706e-5d3e-4a4c-9f7e-2f4f6a0b1c2d";
        let query = format!("client-request-id={other}");
        let form = format!("client_id=x&client-request-id={other}");
        let none = HeaderMap::new();
        assert_eq!(client_request_id(&none, Some(&query), b""), other);
        assert_eq!(client_request_id(&none, None, form.as_bytes()), other);
        assert_eq!(
            client_request_id(&headers, Some(&query), form.as_bytes()),
            id
        );
        let bad = client_request_id(&none, Some("client-request-id=not-a-guid"), b"");
        assert!(Uuid::parse_str(&bad).is_ok() && bad != other);
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
