//! One Kafka record -> one row (or one rejection, with the reason).

use std::borrow::Cow;
use std::fmt;

use regex::Regex;
use serde_json::Value;

use crate::fields::{get_path, take_first_scalar, take_first_string, take_path, FieldPath, Held};
use crate::model::{ColumnSpec, ColumnType, Format, SchemaError, TopicSchema};
use crate::scan::{Fields, Wanted};
use crate::timestamp::{format_partition, parse_timestamp_value, MIN_EVENT_TIME_US};
use crate::val::Val;

/// A Kafka record as the mapper sees it: bytes plus coordinates.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The value; `None` for a tombstone.
    pub payload: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record timestamp (create or log-append time), if the broker gave one.
    pub kafka_timestamp_ms: Option<i64>,
    /// When this worker received the record; the last resort for the event time.
    pub received_at_us: i64,
}

impl<'a> RawRecord<'a> {
    /// A record of Kafka partition 0 with a value and no key or Kafka timestamp, as tests
    /// map them.
    pub fn keyless(payload: &'a [u8], offset: i64, received_at_us: i64) -> Self {
        Self {
            payload: Some(payload),
            key: None,
            partition: 0,
            offset,
            kafka_timestamp_ms: None,
            received_at_us,
        }
    }
}

/// The value of a typed column.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(i64),
}

/// One archived row. Partition values (`host`, `date`, `hour`) derive from it. Its strings
/// borrow from the record's bytes where the record holds them as they are (no escapes).
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// Event time, UTC microseconds.
    pub timestamp_us: i64,
    pub host: Cow<'a, str>,
    pub level: Option<Cow<'a, str>>,
    pub message: Option<Cow<'a, str>>,
    /// Typed columns, in schema order.
    pub columns: Vec<TypedValue<'a>>,
    /// Every field no column took, as a JSON object's text.
    pub attributes: Option<String>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub kafka_timestamp_us: Option<i64>,
}

impl Row<'_> {
    /// `(host, date, hour)`: the Hive partition this row belongs to.
    pub fn partition_values(&self) -> (String, String, String) {
        let (date, hour) = format_partition(self.timestamp_us);
        (self.host.to_string(), date, hour)
    }

    /// Moves the row to the partition of `host`, keeping the host it had in `attributes` as
    /// `_original_host` (unless the mapping already kept a raw value there): nothing a
    /// record said is lost when ingest routes it to its overflow host.
    pub fn reroute_host(&mut self, host: &str) {
        let original = std::mem::replace(&mut self.host, Cow::Owned(host.to_string()));
        let mut map = self
            .attributes
            .as_deref()
            .and_then(|a| serde_json::from_str::<serde_json::Map<String, Value>>(a).ok())
            .unwrap_or_default();
        map.entry(ORIGINAL_HOST)
            .or_insert_with(|| Value::String(original.into_owned()));
        self.attributes = Some(Value::Object(map).to_string());
    }

    /// Approximate bytes this row occupies in Arrow buffers; drives the memory budget.
    pub fn estimated_bytes(&self) -> usize {
        let strings: usize = self
            .columns
            .iter()
            .map(|c| match c {
                TypedValue::Str(s) => s.len() + 4,
                _ => 8,
            })
            .sum();
        48 + self.host.len()
            + self.level.as_ref().map_or(0, |s| s.len() + 4)
            + self.message.as_ref().map_or(0, |s| s.len() + 4)
            + self.attributes.as_ref().map_or(0, |s| s.len() + 4)
            + strings
    }
}

/// Why a record was quarantined instead of archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    Empty,
    TooLarge,
    InvalidUtf8,
    MalformedJson,
    NotAnObject,
    PatternMismatch,
    WrongType,
    /// Not a record's fault: Kafka handed over a record batch that cannot be decoded
    /// (corrupt, or compressed with a codec no client knows). Its offsets are quarantined
    /// without bytes so that every offset stays accounted for.
    UndecodableBatch,
    /// Not a record's fault: Kafka deleted a range of offsets (retention) before loglake read
    /// them. One row stands for the range (its offset is the first; the detail names the
    /// range and when it was found), so the table's offsets stay accounted for.
    OffsetGap,
}

impl RejectionKind {
    /// Stable code stored in the quarantine table's `reason_code` column.
    pub fn code(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge => "too_large",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::MalformedJson => "malformed_json",
            Self::NotAnObject => "not_an_object",
            Self::PatternMismatch => "pattern_mismatch",
            Self::WrongType => "wrong_type",
            Self::UndecodableBatch => "undecodable_batch",
            Self::OffsetGap => "offset_gap",
        }
    }
}

