//! Parquet written to be read: zstd, dictionaries where values repeat, page-level statistics
//! and page index (none for free text), rows sorted by event time, bounded row groups; Delta
//! statistics on every Add.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{sort_to_indices, take_record_batch, SortOptions};
use arrow::datatypes::TimestampMicrosecondType;
use delta_kernel::expressions::Scalar;
use deltalake::kernel::Add;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::DeltaTable;
use indexmap::IndexMap;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

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
        // Nearly every value differs: a dictionary is built, then abandoned at its size
        // limit. zstd finds what repeats in these columns anyway.
        .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
        .set_column_dictionary_enabled(ColumnPath::from("message"), false)
        .set_column_dictionary_enabled(ColumnPath::from("attributes"), false)
        .set_column_dictionary_enabled(ColumnPath::from("_kafka_offset"), false)
        .set_column_dictionary_enabled(ColumnPath::from("_kafka_timestamp"), false)
        // Min/max of free text prunes nothing and costs a comparison per value.
        .set_column_statistics_enabled(ColumnPath::from("message"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("attributes"), EnabledStatistics::None)
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

/// True when `values` is a non-null timestamp column in ascending order.
fn is_sorted(values: &dyn Array) -> bool {
    values
        .as_primitive_opt::<TimestampMicrosecondType>()
        .is_some_and(|a| a.null_count() == 0 && a.values().is_sorted())
}

/// Sorts a batch by its column `column` (ascending).
pub fn sort_by(batch: &RecordBatch, column: &str) -> Result<RecordBatch, arrow::error::ArrowError> {
    let Some(values) = batch.column_by_name(column) else {
        return Ok(batch.clone());
    };
    if values.len() < 2 || is_sorted(values.as_ref()) {
        // Records of one host usually arrive in order: no copy then.
        return Ok(batch.clone());
    }
    let indices = sort_to_indices(values, Some(SortOptions::default()), None)?;
    take_record_batch(batch, &indices)
}

/// The partition values of `batch` when every row has the same ones (as in each batch the
/// ingest worker writes); `None` when they differ or a value is not a non-null string.
fn uniform_partition(
    batch: &RecordBatch,
    partition_columns: &[String],
) -> Option<IndexMap<String, Scalar>> {
    let mut values = IndexMap::with_capacity(partition_columns.len());
    for name in partition_columns {
        let column = batch.column_by_name(name)?.as_string_opt::<i32>()?;
        if column.null_count() > 0 || column.is_empty() {
            return None;
        }
        let first = column.value(0);
        if !column.iter().all(|v| v == Some(first)) {
            return None;
        }
        values.insert(name.clone(), Scalar::String(first.to_string()));
    }
    Some(values)
}

/// Writes `batches` (partition columns included) as new data files of `table` and returns
/// their Add actions, statistics included. Nothing is committed. A batch whose rows all
/// share one partition goes straight to that partition's file; delta-rs splits any other
/// (which costs a sort and a copy of the batch).
pub async fn write_files(
    table: &DeltaTable,
    batches: Vec<RecordBatch>,
    properties: WriterProperties,
    target_file_size: u64,
) -> Result<Vec<Add>, LakeError> {
    let name = table.table_url().to_string();
    let delta = |e| LakeError::delta(&name, e);
    let partition_columns = table
        .snapshot()
        .map_err(delta)?
        .metadata()
        .partition_columns()
        .to_vec();
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(delta)?
        .with_writer_properties(properties)
        .with_target_file_size(target_file_size);
    let columns = crate::evolve::arrow_schema(table)?;
    for batch in batches {
        // By name: the table may have gained columns this writer's schema file predates.
        let batch = crate::evolve::align(batch, &columns).map_err(|source| LakeError::Encode {
            table: name.clone(),
            source,
        })?;
        match uniform_partition(&batch, &partition_columns) {
            Some(values) if !partition_columns.is_empty() => writer
                .write_partition(batch, &values, WriteMode::Default)
                .await
                .map(drop),
            _ => writer.write(batch).await,
        }
        .map_err(delta)?;
    }
    writer.flush().await.map_err(delta)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Int64Type, Schema};

    use super::*;

    fn batch(ts: Vec<i64>, hosts: Vec<&str>) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("timestamp", TimestampMicrosecondType::DATA_TYPE, false),
            Field::new("n", DataType::Int64, false),
            Field::new("host", DataType::Utf8, false),
        ]);
        let n: Vec<i64> = (0..ts.len() as i64).collect();
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(TimestampMicrosecondArray::from(ts)),
                Arc::new(Int64Array::from(n)),
                Arc::new(StringArray::from(hosts)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn sorts_only_what_is_out_of_order() {
        let sorted = batch(vec![1, 2, 2, 5], vec!["a"; 4]);
        assert_eq!(sort_by(&sorted, "timestamp").unwrap(), sorted);
        let shuffled = batch(vec![5, 1, 2, 2], vec!["a"; 4]);
        let out = sort_by(&shuffled, "timestamp").unwrap();
        let ts = out.column(0).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.values().to_vec(), vec![1, 2, 2, 5]);
        let n = out.column(1).as_primitive::<Int64Type>();
        assert_eq!(n.values().to_vec(), vec![1, 2, 3, 0], "rows move together");
    }

    #[test]
    fn one_partition_per_batch_is_recognised() {
        let cols = vec!["host".to_string()];
        let same = uniform_partition(&batch(vec![1, 2], vec!["a", "a"]), &cols).unwrap();
        assert_eq!(same["host"], Scalar::String("a".into()));
        assert!(uniform_partition(&batch(vec![1, 2], vec!["a", "b"]), &cols).is_none());
        assert!(uniform_partition(&batch(vec![1], vec!["a"]), &["n".to_string()]).is_none());
    }
}
