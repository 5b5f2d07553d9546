//! Merging without decoding: copying row groups.
//!
//! A merge's output is its inputs' rows in `timestamp` order. When the inputs are each sorted,
//! cover time ranges that do not overlap, share one Parquet schema and codec, and hold row
//! groups of a useful size, that order is simply the inputs one after another: the output is
//! their row groups in time order, and their encoded column chunks (pages, dictionaries,
//! statistics, page indexes) are copied into it byte for byte instead of every value being
//! decompressed, decoded, merged, encoded and compressed again.
//!
//! That is the common case for the bytes that matter: a busy host's records sit in one Kafka
//! partition and arrive in order, so its flushes cover consecutive time ranges, and each of
//! them is large. Hours with late records (overlapping ranges), files of another schema or
//! codec, and small files (whose row groups would stay small) take the decoding merge
//! ([`crate::merge::SortedMerge`]), which also re-forms row groups.
//!
//! [`copy_order`] decides from the footers alone; [`merged_stats`] builds the Delta statistics
//! of an output from its inputs' own, which are exact for the union (the smallest minimum, the
//! largest maximum, the sums of counts).

use std::mem::discriminant;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};
use parquet::basic::{Compression, ConvertedType, LogicalType, Type};
use parquet::bloom_filter::Sbbf;
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use crate::error::CompactError;

mod stats;
pub use stats::merged_stats;

/// Inputs fetched ahead of the one being copied: the store's latency overlaps the copy, and
/// memory holds at most this many inputs plus one.
const PREFETCH: usize = 1;

/// Upload parts in flight per output file.
const UPLOAD_CONCURRENCY: usize = 4;

/// Bytes per upload part (S3's smallest part is 5 MiB).
const PART_SIZE: usize = 8 << 20;

/// Why a merge must decode its inputs (a debug log says which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoCopy {
    /// The inputs' Parquet schemas or key-value metadata (the Arrow schema) differ.
    Schemas,
    /// The sort column is missing, nullable with nulls, or has no exact statistics.
    SortStatistics,
    /// A row group does not declare itself sorted by the sort column.
    NotSorted,
    /// A column chunk's codec is not the one the writer settings ask for.
    Codec,
    /// Row groups too small to keep: re-forming them is what the merge is for.
    SmallRowGroups,
    /// Two inputs (or two row groups of one) overlap in time.
    Overlap,
    /// An input carries no Delta statistics (or no row count) to build the output's from.
    NoStatistics,
}

/// One input's time range.
#[derive(Debug, Clone, Copy)]
struct Span {
    index: usize,
    min: i64,
    max: i64,
}

/// How to merge by copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// Input indices in time order.
    pub order: Vec<usize>,
    /// The sort column's leaf index: the output's row groups declare it as their sort order.
    pub sort_leaf: usize,
    /// Paths of the timestamp columns (for [`merged_stats`]).
    pub time_columns: Vec<Vec<String>>,
}

