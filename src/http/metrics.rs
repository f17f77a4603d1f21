//! `GET /metrics`: Prometheus text exposition of the ingestion endpoint's counters: requests by
//! operation and outcome, items stored and rejected by reason, request latency histogram, open
//! connections; and of native data connector imports (imports, items by outcome). Process-wide (one server per process), lock-free on the hot path except for the
//! small labelled maps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    /// (operation, outcome) -> count.
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    items_stored: AtomicU64,
    /// reason (EWS response code) -> count.
    items_rejected: Mutex<BTreeMap<String, u64>>,
    /// Requests per latency bucket, not cumulative (one increment per request; the last one
    /// is over every bound): a scrape adds them up, so it never sees a lower bucket above a
    /// higher one, nor `+Inf` apart from `_count`.
    latency_buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    open_connections: AtomicI64,
    connections_total: AtomicU64,
    /// Imports of native data connectors committed.
    connector_imports: AtomicU64,
    /// Items of those imports after fan-out, by [`CONNECTOR_OUTCOMES`].
    connector_items: [AtomicU64; 4],
}

/// The outcomes of a connector's items after fan-out, as Purview's import summary counts them.
const CONNECTOR_OUTCOMES: [&str; 4] = ["imported", "partiallyImported", "skipped", "failed"];

/// The series a scraper sees from the start, at zero: `rate()` and alerts need them before
/// the first request.
const INITIAL_REQUEST_SERIES: [(&str, &str); 3] = [
    ("CreateItem", "Success"),
    ("CreateItem", "PartialSuccess"),
    ("CreateItem", "Failed"),
];

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics::default();
    if let Ok(mut map) = metrics.requests.lock() {
        for (operation, outcome) in INITIAL_REQUEST_SERIES {
            map.insert((operation, outcome.to_string()), 0);
        }
    }
    metrics
});

/// The EWS operation of a parsed request, as a label.
pub fn operation_label(operation: &crate::ews::types::Operation) -> &'static str {
    use crate::ews::types::Operation;
    match operation {
        Operation::CreateItem(_) => "CreateItem",
        Operation::GetFolder(_) => "GetFolder",
        Operation::ConvertId { .. } => "ConvertId",
        Operation::CreateAttachment(_) => "CreateAttachment",
        Operation::Unsupported(_) => "Unsupported",
    }
}

impl Metrics {
    /// One answered request of the ingestion endpoint.
    pub fn request(&self, operation: &'static str, outcome: &str, elapsed: Duration) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((operation, outcome.to_string())).or_default() += 1;
        }
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts the items of a CreateItem request: stored, or rejected by response code.
    pub fn create_items(&self, tally: &crate::ingest::ItemTally) {
        self.items_stored.fetch_add(tally.stored, Ordering::Relaxed);
        if tally.rejected.is_empty() {
            return;
        }
        if let Ok(mut map) = self.items_rejected.lock() {
            for code in &tally.rejected {
                *map.entry(code.clone()).or_default() += 1;
            }
        }
    }

