//! The HTTP layer: listener, TLS, HTTP/1.1 and HTTP/2, the router, per-request correlation ids
//! and graceful shutdown. Thin on purpose: handlers delegate to `identity`, `ingest`, `admin`.

mod ews;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info_span, warn, Instrument};
use uuid::Uuid;

use crate::app::AppState;

/// Time a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connection-level limits of `serve` (`--max-connections`, `--header-timeout-secs`,
/// `--shutdown-grace-secs`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time a client has to send its first bytes and then each request head.
    pub header_timeout: Duration,
    /// Time a graceful shutdown waits for in-flight requests before giving up on them.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(8),
        }
    }
}

impl ConnectionLimits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        ConnectionLimits {
            max_connections: config.max_connections.max(1),
            header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        }
    }
}

/// The limits of the configuration the router was built with (one server per process): `serve`
/// applies them, so the binary's start-up code needs no knowledge of them.
static CONFIGURED_LIMITS: std::sync::OnceLock<ConnectionLimits> = std::sync::OnceLock::new();

/// The id of one request, carried in every log line and, for ingestion requests, in the
/// `x-IngestionCorrelationID` header.
#[derive(Debug, Clone, Copy)]
pub struct CorrelationId(pub Uuid);

/// Every route the server answers.
pub fn router(state: AppState) -> Router {
    let _ = CONFIGURED_LIMITS.set(ConnectionLimits::from_config(&state.config));
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics::handler))
        .merge(ews::routes())
        .merge(
            // The ingestion endpoint reads its body against the same deadline itself, and
            // answers the timeout as an EWS fault.
            Router::new()
                .merge(crate::admin::routes())
                .merge(crate::identity::routes())
                .merge(crate::dashboard::routes())
                .layer(middleware::from_fn_with_state(state.clone(), body_deadline)),
        )
        .layer(middleware::from_fn(correlate))
        .with_state(state)
}