/// The order in which to copy the inputs' row groups, or why they must be decoded instead.
///
/// `props` are the writer settings the output must follow (their codecs are checked);
/// `min_group_rows` is the smallest average number of rows per row group an input may have.
pub fn copy_order(
    metas: &[&ParquetMetaData],
    sort_column: &str,
    props: &WriterProperties,
    min_group_rows: usize,
) -> Result<CopyPlan, NoCopy> {
    let Some(first) = metas.first() else {
        return Err(NoCopy::Schemas);
    };
    let schema = first.file_metadata().schema();
    let key_values = first.file_metadata().key_value_metadata();
    let descr = first.file_metadata().schema_descr();
    let sort_index = (0..descr.num_columns())
        .find(|&i| descr.column(i).path().parts() == [sort_column])
        .ok_or(NoCopy::SortStatistics)?;
    let codecs: Vec<Compression> = (0..descr.num_columns())
        .map(|i| props.compression(&ColumnPath::new(descr.column(i).path().parts().to_vec())))
        .collect();

    let mut spans = Vec::with_capacity(metas.len());
    for (index, meta) in metas.iter().enumerate() {
        let file = meta.file_metadata();
        if file.schema() != schema || file.key_value_metadata() != key_values {
            return Err(NoCopy::Schemas);
        }
        let groups = meta.row_groups();
        if groups.is_empty() || (file.num_rows().max(0) as usize) < min_group_rows * groups.len() {
            return Err(NoCopy::SmallRowGroups);
        }
        let mut previous_max = i64::MIN;
        let mut span = Span {
            index,
            min: i64::MAX,
            max: i64::MIN,
        };
        for group in groups {
            let sorted = group.sorting_columns().is_some_and(|columns| {
                columns
                    .first()
                    .is_some_and(|c| c.column_idx as usize == sort_index && !c.descending)
            });
            if !sorted {
                return Err(NoCopy::NotSorted);
            }
            if group
                .columns()
                .iter()
                .zip(&codecs)
                .any(|(chunk, codec)| discriminant(&chunk.compression()) != discriminant(codec))
            {
                return Err(NoCopy::Codec);
            }
            let (min, max) = match group.column(sort_index).statistics() {
                Some(Statistics::Int64(s))
                    if s.min_is_exact() && s.max_is_exact() && s.null_count_opt() == Some(0) =>
                {
                    match (s.min_opt(), s.max_opt()) {
                        (Some(&min), Some(&max)) => (min, max),
                        _ => return Err(NoCopy::SortStatistics),
                    }
                }
                _ => return Err(NoCopy::SortStatistics),
            };
            if min < previous_max {
                return Err(NoCopy::Overlap);
            }
            previous_max = max;
            span.min = span.min.min(min);
            span.max = span.max.max(max);
        }
        spans.push(span);
    }
    // Equal bounds keep input order, as the decoding merge keeps ties in input order.
    spans.sort_by_key(|s| (s.min, s.max, s.index));
    if spans.windows(2).any(|w| w[1].min < w[0].max) {
        return Err(NoCopy::Overlap);
    }
    let time_columns = descr
        .columns()
        .iter()
        .filter(|c| {
            matches!(c.logical_type_ref(), Some(LogicalType::Timestamp { .. }))
                || matches!(
                    c.converted_type(),
                    ConvertedType::TIMESTAMP_MILLIS | ConvertedType::TIMESTAMP_MICROS
                )
                || c.physical_type() == Type::INT96
        })
        .map(|c| c.path().parts().to_vec())
        .collect();
    Ok(CopyPlan {
        order: spans.into_iter().map(|s| s.index).collect(),
        sort_leaf: sort_index,
        time_columns,
    })
}

/// One file a copy wrote: where, how large, and which inputs (indices into the merge's
/// inputs) it holds, in order.
#[derive(Debug)]
pub struct Copied {
    pub path: Path,
    pub size: u64,
    pub rows: u64,
    pub inputs: Vec<usize>,
}

/// One input of a copy: where it is, and its bytes when they were fetched already.
#[derive(Debug)]
pub struct CopyInput {
    pub path: Path,
    pub fetched: Option<Bytes>,
}

/// Copies the row groups of `inputs`, in `order`, into new files under `dir`
/// of about `target_file_size` each (an input is never split: a file ends before the input
/// that would take it past the target). `props` must be the writer settings [`copy_order`]
/// checked the inputs against, with the sort column's leaf index as sorting column. Nothing
/// is committed: on failure, what was written is an orphan for vacuum.
pub async fn copy_row_groups(
    table: &str,
    store: Arc<dyn ObjectStore>,
    inputs: Vec<CopyInput>,
    order: &[usize],
    dir: &Path,
    props: Arc<WriterProperties>,
    target_file_size: u64,
) -> Result<Vec<Copied>, CompactError> {
    let read_err = |path: &Path, source| CompactError::Read {
        table: table.to_string(),
        path: path.to_string(),
        source,
    };
    let mut inputs: Vec<Option<CopyInput>> = inputs.into_iter().map(Some).collect();
    let ordered: Vec<(usize, CopyInput)> = order
        .iter()
        .filter_map(|&index| Some((index, inputs.get_mut(index)?.take()?)))
        .collect();
    let mut fetched = futures::stream::iter(ordered.into_iter().map(|(index, input)| {
        let store = store.clone();
        async move {
            let bytes = match input.fetched {
                Some(bytes) => Ok(bytes),
                None => match store.get(&input.path).await {
                    Ok(got) => got.bytes().await,
                    Err(e) => Err(e),
                },
            };
            (index, input.path, bytes)
        }
    }))
    .buffered(PREFETCH + 1);
    let mut done = Vec::new();
    let mut current: Option<Output> = None;
    while let Some((index, path, bytes)) = fetched.next().await {
        let step = async {
            let bytes = bytes.map_err(|e| read_err(&path, ParquetError::External(Box::new(e))))?;
            let meta = ParquetMetaDataReader::new()
                .with_page_index_policy(PageIndexPolicy::Optional)
                .parse_and_finish(&bytes)
                .map_err(|e| read_err(&path, e))?;
            if let Some(output) = current
                .take_if(|o| o.written > 0 && o.written + bytes.len() as u64 > target_file_size)
            {
                done.push(output.finish(table).await?);
            }
            let output = match current.as_mut() {
                Some(output) => output,
                None => current.insert(Output::start(table, &store, dir, &props, &meta).await?),
            };
            output
                .append(&bytes, &meta, index)
                .map_err(|e| read_err(&path, e))?;
            output.upload(table).await
        };
        if let Err(e) = step.await {
            if let Some(output) = current.take() {
                output.abort().await;
            }
            return Err(e);
        }
    }
    if let Some(output) = current {
        done.push(output.finish(table).await?);
    }
    Ok(done)
}