    /// Counts a committed import of a native data connector.
    pub fn connector_import(&self, import: &crate::store::connectors::ImportRecord) {
        self.connector_imports.fetch_add(1, Ordering::Relaxed);
        let counts = [
            import.imported,
            import.partially_imported,
            import.skipped,
            import.failed,
        ];
        for (counter, n) in self.connector_items.iter().zip(counts) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP ingest_requests_total Requests of the ingestion endpoint by EWS operation and outcome.");
        let _ = writeln!(out, "# TYPE ingest_requests_total counter");
        if let Ok(map) = self.requests.lock() {
            for ((operation, outcome), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "ingest_requests_total{{operation=\"{operation}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        single(
            &mut out,
            "ingest_items_stored_total",
            "counter",
            "Items stored by the ingestion endpoint (native connector imports: ingest_connector_items_total).",
            self.items_stored.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP ingest_items_rejected_total Items rejected, by EWS response code."
        );
        let _ = writeln!(out, "# TYPE ingest_items_rejected_total counter");
        if let Ok(map) = self.items_rejected.lock() {
            for (reason, n) in map.iter() {
                let _ = writeln!(
                    out,
                    "ingest_items_rejected_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP ingest_request_duration_seconds Latency of the ingestion endpoint, from the request head to the answer.");
        let _ = writeln!(out, "# TYPE ingest_request_duration_seconds histogram");
        let mut count = 0;
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            count += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ingest_request_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
            );
        }
        count += self.latency_buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "ingest_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "ingest_request_duration_seconds_sum {}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "ingest_request_duration_seconds_count {count}");
        single(
            &mut out,
            "ingest_open_connections",
            "gauge",
            "Client connections open now.",
            self.open_connections.load(Ordering::Relaxed).max(0),
        );
        single(
            &mut out,
            "ingest_connections_total",
            "counter",
            "Client connections accepted.",
            self.connections_total.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "ingest_connector_imports_total",
            "counter",
            "Imports of native data connectors committed.",
            self.connector_imports.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP ingest_connector_items_total Items of native data connector imports after fan-out to participants, by outcome.");
        let _ = writeln!(out, "# TYPE ingest_connector_items_total counter");
        for (outcome, n) in CONNECTOR_OUTCOMES.iter().zip(&self.connector_items) {
            let _ = writeln!(
                out,
                "ingest_connector_items_total{{outcome=\"{outcome}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// A metric without labels: its HELP and TYPE lines and its one sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Decrements the open-connection gauge when a connection task ends, however it ends.
pub struct ConnectionGuard;

impl ConnectionGuard {
    /// Counts a connection open until the guard is dropped.
    pub fn open() -> ConnectionGuard {
        METRICS.connection_opened();
        ConnectionGuard
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        METRICS.connection_closed();
    }
}

pub async fn handler(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let mut text = METRICS.render();
    // Bytes of the store's files on disk (sled, its write-ahead log, attachment files: walked
    // at the first scrape, then counted as they change), on a blocking thread.
    let store = state.store.clone();
    let size = crate::task::spawn_blocking(move || store.size_on_disk())
        .await
        .ok()
        .and_then(Result::ok);
    if let Some(bytes) = size {
        single(
            &mut text,
            "ingest_store_size_bytes",
            "gauge",
            "Size of the store on disk (database, write-ahead log and attachment files).",
            bytes,
        );
    }
    single(
        &mut text,
        "ingest_search_backlog_items",
        "gauge",
        "Items stored but not yet handed to the search index (it waits while ingestion requests are in flight; a search takes them first).",
        state.search.backlog().items,
    );
    single(
        &mut text,
        "ingest_search_commits_total",
        "counter",
        "Commits of the search index since the server started.",
        state.search.commits(),
    );
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets are cumulative and non-decreasing, `+Inf` is `_count`, whatever the latencies.
    #[test]
    fn the_latency_histogram_is_cumulative_with_inf_equal_to_count() {
        let metrics = Metrics::default();
        for millis in [0.1, 3.0, 3.0, 20_000.0] {
            metrics.request(
                "CreateItem",
                "Success",
                Duration::from_secs_f64(millis / 1000.0),
            );
        }
        let text = metrics.render();
        let value = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        let bucket = |le: &str| {
            value(&format!(
                "ingest_request_duration_seconds_bucket{{le=\"{le}\"}} "
            ))
        };
        assert_eq!(bucket("0.0005"), 1);
        assert_eq!(bucket("0.002"), 1);
        assert_eq!(bucket("0.005"), 3);
        assert_eq!(bucket("10"), 3);
        assert_eq!(bucket("+Inf"), 4);
        assert_eq!(value("ingest_request_duration_seconds_count "), 4);
        let mut previous = 0;
        for bound in BUCKETS {
            let n = bucket(&bound.to_string());
            assert!(n >= previous, "le={bound}: {n} < {previous}");
            previous = n;
        }
    }
}
