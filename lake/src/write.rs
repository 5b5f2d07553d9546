//! Parquet written to be read: zstd, dictionaries, page-level statistics and page index,
//! rows sorted by event time, bounded row groups; Delta statistics on every Add.

use arrow::array::{Array, RecordBatch};
use arrow::compute::{sort_to_indices, take_record_batch, SortOptions};
use deltalake::kernel::Add;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::error::LakeError;

/// Rows per row group: large enough for good compression and few footers, small enough that
/// a reader's predicate on `timestamp` skips most of a file.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writer properties for loglake tables. `sorted_by` is the index (in the file schema,
/// partition columns excluded) of the column the rows are sorted by, if any.
pub fn writer_properties(sorted_by: Option<usize>) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("1 is a valid zstd level"),
        ))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(sorted_by.map(|i| {
            vec![SortingColumn {
                column_idx: i as i32,
                descending: false,
                nulls_first: false,
            }]
        }))
        .build()
}

/// Sorts a batch by its column `column` (ascending).
pub fn sort_by(batch: &RecordBatch, column: &str) -> Result<RecordBatch, arrow::error::ArrowError> {
    let Some(values) = batch.column_by_name(column) else {
        return Ok(batch.clone());
    };
    if values.len() < 2 {
        return Ok(batch.clone());
    }
    let indices = sort_to_indices(values, Some(SortOptions::default()), None)?;
    take_record_batch(batch, &indices)
}

/// Writes `batches` (partition columns included) as new data files of `table` and returns
/// their Add actions, statistics included. Nothing is committed.
pub async fn write_files(
    table: &DeltaTable,
    batches: Vec<RecordBatch>,
    properties: WriterProperties,
    target_file_size: u64,
) -> Result<Vec<Add>, LakeError> {
    let name = table.table_url().to_string();
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(|e| LakeError::delta(&name, e))?
        .with_writer_properties(properties)
        .with_target_file_size(target_file_size);
    for batch in batches {
        writer
            .write(batch)
            .await
            .map_err(|e| LakeError::delta(&name, e))?;
    }
    writer.flush().await.map_err(|e| LakeError::delta(&name, e))
}