/// An output file being written: encoded bytes go to a multipart upload as they accrue.
struct Output {
    path: Path,
    writer: SerializedFileWriter<Vec<u8>>,
    upload: WriteMultipart,
    written: u64,
    rows: u64,
    inputs: Vec<usize>,
}

fn write_err(
    table: &str,
    path: &Path,
    source: impl std::error::Error + Send + Sync + 'static,
) -> CompactError {
    CompactError::Write {
        table: table.to_string(),
        path: path.to_string(),
        source: Box::new(source),
    }
}

impl Output {
    async fn start(
        table: &str,
        store: &Arc<dyn ObjectStore>,
        dir: &Path,
        props: &Arc<WriterProperties>,
        first: &ParquetMetaData,
    ) -> Result<Self, CompactError> {
        let path = dir.clone().join(format!(
            "part-00000-{}-c000.zstd.parquet",
            uuid::Uuid::new_v4()
        ));
        let file = first.file_metadata();
        let mut writer = SerializedFileWriter::new(
            Vec::new(),
            file.schema_descr().root_schema_ptr(),
            props.clone(),
        )
        .map_err(|e| write_err(table, &path, e))?;
        // The Arrow schema (time zones, dictionary types) travels in the key-value metadata.
        for kv in file.key_value_metadata().into_iter().flatten() {
            writer.append_key_value_metadata(kv.clone());
        }
        let upload = store
            .put_multipart(&path)
            .await
            .map_err(|e| write_err(table, &path, e))?;
        Ok(Self {
            path,
            writer,
            upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            written: 0,
            rows: 0,
            inputs: Vec::new(),
        })
    }

