//! The query service's metrics, declared with `prometheus-client` like every loglake service's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Status {
    /// `ok`, or the error code (`invalid_sql`, `timeout`, ...).
    pub status: String,
}

/// Every metric `loglake serve` exports.
#[derive(Debug)]
pub struct ServeMetrics {
    pub queries: Family<Status, Counter>,
    pub duration: Histogram,
    pub bytes_scanned: Counter,
    pub rows_returned: Counter,
    pub in_flight: Gauge,
    pub not_modified: Counter,
    pub rejected_busy: Counter,
    pub unauthorized: Counter,
}

impl ServeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            queries: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            bytes_scanned: Counter::default(),
            rows_returned: Counter::default(),
            in_flight: Gauge::default(),
            not_modified: Counter::default(),
            rejected_busy: Counter::default(),
            unauthorized: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("loglake_serve");
        r.register(
            "queries",
            "Queries finished, by status (ok or the error code)",
            m.queries.clone(),
        );
        r.register(
            "query_duration_seconds",
            "Time from request to the last byte of the answer",
            m.duration.clone(),
        );
        r.register(
            "scanned_bytes",
            "Bytes of Parquet read by queries",
            m.bytes_scanned.clone(),
        );
        r.register(
            "returned_rows",
            "Rows sent to clients",
            m.rows_returned.clone(),
        );
        r.register(
            "queries_in_flight",
            "Queries running now",
            m.in_flight.clone(),
        );
        r.register(
            "not_modified",
            "GET /v1/sql answered 304 from an ETag, without running",
            m.not_modified.clone(),
        );
        r.register(
            "rejected_busy",
            "Queries refused with 429: max_concurrent_queries were running",
            m.rejected_busy.clone(),
        );
        r.register(
            "unauthorized",
            "Requests refused with 401",
            m.unauthorized.clone(),
        );
        m
    }

    pub fn finished(&self, status: &str) {
        self.queries
            .get_or_create(&Status {
                status: status.to_string(),
            })
            .inc();
    }
}
