//! The scan of a lake table: the files a query needs, found in a per-version index of the
//! table's live files, read by DataFusion's Parquet reader.
//!
//! delta-rs's own scan replays the snapshot's file list through its kernel on every query,
//! evaluating the partition predicate file by file: a one-hour query cost O(files in the
//! table), about twice as much on a 30-day archive as on a 1-day one. [`FileIndex`] is built
//! once per table version (the catalog keeps the newest) with the files sorted by
//! `(date, hour)`, so a time-bounded query finds its hours by binary search and evaluates its
//! other partition filters (`host = ...`) on those hours' files only. The Parquet scan is the
//! one DataFusion's own listing tables use: filters pushed into the reader, footers from the
//! session's metadata cache, statistics pruning row groups.
//!
//! Tables this scan does not understand (column mapping or deletion vectors, i.e. a reader
//! version above 1; partition columns that are not the schema's last fields) keep delta-rs's
//! scan, which is correct for them, only slower.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, DFSchema, Result as DfResult, ScalarValue, Statistics};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::Expr;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use object_store::path::Path;
use object_store::ObjectMeta;

use crate::prune;

mod stats;
use stats::{DeltaStats, ExactStats};

/// Files under this mean size skip the page index: their column chunks hold a page or two,
/// so the index prunes nothing the row-group statistics did not, and loading it is one more
/// read per file (35% of a scan of 240 one-row-group files, measured).
const PAGE_INDEX_MIN_MEAN_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// A table version's live files, sorted for pruning.
#[derive(Debug)]
pub struct FileIndex {
    version: u64,
    store_url: ObjectStoreUrl,
    partition_columns: Vec<String>,
    /// Positions of `date` and `hour` in `partition_columns`, when the table has both: the
    /// files are then sorted by them.
    time: Option<(usize, usize)>,
    files: Vec<Arc<IndexedFile>>,
}

#[derive(Debug)]
struct IndexedFile {
    location: Path,
    size: u64,
    rows: Option<usize>,
    /// In `partition_columns` order; `None` is Delta's null partition value.
    values: Vec<Option<Arc<str>>>,
    /// The exact statistics of the Delta log, by column name.
    stats: Vec<(Arc<str>, ExactStats)>,
}

