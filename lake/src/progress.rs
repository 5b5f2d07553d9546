//! How far a table has archived its source, as recorded in the table's own `txn` actions.
//!
//! Ingest records two `txn` app ids per Kafka partition in every data commit:
//!
//! - `loglake:<group>:<partition>`: the last Kafka offset archived (or quarantined). A writer
//!   resumes at the next one; see [`crate::commit`] for the fencing this gives.
//! - `loglake:<group>:<partition>:event_time`: the newest event time (ms since the epoch) of any
//!   row archived from that partition, never moving back and never past the wall clock of the
//!   commit that wrote it.
//!
//! `txn` actions are part of a table's snapshot: they survive checkpoints and log cleanup, so
//! this reading costs the same on a table months old. From the second kind a reader derives
//! [`complete_through`]: the event time before which no more rows are expected.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use delta_kernel::actions::LOG_TXN_SCHEMA;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::Snapshot;
use deltalake::logstore::LogStoreRef;
use deltalake::{DeltaTable, DeltaTableError};

use crate::error::LakeError;

const PREFIX: &str = "loglake:";
const EVENT_TIME: &str = ":event_time";

/// The app id of a partition's archived offset.
pub fn offset_app_id(group_id: &str, partition: i32) -> String {
    format!("{PREFIX}{group_id}:{partition}")
}

/// The app id of a partition's newest archived event time.
pub fn event_time_app_id(group_id: &str, partition: i32) -> String {
    format!("{PREFIX}{group_id}:{partition}{EVENT_TIME}")
}

/// What a loglake app id records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Offset,
    EventTime,
}

/// Splits a loglake app id into (group, partition, what it records); `None` for app ids of
/// other writers. The group may itself contain `:`.
pub fn parse_app_id(app_id: &str) -> Option<(&str, i32, Recorded)> {
    let rest = app_id.strip_prefix(PREFIX)?;
    let (rest, recorded) = match rest.strip_suffix(EVENT_TIME) {
        Some(rest) => (rest, Recorded::EventTime),
        None => (rest, Recorded::Offset),
    };
    let (group, partition) = rest.rsplit_once(':')?;
    let partition = partition.parse().ok()?;
    Some((group, partition, recorded))
}

/// The event time (ms) before which the table is complete: every Kafka partition that ever
/// archived an offset has archived a row stamped at least this late, plus `grace_ms` for
/// records that reach Kafka later than their stamp. Where several consumer groups wrote a
/// partition the furthest counts. `None` while any partition has archived offsets but no row
/// yet (nothing is known of its lateness), or no partition has archived anything.
pub fn complete_through(txns: &HashMap<String, i64>, grace_ms: i64) -> Option<i64> {
    let mut offsets: BTreeMap<i32, ()> = BTreeMap::new();
    let mut newest: BTreeMap<i32, i64> = BTreeMap::new();
    for (app_id, &version) in txns {
        match parse_app_id(app_id) {
            Some((_, p, Recorded::Offset)) => {
                offsets.insert(p, ());
            }
            Some((_, p, Recorded::EventTime)) => {
                let e = newest.entry(p).or_insert(version);
                *e = (*e).max(version);
            }
            None => {}
        }
    }
    if offsets.is_empty() || offsets.keys().any(|p| !newest.contains_key(p)) {
        return None;
    }
    newest.values().min().map(|&t| t.saturating_sub(grace_ms))
}

/// Every `txn` of the table's loaded version, app id -> version.
///
/// The first call for a table replays its log once (the newest checkpoint's `txn` column and
/// the commits after it); later calls start from what the previous one read and read only the
/// commits after it, usually one or two objects. delta-rs 1.1 instead replays the log since
/// the newest checkpoint once per app id: checked before every ingest commit, that was P
/// replays per commit whose cost grew with every commit until the compactor's next checkpoint.
/// A commit that can no longer be read (log cleanup) falls back to the full replay.
pub async fn all_txns(table: &DeltaTable) -> Result<HashMap<String, i64>, LakeError> {
    let Some(version) = table.version() else {
        return Ok(HashMap::new());
    };
    let name = table.table_url().to_string();
    let key = (
        name.clone(),
        table
            .snapshot()
            .map_err(|e| LakeError::delta(&name, e))?
            .metadata()
            .id()
            .to_string(),
    );
    let known = read_cache().get(&key).cloned();
    let txns = match known {
        // Far behind (a reader that looks once a day at a busy table), reading commit after
        // commit would cost more than the replay from the checkpoint.
        Some(known) if known.version <= version && version - known.version <= MAX_COMMITS_AFTER => {
            match txns_after(table, known.txns, known.version, version).await {
                Some(txns) => txns,
                None => replay_txns(&name, &table.log_store(), version).await?,
            }
        }
        _ => replay_txns(&name, &table.log_store(), version).await?,
    };
    let mut cache = read_cache();
    if cache.len() >= KNOWN_TABLES && !cache.contains_key(&key) {
        cache.clear();
    }
    let newer = cache.get(&key).is_some_and(|k| k.version > version);
    if !newer {
        cache.insert(
            key,
            Known {
                version,
                txns: txns.clone(),
            },
        );
    }
    Ok(txns)
}

