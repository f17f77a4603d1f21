//! The one place where request-level failures of the ingestion endpoint become wire answers:
//! HTTP status, headers and SOAP fault. (Per-item errors are part of a 200 reply; see `ingest`.)

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::ews::parse::ParseError;
use crate::ews::reply;
use crate::identity::AuthError;
use crate::ingest::IngestError;

/// The documented answer when a sender of the tenant has no active mailbox.
pub const SENDER_NOT_ACTIVE_TEXT: &str = "One or more messages in the Request failed to be delivered to either From or Sender email address. You will need to resend your entire Request. Error: The request failed. The remote server returned an error: (401) Unauthorized.";

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request body was not received within {seconds} s")]
    BodyTimeout { seconds: u64 },
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("invalid request: {0}")]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl IntoResponse for EndpointError {
    fn into_response(self) -> Response {
        match self {
            EndpointError::Auth(error) => {
                let mut response = StatusCode::UNAUTHORIZED.into_response();
                let headers = response.headers_mut();
                if let Ok(value) = HeaderValue::from_str(&error.www_authenticate()) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
                if let Ok(value) = HeaderValue::from_str(&error.diagnostics()) {
                    headers.insert("x-ms-diagnostics", value);
                }
                response
            }
            EndpointError::BodyTooLarge { limit } => {
                let mut response = fault(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "ErrorRequestTooLarge",
                    &format!("The request body is larger than the limit of {limit} bytes."),
                );
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            EndpointError::BodyTimeout { seconds } => {
                let mut response = fault(
                    StatusCode::REQUEST_TIMEOUT,
                    "ErrorTimeoutExpired",
                    &format!("The request body was not received within {seconds} seconds."),
                );
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            EndpointError::BodyRead(message) => fault(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidRequest",
                &format!("The request body could not be read: {message}"),
            ),
            EndpointError::Parse(error) => fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                error.response_code(),
                &format!("The request failed schema validation: {error}"),
            ),
            EndpointError::Ingest(IngestError::SenderNotActive { .. }) => fault(
                StatusCode::UNAUTHORIZED,
                "ErrorAccessDenied",
                SENDER_NOT_ACTIVE_TEXT,
            ),
            EndpointError::Ingest(
                error @ (IngestError::TooManyItems { .. } | IngestError::UnsupportedOperation(_)),
            ) => fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ErrorInvalidRequest",
                &error.to_string(),
            ),
            EndpointError::Ingest(error @ IngestError::UnknownTenant(_)) => fault(
                StatusCode::UNAUTHORIZED,
                "ErrorAccessDenied",
                &error.to_string(),
            ),
            EndpointError::Ingest(IngestError::Store(error)) => {
                tracing::error!(error = %error, "store failure");
                fault(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ErrorInternalServerError",
                    "An internal server error occurred. The operation failed; nothing was stored.",
                )
            }
        }
    }
}

fn fault(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (status, reply::fault(code, message, &[])).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}