impl FileIndex {
    /// The index of the table's loaded version; `None` when this scan cannot read the table
    /// (see the module docs) and delta-rs's scan must. The entries of files `previous` (an
    /// older version's index) already holds are reused, not parsed again: a new version costs
    /// a lookup per file and a parse per new file.
    pub fn build(
        table: &DeltaTable,
        previous: Option<&FileIndex>,
    ) -> deltalake::DeltaResult<Option<Self>> {
        let snapshot = table.snapshot()?;
        if snapshot.protocol().min_reader_version() > 1 {
            return Ok(None);
        }
        let partition_columns = snapshot.metadata().partition_columns().to_vec();
        let position = |name: &str| partition_columns.iter().position(|c| c == name);
        let time = position("date").zip(position("hour"));
        let root = table.log_store().root_url().clone();
        let store_url = ObjectStoreUrl::parse(format!(
            "{}://{}",
            root.scheme(),
            &root[url::Position::BeforeHost..url::Position::AfterPort]
        ))?;
        let root_path = percent_encoding::percent_decode_str(root.path()).decode_utf8_lossy();
        let root_path = root_path.trim_end_matches('/');
        // Partition values repeat across files (a host has a file per hour): share them.
        let mut interned: HashMap<String, Arc<str>> = HashMap::new();
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        let known: HashMap<&str, &Arc<IndexedFile>> = previous
            .filter(|p| p.partition_columns == partition_columns)
            .map(|p| p.files.iter().map(|f| (f.location.as_ref(), f)).collect())
            .unwrap_or_default();
        let mut files: Vec<Arc<IndexedFile>> = snapshot
            .log_data()
            .iter()
            .map(|view| {
                // As delta-rs's scan resolves an Add's path: the table root's URL joined with
                // it, percent-decoded, parsed as an object store path.
                let full = format!("{root_path}/{}", view.path());
                let size = view.size().max(0) as u64;
                if let Some(known) = known.get(full.trim_start_matches('/')) {
                    if known.size == size {
                        return Arc::clone(known);
                    }
                }
                let mut map = view.partition_values_map();
                let values = partition_columns
                    .iter()
                    .map(|c| {
                        map.remove(c).flatten().map(|v| {
                            interned
                                .entry(v)
                                .or_insert_with_key(|k| Arc::from(k.as_str()))
                                .clone()
                        })
                    })
                    .collect();
                let location = Path::parse(&full).unwrap_or_else(|_| Path::from(full.as_str()));
                // Unreadable statistics are no statistics: the reader prunes by the footers.
                let json = view.stats();
                let stats = json
                    .as_deref()
                    .and_then(|json| serde_json::from_str::<DeltaStats>(json).ok());
                Arc::new(IndexedFile {
                    location,
                    size,
                    rows: stats
                        .as_ref()
                        .and_then(|s| s.num_records)
                        .and_then(|n| usize::try_from(n).ok()),
                    values,
                    stats: stats.map(|s| s.exact(&mut names)).unwrap_or_default(),
                })
            })
            .collect();
        if let Some((d, h)) = time {
            files.sort_by(|a, b| (&a.values[d], &a.values[h]).cmp(&(&b.values[d], &b.values[h])));
        }
        Ok(Some(Self {
            version: snapshot.version(),
            store_url,
            partition_columns,
            time,
            files,
        }))
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The number of live files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The files whose `(date, hour)` lies within the bounds (all files when the table is not
    /// partitioned by both, or the bounds are open).
    fn in_hours(&self, filters: &[Expr]) -> &[Arc<IndexedFile>] {
        let Some((d, h)) = self.time else {
            return &self.files;
        };
        let (from, until) = prune::hour_bounds(filters);
        fn key(f: &IndexedFile, d: usize, h: usize) -> (&str, &str) {
            (
                f.values[d].as_deref().unwrap_or(""),
                f.values[h].as_deref().unwrap_or(""),
            )
        }
        // Null dates sort first (`None < Some`), so an open lower bound keeps them; a bounded
        // one drops them, as the partition predicate `date >= ...` would.
        let start = match &from {
            Some((date, hour)) => self.files.partition_point(|f| {
                f.values[d].is_none() || key(f, d, h) < (date.as_str(), hour.as_str())
            }),
            None => 0,
        };
        let end = match &until {
            Some((date, hour)) => self.files.partition_point(|f| {
                f.values[d].is_none() || key(f, d, h) <= (date.as_str(), hour.as_str())
            }),
            None => self.files.len(),
        };
        &self.files[start..end.max(start)]
    }

    /// The physical scan of the files that `filters` may need.
    pub async fn scan(
        &self,
        table: &DeltaTable,
        schema: &SchemaRef,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let partition_fields = partition_fields(schema, &self.partition_columns)?;
        let candidates = self.in_hours(filters);
        let (on_partitions, on_data): (Vec<Expr>, Vec<Expr>) = filters
            .iter()
            .cloned()
            .partition(|f| self.prunes_exactly(f));
        let keep = partition_mask(candidates, &partition_fields, state, on_partitions)?;
        let mut files = Vec::new();
        for (file, _) in candidates.iter().zip(&keep).filter(|(_, k)| **k) {
            files.push(partitioned_file(file, &partition_fields, schema)?);
        }
        let files = prune_by_statistics(files, schema, state, on_data);
        let projected = match projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => Arc::clone(schema),
        };
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }

        table.update_datafusion_session(state)?;
        let store = state.runtime_env().object_store(&self.store_url)?;
        let data_fields = schema.fields().len() - partition_fields.len();
        let file_schema = Arc::new(Schema::new(schema.fields()[..data_fields].to_vec()));
        let options = TableParquetOptions {
            global: state.config_options().execution.parquet.clone(),
            ..Default::default()
        };
        let mean_size = files.iter().map(|f| f.object_meta.size).sum::<u64>() / files.len() as u64;
        let source = ParquetSource::new(
            TableSchema::builder(file_schema)
                .with_table_partition_cols(partition_fields)
                .build(),
        )
        .with_table_parquet_options(options)
        .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
            store,
            state.runtime_env().cache_manager.get_file_metadata_cache(),
        )));
        let source = if mean_size < PAGE_INDEX_MIN_MEAN_FILE_SIZE {
            source.with_enable_page_index(false)
        } else {
            source
        };
        let groups = file_groups(files, state.config().target_partitions());
        let statistics = scan_statistics(&groups, schema);
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    /// Whether the scan applies `filter` itself, exactly: it reads partition columns only
    /// (then it is evaluated on each file's partition values) and gives the same answer every
    /// time it is evaluated.
    pub fn prunes_exactly(&self, filter: &Expr) -> bool {
        let cols = filter.column_refs();
        !cols.is_empty()
            && cols
                .iter()
                .all(|c| self.partition_columns.contains(&c.name))
            && !filter.is_volatile()
    }
}

