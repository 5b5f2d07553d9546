//! Rows -> Arrow record batches, for the data table and the quarantine table.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::mapper::{Rejection, Row, TypedValue};
use crate::model::{ColumnType, TopicSchema};
use crate::timestamp::format_partition;

/// Hive partition columns of every data table, in directory order.
pub const PARTITION_COLUMNS: [&str; 3] = ["host", "date", "hour"];
/// Partition columns of every quarantine table.
pub const REJECTED_PARTITION_COLUMNS: [&str; 1] = ["date"];

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Timestamp => utc_micros(),
    }
}

/// The Arrow schema of a topic's data table; partition columns come last.
pub fn table_arrow_schema(schema: &TopicSchema) -> SchemaRef {
    let mut fields = vec![
        Field::new("timestamp", utc_micros(), false),
        Field::new("level", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, true),
    ];
    for c in &schema.columns {
        fields.push(Field::new(&c.name, arrow_type(c.column_type), true));
    }
    fields.extend([
        Field::new("attributes", DataType::Utf8, true),
        Field::new("_kafka_partition", DataType::Int32, false),
        Field::new("_kafka_offset", DataType::Int64, false),
        Field::new("_kafka_timestamp", utc_micros(), true),
    ]);
    fields.extend(PARTITION_COLUMNS.map(|c| Field::new(c, DataType::Utf8, false)));
    Arc::new(Schema::new(fields))
}

/// The Arrow schema of a quarantine table.
pub fn rejected_arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("_kafka_partition", DataType::Int32, false),
        Field::new("_kafka_offset", DataType::Int64, false),
        Field::new("_kafka_timestamp", utc_micros(), true),
        Field::new("reason_code", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("key", DataType::Binary, true),
        Field::new("raw", DataType::Binary, true),
        Field::new("quarantined_at", utc_micros(), false),
        Field::new("date", DataType::Utf8, false),
    ]))
}

#[derive(Debug)]
enum TypedBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

/// Rows a new [`RowBuilder`] has room for before its buffers grow (they double as needed).
/// Small, because a topic keyed by request ids opens one builder per record: Arrow's default
/// (1,024 rows) cost ~40 KiB per builder before the first row.
const INITIAL_ROWS: usize = 8;
/// Text bytes a new string column has room for.
const INITIAL_TEXT: usize = 256;

fn string_builder() -> StringBuilder {
    StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_TEXT)
}

fn timestamp_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(INITIAL_ROWS).with_timezone("UTC")
}

impl TypedBuilder {
    fn new(t: ColumnType) -> Self {
        match t {
            ColumnType::String => Self::Str(string_builder()),
            ColumnType::Int64 => Self::Int(Int64Builder::with_capacity(INITIAL_ROWS)),
            ColumnType::Float64 => Self::Float(Float64Builder::with_capacity(INITIAL_ROWS)),
            ColumnType::Bool => Self::Bool(BooleanBuilder::with_capacity(INITIAL_ROWS)),
            ColumnType::Timestamp => Self::Timestamp(timestamp_builder()),
        }
    }