/// `GET /healthz`: 200 `ok`, or 503 with the reason while the store cannot take writes as it
/// should (see [`crate::store::Store::health`]; also logged as an error when it happened).
async fn health(State(state): State<AppState>) -> Response {
    match state.store.health() {
        Ok(()) => "ok".into_response(),
        Err(reason) => (http::StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// Gives each request a correlation id and a tracing span that carries it.
async fn correlate(mut request: Request, next: Next) -> Response {
    let id = Uuid::now_v7();
    request.extensions_mut().insert(CorrelationId(id));
    // HTTP/2 carries the host in the URI authority, not in a Host header: normalise.
    if !request.headers().contains_key(http::header::HOST) {
        if let Some(value) = request
            .uri()
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        {
            request.headers_mut().insert(http::header::HOST, value);
        }
    }
    // `tenant` and `app` are recorded once the request is authenticated (`ews::handle`), so
    // every later line of the request names them too; `items` and `stored` by CreateItem.
    let span = info_span!(
        "request",
        correlation_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        tenant = tracing::field::Empty,
        app = tracing::field::Empty,
        items = tracing::field::Empty,
        stored = tracing::field::Empty,
    );
    async move {
        let response = next.run(request).await;
        debug!(status = response.status().as_u16(), "answered");
        response
    }
    .instrument(span)
    .await
}

/// The slowest a body may arrive once its `--body-timeout-secs` are used up: every 64 KiB
/// received gives it one more second. A large upload on a slow but steady link (a 64 MB staging
/// delivery at 1 MB/s) is never cut, while a client that trickles a few bytes now and then is
/// still cut after about the timeout.
pub const MIN_BODY_BYTES_PER_SEC: u64 = 64 * 1024;

/// Gives the request's body `--body-timeout-secs` to arrive, plus a second per
/// [`MIN_BODY_BYTES_PER_SEC`] received, counted from the request head: after that, reading it
/// fails and the request is answered 408 (connection closed). Without it a client that
/// announces a body and never sends it holds its connection (and a slot of
/// `--max-connections`) forever: hyper's header timeout ends with the head.
async fn body_deadline(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = Duration::from_secs(state.config.body_timeout_secs.max(1));
    let (request, expired) = {
        let (parts, body) = request.into_parts();
        let (body, expired) = DeadlineBody::new(body, limit);
        (
            Request::from_parts(parts, axum::body::Body::new(body)),
            expired,
        )
    };
    let response = next.run(request).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    warn!(seconds = limit.as_secs(), "request body timed out");
    let mut response = (
        http::StatusCode::REQUEST_TIMEOUT,
        format!(
            "The request body did not arrive within {} seconds (and one more for every {} KiB \
             received).",
            limit.as_secs(),
            MIN_BODY_BYTES_PER_SEC / 1024
        ),
    )
        .into_response();
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// A request body that fails once its deadline passes (see [`body_deadline`]); each data
/// frame moves the deadline on by its share of [`MIN_BODY_BYTES_PER_SEC`].
pub(crate) struct DeadlineBody {
    inner: axum::body::Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    started: tokio::time::Instant,
    received: u64,
    limit: Duration,
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    /// `body` with a deadline of `limit` from now (extended as data arrives), and the flag
    /// that tells whether it passed.
    pub(crate) fn new(body: axum::body::Body, limit: Duration) -> (DeadlineBody, Arc<AtomicBool>) {
        let expired = Arc::new(AtomicBool::new(false));
        let started = tokio::time::Instant::now();
        let body = DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep_until(deadline_after(started, limit))),
            started,
            received: 0,
            limit,
            expired: expired.clone(),
        };
        (body, expired)
    }
}

/// `start + wait`, or a year from `start` when that is too far for the clock (a huge
/// `--body-timeout-secs`).
fn deadline_after(start: tokio::time::Instant, wait: Duration) -> tokio::time::Instant {
    let year = Duration::from_secs(365 * 86_400);
    start.checked_add(wait.min(year)).unwrap_or(start)
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} seconds")]
struct BodyTimedOut(u64);

impl hyper::body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(|f| f.data_ref())) {
                let len = data.map_or(0, |d| d.len() as u64);
                if len > 0 {
                    this.received = this.received.saturating_add(len);
                    let earned = Duration::from_secs_f64(
                        this.received as f64 / MIN_BODY_BYTES_PER_SEC as f64,
                    );
                    let deadline = deadline_after(this.started, this.limit.saturating_add(earned));
                    this.deadline.as_mut().reset(deadline);
                }
            }
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            let e = BodyTimedOut(this.limit.as_secs());
            return Poll::Ready(Some(Err(axum::Error::new(e))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
/// Applies the limits of the configuration `router` was built with.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let limits = CONFIGURED_LIMITS.get().copied().unwrap_or_default();
    serve_with(listener, tls, router, limits, shutdown).await
}

/// `serve` with explicit connection limits.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let max = limits.max_connections.max(1);
    let limit = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // E.g. out of file descriptors: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = metrics::ConnectionGuard::open();
            // A shutdown does not wait for a connection that has not asked anything yet.
            let mut stopping = stop.clone();
            let stopped = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            tokio::pin!(stopped);
            match acceptor {
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => handshake,
                        _ = &mut stopped => return,
                    };
                    match handshake {
                        Ok(Ok(tls)) => {
                            // ALPN decides the protocol: no version sniffing on TLS.
                            let protocol = match tls.get_ref().1.alpn_protocol() {
                                Some(b"h2") => Protocol::Http2,
                                _ => Protocol::Http1,
                            };
                            serve_connection(
                                TokioIo::new(tls),
                                router,
                                peer,
                                stop,
                                limits,
                                protocol,
                            )
                            .await
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => {
                    // A client that connects and sends nothing is closed after the header
                    // timeout (the protocol sniffing below would otherwise wait forever).
                    let mut first = [0u8; 1];
                    let peeked = tokio::select! {
                        peeked = tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)) => peeked,
                        _ = &mut stopped => return,
                    };
                    match peeked {
                        Ok(Ok(n)) if n > 0 => {
                            serve_connection(
                                TokioIo::new(stream),
                                router,
                                peer,
                                stop,
                                limits,
                                Protocol::Sniff,
                            )
                            .await
                        }
                        Ok(_) => debug!(%peer, "connection closed before a request"),
                        Err(_) => debug!(%peer, "no request within the header timeout"),
                    }
                }
            }
        });
    }
    // Stop accepting; ask open connections to finish their current request and close.
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        let _ = limit.acquire_many(max as u32).await;
    })
    .await;
    if drained.is_err() {
        let open = max.saturating_sub(limit.available_permits());
        warn!(
            connections = open,
            grace_secs = limits.shutdown_grace.as_secs(),
            "shutdown grace over: connections still answering are abandoned (what they committed stays)"
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
    /// Plain TCP: HTTP/1.1, or HTTP/2 with prior knowledge, told apart by the first bytes.
    Sniff,
}

async fn serve_connection<I>(
    io: I,
    router: Router,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    limits: ConnectionLimits,
    protocol: Protocol,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let builder = match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
        Protocol::Sniff => builder,
    };
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        tower::service_fn(move |request: Request<hyper::body::Incoming>| {
            let answering = activity.begin();
            let answer = router.clone().oneshot(request);
            async move {
                let response = answer.await;
                drop(answering);
                response
            }
        })
    };
    let service = TowerToHyperService::new(service);
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result { debug!(%peer, error = %e, "connection ended with an error"); }
        }
        _ = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
        _ = activity.idle(limits.header_timeout) => {
            if activity.answered_any() {
                // HTTP/2 (HTTP/1.1's own header timeout closes it first): GOAWAY, then close.
                debug!(%peer, "idle connection closed");
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            } else {
                // Nothing ever asked: an HTTP/2 handshake or preface that never came (hyper
                // has no timer for those). Nothing is in flight: just close.
                debug!(%peer, "no request within the header timeout");
            }
        }
    }
}

