//! One pass over one table: plan, merge, retention, log upkeep, vacuum.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use chrono::{DateTime, Timelike, Utc};
use delta_kernel::expressions::Scalar;
use deltalake::kernel::{Action, Add, LogicalFileView};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter as _, RecordBatchWriter, WriteMode};
use deltalake::DeltaTable;
use futures::StreamExt as _;
use indexmap::IndexMap;
use loglake_lake::commit::{commit_actions, commit_properties, refresh, txn_version, TxnUpdate};
use loglake_lake::write::{writer_properties, ROW_GROUP_ROWS};
use loglake_lake::{Lake, LakeError, REJECTED_SUFFIX};
use object_store::path::Path;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::ParquetMetaData;
use serde_json::json;

use crate::config::CompactorConfig;
use crate::copy::{self, NoCopy};
use crate::error::CompactError;
use crate::input::{self, Input};
use crate::merge::SortedMerge;
use crate::planner::{expired, plan, FileInfo, Merge, PlanConfig};
use crate::report::TableReport;
use crate::upkeep;

/// The txn app id that fences compactor commits: two compactions planned on the same
/// snapshot both carry it, so delta-rs rejects the second (DESIGN.md point 8).
pub const FENCE_APP_ID: &str = "loglake-compactor";

/// The column every data file is sorted by.
const SORT_COLUMN: &str = "timestamp";

/// Rows per batch read from each input: memory is one such batch per input of a merge.
const INPUT_BATCH_ROWS: usize = 4096;

/// Inputs whose row groups average fewer rows are decoded and merged into row groups of
/// ingest's size (`ROW_GROUP_ROWS`) rather than copied as they are.
const COPY_MIN_GROUP_ROWS: usize = ROW_GROUP_ROWS / 8;

/// Inputs opened at once when a merge starts (a whole small input or a footer each).
const OPEN_CONCURRENCY: usize = 16;

/// What a pass may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    /// Plan and report only.
    pub dry_run: bool,
    /// Called after every merge (a terminal's progress display); the library prints nothing.
    pub progress: Option<fn(&Progress)>,
}

/// How far a table's merges are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub table: String,
    pub merges_done: usize,
    pub merges_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

fn lake_err(table: &str) -> impl Fn(deltalake::DeltaTableError) -> CompactError + '_ {
    move |e| CompactError::Lake(LakeError::delta(table, e))
}

/// The live files of the loaded snapshot, with their partition values.
fn live_files(
    table: &DeltaTable,
    name: &str,
) -> Result<Vec<(FileInfo, LogicalFileView)>, CompactError> {
    let snapshot = table.snapshot().map_err(lake_err(name))?;
    Ok(snapshot
        .log_data()
        .iter()
        .map(|view| {
            let values = view.partition_values_map();
            let get = |k: &str| values.get(k).cloned().flatten().unwrap_or_default();
            let info = FileInfo {
                path: view.path().to_string(),
                host: get("host"),
                date: get("date"),
                // Quarantine tables are partitioned by date only: their day is their "hour".
                hour: values
                    .get("hour")
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "23".into()),
                size: view.size().max(0) as u64,
            };
            (info, view)
        })
        .collect())
}

