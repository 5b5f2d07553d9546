//! `loglake compact --interval`: passes on a schedule, with `/metrics` and `/healthz`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use loglake_lake::Lake;
use loglake_telemetry::Scrape;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::CompactorConfig;
use crate::error::CompactError;
use crate::report::PassReport;

/// Counters of a long-running compactor. Counters add up every pass.
#[derive(Debug, Default)]
pub struct CompactorMetrics {
    passes: AtomicU64,
    pass_failures: AtomicU64,
    consecutive_failures: AtomicU64,
    partitions_merged: AtomicU64,
    partitions_copied: AtomicU64,
    files_in: AtomicU64,
    files_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    rows: AtomicU64,
    expired_files: AtomicU64,
    vacuumed_files: AtomicU64,
    live_files: AtomicU64,
    last_success_unix: AtomicU64,
    last_pass_seconds_ms: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl CompactorMetrics {
    pub fn record(&self, outcome: &Result<PassReport, CompactError>) {
        self.passes.fetch_add(1, Relaxed);
        match outcome {
            Ok(r) => {
                self.consecutive_failures.store(0, Relaxed);
                self.last_success_unix.store(unix_now(), Relaxed);
                self.last_pass_seconds_ms
                    .store(r.duration.as_millis() as u64, Relaxed);
                let add = |c: &AtomicU64, v: u64| {
                    c.fetch_add(v, Relaxed);
                };
                for t in &r.tables {
                    add(&self.partitions_merged, t.merged as u64);
                    add(&self.partitions_copied, t.copied as u64);
                    add(&self.files_in, t.files_in as u64);
                    add(&self.files_out, t.files_out as u64);
                    add(&self.bytes_in, t.bytes_in);
                    add(&self.bytes_out, t.bytes_out);
                    add(&self.rows, t.rows);
                    add(&self.expired_files, t.expired_files as u64);
                    add(&self.vacuumed_files, t.vacuumed_files as u64);
                }
                self.live_files.store(r.small_file_debt(), Relaxed);
            }
            Err(_) => {
                self.pass_failures.fetch_add(1, Relaxed);
                self.consecutive_failures.fetch_add(1, Relaxed);
            }
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Arc::clone(self)));
        loglake_telemetry::render(&registry)
    }

    /// Unhealthy after three failed passes in a row.
    pub fn healthy(&self) -> Result<(), String> {
        match self.consecutive_failures.load(Relaxed) {
            n if n >= 3 => Err(format!("{n} passes in a row failed")),
            _ => Ok(()),
        }
    }
}

impl Collector for CompactorMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut m = Scrape(encoder);
        let c = |v: &AtomicU64| v.load(Relaxed);
        m.counter("loglake_compactor_passes", "Passes run.", c(&self.passes))?;
        m.counter(
            "loglake_compactor_pass_failures",
            "Passes that failed (some table could not be done).",
            c(&self.pass_failures),
        )?;
        m.counter(
            "loglake_compactor_partitions_merged",
            "(host, date, hour) merges committed.",
            c(&self.partitions_merged),
        )?;
        m.counter(
            "loglake_compactor_partitions_copied",
            "Of the merges, those done by copying encoded row groups (inputs in time order).",
            c(&self.partitions_copied),
        )?;
        m.counter(
            "loglake_compactor_files_in",
            "Small files merged away.",
            c(&self.files_in),
        )?;
        m.counter(
            "loglake_compactor_files_out",
            "Files written by merges.",
            c(&self.files_out),
        )?;
        m.counter(
            "loglake_compactor_bytes_in",
            "Bytes of the files merged away.",
            c(&self.bytes_in),
        )?;
        m.counter(
            "loglake_compactor_bytes_out",
            "Bytes of the files merges wrote.",
            c(&self.bytes_out),
        )?;
        m.counter(
            "loglake_compactor_rows",
            "Rows rewritten by merges.",
            c(&self.rows),
        )?;
        m.counter(
            "loglake_compactor_expired_files",
            "Files removed by retention.",
            c(&self.expired_files),
        )?;
        m.counter(
            "loglake_compactor_vacuumed_files",
            "Files deleted from the store by vacuum.",
            c(&self.vacuumed_files),
        )?;
        m.gauge(
            "loglake_compactor_live_files",
            "Live data files over every table after the last pass.",
            c(&self.live_files) as f64,
        )?;
        m.gauge(
            "loglake_compactor_last_success_timestamp_seconds",
            "Unix time of the last successful pass.",
            c(&self.last_success_unix) as f64,
        )?;
        m.gauge(
            "loglake_compactor_last_pass_seconds",
            "Duration of the last successful pass.",
            c(&self.last_pass_seconds_ms) as f64 / 1e3,
        )
    }
}

/// Runs passes every `interval` until `shutdown`, serving metrics on
/// `compactor.metrics_listen`.
pub async fn serve(
    lake: &Lake,
    config: &CompactorConfig,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), CompactError> {
    config.validate()?;
    let metrics = Arc::new(CompactorMetrics::default());
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    if config.metrics_listen != "off" {
        let (render, health) = (metrics.clone(), metrics.clone());
        let addr = loglake_telemetry::serve(
            &config.metrics_listen,
            Arc::new(move || render.render()),
            Arc::new(move || health.healthy()),
            stop.clone(),
            &tasks,
        )
        .await
        .map_err(|e| CompactError::Config {
            key: "compactor.metrics_listen".into(),
            message: format!("could not listen on {}: {e}", config.metrics_listen),
        })?;
        tracing::info!(%addr, "metrics listening");
    }
    crate::run_every(lake, config, interval, shutdown, |outcome| {
        metrics.record(outcome)
    })
    .await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("compactor stopped");
    Ok(())
}