/// What a connection is doing, for its idle deadline: a connection that has answered no
/// request for the header timeout is closed, whatever its protocol or state (HTTP/1.1 has its
/// own header-read timeout; an HTTP/2 connection, its handshake, or a plain connection whose
/// first bytes might be an HTTP/2 preface have none).
struct Activity {
    started: std::time::Instant,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Requests begun.
    begun: AtomicUsize,
    /// When (ms after `started`) a request last began or ended.
    last_ms: AtomicU64,
}

/// One request being answered on a connection.
struct Answering(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Activity {
            started: std::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            begun: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn begin(self: &Arc<Self>) -> Answering {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        Answering(self.clone())
    }

    fn answered_any(&self) -> bool {
        self.begun.load(Ordering::Relaxed) > 0
    }

    /// Resolves once no request has been in flight for `limit` (checked a few times per
    /// `limit`, so it closes within 1.25 x `limit`).
    async fn idle(&self, limit: Duration) {
        let period = (limit / 4).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(period).await;
            let idle_ms = self
                .now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::SeqCst) == 0 && idle_ms >= limit.as_millis() as u64 {
                return;
            }
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A plain-text response, for the few places that need one.
pub fn text(status: http::StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

/// `scheme://host[:port]` as the client reached us: `https` unless TLS is off (and no proxy
/// that terminates TLS says the client used HTTPS: [`forwarded_https`]), and the host from
/// `Host` (HTTP/2's authority is copied there by `correlate`), when it is a plausible host.
/// The OpenID documents, the audience of client assertions, the WSDL and the dashboard's
/// same-origin check all use it.
pub fn base_url(state: &AppState, headers: &http::HeaderMap) -> String {
    let scheme = match state.config.tls {
        crate::config::TlsSource::None if !forwarded_https(headers) => "http",
        _ => "https",
    };
    let valid = |h: &&str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(valid)
        .map(str::to_string)
        .unwrap_or_else(|| state.config.listen.to_string());
    format!("{scheme}://{host}")
}

/// Whether a proxy that terminates TLS says the client reached it over HTTPS
/// (`X-Forwarded-Proto: https`, or `Forwarded: proto=https`, RFC 7239). Only ever turns a
/// plain-HTTP server's `http` into `https`: what the client itself used.
pub fn forwarded_https(headers: &http::HeaderMap) -> bool {
    // The first element of each list: what the proxy nearest the client saw.
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .unwrap_or("")
    };
    if first("x-forwarded-proto").eq_ignore_ascii_case("https") {
        return true;
    }
    // `Forwarded: for=1.2.3.4;proto=https;host=...` (values may be quoted, names any case).
    first("forwarded").split(';').any(|pair| {
        pair.split_once('=').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("proto")
                && value.trim().trim_matches('"').eq_ignore_ascii_case("https")
        })
    })
}

#[cfg(test)]
mod forwarded_tests {
    use super::forwarded_https;

    fn with(name: &'static str, value: &'static str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(name, http::HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_the_proxy_nearest_the_client_says_https() {
        for (name, value) in [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "HTTPS, http"),
            ("forwarded", "for=1.2.3.4;proto=https"),
            (
                "forwarded",
                "Proto=\"HTTPS\";host=ingest.example, for=10.0.0.1;proto=http",
            ),
        ] {
            assert!(forwarded_https(&with(name, value)), "{name}: {value}");
        }
        for (name, value) in [
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-proto", "wss"),
            (
                "forwarded",
                "for=1.2.3.4;proto=http, for=10.0.0.1;proto=https",
            ),
            ("forwarded", "for=\"proto=https\""),
            ("x-forwarded-host", "https"),
        ] {
            assert!(!forwarded_https(&with(name, value)), "{name}: {value}");
        }
        assert!(!forwarded_https(&http::HeaderMap::new()));
    }
}
