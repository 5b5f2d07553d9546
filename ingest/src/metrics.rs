//! Prometheus metrics and the `/metrics` + `/healthz` endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loglake_telemetry::Scrape;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
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
    /// Rows routed to the overflow host (their topic held `max_open_partitions`).
    pub overflow_rows: AtomicU64,
    pub skipped_already_committed: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub commit_conflicts: AtomicU64,
    pub commit_seconds: CommitSeconds,
    pub buffered_bytes: AtomicI64,
    /// Topics whose tables the worker holds open (those it has partitions of).
    pub open_topics: AtomicI64,
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
    /// Ranges of offsets Kafka deleted before they were archived, and the offsets in them.
    pub offset_gaps: AtomicU64,
    pub offset_gap_records: AtomicU64,
    /// Partitions stopped until an operator acts (a recreated topic).
    pub blocked: Mutex<BTreeSet<(String, i32)>>,
    /// `ingest.stall_after` and `ingest.stall_unhealthy_after`, in ms.
    pub stall_after_ms: AtomicU64,
    pub stall_unhealthy_after_ms: AtomicU64,
}

/// How long a running flush keeps the main-loop heartbeat beating.
const FLUSH_BEATS_FOR: Duration = Duration::from_secs(15 * 60);

/// Keeps the main-loop heartbeat beating while a flush runs: a flush of thousands of files to
/// a slow store takes minutes, and that is work, not a stall (the store's own timeouts end a
/// flush that gets no answers). For at most 15 minutes, so a flush that hangs past every
/// timeout is still reported by `/healthz`. Stops when dropped.
#[derive(Debug)]
pub struct FlushBeat(tokio::task::JoinHandle<()>);

impl FlushBeat {
    pub fn start(metrics: &Arc<Metrics>) -> Self {
        let metrics = Arc::clone(metrics);
        Self(tokio::spawn(async move {
            let until = Instant::now() + FLUSH_BEATS_FOR;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while Instant::now() < until {
                tick.tick().await;
                metrics.heartbeat_unix_ms.store(now_ms(), Relaxed);
            }
        }))
    }
}

