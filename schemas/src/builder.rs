//! Rows -> Arrow record batches of a topic's data table (the quarantine table's are
//! `rejected.rs`).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    RecordBatchOptions, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::mapper::{Row, TypedValue};
use crate::model::{ColumnType, TopicSchema};

/// Hive partition columns of every data table, in directory order.
pub const PARTITION_COLUMNS: [&str; 3] = ["host", "date", "hour"];
pub(crate) fn utc_micros() -> DataType {
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

/// The Arrow schema of a topic's data files: the table's columns without the partition
/// columns, whose values are the file's directory (one value per file, not one per row).
pub fn file_arrow_schema(schema: &TopicSchema) -> SchemaRef {
    let table = table_arrow_schema(schema);
    let fields: Vec<_> = table.fields()[..table.fields().len() - PARTITION_COLUMNS.len()].to_vec();
    Arc::new(Schema::new(fields))
}

#[derive(Debug)]
enum TypedBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

/// Rows a new [`RowBuilder`] has room for in its first chunk. Small, because a topic keyed by
/// request ids opens one builder per record: Arrow's default (1,024 rows) cost ~40 KiB per
/// builder before the first row.
const INITIAL_ROWS: usize = 8;
/// Text bytes a new string column has room for.
const INITIAL_TEXT: usize = 256;

/// Row bytes ([`Row::estimated_bytes`]) after which a [`RowBuilder`] seals its columns into a
/// chunk and goes on in buffers sized like the chunk's: a busy partition's chunks are
/// allocated once, at their size.
///
/// No buffer is ever grown. A row that does not fit in the room a chunk's buffers have seals
/// the chunk, and the next one starts with twice the room (and this row's), up to this size.
/// Growing in place would copy every row of the buffer into twice its room, on memory the
/// kernel then faults in: a tenth of ingest's CPU, when each partition began every flush at a
/// few rows and doubled its way up to a chunk. (Each sealed chunk costs [`COLUMN_OVERHEAD`]
/// per column, which the budget counts. Growing small buffers in place instead, to save
/// chunks, held 65 % more: a chunk keeps its room when sealed, and a buffer grown in place
/// is half empty after each doubling, where a chunk is sealed when full.)
pub const CHUNK_BYTES: usize = 4 << 20;

/// Bytes a column of a sealed chunk (an array) costs beyond its buffers: the array's own
/// allocation and one per buffer (values, offsets, validity), measured with a counting
/// allocator, the batch's pointer to it included (`tests/held_bytes.rs`: ~145 bytes).
pub const COLUMN_OVERHEAD: usize = 160;

/// Bytes `batch` holds, as the memory budget counts them: its buffers and
/// [`COLUMN_OVERHEAD`] per column.
pub fn held_by_batch(batch: &RecordBatch) -> usize {
    held_by_columns(batch.columns())
}

/// Bytes `columns` (a sealed chunk, or a batch's) hold: their buffers and
/// [`COLUMN_OVERHEAD`] each.
fn held_by_columns(columns: &[ArrayRef]) -> usize {
    columns
        .iter()
        .map(|c| c.get_array_memory_size() + COLUMN_OVERHEAD)
        .sum()
}

/// Room for `n` values in a buffer sized like a sealed chunk: its size and an eighth.
fn room(n: usize) -> usize {
    n + n / 8
}

fn string_builder(rows: usize, text: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, allocation_size(text))
}

/// `n` rounded up to the size the allocator hands out for it, so that a buffer's room is all
/// it holds: jemalloc (the binary's allocator) serves sizes from classes four to a doubling,
/// and a text buffer asked for between two classes held the rest of the larger one (8 % of
/// the buffers on average) outside what the budget counts. Applied to text, the bulk of a
/// partition's bytes.
fn allocation_size(n: usize) -> usize {
    if n <= 64 {
        return n;
    }
    // Classes in (2^k, 2^(k+1)] are 2^(k-2) apart.
    let k = usize::BITS - 1 - (n - 1).leading_zeros();
    n.next_multiple_of(1 << (k - 2))
}

