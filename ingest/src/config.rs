//! `[kafka]` and `[ingest]`: typed, documented, validated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::error::IngestError;

/// `[kafka]`: where records come from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Consumer group; every worker of one deployment uses the same. Also names the Delta
    /// `txn` app ids, so changing it starts the archive from scratch for every partition.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topics to archive. Exactly one of `topics` and `topic_pattern` is set.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression over topic names (`^logs\\..*`); new matching topics are picked
    /// up as they appear.
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Passed to librdkafka as is (`"session.timeout.ms" = "6000"`, security settings, ...).
    /// loglake owns offset handling: `enable.auto.commit`, `enable.auto.offset.store` and
    /// cooperative assignment are refused.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_group_id() -> String {
    "loglake".into()
}

/// `[ingest]`: buffering, flushing and the metrics endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// A file is written when a (topic, host, date, hour) buffer's estimated Parquet size
    /// reaches this ("128MiB").
    pub max_file_size: ByteSize,
    /// The longest a record waits in memory before it is committed ("30s"); idle
    /// partitions flush too.
    #[serde(with = "humantime_serde")]
    pub max_latency: Duration,
    /// One budget for every buffer of the worker ("512MiB"); when full, the topic holding
    /// the most is flushed first.
    pub memory_budget: ByteSize,
    /// `host:port` for `/metrics` and `/healthz`; port 0 picks a free one; "off" disables.
    pub metrics_listen: String,
    /// Directory of per-topic schema files (`<topic>.toml`).
    pub schemas_dir: PathBuf,
    /// On SIGTERM/SIGINT, how long the final flush may take ("30s").
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_file_size: ByteSize::mib(128),
            max_latency: Duration::from_secs(30),
            memory_budget: ByteSize::mib(512),
            metrics_listen: "127.0.0.1:9464".into(),
            schemas_dir: PathBuf::from("schemas"),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

const OWNED_OPTIONS: &[&str] = &["enable.auto.commit", "enable.auto.offset.store", "group.id"];

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |key: &str, message: String| IngestError::Config {
            key: key.to_string(),
            message,
        };
        if self.brokers.trim().is_empty() {
            return Err(bad(
                "kafka.brokers",
                "must name at least one broker, host:port".into(),
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(bad("kafka.group_id", "must not be empty".into()));
        }
        match (&self.topics.is_empty(), &self.topic_pattern) {
            (true, None) => {
                return Err(bad(
                    "kafka.topics",
                    "set kafka.topics = [\"...\"] or kafka.topic_pattern".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(bad(
                    "kafka.topic_pattern",
                    "set either kafka.topics or kafka.topic_pattern, not both".into(),
                ))
            }
            (_, Some(p)) => {
                regex::Regex::new(p).map_err(|e| {
                    bad(
                        "kafka.topic_pattern",
                        format!("not a regular expression: {e}"),
                    )
                })?;
            }
            _ => {}
        }
        for topic in &self.topics {
            let ok = !topic.is_empty()
                && topic.len() <= 249
                && topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(bad(
                    "kafka.topics",
                    format!(
                        "{topic:?} is not a Kafka topic name ([a-zA-Z0-9._-], 1 to 249 characters)"
                    ),
                ));
            }
        }
        for key in OWNED_OPTIONS {
            if self.options.contains_key(*key) {
                return Err(bad(
                    &format!("kafka.options.{key}"),
                    "is managed by loglake (offsets live in the Delta table); remove it".into(),
                ));
            }
        }
        if let Some(strategy) = self.options.get("partition.assignment.strategy") {
            if strategy.contains("cooperative") {
                return Err(bad(
                    "kafka.options.partition.assignment.strategy",
                    "cooperative assignment is not supported; use range or roundrobin".into(),
                ));
            }
        }
        Ok(())
    }

    /// The subscription as librdkafka takes it: names, or one `^regex`.
    pub fn subscription(&self) -> Vec<String> {
        match &self.topic_pattern {
            Some(p) if p.starts_with('^') => vec![p.clone()],
            Some(p) => vec![format!("^{p}")],
            None => self.topics.clone(),
        }
    }
}

impl IngestConfig {
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |key: &str, message: &str| IngestError::Config {
            key: key.to_string(),
            message: message.to_string(),
        };
        if self.max_file_size < ByteSize::mib(1) {
            return Err(bad("ingest.max_file_size", "must be at least 1MiB"));
        }
        if self.memory_budget < ByteSize::mib(16) {
            return Err(bad("ingest.memory_budget", "must be at least 16MiB"));
        }
        if self.max_latency < Duration::from_millis(100) {
            return Err(bad("ingest.max_latency", "must be at least 100ms"));
        }
        if self.metrics_listen != "off"
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(bad(
                "ingest.metrics_listen",
                "expected host:port such as 127.0.0.1:9464, or \"off\"",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka() -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "g".into(),
            topics: vec!["app-logs".into()],
            topic_pattern: None,
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn valid_config_passes() {
        kafka().validate().unwrap();
        IngestConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let mut k = kafka();
        k.options.insert("enable.auto.commit".into(), "true".into());
        assert!(k
            .validate()
            .unwrap_err()
            .to_string()
            .contains("kafka.options.enable.auto.commit"));
        let mut k = kafka();
        k.topics = vec!["bad topic".into()];
        assert!(k
            .validate()
            .unwrap_err()
            .to_string()
            .contains("kafka.topics"));
        let mut k = kafka();
        k.topic_pattern = Some("^x".into());
        assert!(k.validate().unwrap_err().to_string().contains("not both"));
        let i = IngestConfig {
            metrics_listen: "nowhere".into(),
            ..Default::default()
        };
        assert!(i
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ingest.metrics_listen"));
    }

    #[test]
    fn human_units_parse() {
        let i: IngestConfig =
            toml::from_str("max_file_size = \"64MiB\"\nmax_latency = \"5s\"").unwrap();
        assert_eq!(i.max_file_size, ByteSize::mib(64));
        assert_eq!(i.max_latency, Duration::from_secs(5));
        assert!(toml::from_str::<IngestConfig>("max_latency = 5").is_err());
    }
}
