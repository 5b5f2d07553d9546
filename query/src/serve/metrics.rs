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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolStatus {
    /// `http`, `postgres` or `flight_sql`.
    pub protocol: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Protocol {
    pub protocol: String,
}

/// Every metric `loglake serve` exports.
#[derive(Debug)]
pub struct ServeMetrics {
    pub queries: Family<Status, Counter>,
    pub protocol_queries: Family<ProtocolStatus, Counter>,
    pub connections: Family<Protocol, Counter>,
    pub open_connections: Family<Protocol, Gauge>,
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
            protocol_queries: Family::default(),
            connections: Family::default(),
            open_connections: Family::default(),
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
            "protocol_queries",
            "Queries finished, by protocol (http, postgres, flight_sql) and status",
            m.protocol_queries.clone(),
        );
        r.register(
            "connections",
            "Connections accepted, by protocol (postgres, flight_sql)",
            m.connections.clone(),
        );
        r.register(
            "open_connections",
            "Connections open now, by protocol (postgres)",
            m.open_connections.clone(),
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
            "Requests and connections refused for a missing or wrong token",
            m.unauthorized.clone(),
        );
        m
    }

    /// Counts a connection accepted and open until the guard is dropped.
    pub fn connection(&self, protocol: &'static str) -> ConnectionGuard {
        let p = Protocol {
            protocol: protocol.to_string(),
        };
        self.connections.get_or_create(&p).inc();
        let open = self.open_connections.get_or_create(&p).clone();
        open.inc();
        ConnectionGuard(open)
    }

    pub fn finished(&self, protocol: &str, status: &str) {
        self.queries
            .get_or_create(&Status {
                status: status.to_string(),
            })
            .inc();
        self.protocol_queries
            .get_or_create(&ProtocolStatus {
                protocol: protocol.to_string(),
                status: status.to_string(),
            })
            .inc();
    }
}

/// An open connection, counted in `open_connections` while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
