//! `[agent]` and its `[[agent.inputs]]`: typed, documented, validated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// `[agent]`: where positions are kept, how files are watched, and what is collected.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Directory of the positions file (`positions.json`) and the lock that keeps a second
    /// agent off it. Required.
    pub state_dir: Option<PathBuf>,
    /// `/metrics` and `/healthz` (host:port, port 0 picks one), or "off".
    pub metrics_listen: String,
    /// The host name every record carries and is keyed by. Default: the machine's.
    pub host: Option<String>,
    /// How often the globs are expanded and every file is checked for growth, rotation and
    /// truncation. Filesystem notifications only wake the agent earlier.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Filesystem notifications as a wake-up hint; false polls only (NFS and other network
    /// filesystems deliver none).
    pub notify: bool,
    /// A file that left its path (renamed, deleted) is read to its end, then let go once it
    /// has not grown for this long.
    #[serde(with = "humantime_serde")]
    pub rotate_wait: Duration,
    /// A last line without its newline is sent once the file has not grown for this long.
    #[serde(with = "humantime_serde")]
    pub partial_line_timeout: Duration,
    /// Longer lines are cut to this many bytes and marked `"truncated": true`.
    pub max_line_bytes: ByteSize,
    /// Files held open at once; past it, files wait until an idle one is closed.
    pub max_open_files: usize,
    /// How often acknowledged positions are written.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// On SIGTERM, how long to wait for the broker to acknowledge what was sent.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Bytes handed to the producer and not yet acknowledged; past it the agent stops
    /// reading (the files are the buffer).
    pub max_in_flight: ByteSize,
    /// librdkafka producer properties, as is, after loglake's (`"compression.type" = "zstd"`).
    pub producer_options: BTreeMap<String, String>,
    /// What to collect.
    pub inputs: Vec<InputConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: None,
            metrics_listen: "127.0.0.1:9466".into(),
            host: None,
            poll_interval: Duration::from_secs(1),
            notify: true,
            rotate_wait: Duration::from_secs(5),
            partial_line_timeout: Duration::from_secs(5),
            max_line_bytes: ByteSize::kib(512),
            max_open_files: 1024,
            checkpoint_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            max_in_flight: ByteSize::mib(4),
            producer_options: BTreeMap::new(),
            inputs: Vec::new(),
        }
    }
}

/// One `[[agent.inputs]]`: a set of files and the topic their lines go to.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Globs of absolute paths (`/var/log/app/*.log`; `**` descends).
    pub paths: Vec<String>,
    /// Globs of paths to leave out (`/var/log/app/*.gz`).
    #[serde(default)]
    pub exclude: Vec<String>,
    pub topic: String,
    /// The `input` label of this input's metrics. Default: the topic.
    #[serde(default)]
    pub name: Option<String>,
    /// Static fields added to every record (`{ service = "api" }`).
    #[serde(default)]
    pub labels: BTreeMap<String, serde_json::Value>,
    /// Where files found at the very first start (no positions file yet) are read from.
    /// Files that appear later are always read from their start.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// A line matching this regex starts a new record; other lines join the one before.
    #[serde(default)]
    pub multiline_start: Option<String>,
    /// A line matching this regex joins the record before; others start a new one.
    #[serde(default)]
    pub multiline_continue: Option<String>,
    /// A multi-line record is sent once no line has joined it for this long.
    #[serde(default = "default_multiline_timeout", with = "humantime_serde")]
    pub multiline_timeout: Duration,
    /// A multi-line record is sent at this many lines; the next line starts another.
    #[serde(default = "default_multiline_max_lines")]
    pub multiline_max_lines: usize,
}