fn timestamp_builder(rows: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC")
}

/// Bytes a string builder has allocated.
fn string_held(b: &StringBuilder) -> usize {
    b.values_capacity() + b.offsets_capacity() * 4 + b.validity_capacity()
}

/// A string builder with room for a chunk like the one `b` holds (`rows` rows).
fn string_like(b: &StringBuilder, rows: usize) -> StringBuilder {
    string_builder(room(rows), room(b.values_slice().len()))
}

/// True when `b` has room for `s` without growing (its row count is checked apart).
fn string_fits(b: &StringBuilder, s: Option<&str>) -> bool {
    b.values_slice().len() + s.map_or(0, str::len) <= b.values_capacity()
}

/// A string builder for the chunk after `b`'s, which had no room for `s`: twice the text
/// `b` holds (at least [`INITIAL_TEXT`], at most a chunk's) and `s`, for `rows` rows.
fn string_grown(b: &StringBuilder, rows: usize, s: Option<&str>) -> StringBuilder {
    let text = (b.values_slice().len() * 2).clamp(INITIAL_TEXT, CHUNK_BYTES);
    string_builder(rows, text + s.map_or(0, str::len))
}

impl TypedBuilder {
    /// A builder with room for `rows` rows (and `text` bytes, for a string column).
    fn new(t: ColumnType, rows: usize, text: usize) -> Self {
        match t {
            ColumnType::String => Self::Str(string_builder(rows, text)),
            ColumnType::Int64 => Self::Int(Int64Builder::with_capacity(rows)),
            ColumnType::Float64 => Self::Float(Float64Builder::with_capacity(rows)),
            ColumnType::Bool => Self::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Timestamp => Self::Timestamp(timestamp_builder(rows)),
        }
    }

    fn column_type(&self) -> ColumnType {
        match self {
            Self::Str(_) => ColumnType::String,
            Self::Int(_) => ColumnType::Int64,
            Self::Float(_) => ColumnType::Float64,
            Self::Bool(_) => ColumnType::Bool,
            Self::Timestamp(_) => ColumnType::Timestamp,
        }
    }

    /// An empty builder of this one's type that has allocated (next to) nothing.
    fn unallocated(&self) -> Self {
        Self::new(self.column_type(), 0, 0)
    }

    /// True when a string builder has room for `v` (other types: room is counted in rows).
    fn fits(&self, v: &TypedValue) -> bool {
        match (self, v) {
            (Self::Str(b), TypedValue::Str(s)) => string_fits(b, Some(s)),
            _ => true,
        }
    }

    /// An empty builder for the chunk after this one's, with room for `rows` rows and `v`.
    fn grown(&self, rows: usize, v: &TypedValue) -> Self {
        match (self, v) {
            (Self::Str(b), TypedValue::Str(s)) => Self::Str(string_grown(b, rows, Some(s))),
            (Self::Str(b), _) => Self::Str(string_grown(b, rows, None)),
            _ => Self::new(self.column_type(), rows, 0),
        }
    }

    /// An empty builder with room for a chunk like this one's (`rows` rows).
    fn like(&self, rows: usize) -> Self {
        match self {
            Self::Str(b) => Self::Str(string_like(b, rows)),
            Self::Int(_) => Self::Int(Int64Builder::with_capacity(room(rows))),
            Self::Float(_) => Self::Float(Float64Builder::with_capacity(room(rows))),
            Self::Bool(_) => Self::Bool(BooleanBuilder::with_capacity(room(rows))),
            Self::Timestamp(_) => Self::Timestamp(timestamp_builder(room(rows))),
        }
    }

