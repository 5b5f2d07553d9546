//! The rest of a pass: retention (partition deletes), Delta log upkeep (checkpoints and
//! expired-log cleanup, which ingest commits leave to us), and vacuum.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::DeltaTable;
use futures::StreamExt as _;
use loglake_lake::LakeError;
use object_store::path::Path;
use object_store::ObjectStoreExt as _;

use crate::config::CompactorConfig;
use crate::error::CompactError;
use crate::table::{hour_floor, plain_properties};

fn delta(table: &str) -> impl Fn(deltalake::DeltaTableError) -> CompactError + '_ {
    move |e| CompactError::Lake(LakeError::delta(table, e))
}

/// The retention predicate: every hour (or, for a quarantine table, every day) that ended at
/// least `retention` before `now`. Only partition columns: delta-rs removes whole files
/// without reading them.
pub fn retention_predicate(now: DateTime<Utc>, retention: Duration, by_day: bool) -> String {
    let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let floor = hour_floor(cutoff);
    let day = floor.format("%Y-%m-%d");
    if by_day {
        format!("date < '{day}'")
    } else {
        format!(
            "date < '{day}' OR (date = '{day}' AND hour < '{:02}')",
            chrono::Timelike::hour(&floor)
        )
    }
}

/// Removes the partitions retention expired; returns how many files left the table. A
/// conflict with a concurrent commit is left for the next pass.
pub async fn expire(
    table: &mut DeltaTable,
    name: &str,
    retention: Duration,
    now: DateTime<Utc>,
    by_day: bool,
) -> Result<usize, CompactError> {
    let predicate = retention_predicate(now, retention, by_day);
    let result = table
        .clone()
        .delete()
        .with_predicate(predicate.as_str())
        .with_commit_properties(plain_properties())
        .await;
    match result {
        Ok((updated, metrics)) => {
            *table = updated;
            tracing::info!(table = name, %predicate, files = metrics.num_removed_files, "retention applied");
            Ok(metrics.num_removed_files)
        }
        Err(deltalake::DeltaTableError::Transaction { source }) => {
            tracing::warn!(table = name, error = %source, "retention conflicted with a concurrent commit; retried next pass");
            Ok(0)
        }
        Err(e) => Err(delta(name)(e)),
    }
}

/// The version of the table's last checkpoint, from `_delta_log/_last_checkpoint`.
async fn last_checkpoint(table: &DeltaTable) -> Option<i64> {
    let store = table.object_store();
    let bytes = store
        .get(&Path::from("_delta_log/_last_checkpoint"))
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("version")?
        .as_i64()
}

/// Writes a checkpoint when `checkpoint_every` commits followed the last one.
pub async fn checkpoint(
    table: &mut DeltaTable,
    name: &str,
    config: &CompactorConfig,
) -> Result<bool, CompactError> {
    let Some(version) = table.version() else {
        return Ok(false);
    };
    let version = version as i64;
    let last = last_checkpoint(table).await.unwrap_or(-1);
    if version - last < config.checkpoint_every as i64 {
        return Ok(false);
    }
    deltalake::checkpoints::create_checkpoint(table, None)
        .await
        .map_err(delta(name))?;
    tracing::info!(table = name, version, "checkpoint written");
    Ok(true)
}

/// Deletes log entries older than `log_retention` that the last checkpoint makes
/// unnecessary (delta-rs never deletes at or after that checkpoint). Txn progress lives in
/// the checkpoint, so ingest's offsets survive.
pub async fn cleanup_logs(
    table: &DeltaTable,
    name: &str,
    config: &CompactorConfig,
    now: DateTime<Utc>,
) -> Result<usize, CompactError> {
    let Some(version) = table.version() else {
        return Ok(0);
    };
    let cutoff =
        now - chrono::Duration::from_std(config.log_retention).unwrap_or(chrono::Duration::MAX);
    let removed = deltalake::checkpoints::cleanup_expired_logs_for(
        version,
        table.log_store().as_ref(),
        cutoff.timestamp_millis(),
        None,
    )
    .await
    .map_err(delta(name))?;
    if removed > 0 {
        tracing::info!(table = name, removed, "expired log entries deleted");
    }
    Ok(removed)
}

/// Deletes files no snapshot within `vacuum_delay` needs: tombstones older than the delay
/// and unreferenced files (a crashed writer's) older than it, by a full listing of the
/// table's prefix (the "lite" mode only sees tombstones still in the log). Returns how many files were deleted (with
/// `dry_run`: how many would be, counting tombstones whose file may already be gone).
///
/// Only the plan comes from delta-rs (a dry run, which commits nothing); we delete the
/// files ourselves, so no vacuum commit runs delta-rs's post-commit hooks.
pub async fn vacuum(
    table: &DeltaTable,
    config: &CompactorConfig,
    dry_run: bool,
) -> Result<usize, CompactError> {
    let name = table.table_url().to_string();
    let delay = chrono::Duration::from_std(config.vacuum_delay).unwrap_or(chrono::Duration::MAX);
    let (_, metrics) = table
        .clone()
        .vacuum()
        .with_mode(VacuumMode::Full)
        // One flat listing of the table (1,000 keys a request), not delta-rs's default walk
        // for multi-column partitioning: a delimiter listing per host and another per
        // (host, date), which for a table of 1,000 hosts kept 30 days is ~31,000 requests
        // returning a few dozen keys each, every pass.
        .parallel_scan(false)
        .with_retention_period(delay)
        .with_enforce_retention_duration(false)
        .with_dry_run(true)
        .await
        .map_err(delta(&name))?;
    let paths = metrics.files_deleted;
    if dry_run || paths.is_empty() {
        return Ok(paths.len());
    }
    let store = table.object_store();
    let locations: Vec<object_store::Result<Path>> = paths
        .iter()
        .map(|p| Ok(Path::parse(p).unwrap_or_else(|_| Path::from(p.as_str()))))
        .collect();
    let locations = futures::stream::iter(locations).boxed();
    // Tombstones stay in the log after their files are gone (until a checkpoint drops them),
    // so a later vacuum lists them again: a file already deleted is not an error.
    let mut deleted = 0usize;
    let mut results = store.delete_stream(locations);
    while let Some(result) = results.next().await {
        match result {
            Ok(_) => deleted += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(LakeError::Store {
                    url: name.clone(),
                    source,
                }
                .into())
            }
        }
    }
    tracing::info!(table = %name, files = deleted, "vacuumed");
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn retention_predicates_cover_whole_ended_hours() {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 5, 30, 0).unwrap();
        let day = Duration::from_secs(86400);
        // Cutoff 2026-03-09 05:30: the hour 04:00-05:00 has ended, 05:00-06:00 has not.
        assert_eq!(
            retention_predicate(now, day, false),
            "date < '2026-03-09' OR (date = '2026-03-09' AND hour < '05')"
        );
        assert_eq!(retention_predicate(now, day, true), "date < '2026-03-09'");
    }
}
