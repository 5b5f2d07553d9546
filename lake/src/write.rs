//! Parquet written to be read: zstd (Snappy for partitions of under 1,024 rows, where zstd's
//! contexts cost more than it saves before the compactor merges them), dictionaries where
//! values repeat (not in those small files, where a dictionary's writer costs more),
//! page-level statistics and page index (none for free text), rows sorted by event time,
//! bounded row groups; Delta statistics on every Add.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{sort_to_indices, SortOptions};
use arrow::datatypes::{DataType, FieldRef, Schema, TimestampMicrosecondType};
use delta_kernel::expressions::Scalar;
use deltalake::kernel::Add;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use indexmap::IndexMap;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::append::AppendTable;
use crate::error::LakeError;

/// Rows per row group: large enough for good compression and few footers, small enough that
/// a reader's predicate on `timestamp` skips most of a file.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Free-text columns written without min/max statistics: they prune nothing and cost a
/// comparison per value (and a Delta Add would carry them too).
const NO_STATISTICS: [&str; 2] = ["message", "attributes"];

/// Writer properties for loglake tables. `sorted_by` is the index (in the file schema,
/// partition columns excluded) of the column the rows are sorted by, if any.
pub fn writer_properties(sorted_by: Option<usize>) -> WriterProperties {
    let mut builder = WriterProperties::builder()
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
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(sorted_by.map(|i| {
            vec![SortingColumn {
                column_idx: i as i32,
                descending: false,
                nulls_first: false,
            }]
        }));
    for column in NO_STATISTICS {
        builder = builder
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    builder.build()
}

/// True when `values` is a non-null timestamp column in ascending order.
fn is_sorted(values: &dyn Array) -> bool {
    values
        .as_primitive_opt::<TimestampMicrosecondType>()
        .is_some_and(|a| a.null_count() == 0 && a.values().is_sorted())
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

/// The order to write the rows of `chunks` (batches of one partition, in the order their
/// rows arrived) in, sorted by their column `column`, as (chunk, row) pairs; `None` when
/// they are in that order already: each chunk sorted and each starting where the one before
/// ended (records of one host usually arrive in order), or when a chunk lacks the column.
/// Only the sort keys are copied to find the order; [`write_partitions`] then gathers the
/// rows slice by slice, so no sorted copy of the whole partition is ever held.
pub fn sorted_order(
    chunks: &[RecordBatch],
    column: &str,
) -> Result<Option<Vec<(usize, usize)>>, arrow::error::ArrowError> {
    let Some(keys) = chunks
        .iter()
        .map(|c| c.column_by_name(column).map(AsRef::as_ref))
        .collect::<Option<Vec<&dyn Array>>>()
    else {
        return Ok(None);
    };
    let mut end = i64::MIN;
    let in_order = keys.iter().filter(|k| !k.is_empty()).all(|k| {
        let Some(ts) = k.as_primitive_opt::<TimestampMicrosecondType>() else {
            return false; // another type: sorted below by its own order
        };
        let next = is_sorted(*k) && ts.value(0) >= end;
        end = ts.value(ts.len() - 1);
        next
    });
    if in_order {
        return Ok(None);
    }
    let order = sort_to_indices(
        &arrow::compute::concat(&keys)?,
        Some(SortOptions::default()),
        None,
    )?;
    let starts: Vec<usize> = chunks
        .iter()
        .scan(0, |start, c| {
            let here = *start;
            *start += c.num_rows();
            Some(here)
        })
        .collect();
    Ok(Some(
        order
            .values()
            .iter()
            .map(|&i| {
                let i = i as usize;
                // The last chunk starting at or before row i holds it (empty ones share
                // their start with the next).
                let chunk = starts.partition_point(|&s| s <= i) - 1;
                (chunk, i - starts[chunk])
            })
            .collect(),
    ))
}

/// Rows gathered at a time when a partition is written in an order of its own.
const GATHER_ROWS: usize = 8 * 1024;

/// The rows of one partition of a table: its values (partition column name, value; one for
/// each of the table's partition columns), batches of the data file's columns (no partition
/// columns), and the order to write their rows in when it is not theirs ([`sorted_order`]).
#[derive(Debug, Clone)]
pub struct PartitionRows {
    pub values: Vec<(String, String)>,
    pub batches: Vec<RecordBatch>,
    pub order: Option<Vec<(usize, usize)>>,
}

/// A writer for new data files of `table`, its partition columns, and the table's columns.
fn writer_for(
    table: &AppendTable,
    properties: WriterProperties,
    target_file_size: u64,
) -> Result<(RecordBatchWriter, Vec<String>, arrow::datatypes::SchemaRef), LakeError> {
    let writer = table
        .writer()?
        .with_writer_properties(properties)
        .with_target_file_size(target_file_size);
    Ok((
        writer,
        table.partition_columns().to_vec(),
        table.arrow_schema()?,
    ))
}

/// Writes `batches` (partition columns included) as new data files of `table` and returns
/// their Add actions, statistics included. Nothing is committed. A batch whose rows all
/// share one partition goes straight to that partition's file; delta-rs splits any other
/// (which costs a sort and a copy of the batch).
pub async fn write_files(
    table: &AppendTable,
    batches: Vec<RecordBatch>,
    properties: WriterProperties,
    target_file_size: u64,
) -> Result<Vec<Add>, LakeError> {
    let name = table.name().to_string();
    let delta = |e| LakeError::delta(&name, e);
    let (mut writer, partition_columns, columns) = writer_for(table, properties, target_file_size)?;
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

/// Arrow bytes written into open files after which [`write_partitions`] closes them (and
/// their uploads start) before it encodes the next partition. An open file holds its row
/// group's pages in memory, so with every partition's file open until the end, writing a
/// buffer of twenty busy partitions took ~160 MiB on top of the buffer itself.
const OPEN_INPUT_BYTES: usize = 32 << 20;
/// Column writers [`write_partitions`] keeps open at most, over all its open files (16 files
/// of the 7 columns of a topic without typed columns, 3 of 37): an open file's writer costs
/// ~170-250 KiB before its first row (column writers, dictionary interners, a zstd context),
/// so a flush of 10,000 partitions of one row each (a topic keyed by request ids) peaked at
/// 2.7 GiB with every file open, and 64 open files of a 1,000-host flush held 16 MiB outside
/// the memory budget (jemalloc heap profile). A dictionary-encoded column's writer alone
/// holds ~77 KiB, so counting files was not enough: 16 open files of a schema with 30 typed
/// columns held 39 MB. Closing files more often costs nothing per file.
const OPEN_COLUMN_WRITERS: usize = 16 * 7;

/// Partitions of fewer rows are written with Snappy, not zstd, and without dictionaries:
/// parquet's zstd codec creates a compressor and a decompressor per column writer, and each
/// creation runs `cpuid`, which traps to the hypervisor on a virtual machine. On a topic of 1,000 hosts, whose flushes are
/// thousands of files of a few hundred rows, creating them took 10 % of all ingest CPU (and
/// their memory, for every open file); on a topic keyed by request ids, thousands of one-row
/// files, 11 %. Snappy's codec is a table and no system call. Small files are what the
/// compactor merges: it rewrites them with zstd (the codec differs, so it decodes them rather
/// than copying their pages). A dictionary saves little in a file of a few hundred rows,
/// and its writer costs ~77 KiB a column before the first value: 200 one-row files of 37
/// columns took 39.3 MB to write with dictionaries, 2.7 MB without.
const SMALL_ROWS: usize = 1024;

/// Columns whose statistics an Add carries when the table does not say: delta-rs's default
/// for `delta.dataSkippingNumIndexedCols`, which loglake leaves unset.
const STATS_COLUMNS: usize = 32;

/// The columns of `file_columns` whose statistics delta-rs's writer puts in an Add, as the
/// table's properties (`configuration`) say: those named by `delta.dataSkippingStatsColumns`,
/// else the first `delta.dataSkippingNumIndexedCols` (a count; unset, or anything delta-rs
/// does not read as a count, such as `-1`, is its default of 32).
fn stats_columns<'s>(
    file_columns: &'s Schema,
    configuration: &HashMap<String, String>,
) -> Vec<&'s FieldRef> {
    if let Some(names) = configuration.get("delta.dataSkippingStatsColumns") {
        let names: Vec<&str> = names
            .split(',')
            .map(|n| n.trim().trim_matches('`'))
            .collect();
        return file_columns
            .fields()
            .iter()
            .filter(|f| names.contains(&f.name().as_str()))
            .collect();
    }
    let count = configuration
        .get("delta.dataSkippingNumIndexedCols")
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(STATS_COLUMNS);
    file_columns.fields().iter().take(count).collect()
}

/// Bytes one written file holds beyond its rows from [`write_partitions`] to the end of its
/// commit, for a file of the columns `file_columns`: its Add action (path, partition values,
/// the statistics as JSON) and its share of the commit's working set (the actions serialised
/// into the log entry). A buffer counts this per partition it opens, so that a flush of
/// thousands of small partitions fits in the memory budget with its commit: ten thousand
/// one-row files (a topic keyed by request ids) held 33 MB for this alone, twenty thousand
/// (a flush at twice the cap of open partitions) 66 MB.
///
/// Statistics cover the columns the table's properties (`configuration`) name, the first 32
/// when they name none ([`stats_columns`]); a text column's min and max are up to 64 bytes
/// each (parquet's truncation), so it costs four times a number's.
/// Measured by `lake/tests/flush_memory.rs`: 3,297 bytes a file with the 7 columns of a topic
/// without typed columns (this counts 4,224), 5,103 with 10 more int64 ones (6,144), 22,720
/// with 30 more text ones of 80 characters (25,728), and 44,334 with 60 such text ones and
/// statistics asked for every column (50,304; the first 32 alone would count 25,728).
pub fn flush_bytes_per_file(
    file_columns: &Schema,
    configuration: &HashMap<String, String>,
) -> usize {
    let column = |f: &FieldRef| match f.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            if !NO_STATISTICS.contains(&f.name().as_str()) =>
        {
            768
        }
        _ => 192,
    };
    2_304
        + stats_columns(file_columns, configuration)
            .into_iter()
            .map(column)
            .sum::<usize>()
}