/// The files whose exact statistics (see [`ExactStats`]) may hold a row the filters on data
/// columns keep, decided before the plan is made, as delta-rs does: the Parquet reader could
/// prune them too, but only after opening each one.
fn prune_by_statistics(
    files: Vec<PartitionedFile>,
    schema: &SchemaRef,
    state: &dyn Session,
    on_data: Vec<Expr>,
) -> Vec<PartitionedFile> {
    let Some(predicate) = conjunction(on_data) else {
        return files;
    };
    let pruning = DFSchema::try_from(Arc::clone(schema))
        .and_then(|df_schema| state.create_physical_expr(predicate, &df_schema))
        .and_then(|physical| {
            PruningPredicateBuilder::new()
                .with_file_schema(Arc::clone(schema))
                .try_build(physical)
        });
    let pruning = match pruning {
        Ok(p) if !p.always_true() => p,
        // A filter pruning cannot read (a subquery, an unsupported type) prunes nothing.
        _ => return files,
    };
    let stats = PrunableStatistics::new(
        files
            .iter()
            .map(|f| {
                f.statistics
                    .clone()
                    .unwrap_or_else(|| Arc::new(Statistics::new_unknown(schema)))
            })
            .collect(),
        Arc::clone(schema),
    );
    match pruning.prune(&stats) {
        Ok(keep) => files
            .into_iter()
            .zip(keep)
            .filter_map(|(f, k)| k.then_some(f))
            .collect(),
        Err(_) => files,
    }
}

/// Which `candidates` the filters that read only partition columns keep.
fn partition_mask(
    candidates: &[Arc<IndexedFile>],
    fields: &[FieldRef],
    state: &dyn Session,
    on_partitions: Vec<Expr>,
) -> DfResult<Vec<bool>> {
    let Some(predicate) = conjunction(on_partitions) else {
        return Ok(vec![true; candidates.len()]);
    };
    let schema = Arc::new(Schema::new(fields.to_vec()));
    let columns = fields
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let strings: StringArray = candidates.iter().map(|f| f.values[i].as_deref()).collect();
            arrow::compute::cast(&strings, field.data_type())
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    let df_schema = DFSchema::try_from(schema)?;
    let physical = state.create_physical_expr(predicate, &df_schema)?;
    let value = physical.evaluate(&batch)?.into_array(batch.num_rows())?;
    let mask = value
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(
                "a partition filter is not a boolean".into(),
            )
        })?;
    // A null (unknown) keeps nothing, as in a WHERE clause.
    Ok((0..mask.len())
        .map(|i| mask.is_valid(i) && mask.value(i))
        .collect())
}

/// The provider schema's partition fields, which must be its last fields in the table's
/// partition column order (checked by [`scannable`]).
fn partition_fields(schema: &SchemaRef, columns: &[String]) -> DfResult<Vec<FieldRef>> {
    let start = schema.fields().len().checked_sub(columns.len());
    let fields = start.map(|s| &schema.fields()[s..]).unwrap_or_default();
    if fields.len() != columns.len() || fields.iter().zip(columns).any(|(f, c)| f.name() != c) {
        return Err(datafusion::error::DataFusionError::Internal(format!(
            "partition columns {columns:?} are not the last fields of the table's schema"
        )));
    }
    Ok(fields.to_vec())
}

