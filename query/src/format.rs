//! Answers as bytes: JSON, NDJSON, CSV, Arrow IPC stream, Parquet. Used by the HTTP API and the
//! CLI alike.
//!
//! `ndjson`, `csv` and `arrow` stream: each batch becomes bytes as it arrives. `json` and
//! `parquet` can only be written whole; they buffer, up to a byte cap past which the answer
//! is cut off and marked truncated. Timestamps are RFC 3339 (UTC columns end in `+00:00`;
//! zone-less ones are taken as UTC and end in `Z`).

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use serde_json::json;

use crate::engine::Stats;
use crate::error::QueryError;

const TS_TZ: &str = "%Y-%m-%dT%H:%M:%S%.f%:z";
const TS_NAIVE: &str = "%Y-%m-%dT%H:%M:%S%.fZ";

/// An answer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Ndjson,
    Csv,
    Arrow,
    Parquet,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Json,
        Format::Ndjson,
        Format::Csv,
        Format::Arrow,
        Format::Parquet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Arrow => "arrow",
            Format::Parquet => "parquet",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name.trim()))
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The first format an `Accept` header names; `None` when it names none of ours.
    pub fn from_accept(accept: &str) -> Option<Self> {
        accept.split(',').find_map(|part| {
            let mime = part.split(';').next().unwrap_or("").trim();
            match mime {
                "application/json" => Some(Format::Json),
                "application/x-ndjson" | "application/jsonl" | "application/ndjson" => {
                    Some(Format::Ndjson)
                }
                "text/csv" => Some(Format::Csv),
                "application/vnd.apache.arrow.stream" => Some(Format::Arrow),
                "application/vnd.apache.parquet" | "application/parquet" => Some(Format::Parquet),
                _ => None,
            }
        })
    }

    /// Whether the bytes of a batch can leave before the next batch is computed.
    pub fn streams(self) -> bool {
        matches!(self, Format::Ndjson | Format::Csv | Format::Arrow)
    }
}

/// A `Write` whose bytes are taken out after each step.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(
            &mut *self.0.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

enum Writer {
    Json(arrow::json::Writer<Sink, arrow::json::writer::JsonArray>),
    Ndjson(arrow::json::Writer<Sink, arrow::json::writer::LineDelimited>),
    Csv(arrow::csv::Writer<Sink>),
    Arrow(arrow::ipc::writer::StreamWriter<Sink>),
    Parquet(Option<ArrowWriter<Sink>>),
}

/// Turns one answer into bytes: [`Encoder::batch`] per batch, then [`Encoder::finish`] or,
/// when the query failed, [`Encoder::fail`].
pub struct Encoder {
    format: Format,
    schema: SchemaRef,
    sink: Sink,
    writer: Writer,
    query_id: String,
    /// Buffered formats stop taking rows past this many bytes.
    max_bytes: usize,
    /// Set when a buffered format hit `max_bytes`.
    pub cut: bool,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("format", &self.format)
            .field("query_id", &self.query_id)
            .finish()
    }
}

/// JSON writers as loglake writes them: explicit nulls, RFC 3339 timestamps.
pub fn json_builder() -> arrow::json::WriterBuilder {
    arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_timestamp_tz_format(TS_TZ.into())
        .with_timestamp_format(TS_NAIVE.into())
}

/// CSV writers as loglake writes them: a header, RFC 3339 timestamps.
pub fn csv_builder() -> arrow::csv::WriterBuilder {
    arrow::csv::WriterBuilder::new()
        .with_header(true)
        .with_timestamp_tz_format(TS_TZ.into())
        .with_timestamp_format(TS_NAIVE.into())
}

