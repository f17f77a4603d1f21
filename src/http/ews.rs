//! The ingestion endpoint over HTTP: authenticate, read the body within its limit, parse, hand to
//! `ingest`, answer. Also serves the WSDL and XSDs.

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use http_body_util::BodyExt;
use tracing::{debug, info, warn};

use super::CorrelationId;
use crate::app::AppState;
use crate::errors::EndpointError;

pub const SERVICE_PATH: &str = "/service/ThirdPartyIngestionService.svc";
pub const EWS_PATH: &str = "/EWS/Exchange.asmx";

const WSDL: &str = include_str!("../../wsdl/ThirdPartyIngestionService.wsdl");
const MESSAGES_XSD: &str = include_str!("../../wsdl/messages.xsd");
const TYPES_XSD: &str = include_str!("../../wsdl/types.xsd");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(SERVICE_PATH, post(endpoint).get(description))
        .route(EWS_PATH, post(endpoint).get(description))
        // Every answer of these paths, the WSDL's and a 405 included, as Exchange's.
        .layer(axum::middleware::from_fn(request_ids))
}

/// Adds Exchange's request ids to every answer of the EWS paths (see [`add_request_ids`]).
async fn request_ids(request: Request, next: axum::middleware::Next) -> Response {
    let correlation_id = request
        .extensions()
        .get::<CorrelationId>()
        .map(|CorrelationId(id)| *id);
    let echo = client_request_id_to_echo(request.headers());
    let mut response = next.run(request).await;
    if let Some(id) = correlation_id {
        add_request_ids(response.headers_mut(), id, echo);
    }
    response
}

async fn endpoint(
    State(state): State<AppState>,
    Extension(CorrelationId(correlation_id)): Extension<CorrelationId>,
    request: Request,
) -> Response {
    let started = std::time::Instant::now();
    // Indexing waits while ingestion requests are answered (it runs in the gaps).
    let _hold_off = state.search.hold_off();
    // Set once parsed (`OnceLock`: the future must be `Send`).
    let operation = std::sync::OnceLock::new();
    let mut unanswered = Unanswered {
        operation: &operation,
        started,
        answered: false,
    };
    let result = handle(&state, correlation_id, request, &operation).await;
    unanswered.answered = true;
    respond(result, correlation_id, &operation, started)
}

/// The answer to a handled request, counted and logged.
fn respond(
    result: Result<crate::ingest::Answer, EndpointError>,
    correlation_id: uuid::Uuid,
    operation: &std::sync::OnceLock<&'static str>,
    started: std::time::Instant,
) -> Response {
    let operation = operation.get().copied().unwrap_or("Unknown");
    let metrics = &super::metrics::METRICS;
    match result {
        Ok(crate::ingest::Answer { xml, items }) => {
            let outcome = match &items {
                Some(tally) => {
                    metrics.create_items(tally);
                    tally.outcome()
                }
                None => "Success",
            };
            let elapsed = started.elapsed();
            metrics.request(operation, outcome, elapsed);
            // The one line of an answered request (a refused one has its warning instead).
            info!(
                operation,
                outcome,
                micros = elapsed.as_micros() as u64,
                "EWS request answered"
            );
            let mut response = (StatusCode::OK, xml).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/xml; charset=utf-8"),
            );
            with_correlation_id(response, correlation_id)
        }
        Err(error) => {
            metrics.request(operation, error_outcome(&error), started.elapsed());
            warn!(error = %error, "request refused");
            if error.may_have_stored() {
                // The client must look the request up before retrying: name it.
                with_correlation_id(error.into_response(), correlation_id)
            } else {
                error.into_response()
            }
        }
    }
}

