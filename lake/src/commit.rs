//! Commits that carry source progress: Add actions plus one Delta `txn` per source partition.
//! Appends go through [`AppendTable`] (see its module for how it fences zombies without a
//! file list); rewrites of a loaded table (the compactor's) through [`commit_actions`].
//!
//! **Invariant (zombie writers):** a commit carrying `txn(app_id)` is built on a snapshot in
//! which `txn(app_id)` equals what the writer expects (the offset just before its batch, or
//! absent), and is committed with that snapshot as its read version. delta-rs's conflict
//! checker then rejects it if any commit in between touched the same app id; the caller drops
//! the batch and re-reads, never retries blindly.

use deltalake::kernel::transaction::{
    CommitBuilder, CommitConflictError, CommitProperties, TransactionError,
};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};

use crate::append::AppendTable;
use crate::error::LakeError;

/// Progress to record for one source partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnUpdate {
    pub app_id: String,
    /// What the table must say now; `None` when the writer started at the source's beginning.
    pub expected: Option<i64>,
    /// The version to record: the last source offset this commit covers.
    pub version: i64,
}

/// Advances a loaded table to its latest version (see [`rebuild_if_aged`]).
pub async fn refresh(table: &mut DeltaTable) -> Result<(), LakeError> {
    let before = table.version();
    table
        .update_incremental(None)
        .await
        .map_err(|e| LakeError::delta(table.table_url().as_ref(), e))?;
    rebuild_if_aged(table, before).await;
    Ok(())
}

/// A handle's snapshot is built afresh each time its version crosses a multiple of this.
pub const REBUILD_EVERY: u64 = 100;

/// delta-rs keeps a snapshot's file list as one in-memory batch per advance and re-reads all of
/// them on every advance, so a handle that lives long (an ingest worker's table, the query
/// service's catalog) paid more for every commit it had seen: on a local table with a
/// checkpoint every 100 commits, the median commit took 16 ms over the first 100 commits and
/// 158 ms over commits 900-1000 (`lake/examples/commit_latency.rs`). Once the version `before`
/// an advance and the version after it lie on either side of a multiple of
/// [`REBUILD_EVERY`], the snapshot is loaded again from the newest checkpoint on the same log
/// store. A failure keeps the aged snapshot: it is still right, only slower.
async fn rebuild_if_aged(table: &mut DeltaTable, before: Option<u64>) {
    let (Some(before), Some(now)) = (before, table.version()) else {
        return;
    };
    if before / REBUILD_EVERY == now / REBUILD_EVERY {
        return;
    }
    let mut fresh = DeltaTable::new(table.log_store());
    match fresh.load().await {
        Ok(()) if fresh.version() >= table.version() => {
            tracing::info!(table = %table.table_url(), version = ?fresh.version(),
                "snapshot rebuilt from the newest checkpoint");
            *table = fresh;
        }
        Ok(()) => {}
        Err(e) => tracing::warn!(table = %table.table_url(), error = %e,
            "could not rebuild the aged snapshot: keeping it"),
    }
}

/// The `txn` version recorded for `app_id` in the table's loaded snapshot.
///
/// Read through [`crate::progress::all_txns`]: delta-rs's `transaction_version` replays every
/// commit since the newest checkpoint on each call, and the compactor asks twice per merged
/// partition (its fence, when planning and before committing), so a pass over many partitions
/// of a table with a few hundred commits since its checkpoint read those commits again and
/// again.
pub async fn txn_version(table: &DeltaTable, app_id: &str) -> Result<Option<i64>, LakeError> {
    Ok(crate::progress::all_txns(table).await?.get(app_id).copied())
}