    fn held(&self) -> usize {
        match self {
            Self::Str(b) => string_held(b),
            Self::Int(b) => b.capacity() * 8 + b.validity_capacity(),
            Self::Float(b) => b.capacity() * 8 + b.validity_capacity(),
            // Values and validity: a bit each per row.
            Self::Bool(b) => b.capacity() / 4,
            Self::Timestamp(b) => b.capacity() * 8 + b.validity_capacity(),
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

/// One builder per column of a data file.
#[derive(Debug)]
struct Columns {
    /// Rows every builder has room for.
    rows_room: usize,
    timestamp: TimestampMicrosecondBuilder,
    level: StringBuilder,
    message: StringBuilder,
    typed: Vec<TypedBuilder>,
    attributes: StringBuilder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    kafka_timestamp: TimestampMicrosecondBuilder,
}

impl Columns {
    fn new(topic_schema: &TopicSchema) -> Self {
        let typed = topic_schema
            .columns
            .iter()
            .map(|c| TypedBuilder::new(c.column_type, INITIAL_ROWS, INITIAL_TEXT))
            .collect();
        Self::sized(typed, INITIAL_ROWS, INITIAL_TEXT)
    }

    /// Empty builders that have allocated (next to) nothing: what a partition keeps once
    /// its rows were handed over to be written (it is usually dropped next).
    fn unallocated(&self) -> Self {
        Self::sized(
            self.typed.iter().map(TypedBuilder::unallocated).collect(),
            0,
            0,
        )
    }

    fn sized(typed: Vec<TypedBuilder>, rows: usize, text: usize) -> Self {
        let strings = || string_builder(rows, text);
        Self::from_parts(rows, [strings(), strings(), strings()], typed)
    }

    /// Empty builders with room for a chunk like the one these hold (`rows` rows).
    fn like(&self, rows: usize) -> Self {
        let strings = [&self.level, &self.message, &self.attributes].map(|b| string_like(b, rows));
        let typed = self.typed.iter().map(|t| t.like(rows)).collect();
        Self::from_parts(room(rows), strings, typed)
    }

    /// Builders with room for `rows` rows: the fixed-width columns made here, the string
    /// ones (level, message, attributes) and the typed ones given.
    fn from_parts(rows: usize, strings: [StringBuilder; 3], typed: Vec<TypedBuilder>) -> Self {
        let [level, message, attributes] = strings;
        Self {
            rows_room: rows,
            timestamp: timestamp_builder(rows),
            level,
            message,
            typed,
            attributes,
            kafka_partition: Int32Builder::with_capacity(rows),
            kafka_offset: Int64Builder::with_capacity(rows),
            kafka_timestamp: timestamp_builder(rows),
        }
    }

    /// True when every buffer has room for `row` after `rows` rows, so appending it grows
    /// none of them.
    fn fits(&self, rows: usize, row: &Row) -> bool {
        rows < self.rows_room
            && string_fits(&self.level, row.level.as_deref())
            && string_fits(&self.message, row.message.as_deref())
            && string_fits(&self.attributes, row.attributes.as_deref())
            && self.typed.iter().zip(&row.columns).all(|(b, v)| b.fits(v))
    }

    /// Empty builders for the chunk after these (which hold `rows` rows and had no room for
    /// `row`): twice the rows and each column's text, and room for `row`.
    fn grown(&self, rows: usize, row: &Row) -> Self {
        let next = (rows * 2).max(INITIAL_ROWS);
        let strings = [
            string_grown(&self.level, next, row.level.as_deref()),
            string_grown(&self.message, next, row.message.as_deref()),
            string_grown(&self.attributes, next, row.attributes.as_deref()),
        ];
        let typed = (self.typed.iter().zip(&row.columns))
            .map(|(b, v)| b.grown(next, v))
            .collect();
        Self::from_parts(next, strings, typed)
    }

    /// Bytes the buffers have allocated (what they hold and their room to grow).
    fn held(&self) -> usize {
        let validity = self.timestamp.validity_capacity()
            + self.kafka_partition.validity_capacity()
            + self.kafka_offset.validity_capacity()
            + self.kafka_timestamp.validity_capacity();
        self.timestamp.capacity() * 8
            + string_held(&self.level)
            + string_held(&self.message)
            + self.typed.iter().map(TypedBuilder::held).sum::<usize>()
            + string_held(&self.attributes)
            + self.kafka_partition.capacity() * 4
            + self.kafka_offset.capacity() * 8
            + self.kafka_timestamp.capacity() * 8
            + validity
    }

    fn append(&mut self, row: &Row) {
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
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
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
        ]);
        columns
    }
}

/// Collects the rows of one partition (`host`, `date`, `hour`) into record batches of the
/// data file's columns (the partition's values are [`RowBuilder::partition`], not columns),
/// in chunks of about [`CHUNK_BYTES`].
#[derive(Debug)]
pub struct RowBuilder {
    schema: SchemaRef,
    partition: (String, String, String),
    columns: Columns,
    /// Rows in `columns`, and their [`Row::estimated_bytes`].
    len: usize,
    bytes: usize,
    /// Chunks sealed since the last [`RowBuilder::finish`]: rows and columns.
    sealed: Vec<(usize, Vec<ArrayRef>)>,
    sealed_rows: usize,
    sealed_held: usize,
}

impl RowBuilder {
    /// `schema` must come from [`file_arrow_schema`] of `topic_schema`.
    pub fn new(
        schema: SchemaRef,
        topic_schema: &TopicSchema,
        partition: (String, String, String),
    ) -> Self {
        Self {
            schema,
            partition,
            columns: Columns::new(topic_schema),
            len: 0,
            bytes: 0,
            sealed: Vec::new(),
            sealed_rows: 0,
            sealed_held: 0,
        }
    }

