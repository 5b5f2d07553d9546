//! `[compactor]`: typed, documented, validated.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::error::CompactError;

/// The default floor of `vacuum_delay`: a query or a writer may still be reading a snapshot
/// that needs a file that recently left the table.
pub const MIN_VACUUM_DELAY: Duration = Duration::from_secs(3600);

/// `[compactor]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompactorConfig {
    /// Merged files aim at this size ("256MiB"); files of at least half of it are left alone.
    pub target_file_size: ByteSize,
    /// An hour is closed, and may be rewritten, this long after it ends ("1h"): late records
    /// still arrive until then.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// An hour with fewer small files than this is left alone.
    pub min_files: usize,
    /// At most this many files are merged at once; more make several outputs (and a later
    /// pass merges those). Bounds memory: one input batch and one row group per input.
    pub max_fan_in: usize,
    /// Hours that ended longer ago than this are removed ("90d"); unset keeps forever.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Per-topic retention, overriding `retention` (topic name -> "30d").
    #[serde(with = "humantime_serde_map")]
    pub retention_per_topic: BTreeMap<String, Duration>,
    /// Files no longer in the table are deleted from the store this long after they left it,
    /// and unreferenced files (a crashed writer's) this long after they were written ("7d").
    #[serde(with = "humantime_serde")]
    pub vacuum_delay: Duration,
    /// The floor `vacuum_delay` may not go below ("1h"): a guard against a typo that would
    /// delete files a running query or a slow writer still needs.
    #[serde(with = "humantime_serde")]
    pub vacuum_min_delay: Duration,
    /// Delta log entries older than this (and older than the last checkpoint) are deleted
    /// ("1d"). Time travel reaches back this far.
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
    /// A checkpoint is written when this many commits followed the last one.
    pub checkpoint_every: u64,
    /// Tables a pass works on at once: loading logs, planning, checkpoints and vacuum
    /// listings are round trips to the store, and a lake of thousands of topics would spend
    /// its pass waiting on them one after another. Merges still run one at a time across
    /// the pass; what the other tables hold meanwhile is their snapshot (the live file
    /// list) and, during upkeep, a checkpoint being written or a vacuum's listing.
    pub table_concurrency: usize,
    /// `host:port` for `/metrics` and `/healthz` with `--interval`; "off" disables.
    pub metrics_listen: String,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        Self {
            target_file_size: ByteSize::mib(256),
            grace: Duration::from_secs(3600),
            min_files: 2,
            max_fan_in: 128,
            retention: None,
            retention_per_topic: BTreeMap::new(),
            vacuum_delay: Duration::from_secs(7 * 24 * 3600),
            vacuum_min_delay: MIN_VACUUM_DELAY,
            log_retention: Duration::from_secs(24 * 3600),
            checkpoint_every: 20,
            table_concurrency: 8,
            metrics_listen: "127.0.0.1:9465".into(),
        }
    }
}

/// `humantime_serde` for a map of durations.
mod humantime_serde_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k.clone(), humantime::format_duration(*v).to_string()))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                humantime::parse_duration(&v)
                    .map(|d| (k.clone(), d))
                    .map_err(|e| serde::de::Error::custom(format!("{k}: {v:?}: {e}")))
            })
            .collect()
    }
}

impl CompactorConfig {
    pub fn validate(&self) -> Result<(), CompactError> {
        let bad = |key: &str, message: &str| CompactError::Config {
            key: key.to_string(),
            message: message.to_string(),
        };
        if self.target_file_size < ByteSize::mib(1) {
            return Err(bad("compactor.target_file_size", "must be at least 1MiB"));
        }
        if self.min_files < 2 {
            return Err(bad("compactor.min_files", "must be at least 2"));
        }
        if self.max_fan_in < 2 {
            return Err(bad("compactor.max_fan_in", "must be at least 2"));
        }
        if self.vacuum_delay < self.vacuum_min_delay {
            return Err(bad(
                "compactor.vacuum_delay",
                "must be at least compactor.vacuum_min_delay (1h by default): a reader may still need a file that recently left the table",
            ));
        }
        if self.log_retention < Duration::from_secs(60) {
            return Err(bad("compactor.log_retention", "must be at least 1m"));
        }
        if self.checkpoint_every == 0 {
            return Err(bad("compactor.checkpoint_every", "must be at least 1"));
        }
        if self.table_concurrency == 0 {
            return Err(bad("compactor.table_concurrency", "must be at least 1"));
        }
        let retentions = self
            .retention
            .iter()
            .chain(self.retention_per_topic.values());
        if retentions
            .into_iter()
            .any(|r| *r < self.grace + Duration::from_secs(3600))
        {
            return Err(bad(
                "compactor.retention",
                "must be longer than an hour plus the grace period: it would delete hours still being written",
            ));
        }
        if self.metrics_listen != "off"
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(bad(
                "compactor.metrics_listen",
                "expected host:port such as 127.0.0.1:9465, or \"off\"",
            ));
        }
        Ok(())
    }

    /// The retention of `topic`, if any.
    pub fn retention_for(&self, topic: &str) -> Option<Duration> {
        self.retention_per_topic
            .get(topic)
            .copied()
            .or(self.retention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_units_parse() {
        CompactorConfig::default().validate().unwrap();
        let c: CompactorConfig = toml::from_str(
            "target_file_size = \"64MiB\"\ngrace = \"30m\"\nretention = \"90d\"\n\
             [retention_per_topic]\n\"audit-logs\" = \"400d\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.target_file_size, ByteSize::mib(64));
        assert_eq!(
            c.retention_for("audit-logs"),
            Some(Duration::from_secs(400 * 86400))
        );
        assert_eq!(
            c.retention_for("app-logs"),
            Some(Duration::from_secs(90 * 86400))
        );
        assert!(toml::from_str::<CompactorConfig>("grace = 5").is_err());
        assert!(toml::from_str::<CompactorConfig>("[retention_per_topic]\nx = \"soon\"").is_err());
    }

    #[test]
    fn unsafe_values_name_the_key() {
        let cases = [
            (
                CompactorConfig {
                    vacuum_delay: Duration::from_secs(60),
                    ..Default::default()
                },
                "compactor.vacuum_delay",
            ),
            (
                CompactorConfig {
                    retention: Some(Duration::from_secs(1800)),
                    ..Default::default()
                },
                "compactor.retention",
            ),
            (
                CompactorConfig {
                    table_concurrency: 0,
                    ..Default::default()
                },
                "compactor.table_concurrency",
            ),
        ];
        for (config, key) in cases {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }
}