/// The most commits [`all_txns`] reads one by one after its previous reading; further behind,
/// it replays the log.
const MAX_COMMITS_AFTER: u64 = 64;

/// What [`all_txns`] last read of a table (keyed by its URL and Delta table id, so a table
/// dropped and created again at the same place is not mistaken for the old one).
#[derive(Clone)]
struct Known {
    version: u64,
    txns: HashMap<String, i64>,
}

type KnownTables = HashMap<(String, String), Known>;

/// Tables remembered at once; past it the memory starts again (a worker holds two tables per
/// topic it owns).
const KNOWN_TABLES: usize = 4096;

static KNOWN: std::sync::LazyLock<std::sync::Mutex<KnownTables>> =
    std::sync::LazyLock::new(Default::default);

fn read_cache() -> std::sync::MutexGuard<'static, KnownTables> {
    // The map is replaced whole per entry: a panic elsewhere cannot leave an entry half-written.
    KNOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `txns` as of version `from`, moved to version `to` by the `txn` actions of the commits in
/// between; `None` when one of them cannot be read or parsed.
async fn txns_after(
    table: &DeltaTable,
    mut txns: HashMap<String, i64>,
    from: u64,
    to: u64,
) -> Option<HashMap<String, i64>> {
    let log_store = table.log_store();
    for v in from + 1..=to {
        // Gone (log cleanup) or unreadable: the caller replays the log instead.
        let commit = log_store.read_commit_entry(v).await.ok()??;
        txns.extend(read_commit(&commit).ok()?.txns);
    }
    Some(txns)
}

/// What one commit file says of a table's progress and shape.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CommitRead {
    /// Its `txn` actions (app id, version), in order.
    pub txns: Vec<(String, i64)>,
    /// It carries a `metaData` or `protocol` action.
    pub changes_table: bool,
}

/// Reads a commit file's `txn` actions and whether it changes the table. One action per line,
/// named by its first key: the `add` lines (nearly all of them) are not parsed.
pub(crate) fn read_commit(bytes: &[u8]) -> Result<CommitRead, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Line {
        txn: Option<Txn>,
    }
    #[derive(serde::Deserialize)]
    struct Txn {
        #[serde(rename = "appId")]
        app_id: String,
        version: i64,
    }
    let mut read = CommitRead {
        txns: Vec::new(),
        changes_table: false,
    };
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let spaced;
        let key: &[u8] = match line.strip_prefix(b"{\"") {
            // Written compactly, as delta-rs and Spark write: the key ends at the next quote.
            Some(rest) => &rest[..rest.iter().position(|&b| b == b'"').unwrap_or(0)],
            // Written with spaces by some other writer: read the whole line.
            None => {
                let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line)?;
                spaced = map.keys().next().cloned().unwrap_or_default();
                spaced.as_bytes()
            }
        };
        match key {
            b"metaData" | b"protocol" => read.changes_table = true,
            b"txn" => {
                if let Some(txn) = serde_json::from_slice::<Line>(line)?.txn {
                    read.txns.push((txn.app_id, txn.version));
                }
            }
            _ => {}
        }
    }
    Ok(read)
}

/// Every `txn` of the table at `version`, in one replay of its log.
pub(crate) async fn replay_txns(
    name: &str,
    log_store: &LogStoreRef,
    version: u64,
) -> Result<HashMap<String, i64>, LakeError> {
    let engine = log_store.engine(None);
    let mut root = log_store.config().location().clone();
    if !root.path().ends_with('/') {
        let path = format!("{}/", root.path());
        root.set_path(&path);
    }
    let replay = move || -> delta_kernel::DeltaResult<HashMap<String, i64>> {
        let snapshot = Snapshot::builder_for(root)
            .at_version(version)
            .build(engine.as_ref())?;
        let mut found = HashMap::new();
        // Newest first: commits in descending order, then the checkpoint.
        for batch in snapshot
            .log_segment()
            .read_actions(engine.as_ref(), LOG_TXN_SCHEMA.clone())?
        {
            let data = ArrowEngineData::try_from_engine_data(batch?.actions)?;
            let batch = data.record_batch();
            let Some(txn) = batch.column_by_name("txn").and_then(|c| c.as_struct_opt()) else {
                continue;
            };
            let (Some(app), Some(ver)) = (
                txn.column_by_name("appId")
                    .and_then(|c| c.as_string_opt::<i32>()),
                txn.column_by_name("version")
                    .and_then(|c| c.as_primitive_opt::<Int64Type>()),
            ) else {
                continue;
            };
            for i in 0..txn.len() {
                if txn.is_valid(i) && app.is_valid(i) && ver.is_valid(i) {
                    found
                        .entry(app.value(i).to_string())
                        .or_insert(ver.value(i));
                }
            }
        }
        Ok(found)
    };
    tokio::task::spawn_blocking(replay)
        .await
        .map_err(|e| LakeError::delta(name, DeltaTableError::Generic(e.to_string())))?
        .map_err(|e| LakeError::delta(name, DeltaTableError::from(e)))
}

