//! The schema file model: what a user writes in `schemas/<topic>.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::timestamp::TimestampFormat;

/// Column names loglake itself writes; a typed column may not reuse them.
pub(crate) const RESERVED_COLUMNS: &[&str] = &[
    "timestamp",
    "host",
    "level",
    "message",
    "attributes",
    "date",
    "hour",
    "_kafka_partition",
    "_kafka_offset",
    "_kafka_timestamp",
];

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("could not read schema file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("schema file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("schema {name}: {message}")]
    Invalid { name: String, message: String },
}

/// How a topic's payloads are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A payload whose first non-blank byte is `{` is JSON (and must parse); anything else
    /// is a plain text line.
    #[default]
    Auto,
    /// Every payload must be a JSON object; anything else is quarantined.
    Json,
    /// Every payload is a text line; with `pattern`, it must match.
    Text,
}

/// The Arrow type of a typed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Bool,
    Timestamp,
}

/// A typed column: a field of the record promoted out of `attributes`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name in the table (`[a-z_][a-z0-9_]*`).
    pub name: String,
    /// Column type; a value that cannot be converted sends the record to quarantine.
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Field to read: a top-level key, a dotted path into nested objects (`http.status`),
    /// or a named capture of `pattern`. Defaults to `name`.
    #[serde(default)]
    pub field: Option<String>,
}

impl ColumnSpec {
    pub fn field(&self) -> &str {
        self.field.as_deref().unwrap_or(&self.name)
    }
}

/// One topic's schema, as written in `schemas/<topic>.toml`. Every key is optional: an
/// empty file is the default schema.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicSchema {
    /// `auto` (default), `json` or `text`.
    pub format: Format,
    /// Fields tried, in order, for the event time.
    pub timestamp_fields: Vec<String>,
    /// How to read the event time: `auto` (RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` as UTC, epoch
    /// seconds/ms/µs/ns by magnitude), `rfc3339`, `unix_s`, `unix_ms`, `unix_us`, `unix_ns`,
    /// or a chrono strftime pattern such as `%y%m%d %H%M%S` (read as UTC).
    pub timestamp_format: TimestampFormat,
    /// Fields tried, in order, for the host. Then the Kafka key, then `unknown`.
    pub host_fields: Vec<String>,
    /// Fields tried, in order, for the message.
    pub message_fields: Vec<String>,
    /// Fields tried, in order, for the level.
    pub level_fields: Vec<String>,
    /// For text payloads: a regular expression with named captures. Captures named like a
    /// core column (`timestamp`, `host`, `level`, `message`) or a typed column fill it; the
    /// others go to `attributes`. A line that does not match is quarantined.
    pub pattern: Option<String>,
    /// Typed columns, in table order.
    pub columns: Vec<ColumnSpec>,
    /// Records larger than this many bytes are quarantined (default 1 MiB).
    pub max_record_bytes: usize,
    /// Event times (and Kafka record times) further than this many seconds ahead of the
    /// worker's clock are absurd: an event time falls back to the Kafka time, or the time of
    /// receipt (the original value stays in `attributes`, the Kafka time in `_kafka_timestamp`).
    pub max_future_skew_secs: i64,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Default for TopicSchema {
    fn default() -> Self {
        Self {
            format: Format::Auto,
            timestamp_fields: strings(&["timestamp", "@timestamp", "time", "ts"]),
            timestamp_format: TimestampFormat::Auto,
            host_fields: strings(&["host", "hostname", "host.name"]),
            message_fields: strings(&["message", "msg", "log"]),
            level_fields: strings(&["level", "severity", "log.level"]),
            pattern: None,
            columns: Vec::new(),
            max_record_bytes: 1024 * 1024,
            max_future_skew_secs: 24 * 3600,
        }
    }
}

impl TopicSchema {
    /// Parses a schema file's text; `name` is used in error messages.
    pub fn from_toml(name: &str, text: &str) -> Result<Self, SchemaError> {
        let schema: TopicSchema = toml::from_str(text).map_err(|e| SchemaError::Parse {
            path: PathBuf::from(name),
            message: e.to_string(),
        })?;
        schema.validate(name)?;
        Ok(schema)
    }

