//! The compactor: merges the small files of closed hours, applies retention, keeps Delta
//! logs short, vacuums.
//!
//! Ingest favours freshness: every flush writes one small file per (host, date, hour) and one
//! commit. A pass of [`run_pass`] over every table of the lake:
//!
//! 1. **plans** ([`planner::plan`], pure) which small files of which *closed* hours (hour end
//!    plus `grace` in the past) to merge, and which hours retention expires;
//! 2. **merges** each planned group with a k-way merge ([`merge::SortedMerge`]: the inputs are
//!    each sorted by `timestamp`) or, when the inputs follow each other in time, by copying
//!    their encoded row groups ([`copy`]), writes files of about `target_file_size`, and commits the
//!    swap as one Delta commit: `remove`s and `add`s with `dataChange = false`, fenced by a
//!    `txn` of its own so that two compactors cannot both remove the same files;
//! 3. **expires** whole partitions past retention (a partition-only delete: no file is read);
//! 4. **checkpoints** and **cleans expired log entries** (ingest commits run no post-commit
//!    hooks), so opening a table and committing to it stay cheap however old it is;
//! 5. **vacuums** files no snapshot within `vacuum_delay` needs, by a full listing.
//!
//! It must never rewrite an open hour, commit a merge whose inputs are no longer live, or drop
//! a `txn` ingest needs. It is safe to kill at any point: before its commit a merge leaves
//! only unreferenced files, which a later vacuum deletes.
//!
//! ```no_run
//! # async fn demo(lake: loglake_lake::Lake) -> Result<(), loglake_compactor::CompactError> {
//! use loglake_compactor::{run_pass, CompactorConfig, PassOptions};
//! let report = run_pass(&lake, &CompactorConfig::default(), PassOptions::default(), None).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod config;
pub mod copy;
mod error;
pub mod input;
pub mod merge;
pub mod planner;
mod report;
mod service;
mod table;
mod upkeep;

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use loglake_lake::Lake;
use tokio_util::sync::CancellationToken;

pub use config::{CompactorConfig, MIN_VACUUM_DELAY};
pub use error::CompactError;
pub use planner::{hour_end, plan, FileInfo, Merge, PlanConfig};
pub use report::{PassReport, TableReport};
pub use service::{serve, CompactorMetrics};
pub use table::{PassOptions, Progress, FENCE_APP_ID};
pub use upkeep::retention_predicate;

/// One pass over every table of the lake (or only `only`, a table directory). Up to
/// `table_concurrency` tables are worked on at once, their merges one at a time; a table
/// that fails does not stop the others, and the pass fails at the end if any did. Reports
/// (and `--dry-run` plans) come in table order.
pub async fn run_pass(
    lake: &Lake,
    config: &CompactorConfig,
    options: PassOptions,
    only: Option<&str>,
) -> Result<PassReport, CompactError> {
    config.validate()?;
    if !options.dry_run {
        lake.ensure_safe_for_writes().await?;
    }
    let started = Instant::now();
    let now = chrono::Utc::now();
    let wanted = |d: &str| only.is_none_or(|o| d == o || loglake_lake::sql_table_name(d) == o);
    let tables: Vec<String> = lake
        .list_tables_where(wanted)
        .await?
        .into_iter()
        .map(|t| t.dir)
        .collect();
    if let (Some(only), true) = (only, tables.is_empty()) {
        let all: Vec<String> = lake
            .list_tables()
            .await?
            .into_iter()
            .map(|t| t.dir)
            .collect();
        return Err(CompactError::Config {
            key: "--table".into(),
            message: format!("no table {only:?} in the lake (tables: {all:?})"),
        });
    }
    // The tables are polled from the pass's own task, so a merge's CPU holds up the other
    // tables' round trips while it runs. Spawning each table would let them overlap, but a
    // merge would then run on any worker thread and grow each thread's malloc arena to the
    // merge's peak: the decode benchmark's peak RSS went from 140 to 204 MiB.
    let merge_slot = &tokio::sync::Semaphore::new(1);
    let mut outcomes = futures::stream::iter(&tables)
        .map(|dir| async move {
            let outcome = table::run_table(lake, dir, config, options, now, merge_slot).await;
            (dir, outcome)
        })
        .buffered(config.table_concurrency);
    let mut report = PassReport::default();
    while let Some((dir, outcome)) = outcomes.next().await {
        match outcome {
            Ok(t) => {
                if options.dry_run {
                    use std::io::Write as _;
                    let _ = std::io::stdout().lock().write_all(t.plan.as_bytes());
                }
                tracing::info!(
                    table = %dir,
                    merged = t.merged,
                    files_in = t.files_in,
                    files_out = t.files_out,
                    expired = t.expired_files,
                    vacuumed = t.vacuumed_files,
                    seconds = t.duration.as_secs_f64(),
                    "table done"
                );
                report.tables.push(t);
            }
            Err(e) => {
                tracing::error!(table = %dir, error = %e, source = ?std::error::Error::source(&e), "table failed");
                report.failed.push((dir.clone(), e.to_string()));
            }
        }
    }
    report.duration = started.elapsed();
    if let Some((table, first)) = report.failed.first() {
        return Err(CompactError::Pass {
            failed: report.failed.len(),
            tables: tables.len(),
            first: format!("{table}: {first}"),
        });
    }
    Ok(report)
}

/// Runs a pass every `interval` until `shutdown`; a failed pass is logged and the next one
/// runs on schedule. `on_pass` sees every pass's outcome (metrics).
pub async fn run_every(
    lake: &Lake,
    config: &CompactorConfig,
    interval: Duration,
    shutdown: CancellationToken,
    mut on_pass: impl FnMut(&Result<PassReport, CompactError>),
) {
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = run_pass(lake, config, PassOptions::default(), None) => outcome,
        };
        match &outcome {
            Ok(report) => tracing::info!(summary = %report, "pass done"),
            Err(e) => tracing::error!(error = %e, "pass failed"),
        }
        on_pass(&outcome);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