/// A record that cannot become a row, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub detail: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

impl std::error::Error for Rejection {}

fn reject(kind: RejectionKind, detail: impl Into<String>) -> Rejection {
    Rejection {
        kind,
        detail: detail.into(),
    }
}

/// A [`TopicSchema`] compiled for mapping.
#[derive(Debug, Clone)]
pub struct Mapper {
    schema: TopicSchema,
    pattern: Option<Regex>,
    /// Top-level JSON keys the mapping may take; all others go to `attributes` unparsed.
    wanted: Wanted,
    /// The schema's field names, resolved against `wanted`.
    paths: Paths,
}

/// The field names a [`TopicSchema`] tries, in its order, each resolved to slots.
#[derive(Debug, Clone)]
struct Paths {
    timestamp: Vec<FieldPath>,
    host: Vec<FieldPath>,
    message: Vec<FieldPath>,
    level: Vec<FieldPath>,
    /// One per typed column, in schema order.
    columns: Vec<FieldPath>,
    /// The slot of `_original_host`.
    original_host: usize,
    /// The pattern's named groups: index, name and slot (`None` when no name refers to it).
    captures: Vec<(usize, String, Option<usize>)>,
}

const LEVEL_WORDS: &[&str] = &[
    "TRACE", "DEBUG", "INFO", "NOTICE", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL",
];
const MAX_HOST_LEN: usize = 253;
/// Where the original host value goes when it had to be cleaned for a directory name.
const ORIGINAL_HOST: &str = "_original_host";