/// The Kafka offsets of `partition` in `(after, through]` that a quarantine table holds: what
/// a crash between the quarantine commit and the data commit left quarantined, so a worker
/// replaying that range decides by what was committed, not by how today's schema maps a
/// record. The range is one flush long; the scan reads the quarantine table's files that may
/// hold it.
pub async fn quarantined_offsets(
    table: &DeltaTable,
    partition: i32,
    after: i64,
    through: i64,
) -> Result<std::collections::BTreeSet<i64>, LakeError> {
    use datafusion::prelude::{col, lit, SessionContext};
    let name = table.table_url().to_string();
    let err = |e: datafusion::error::DataFusionError| {
        LakeError::delta(&name, DeltaTableError::Generic(e.to_string()))
    };
    let provider = table.table_provider().await.map_err(err)?;
    let ctx = SessionContext::new();
    let batches = ctx
        .read_table(provider)
        .map_err(err)?
        .filter(
            col("_kafka_partition")
                .eq(lit(partition))
                .and(col("_kafka_offset").gt(lit(after)))
                .and(col("_kafka_offset").lt_eq(lit(through))),
        )
        .map_err(err)?
        .select_columns(&["_kafka_offset"])
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    let mut offsets = std::collections::BTreeSet::new();
    for batch in &batches {
        if let Some(column) = batch.column(0).as_primitive_opt::<Int64Type>() {
            offsets.extend(column.iter().flatten());
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txns(entries: &[(&str, i64)]) -> HashMap<String, i64> {
        entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_commit_is_read_by_the_first_key_of_each_line() {
        let commit = br#"{"commitInfo":{"timestamp":1,"operation":"WRITE"}}
{"add":{"path":"a.parquet","stats":"{\"minValues\":{\"message\":\"{\\\"protocol\\\"\"}}"}}
{"txn":{"appId":"loglake:g:0","version":41,"lastUpdated":1}}
{"txn":{"appId":"loglake:g:0:event_time","version":7}}"#;
        let read = read_commit(commit).unwrap();
        assert!(!read.changes_table, "an add whose stats mention protocol");
        assert_eq!(
            read.txns,
            vec![
                ("loglake:g:0".to_string(), 41),
                ("loglake:g:0:event_time".to_string(), 7)
            ]
        );
        let changed = b"{\"commitInfo\":{}}\n{\"metaData\":{\"id\":\"x\"}}";
        assert!(read_commit(changed).unwrap().changes_table);
        let upgraded = b"{\"protocol\":{\"minReaderVersion\":3}}";
        assert!(read_commit(upgraded).unwrap().changes_table);
        // Another writer's spacing is read too.
        let spaced = b"{ \"txn\" : {\"appId\": \"x\", \"version\": 3}}\r\n{ \"metaData\": {}}\n";
        let read = read_commit(spaced).unwrap();
        assert_eq!(read.txns, vec![("x".to_string(), 3)]);
        assert!(read.changes_table);
        assert!(read_commit(b"{\"txn\":{\"appId\":5}}").is_err());
    }

    #[test]
    fn app_ids_round_trip_even_with_colons_in_the_group() {
        for group in ["loglake", "team:a", "x"] {
            for p in [0, 7, 1023] {
                assert_eq!(
                    parse_app_id(&offset_app_id(group, p)),
                    Some((group, p, Recorded::Offset))
                );
                assert_eq!(
                    parse_app_id(&event_time_app_id(group, p)),
                    Some((group, p, Recorded::EventTime))
                );
            }
        }
        assert_eq!(parse_app_id("spark-streaming-42"), None);
        assert_eq!(parse_app_id("loglake:g:notanumber"), None);
    }

    #[test]
    fn complete_through_is_the_slowest_partition_minus_grace() {
        let t = txns(&[
            ("loglake:g:0", 100),
            ("loglake:g:0:event_time", 5_000),
            ("loglake:g:1", 90),
            ("loglake:g:1:event_time", 3_000),
            ("other-writer", 1),
        ]);
        assert_eq!(complete_through(&t, 500), Some(2_500));
    }

    #[test]
    fn a_partition_without_rows_leaves_it_unknown() {
        let t = txns(&[
            ("loglake:g:0", 100),
            ("loglake:g:0:event_time", 5_000),
            ("loglake:g:1", 90),
        ]);
        assert_eq!(complete_through(&t, 0), None);
        assert_eq!(complete_through(&HashMap::new(), 0), None);
    }

    #[test]
    fn the_furthest_group_counts_for_a_partition() {
        let t = txns(&[
            ("loglake:old:0", 10),
            ("loglake:old:0:event_time", 1_000),
            ("loglake:new:0", 500),
            ("loglake:new:0:event_time", 9_000),
        ]);
        assert_eq!(complete_through(&t, 0), Some(9_000));
    }
}
