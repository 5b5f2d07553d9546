//! The `/metrics` + `/healthz` endpoint every loglake service serves.
//!
//! Every service declares its metrics with `prometheus-client` (a registry of metric objects,
//! or a `Collector` that reads the service's state at scrape time through [`Scrape`]) and
//! hands over two functions: one that renders them ([`render`]), one that says whether it is
//! healthy (and why not). This crate owns the HTTP side
//! (hyper, one task per connection, stopped by a cancellation token); it knows nothing of what
//! is measured.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! let tasks = tokio_util::task::TaskTracker::new();
//! let stop = tokio_util::sync::CancellationToken::new();
//! let addr = loglake_telemetry::serve(
//!     "127.0.0.1:0",
//!     Arc::new(|| "up 1\n".to_string()),
//!     Arc::new(|| Ok(())),
//!     stop.clone(),
//!     &tasks,
//! )
//! .await?;
//! println!("metrics on http://{addr}/metrics");
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Renders the metrics (Prometheus text exposition format).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;
/// `Ok` when healthy, else why not.
pub type Health = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves `/metrics` and `/healthz` on `listen` until `shutdown`; returns the bound address
/// (port 0 picks a free one).
pub async fn serve(
    listen: &str,
    render: Render,
    health: Health,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tasks.spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => { tracing::warn!(error = %e, "metrics accept failed"); continue; }
                },
            };
            let (render, health) = (render.clone(), health.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let response = respond(&req, &render, &health);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection ended");
                }
            });
        }
    });
    Ok(addr)
}

fn respond<B>(req: &Request<B>, render: &Render, health: &Health) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(),
        ),
        "/healthz" => match health() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /healthz\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// Renders a registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "could not encode metrics");
    }
    out
}

/// Writes metrics read from a service's state at scrape time, for a
/// [`prometheus_client::collector::Collector`]. Names are given without the `_total` that
/// counters get on the wire.
#[derive(Debug)]
pub struct Scrape<'a>(pub DescriptorEncoder<'a>);

impl Scrape<'_> {
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        ConstCounter::new(value).encode(self.0.encode_descriptor(
            name,
            help,
            None,
            MetricType::Counter,
        )?)
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> std::fmt::Result {
        ConstGauge::new(value).encode(self.0.encode_descriptor(
            name,
            help,
            None,
            MetricType::Gauge,
        )?)
    }

    /// A labelled family: one sample per `(labels, value)`.
    pub fn family<'l, L: EncodeLabelSet + 'l>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> std::fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, None, kind)?;
        for (labels, value) in samples {
            let sample = family.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value).encode(sample)?,
                _ => ConstGauge::new(value).encode(sample)?,
            }
        }
        Ok(())
    }

    /// Any prometheus-client metric (a histogram, say) kept in the service's state.
    pub fn metric(
        &mut self,
        name: &str,
        help: &str,
        metric: &impl EncodeMetric,
    ) -> std::fmt::Result {
        metric.encode(
            self.0
                .encode_descriptor(name, help, None, metric.metric_type())?,
        )
    }
}