/// Counts and logs a request whose client went away before the answer (an HTTP/2 stream
/// reset, a connection closed, the shutdown grace running out: the handler is dropped).
/// Whatever it had committed stays committed: its ingestion record tells what.
struct Unanswered<'a> {
    operation: &'a std::sync::OnceLock<&'static str>,
    started: std::time::Instant,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let elapsed = self.started.elapsed();
        let operation = self.operation.get().copied().unwrap_or("Unknown");
        super::metrics::METRICS.request(operation, "Cancelled", elapsed);
        info!(
            operation,
            outcome = "Cancelled",
            micros = elapsed.as_micros() as u64,
            "EWS request cancelled: the client went away before the answer"
        );
    }
}

/// The client's `client-request-id`, when it asked for it back (`return-client-request-id:
/// true`), as Exchange echoes it.
fn client_request_id_to_echo(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let asked = headers
        .get("return-client-request-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    // Any string (the Managed API's `ClientRequestId` is free-form), but short: a long one
    // echoed back could overflow a proxy's or client's header buffers.
    asked
        .then(|| headers.get("client-request-id").cloned())
        .flatten()
        .filter(|v| v.len() <= 256)
}

/// Exchange's ids of an EWS answer: `request-id` (here the request's correlation id, the one
/// its log lines and journal entry carry) on every answer, and the client's own
/// `client-request-id` when it asked for it back.
fn add_request_ids(
    headers: &mut http::HeaderMap,
    correlation_id: uuid::Uuid,
    echo: Option<HeaderValue>,
) {
    if let Ok(value) = HeaderValue::from_str(&correlation_id.to_string()) {
        headers.insert("request-id", value);
    }
    if let Some(value) = echo {
        headers.insert("client-request-id", value);
    }
}

fn with_correlation_id(mut response: Response, correlation_id: uuid::Uuid) -> Response {
    if let Ok(value) = HeaderValue::from_str(&correlation_id.to_string()) {
        response
            .headers_mut()
            .insert("x-IngestionCorrelationID", value);
    }
    response
}

/// The metrics label of a refused request.
fn error_outcome(error: &EndpointError) -> &'static str {
    use crate::ingest::IngestError;
    match error {
        EndpointError::Auth(_) => "AuthFailed",
        EndpointError::BodyTooLarge { .. } => "TooLarge",
        EndpointError::BodyTimeout { .. } => "BodyTimeout",
        EndpointError::BodyRead(_) => "BodyUnreadable",
        EndpointError::Parse(e) => e.response_code(),
        EndpointError::Ingest(IngestError::SenderNotActive { .. }) => "SenderNotActive",
        EndpointError::Ingest(IngestError::TooManyItems { .. }) => "TooManyItems",
        EndpointError::Ingest(IngestError::TooManyFolders { .. }) => "TooManyFolders",
        EndpointError::Ingest(IngestError::TooManyElements { .. }) => "TooManyElements",
        EndpointError::Ingest(IngestError::Store(_)) => "StoreError",
        EndpointError::Ingest(IngestError::ConnectorPaused { .. }) => "ConnectorPaused",
        EndpointError::Ingest(_) => "Refused",
        EndpointError::Injected { .. } => "Faulted",
    }
}

async fn handle(
    state: &AppState,
    correlation_id: uuid::Uuid,
    request: Request,
    operation: &std::sync::OnceLock<&'static str>,
) -> Result<crate::ingest::Answer, EndpointError> {
    let principal = crate::identity::authenticate(state, request.headers())?;
    let span = tracing::Span::current();
    span.record("tenant", tracing::field::display(principal.tenant));
    span.record("app", tracing::field::display(principal.app_id));
    let limit = state.config.max_body_bytes;
    let (parts, body) = request.into_parts();
    let timeout = std::time::Duration::from_secs(state.config.body_timeout_secs.max(1));
    let body = read_body(&parts.headers, body, limit, timeout).await?;
    let parsed = crate::ews::parse::parse_request(&body)?;
    let label = super::metrics::operation_label(&parsed.operation);
    let _ = operation.set(label);
    debug!(bytes = body.len(), "EWS request");
    // An oversized batch is refused as such before any fault rule sees it (an injected
    // per-item fault would answer one message per item).
    crate::ingest::check_limits(state, &parsed)?;
    inject_faults(state, &principal, &parsed, label, correlation_id).await?;
    Ok(crate::ingest::execute(state, &principal, parsed, correlation_id).await?)
}

