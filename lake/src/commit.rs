//! Commits that carry source progress: Add actions plus one Delta `txn` per source partition.
//!
//! **Invariant (zombie writers):** a commit carrying `txn(app_id)` is built on a snapshot in
//! which `txn(app_id)` equals what the writer expects (the offset just before its batch, or
//! absent), and is committed with that snapshot as its read version. delta-rs's conflict
//! checker then rejects it if any commit in between touched the same app id; the caller drops
//! the batch and re-reads, never retries blindly.

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};

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

/// Advances a loaded table to its latest version.
pub async fn refresh(table: &mut DeltaTable) -> Result<(), LakeError> {
    table
        .update_incremental(None)
        .await
        .map_err(|e| LakeError::delta(table.table_url().as_ref(), e))
}

/// The `txn` version recorded for `app_id` in the table's loaded snapshot.
pub async fn txn_version(table: &DeltaTable, app_id: &str) -> Result<Option<i64>, LakeError> {
    let name = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(&name, e))?;
    snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| LakeError::delta(&name, e))
}

/// Commits `adds` and the txn updates on the table's loaded snapshot (the read version).
///
/// Returns [`LakeError::TxnConflict`] when the snapshot's txn versions are not what the
/// caller expects, or when a concurrent commit touched one of the app ids; other concurrent
/// appends are merged by delta-rs's retry. On success the table is advanced to the new version.
pub async fn commit_with_progress(
    table: &mut DeltaTable,
    adds: Vec<Add>,
    txns: &[TxnUpdate],
    app_metadata: serde_json::Map<String, serde_json::Value>,
) -> Result<u64, LakeError> {
    let name = table.table_url().to_string();
    let read_version = table.version().unwrap_or_default();
    for txn in txns {
        let current = txn_version(table, &txn.app_id).await?;
        if current != txn.expected {
            return Err(LakeError::TxnConflict {
                table: name,
                app_id: txn.app_id.clone(),
                read_version,
            });
        }
    }
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(&name, e))?;
    let partition_by =
        Some(snapshot.metadata().partition_columns().to_vec()).filter(|p| !p.is_empty());
    let properties = CommitProperties::default()
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
        .with_max_retries(20);
    let result = CommitBuilder::from(properties)
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by,
                predicate: None,
            },
        )
        .await;
    match result {
        Ok(finalized) => {
            let version = finalized.version();
            table
                .update_incremental(Some(version))
                .await
                .map_err(|e| LakeError::delta(&name, e))?;
            Ok(version)
        }
        Err(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(_),
        }) => Err(LakeError::TxnConflict {
            table: name,
            app_id: txns
                .iter()
                .map(|t| t.app_id.as_str())
                .collect::<Vec<_>>()
                .join(","),
            read_version,
        }),
        Err(e) => Err(LakeError::delta(&name, e)),
    }
}
