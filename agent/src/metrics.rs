//! The agent's metrics (prometheus-client, rendered by `loglake-telemetry`).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InputLabel {
    pub input: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    pub file: String,
}

/// One input's counters, looked up once.
#[derive(Debug, Clone, Default)]
pub struct InputCounters {
    pub lines: Counter,
    pub bytes: Counter,
    pub sent: Counter,
    pub truncated: Counter,
    pub invalid_utf8: Counter,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    lines: Family<InputLabel, Counter>,
    bytes: Family<InputLabel, Counter>,
    sent: Family<InputLabel, Counter>,
    truncated: Family<InputLabel, Counter>,
    invalid_utf8: Family<InputLabel, Counter>,
    pub send_errors: Counter,
    pub rotations: Counter,
    pub truncations: Counter,
    pub lag: Family<FileLabel, Gauge>,
    pub open_files: Gauge,
    pub files_waiting: Gauge,
    pub in_flight_records: Gauge,
    pub in_flight_bytes: Gauge,
    pub checkpoint_age: Gauge<f64, AtomicU64>,
    /// Why the agent is unhealthy, if it is (a positions file it cannot write).
    pub unhealthy: Mutex<Option<String>>,
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::default(),
            lines: Family::default(),
            bytes: Family::default(),
            sent: Family::default(),
            truncated: Family::default(),
            invalid_utf8: Family::default(),
            send_errors: Counter::default(),
            rotations: Counter::default(),
            truncations: Counter::default(),
            lag: Family::default(),
            open_files: Gauge::default(),
            files_waiting: Gauge::default(),
            in_flight_records: Gauge::default(),
            in_flight_bytes: Gauge::default(),
            checkpoint_age: Gauge::default(),
            unhealthy: Mutex::new(None),
        };
        let mut registry = Registry::with_prefix("loglake_agent");
        registry.register("lines_read", "Lines read, per input", m.lines.clone());
        registry.register("bytes_read", "Bytes read, per input", m.bytes.clone());
        registry.register(
            "records_sent",
            "Records the broker acknowledged, per input",
            m.sent.clone(),
        );
        registry.register(
            "truncated_lines",
            "Lines cut at agent.max_line_bytes, per input",
            m.truncated.clone(),
        );
        registry.register(
            "invalid_utf8_lines",
            "Lines whose invalid UTF-8 was replaced, per input",
            m.invalid_utf8.clone(),
        );
        registry.register(
            "send_errors",
            "Records the producer failed to deliver (they are sent again)",
            m.send_errors.clone(),
        );
        registry.register(
            "rotations",
            "Files that left their path (renamed or deleted) and were read to their end",
            m.rotations.clone(),
        );
        registry.register(
            "truncations",
            "Files truncated or rewritten in place (copytruncate), read again from the start",
            m.truncations.clone(),
        );
        registry.register(
            "lag_bytes",
            "Bytes of a file not yet acknowledged by the broker",
            m.lag.clone(),
        );
        registry.register("open_files", "Files held open", m.open_files.clone());
        registry.register(
            "files_waiting",
            "Files found but not opened: agent.max_open_files reached",
            m.files_waiting.clone(),
        );
        registry.register(
            "in_flight_records",
            "Records sent and not yet acknowledged",
            m.in_flight_records.clone(),
        );
        registry.register(
            "in_flight_bytes",
            "Bytes sent and not yet acknowledged",
            m.in_flight_bytes.clone(),
        );
        registry.register(
            "checkpoint_age_seconds",
            "How long acknowledged positions have waited to be written (0: up to date)",
            m.checkpoint_age.clone(),
        );
        Self { registry, ..m }
    }

    pub fn input(&self, name: &str) -> InputCounters {
        let label = InputLabel {
            input: name.to_string(),
        };
        InputCounters {
            lines: self.lines.get_or_create(&label).clone(),
            bytes: self.bytes.get_or_create(&label).clone(),
            sent: self.sent.get_or_create(&label).clone(),
            truncated: self.truncated.get_or_create(&label).clone(),
            invalid_utf8: self.invalid_utf8.get_or_create(&label).clone(),
        }
    }

    pub fn render(&self) -> String {
        loglake_telemetry::render(&self.registry)
    }

    pub fn health(&self) -> Result<(), String> {
        match self.unhealthy.lock().expect("health").clone() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