    /// Appends every row group of one input, column chunks copied as encoded.
    fn append(
        &mut self,
        bytes: &Bytes,
        meta: &ParquetMetaData,
        index: usize,
    ) -> Result<(), ParquetError> {
        for (g, group) in meta.row_groups().iter().enumerate() {
            let mut out = self.writer.next_row_group()?;
            for (c, column) in group.columns().iter().enumerate() {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: group.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: Sbbf::read_from_column_chunk(column, bytes)?,
                    column_index: meta.column_index().and_then(|i| i.get(g)?.get(c).cloned()),
                    offset_index: meta.offset_index().and_then(|i| i.get(g)?.get(c).cloned()),
                };
                out.append_column(bytes, close)?;
            }
            out.close()?;
            self.rows += group.num_rows() as u64;
        }
        self.inputs.push(index);
        Ok(())
    }

    /// Hands what was encoded so far to the upload, waiting while too many parts are in
    /// flight.
    async fn upload(&mut self, table: &str) -> Result<(), CompactError> {
        self.writer
            .flush()
            .map_err(|e| write_err(table, &self.path, e))?;
        let encoded = std::mem::take(self.writer.inner_mut());
        self.written += encoded.len() as u64;
        self.upload.put(Bytes::from(encoded));
        self.upload
            .wait_for_capacity(UPLOAD_CONCURRENCY)
            .await
            .map_err(|e| write_err(table, &self.path, e))
    }

    async fn finish(mut self, table: &str) -> Result<Copied, CompactError> {
        let footer = self
            .writer
            .into_inner()
            .map_err(|e| write_err(table, &self.path, e))?;
        self.written += footer.len() as u64;
        self.upload.put(Bytes::from(footer));
        self.upload
            .finish()
            .await
            .map_err(|e| write_err(table, &self.path, e))?;
        Ok(Copied {
            path: self.path,
            size: self.written,
            rows: self.rows,
            inputs: self.inputs,
        })
    }

    async fn abort(self) {
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(path = %self.path, error = %e, "could not abort an unfinished upload; the store's lifecycle rules must clean it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use loglake_lake::write::writer_properties;
    use parquet::arrow::ArrowWriter;

    /// A file as ingest writes it: rows sorted by `timestamp` (µs values `times`), declared
    /// sorted when `sorted`, with a text column when `text`.
    fn encoded(times: &[i64], sorted: bool, text: bool) -> Bytes {
        let mut fields = vec![Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )];
        let mut columns: Vec<arrow::array::ArrayRef> = vec![Arc::new(
            TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC"),
        )];
        if text {
            fields.push(Field::new("message", DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from_iter_values(
                times
                    .iter()
                    .map(|t| format!("event {t} {}", t * 7919 % 1000)),
            )));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let props = writer_properties(sorted.then_some(0));
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        Bytes::from(writer.into_inner().unwrap())
    }

    fn file(times: &[i64], sorted: bool, text: bool) -> ParquetMetaData {
        ParquetMetaDataReader::new()
            .parse_and_finish(&encoded(times, sorted, text))
            .unwrap()
    }

    fn order(files: &[ParquetMetaData], min_rows: usize) -> Result<Vec<usize>, NoCopy> {
        let metas: Vec<&ParquetMetaData> = files.iter().collect();
        copy_order(&metas, "timestamp", &writer_properties(None), min_rows).map(|p| p.order)
    }

    /// Three inputs on a real (local) store, given out of order, with a target that holds two
    /// of them: two files, inputs never split, rows in time order, readable by Arrow.
    #[tokio::test]
    async fn copies_into_files_of_the_target_size() {
        use object_store::local::LocalFileSystem;
        use object_store::PutPayload;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let runs: [Vec<i64>; 3] = [
            (2000..3000).collect(),
            (0..1000).collect(),
            (1000..2000).collect(),
        ];
        let mut inputs = Vec::new();
        let mut sizes = Vec::new();
        for (n, times) in runs.iter().enumerate() {
            let path = Path::from(format!("host=a/in-{n}.parquet"));
            let bytes = encoded(times, true, true);
            sizes.push(bytes.len() as u64);
            store
                .put(&path, PutPayload::from(bytes.clone()))
                .await
                .unwrap();
            // One input arrives fetched already (a merge fetched it whole), the others are
            // fetched by the copy.
            let fetched = (n == 2).then_some(bytes);
            inputs.push(CopyInput { path, fetched });
        }
        let target = sizes[1] + sizes[2] + 64;
        let copied = copy_row_groups(
            "t",
            store.clone(),
            inputs,
            &[1, 2, 0],
            &Path::from("host=a"),
            Arc::new(writer_properties(Some(0))),
            target,
        )
        .await
        .unwrap();
        assert_eq!(
            copied.iter().map(|c| c.inputs.clone()).collect::<Vec<_>>(),
            [vec![1, 2], vec![0]]
        );
        let mut all = Vec::new();
        for c in &copied {
            let bytes = store.get(&c.path).await.unwrap().bytes().await.unwrap();
            assert_eq!(bytes.len() as u64, c.size);
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap();
            let mut rows = 0;
            for batch in reader {
                let batch = batch.unwrap();
                rows += batch.num_rows();
                let times = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .unwrap();
                all.extend(times.values().iter().copied());
            }
            assert_eq!(rows as u64, c.rows);
        }
        assert_eq!(all, (0..3000).collect::<Vec<i64>>());
    }

    #[test]
    fn inputs_in_any_order_are_copied_in_time_order() {
        let files = [
            file(&[30, 31, 40], true, true),
            file(&[1, 2, 10], true, true),
            // Touching the previous range: ties are in order.
            file(&[10, 20, 30], true, true),
        ];
        assert_eq!(order(&files, 3), Ok(vec![1, 2, 0]));
    }

    #[test]
    fn what_must_be_decoded() {
        let a = file(&[1, 2, 10], true, true);
        assert_eq!(
            order(&[a.clone(), file(&[9, 12, 13], true, true)], 3),
            Err(NoCopy::Overlap)
        );
        assert_eq!(
            order(&[a.clone(), file(&[20, 21, 22], true, true)], 4),
            Err(NoCopy::SmallRowGroups)
        );
        assert_eq!(
            order(&[a.clone(), file(&[20, 21, 22], false, true)], 3),
            Err(NoCopy::NotSorted)
        );
        assert_eq!(
            order(&[a, file(&[20, 21, 22], true, false)], 3),
            Err(NoCopy::Schemas)
        );
    }
}
