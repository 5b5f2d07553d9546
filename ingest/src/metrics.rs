//! Prometheus metrics and the `/metrics` + `/healthz` endpoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::error::IngestError;
use crate::stall::StallTracker;

/// Counters and gauges of one ingest worker. All monotonic counters end in `_total`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub rows_written: AtomicU64,
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub quarantined: AtomicU64,
    pub skipped_already_committed: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub commit_conflicts: AtomicU64,
    pub commit_seconds_sum_us: AtomicU64,
    pub buffered_bytes: AtomicI64,
    /// Seconds between a committed record's Kafka timestamp and its commit, for the newest
    /// record of the last commit: how far the archive trails the source.
    pub freshness_ms: AtomicI64,
    pub last_commit_unix_ms: AtomicI64,
    /// Unix ms of the last main-loop iteration; `/healthz` fails when it stalls.
    pub heartbeat_unix_ms: AtomicI64,
    /// Consecutive failed flushes; `/healthz` fails while the store is unreachable.
    pub failing_flushes: AtomicU64,
    /// Consumer lag by (topic, partition), from librdkafka statistics.
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Fetch positions by partition, from librdkafka statistics: which partitions stall.
    pub fetch: Mutex<StallTracker>,
    /// Consumer errors librdkafka reported, by error code.
    pub consumer_errors: Mutex<BTreeMap<String, u64>>,
    /// Record batches that could not be decoded and were quarantined.
    pub undecodable_batches: AtomicU64,
    /// `ingest.stall_after` and `ingest.stall_unhealthy_after`, in ms.
    pub stall_after_ms: AtomicU64,
    pub stall_unhealthy_after_ms: AtomicU64,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "loglake_ingest_records_total",
            "Kafka records consumed.",
            self.records_in.load(Relaxed),
        );
        counter(
            "loglake_ingest_bytes_total",
            "Payload bytes consumed.",
            self.bytes_in.load(Relaxed),
        );
        counter(
            "loglake_ingest_rows_written_total",
            "Rows committed to data tables.",
            self.rows_written.load(Relaxed),
        );
        counter(
            "loglake_ingest_files_written_total",
            "Parquet files committed.",
            self.files_written.load(Relaxed),
        );
        counter(
            "loglake_ingest_file_bytes_written_total",
            "Parquet bytes committed.",
            self.bytes_written.load(Relaxed),
        );
        counter(
            "loglake_ingest_quarantined_total",
            "Records committed to quarantine tables.",
            self.quarantined.load(Relaxed),
        );
        counter(
            "loglake_ingest_skipped_total",
            "Records skipped because a commit already holds them.",
            self.skipped_already_committed.load(Relaxed),
        );
        counter(
            "loglake_ingest_commits_total",
            "Delta commits.",
            self.commits.load(Relaxed),
        );
        counter(
            "loglake_ingest_commit_failures_total",
            "Flushes that failed and will be retried.",
            self.commit_failures.load(Relaxed),
        );
        counter(
            "loglake_ingest_commit_conflicts_total",
            "Commits refused because another writer owned the partition.",
            self.commit_conflicts.load(Relaxed),
        );
        counter(
            "loglake_ingest_undecodable_batches_total",
            "Record batches that could never be decoded, quarantined as undecodable_batch.",
            self.undecodable_batches.load(Relaxed),
        );
        let sum = self.commit_seconds_sum_us.load(Relaxed) as f64 / 1e6;
        let count = self.commits.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP loglake_ingest_commit_seconds Time to write files and commit.\n# TYPE loglake_ingest_commit_seconds summary\nloglake_ingest_commit_seconds_sum {sum}\nloglake_ingest_commit_seconds_count {count}"
        );
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "loglake_ingest_buffered_bytes",
            "Bytes held in buffers, against the memory budget.",
            self.buffered_bytes.load(Relaxed) as f64,
        );
        gauge(
            "loglake_ingest_freshness_seconds",
            "Kafka time to commit time of the newest record of the last commit.",
            self.freshness_ms.load(Relaxed) as f64 / 1e3,
        );
        gauge(
            "loglake_ingest_last_commit_timestamp_seconds",
            "Unix time of the last commit.",
            self.last_commit_unix_ms.load(Relaxed) as f64 / 1e3,
        );
        let _ = writeln!(out, "# HELP loglake_ingest_consumer_errors_total Errors librdkafka reported while consuming, by code.\n# TYPE loglake_ingest_consumer_errors_total counter");
        for (code, n) in self.consumer_errors.lock().expect("errors map").iter() {
            let _ = writeln!(
                out,
                "loglake_ingest_consumer_errors_total{{code=\"{}\"}} {n}",
                label(code)
            );
        }
        let gauges = self
            .fetch
            .lock()
            .expect("fetch tracker")
            .gauges(Instant::now(), self.stall_after());
        let _ = writeln!(out, "# HELP loglake_ingest_partition_stalled 1 while the partition's fetch position has not moved for ingest.stall_after although the broker holds records past it.\n# TYPE loglake_ingest_partition_stalled gauge");
        for (topic, partition, stalled, _) in &gauges {
            let _ = writeln!(
                out,
                "loglake_ingest_partition_stalled{{topic=\"{topic}\",partition=\"{partition}\"}} {}",
                u8::from(*stalled)
            );
        }
        let _ = writeln!(out, "# HELP loglake_ingest_partition_stalls_total Times the partition was found stalled.\n# TYPE loglake_ingest_partition_stalls_total counter");
        for (topic, partition, _, episodes) in &gauges {
            let _ = writeln!(
                out,
                "loglake_ingest_partition_stalls_total{{topic=\"{topic}\",partition=\"{partition}\"}} {episodes}"
            );
        }
        let _ = writeln!(out, "# HELP loglake_ingest_consumer_lag Records behind the partition end (from librdkafka statistics).\n# TYPE loglake_ingest_consumer_lag gauge");
        for ((topic, partition), lag) in self.lag.lock().expect("lag map").iter() {
            let _ = writeln!(
                out,
                "loglake_ingest_consumer_lag{{topic=\"{topic}\",partition=\"{partition}\"}} {lag}"
            );
        }
        out
    }

    /// Healthy while the main loop turns and flushes succeed.
    pub fn healthy(&self) -> Result<(), String> {
        let stalled = now_ms() - self.heartbeat_unix_ms.load(Relaxed);
        if stalled > 60_000 {
            return Err(format!("main loop stalled for {}s", stalled / 1000));
        }
        let failing = self.failing_flushes.load(Relaxed);
        if failing >= 5 {
            return Err(format!("{failing} flushes in a row failed"));
        }
        let unhealthy_after = Duration::from_millis(self.stall_unhealthy_after_ms.load(Relaxed));
        if let Some((topic, partition, stalled)) = self
            .fetch
            .lock()
            .expect("fetch tracker")
            .longest(Instant::now())
        {
            if stalled >= unhealthy_after && !unhealthy_after.is_zero() {
                return Err(format!(
                    "partition {topic}[{partition}] has not advanced for {}s",
                    stalled.as_secs()
                ));
            }
        }
        Ok(())
    }

    pub fn stall_after(&self) -> Duration {
        Duration::from_millis(self.stall_after_ms.load(Relaxed))
    }

    /// Counts a consumer error by its code.
    pub fn consumer_error(&self, code: &str) {
        *self
            .consumer_errors
            .lock()
            .expect("errors map")
            .entry(code.to_string())
            .or_default() += 1;
    }
}

