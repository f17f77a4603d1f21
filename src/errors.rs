//! The one place where request-level failures of the ingestion endpoint become wire answers:
//! HTTP status, headers and SOAP fault. (Per-item errors are part of a 200 reply; see `ingest`.)

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::ews::parse::ParseError;
use crate::ews::reply;
use crate::faults::Fault;
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
    /// A fault injected by a rule of `/api/faults` (never `Latency`, which only delays).
    #[error("injected fault {fault} (rule {rule})")]
    Injected {
        rule: String,
        fault: Fault,
        /// The operation label of the request (`CreateItem`, `GetFolder`, ...).
        operation: &'static str,
        /// How many response messages the answer has ([`Operation::response_messages`]):
        /// an item-level fault is one error message each.
        ///
        /// [`Operation::response_messages`]: crate::ews::types::Operation::response_messages
        messages: usize,
        correlation_id: uuid::Uuid,
    },
}

/// The text of Exchange Online's `ErrorServerBusy` (throttling).
pub const SERVER_BUSY_TEXT: &str =
    "The server cannot service this request right now. Try again later.";

impl EndpointError {
    /// A failure midway: the request may have been stored (see `StoreError::OutcomeUnknown`).
    pub fn may_have_stored(&self) -> bool {
        matches!(
            self,
            EndpointError::Ingest(IngestError::Store(
                crate::store::StoreError::OutcomeUnknown(_)
            ))
        )
    }
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
                    &format!(
                        "The request body was not received within {seconds} seconds (and one \
                         more for every {} KiB received).",
                        crate::http::MIN_BODY_BYTES_PER_SEC / 1024
                    ),
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
            EndpointError::Parse(error) if error.response_code() == "ErrorSchemaValidation" => {
                soap(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    reply::schema_fault(
                        &error.violation(),
                        error.position().map(|p| (p.line, p.column)),
                    ),
                )
            }
            EndpointError::Parse(error) => fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                error.response_code(),
                &error.to_string(),
            ),
            EndpointError::Ingest(IngestError::SenderNotActive { .. }) => fault(
                StatusCode::UNAUTHORIZED,
                "ErrorAccessDenied",
                SENDER_NOT_ACTIVE_TEXT,
            ),
            EndpointError::Ingest(
                error @ (IngestError::TooManyItems { .. }
                | IngestError::TooManyFolders { .. }
                | IngestError::TooManyElements { .. }
                | IngestError::UnsupportedOperation(_)),
            ) => fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ErrorInvalidRequest",
                &error.to_string(),
            ),
            EndpointError::Ingest(error @ IngestError::ConnectorPaused { .. }) => fault(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                &error.to_string(),
            ),
            EndpointError::Ingest(error @ IngestError::UnknownTenant(_)) => fault(
                StatusCode::UNAUTHORIZED,
                "ErrorAccessDenied",
                &error.to_string(),
            ),
            EndpointError::Injected {
                fault,
                operation,
                messages,
                correlation_id,
                ..
            } => injected(fault, operation, messages, correlation_id),
            EndpointError::Ingest(IngestError::Store(
                error @ crate::store::StoreError::OutcomeUnknown(_),
            )) => {
                tracing::error!(error = %error, "store failure midway");
                fault(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ErrorInternalServerError",
                    "An internal server error occurred midway: the request may have been stored. \
                     Look its x-IngestionCorrelationID up in the ingestion journal before \
                     retrying it.",
                )
            }
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
    if status != StatusCode::INTERNAL_SERVER_ERROR {
        // EWS clients read a SOAP fault only from a 500 (the Managed API gives the caller the
        // `x-ms-diagnostics` header of any other status): the reason goes there too.
        response
            .headers_mut()
            .insert("x-ms-diagnostics", diagnostics(code, message));
    }
    response
}

