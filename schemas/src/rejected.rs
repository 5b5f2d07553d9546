//! Quarantined records -> Arrow record batches of a topic's quarantine table: each record's
//! raw bytes in full, with its Kafka coordinates and the reason it was not archived.

use std::sync::Arc;

use arrow::array::{
    BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::builder::utc_micros;
use crate::mapper::Rejection;
use crate::timestamp::format_partition;

/// Partition columns of every quarantine table.
pub const REJECTED_PARTITION_COLUMNS: [&str; 1] = ["date"];

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
    use arrow::array::AsArray;

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
        let raw = batch.column_by_name("raw").unwrap().as_binary::<i32>();
        assert_eq!(raw.value(0), b"\xff");
    }
}
