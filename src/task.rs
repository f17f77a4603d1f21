//! Work handed to other threads on behalf of a request keeps the request's tracing span, so
//! every line it logs carries the request's correlation id.

/// `tokio::task::spawn_blocking`, run inside the caller's span.
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}
