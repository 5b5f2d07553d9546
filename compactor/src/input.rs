//! A merge's inputs as Parquet readers: a small input fetched whole in one GET, a larger one
//! read by ranges as the merge pulls its row groups.
//!
//! Ingest's files are small (one flush of one host-hour), and reading one by ranges costs a
//! footer GET and then a GET per row group, each a round trip that the merge waits for: on
//! S3, a 40-file hour took 120 requests and most of its wall time in them. Fetched whole and
//! concurrently when the merge starts, each costs one request. A merge holds one row group's
//! column chunks per input in either case, so only inputs of at most one row group (by their
//! Delta statistics) are fetched whole, and only up to a byte budget per merge; the rest, and
//! any input without statistics, are read by ranges, their footer in one GET.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{self, BoxFuture, FutureExt as _};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

/// The largest input fetched whole.
pub const WHOLE_MAX_BYTES: u64 = 8 << 20;

/// Bytes of whole inputs one merge holds at most; inputs past it are read by ranges.
pub const WHOLE_BUDGET_BYTES: u64 = 128 << 20;

/// Bytes read from the end of an input read by ranges: ingest's footers (schema, statistics,
/// page index) are a few KiB, so one GET fetches footer and metadata together.
const FOOTER_HINT: usize = 64 << 10;

/// One input of a merge.
pub struct Input {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    /// The whole object, when it was fetched in one GET.
    whole: Option<Bytes>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("whole", &self.whole.is_some())
            .finish()
    }
}

impl Input {
    /// Opens `path` (`size` bytes): fetched whole now when `whole`, else read by ranges later.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        path: Path,
        size: u64,
        whole: bool,
    ) -> Result<Self> {
        let whole = match whole {
            true => Some(store.get(&path).await?.bytes().await?),
            false => None,
        };
        if let Some(bytes) = &whole {
            if bytes.len() as u64 != size {
                return Err(ParquetError::General(format!(
                    "{path} holds {} bytes but the table says {size}",
                    bytes.len()
                )));
            }
        }
        Ok(Self {
            store,
            path,
            size,
            whole,
        })
    }

    /// The whole object, when it was fetched whole.
    pub fn whole(&self) -> Option<&Bytes> {
        self.whole.as_ref()
    }

    fn slice(bytes: &Bytes, range: Range<u64>) -> Result<Bytes> {
        if range.start > range.end || range.end > bytes.len() as u64 {
            return Err(ParquetError::EOF(format!(
                "range {range:?} past the end of a {}-byte input",
                bytes.len()
            )));
        }
        Ok(bytes.slice(range.start as usize..range.end as usize))
    }
}

/// Which of `sizes` (bytes, and rows when known) to fetch whole: those of at most
/// `max_rows` rows (one row group) and [`WHOLE_MAX_BYTES`], in order, while the merge's
/// [`WHOLE_BUDGET_BYTES`] lasts.
pub fn fetch_whole(sizes: &[(u64, Option<u64>)], max_rows: u64) -> Vec<bool> {
    let mut budget = WHOLE_BUDGET_BYTES;
    sizes
        .iter()
        .map(|&(bytes, rows)| {
            let whole = bytes <= WHOLE_MAX_BYTES
                && bytes <= budget
                && rows.is_some_and(|rows| rows <= max_rows);
            if whole {
                budget -= bytes;
            }
            whole
        })
        .collect()
}

impl AsyncFileReader for Input {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        match &self.whole {
            Some(bytes) => future::ready(Self::slice(bytes, range)).boxed(),
            None => async move { Ok(self.store.get_range(&self.path, range).await?) }.boxed(),
        }
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        match &self.whole {
            Some(bytes) => future::ready(
                ranges
                    .into_iter()
                    .map(|r| Self::slice(bytes, r))
                    .collect::<Result<Vec<_>>>(),
            )
            .boxed(),
            None => async move { Ok(self.store.get_ranges(&self.path, &ranges).await?) }.boxed(),
        }
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            let reader = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_column_index_policy(
                    options.map_or(Default::default(), |o| o.column_index_policy()),
                )
                .with_offset_index_policy(
                    options.map_or(Default::default(), |o| o.offset_index_policy()),
                )
                .with_prefetch_hint(Some(FOOTER_HINT));
            let metadata = match &self.whole {
                Some(bytes) => reader.parse_and_finish(bytes)?,
                None => {
                    let size = self.size;
                    reader.load_and_finish(self, size).await?
                }
            };
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_of_one_row_group_are_fetched_whole_within_the_budget() {
        let mib = 1 << 20;
        let rows = 1000;
        // Too large; unknown rows; more rows than one group; fits.
        assert_eq!(
            fetch_whole(
                &[
                    (WHOLE_MAX_BYTES + 1, Some(10)),
                    (mib, None),
                    (mib, Some(rows + 1)),
                    (mib, Some(rows)),
                ],
                rows
            ),
            [false, false, false, true]
        );
        // The budget: as many 8 MiB inputs as it holds, then none.
        let many = vec![(WHOLE_MAX_BYTES, Some(1)); 40];
        let whole = fetch_whole(&many, rows);
        let n = (WHOLE_BUDGET_BYTES / WHOLE_MAX_BYTES) as usize;
        assert!(whole[..n].iter().all(|&w| w));
        assert!(whole[n..].iter().all(|&w| !w));
    }

    /// The same file read whole and by ranges from a real (local) store: same metadata, same
    /// rows; a range past the end of a whole input is an error, not a short read.
    #[tokio::test]
    async fn whole_and_ranged_inputs_read_the_same() {
        use arrow::array::{Int64Array, RecordBatch};
        use futures::TryStreamExt as _;
        use object_store::local::LocalFileSystem;
        use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder};

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from_iter_values(0..5000)) as _,
        )])
        .unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        let bytes = Bytes::from(writer.into_inner().unwrap());
        let path = Path::from("host=a/in.parquet");
        store.put(&path, bytes.clone().into()).await.unwrap();

        let mut read = Vec::new();
        for whole in [true, false] {
            let input = Input::open(store.clone(), path.clone(), bytes.len() as u64, whole)
                .await
                .unwrap();
            assert_eq!(input.whole().is_some(), whole);
            let builder = ParquetRecordBatchStreamBuilder::new(input).await.unwrap();
            assert_eq!(builder.metadata().num_row_groups(), 5);
            let batches: Vec<RecordBatch> = builder.build().unwrap().try_collect().await.unwrap();
            read.push(arrow::compute::concat_batches(&batch.schema(), &batches).unwrap());
        }
        assert_eq!(read[0], batch);
        assert_eq!(read[1], batch);

        let mut input = Input::open(store.clone(), path.clone(), bytes.len() as u64, true)
            .await
            .unwrap();
        let end = bytes.len() as u64;
        assert!(input.get_bytes(end - 4..end + 1).await.is_err());
        // A size that is not the object's is refused when fetching whole.
        assert!(Input::open(store, path, end + 1, true).await.is_err());
    }
}