impl Mapper {
    pub fn new(schema: &TopicSchema) -> Result<Self, SchemaError> {
        schema.validate("schema")?;
        let pattern = schema
            .pattern
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| SchemaError::Invalid {
                name: "schema".into(),
                message: e.to_string(),
            })?;
        let mut wanted = Wanted::default();
        let mut paths = Paths {
            timestamp: FieldPath::many(&mut wanted, &schema.timestamp_fields),
            host: FieldPath::many(&mut wanted, &schema.host_fields),
            message: FieldPath::many(&mut wanted, &schema.message_fields),
            level: FieldPath::many(&mut wanted, &schema.level_fields),
            columns: schema
                .columns
                .iter()
                .map(|c| FieldPath::new(&mut wanted, c.field()))
                .collect(),
            original_host: wanted.add(ORIGINAL_HOST),
            captures: Vec::new(),
        };
        if let Some(pattern) = &pattern {
            paths.captures = pattern
                .capture_names()
                .enumerate()
                .filter_map(|(group, name)| {
                    name.map(|name| (group, name.to_string(), wanted.slot(name)))
                })
                .collect();
        }
        Ok(Self {
            schema: schema.clone(),
            pattern,
            wanted,
            paths,
        })
    }

    pub fn schema(&self) -> &TopicSchema {
        &self.schema
    }

    pub fn map<'a>(&self, raw: &RawRecord<'a>) -> Result<Row<'a>, Rejection> {
        let payload = match raw.payload {
            Some(p) if !p.is_empty() => p,
            _ => return Err(reject(RejectionKind::Empty, "record has no value")),
        };
        if payload.len() > self.schema.max_record_bytes {
            return Err(reject(
                RejectionKind::TooLarge,
                format!(
                    "record is {} bytes, max_record_bytes is {}",
                    payload.len(),
                    self.schema.max_record_bytes
                ),
            ));
        }
        // SIMD validation (a fifth of the cost of std's on log lines); std's only to say where
        // a bad record goes wrong.
        let text = simdutf8::basic::from_utf8(payload).map_err(|_| {
            let at = std::str::from_utf8(payload).map_or_else(|e| e.valid_up_to(), str::len);
            reject(
                RejectionKind::InvalidUtf8,
                format!("invalid UTF-8 at byte {at}"),
            )
        })?;
        let is_json = match self.schema.format {
            Format::Json => true,
            Format::Text => false,
            Format::Auto => text.trim_start().starts_with('{'),
        };
        if is_json && text.trim_start().starts_with('{') {
            let fields = Fields::scan(text, &self.wanted)
                .map_err(|e| reject(RejectionKind::MalformedJson, e.to_string()))?;
            return self.row_from_fields(fields, None, raw);
        }
        if is_json {
            // Not an object: parse it whole only to say what it is instead.
            return Err(match serde_json::from_str::<Value>(text) {
                Ok(other) => reject(
                    RejectionKind::NotAnObject,
                    format!("expected a JSON object, got {}", json_type(&other)),
                ),
                Err(e) => reject(RejectionKind::MalformedJson, e.to_string()),
            });
        }
        let line = text.trim_end_matches(['\n', '\r']);
        let Some(pattern) = &self.pattern else {
            return self.row_from_fields(Fields::held(Held::default()), Some(line), raw);
        };
        let Some(captures) = pattern.captures(line) else {
            return Err(reject(
                RejectionKind::PatternMismatch,
                "line does not match the topic's pattern",
            ));
        };
        let mut fields = Held::default();
        for (group, name, slot) in &self.paths.captures {
            if let Some(m) = captures.get(*group) {
                fields.insert(
                    *slot,
                    name.clone().into(),
                    Val::Str(m.as_str().into()),
                    None,
                );
            }
        }
        self.row_from_fields(Fields::held(fields), Some(line), raw)
    }

    fn row_from_fields<'a>(
        &self,
        mut all: Fields<'a>,
        line: Option<&'a str>,
        raw: &RawRecord<'a>,
    ) -> Result<Row<'a>, Rejection> {
        let s = &self.schema;
        let paths = &self.paths;
        let fields = &mut all.held;
        let kafka_timestamp_us = raw
            .kafka_timestamp_ms
            .filter(|ms| *ms >= 0)
            .map(|ms| ms.saturating_mul(1000));
        // "Ahead" is measured from the worker's clock, whatever clock a record claims: a
        // producer clock years ahead (or a hostile CreateTime) must not create a future hour.
        // The Kafka time keeps its raw value in `_kafka_timestamp`; an unusable event time
        // stays in `attributes`.
        let latest_us = raw
            .received_at_us
            .saturating_add(s.max_future_skew_secs.saturating_mul(1_000_000));
        let plausible_kafka_us =
            kafka_timestamp_us.filter(|us| (MIN_EVENT_TIME_US..=latest_us).contains(us));

        let mut timestamp_us = None;
        for path in &paths.timestamp {
            let Some(value) = get_path(fields, path) else {
                continue;
            };
            match parse_timestamp_value(value, &s.timestamp_format) {
                Some(us) if us <= latest_us => {
                    take_path(fields, path);
                    timestamp_us = Some(us);
                    break;
                }
                // Unusable: left in attributes so nothing is lost; the Kafka time decides.
                _ => continue,
            }
        }
        let timestamp_us = timestamp_us
            .or(plausible_kafka_us)
            .unwrap_or(raw.received_at_us);

        let mut host = take_first_string(fields, &paths.host);
        if host.is_none() {
            host = raw
                .key
                .and_then(|k| std::str::from_utf8(k).ok())
                .filter(|k| !k.is_empty())
                .map(Cow::Borrowed);
        }
        let host = match host {
            Some(h) if is_clean_host(&h) => h,
            Some(h) => {
                let clean = sanitize_host(&h);
                let slot = Some(paths.original_host);
                fields.insert(slot, ORIGINAL_HOST.into(), Val::Str(h), None);
                Cow::Owned(clean)
            }
            None => Cow::Borrowed("unknown"),
        };

        let mut message = take_first_scalar(fields, &paths.message);
        let mut level = take_first_scalar(fields, &paths.level);

        let mut columns = Vec::with_capacity(s.columns.len());
        for (spec, path) in s.columns.iter().zip(&paths.columns) {
            let value = match take_path(fields, path) {
                None | Some(Val::Null) => TypedValue::Null,
                Some(v) => convert(&v, spec, s)?,
            };
            columns.push(value);
        }
        if let Some(line) = line {
            if message.is_none() {
                message = Some(Cow::Borrowed(line));
            }
            if level.is_none() && self.pattern.is_none() {
                level = detect_level(line).map(Cow::Borrowed);
            }
        } else if level.is_none() {
            // A text line a collector wrapped as {"message": ...} (loglake agent, Vector,
            // Fluent Bit, Filebeat) has its level in the text, as a raw text line does.
            level = message.as_deref().and_then(detect_level).map(Cow::Borrowed);
        }
        let attributes = all.into_attributes();
        Ok(Row {
            timestamp_us,
            host,
            level,
            message,
            columns,
            attributes,
            kafka_partition: raw.partition,
            kafka_offset: raw.offset,
            kafka_timestamp_us,
        })
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn convert<'a>(
    v: &Val<'a>,
    spec: &ColumnSpec,
    schema: &TopicSchema,
) -> Result<TypedValue<'a>, Rejection> {
    let converted = match (spec.column_type, v) {
        (ColumnType::String, Val::Str(s)) => Some(TypedValue::Str(s.clone())),
        (ColumnType::String, Val::Number(_) | Val::Bool(_)) => {
            Some(TypedValue::Str(Cow::Owned(v.to_json())))
        }
        (ColumnType::Int64, Val::Number(n)) => n.as_i64().map(TypedValue::Int),
        (ColumnType::Int64, Val::Str(s)) => s.trim().parse().ok().map(TypedValue::Int),
        (ColumnType::Float64, Val::Number(n)) => n.as_f64().map(TypedValue::Float),
        (ColumnType::Float64, Val::Str(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(TypedValue::Float),
        (ColumnType::Bool, Val::Bool(b)) => Some(TypedValue::Bool(*b)),
        (ColumnType::Bool, Val::Str(s)) => match s.trim() {
            "true" | "TRUE" | "True" => Some(TypedValue::Bool(true)),
            "false" | "FALSE" | "False" => Some(TypedValue::Bool(false)),
            _ => None,
        },
        (ColumnType::Timestamp, v) => {
            parse_timestamp_value(v, &schema.timestamp_format).map(TypedValue::Timestamp)
        }
        _ => None,
    };
    converted.ok_or_else(|| {
        let mut shown = v.to_json();
        if shown.len() > 64 {
            let mut cut = 64;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
            shown.push('…');
        }
        reject(
            RejectionKind::WrongType,
            format!(
                "field {:?} of column {:?}: expected {:?}, got {shown}",
                spec.field(),
                spec.name,
                spec.column_type
            ),
        )
    })
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')
}

/// A host that [`sanitize_host`] would leave as it is.
fn is_clean_host(host: &str) -> bool {
    host.len() <= MAX_HOST_LEN && host.chars().all(is_host_char) && !host.chars().all(|c| c == '.')
}

/// Host names become directory names: keep them to a safe alphabet and length.
fn sanitize_host(host: &str) -> String {
    let mut clean: String = host
        .chars()
        .map(|c| if is_host_char(c) { c } else { '_' })
        .collect();
    clean.truncate(MAX_HOST_LEN);
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        return "unknown".into();
    }
    clean
}