/// A label value as Prometheus text wants it: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` and `/healthz` until `shutdown`; returns the bound address.
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<SocketAddr, IngestError> {
    let (render, health) = (metrics.clone(), metrics);
    loglake_telemetry::serve(
        listen,
        Arc::new(move || render.render()),
        Arc::new(move || health.healthy()),
        shutdown,
        tasks,
    )
    .await
    .map_err(|source| IngestError::Metrics {
        addr: listen.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::add(&m.records_in, 3);
        m.lag.lock().unwrap().insert(("t".into(), 1), 7);
        let text = m.render();
        assert!(text.contains("loglake_ingest_records_total 3"));
        assert!(text.contains("loglake_ingest_consumer_lag{topic=\"t\",partition=\"1\"} 7"));
    }

    #[test]
    fn a_stalled_partition_shows_in_metrics_and_fails_healthz() {
        use crate::stall::FetchSample;
        let m = Metrics::default();
        m.heartbeat_unix_ms.store(now_ms(), Relaxed);
        m.stall_after_ms.store(1_000, Relaxed);
        m.stall_unhealthy_after_ms.store(2_000, Relaxed);
        let sample = FetchSample {
            position: 5,
            end: 9,
            queued: 0,
        };
        let long_ago = Instant::now() - Duration::from_secs(3);
        m.fetch
            .lock()
            .unwrap()
            .observe("app-logs", 2, sample, long_ago);
        m.consumer_error("BadCompression");
        let text = m.render();
        assert!(
            text.contains("loglake_ingest_partition_stalled{topic=\"app-logs\",partition=\"2\"} 1"),
            "{text}"
        );
        assert!(text.contains("loglake_ingest_consumer_errors_total{code=\"BadCompression\"} 1"));
        let why = m.healthy().unwrap_err();
        assert!(why.contains("app-logs[2]"), "{why}");
        // Moving again makes it healthy.
        m.fetch.lock().unwrap().observe(
            "app-logs",
            2,
            FetchSample {
                position: 9,
                ..sample
            },
            Instant::now(),
        );
        assert!(m.healthy().is_ok());
    }

    #[test]
    fn stalled_loop_is_unhealthy() {
        let m = Metrics::default();
        assert!(m.healthy().is_err());
        m.heartbeat_unix_ms.store(now_ms(), Relaxed);
        assert!(m.healthy().is_ok());
    }
}
