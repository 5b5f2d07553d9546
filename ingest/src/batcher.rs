//! In-memory buffers of one topic: rows by (host, date, hour), quarantined records, and how
//! far each Kafka partition has been read since the last commit.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::host_cap::{Admission, HostCap};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use loglake_lake::write::{flush_bytes_per_file, sorted_order, PartitionRows};
use loglake_schemas::{
    file_arrow_schema, held_by_batch, Mapper, RejectedBuilder, RejectedRecord, Rejection, Row,
    RowBuilder, PARTITION_COLUMNS,
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

/// A hash map for lookups made per record: foldhash instead of std's SipHash.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Microseconds in an hour: rows of one (host, hour number) share a partition.
const HOUR_US: i64 = 3_600_000_000;

/// The host of rows whose own host would be one past the topic's cap of new hosts per hour
/// (`ingest.max_open_partitions`); their host is kept in `attributes._original_host`.
pub const OVERFLOW_HOST: &str = "_overflow";

/// Row bytes after which a partition makes its topic flush: one string column of a batch
/// holds at most 2 GiB (Arrow's i32 offsets), and a partition never gets near it, whatever
/// `memory_budget` and `max_file_size` allow.
const PART_FLUSH_BYTES: usize = 1 << 30;

/// Bytes a host's entry in a topic's partitions holds beyond its name and its builders: the
/// map's key and value, and the part of its partition's entry that is not the builder.
const HOST_ENTRY_BYTES: usize = std::mem::size_of::<(String, Vec<(i64, PartBuffer)>)>()
    + std::mem::size_of::<(i64, PartBuffer)>()
    - std::mem::size_of::<RowBuilder>();

/// What buffering a row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Bytes now held for the row's (host, date, hour): its builder's buffers, room to grow
    /// included.
    pub part_bytes: usize,
    /// The row went to [`OVERFLOW_HOST`].
    pub overflowed: bool,
    /// It was the first row this hour to go there.
    pub first_overflow: bool,
    /// Flush before buffering more: the topic holds as many partitions as it may (twice
    /// the cap: hours of hosts already open and of the overflow host go past the cap), or
    /// the row's partition reached 1 GiB.
    pub full: bool,
}

#[derive(Debug)]
struct PartBuffer {
    builder: RowBuilder,
    /// Finished, sorted data awaiting a successful commit (kept for retries).
    chunks: Vec<RecordBatch>,
    /// Bytes of `chunks` (Arrow's memory size of their arrays).
    chunks_held: usize,
    /// What the partition held when last counted: `builder` ([`RowBuilder::held_bytes`]) and
    /// `chunks`.
    held: usize,
}

/// Everything a topic holds between two commits.
#[derive(Debug)]
pub struct TopicBuffer {
    mapper: Mapper,
    /// The data files' columns (the table's, partition columns left out).
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
    /// The part of `bytes` that quarantined records added.
    rejected_bytes: usize,
    /// The part of `bytes` that is not a partition's buffers: host entries, and what each
    /// partition's file will hold until its commit.
    overhead_bytes: usize,
    /// (host, hour) partitions open now, and the cap: new hosts per hour of the worker's
    /// clock (remembered across flushes in `host_cap`); a flush holds at most twice as many
    /// partitions.
    open_parts: usize,
    max_open_parts: usize,
    part_flush_bytes: usize,
    /// Counted per partition opened: what its file will hold until the commit is done
    /// ([`flush_bytes_per_file`]).
    file_bytes: usize,
    host_cap: HostCap,
}

impl TopicBuffer {
    /// `max_open_parts`: distinct hosts the topic may write per hour (past it, a new host's
    /// rows go to [`OVERFLOW_HOST`]), and half the partitions at which the topic must flush.
    /// `table_configuration`: the data table's properties, which say what statistics each
    /// file's Add carries ([`flush_bytes_per_file`]).
    pub fn new(
        mapper: Mapper,
        max_open_parts: usize,
        table_configuration: &HashMap<String, String>,
    ) -> Self {
        let schema = file_arrow_schema(mapper.schema());
        Self {
            host_cap: HostCap::new(max_open_parts),
            open_parts: 0,
            max_open_parts: max_open_parts.max(1),
            part_flush_bytes: PART_FLUSH_BYTES,
            file_bytes: flush_bytes_per_file(&schema, table_configuration),
            schema,
            mapper,
            parts: FastMap::default(),
            rejected: RejectedBuilder::default(),
            rejected_chunks: Vec::new(),
            progress: BTreeMap::new(),
            rejected_partitions: BTreeMap::new(),
            oldest: None,
            bytes: 0,
            rejected_bytes: 0,
            overhead_bytes: 0,
        }
    }