/// The first level word (`INFO`, `ERROR`, ...) among the first words of a text line.
fn detect_level(line: &str) -> Option<&'static str> {
    line.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .take(12)
        .find_map(|word| LEVEL_WORDS.iter().find(|l| **l == word).copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ColumnSpec;

    const KAFKA_MS: i64 = 1_767_323_045_000; // 2026-01-02T03:04:05Z

    fn raw(payload: &[u8]) -> RawRecord<'_> {
        RawRecord {
            payload: Some(payload),
            key: Some(b"key-host"),
            partition: 3,
            offset: 9,
            kafka_timestamp_ms: Some(KAFKA_MS),
            received_at_us: KAFKA_MS * 1000 + 5,
        }
    }

    fn default_mapper() -> Mapper {
        Mapper::new(&TopicSchema::default()).unwrap()
    }

    #[test]
    fn a_wrapped_text_line_gets_its_level_from_the_message() {
        let row = default_mapper()
            .map(&raw(br#"{"timestamp":"2026-01-02T01:00:00Z","host":"h","message":"2026-01-02 01:00:00 WARN disk 91% full","file":"/var/log/a.log"}"#))
            .unwrap();
        assert_eq!(row.level.as_deref(), Some("WARN"));
        let row = default_mapper()
            .map(&raw(br#"{"message":"ERROR in text","level":"info"}"#))
            .unwrap();
        assert_eq!(row.level.as_deref(), Some("info"), "a level field wins");
        let row = default_mapper()
            .map(&raw(br#"{"message":"nothing to see"}"#))
            .unwrap();
        assert_eq!(row.level, None);
    }

    #[test]
    fn filebeat_shape() {
        let row = default_mapper()
            .map(&raw(br#"{"@timestamp":"2026-01-02T01:00:00.5Z","host":{"name":"web-2","ip":"10.0.0.1"},"message":"GET /","log":{"level":"warn"}}"#))
            .unwrap();
        assert_eq!(row.host, "web-2");
        assert_eq!(row.level.as_deref(), Some("warn"));
        assert_eq!(row.message.as_deref(), Some("GET /"));
        assert_eq!(
            row.attributes.as_deref(),
            Some(r#"{"host":{"ip":"10.0.0.1"}}"#)
        );
        assert_eq!(row.partition_values().2, "01");
        assert_eq!(row.kafka_offset, 9);
    }

    #[test]
    fn plain_text_uses_key_and_kafka_time() {
        let row = default_mapper()
            .map(&raw(
                b"081109 203615 148 INFO dfs.DataNode: Receiving block\n",
            ))
            .unwrap();
        assert_eq!(row.host, "key-host");
        assert_eq!(row.timestamp_us, KAFKA_MS * 1000);
        assert_eq!(row.level.as_deref(), Some("INFO"));
        assert_eq!(
            row.message.as_deref(),
            Some("081109 203615 148 INFO dfs.DataNode: Receiving block")
        );
        assert_eq!(row.attributes, None);
    }

    #[test]
    fn a_kafka_clock_far_ahead_creates_no_future_hour() {
        let m = default_mapper();
        let received = KAFKA_MS * 1000;
        for kafka_ms in [4_102_444_800_000, i64::MAX, 253_402_300_800_000] {
            let with = |payload: &'static [u8]| RawRecord {
                kafka_timestamp_ms: Some(kafka_ms),
                received_at_us: received,
                ..raw(payload)
            };
            // No event time in the record: the worker's clock, not the producer's, decides.
            let row = m.map(&with(br#"{"msg":"x"}"#)).unwrap();
            assert_eq!(row.timestamp_us, received, "kafka {kafka_ms}");
            assert_eq!(row.kafka_timestamp_us, Some(kafka_ms.saturating_mul(1000)));
            // An event time the skewed producer clock would have allowed is refused and kept.
            let row = m
                .map(&with(br#"{"ts":"2099-06-01T00:00:00Z","msg":"x"}"#))
                .unwrap();
            assert_eq!(row.timestamp_us, received);
            assert_eq!(
                row.attributes.as_deref(),
                Some(r#"{"ts":"2099-06-01T00:00:00Z"}"#)
            );
            let (_, date, _) = row.partition_values();
            assert_eq!(date, "2026-01-02");
        }
    }

    #[test]
    fn absurd_timestamp_falls_back_and_is_kept() {
        let row = default_mapper()
            .map(&raw(br#"{"ts":"2099-01-01T00:00:00Z","msg":"x"}"#))
            .unwrap();
        assert_eq!(row.timestamp_us, KAFKA_MS * 1000);
        assert_eq!(
            row.attributes.as_deref(),
            Some(r#"{"ts":"2099-01-01T00:00:00Z"}"#)
        );
    }

    #[test]
    fn rerouted_rows_keep_their_host_in_attributes() {
        let mut row = default_mapper()
            .map(&raw(br#"{"msg":"x","host":"req-1","user":"u"}"#))
            .unwrap();
        row.reroute_host("_overflow");
        assert_eq!(row.host, "_overflow");
        assert_eq!(
            row.attributes.as_deref(),
            Some(r#"{"user":"u","_original_host":"req-1"}"#)
        );
        // A raw host the mapping already kept wins over the sanitised one.
        let mut row = default_mapper()
            .map(&raw(br#"{"msg":"x","host":"a/b"}"#))
            .unwrap();
        row.reroute_host("_overflow");
        assert_eq!(
            row.attributes.as_deref(),
            Some(r#"{"_original_host":"a/b"}"#)
        );
    }

    #[test]
    fn no_key_no_host_is_unknown() {
        let mut r = raw(br#"{"msg":"x","host":"a/b\\c"}"#);
        let row = default_mapper().map(&r).unwrap();
        assert_eq!(row.host, "a_b_c");
        assert!(row.attributes.unwrap().contains("_original_host"));
        r.key = None;
        r.payload = Some(b"{}");
        assert_eq!(default_mapper().map(&r).unwrap().host, "unknown");
    }

    #[test]
    fn bad_records_are_rejected_with_reasons() {
        let m = default_mapper();
        let kind = |p: &[u8]| m.map(&raw(p)).unwrap_err().kind;
        assert_eq!(kind(b"{\"a\":"), RejectionKind::MalformedJson);
        assert_eq!(kind(b"\xff\xfe bad"), RejectionKind::InvalidUtf8);
        // Where the bytes go wrong, past a long valid run (the vectorised check's blocks).
        let mut long = br#"{"msg":""#.to_vec();
        long.extend(std::iter::repeat_n(b'a', 100));
        long.extend(b"\xe2\x82\"}");
        let bad = m.map(&raw(&long)).unwrap_err();
        assert_eq!(bad.kind, RejectionKind::InvalidUtf8);
        assert_eq!(bad.detail, "invalid UTF-8 at byte 108");
        assert_eq!(kind(b""), RejectionKind::Empty);
        assert_eq!(kind(&vec![b'a'; 2 * 1024 * 1024]), RejectionKind::TooLarge);
        let mut tomb = raw(b"");
        tomb.payload = None;
        assert_eq!(m.map(&tomb).unwrap_err().kind, RejectionKind::Empty);
        let json = Mapper::new(&TopicSchema {
            format: Format::Json,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            json.map(&raw(b"[1,2]")).unwrap_err().kind,
            RejectionKind::NotAnObject
        );
        assert_eq!(
            json.map(&raw(b"plain")).unwrap_err().kind,
            RejectionKind::MalformedJson
        );
    }

    #[test]
    fn typed_columns_convert_or_reject() {
        let schema = TopicSchema {
            columns: vec![
                ColumnSpec {
                    name: "status".into(),
                    column_type: ColumnType::Int64,
                    field: Some("http.status".into()),
                },
                ColumnSpec {
                    name: "took".into(),
                    column_type: ColumnType::Float64,
                    field: None,
                },
            ],
            ..Default::default()
        };
        let m = Mapper::new(&schema).unwrap();
        let row = m
            .map(&raw(
                br#"{"http":{"status":"404","method":"GET"},"took":1.5}"#,
            ))
            .unwrap();
        assert_eq!(
            row.columns,
            vec![TypedValue::Int(404), TypedValue::Float(1.5)]
        );
        assert_eq!(
            row.attributes.as_deref(),
            Some(r#"{"http":{"method":"GET"}}"#)
        );
        let err = m.map(&raw(br#"{"http":{"status":"teapot"}}"#)).unwrap_err();
        assert_eq!(err.kind, RejectionKind::WrongType);
        assert!(err.detail.contains("http.status"), "{err}");
    }

    #[test]
    fn text_pattern_captures() {
        let schema = TopicSchema::from_toml(
            "hdfs",
            r#"
            format = "text"
            pattern = '^(?P<timestamp>\d{6} \d{6}) (?P<pid>\d+) (?P<level>[A-Z]+) (?P<component>[^:]+): (?P<message>.*)$'
            timestamp_format = "%y%m%d %H%M%S"
            [[columns]]
            name = "pid"
            type = "int64"
            "#,
        )
        .unwrap();
        let m = Mapper::new(&schema).unwrap();
        let row = m
            .map(&raw(
                b"081109 203615 148 INFO dfs.DataNode: Receiving block",
            ))
            .unwrap();
        assert_eq!(row.level.as_deref(), Some("INFO"));
        assert_eq!(row.message.as_deref(), Some("Receiving block"));
        assert_eq!(row.columns, vec![TypedValue::Int(148)]);
        assert_eq!(
            row.attributes.as_deref(),
            Some(r#"{"component":"dfs.DataNode"}"#)
        );
        assert_eq!(row.partition_values().1, "2008-11-09");
        assert_eq!(
            m.map(&raw(b"garbage")).unwrap_err().kind,
            RejectionKind::PatternMismatch
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_keeps_coordinates(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            match default_mapper().map(&raw(&payload)) {
                Ok(row) => { proptest::prop_assert_eq!(row.kafka_offset, 9); proptest::prop_assert!(!row.host.is_empty()); }
                Err(rejection) => proptest::prop_assert!(!rejection.detail.is_empty()),
            }
        }

        #[test]
        fn json_fields_are_never_dropped(key in "[a-z]{1,8}", value in "[ -~]{0,20}") {
            let doc = serde_json::json!({ key.clone(): value.clone() }).to_string();
            let row = default_mapper().map(&raw(doc.as_bytes())).unwrap();
            let kept = row.attributes.unwrap_or_default().contains(&key)
                || row.message.as_deref() == Some(value.as_str())
                || row.level.as_deref() == Some(value.as_str())
                || row.host == value
                || (["timestamp", "time", "ts"].contains(&key.as_str()));
            proptest::prop_assert!(kept);
        }
    }
}