impl Drop for FlushBeat {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    /// The metrics in the OpenMetrics text format.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Arc::clone(self)));
        loglake_telemetry::render(&registry)
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

impl Collector for Metrics {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut m = Scrape(encoder);
        let c = |v: &AtomicU64| v.load(Relaxed);
        m.counter(
            "loglake_ingest_records",
            "Kafka records consumed.",
            c(&self.records_in),
        )?;
        m.counter(
            "loglake_ingest_bytes",
            "Payload bytes consumed.",
            c(&self.bytes_in),
        )?;
        m.counter(
            "loglake_ingest_rows_written",
            "Rows committed to data tables.",
            c(&self.rows_written),
        )?;
        m.counter(
            "loglake_ingest_files_written",
            "Parquet files committed.",
            c(&self.files_written),
        )?;
        m.counter(
            "loglake_ingest_file_bytes_written",
            "Parquet bytes committed.",
            c(&self.bytes_written),
        )?;
        m.counter(
            "loglake_ingest_quarantined",
            "Records committed to quarantine tables.",
            c(&self.quarantined),
        )?;
        m.counter(
            "loglake_ingest_overflow_rows",
            "Rows stored under the _overflow host: their own host would have opened a partition past ingest.max_open_partitions.",
            c(&self.overflow_rows),
        )?;
        m.counter(
            "loglake_ingest_skipped",
            "Records skipped because a commit already holds them.",
            c(&self.skipped_already_committed),
        )?;
        m.counter("loglake_ingest_commits", "Delta commits.", c(&self.commits))?;
        m.counter(
            "loglake_ingest_commit_failures",
            "Flushes that failed and will be retried.",
            c(&self.commit_failures),
        )?;
        m.counter(
            "loglake_ingest_commit_conflicts",
            "Commits refused because another writer owned the partition.",
            c(&self.commit_conflicts),
        )?;
        m.counter(
            "loglake_ingest_undecodable_batches",
            "Record batches that could never be decoded, quarantined as undecodable_batch.",
            c(&self.undecodable_batches),
        )?;
        m.counter(
            "loglake_ingest_offset_gaps",
            "Ranges of offsets Kafka deleted (retention) before they were archived, each an offset_gap quarantine row.",
            c(&self.offset_gaps),
        )?;
        m.counter(
            "loglake_ingest_offset_gap_records",
            "Offsets in those ranges: records lost before loglake could read them.",
            c(&self.offset_gap_records),
        )?;
        let blocked: Vec<(String, String)> = self
            .blocked
            .lock()
            .expect("blocked set")
            .iter()
            .map(|(t, p)| (t.clone(), p.to_string()))
            .collect();
        m.family(
            "loglake_ingest_partition_blocked",
            "1 while the partition is stopped until an operator acts (its topic was recreated: see ingest.accept_recreated_topics).",
            MetricType::Gauge,
            blocked
                .iter()
                .map(|(t, p)| ([("topic", t.as_str()), ("partition", p.as_str())], 1.0)),
        )?;
        m.metric(
            "loglake_ingest_commit_seconds",
            "Time to write files and commit.",
            &self.commit_seconds.0,
        )?;
        m.gauge(
            "loglake_ingest_buffered_bytes",
            "Bytes held in buffers, against the memory budget.",
            self.buffered_bytes.load(Relaxed) as f64,
        )?;
        m.gauge(
            "loglake_ingest_open_topics",
            "Topics whose tables the worker holds open: those it has partitions of.",
            self.open_topics.load(Relaxed) as f64,
        )?;
        m.gauge(
            "loglake_ingest_freshness_seconds",
            "Kafka time to commit time of the newest record of the last commit.",
            self.freshness_ms.load(Relaxed) as f64 / 1e3,
        )?;
        m.gauge(
            "loglake_ingest_last_commit_timestamp_seconds",
            "Unix time of the last commit.",
            self.last_commit_unix_ms.load(Relaxed) as f64 / 1e3,
        )?;
        let errors: Vec<(String, u64)> = self
            .consumer_errors
            .lock()
            .expect("errors map")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        m.family(
            "loglake_ingest_consumer_errors",
            "Errors librdkafka reported while consuming, by code.",
            MetricType::Counter,
            errors
                .iter()
                .map(|(code, n)| ([("code", code.as_str())], *n as f64)),
        )?;
        let gauges = self
            .fetch
            .lock()
            .expect("fetch tracker")
            .gauges(Instant::now(), self.stall_after());
        let partitions: Vec<String> = gauges.iter().map(|g| g.1.to_string()).collect();
        let labels = |i: usize| {
            [
                ("topic", gauges[i].0.as_str()),
                ("partition", partitions[i].as_str()),
            ]
        };
        m.family(
            "loglake_ingest_partition_stalled",
            "1 while the partition's fetch position has not moved for ingest.stall_after although the broker holds records past it.",
            MetricType::Gauge,
            (0..gauges.len()).map(|i| (labels(i), f64::from(u8::from(gauges[i].2)))),
        )?;
        m.family(
            "loglake_ingest_partition_stalls",
            "Times the partition was found stalled.",
            MetricType::Counter,
            (0..gauges.len()).map(|i| (labels(i), gauges[i].3 as f64)),
        )?;
        let lag: Vec<(String, String, i64)> = self
            .lag
            .lock()
            .expect("lag map")
            .iter()
            .map(|((t, p), l)| (t.clone(), p.to_string(), *l))
            .collect();
        m.family(
            "loglake_ingest_consumer_lag",
            "Records behind the partition end (from librdkafka statistics).",
            MetricType::Gauge,
            lag.iter().map(|(t, p, l)| {
                (
                    [("topic", t.as_str()), ("partition", p.as_str())],
                    *l as f64,
                )
            }),
        )
    }
}

/// Commit durations: 5 ms to ~80 s.
#[derive(Debug)]
pub struct CommitSeconds(pub Histogram);

impl Default for CommitSeconds {
    fn default() -> Self {
        Self(Histogram::new(exponential_buckets(0.005, 2.0, 15)))
    }
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
        let m = Arc::new(Metrics::default());
        Metrics::add(&m.records_in, 3);
        m.lag.lock().unwrap().insert(("t".into(), 1), 7);
        let text = m.render();
        assert!(text.contains("loglake_ingest_records_total 3"));
        assert!(text.contains("loglake_ingest_consumer_lag{topic=\"t\",partition=\"1\"} 7"));
    }

    #[test]
    fn a_stalled_partition_shows_in_metrics_and_fails_healthz() {
        use crate::stall::FetchSample;
        let m = Arc::new(Metrics::default());
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

    #[tokio::test]
    async fn a_running_flush_keeps_the_heartbeat() {
        let m = Arc::new(Metrics::default());
        let long_ago = now_ms() - 120_000;
        m.heartbeat_unix_ms.store(long_ago, Relaxed);
        assert!(m.healthy().is_err());
        let beat = FlushBeat::start(&m);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(m.heartbeat_unix_ms.load(Relaxed) > long_ago);
        assert!(m.healthy().is_ok());
        drop(beat);
        tokio::time::sleep(Duration::from_millis(50)).await;
        m.heartbeat_unix_ms.store(long_ago, Relaxed);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            m.heartbeat_unix_ms.load(Relaxed),
            long_ago,
            "stopped when dropped"
        );
    }

    #[test]
    fn stalled_loop_is_unhealthy() {
        let m = Metrics::default();
        assert!(m.healthy().is_err());
        m.heartbeat_unix_ms.store(now_ms(), Relaxed);
        assert!(m.healthy().is_ok());
    }
}