/// `x-ms-diagnostics` of a refusal: `{ResponseCode};reason="{text}"`, the text in printable
/// ASCII without quotes or backslashes (a header value carries nothing else, and a quoted
/// string would take a backslash as an escape).
fn diagnostics(code: &str, message: &str) -> HeaderValue {
    let reason: String = message
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect();
    HeaderValue::from_str(&format!("{code};reason=\"{reason}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("ErrorInternalServerError"))
}

/// The wire answer of an injected fault.
fn injected(
    fault: Fault,
    operation: &'static str,
    messages: usize,
    correlation_id: uuid::Uuid,
) -> Response {
    let mut response = match fault {
        Fault::ServerBusy {
            back_off_milliseconds,
        } => {
            let xml = reply::fault(
                "ErrorServerBusy",
                SERVER_BUSY_TEXT,
                &[("BackOffMilliseconds", back_off_milliseconds.to_string())],
            );
            soap(StatusCode::INTERNAL_SERVER_ERROR, xml)
        }
        Fault::ItemServerBusy {
            back_off_milliseconds,
        } => soap(
            StatusCode::OK,
            item_server_busy(operation, messages, back_off_milliseconds),
        ),
        Fault::Http503 {
            retry_after_seconds,
        } => retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            retry_after_seconds,
            "Service Unavailable: the server is temporarily unable to handle the request (injected fault).\n",
        ),
        Fault::Http429 {
            retry_after_seconds,
        } => retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            retry_after_seconds,
            "Too Many Requests: retry after the time in Retry-After (injected fault).\n",
        ),
        // Latency only delays and a budget answers as `ServerBusy` (both handled in `faults`):
        // answered as busy if one ever gets here.
        Fault::Latency { .. } | Fault::ItemBudget { .. } => soap(
            StatusCode::INTERNAL_SERVER_ERROR,
            reply::fault("ErrorServerBusy", SERVER_BUSY_TEXT, &[]),
        ),
        Fault::DropConnection => return abort_connection(),
    };
    if let Ok(value) = HeaderValue::from_str(&correlation_id.to_string()) {
        response
            .headers_mut()
            .insert("x-IngestionCorrelationID", value);
    }
    response
}

fn soap(status: StatusCode, xml: String) -> Response {
    let mut response = (status, xml).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

fn retry_after(status: StatusCode, seconds: u64, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// A 200 reply whose every response message is an `ErrorServerBusy` error with
/// `BackOffMilliseconds` in `MessageXml`: one per element the request asked about (item,
/// folder, id, attachment), as clients read one per element.
fn item_server_busy(operation: &str, messages: usize, back_off_milliseconds: u64) -> String {
    use reply::ItemResult;
    let xml = if operation == "CreateItem" {
        let failed = ItemResult::Failed {
            code: "ErrorServerBusy".into(),
            message: SERVER_BUSY_TEXT.into(),
        };
        reply::create_item(&vec![failed; messages.max(1)])
    } else {
        let operation = if operation == "Unsupported" {
            "CreateItem"
        } else {
            operation
        };
        reply::error_messages(operation, "ErrorServerBusy", SERVER_BUSY_TEXT, messages)
    };
    // MessageXml follows DescriptiveLinkKey in a response message (schema order). The message
    // text is escaped, so the marker occurs only where the writer put it.
    const MARKER: &str = "<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>";
    let message_xml = format!(
        "{MARKER}<m:MessageXml><t:Value Name=\"BackOffMilliseconds\">{back_off_milliseconds}</t:Value></m:MessageXml>"
    );
    xml.replace(MARKER, &message_xml)
}

/// A response whose body fails at once: hyper then closes the connection (HTTP/1.1) or resets
/// the stream (HTTP/2) without an answer.
fn abort_connection() -> Response {
    struct Abort;
    impl hyper::body::Body for Abort {
        type Data = axum::body::Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            std::task::Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "injected fault: dropConnection",
            ))))
        }
    }
    Response::new(axum::body::Body::new(Abort))
}
