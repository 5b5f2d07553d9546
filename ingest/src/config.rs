//! `[kafka]` and `[ingest]`: typed, documented, validated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use loglake_lake::Secret;
use serde::{Deserialize, Serialize};

use crate::error::IngestError;

mod security;
use security::is_secret_option;
pub use security::{KafkaAuth, SaslMechanism, SecurityProtocol};

/// `[kafka]`: where records come from, and how to connect securely.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
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
    /// How the cluster authenticates clients: `none` (TLS and SASL from the keys below) or
    /// `msk_iam` (Amazon MSK IAM: SASL/OAUTHBEARER over TLS, signed with the standard AWS
    /// credential chain).
    #[serde(default)]
    pub auth: KafkaAuth,
    /// AWS region for `auth = "msk_iam"`; defaults to `AWS_REGION` / `AWS_DEFAULT_REGION`.
    #[serde(default)]
    pub aws_region: Option<String>,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl` (librdkafka's
    /// `security.protocol`). Default: plaintext, or sasl_ssl with `auth = "msk_iam"`.
    #[serde(default)]
    pub security_protocol: Option<SecurityProtocol>,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// Never logged nor printed in errors.
    #[serde(default)]
    pub sasl_password: Option<Secret>,
    /// PEM file of the CA(s) that signed the brokers' certificates; the system store when
    /// unset.
    #[serde(default)]
    pub ssl_ca_location: Option<PathBuf>,
    /// Client certificate (PEM) for clusters that authenticate clients by TLS (mTLS).
    #[serde(default)]
    pub ssl_certificate_location: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub ssl_key_location: Option<PathBuf>,
    /// Password of an encrypted `ssl_key_location`.
    #[serde(default)]
    pub ssl_key_password: Option<Secret>,
    /// Passed to librdkafka as is (`"session.timeout.ms" = "6000"`, ...), after the keys
    /// above. loglake owns offset handling: `enable.auto.commit`, `enable.auto.offset.store`
    /// and cooperative assignment are refused.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `options` may carry a password passed as is (`sasl.password`, `ssl.key.password`).
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_option(k) { "***" } else { v };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("topic_pattern", &self.topic_pattern)
            .field("auth", &self.auth)
            .field("aws_region", &self.aws_region)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &self.sasl_password)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("ssl_key_password", &self.ssl_key_password)
            .field("options", &options)
            .finish()
    }
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
    /// A partition whose fetch position has not moved for this long while the broker holds
    /// records past it is reported stalled: metric, ERROR log ("15s").
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// `/healthz` fails while a partition has been stalled this long ("60s").
    #[serde(with = "humantime_serde")]
    pub stall_unhealthy_after: Duration,
    /// A stalled partition whose next record batch fails to decode (corrupt, unknown codec)
    /// this many times in a row, each from a fresh connection, has that batch's offsets
    /// quarantined as `undecodable_batch` and moves on. 0 never skips: the partition stays
    /// stalled until an operator acts.
    pub undecodable_attempts: u32,
    /// Topics whose recreation (deleted and created again: offsets restarted below what the
    /// table archived) is accepted: their partitions start over at the new topic's first
    /// offset. Without it such a partition stops, with an ERROR log and the
    /// `loglake_ingest_partition_blocked` metric. Remove the topic again once it resumed, or
    /// a later recreation is accepted too.
    pub accept_recreated_topics: Vec<String>,
    /// Distinct hosts one topic may write per hour of the worker's clock, over all its
    /// flushes (10000). Past it, a record of a host not yet admitted this hour goes to the
    /// `_overflow` host, its own host kept in `attributes._original_host` (metric
    /// `loglake_ingest_overflow_rows_total`); a flush holds at most twice this many
    /// partitions. Bounds memory, files per flush and files per hour when a topic's host
    /// falls back to a key that is a request id.
    pub max_open_partitions: usize,
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
            stall_after: Duration::from_secs(15),
            stall_unhealthy_after: Duration::from_secs(60),
            undecodable_attempts: 3,
            max_open_partitions: 10_000,
            accept_recreated_topics: Vec::new(),
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
        if let Some(topic) = self
            .topics
            .iter()
            .find(|t| t.ends_with(loglake_lake::REJECTED_SUFFIX))
        {
            return Err(bad(
                "kafka.topics",
                format!(
                    "{topic:?} ends in {:?}, the suffix of quarantine tables: its table and app ids would                      collide with the quarantine of topic {:?}; archive it under another name",
                    loglake_lake::REJECTED_SUFFIX,
                    topic.trim_end_matches(loglake_lake::REJECTED_SUFFIX)
                ),
            ));
        }
        for key in OWNED_OPTIONS {
            if self.options.contains_key(*key) {
                return Err(bad(
                    &format!("kafka.options.{key}"),
                    "is managed by loglake (offsets live in the Delta table); remove it".into(),
                ));
            }
        }
        self.validate_security()?;
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
        if self.max_open_partitions == 0 {
            return Err(bad("ingest.max_open_partitions", "must be at least 1"));
        }
        if self.max_latency < Duration::from_millis(100) {
            return Err(bad("ingest.max_latency", "must be at least 100ms"));
        }
        if self.stall_after < Duration::from_secs(1) {
            return Err(bad("ingest.stall_after", "must be at least 1s"));
        }
        if self.stall_unhealthy_after < self.stall_after {
            return Err(bad(
                "ingest.stall_unhealthy_after",
                "must be at least ingest.stall_after",
            ));
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
        parse("")
    }

    fn parse(extra: &str) -> KafkaConfig {
        toml::from_str(&format!(
            "brokers = \"127.0.0.1:9092\"\ngroup_id = \"g\"\ntopics = [\"app-logs\"]\n{extra}"
        ))
        .unwrap()
    }

    fn error_of(extra: &str) -> String {
        parse(extra).validate().unwrap_err().to_string()
    }

    fn settings(c: &KafkaConfig) -> BTreeMap<&'static str, String> {
        c.client_settings()
            .into_iter()
            .map(|s| (s.key, s.value))
            .collect()
    }

    #[test]
    fn scram_over_tls_maps_onto_librdkafka() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let c = parse(&format!(
            "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
             sasl_username = \"archiver\"\nsasl_password = \"hunter2\"\nssl_ca_location = {:?}",
            ca.path()
        ));
        c.validate().unwrap();
        let s = settings(&c);
        assert_eq!(s["security.protocol"], "sasl_ssl");
        assert_eq!(s["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(s["sasl.username"], "archiver");
        assert_eq!(s["sasl.password"], "hunter2");
        assert_eq!(s["ssl.ca.location"], ca.path().display().to_string());
        let password = c
            .client_settings()
            .into_iter()
            .find(|s| s.key == "sasl.password")
            .unwrap();
        assert!(password.secret);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn a_topic_named_like_a_quarantine_table_is_refused() {
        let c: KafkaConfig =
            toml::from_str("brokers = \"b:9092\"\ntopics = [\"app-logs\", \"app-logs__rejected\"]")
                .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("kafka.topics") && err.contains("app-logs__rejected"),
            "{err}"
        );
    }

    #[test]
    fn upper_case_protocol_names_are_accepted() {
        let c = parse("security_protocol = \"SASL_PLAINTEXT\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password = \"p\"");
        c.validate().unwrap();
        assert_eq!(settings(&c)["security.protocol"], "sasl_plaintext");
    }

    #[test]
    fn plaintext_sets_nothing() {
        assert!(kafka().client_settings().is_empty());
    }

    #[test]
    fn msk_iam_implies_sasl_ssl_and_oauthbearer() {
        let c = parse("auth = \"msk_iam\"\naws_region = \"eu-west-1\"");
        c.validate().unwrap();
        let s = settings(&c);
        assert_eq!(s["security.protocol"], "sasl_ssl");
        assert_eq!(s["sasl.mechanism"], "OAUTHBEARER");
        assert!(error_of("auth = \"msk_iam\"\nsecurity_protocol = \"ssl\"")
            .contains("kafka.security_protocol"));
        assert!(error_of("auth = \"msk_iam\"\nsasl_mechanism = \"PLAIN\"")
            .contains("kafka.sasl_mechanism"));
        assert!(error_of("aws_region = \"eu-west-1\"").contains("kafka.aws_region"));
    }

    #[test]
    fn inconsistent_security_settings_name_the_key() {
        assert!(error_of("security_protocol = \"sasl_ssl\"").contains("kafka.sasl_mechanism"));
        assert!(error_of("sasl_mechanism = \"PLAIN\"").contains("kafka.sasl_mechanism"));
        assert!(error_of(
            "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"u\""
        )
        .contains("sasl_password"));
        let err =
            error_of("security_protocol = \"ssl\"\nssl_ca_location = \"/nonexistent/ca.pem\"");
        assert!(
            err.contains("kafka.ssl_ca_location") && err.contains("no such file"),
            "{err}"
        );
        let ca = tempfile::NamedTempFile::new().unwrap();
        let err = error_of(&format!("ssl_ca_location = {:?}", ca.path()));
        assert!(err.contains("does not use TLS"), "{err}");
        let err =
            error_of("security_protocol = \"ssl\"\n[options]\n\"security.protocol\" = \"ssl\"");
        assert!(err.contains("kafka.options.security.protocol"), "{err}");
        assert!(toml::from_str::<KafkaConfig>(
            "brokers = \"b:1\"\ntopics = [\"t\"]\nsecurity_protocol = \"tls\""
        )
        .is_err());
    }

    #[test]
    fn passwords_in_options_are_redacted() {
        let c =
            parse("[options]\n\"sasl.password\" = \"hunter2\"\n\"ssl.key.password\" = \"s3cret\"");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
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