    /// Checks what serde cannot: names, the pattern, and that core fields exist.
    pub fn validate(&self, name: &str) -> Result<(), SchemaError> {
        let invalid = |message: String| SchemaError::Invalid {
            name: name.to_string(),
            message,
        };
        let mut seen = std::collections::HashSet::new();
        for column in &self.columns {
            let ok =
                column.name.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_lowercase() || (i > 0 && c.is_ascii_digit())
                });
            if column.name.is_empty() || !ok {
                return Err(invalid(format!(
                    "column name {:?} must match [a-z_][a-z0-9_]*",
                    column.name
                )));
            }
            if RESERVED_COLUMNS.contains(&column.name.as_str()) {
                return Err(invalid(format!(
                    "column name {:?} is reserved by loglake",
                    column.name
                )));
            }
            if !seen.insert(column.name.clone()) {
                return Err(invalid(format!(
                    "column {:?} is declared twice",
                    column.name
                )));
            }
        }
        if let Some(pattern) = &self.pattern {
            regex::Regex::new(pattern).map_err(|e| invalid(format!("pattern: {e}")))?;
            if self.format == Format::Json {
                return Err(invalid(
                    "pattern needs format = \"text\" or \"auto\"".into(),
                ));
            }
        }
        if self.max_record_bytes == 0 {
            return Err(invalid("max_record_bytes must be above 0".into()));
        }
        if self.max_future_skew_secs < 0 {
            return Err(invalid("max_future_skew_secs must not be negative".into()));
        }
        Ok(())
    }
}

/// Every topic's schema: the files of a schemas directory, and the default for the rest.
#[derive(Debug, Clone, Default)]
pub struct SchemaSet {
    by_topic: BTreeMap<String, TopicSchema>,
    default: TopicSchema,
}

impl SchemaSet {
    /// Reads every `*.toml` file of `dir`; the file stem is the topic name, and `_default.toml`
    /// replaces the built-in default. A missing directory means "defaults only".
    pub fn load_dir(dir: &Path) -> Result<Self, SchemaError> {
        let mut set = SchemaSet::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(set),
            Err(source) => {
                return Err(SchemaError::Read {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        for entry in entries {
            let path = entry
                .map_err(|source| SchemaError::Read {
                    path: dir.to_path_buf(),
                    source,
                })?
                .path();
            // `Cargo.toml`: in this repository `schemas/` is also the schemas crate, so the
            // default `schemas_dir = "schemas"` run from a checkout must not read its manifest.
            if path.extension().and_then(|e| e.to_str()) != Some("toml")
                || path.file_name().and_then(|n| n.to_str()) == Some("Cargo.toml")
            {
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Read {
                path: path.clone(),
                source,
            })?;
            let schema = TopicSchema::from_toml(&path.display().to_string(), &text)?;
            if stem == "_default" {
                set.default = schema;
            } else {
                set.by_topic.insert(stem.to_string(), schema);
            }
        }
        Ok(set)
    }

    pub fn insert(&mut self, topic: impl Into<String>, schema: TopicSchema) {
        self.by_topic.insert(topic.into(), schema);
    }

    /// The schema for `topic`: its own file, else the default.
    pub fn for_topic(&self, topic: &str) -> &TopicSchema {
        self.by_topic.get(topic).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(
            TopicSchema::from_toml("t", "").unwrap(),
            TopicSchema::default()
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = TopicSchema::from_toml("t", "formt = \"json\"").unwrap_err();
        assert!(err.to_string().contains("formt"), "{err}");
    }

    #[test]
    fn reserved_and_bad_column_names_are_refused() {
        for name in ["host", "Status", "1a", ""] {
            let text = format!("[[columns]]\nname = {name:?}\ntype = \"int64\"\n");
            assert!(TopicSchema::from_toml("t", &text).is_err(), "{name}");
        }
    }

    #[test]
    fn bad_pattern_is_refused() {
        let err =
            TopicSchema::from_toml("t", "format = \"text\"\npattern = \"(?P<x\"").unwrap_err();
        assert!(err.to_string().contains("pattern"), "{err}");
    }

    #[test]
    fn directory_files_are_per_topic() {
        let dir = std::env::temp_dir().join(format!("loglake-schemas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("nginx.toml"), "format = \"json\"").unwrap();
        let set = SchemaSet::load_dir(&dir).unwrap();
        assert_eq!(set.for_topic("nginx").format, Format::Json);
        assert_eq!(set.for_topic("other").format, Format::Auto);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn shipped_examples_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let set = super::SchemaSet::load_dir(&dir).unwrap();
        assert_eq!(set.for_topic("hdfs").columns.len(), 2);
        assert_eq!(set.for_topic("nginx-access").columns.len(), 4);
    }

    #[test]
    fn the_crate_folder_itself_is_a_valid_schemas_dir() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let set = super::SchemaSet::load_dir(dir).unwrap();
        assert_eq!(set.for_topic("Cargo"), &super::TopicSchema::default());
    }
}