impl Encoder {
    pub fn new(
        format: Format,
        schema: SchemaRef,
        query_id: &str,
        max_bytes: usize,
    ) -> Result<Self, ArrowError> {
        let sink = Sink::default();
        let writer = match format {
            Format::Json => Writer::Json(json_builder().build(sink.clone())),
            Format::Ndjson => Writer::Ndjson(json_builder().build(sink.clone())),
            Format::Csv => Writer::Csv(csv_builder().build(sink.clone())),
            Format::Arrow => Writer::Arrow(arrow::ipc::writer::StreamWriter::try_new(
                sink.clone(),
                &schema,
            )?),
            Format::Parquet => Writer::Parquet(Some(
                ArrowWriter::try_new(
                    sink.clone(),
                    Arc::clone(&schema),
                    Some(
                        parquet::file::properties::WriterProperties::builder()
                            .set_compression(parquet::basic::Compression::ZSTD(
                                parquet::basic::ZstdLevel::default(),
                            ))
                            .build(),
                    ),
                )
                .map_err(|e| ArrowError::ExternalError(Box::new(e)))?,
            )),
        };
        Ok(Self {
            format,
            schema,
            sink,
            writer,
            query_id: query_id.to_string(),
            max_bytes,
            cut: false,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes to send before the first batch (streaming formats), possibly empty.
    pub fn begin(&mut self) -> Result<Bytes, ArrowError> {
        if let Writer::Csv(w) = &mut self.writer {
            // The header, even for an answer without rows.
            w.write(&RecordBatch::new_empty(Arc::clone(&self.schema)))?;
        }
        Ok(self.take())
    }

    /// Encodes one batch. Returns the bytes ready to send (empty for buffered formats), and
    /// `false` once a buffered format is full (the caller stops reading and marks the answer
    /// truncated).
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<(Bytes, bool), ArrowError> {
        if self.cut {
            return Ok((Bytes::new(), false));
        }
        match &mut self.writer {
            Writer::Json(w) => w.write(batch)?,
            Writer::Ndjson(w) => w.write(batch)?,
            Writer::Csv(w) => w.write(batch)?,
            Writer::Arrow(w) => w.write(batch)?,
            Writer::Parquet(Some(w)) => {
                w.write(batch)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                if w.in_progress_size() + self.sink.len() > self.max_bytes {
                    self.cut = true;
                }
            }
            Writer::Parquet(None) => {}
        }
        if self.format == Format::Json && self.sink.len() > self.max_bytes {
            self.cut = true;
        }
        Ok((self.take(), !self.cut))
    }

    /// The end of a complete answer.
    pub fn finish(&mut self, stats: &Stats) -> Result<Bytes, ArrowError> {
        let truncated = stats.truncated || self.cut;
        match &mut self.writer {
            Writer::Json(w) => {
                w.finish()?;
                let rows = self.sink.take();
                let columns: Vec<_> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
                    .collect();
                let head = json!({
                    "query_id": self.query_id,
                    "columns": columns,
                });
                let mut out = serde_json::to_vec(&head).map_err(json_err)?;
                out.pop(); // reopen the object
                out.extend_from_slice(b",\"rows\":");
                out.extend_from_slice(&rows);
                let tail = json!({
                    "row_count": stats.rows,
                    "truncated": truncated,
                    "elapsed_ms": stats.elapsed.as_millis() as u64,
                    "bytes_scanned": stats.bytes_scanned,
                });
                let tail = serde_json::to_vec(&tail).map_err(json_err)?;
                out.push(b',');
                out.extend_from_slice(&tail[1..]);
                out.push(b'\n');
                return Ok(Bytes::from(out));
            }
            Writer::Ndjson(_) => {
                let end = json!({"end": {
                    "rows": stats.rows,
                    "truncated": truncated,
                    "elapsed_ms": stats.elapsed.as_millis() as u64,
                    "bytes_scanned": stats.bytes_scanned,
                    "query_id": self.query_id,
                }});
                let mut line = serde_json::to_vec(&end).map_err(json_err)?;
                line.push(b'\n');
                self.sink.write_all(&line)?;
            }
            Writer::Csv(_) => {}
            Writer::Arrow(w) => w.finish()?,
            Writer::Parquet(w) => {
                if let Some(w) = w.take() {
                    w.into_inner()
                        .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                }
                return Ok(self.sink.take());
            }
        }
        Ok(self.take())
    }

    /// The bytes that tell a reader of a started answer that it is not complete: an
    /// `{"error": ...}` line for NDJSON. `None` for the other formats, whose response must be
    /// aborted instead (a CSV, Arrow or Parquet reader cannot tell a last line from a cut one).
    pub fn fail(&self, err: &QueryError) -> Option<Bytes> {
        (self.format == Format::Ndjson).then(|| {
            let mut line = serde_json::to_vec(&error_body(err, &self.query_id))
                .unwrap_or_else(|_| b"{\"error\":{}}".to_vec());
            line.push(b'\n');
            Bytes::from(line)
        })
    }

    fn take(&mut self) -> Bytes {
        if self.format.streams() {
            self.sink.take()
        } else {
            Bytes::new()
        }
    }
}

fn json_err(e: serde_json::Error) -> ArrowError {
    ArrowError::ExternalError(Box::new(e))
}

/// `{"error": {"code", "message", "query_id"}}`
pub fn error_body(err: &QueryError, query_id: &str) -> serde_json::Value {
    json!({"error": {"code": err.code(), "message": err.to_string(), "query_id": query_id}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("level", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_767_323_045_000_001])
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![None::<&str>])),
                Arc::new(Int64Array::from(vec![7])),
            ],
        )
        .unwrap()
    }

    fn encode(format: Format) -> Vec<u8> {
        let b = batch();
        let mut e = Encoder::new(format, b.schema(), "q1", 1 << 20).unwrap();
        let mut out = e.begin().unwrap().to_vec();
        out.extend_from_slice(&e.batch(&b).unwrap().0);
        let stats = Stats {
            rows: 1,
            ..Stats::default()
        };
        out.extend_from_slice(&e.finish(&stats).unwrap());
        out
    }

    #[test]
    fn json_has_columns_rows_count_and_rfc3339_utc_timestamps() {
        let v: serde_json::Value = serde_json::from_slice(&encode(Format::Json)).unwrap();
        assert_eq!(v["columns"][0]["name"], "timestamp");
        assert_eq!(
            v["rows"][0]["timestamp"],
            "2026-01-02T03:04:05.000001+00:00"
        );
        assert_eq!(v["rows"][0]["level"], serde_json::Value::Null);
        assert_eq!(v["row_count"], 1);
        assert_eq!(v["truncated"], false);
        assert_eq!(v["query_id"], "q1");
    }

    #[test]
    fn ndjson_ends_with_an_end_line_and_csv_has_a_header() {
        let text = String::from_utf8(encode(Format::Ndjson)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[1].starts_with("{\"end\":{\"rows\":1"), "{text}");
        let csv = String::from_utf8(encode(Format::Csv)).unwrap();
        assert_eq!(
            csv,
            "timestamp,level,n\n2026-01-02T03:04:05.000001+00:00,,7\n"
        );
    }

    #[test]
    fn arrow_and_parquet_read_back() {
        let ipc = encode(Format::Arrow);
        let reader = arrow::ipc::reader::StreamReader::try_new(&ipc[..], None).unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 1);
        let pq = Bytes::from(encode(Format::Parquet));
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(pq, 1024).unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 1);
    }

    #[test]
    fn accept_headers_pick_a_format() {
        assert_eq!(
            Format::from_accept("text/html, text/csv;q=0.9"),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_accept("*/*"), None);
        assert_eq!(Format::from_name("NDJSON"), Some(Format::Ndjson));
    }
}
