//! Tables opened to append to: their version, schema, partition columns and `txn` progress,
//! never their file list.
//!
//! A delta-rs [`deltalake::DeltaTable`] keeps every live file of its table in memory (~2 KiB
//! each) and builds that list on every load, and its commit path needs it. An ingest worker
//! only appends: what it needs of a table is the version to commit after, the schema and
//! partition columns to write files with, the table's `txn` progress, and whether a commit
//! that won a race touched its app ids or changed the table's metadata. An [`AppendTable`]
//! holds just that, so a worker's memory and the cost of opening and refreshing a table do
//! not grow with the files the table holds (a year of a 1,000-host topic is ~9 M hourly
//! files even after compaction).
//!
//! **Invariant (zombie writers), as in [`crate::commit`]:** a commit carrying `txn(app_id)`
//! is written only if the table's `txn(app_id)` at the read version is what the writer
//! expects, and every commit that won the race for a version in between is read: if it
//! carries one of the commit's app ids, the commit is refused with
//! [`LakeError::TxnConflict`] and nothing is written; if it changed the table's metadata or
//! protocol, or cannot be parsed, with [`LakeError::Conflict`]. Other winners (appends, compactions, retention
//! deletes) cannot conflict with a blind append, which reads no file. A write that failed, or
//! found its version taken, is first read back: the writer's own bytes there mean the store
//! wrote it and the answer was lost, so it is committed.

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitData, TransactionError};
use deltalake::kernel::{Action, Add, MetadataExt as _, StructField, StructType, Transaction};
use deltalake::logstore::{CommitOrBytes, LogStore as _, LogStoreRef};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::RecordBatchWriter;
use deltalake::{BlindDeltaTable, DeltaTableError};
use object_store::ObjectStoreExt as _;

use crate::commit::TxnUpdate;
use crate::error::LakeError;

/// Commits read one by one to move a handle forward; further behind, it is loaded again
/// (protocol, metadata and one replay of the `txn` column from the newest checkpoint).
const MAX_COMMITS_READ: u64 = 64;

/// Races for the next version a commit may lose before giving up; after each it reads the
/// winner and every commit after it, however many.
const MAX_ATTEMPTS: u64 = 64;

/// What reading the commit after a handle's version did.
enum Next {
    /// Moved the handle to it: the app ids whose `txn` it set.
    Read(Vec<String>),
    /// Loaded the table afresh (the commit changed the protocol or metadata, or could not be
    /// parsed): the handle is at the latest version.
    Reloaded,
    /// There is no such commit (yet).
    Missing,
}

/// Writer features an append of Add and `txn` actions honours as it is. Any other (row
/// tracking, in-commit timestamps, column mapping, generated or identity columns, ...)
/// needs more of a writer than that, so such a table is refused with its feature named.
const APPEND_SAFE_FEATURES: &[&str] = &[
    "appendOnly",
    "invariants",
    "changeDataFeed",
    "deletionVectors",
    "timestampNtz",
    "domainMetadata",
    "v2Checkpoint",
    "vacuumProtocolCheck",
    "checkpointProtection",
];

/// A Delta table opened to append to (see the module docs).
#[derive(Debug, Clone)]
pub struct AppendTable {
    name: String,
    log_store: LogStoreRef,
    /// The table's protocol and metadata as of its last change; new writers are made from it.
    meta: BlindDeltaTable,
    /// The newest version read.
    version: u64,
    /// Every `txn` of the table at `version`, app id -> version.
    txns: HashMap<String, i64>,
}

impl AppendTable {
    /// Opens the latest version of the table at `log_store`: its protocol and metadata, and
    /// its `txn` progress in one replay. [`DeltaTableError::NotATable`] when there is none.
    pub async fn open(log_store: LogStoreRef) -> Result<Self, LakeError> {
        let name = log_store.root_url().to_string();
        let meta = BlindDeltaTable::try_new_with_log_store(log_store.clone())
            .await
            .map_err(|e| LakeError::delta(&name, e))?;
        let version = meta.version();
        let txns = crate::progress::replay_txns(&name, &log_store, version).await?;
        Ok(Self {
            name,
            log_store,
            meta,
            version,
            txns,
        })
    }