/// Whether [`FileIndex::scan`] can read a table with this provider schema.
pub fn scannable(index: &FileIndex, schema: &SchemaRef) -> bool {
    partition_fields(schema, &index.partition_columns).is_ok()
}

fn partitioned_file(
    file: &IndexedFile,
    fields: &[FieldRef],
    schema: &SchemaRef,
) -> DfResult<PartitionedFile> {
    let mut out = PartitionedFile::from(ObjectMeta {
        location: file.location.clone(),
        last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        size: file.size,
        e_tag: None,
        version: None,
    });
    out.partition_values = fields
        .iter()
        .zip(&file.values)
        .map(|(field, value)| {
            ScalarValue::Utf8(value.as_deref().map(str::to_string)).cast_to(field.data_type())
        })
        .collect::<DfResult<_>>()?;
    let data_columns = schema.fields().len() - fields.len();
    // The row count from the Delta log is exact (DataFusion answers `count(*)` from it), and
    // so are integer bounds and null counts ([`ExactStats`]): with them a point lookup skips
    // files without opening them. Other bounds come from the Parquet footers.
    let column_statistics = schema.fields()[..data_columns]
        .iter()
        .map(|field| {
            let Some((_, exact)) = file.stats.iter().find(|(n, _)| &**n == field.name()) else {
                return ColumnStatistics::new_unknown();
            };
            let mut stat = ColumnStatistics::new_unknown();
            if let Some(n) = exact.nulls.and_then(|n| usize::try_from(n).ok()) {
                stat.null_count = Precision::Exact(n);
            }
            if field.data_type().is_integer() {
                let bound = |v: Option<i64>| {
                    v.and_then(|v| ScalarValue::Int64(Some(v)).cast_to(field.data_type()).ok())
                        .map_or(Precision::Absent, Precision::Exact)
                };
                stat.min_value = bound(exact.min);
                stat.max_value = bound(exact.max);
            }
            stat
        })
        .collect();
    Ok(out.with_statistics(Arc::new(Statistics {
        num_rows: file.rows.map_or(Precision::Absent, Precision::Exact),
        total_byte_size: Precision::Inexact(file.size as usize),
        column_statistics,
    })))
}

/// The files in `partitions` groups of about equal bytes (largest first into the lightest).
fn file_groups(mut files: Vec<PartitionedFile>, partitions: usize) -> Vec<FileGroup> {
    let partitions = partitions.clamp(1, files.len().max(1));
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
    for file in files {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        lightest.0 += file.object_meta.size;
        lightest.1.push(file);
    }
    groups
        .into_iter()
        .filter(|(_, g)| !g.is_empty())
        .map(|(_, g)| FileGroup::new(g))
        .collect()
}

