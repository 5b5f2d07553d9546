//! In-memory buffers of one topic: rows by (host, date, hour), quarantined records, and how
//! far each Kafka partition has been read since the last commit.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use loglake_schemas::{
    table_arrow_schema, Mapper, RejectedBuilder, RejectedRecord, Rejection, Row, RowBuilder,
};

/// Offsets of one Kafka partition read since the last commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub first: i64,
    pub last: i64,
    /// Newest Kafka timestamp (ms) among them, for the freshness metric.
    pub newest_kafka_ms: Option<i64>,
    /// Newest event time (µs) among the rows they became, for `complete_through`.
    pub newest_event_us: Option<i64>,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Microseconds in an hour: rows of one (host, hour number) share a partition.
const HOUR_US: i64 = 3_600_000_000;

#[derive(Debug)]
struct PartBuffer {
    builder: RowBuilder,
    /// Finished, sorted data awaiting a successful commit (kept for retries).
    chunks: Vec<RecordBatch>,
    bytes: usize,
}

/// Everything a topic holds between two commits.
#[derive(Debug)]
pub struct TopicBuffer {
    mapper: Mapper,
    schema: SchemaRef,
    /// By host, then by hour since the epoch (a host's records span few hours at a time),
    /// so routing a row allocates nothing and formats no dates.
    parts: FastMap<String, Vec<(i64, PartBuffer)>>,
    rejected: RejectedBuilder,
    rejected_chunks: Vec<RecordBatch>,
    progress: BTreeMap<i32, Progress>,
    rejected_partitions: BTreeMap<i32, i64>,
    oldest: Option<Instant>,
    bytes: usize,
}

impl TopicBuffer {
    pub fn new(mapper: Mapper) -> Self {
        Self {
            schema: table_arrow_schema(mapper.schema()),
            mapper,
            parts: FastMap::default(),
            rejected: RejectedBuilder::default(),
            rejected_chunks: Vec::new(),
            progress: BTreeMap::new(),
            rejected_partitions: BTreeMap::new(),
            oldest: None,
            bytes: 0,
        }
    }

    pub fn mapper(&self) -> &Mapper {
        &self.mapper
    }

    /// Bytes held (rows and quarantined records).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the oldest record still buffered arrived.
    pub fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    /// Records the read of `offset` (whatever became of the record); `event_us` is the event
    /// time of the row it became, if it became one.
    pub fn note_offset(
        &mut self,
        partition: i32,
        offset: i64,
        kafka_ms: Option<i64>,
        event_us: Option<i64>,
    ) {
        self.oldest.get_or_insert_with(Instant::now);
        let entry = self.progress.entry(partition).or_insert(Progress {
            first: offset,
            last: offset,
            newest_kafka_ms: None,
            newest_event_us: None,
        });
        entry.last = entry.last.max(offset);
        entry.newest_kafka_ms = entry.newest_kafka_ms.max(kafka_ms);
        entry.newest_event_us = entry.newest_event_us.max(event_us);
    }

    /// Buffers a row; returns the bytes now held for its (host, date, hour).
    pub fn push_row(&mut self, row: &Row) -> usize {
        let n = row.estimated_bytes();
        self.bytes += n;
        let hour = row.timestamp_us.div_euclid(HOUR_US);
        let hours = match self.parts.get_mut(row.host.as_str()) {
            Some(hours) => hours,
            None => self.parts.entry(row.host.clone()).or_default(),
        };
        let at = match hours.iter().position(|(h, _)| *h == hour) {
            Some(at) => at,
            None => {
                let builder = RowBuilder::new(
                    self.schema.clone(),
                    self.mapper.schema(),
                    row.partition_values(),
                );
                hours.push((
                    hour,
                    PartBuffer {
                        builder,
                        chunks: Vec::new(),
                        bytes: 0,
                    },
                ));
                hours.len() - 1
            }
        };
        let part = &mut hours[at].1;
        part.builder.append(row);
        part.bytes += n;
        part.bytes
    }

    pub fn push_rejected(&mut self, record: &RejectedRecord<'_>, rejection: &Rejection) {
        let before = self.rejected.estimated_bytes();
        self.rejected.append(record, rejection);
        self.bytes += self.rejected.estimated_bytes() - before;
        let last = self
            .rejected_partitions
            .entry(record.partition)
            .or_insert(record.offset);
        *last = (*last).max(record.offset);
    }