/// Commit properties for every loglake commit: txn progress, app metadata, and no
/// post-commit hooks. delta-rs would otherwise write a checkpoint inside some commit and LIST
/// the whole `_delta_log` after every one (expired-log cleanup), costs that grow with the
/// table's age; the compactor does both on its own schedule.
pub fn commit_properties(
    txns: &[TxnUpdate],
    app_metadata: serde_json::Map<String, serde_json::Value>,
) -> CommitProperties {
    CommitProperties::default()
        .with_application_transactions(
            txns.iter()
                .map(|t| {
                    Transaction::new_with_last_update(
                        &t.app_id,
                        t.version,
                        Some(chrono::Utc::now().timestamp_millis()),
                    )
                })
                .collect(),
        )
        .with_metadata(app_metadata)
        .with_max_retries(20)
        .with_create_checkpoint(false)
        .with_cleanup_expired_logs(Some(false))
}

/// Checks that the loaded snapshot's txn versions are what the caller expects: read in one
/// pass, from the commits after the previous check (see [`crate::progress::all_txns`]).
async fn check_txns(table: &DeltaTable, txns: &[TxnUpdate]) -> Result<(), LakeError> {
    if txns.is_empty() {
        return Ok(());
    }
    let known = crate::progress::all_txns(table).await?;
    for txn in txns {
        let current = known.get(&txn.app_id).copied();
        if current != txn.expected {
            return Err(LakeError::TxnConflict {
                table: table.table_url().to_string(),
                app_id: txn.app_id.clone(),
                read_version: table.version().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Commits `actions` (removes and adds of a rewrite, say) with the txn updates on the
/// table's loaded snapshot, as `operation`. Same rules as [`commit_with_progress`]; a
/// concurrent commit that removed one of our inputs for real (retention) is a conflict too.
pub async fn commit_actions(
    table: &mut DeltaTable,
    actions: Vec<Action>,
    txns: &[TxnUpdate],
    app_metadata: serde_json::Map<String, serde_json::Value>,
    operation: DeltaOperation,
) -> Result<u64, LakeError> {
    let name = table.table_url().to_string();
    let read_version = table.version().unwrap_or_default();
    check_txns(table, txns).await?;
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(&name, e))?;
    let result = CommitBuilder::from(commit_properties(txns, app_metadata))
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await;
    finish(table, result, txns, read_version).await
}

fn app_ids(txns: &[TxnUpdate]) -> String {
    txns.iter()
        .map(|t| t.app_id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

async fn finish(
    table: &mut DeltaTable,
    result: Result<deltalake::kernel::transaction::FinalizedCommit, DeltaTableError>,
    txns: &[TxnUpdate],
    read_version: u64,
) -> Result<u64, LakeError> {
    let name = table.table_url().to_string();
    match result {
        Ok(finalized) => {
            // The commit already advanced a copy of our snapshot to its version (delta-rs's
            // post-commit step): take it rather than replaying the same commit again, a cost
            // that grows with the table's live files.
            let version = finalized.version();
            table.state = Some(finalized.snapshot);
            rebuild_if_aged(table, Some(read_version)).await;
            Ok(version)
        }
        Err(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
        }) => Err(LakeError::TxnConflict {
            table: name,
            app_id: app_ids(txns),
            read_version,
        }),
        Err(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(conflict),
        }) => Err(LakeError::Conflict {
            table: name,
            read_version,
            reason: conflict.to_string(),
        }),
        Err(e) => Err(LakeError::delta(&name, e)),
    }
}

/// Commits `adds` and the txn updates after the table's version (its read version): see
/// [`AppendTable::commit`]. Any conflict is a [`LakeError::TxnConflict`] here, since the
/// writer's answer is the same: drop the batch and re-read its source from the table's
/// progress. On success the table is at the new version.
pub async fn commit_with_progress(
    table: &mut AppendTable,
    adds: Vec<Add>,
    txns: &[TxnUpdate],
    app_metadata: serde_json::Map<String, serde_json::Value>,
) -> Result<u64, LakeError> {
    match table.commit(adds, txns, app_metadata).await {
        Err(LakeError::Conflict {
            table,
            read_version,
            ..
        }) => Err(LakeError::TxnConflict {
            table,
            app_id: app_ids(txns),
            read_version,
        }),
        other => other,
    }
}