/// The scan's statistics: rows summed (exact when every file's count is known).
fn scan_statistics(groups: &[FileGroup], schema: &SchemaRef) -> Statistics {
    let mut rows = Precision::Exact(0usize);
    let mut bytes = 0usize;
    for file in groups.iter().flat_map(|g| g.iter()) {
        let n = file
            .statistics
            .as_ref()
            .map_or(Precision::Absent, |s| s.num_rows);
        rows = rows.add(&n);
        bytes += file.object_meta.size as usize;
    }
    Statistics {
        num_rows: rows,
        total_byte_size: Precision::Inexact(bytes),
        column_statistics: Statistics::unknown_column(schema),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn index(hours: &[(Option<&str>, &str, &str)]) -> FileIndex {
        let mut files: Vec<Arc<IndexedFile>> = hours
            .iter()
            .enumerate()
            .map(|(i, (date, hour, host))| IndexedFile {
                location: Path::from(format!("t/f{i}.parquet")),
                size: 100 + i as u64,
                rows: Some(10),
                values: vec![
                    Some(Arc::from(*host)),
                    date.map(Arc::from),
                    Some(Arc::from(*hour)),
                ],
                stats: Vec::new(),
            })
            .map(Arc::new)
            .collect();
        files.sort_by(|a, b| (&a.values[1], &a.values[2]).cmp(&(&b.values[1], &b.values[2])));
        FileIndex {
            version: 1,
            store_url: ObjectStoreUrl::local_filesystem(),
            partition_columns: vec!["host".into(), "date".into(), "hour".into()],
            time: Some((1, 2)),
            files,
        }
    }

    fn ts(s: &str) -> Expr {
        let micros = chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros();
        lit(ScalarValue::TimestampMicrosecond(
            Some(micros),
            Some("UTC".into()),
        ))
    }

    fn hours_of(index: &FileIndex, filters: &[Expr]) -> Vec<String> {
        index
            .in_hours(filters)
            .iter()
            .map(|f| {
                let d = f.values[1].as_deref().unwrap_or("null");
                format!("{d}/{}", f.values[2].as_deref().unwrap_or("null"))
            })
            .collect()
    }

    #[test]
    fn a_time_range_finds_its_hours_by_search() {
        let index = index(&[
            (Some("2026-02-02"), "00", "a"),
            (Some("2026-02-01"), "23", "a"),
            (Some("2026-02-01"), "23", "b"),
            (Some("2026-02-01"), "22", "a"),
            (None, "00", "a"),
            (Some("2026-01-31"), "23", "a"),
        ]);
        let one_hour = [
            col("timestamp").gt_eq(ts("2026-02-01T23:00:00Z")),
            col("timestamp").lt(ts("2026-02-02T00:00:00Z")),
        ];
        assert_eq!(
            hours_of(&index, &one_hour),
            ["2026-02-01/23", "2026-02-01/23"]
        );
        // Across midnight, bounds inclusive.
        let across =
            [col("timestamp").between(ts("2026-02-01T23:30:00Z"), ts("2026-02-02T00:00:00Z"))];
        assert_eq!(
            hours_of(&index, &across),
            ["2026-02-01/23", "2026-02-01/23", "2026-02-02/00"]
        );
        // Open below: a file without a date cannot be placed in time, so only an open lower
        // bound keeps it (as `date >= ...` would drop it).
        let until = [col("timestamp").lt(ts("2026-02-01T00:00:00Z"))];
        assert_eq!(hours_of(&index, &until), ["null/00", "2026-01-31/23"]);
        let from = [col("timestamp").gt(ts("2026-02-01T22:59:59Z"))];
        assert_eq!(hours_of(&index, &from).len(), 4);
        assert_eq!(hours_of(&index, &[]).len(), 6);
        // An empty range is empty, not a panic.
        let none = [
            col("timestamp").gt(ts("2026-02-02T05:00:00Z")),
            col("timestamp").lt(ts("2026-02-01T05:00:00Z")),
        ];
        assert!(hours_of(&index, &none).is_empty());
    }

    #[test]
    fn only_stable_filters_on_partition_columns_are_applied_by_the_scan() {
        let index = index(&[(Some("2026-02-01"), "00", "a")]);
        assert!(index.prunes_exactly(&col("host").eq(lit("a"))));
        assert!(index.prunes_exactly(&col("date").gt(lit("x")).or(col("hour").eq(lit("01")))));
        assert!(!index.prunes_exactly(&col("level").eq(lit("ERROR"))));
        assert!(!index.prunes_exactly(&col("host").eq(lit("a")).or(col("level").eq(lit("x")))));
        assert!(!index.prunes_exactly(&lit(true)));
        let random = datafusion::functions::math::expr_fn::random();
        assert!(!index.prunes_exactly(&col("hour").lt(random)));
    }

    #[test]
    fn file_groups_are_balanced_by_bytes() {
        let file = |size: u64| {
            PartitionedFile::from(ObjectMeta {
                location: Path::from(format!("f{size}")),
                last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                size,
                e_tag: None,
                version: None,
            })
        };
        let groups = file_groups(vec![file(10), file(70), file(20), file(30), file(40)], 2);
        let bytes: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|f| f.object_meta.size).sum())
            .collect();
        assert_eq!(bytes, [90, 80]);
        assert_eq!(file_groups(vec![file(1)], 8).len(), 1);
    }
}