/// Applies the fault rules of `/api/faults` to a request, after authentication and parsing and
/// before anything is stored: waits out added latency, then answers with the fault if one fires
/// (recorded in the ingestion journal; nothing else is stored).
async fn inject_faults(
    state: &AppState,
    principal: &crate::domain::Principal,
    parsed: &crate::ews::types::EwsRequest,
    operation: &'static str,
    correlation_id: uuid::Uuid,
) -> Result<(), EndpointError> {
    use crate::ews::types::Operation;
    let tenant = principal.tenant.0;
    let items = match &parsed.operation {
        Operation::CreateItem(create) => create.items.len(),
        _ => 0,
    };
    let injection = state
        .faults
        .pick(tenant, principal.app_id.0, operation, items);
    if !injection.delay.is_zero() {
        info!(
            milliseconds = injection.delay.as_millis() as u64,
            "injected fault: latency"
        );
        tokio::time::sleep(injection.delay).await;
    }
    let Some((rule, fault)) = injection.fault else {
        return Ok(());
    };
    let error = EndpointError::Injected {
        rule,
        fault,
        operation,
        messages: parsed.operation.response_messages(),
        correlation_id,
    };
    warn!(fault = %fault, "injected fault");
    let record = crate::store::model::IngestionRecord {
        correlation_id,
        tenant,
        app_id: Some(principal.app_id.0),
        received: chrono::Utc::now(),
        operation: operation.to_string(),
        http_status: fault.http_status(),
        outcome: "Faulted".into(),
        items: Vec::new(),
        error: Some(error.to_string()),
    };
    if let Err(e) = state.store.record_ingestion(&record).await {
        warn!(error = %e, "could not record the injected fault in the ingestion journal");
    }
    Err(error)
}

/// Reads the body, refusing one over `limit` without reading it whole: at once when its
/// Content-Length says so, else as soon as the bytes read pass the limit. A body not received
/// whole within `timeout`, plus a second per [`crate::http::MIN_BODY_BYTES_PER_SEC`] received
/// (a slow client, or fewer bytes than its Content-Length), is refused.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    timeout: std::time::Duration,
) -> Result<bytes_of::Bytes, EndpointError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(EndpointError::BodyTooLarge { limit });
    }
    let (body, expired) = crate::http::DeadlineBody::new(body, timeout);
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) if expired.load(std::sync::atomic::Ordering::Relaxed) => {
            Err(EndpointError::BodyTimeout {
                seconds: timeout.as_secs(),
            })
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(EndpointError::BodyTooLarge { limit })
        }
        Err(e) => Err(EndpointError::BodyRead(e.to_string())),
    }
}

mod bytes_of {
    pub use axum::body::Bytes;
}

/// `?wsdl`, `?xsd=messages.xsd`, `?xsd=types.xsd`.
async fn description(
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
    State(state): State<AppState>,
) -> Response {
    let xml = if query.contains_key("wsdl") || query.contains_key("WSDL") {
        let base = crate::http::base_url(&state, &headers);
        WSDL.replace("https://localhost:8443", &base)
    } else {
        match query.get("xsd").map(String::as_str) {
            Some("messages.xsd") => MESSAGES_XSD.to_string(),
            Some("types.xsd") => TYPES_XSD.to_string(),
            _ => {
                return (
                    StatusCode::METHOD_NOT_ALLOWED,
                    [(header::ALLOW, "POST")],
                    "POST a SOAP envelope here; GET ?wsdl for the service description.\n",
                )
                    .into_response()
            }
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        )],
        xml,
    )
        .into_response()
}