    pub fn mapper(&self) -> &Mapper {
        &self.mapper
    }

    /// Bytes held, what the memory budget counts: the partitions' buffers, the host entries,
    /// what each partition's file will hold until its commit, and the quarantined records.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of the partitions' buffers alone: the rows as Arrow holds them, against which
    /// the size of the files they become is measured.
    pub fn rows_bytes(&self) -> usize {
        self.bytes - self.rejected_bytes - self.overhead_bytes
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

    /// Buffers a row (moving it to [`OVERFLOW_HOST`] when its host would be one more than
    /// the cap allows this hour).
    pub fn push_row(&mut self, row: &mut Row<'_>) -> Pushed {
        let hour = row.timestamp_us.div_euclid(HOUR_US);
        // One lookup for a row whose partition is open: the cap is consulted only when a
        // partition would be created.
        if let Some(hours) = self.parts.get_mut(&*row.host) {
            if let Some(at) = hours.iter().position(|(h, _)| *h == hour) {
                return Self::append(
                    &mut hours[at].1,
                    row,
                    &mut self.bytes,
                    self.open_parts,
                    self.max_open_parts,
                    self.part_flush_bytes,
                );
            }
        }
        let admission = self.host_cap.admit(&row.host, OVERFLOW_HOST);
        let overflowed = admission != Admission::Admitted;
        if overflowed {
            row.reroute_host(OVERFLOW_HOST);
        }
        let hours = match self.parts.get_mut(&*row.host) {
            Some(hours) => hours,
            None => {
                // The host's entry in `parts`, counted like a buffer.
                self.bytes += row.host.len() + HOST_ENTRY_BYTES;
                self.overhead_bytes += row.host.len() + HOST_ENTRY_BYTES;
                self.parts.entry(row.host.to_string()).or_default()
            }
        };
        let at = match hours.iter().position(|(h, _)| *h == hour) {
            Some(at) => at,
            None => {
                let builder = RowBuilder::new(
                    self.schema.clone(),
                    self.mapper.schema(),
                    row.partition_values(),
                );
                self.open_parts += 1;
                // The file it becomes and its Add action, held until the commit is done.
                self.bytes += self.file_bytes;
                self.overhead_bytes += self.file_bytes;
                // Room for exactly this hour more: a `Vec` of these grows from none to
                // four, and most hosts of a flush write one or two hours (a topic keyed by
                // request ids: one each, 2.8 KiB of room apiece, 28 MiB over 10,000 hosts).
                hours.reserve_exact(1);
                hours.push((
                    hour,
                    PartBuffer {
                        builder,
                        chunks: Vec::new(),
                        chunks_held: 0,
                        held: 0,
                    },
                ));
                hours.len() - 1
            }
        };
        let pushed = Self::append(
            &mut hours[at].1,
            row,
            &mut self.bytes,
            self.open_parts,
            self.max_open_parts,
            self.part_flush_bytes,
        );
        Pushed {
            overflowed,
            first_overflow: admission == Admission::Refused { first: true },
            ..pushed
        }
    }

    /// Appends `row` to `part`, counting what its buffers hold now in `bytes`; the row
    /// stayed on its own host. (Fields passed one by one: `part` borrows `parts`.)
    fn append(
        part: &mut PartBuffer,
        row: &Row<'_>,
        bytes: &mut usize,
        open_parts: usize,
        max_open_parts: usize,
        part_flush_bytes: usize,
    ) -> Pushed {
        part.builder.append(row);
        // What the buffers allocated, not what the row's values measure: a buffer that
        // doubled holds its room too.
        let held = part.builder.held_bytes() + part.chunks_held;
        // `bytes` includes `part.held`.
        *bytes = *bytes - part.held + held;
        part.held = held;
        Pushed {
            part_bytes: held,
            overflowed: false,
            first_overflow: false,
            full: open_parts >= max_open_parts.saturating_mul(2) || held >= part_flush_bytes,
        }
    }

    /// (host, hour) partitions open now.
    #[cfg(test)]
    pub fn open_parts(&self) -> usize {
        self.open_parts
    }

    pub fn push_rejected(&mut self, record: &RejectedRecord<'_>, rejection: &Rejection) {
        let before = self.rejected.estimated_bytes();
        self.rejected.append(record, rejection);
        let added = self.rejected.estimated_bytes() - before;
        self.bytes += added;
        self.rejected_bytes += added;
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

    /// The rows of each (host, date, hour), with the order that sorts them by event time
    /// unless they are in it, ready to write. The data
    /// stays buffered until [`TopicBuffer::clear`], so a failed write can be retried.
    pub fn data_batches(&mut self) -> Result<Vec<PartitionRows>, arrow::error::ArrowError> {
        let mut out = Vec::with_capacity(self.parts.len());
        for (_, part) in self.parts.values_mut().flatten() {
            part.chunks.extend(part.builder.finish()?);
            part.chunks_held = part.chunks.iter().map(held_by_batch).sum();
            let held = part.builder.held_bytes() + part.chunks_held;
            self.bytes = self.bytes - part.held + held;
            part.held = held;
            if part.chunks.iter().any(|c| c.num_rows() > 0) {
                let (host, date, hour) = part.builder.partition().clone();
                out.push(PartitionRows {
                    values: PARTITION_COLUMNS
                        .iter()
                        .map(|c| c.to_string())
                        .zip([host, date, hour])
                        .collect(),
                    order: sorted_order(&part.chunks, "timestamp")?,
                    batches: part.chunks.clone(),
                });
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
        self.rejected_chunks.clear();
        self.rejected_partitions.clear();
        // Exactly what they added: `bytes` keeps every partition's `held` in it.
        self.bytes -= std::mem::take(&mut self.rejected_bytes);
        n
    }

    /// Counts the files of partitions opened from now on with the statistics the table's
    /// properties now ask for: a user may change them while the worker runs.
    pub fn follow_table(&mut self, table_configuration: &HashMap<String, String>) {
        self.file_bytes = flush_bytes_per_file(&self.schema, table_configuration);
    }

    /// Everything was committed (or must be re-read): start empty.
    pub fn clear(&mut self) {
        self.host_cap.roll(Instant::now());
        self.parts.clear();
        self.open_parts = 0;
        self.rejected = RejectedBuilder::default();
        self.rejected_chunks.clear();
        self.rejected_partitions.clear();
        self.progress.clear();
        self.oldest = None;
        self.bytes = 0;
        self.rejected_bytes = 0;
        self.overhead_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use loglake_schemas::{RawRecord, TopicSchema};

    fn row<'a>(mapper: &Mapper, offset: i64, payload: &'a [u8]) -> Row<'a> {
        mapper
            .map(&RawRecord::keyless(payload, offset, 1_800_000_000_000_000))
            .unwrap()
    }

    fn rows_of(parts: &[PartitionRows]) -> usize {
        parts
            .iter()
            .flat_map(|p| &p.batches)
            .map(RecordBatch::num_rows)
            .sum()
    }

    #[test]
    fn a_host_of_one_hour_holds_room_for_one_partition_and_is_counted() {
        // A topic keyed by request ids: every record is a host of its own.
        let mapper = Mapper::new(&TopicSchema::default()).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone(), 100_000, &HashMap::new());
        for i in 0..2_000 {
            let payload = format!(r#"{{"host":"req-{i:08x}","ts":1767323045,"msg":"m"}}"#);
            buf.push_row(&mut row(&mapper, i, payload.as_bytes()));
        }
        let entry = std::mem::size_of::<(i64, PartBuffer)>();
        let (mut held, mut rows) = (0, 0);
        for (host, hours) in &buf.parts {
            assert_eq!(hours.capacity(), 1, "{host}: room for {}", hours.capacity());
            let builders: usize = hours.iter().map(|(_, p)| p.builder.held_bytes()).sum();
            rows += builders;
            // The map's key and value, the host's name, its entries and their builders
            // (each entry holds its builder: counted once), and what each partition's file
            // will hold until its commit is done.
            held += std::mem::size_of::<(String, Vec<(i64, PartBuffer)>)>()
                + host.capacity()
                + hours.capacity() * entry
                + builders
                - hours.len() * std::mem::size_of::<RowBuilder>()
                + hours.len() * flush_bytes_per_file(&buf.schema, &HashMap::new());
        }
        assert!(buf.bytes() >= held, "counted {} of {held}", buf.bytes());
        // What file sizes are predicted from: the rows' buffers, nothing else.
        assert_eq!(buf.rows_bytes(), rows);
    }

    #[test]
    fn rows_group_by_partition_and_sort() {
        let mapper = Mapper::new(&TopicSchema::default()).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone(), 100, &HashMap::new());
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
            buf.push_row(&mut row(&mapper, i as i64, payload.as_bytes()));
            buf.note_offset(0, i as i64, Some(1), Some(i as i64));
        }
        let parts = buf.data_batches().unwrap();
        let mut values: Vec<_> = parts
            .iter()
            .map(|p| {
                p.values
                    .iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        values.sort();
        assert_eq!(
            values,
            ["a/2026-01-02/03", "a/2026-01-02/05", "b/2026-01-02/03"]
        );
        assert_eq!(rows_of(&parts), 4);
        for p in &parts {
            assert!(p.batches.iter().all(|b| b.column_by_name("host").is_none()));
            let batches: Vec<&RecordBatch> = p.batches.iter().collect();
            let written = match &p.order {
                Some(order) => arrow::compute::interleave_record_batch(&batches, order).unwrap(),
                None => arrow::compute::concat_batches(&p.batches[0].schema(), batches).unwrap(),
            };
            let ts = written.column_by_name("timestamp").unwrap();
            let sorted = arrow::compute::sort(ts, None).unwrap();
            assert_eq!(&sorted, ts);
        }
        // Only a/03 got an older row after a newer one.
        let ordered: Vec<bool> = parts.iter().map(|p| p.order.is_some()).collect();
        assert_eq!(ordered.iter().filter(|o| **o).count(), 1);
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
        assert_eq!(rows_of(&buf.data_batches().unwrap()), 4);
        buf.clear();
        assert!(buf.is_empty() && buf.bytes() == 0);
    }

    #[test]
    fn request_ids_as_hosts_stay_bounded() {
        // A topic keyed by request ids: every record its own host.
        let mapper = Mapper::new(&TopicSchema::default()).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone(), 50, &HashMap::new());
        let (mut overflowed, mut firsts) = (0, 0);
        for i in 0..10_000i64 {
            let payload = format!(r#"{{"host":"req-{i:08}","ts":1767323047,"msg":"m"}}"#);
            let pushed = buf.push_row(&mut row(&mapper, i, payload.as_bytes()));
            overflowed += usize::from(pushed.overflowed);
            firsts += usize::from(pushed.first_overflow);
            assert!(
                !pushed.full,
                "one hour: the overflow host needs one partition"
            );
        }
        assert_eq!(overflowed, 10_000 - 50);
        assert_eq!(firsts, 1, "the operator is told once");
        assert_eq!(buf.open_parts(), 51);
        let parts = buf.data_batches().unwrap();
        assert_eq!(parts.len(), 51, "a bounded number of files");
        assert_eq!(rows_of(&parts), 10_000, "nothing lost");
        // The overflow rows keep their host.
        let overflow = parts
            .iter()
            .find(|p| p.values[0] == ("host".to_string(), OVERFLOW_HOST.to_string()))
            .expect("the overflow partition");
        let rows: usize = overflow.batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 10_000 - 50);
        for batch in &overflow.batches {
            let attributes = batch
                .column_by_name("attributes")
                .unwrap()
                .as_string::<i32>();
            assert!(attributes
                .iter()
                .all(|a| a.unwrap().contains("\"_original_host\":\"req-")));
        }

        // The cap is per hour, not per flush: after a commit, new ids go to the overflow
        // host too, so the topic gets no more than 50 one-row files this hour.
        buf.clear();
        for i in 10_000..11_000i64 {
            let payload = format!(r#"{{"host":"req-{i:08}","ts":1767323047,"msg":"m"}}"#);
            assert!(
                buf.push_row(&mut row(&mapper, i, payload.as_bytes()))
                    .overflowed
            );
        }
        // A host already admitted keeps partitions of its own, in any event hour.
        let payload = r#"{"host":"req-00000007","ts":1767323047,"msg":"m"}"#;
        assert!(
            !buf.push_row(&mut row(&mapper, 11_000, payload.as_bytes()))
                .overflowed
        );
        let payload = r#"{"host":"req-00000007","ts":1767326647,"msg":"m"}"#;
        assert!(
            !buf.push_row(&mut row(&mapper, 11_001, payload.as_bytes()))
                .overflowed
        );
        assert_eq!(buf.open_parts(), 3);
    }

    #[test]
    fn a_partition_flushes_long_before_arrow_offsets_overflow() {
        let mapper = Mapper::new(&TopicSchema::default()).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone(), 10, &HashMap::new());
        buf.part_flush_bytes = 64 * 1024;
        let message = "x".repeat(1000);
        let mut flushed_at = None;
        for i in 0..1000i64 {
            let payload = format!(r#"{{"host":"a","ts":1767323047,"msg":"{message}"}}"#);
            if buf.push_row(&mut row(&mapper, i, payload.as_bytes())).full {
                flushed_at = Some(i);
                break;
            }
        }
        // ~1 KiB rows: full once the buffers hold 64 KiB, room to grow included (a chunk
        // that just began holds twice the last one's room, rounded up to the allocator's
        // size class): between the 16th row and the 64th, not at the end.
        let at = flushed_at.expect("the partition asks for a flush");
        assert!((16..70).contains(&at), "{at}");
    }

    /// The worker's whole write path on a real local table, for a host whose rows fill
    /// several 4 MiB chunks out of event-time order (its records spread over Kafka
    /// partitions): the file holds every offset once, sorted by event time.
    #[tokio::test]
    async fn a_partition_of_several_chunks_out_of_order_is_written_whole_and_sorted() {
        use loglake_lake::write::{write_partitions, writer_properties};
        use loglake_schemas::table_arrow_schema;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let dir = tempfile::tempdir().unwrap();
        let lake = loglake_lake::Lake::connect(&loglake_lake::LakeConfig::local(dir.path()))
            .await
            .unwrap();
        let topic_schema = TopicSchema::default();
        let table = lake
            .open_or_create("t", &table_arrow_schema(&topic_schema), &PARTITION_COLUMNS)
            .await
            .unwrap();
        let mapper = Mapper::new(&topic_schema).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone(), 10, &HashMap::new());
        // ~2 KB rows, 6,000 of them (~12 MB): three chunks and some. Event times scattered
        // over one hour (2026-01-02 03:00), each second twice.
        let message = "m".repeat(2000);
        let n = 6000i64;
        for i in 0..n {
            let ts = 1_767_322_800 + (i * 7919) % 3000;
            let payload = format!(r#"{{"host":"a","ts":{ts},"msg":"{message}"}}"#);
            assert!(!buf.push_row(&mut row(&mapper, i, payload.as_bytes())).full);
        }
        let parts = buf.data_batches().unwrap();
        assert_eq!(parts.len(), 1);
        assert!(
            parts[0].batches.len() >= 3,
            "{} chunks",
            parts[0].batches.len()
        );
        assert!(parts[0].order.is_some());

        let adds = write_partitions(&table, parts, writer_properties(Some(0)), 1 << 30)
            .await
            .unwrap();
        assert_eq!(adds.len(), 1);
        let file = std::fs::File::open(dir.path().join("t").join(&adds[0].path)).unwrap();
        let (mut times, mut offsets): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let ts = batch.column_by_name("timestamp").unwrap();
            times.extend(
                ts.as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .iter(),
            );
            let offset = batch.column_by_name("_kafka_offset").unwrap();
            offsets.extend(offset.as_primitive::<Int64Type>().values().iter());
        }
        assert!(times.is_sorted(), "sorted by event time");
        offsets.sort_unstable();
        assert_eq!(offsets, (0..n).collect::<Vec<_>>(), "every offset once");
    }

    #[test]
    fn quarantined_records_leave_the_budget_exactly_as_they_came() {
        let mapper = Mapper::new(&TopicSchema::default()).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone(), 10, &HashMap::new());
        for i in 0..3 {
            buf.push_row(&mut row(&mapper, i, br#"{"host":"a","ts":1767323047}"#));
        }
        let rows_only = buf.bytes();
        let rejection = Rejection {
            kind: loglake_schemas::RejectionKind::MalformedJson,
            detail: "at 1".into(),
        };
        let record = RejectedRecord {
            topic: "t",
            partition: 0,
            offset: 3,
            kafka_timestamp_ms: Some(0),
            key: None,
            payload: Some(b"{"),
            received_at_us: 5,
        };
        buf.push_rejected(&record, &rejection);
        assert!(buf.bytes() > rows_only);
        // The quarantine commit went through, the data write is next (and may be retried).
        assert_eq!(buf.rejected_batches().unwrap()[0].num_rows(), 1);
        assert_eq!(buf.clear_rejected(), 1);
        assert_eq!(buf.bytes(), rows_only);
        // Handed over, the rows are counted as the arrays they became (Arrow's own size of
        // them), the same on a retry; nothing wraps below zero.
        assert_eq!(rows_of(&buf.data_batches().unwrap()), 3);
        let held = buf.bytes();
        assert!(
            held > 0 && held < 4 * rows_only,
            "{held} against {rows_only}"
        );
        assert_eq!(rows_of(&buf.data_batches().unwrap()), 3);
        assert_eq!(buf.bytes(), held);
        buf.clear();
        assert_eq!(buf.bytes(), 0);
    }

    #[test]
    fn a_new_partition_counts_its_builder() {
        let mapper = Mapper::new(&TopicSchema::default()).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone(), 10, &HashMap::new());
        let mut r = row(&mapper, 0, br#"{"host":"a","ts":1767323047}"#);
        let rows_only = r.estimated_bytes();
        buf.push_row(&mut r);
        assert!(buf.bytes() >= rows_only + 1024, "{}", buf.bytes());
    }

    #[test]
    fn a_partition_counts_the_statistics_the_table_asks_for_now() {
        let mapper = Mapper::new(&TopicSchema::default()).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone(), 10, &HashMap::new());
        let record = br#"{"host":"a","ts":1767323047}"#;
        buf.push_row(&mut row(&mapper, 0, record));
        let before = buf.bytes();
        buf.clear();
        // A user's ALTER TABLE: statistics for the event time only.
        let only_time: HashMap<String, String> =
            [("delta.dataSkippingStatsColumns".into(), "timestamp".into())].into();
        buf.follow_table(&only_time);
        buf.push_row(&mut row(&mapper, 1, record));
        assert_eq!(
            before - buf.bytes(),
            flush_bytes_per_file(&buf.schema, &HashMap::new())
                - flush_bytes_per_file(&buf.schema, &only_time)
        );
        assert!(buf.bytes() < before);
    }

    #[test]
    fn scattered_hours_make_the_topic_flush() {
        let mapper = Mapper::new(&TopicSchema::default()).unwrap();
        let mut buf = TopicBuffer::new(mapper.clone(), 10, &HashMap::new());
        let mut first_full = None;
        for i in 0..100i64 {
            let ts = 1_767_323_047 + i * 3_600;
            let payload = format!(r#"{{"host":"h-{}","ts":{ts}}}"#, i % 3);
            if buf.push_row(&mut row(&mapper, i, payload.as_bytes())).full {
                first_full = Some(i);
                break;
            }
        }
        assert_eq!(first_full, Some(19), "full at twice the cap");
        assert_eq!(buf.open_parts(), 20);
    }
}