    /// Bytes this builder has allocated: the struct, the partition values, every buffer
    /// with its room to grow, and the chunks it sealed. What the memory budget counts.
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.columns.typed.len() * std::mem::size_of::<TypedBuilder>()
            + self.partition.0.len()
            + self.partition.1.len()
            + self.partition.2.len()
            + self.columns.held()
            + self.sealed_held
    }

    pub fn partition(&self) -> &(String, String, String) {
        &self.partition
    }

    /// Rows held (sealed chunks included).
    pub fn len(&self) -> usize {
        self.sealed_rows + self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a row; the caller routes only rows of this builder's partition here.
    pub fn append(&mut self, row: &Row) {
        debug_assert_eq!(row.host, self.partition.0);
        if !self.columns.fits(self.len, row) {
            let next = self.columns.grown(self.len, row);
            self.seal(next);
        }
        self.columns.append(row);
        self.len += 1;
        self.bytes += row.estimated_bytes();
        if self.bytes >= CHUNK_BYTES {
            let next = self.columns.like(self.len);
            self.seal(next);
        }
    }

    /// Moves the rows in `columns` to a sealed chunk (if there are any) and goes on in `next`.
    fn seal(&mut self, next: Columns) {
        let mut full = std::mem::replace(&mut self.columns, next);
        if self.len == 0 {
            return;
        }
        let rows = std::mem::take(&mut self.len);
        self.bytes = 0;
        let columns = full.finish();
        self.sealed_held += held_by_columns(&columns);
        self.sealed_rows += rows;
        self.sealed.push((rows, columns));
    }

    /// The rows appended since the last call, as batches of the file's columns (one per
    /// chunk, in the order appended); the builder starts empty again.
    pub fn finish(&mut self) -> Result<Vec<RecordBatch>, ArrowError> {
        if self.len > 0 {
            let next = self.columns.unallocated();
            self.seal(next);
        }
        let batches = self
            .sealed
            .iter()
            .map(|(rows, columns)| {
                RecordBatch::try_new_with_options(
                    self.schema.clone(),
                    columns.clone(),
                    &RecordBatchOptions::new().with_row_count(Some(*rows)),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Only once every batch is made: an error leaves the rows where they were.
        self.sealed.clear();
        self.sealed_rows = 0;
        self.sealed_held = 0;
        Ok(batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mapper, RawRecord};

    fn raw(payload: &[u8], offset: i64) -> RawRecord<'_> {
        RawRecord {
            payload: Some(payload),
            key: None,
            partition: 1,
            offset,
            kafka_timestamp_ms: None,
            received_at_us: 0,
        }
    }

    #[test]
    fn text_room_is_a_whole_allocator_size_class() {
        // jemalloc's classes: 80, 96, 112, 128, 160, ..., 4 KiB, 5 KiB, ..., 1 MiB, 1.25 MiB.
        for (asked, class) in [
            (1, 1),
            (64, 64),
            (65, 80),
            (100, 112),
            (128, 128),
            (129, 160),
            (4097, 5120),
            (5000, 5120),
            (1 << 20, 1 << 20),
            ((1 << 20) + 1, (1 << 20) + (1 << 18)),
        ] {
            assert_eq!(allocation_size(asked), class, "{asked}");
        }
        for n in 65..100_000 {
            let a = allocation_size(n);
            assert!(a >= n && a - n < n / 4 + 1, "{n} -> {a}");
        }
    }

    #[test]
    fn batches_hold_the_file_columns_and_the_partition_is_the_builders() {
        let schema = TopicSchema::default();
        let m = Mapper::new(&schema).unwrap();
        let payload = br#"{"ts":1767323045,"host":"h","msg":"m","x":1}"#;
        let row = m.map(&raw(payload, 2)).unwrap();
        let mut b = RowBuilder::new(file_arrow_schema(&schema), &schema, row.partition_values());
        b.append(&row);
        b.append(&row);
        assert_eq!(b.len(), 2);
        let batches = b.finish().unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].num_rows(), 2);
        assert!(b.is_empty());
        assert!(batches[0].column_by_name("hour").is_none());
        assert_eq!(b.partition().0, "h");
        let table = table_arrow_schema(&schema);
        let file = file_arrow_schema(&schema);
        assert_eq!(
            table.fields().len(),
            file.fields().len() + PARTITION_COLUMNS.len()
        );
        assert!(b.finish().unwrap().is_empty(), "nothing appended since");
    }

    /// An empty builder for the partition of the record `payload`.
    fn builder_for(m: &Mapper, schema: &TopicSchema, payload: &str) -> RowBuilder {
        let first = m.map(&raw(payload.as_bytes(), 0)).unwrap();
        RowBuilder::new(file_arrow_schema(schema), schema, first.partition_values())
    }

    /// The `_kafka_offset` values of `batches`, in order.
    fn kafka_offsets(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("_kafka_offset").unwrap();
                c.as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    /// Where the current chunk's buffers are and how much room they have.
    fn buffers(b: &RowBuilder) -> [(usize, usize); 4] {
        let c = &b.columns;
        [
            (
                c.message.values_slice().as_ptr() as usize,
                c.message.values_capacity(),
            ),
            (
                c.attributes.values_slice().as_ptr() as usize,
                c.attributes.values_capacity(),
            ),
            (
                c.level.values_slice().as_ptr() as usize,
                c.level.values_capacity(),
            ),
            (
                c.kafka_offset.values_slice().as_ptr() as usize,
                c.kafka_offset.capacity(),
            ),
        ]
    }

    #[test]
    fn no_buffer_grows_a_row_that_does_not_fit_starts_the_next_chunk() {
        let schema = TopicSchema::default();
        let m = Mapper::new(&schema).unwrap();
        // Messages of 1 to ~5,000 bytes, attributes on some rows, a level on others, and a
        // flush halfway (the builder starts again from nothing).
        let payloads: Vec<String> = (0..6_000u64)
            .map(|i| {
                let msg = "m".repeat(1 + (i * 7919 % 5_000) as usize);
                let extra = if i % 3 == 0 {
                    format!(r#","k{i}":"{msg}""#)
                } else {
                    String::new()
                };
                let level = if i % 5 == 0 { r#","level":"WARN""# } else { "" };
                format!(
                    r#"{{"ts":{},"host":"h","msg":"{msg}"{extra}{level}}}"#,
                    1767323045 + i
                )
            })
            .collect();
        let mut b = builder_for(&m, &schema, &payloads[0]);
        let mut out = Vec::new();
        let (mut grown_in_place, mut chunks_started) = (0, 0);
        for (i, p) in payloads.iter().enumerate() {
            if i == payloads.len() / 2 {
                out.extend(b.finish().unwrap());
            }
            let row = m.map(&raw(p.as_bytes(), i as i64)).unwrap();
            let (before, rows_before, sealed_before) = (buffers(&b), b.len, b.sealed.len());
            b.append(&row);
            let same_chunk = b.sealed.len() == sealed_before && rows_before > 0;
            if !same_chunk {
                chunks_started += 1;
            } else if buffers(&b) != before {
                grown_in_place += 1;
            }
        }
        out.extend(b.finish().unwrap());
        assert_eq!(grown_in_place, 0, "appends that grew a buffer in place");
        assert!(chunks_started > 10, "{chunks_started} chunks");
        assert_eq!(
            kafka_offsets(&out),
            (0..payloads.len() as i64).collect::<Vec<_>>()
        );
        let messages: usize = out
            .iter()
            .map(|b| {
                b.column_by_name("message")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap()
                    .values()
                    .len()
            })
            .sum();
        let expected: usize = (0..6_000u64).map(|i| 1 + (i * 7919 % 5_000) as usize).sum();
        assert_eq!(messages, expected, "every message byte, once");
    }

    #[test]
    fn a_busy_partition_is_held_in_chunks_of_bounded_room() {
        let schema = TopicSchema::default();
        let m = Mapper::new(&schema).unwrap();
        let text = "x".repeat(1000);
        let payloads: Vec<String> = (0..12_000)
            .map(|i| {
                format!(
                    r#"{{"ts":{},"host":"h","msg":"{i} {text}"}}"#,
                    1767323045 + i
                )
            })
            .collect();
        let mut b = builder_for(&m, &schema, &payloads[0]);
        let (mut content, mut stored) = (0, 0);
        for (i, p) in payloads.iter().enumerate() {
            let row = m.map(&raw(p.as_bytes(), i as i64)).unwrap();
            content += row.estimated_bytes();
            // What Arrow stores of the row: its text, three string offsets, four fixed-width
            // values (validity bits aside).
            stored += row.message.as_ref().map_or(0, |s| s.len())
                + row.attributes.as_ref().map_or(0, |s| s.len())
                + row.level.as_ref().map_or(0, |s| s.len())
                + 3 * 4
                + 8 * 3
                + 4;
            b.append(&row);
            // Every buffer is counted, room to grow included, and that room stays a small
            // part of what is held (no column doubled past a chunk).
            if i > 1000 {
                let held = b.held_bytes();
                assert!(held >= stored, "row {i}: held {held} < stored {stored}");
                assert!(
                    held <= content + content / 4 + CHUNK_BYTES,
                    "row {i}: held {held}"
                );
            }
        }
        let batches = b.finish().unwrap();
        assert!(batches.len() >= 3, "{} chunks", batches.len());
        let rows: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(rows.iter().sum::<usize>(), payloads.len());
        assert_eq!(
            kafka_offsets(&batches),
            (0..payloads.len() as i64).collect::<Vec<_>>(),
            "in order"
        );
        let fresh = builder_for(&m, &schema, &payloads[0]);
        assert!(
            b.held_bytes() <= fresh.held_bytes(),
            "handed over, the buffers are let go: {}",
            b.held_bytes()
        );
    }
}
