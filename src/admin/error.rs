//! Admin API plumbing: errors shaped as Microsoft Graph shapes them, the admin-key guard and a
//! JSON body extractor whose rejections are Graph errors too.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use crate::app::AppState;
use crate::identity::keys::KeyError;
use crate::store::StoreError;

/// The `WWW-Authenticate` challenge of the admin API.
pub const CHALLENGE: &str = r#"Bearer realm="ingest-emulator admin""#;

tokio::task_local! {
    /// The id of the admin request being served, echoed in `innerError.request-id`.
    static REQUEST_ID: Uuid;
}

/// Every way an admin request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or wrong admin key (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The request is malformed or invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// The resource does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the directory (409).
    #[error("{0}")]
    Conflict(String),
    /// The body's media type is not accepted (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The path exists, not for this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The signing key set failed.
    #[error("signing keys: {0}")]
    Keys(String),
    /// A fault of the server itself (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Request_BadRequest"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "Request_ResourceNotFound"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::Store(StoreError::Conflict(_)) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::Store(StoreError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "Request_ResourceNotFound")
            }
            ApiError::Store(_) | ApiError::Keys(_) | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let request_id = REQUEST_ID
            .try_with(|id| *id)
            .unwrap_or_else(|_| Uuid::new_v4());
        if status.is_server_error() {
            tracing::error!(error = %self, "admin request failed");
        }
        let body = json!({
            "error": {
                "code": code,
                "message": self.to_string(),
                "innerError": {
                    "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "request-id": request_id,
                    "client-request-id": request_id,
                }
            }
        });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Gives each admin request an id (the server's correlation id when there is one), available to
/// error bodies and echoed in the `request-id` header, as Graph does.
pub async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .extensions()
        .get::<crate::http::CorrelationId>()
        .map(|c| c.0)
        .unwrap_or_else(Uuid::new_v4);
    let mut response = REQUEST_ID.scope(id, next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

/// Proof that the request carried the admin key (`Authorization: Bearer <key>`). Every admin
/// handler takes it first, so nothing else (not even the body) is looked at without the key.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Admin> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "Access token is empty: send the admin key as `Authorization: Bearer <key>`."
                    .into(),
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        match presented {
            Some(key) if !key.is_empty() && state.admin_key.matches(key) => Ok(Admin),
            Some(_) => Err(ApiError::Unauthorized("The admin key is not valid.".into())),
            None => Err(ApiError::Unauthorized(
                "The Authorization header must be `Bearer <admin key>`.".into(),
            )),
        }
    }
}

/// A JSON body. Malformed JSON or a body of the wrong shape is a Graph `Request_BadRequest`;
/// an empty body reads as `{}` (every field optional or defaulted). The Content-Type is not
/// insisted on (`curl -d` sends form-urlencoded), only named in the error when it is not JSON.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> ApiResult<Body<T>> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .filter(|c| !c.contains("json"));
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("Cannot read the request body: {e}")))?;
        parse_json(&bytes)
            .map(Body)
            .map_err(|e| match (e, content_type) {
                (ApiError::BadRequest(message), Some(content_type)) => ApiError::BadRequest(
                    format!("{message} (Content-Type was {content_type}: send application/json)"),
                ),
                (e, _) => e,
            })
    }
}

/// Parses a JSON request body (empty reads as `{}`) into `T`, with a clear message.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::BadRequest(format!("The request body is not valid JSON: {e}."))
            }
            Category::Data => ApiError::BadRequest(format!("Invalid request body: {e}.")),
        }
    })
}

/// Parses a GUID path segment.
pub fn parse_guid(value: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(value.trim())
        .map_err(|_| ApiError::BadRequest(format!("Invalid {what} '{value}': expected a GUID.")))
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::ActiveKey(kid) => ApiError::Conflict(format!(
                "Signing key '{kid}' is the active key: rotate first (POST \
                 /api/signingKeys/rotate), then remove it."
            )),
            KeyError::Store(e) => ApiError::Store(e),
            other => ApiError::Keys(other.to_string()),
        }
    }
}

impl From<crate::identity::credentials::CertificateError> for ApiError {
    fn from(e: crate::identity::credentials::CertificateError) -> Self {
        ApiError::BadRequest(format!("Invalid certificate: {e}."))
    }
}