/// Compacts, expires and cleans one table. Each merge holds `merge_slot` while it runs.
pub async fn run_table(
    lake: &Lake,
    dir: &str,
    config: &CompactorConfig,
    options: PassOptions,
    now: DateTime<Utc>,
    merge_slot: &tokio::sync::Semaphore,
) -> Result<TableReport, CompactError> {
    let started = Instant::now();
    let mut report = TableReport::new(dir);
    let Some(mut table) = lake.open_table(dir).await? else {
        return Ok(report);
    };
    let is_quarantine = dir.ends_with(REJECTED_SUFFIX);
    let files = live_files(&table, dir)?;
    let infos: Vec<FileInfo> = files.iter().map(|(f, _)| f.clone()).collect();
    report.files_before = infos.len();

    // Quarantine tables hold raw records in arrival order: they are expired and cleaned, not
    // merged (their files are few: one per flush that saw a bad record).
    let merges = if is_quarantine {
        Vec::new()
    } else {
        plan(
            &infos,
            now,
            &PlanConfig {
                target_file_size: config.target_file_size.as_u64(),
                grace: config.grace,
                min_files: config.min_files,
                max_fan_in: config.max_fan_in,
            },
        )
    };
    let topic = dir.strip_suffix(REJECTED_SUFFIX).unwrap_or(dir);
    let retention = config.retention_for(topic);
    let doomed: Vec<&FileInfo> = retention
        .map(|r| expired(&infos, now, r))
        .unwrap_or_default();
    let doomed_paths: HashSet<&str> = doomed.iter().map(|f| f.path.as_str()).collect();
    // Files retention removes are not merged first.
    let merges: Vec<Merge> = merges
        .into_iter()
        .filter(|m| !m.inputs.iter().any(|p| doomed_paths.contains(p.as_str())))
        .collect();
    report.planned(&merges, config.target_file_size.as_u64());
    report.expired_files = doomed.len();
    report.expired_bytes = doomed.iter().map(|f| f.size).sum();

    if options.dry_run {
        report.vacuum_candidates = upkeep::vacuum(&table, config, true).await?;
        report.plan = report.plan_text(&merges, config.target_file_size.as_u64());
        report.duration = started.elapsed();
        return Ok(report);
    }

    let views: HashMap<String, LogicalFileView> =
        files.into_iter().map(|(f, v)| (f.path, v)).collect();
    let bytes_total: u64 = merges.iter().map(|m| m.bytes).sum();
    let mut bytes_done = 0;
    for (n, merge) in merges.iter().enumerate() {
        // One merge at a time across the pass, whatever the table concurrency.
        let _merging = merge_slot
            .acquire()
            .await
            .expect("the pass never closes it");
        if let Some(progress) = options.progress {
            progress(&Progress {
                table: dir.to_string(),
                merges_done: n,
                merges_total: merges.len(),
                bytes_done,
                bytes_total,
            });
        }
        bytes_done += merge.bytes;
        match merge_one(&mut table, dir, merge, &views, config).await {
            Ok(done) => report.merged(merge, &done),
            Err(CompactError::Fenced { .. }) => {
                tracing::warn!(
                    table = dir,
                    "another compactor committed first; this table is left to it for this pass"
                );
                report.fenced = true;
                break;
            }
            Err(CompactError::Lake(LakeError::Conflict { reason, .. })) => {
                tracing::warn!(table = dir, host = %merge.host, date = %merge.date, hour = %merge.hour, %reason, "merge conflicted with a concurrent commit; re-planned next pass");
                report.skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }

    if let Some(retention) = retention {
        if !doomed.is_empty() {
            report.expired_files =
                upkeep::expire(&mut table, dir, retention, now, is_quarantine).await?;
        }
    }
    refresh(&mut table).await?;
    report.checkpointed = upkeep::checkpoint(&mut table, dir, config).await?;
    report.logs_removed = upkeep::cleanup_logs(&table, dir, config, now).await?;
    report.vacuumed_files = upkeep::vacuum(&table, config, false).await?;
    report.files_after = table
        .snapshot()
        .map_err(lake_err(dir))?
        .log_data()
        .iter()
        .count();
    report.duration = started.elapsed();
    Ok(report)
}

/// What one merge wrote.
#[derive(Debug, Default)]
pub struct MergeDone {
    /// Row groups were copied, not decoded.
    pub copied: bool,
    pub files_out: usize,
    pub bytes_out: u64,
    pub rows: u64,
}

fn partition_values(merge: &Merge) -> IndexMap<String, Scalar> {
    let mut values = IndexMap::new();
    values.insert("host".to_string(), Scalar::String(merge.host.clone()));
    values.insert("date".to_string(), Scalar::String(merge.date.clone()));
    values.insert("hour".to_string(), Scalar::String(merge.hour.clone()));
    values
}

/// Merges one hour's planned files into files of the target size and commits the swap,
/// fenced. On any failure before the commit the table is unchanged (what was written is an
/// orphan that vacuum removes later).
async fn merge_one(
    table: &mut DeltaTable,
    dir: &str,
    merge: &Merge,
    views: &HashMap<String, LogicalFileView>,
    config: &CompactorConfig,
) -> Result<MergeDone, CompactError> {
    let fence_before = txn_version(table, FENCE_APP_ID).await?;
    let read_version = table.version().unwrap_or_default();
    let inputs: Vec<&LogicalFileView> = merge.inputs.iter().filter_map(|p| views.get(p)).collect();
    let store = table.object_store();
    // Inputs are opened concurrently (each is a round trip to the store): small ones fetched
    // whole, the footers of the others read, whose streams then fetch their row groups as the
    // merge pulls them.
    let whole = input::fetch_whole(
        &inputs
            .iter()
            .map(|v| (v.size().max(0) as u64, v.num_records().map(|n| n as u64)))
            .collect::<Vec<_>>(),
        ROW_GROUP_ROWS as u64,
    );
    let opened: Vec<_> = futures::stream::iter(inputs.iter().zip(whole).map(|(view, whole)| {
        let store = store.clone();
        async move {
            let read_err = |source| CompactError::Read {
                table: dir.to_string(),
                path: view.path().to_string(),
                source,
            };
            let reader = Input::open(
                store,
                view.object_store_path(),
                view.size().max(0) as u64,
                whole,
            )
            .await
            .map_err(read_err)?;
            let fetched = reader.whole().cloned();
            ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map(|b| (b.with_batch_size(INPUT_BATCH_ROWS), fetched))
                .map_err(read_err)
        }
    }))
    .buffered(OPEN_CONCURRENCY)
    .collect()
    .await;
    if opened.is_empty() {
        return Ok(MergeDone::default());
    }
    let (builders, fetched): (Vec<_>, Vec<_>) = opened
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let values = partition_values(merge);
    let partition = format!(
        "host={}/date={}/hour={}",
        merge.host, merge.date, merge.hour
    );
    let merge_err = |source| CompactError::Merge {
        table: dir.to_string(),
        partition: partition.clone(),
        source,
    };
    let metas: Vec<&ParquetMetaData> = builders.iter().map(|b| b.metadata().as_ref()).collect();
    let plan = copy::copy_order(
        &metas,
        SORT_COLUMN,
        &writer_properties(None),
        COPY_MIN_GROUP_ROWS,
    )
    .and_then(|plan| {
        let stats: Vec<Option<String>> = inputs.iter().map(|v| v.stats()).collect();
        if stats
            .iter()
            .all(|s| copy::merged_stats(std::slice::from_ref(s), &plan.time_columns).is_some())
        {
            Ok((plan, stats))
        } else {
            Err(NoCopy::NoStatistics)
        }
    });
    let (mut adds, rows, method) = match plan {
        Ok((plan, stats)) => {
            // The copy reads whole inputs: those fetched whole already are handed over (and
            // let go of once copied), the others fetched as it goes.
            drop(builders);
            let copied = copy::copy_row_groups(
                dir,
                store.clone(),
                inputs
                    .iter()
                    .zip(fetched)
                    .map(|(v, fetched)| copy::CopyInput {
                        path: v.object_store_path(),
                        fetched,
                    })
                    .collect(),
                &plan.order,
                &parent(&inputs[0].object_store_path()),
                Arc::new(writer_properties(Some(plan.sort_leaf))),
                config.target_file_size.as_u64(),
            )
            .await?;
            let rows = copied.iter().map(|c| c.rows).sum();
            let adds = copied
                .into_iter()
                .map(|c| copied_add(c, inputs[0], &stats, &plan.time_columns))
                .collect();
            (adds, rows, "copy")
        }
        Err(why) => {
            tracing::debug!(table = dir, %partition, ?why, "merge decodes its inputs");
            let (adds, rows) =
                decode_merge(table, dir, builders, &inputs, &values, config, &merge_err).await?;
            (adds, rows, "decode")
        }
    };
    let expected_rows: u64 = inputs
        .iter()
        .filter_map(|v| v.num_records())
        .map(|n| n as u64)
        .sum();
    if inputs.iter().all(|v| v.num_records().is_some()) && expected_rows != rows {
        return Err(merge_err(arrow::error::ArrowError::ComputeError(format!(
            "read {rows} rows but the inputs' statistics say {expected_rows}; nothing committed"
        ))));
    }

    // Commit on the latest snapshot, after checking nothing moved under the plan: every
    // input still live, the fence where it was when the plan was made.
    refresh(table).await?;
    let live: HashSet<String> = table
        .snapshot()
        .map_err(lake_err(dir))?
        .log_data()
        .iter()
        .map(|v| v.path().to_string())
        .collect();
    let fence_now = txn_version(table, FENCE_APP_ID).await?;
    if fence_now != fence_before || !merge.inputs.iter().all(|p| live.contains(p)) {
        return Err(CompactError::Fenced {
            table: dir.to_string(),
            read_version,
        });
    }
    let bytes_out: u64 = adds.iter().map(|a| a.size.max(0) as u64).sum();
    let files_out = adds.len();
    let mut actions: Vec<Action> = inputs
        .iter()
        .map(|v| Action::Remove(v.remove_action(false)))
        .collect();
    for add in &mut adds {
        add.data_change = false;
    }
    actions.extend(adds.into_iter().map(Action::Add));
    let fence = TxnUpdate {
        app_id: FENCE_APP_ID.to_string(),
        expected: fence_before,
        version: fence_before.map_or(0, |v| v + 1),
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("loglake.writer".into(), json!("loglake-compactor"));
    metadata.insert("loglake.partition".into(), json!(partition));
    let operation = DeltaOperation::Optimize {
        predicate: Some(format!(
            "host = '{}' AND date = '{}' AND hour = '{}'",
            merge.host, merge.date, merge.hour
        )),
        target_size: config.target_file_size.as_u64() as i64,
    };
    match commit_actions(table, actions, &[fence], metadata, operation).await {
        Ok(version) => {
            tracing::info!(table = dir, %partition, files_in = merge.inputs.len(), files_out, rows, version, method, "merged");
            Ok(MergeDone {
                copied: method == "copy",
                files_out,
                bytes_out,
                rows,
            })
        }
        Err(LakeError::TxnConflict { .. }) => Err(CompactError::Fenced {
            table: dir.to_string(),
            read_version,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Where a copied merge's new file goes: beside its inputs.
fn parent(path: &Path) -> Path {
    let parts: Vec<_> = path.parts().collect();
    Path::from_iter(parts[..parts.len().saturating_sub(1)].iter().cloned())
}

/// The Add action of a file a copy wrote: the inputs' partition values, their statistics
/// combined.
fn copied_add(
    copied: copy::Copied,
    like: &LogicalFileView,
    stats: &[Option<String>],
    time_columns: &[Vec<String>],
) -> Add {
    let stats: Vec<Option<String>> = copied.inputs.iter().map(|&i| stats[i].clone()).collect();
    Add {
        // As delta-rs's own writer records a path: the object store's (percent-encoded) form.
        path: copied.path.to_string(),
        partition_values: like.partition_values_map(),
        size: copied.size as i64,
        modification_time: Utc::now().timestamp_millis(),
        data_change: false,
        stats: copy::merged_stats(&stats, time_columns),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}

/// The decoding merge: reads every input's rows, merges them by `timestamp` and writes them
/// anew with ingest's writer settings (row groups re-formed). Returns the new files' Add
/// actions and the rows written.
async fn decode_merge(
    table: &DeltaTable,
    dir: &str,
    builders: Vec<ParquetRecordBatchStreamBuilder<Input>>,
    inputs: &[&LogicalFileView],
    values: &IndexMap<String, Scalar>,
    config: &CompactorConfig,
    merge_err: &impl Fn(ArrowError) -> CompactError,
) -> Result<(Vec<Add>, u64), CompactError> {
    // The table's columns as files hold them (partition columns live in paths): inputs
    // written before the table gained a column read it as null.
    let table_columns = loglake_lake::evolve::arrow_schema(table)?;
    let partition_columns = table
        .snapshot()
        .map_err(lake_err(dir))?
        .metadata()
        .partition_columns()
        .to_vec();
    let schema: SchemaRef = Arc::new(Schema::new(
        table_columns
            .fields()
            .iter()
            .filter(|f| !partition_columns.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let mut streams = Vec::with_capacity(builders.len());
    for (builder, view) in builders.into_iter().zip(inputs) {
        let stream = builder.build().map_err(|source| CompactError::Read {
            table: dir.to_string(),
            path: view.path().to_string(),
            source,
        })?;
        let target = schema.clone();
        streams.push(
            stream
                .map(move |batch| {
                    batch
                        .map_err(ArrowError::from)
                        .and_then(|b| loglake_lake::evolve::align(b, &target))
                })
                .boxed(),
        );
    }
    let sorted_by = schema.index_of(SORT_COLUMN).ok();
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(lake_err(dir))?
        .with_writer_properties(writer_properties(sorted_by))
        .with_target_file_size(config.target_file_size.as_u64());
    let mut merged = SortedMerge::new(schema, SORT_COLUMN, 8192, streams);
    let mut rows = 0u64;
    while let Some(batch) = merged.next_batch().await.map_err(merge_err)? {
        rows += batch.num_rows() as u64;
        writer
            .write_partition(batch, values, WriteMode::Default)
            .await
            .map_err(lake_err(dir))?;
    }
    let adds = writer.flush().await.map_err(lake_err(dir))?;
    Ok((adds, rows))
}

/// The start of the hour holding `t`.
pub fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

/// Commit properties for upkeep commits (retention): no hooks, no txn.
pub(crate) fn plain_properties() -> deltalake::kernel::transaction::CommitProperties {
    commit_properties(&[], serde_json::Map::new())
}