/// Writes the rows of each partition in `parts` as new data files of `table` (a partition's
/// batches go to the same file until it reaches `target_file_size`) and returns their Add
/// actions, statistics included. Nothing is committed. The partition values are given, not
/// read from constant columns, so no column of them is built or scanned. Files are closed
/// once about [`OPEN_INPUT_BYTES`] of rows went into them or they hold
/// [`OPEN_COLUMN_WRITERS`] (one file is open however many columns it has), so the
/// memory this takes beyond `parts` is bounded however many partitions there are and
/// however large they are.
pub async fn write_partitions(
    table: &AppendTable,
    parts: Vec<PartitionRows>,
    properties: WriterProperties,
    target_file_size: u64,
) -> Result<Vec<Add>, LakeError> {
    let name = table.name().to_string();
    let delta = |e| LakeError::delta(&name, e);
    let encode = |source| LakeError::Encode {
        table: name.clone(),
        source,
    };
    // Made at the first partition of fewer than SMALL_ROWS rows, if there is one.
    let mut small: Option<RecordBatchWriter> = None;
    let small_properties = properties
        .clone()
        .into_builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .build();
    let (mut writer, partition_columns, columns) = writer_for(table, properties, target_file_size)?;
    let file_columns: arrow::datatypes::SchemaRef =
        std::sync::Arc::new(arrow::datatypes::Schema::new(
            columns
                .fields()
                .iter()
                .filter(|f| !partition_columns.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
    let max_open_files = (OPEN_COLUMN_WRITERS / file_columns.fields().len().max(1)).max(1);
    let mut adds = Vec::new();
    let (mut open, mut open_files) = (0, 0);
    for part in parts {
        if open >= OPEN_INPUT_BYTES || open_files >= max_open_files {
            adds.extend(writer.flush().await.map_err(delta)?);
            if let Some(small) = small.as_mut() {
                adds.extend(small.flush().await.map_err(delta)?);
            }
            (open, open_files) = (0, 0);
        }
        open_files += 1;
        let rows: usize = part.batches.iter().map(RecordBatch::num_rows).sum();
        let writer = if rows < SMALL_ROWS {
            match &mut small {
                Some(small) => small,
                None => {
                    small.insert(writer_for(table, small_properties.clone(), target_file_size)?.0)
                }
            }
        } else {
            &mut writer
        };
        // By name, in the table's order: the table says which columns partition it.
        let values: IndexMap<String, Scalar> = partition_columns
            .iter()
            .map(|column| {
                let value = part.values.iter().find(|(name, _)| name == column);
                value.map(|(_, v)| (column.clone(), Scalar::String(v.clone())))
            })
            .collect::<Option<_>>()
            .filter(|_| part.values.len() == partition_columns.len())
            .ok_or_else(|| {
                let given: Vec<&str> = part.values.iter().map(|(n, _)| n.as_str()).collect();
                encode(arrow::error::ArrowError::SchemaError(format!(
                    "partition values for {given:?}, but the table is partitioned by \
                     {partition_columns:?}"
                )))
            })?;
        // In an order of its own, the partition is gathered GATHER_ROWS rows at a time, each
        // slice encoded before the next is made.
        let batches: Vec<&RecordBatch> = part.batches.iter().collect();
        let slices = part
            .order
            .as_ref()
            .map_or(batches.len(), |o| o.len().div_ceil(GATHER_ROWS));
        for k in 0..slices {
            let batch = match &part.order {
                None => batches[k].clone(),
                Some(order) => {
                    let rows = &order[k * GATHER_ROWS..order.len().min((k + 1) * GATHER_ROWS)];
                    arrow::compute::interleave_record_batch(&batches, rows).map_err(encode)?
                }
            };
            open += batch.get_array_memory_size();
            // By name: the table may have gained columns this writer's schema file predates.
            let batch = crate::evolve::align(batch, &file_columns).map_err(encode)?;
            writer
                .write_partition(batch, &values, WriteMode::Default)
                .await
                .map_err(delta)?;
        }
    }
    adds.extend(writer.flush().await.map_err(delta)?);
    if let Some(mut small) = small {
        adds.extend(small.flush().await.map_err(delta)?);
    }
    Ok(adds)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Int64Type, Schema};

    use super::*;

    #[test]
    fn statistics_are_counted_for_the_columns_the_table_properties_name() {
        let columns = Schema::new(
            (0..40)
                .map(|i| Field::new(format!("c{i}"), DataType::Int64, true))
                .collect::<Vec<_>>(),
        );
        let count = |properties: &[(&str, &str)]| {
            let configuration = properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            stats_columns(&columns, &configuration).len()
        };
        assert_eq!(count(&[]), 32);
        assert_eq!(count(&[("delta.dataSkippingNumIndexedCols", "40")]), 40);
        assert_eq!(count(&[("delta.dataSkippingNumIndexedCols", "5")]), 5);
        // delta-rs reads only a count: -1 ("all") is its default.
        assert_eq!(count(&[("delta.dataSkippingNumIndexedCols", "-1")]), 32);
        // Names win over a count, and may be quoted.
        let named = [
            ("delta.dataSkippingStatsColumns", "c1, `c39`,missing"),
            ("delta.dataSkippingNumIndexedCols", "40"),
        ];
        assert_eq!(count(&named), 2);
        let mut all = HashMap::new();
        all.insert(
            "delta.dataSkippingNumIndexedCols".to_string(),
            "40".to_string(),
        );
        assert_eq!(
            flush_bytes_per_file(&columns, &all) - flush_bytes_per_file(&columns, &HashMap::new()),
            8 * 192
        );
    }

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
    fn chunks_in_order_keep_it_and_others_get_the_sorting_order() {
        let written = |chunks: &[RecordBatch]| -> (Vec<i64>, Vec<i64>) {
            let refs: Vec<&RecordBatch> = chunks.iter().collect();
            let b = match sorted_order(chunks, "timestamp").unwrap() {
                Some(order) => arrow::compute::interleave_record_batch(&refs, &order).unwrap(),
                None => arrow::compute::concat_batches(&chunks[0].schema(), refs).unwrap(),
            };
            let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
            let n = b.column(1).as_primitive::<Int64Type>();
            (ts.values().to_vec(), n.values().to_vec())
        };
        let in_order = vec![
            batch(vec![1, 2], vec!["a"; 2]),
            batch(vec![2, 4], vec!["a"; 2]),
            batch(vec![], vec![]),
            batch(vec![7], vec!["a"]),
        ];
        assert_eq!(sorted_order(&in_order, "timestamp").unwrap(), None);
        assert_eq!(sorted_order(&in_order, "no such column").unwrap(), None);

        // Each sorted, but the third starts before the first ends (an empty one between).
        let overlapping = vec![
            batch(vec![1, 5], vec!["a"; 2]),
            batch(vec![], vec![]),
            batch(vec![3, 9], vec!["a"; 2]),
        ];
        assert_eq!(
            sorted_order(&overlapping, "timestamp").unwrap(),
            Some(vec![(0, 0), (2, 0), (0, 1), (2, 1)])
        );
        assert_eq!(written(&overlapping), (vec![1, 3, 5, 9], vec![0, 0, 1, 1]));

        // One chunk out of order inside; rows move together.
        let unsorted = vec![
            batch(vec![1, 2], vec!["a"; 2]),
            batch(vec![8, 3], vec!["a"; 2]),
        ];
        assert_eq!(written(&unsorted), (vec![1, 2, 3, 8], vec![0, 1, 1, 0]));
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