    /// The table's URL.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_store(&self) -> LogStoreRef {
        self.log_store.clone()
    }

    /// The newest version this handle has read (or committed).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every `txn` of the table at [`AppendTable::version`], app id -> version.
    pub fn txns(&self) -> &HashMap<String, i64> {
        &self.txns
    }

    /// The table's Delta table id.
    pub fn id(&self) -> &str {
        self.meta.metadata().id()
    }

    /// The table's properties (`delta.*` keys and others), as of its last change.
    pub fn configuration(&self) -> &HashMap<String, String> {
        self.meta.metadata().configuration()
    }

    pub fn partition_columns(&self) -> &[String] {
        self.meta.metadata().partition_columns()
    }

    /// The table's schema as Arrow (partition columns included), as delta-rs's writer sees it.
    pub fn arrow_schema(&self) -> Result<SchemaRef, LakeError> {
        crate::evolve::metadata_arrow_schema(self.meta.metadata(), &self.name)
    }

    /// A writer of new data files for the table (statistics as its properties say).
    pub fn writer(&self) -> Result<RecordBatchWriter, LakeError> {
        self.check_protocol()?;
        RecordBatchWriter::for_blind_appends(&self.meta)
            .map_err(|e| LakeError::delta(&self.name, e))
    }

    fn check_protocol(&self) -> Result<(), LakeError> {
        let protocol = self.meta.protocol();
        let refused: Vec<String> = match protocol.writer_features() {
            Some(features) => features
                .iter()
                // By their protocol names, unknown ones included (strum says "unknown").
                .map(|f| match serde_json::to_value(f) {
                    Ok(serde_json::Value::String(name)) => name,
                    _ => f.as_ref().to_string(),
                })
                .filter(|f| !APPEND_SAFE_FEATURES.contains(&f.as_str()))
                .collect(),
            // Legacy versions: 2 is invariants and appendOnly; 3 adds check constraints, 4
            // generated columns and CDF, 5 column mapping, 6 identity columns.
            None if protocol.min_writer_version() <= 2 => Vec::new(),
            None => vec![format!("writer version {}", protocol.min_writer_version())],
        };
        if refused.is_empty() {
            return Ok(());
        }
        Err(LakeError::delta(
            &self.name,
            DeltaTableError::Generic(format!(
                "loglake appends only to tables whose writer features it honours; this \
                 table's protocol also has {}",
                refused.join(", ")
            )),
        ))
    }

    /// Loads the table afresh: protocol, metadata, version and `txn` progress. A table
    /// deleted and created again at the same place is taken as the new table it is (its
    /// progress, not the old one's, is what a writer's next commit must match).
    async fn reload(&mut self) -> Result<(), LakeError> {
        let fresh = Self::open(self.log_store.clone()).await?;
        if fresh.id() != self.id() {
            tracing::warn!(table = %self.name, old_id = self.id(), new_id = fresh.id(),
                "the table was deleted and created again: reading the new one");
        } else if fresh.version < self.version {
            return Err(LakeError::delta(
                &self.name,
                DeltaTableError::Generic(format!(
                    "the table's log ends at version {} but this writer read version {}",
                    fresh.version, self.version
                )),
            ));
        }
        tracing::info!(table = %self.name, from = self.version, to = fresh.version,
            "table loaded afresh (protocol, metadata and progress)");
        *self = fresh;
        Ok(())
    }

    /// Reads commit `version` (the one after this handle's) and moves the handle to it. A
    /// commit that changes the protocol or metadata, or cannot be parsed, makes the handle load
    /// the table afresh instead.
    async fn read_next(&mut self, version: u64) -> Result<Next, LakeError> {
        let bytes = self
            .log_store
            .read_commit_entry(version)
            .await
            .map_err(|e| LakeError::delta(&self.name, e))?;
        self.apply_next(version, bytes).await
    }

    /// Moves the handle to commit `version` (the one after its own), whose log entry is
    /// `bytes` (`None`: not there), as [`Self::read_next`] says.
    async fn apply_next(&mut self, version: u64, bytes: Option<Bytes>) -> Result<Next, LakeError> {
        debug_assert_eq!(version, self.version + 1);
        let Some(bytes) = bytes else {
            return Ok(Next::Missing);
        };
        match crate::progress::read_commit(&bytes) {
            Ok(commit) if !commit.changes_table => {
                let touched = commit
                    .txns
                    .iter()
                    .map(|(app_id, _)| app_id.clone())
                    .collect();
                self.txns.extend(commit.txns);
                self.version = version;
                Ok(Next::Read(touched))
            }
            _ => {
                self.reload().await?;
                Ok(Next::Reloaded)
            }
        }
    }

    /// Moves the handle to the table's latest version: one listing of the log from the
    /// handle's version, then each newer commit read (a table far behind, or whose commit
    /// was already cleaned up, is loaded afresh). On a local directory, the next commits
    /// are read until one is missing instead ([`Self::refresh_by_probing`]).
    pub async fn refresh(&mut self) -> Result<(), LakeError> {
        if self.log_store.root_url().scheme() == "file" {
            return self.refresh_by_probing().await;
        }
        let latest = match self.log_store.get_latest_version(self.version).await {
            Ok(latest) => latest,
            // The handle's own commit is gone (log cleanup while it idled).
            Err(_) => return self.reload().await,
        };
        if latest > self.version + MAX_COMMITS_READ {
            return self.reload().await;
        }
        while self.version < latest {
            match self.read_next(self.version + 1).await? {
                Next::Read(_) => {}
                Next::Reloaded => return Ok(()),
                Next::Missing => return self.reload().await,
            }
        }
        Ok(())
    }

    /// [`Self::refresh`] without a listing: a directory has no "list after", so object_store
    /// walks all of `_delta_log` and filters, and each flush paid for every log entry not yet
    /// expired (0.66 ms at 100 commits, 20 ms at 5,000: `examples/commit_latency.rs`). Reads
    /// the commits after the handle's until one is missing. That one being missing means
    /// the handle is current unless log cleanup expired it, which it does only to commits
    /// older than its cutoff, the handle's own among them: so the handle's own commit must
    /// still be there, or the table is loaded afresh.
    async fn refresh_by_probing(&mut self) -> Result<(), LakeError> {
        for _ in 0..MAX_COMMITS_READ {
            match self.read_next(self.version + 1).await? {
                Next::Read(_) => {}
                Next::Reloaded => return Ok(()),
                Next::Missing => {
                    let own = deltalake::logstore::commit_uri_from_version(Some(self.version));
                    return match self.log_store.object_store(None).head(&own).await {
                        Ok(_) => Ok(()),
                        Err(deltalake::logstore::object_store::Error::NotFound { .. }) => {
                            self.reload().await
                        }
                        Err(e) => Err(LakeError::delta(&self.name, e.into())),
                    };
                }
            }
        }
        // Far behind: loading is cheaper than reading on.
        self.reload().await
    }

    /// Commits `adds` and the txn updates as an append after the handle's version (its read
    /// version), trying the next version while others win the race and checking each winner
    /// (see the module docs). Returns the committed version; the handle is then at it.
    pub async fn commit(
        &mut self,
        adds: Vec<Add>,
        txns: &[TxnUpdate],
        app_metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<u64, LakeError> {
        let partition_by = Some(self.partition_columns().to_vec()).filter(|p| !p.is_empty());
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by,
            predicate: None,
        };
        let mut metadata: HashMap<String, serde_json::Value> = app_metadata.into_iter().collect();
        metadata.insert("isBlindAppend".into(), true.into());
        let actions = adds.into_iter().map(Action::Add).collect();
        self.write(actions, txns, operation, metadata).await
    }

    /// Adds `fields`, nullable columns the table does not have, to its schema: one metadata
    /// commit after the handle's version, which then holds the new schema. A
    /// [`LakeError::Conflict`] when another writer changed the metadata first (another worker
    /// adding the same columns, say): the caller compares the table's columns again.
    pub async fn add_columns(
        &mut self,
        fields: &[arrow::datatypes::Field],
    ) -> Result<u64, LakeError> {
        let encode = |source| LakeError::Encode {
            table: self.name.clone(),
            source,
        };
        let added: Vec<StructField> = fields
            .iter()
            .map(|f| f.try_into_kernel().map_err(encode))
            .collect::<Result<_, _>>()?;
        let existing = self.meta.schema();
        let columns = existing.fields().cloned().chain(added.clone());
        let delta = |e: DeltaTableError| LakeError::delta(&self.name, e);
        let schema = StructType::try_new(columns).map_err(|e| delta(e.into()))?;
        let metadata = (self.meta.metadata().clone())
            .with_schema(&schema)
            .map_err(|e| delta(e.into()))?;
        let operation = DeltaOperation::AddColumn { fields: added };
        let version = self
            .write(
                vec![Action::Metadata(metadata)],
                &[],
                operation,
                HashMap::new(),
            )
            .await?;
        self.reload().await?;
        Ok(version)
    }

    /// The handle after its commit at `version`: there, with the commit's txns.
    fn committed(&mut self, version: u64, txns: &[TxnUpdate]) -> u64 {
        self.txns
            .extend(txns.iter().map(|t| (t.app_id.clone(), t.version)));
        self.version = version;
        version
    }

    /// Writes `actions` (and a `txn` per update) as the next version, checking each winner of
    /// the race (see the module docs). The handle is then at the committed version.
    async fn write(
        &mut self,
        actions: Vec<Action>,
        txns: &[TxnUpdate],
        operation: DeltaOperation,
        mut app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<u64, LakeError> {
        self.check_protocol()?;
        let read_version = self.version;
        let conflict = |name: &str, app_id: &str| LakeError::TxnConflict {
            table: name.to_string(),
            app_id: app_id.to_string(),
            read_version,
        };
        let expected_now = |table: &Self| {
            txns.iter()
                .find(|t| table.txns.get(&t.app_id).copied() != t.expected)
                .map(|t| t.app_id.clone())
        };
        if let Some(app_id) = expected_now(self) {
            return Err(conflict(&self.name, &app_id));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let transactions = txns
            .iter()
            .map(|t| Transaction::new_with_last_update(&t.app_id, t.version, Some(now)))
            .collect();
        app_metadata.insert("readVersion".into(), read_version.into());
        let bytes = CommitData::new(actions, operation, app_metadata, transactions)
            .get_bytes()
            .map_err(|e| {
                LakeError::delta(&self.name, DeltaTableError::Transaction { source: e })
            })?;
        let operation_id = uuid::Uuid::new_v4();
        let changed = |name: &str| LakeError::Conflict {
            table: name.to_string(),
            read_version,
            reason: "a concurrent commit changed the table's metadata or protocol, or could not \
                     be read"
                .into(),
        };
        for lost in 1..=MAX_ATTEMPTS {
            let version = self.version + 1;
            let written = self
                .log_store
                .write_commit_entry(
                    version,
                    CommitOrBytes::LogBytes(bytes.clone()),
                    operation_id,
                )
                .await;
            let Err(e) = written else {
                return Ok(self.committed(version, txns));
            };
            // A put-if-absent whose answer the client did not get (a 5xx that object_store
            // retried into "already exists", a dropped connection) may have written this very
            // commit: the entry at `version` says. Read once, it is also the winner of a race.
            let found = self.log_store.read_commit_entry(version).await;
            if matches!(&found, Ok(Some(entry)) if *entry == bytes) {
                tracing::info!(table = %self.name, version,
                    "the store had written this commit although its request failed: committed");
                return Ok(self.committed(version, txns));
            }
            if !matches!(e, TransactionError::VersionAlreadyExists(_)) {
                return Err(LakeError::delta(
                    &self.name,
                    DeltaTableError::Transaction { source: e },
                ));
            }
            // Lost the race: read the winner and every commit that landed after it, each
            // checked.
            let found = found.map_err(|e| LakeError::delta(&self.name, e))?;
            let mut next = self.apply_next(version, found).await?;
            let latest = match next {
                Next::Read(_) => self
                    .log_store
                    .get_latest_version(self.version)
                    .await
                    .map_or(version, |l| l.max(version)),
                _ => version,
            };
            loop {
                match next {
                    Next::Read(touched) => {
                        // Any commit that set one of our app ids, whatever to (a zombie).
                        let ours = |id: &String| txns.iter().any(|t| &t.app_id == id);
                        if let Some(app_id) = touched.iter().find(|id| ours(id)) {
                            return Err(conflict(&self.name, app_id));
                        }
                    }
                    // Loaded afresh: what the commits in between did is not known.
                    Next::Reloaded => return Err(changed(&self.name)),
                    // Taken, not readable yet: a store not yet consistent.
                    Next::Missing => {
                        tokio::time::sleep(std::time::Duration::from_millis(10 * lost)).await;
                        break;
                    }
                }
                if self.version >= latest {
                    break;
                }
                next = self.read_next(self.version + 1).await?;
            }
            if let Some(app_id) = expected_now(self) {
                return Err(conflict(&self.name, &app_id));
            }
        }
        Err(LakeError::Conflict {
            table: self.name.clone(),
            read_version,
            reason: format!("lost the race for the next version {MAX_ATTEMPTS} times"),
        })
    }
}