    /// Offsets read per partition since the last commit.
    pub fn progress(&self) -> &BTreeMap<i32, Progress> {
        &self.progress
    }

    pub fn is_empty(&self) -> bool {
        self.progress.is_empty()
    }

    pub fn has_rejected(&self) -> bool {
        !self.rejected_partitions.is_empty()
    }

    /// Partitions with quarantined records awaiting commit.
    pub fn rejected_partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.rejected_partitions.keys().copied()
    }

    /// One sorted batch per (host, date, hour), ready to write. The data stays buffered
    /// until [`TopicBuffer::clear`], so a failed write can be retried.
    pub fn data_batches(&mut self) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
        let mut out = Vec::with_capacity(self.parts.len());
        for (_, part) in self.parts.values_mut().flatten() {
            if !part.builder.is_empty() {
                part.chunks.push(part.builder.finish()?);
            }
            if part.chunks.len() > 1 {
                let merged = arrow::compute::concat_batches(&self.schema, &part.chunks)?;
                part.chunks = vec![merged];
            }
            if let Some(batch) = part.chunks.first_mut() {
                *batch = loglake_lake::write::sort_by(batch, "timestamp")?;
                out.push(batch.clone());
            }
        }
        Ok(out)
    }

    pub fn rejected_batches(&mut self) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
        if !self.rejected.is_empty() {
            self.rejected_chunks.push(self.rejected.finish()?);
        }
        Ok(self.rejected_chunks.clone())
    }

    /// The quarantined records were committed: forget them, keep the rows.
    pub fn clear_rejected(&mut self) -> usize {
        let n: usize = self.rejected_chunks.iter().map(RecordBatch::num_rows).sum();
        let bytes: usize = self
            .rejected_chunks
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum();
        self.rejected_chunks.clear();
        self.rejected_partitions.clear();
        self.bytes = self.bytes.saturating_sub(bytes.min(self.bytes));
        n
    }

    /// Everything was committed (or must be re-read): start empty.
    pub fn clear(&mut self) {
        self.parts.clear();
        self.rejected = RejectedBuilder::default();
        self.rejected_chunks.clear();
        self.rejected_partitions.clear();
        self.progress.clear();
        self.oldest = None;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loglake_schemas::{RawRecord, TopicSchema};

    fn row(mapper: &Mapper, offset: i64, payload: &[u8]) -> Row {
        mapper
            .map(&RawRecord {
                payload: Some(payload),
                key: None,
                partition: 0,
                offset,
                kafka_timestamp_ms: None,
                received_at_us: 1_800_000_000_000_000,
            })
            .unwrap()
    }

    #[test]
    fn rows_group_by_partition_and_sort() {
        let mapper = Mapper::new(&TopicSchema::default()).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone());
        for (i, (host, ts)) in [
            ("a", 1_767_323_047),
            ("a", 1_767_323_045),
            ("b", 1_767_323_046),
            ("a", 1_767_330_000),
        ]
        .iter()
        .enumerate()
        {
            let payload = format!(r#"{{"host":"{host}","ts":{ts}}}"#);
            buf.push_row(&row(&mapper, i as i64, payload.as_bytes()));
            buf.note_offset(0, i as i64, Some(1), Some(i as i64));
        }
        let batches = buf.data_batches().unwrap();
        assert_eq!(batches.len(), 3, "a/03, a/05, b/03");
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(total, 4);
        for b in &batches {
            let ts = b.column_by_name("timestamp").unwrap();
            let sorted = arrow::compute::sort(ts, None).unwrap();
            assert_eq!(&sorted, ts);
        }
        assert_eq!(
            buf.progress()[&0],
            Progress {
                first: 0,
                last: 3,
                newest_kafka_ms: Some(1),
                newest_event_us: Some(3)
            }
        );
        // A retry sees the same data.
        assert_eq!(
            buf.data_batches()
                .unwrap()
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            4
        );
        buf.clear();
        assert!(buf.is_empty() && buf.bytes() == 0);
    }
}