    fn append(&mut self, v: &TypedValue) {
        match (self, v) {
            (Self::Str(b), TypedValue::Str(s)) => b.append_value(s),
            (Self::Int(b), TypedValue::Int(i)) => b.append_value(*i),
            (Self::Float(b), TypedValue::Float(f)) => b.append_value(*f),
            (Self::Bool(b), TypedValue::Bool(x)) => b.append_value(*x),
            (Self::Timestamp(b), TypedValue::Timestamp(t)) => b.append_value(*t),
            (Self::Str(b), _) => b.append_null(),
            (Self::Int(b), _) => b.append_null(),
            (Self::Float(b), _) => b.append_null(),
            (Self::Bool(b), _) => b.append_null(),
            (Self::Timestamp(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Str(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// Collects the rows of one partition (`host`, `date`, `hour`) into a record batch.
#[derive(Debug)]
pub struct RowBuilder {
    schema: SchemaRef,
    partition: (String, String, String),
    timestamp: TimestampMicrosecondBuilder,
    level: StringBuilder,
    message: StringBuilder,
    typed: Vec<TypedBuilder>,
    attributes: StringBuilder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    kafka_timestamp: TimestampMicrosecondBuilder,
    len: usize,
}

impl RowBuilder {
    /// `schema` must come from [`table_arrow_schema`] of `topic_schema`.
    pub fn new(
        schema: SchemaRef,
        topic_schema: &TopicSchema,
        partition: (String, String, String),
    ) -> Self {
        Self {
            schema,
            partition,
            timestamp: timestamp_builder(),
            level: string_builder(),
            message: string_builder(),
            typed: topic_schema
                .columns
                .iter()
                .map(|c| TypedBuilder::new(c.column_type))
                .collect(),
            attributes: string_builder(),
            kafka_partition: Int32Builder::with_capacity(INITIAL_ROWS),
            kafka_offset: Int64Builder::with_capacity(INITIAL_ROWS),
            kafka_timestamp: timestamp_builder(),
            len: 0,
        }
    }

    /// Bytes a builder holds before its first row (the struct, its initial buffers, and
    /// the partition values), for the memory budget: rows are counted on their own.
    pub fn overhead_bytes(&self) -> usize {
        let text_columns = 3 + self.typed.len();
        std::mem::size_of::<Self>()
            + self.typed.len() * std::mem::size_of::<TypedBuilder>()
            + text_columns * (INITIAL_TEXT + (INITIAL_ROWS + 1) * 4)
            + 4 * INITIAL_ROWS * 8
            + self.partition.0.len()
            + self.partition.1.len()
            + self.partition.2.len()
    }

    pub fn partition(&self) -> &(String, String, String) {
        &self.partition
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a row; the caller routes only rows of this builder's partition here.
    pub fn append(&mut self, row: &Row) {
        debug_assert_eq!(row.host, self.partition.0);
        self.timestamp.append_value(row.timestamp_us);
        self.level.append_option(row.level.as_deref());
        self.message.append_option(row.message.as_deref());
        for (builder, value) in self.typed.iter_mut().zip(&row.columns) {
            builder.append(value);
        }
        self.attributes.append_option(row.attributes.as_deref());
        self.kafka_partition.append_value(row.kafka_partition);
        self.kafka_offset.append_value(row.kafka_offset);
        self.kafka_timestamp.append_option(row.kafka_timestamp_us);
        self.len += 1;
    }

    /// The rows appended since the last call, as one batch; the builder starts empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let n = std::mem::take(&mut self.len);
        let constant = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.level.finish()),
            Arc::new(self.message.finish()),
        ];
        columns.extend(self.typed.iter_mut().map(TypedBuilder::finish));
        columns.extend([
            Arc::new(self.attributes.finish()) as ArrayRef,
            Arc::new(self.kafka_partition.finish()),
            Arc::new(self.kafka_offset.finish()),
            Arc::new(self.kafka_timestamp.finish()),
            constant(&self.partition.0),
            constant(&self.partition.1),
            constant(&self.partition.2),
        ]);
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

/// Collects quarantined records of one topic.
#[derive(Debug)]
pub struct RejectedBuilder {
    topic: StringBuilder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    kafka_timestamp: TimestampMicrosecondBuilder,
    reason_code: StringBuilder,
    reason: StringBuilder,
    key: BinaryBuilder,
    raw: BinaryBuilder,
    quarantined_at: TimestampMicrosecondBuilder,
    date: StringBuilder,
    len: usize,
    bytes: usize,
}

impl Default for RejectedBuilder {
    fn default() -> Self {
        Self {
            topic: StringBuilder::new(),
            kafka_partition: Int32Builder::new(),
            kafka_offset: Int64Builder::new(),
            kafka_timestamp: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            reason_code: StringBuilder::new(),
            reason: StringBuilder::new(),
            key: BinaryBuilder::new(),
            raw: BinaryBuilder::new(),
            quarantined_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            date: StringBuilder::new(),
            len: 0,
            bytes: 0,
        }
    }
}

/// A quarantined record's coordinates and bytes.
#[derive(Debug, Clone, Copy)]
pub struct RejectedRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub kafka_timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub received_at_us: i64,
}

impl RejectedBuilder {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Approximate bytes held, for the memory budget.
    pub fn estimated_bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps the record's raw bytes in full, with the reason. The `date` partition is the
    /// day the record reached Kafka (else the day it was received).
    pub fn append(&mut self, record: &RejectedRecord<'_>, rejection: &Rejection) {
        let kafka_us = record
            .kafka_timestamp_ms
            .filter(|ms| *ms >= 0)
            .map(|ms| ms.saturating_mul(1000));
        self.topic.append_value(record.topic);
        self.kafka_partition.append_value(record.partition);
        self.kafka_offset.append_value(record.offset);
        self.kafka_timestamp.append_option(kafka_us);
        self.reason_code.append_value(rejection.kind.code());
        let reason = rejection.to_string();
        self.reason.append_value(&reason);
        self.key.append_option(record.key);
        self.raw.append_option(record.payload);
        self.quarantined_at.append_value(record.received_at_us);
        self.date
            .append_value(format_partition(kafka_us.unwrap_or(record.received_at_us)).0);
        self.len += 1;
        self.bytes += 96
            + reason.len()
            + record.topic.len()
            + record.key.map_or(0, <[u8]>::len)
            + record.payload.map_or(0, <[u8]>::len);
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.len = 0;
        self.bytes = 0;
        RecordBatch::try_new(
            rejected_arrow_schema(),
            vec![
                Arc::new(self.topic.finish()),
                Arc::new(self.kafka_partition.finish()),
                Arc::new(self.kafka_offset.finish()),
                Arc::new(self.kafka_timestamp.finish()),
                Arc::new(self.reason_code.finish()),
                Arc::new(self.reason.finish()),
                Arc::new(self.key.finish()),
                Arc::new(self.raw.finish()),
                Arc::new(self.quarantined_at.finish()),
                Arc::new(self.date.finish()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mapper, RawRecord};

    #[test]
    fn batch_matches_schema() {
        let schema = TopicSchema::default();
        let arrow_schema = table_arrow_schema(&schema);
        let m = Mapper::new(&schema).unwrap();
        let raw = RawRecord {
            payload: Some(br#"{"ts":1767323045,"host":"h","msg":"m","x":1}"#),
            key: None,
            partition: 1,
            offset: 2,
            kafka_timestamp_ms: None,
            received_at_us: 0,
        };
        let row = m.map(&raw).unwrap();
        let mut b = RowBuilder::new(arrow_schema, &schema, row.partition_values());
        b.append(&row);
        b.append(&row);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert!(b.is_empty());
        let host = batch.column_by_name("hour").unwrap();
        assert_eq!(host.len(), 2);
    }

    #[test]
    fn rejected_keeps_raw_bytes() {
        let mut b = RejectedBuilder::default();
        let rejection = Rejection {
            kind: crate::RejectionKind::InvalidUtf8,
            detail: "at 0".into(),
        };
        let rec = RejectedRecord {
            topic: "t",
            partition: 0,
            offset: 1,
            kafka_timestamp_ms: Some(0),
            key: None,
            payload: Some(b"\xff"),
            received_at_us: 5,
        };
        b.append(&rec, &rejection);
        let batch = b.finish().unwrap();
        let raw = batch
            .column_by_name("raw")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::BinaryArray>()
            .unwrap();
        assert_eq!(raw.value(0), b"\xff");
    }
}