fn default_multiline_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_multiline_max_lines() -> usize {
    1000
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// Fields the agent writes itself; a label may not take their names.
const OWN_FIELDS: &[&str] = &[
    "timestamp",
    "host",
    "message",
    "file",
    "truncated",
    "invalid_utf8",
];

impl InputConfig {
    /// The `input` label.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.topic)
    }
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), AgentError> {
        let state_dir = self
            .state_dir
            .as_ref()
            .ok_or_else(|| AgentError::config("agent.state_dir", "is required"))?;
        if state_dir.as_os_str().is_empty() {
            return Err(AgentError::config("agent.state_dir", "is empty"));
        }
        if self.metrics_listen != "off"
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(AgentError::config(
                "agent.metrics_listen",
                "expected host:port such as 127.0.0.1:9466, or \"off\"",
            ));
        }
        if let Some(host) = &self.host {
            if host.trim().is_empty() {
                return Err(AgentError::config("agent.host", "is empty"));
            }
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err(AgentError::config(
                "agent.poll_interval",
                "must be at least 10ms",
            ));
        }
        if self.max_line_bytes < ByteSize::b(64) {
            return Err(AgentError::config(
                "agent.max_line_bytes",
                "must be at least 64B",
            ));
        }
        if self.max_open_files == 0 {
            return Err(AgentError::config(
                "agent.max_open_files",
                "must be at least 1",
            ));
        }
        if self.max_in_flight < ByteSize::mib(1) {
            return Err(AgentError::config(
                "agent.max_in_flight",
                "must be at least 1MiB",
            ));
        }
        if self.inputs.is_empty() {
            return Err(AgentError::config(
                "agent.inputs",
                "no [[agent.inputs]]: nothing to collect",
            ));
        }
        for (i, input) in self.inputs.iter().enumerate() {
            let key = |k: &str| format!("agent.inputs[{i}].{k}");
            if input.paths.is_empty() {
                return Err(AgentError::config(&key("paths"), "is empty"));
            }
            for p in input.paths.iter().chain(&input.exclude) {
                if !p.starts_with('/') {
                    return Err(AgentError::config(
                        &key("paths"),
                        format!("{p:?}: paths must be absolute"),
                    ));
                }
                glob::Pattern::new(p).map_err(|e| {
                    AgentError::config(&key("paths"), format!("{p:?}: invalid glob: {e}"))
                })?;
            }
            if input.topic.is_empty() || input.topic.ends_with("__rejected") {
                return Err(AgentError::config(
                    &key("topic"),
                    "must be a topic name (and not end in __rejected)",
                ));
            }
            for label in input.labels.keys() {
                if OWN_FIELDS.contains(&label.as_str()) {
                    return Err(AgentError::config(
                        &key("labels"),
                        format!("{label:?} is a field the agent writes itself"),
                    ));
                }
            }
            if input.multiline_start.is_some() && input.multiline_continue.is_some() {
                return Err(AgentError::config(
                    &key("multiline_start"),
                    "set multiline_start or multiline_continue, not both",
                ));
            }
            for (k, re) in [
                ("multiline_start", &input.multiline_start),
                ("multiline_continue", &input.multiline_continue),
            ] {
                if let Some(re) = re {
                    regex::bytes::Regex::new(re)
                        .map_err(|e| AgentError::config(&key(k), format!("invalid regex: {e}")))?;
                }
            }
            if input.multiline_max_lines == 0 {
                return Err(AgentError::config(
                    &key("multiline_max_lines"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_default()
    }

    /// The configured host, else the machine's name.
    pub fn host(&self) -> Result<String, AgentError> {
        if let Some(h) = &self.host {
            return Ok(h.trim().to_string());
        }
        let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string());
        from_kernel
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                AgentError::config("agent.host", "the machine's host name is unknown: set it")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AgentConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn a_minimal_config_takes_the_defaults_and_validates() {
        let c = parse(
            r#"
            state_dir = "/var/lib/loglake-agent"
            [[inputs]]
            paths = ["/var/log/app/*.log"]
            topic = "app-logs"
            labels = { service = "api", tier = 2 }
            "#,
        );
        c.validate().expect("valid");
        assert_eq!(c.inputs[0].name(), "app-logs");
        assert_eq!(c.inputs[0].read_from, ReadFrom::Beginning);
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(c.inputs[0].labels["tier"], serde_json::json!(2));
    }

    #[test]
    fn mistakes_name_the_key() {
        let cases = [
            ("paths = [\"var/log/*.log\"]\ntopic = \"t\"", "paths must be absolute"),
            ("paths = [\"/a/[\"]\ntopic = \"t\"", "invalid glob"),
            ("paths = [\"/a\"]\ntopic = \"t__rejected\"", "__rejected"),
            (
                "paths = [\"/a\"]\ntopic = \"t\"\nlabels = { host = \"x\" }",
                "agent writes itself",
            ),
            (
                "paths = [\"/a\"]\ntopic = \"t\"\nmultiline_start = \"(\"",
                "invalid regex",
            ),
            (
                "paths = [\"/a\"]\ntopic = \"t\"\nmultiline_start = \"a\"\nmultiline_continue = \"b\"",
                "not both",
            ),
        ];
        for (input, want) in cases {
            let c = parse(&format!("state_dir = \"/s\"\n[[inputs]]\n{input}"));
            let err = c.validate().expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(err.contains("agent.inputs[0]"), "{err}");
        }
        let err = parse("[[inputs]]\npaths = [\"/a\"]\ntopic = \"t\"")
            .validate()
            .expect_err("no state dir")
            .to_string();
        assert!(err.contains("agent.state_dir"), "{err}");
        let err = parse("state_dir = \"/s\"")
            .validate()
            .expect_err("no inputs")
            .to_string();
        assert!(err.contains("nothing to collect"), "{err}");
    }
}
