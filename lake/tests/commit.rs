//! Commits with txn progress against a real (local-directory) Delta table: the zombie-writer
//! protection the ingest workers rely on, through [`AppendTable`] (no file list), and the
//! txn readings of loaded tables the query service and the compactor use.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use loglake_lake::append::AppendTable;
use loglake_lake::commit::{commit_with_progress, txn_version, TxnUpdate};
use loglake_lake::progress::all_txns;
use loglake_lake::write::{write_files, write_partitions, writer_properties, PartitionRows};
use loglake_lake::{Lake, LakeConfig, LakeError};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("x", DataType::Int64, false),
        Field::new("host", DataType::Utf8, false),
    ]))
}

fn batch(xs: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(xs.to_vec())),
            Arc::new(StringArray::from(vec!["h"; xs.len()])),
        ],
    )
    .unwrap()
}

/// A lake in `dir` and its table "t", partitioned by host.
async fn new_table(dir: &std::path::Path) -> (Lake, AppendTable) {
    let lake = Lake::connect(&LakeConfig::local(dir)).await.unwrap();
    let table = lake
        .open_or_create("t", &schema(), &["host"])
        .await
        .unwrap();
    (lake, table)
}

/// The table loaded whole by delta-rs, as the query service and the compactor load it.
async fn loaded(lake: &Lake) -> deltalake::DeltaTable {
    lake.open_table("t").await.unwrap().unwrap()
}

fn txn(expected: Option<i64>, version: i64) -> TxnUpdate {
    TxnUpdate {
        app_id: "loglake:g:0".into(),
        expected,
        version,
    }
}

#[tokio::test]
async fn txn_progress_and_zombie_writers() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, mut a) = new_table(dir.path()).await;
    let mut b = lake.open_append("t").await.unwrap().unwrap();

    let adds = write_files(
        &a,
        vec![batch(&[1, 2])],
        writer_properties(Some(0)),
        1 << 20,
    )
    .await
    .unwrap();
    assert_eq!(adds.len(), 1);
    assert!(
        adds[0]
            .stats
            .as_deref()
            .unwrap_or_default()
            .contains("numRecords"),
        "Add carries statistics"
    );
    commit_with_progress(&mut a, adds, &[txn(None, 1)], Default::default())
        .await
        .unwrap();
    assert_eq!(a.txns().get("loglake:g:0"), Some(&1));
    assert_eq!(
        txn_version(&loaded(&lake).await, "loglake:g:0")
            .await
            .unwrap(),
        Some(1)
    );

    // A writer whose expectation is stale is refused before it commits.
    let err = commit_with_progress(&mut a, vec![], &[txn(None, 5)], Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LakeError::TxnConflict { .. }), "{err}");

    // A zombie: b read the table before a's commit, so it still says "absent". Its commit
    // loses the race for version 1, reads a's commit there, sees a's txn on the same app id
    // and is refused: nothing of it is written.
    let adds = write_files(
        &b,
        vec![batch(&[1, 2])],
        writer_properties(Some(0)),
        1 << 20,
    )
    .await
    .unwrap();
    let err = commit_with_progress(&mut b, adds, &[txn(None, 1)], Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LakeError::TxnConflict { .. }), "{err}");
    assert_eq!(b.version(), 1, "the zombie read the winner");

    // Progress on another partition does not conflict, nor does a's commit that lands after
    // b's (a tries version 2, reads b's there, and commits at 3).
    let other = TxnUpdate {
        app_id: "loglake:g:1".into(),
        expected: None,
        version: 9,
    };
    commit_with_progress(&mut b, vec![], &[other], Default::default())
        .await
        .unwrap();
    let adds = write_files(&a, vec![batch(&[3])], writer_properties(Some(0)), 1 << 20)
        .await
        .unwrap();
    let v = commit_with_progress(&mut a, adds, &[txn(Some(1), 3)], Default::default())
        .await
        .unwrap();
    assert_eq!(v, 3);
    let want: HashMap<String, i64> = [
        ("loglake:g:0".to_string(), 3),
        ("loglake:g:1".to_string(), 9),
    ]
    .into();
    assert_eq!(a.txns(), &want);
    let table = loaded(&lake).await;
    assert_eq!(all_txns(&table).await.unwrap(), want);
    assert_eq!(
        table.get_file_uris().unwrap().count(),
        2,
        "the zombie's file is not part of the table"
    );
    // The commit reads as delta-rs's own appends do.
    let log =
        std::fs::read_to_string(dir.path().join("t/_delta_log/00000000000000000003.json")).unwrap();
    let info: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    let info = &info["commitInfo"];
    assert_eq!(info["operation"], "WRITE");
    assert_eq!(info["readVersion"], 1);
    assert_eq!(info["isBlindAppend"], true);
    assert_eq!(info["operationParameters"]["mode"], "Append");
}

/// Another writer's metadata change (a schema file that adds a column) between a writer's
/// read and its commit is a conflict: the writer drops its batch, and its handle holds the
/// new schema. Two writers adding the same column: one commits it, the other is told.
#[tokio::test]
async fn a_metadata_change_in_between_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, mut a) = new_table(dir.path()).await;
    let mut b = lake.open_append("t").await.unwrap().unwrap();
    let mut c = lake.open_append("t").await.unwrap().unwrap();
    let added = Field::new("level", DataType::Utf8, true);
    assert_eq!(
        b.add_columns(std::slice::from_ref(&added)).await.unwrap(),
        1
    );
    assert_eq!(b.arrow_schema().unwrap().fields().len(), 3);
    // A second worker adding the same column on the old schema loses the race, and its
    // handle then holds the winner's schema (the worker compares again: nothing to add).
    let err = c
        .add_columns(std::slice::from_ref(&added))
        .await
        .unwrap_err();
    assert!(matches!(err, LakeError::Conflict { .. }), "{err}");
    assert_eq!(c.arrow_schema().unwrap().fields().len(), 3);
    assert_eq!(c.version(), 1);
    let adds = write_files(&a, vec![batch(&[1])], writer_properties(None), 1 << 20)
        .await
        .unwrap();
    let err = a
        .commit(adds, &[txn(None, 1)], Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LakeError::Conflict { .. }), "{err}");
    assert_eq!(a.arrow_schema().unwrap().fields().len(), 3, "reloaded");
    let adds = write_files(&a, vec![batch(&[1])], writer_properties(None), 1 << 20)
        .await
        .unwrap();
    a.commit(adds, &[txn(None, 1)], Default::default())
        .await
        .unwrap();
    assert_eq!(a.version(), 2);
}

/// One replay finds every app id's latest version, across a checkpoint and the commits after
/// it, and agrees with delta-rs's one-id lookup and with an append handle's reading.
#[tokio::test]
async fn all_txns_reads_every_app_id_across_a_checkpoint() {
    use loglake_lake::progress::{complete_through, event_time_app_id, offset_app_id};

    let dir = tempfile::tempdir().unwrap();
    let (lake, mut t) = new_table(dir.path()).await;
    assert!(all_txns(&loaded(&lake).await).await.unwrap().is_empty());
    assert!(t.txns().is_empty());

    let mut last: HashMap<String, i64> = Default::default();
    let mut commit = |round: i64| {
        (0..4)
            .filter(|p| (p + round) % 3 != 0) // not every partition in every commit
            .flat_map(|p| {
                [
                    (offset_app_id("g", p as i32), round * 100 + p),
                    (event_time_app_id("g", p as i32), round * 1_000 + p),
                ]
            })
            .map(|(app_id, version)| {
                let expected = last.insert(app_id.clone(), version);
                TxnUpdate {
                    app_id,
                    expected,
                    version,
                }
            })
            .collect::<Vec<_>>()
    };
    for round in 1..=8 {
        let txns = commit(round);
        commit_with_progress(&mut t, Vec::new(), &txns, Default::default())
            .await
            .unwrap();
        if round == 5 {
            deltalake::checkpoints::create_checkpoint(&loaded(&lake).await, None)
                .await
                .unwrap();
        }
    }
    let reopened = loaded(&lake).await;
    let found = all_txns(&reopened).await.unwrap();
    assert_eq!(found, last);
    assert_eq!(t.txns(), &last);
    assert_eq!(lake.open_append("t").await.unwrap().unwrap().txns(), &last);
    for (app_id, version) in &last {
        assert_eq!(
            txn_version(&reopened, app_id).await.unwrap(),
            Some(*version)
        );
    }
    // Partition p's newest event time is round*1000+p for the last round that carried it.
    let slowest = (0..4)
        .map(|p| last[&event_time_app_id("g", p)])
        .min()
        .unwrap();
    assert_eq!(complete_through(&found, 10), Some(slowest - 10));
}

/// A handle whose next commit is gone (the compactor's log cleanup after a checkpoint) loads
/// the table again; a table dropped and created again at the same place is not read as the
/// old one, by an append handle or by `all_txns`.
#[tokio::test]
async fn txns_after_log_cleanup_and_recreation() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, mut t) = new_table(dir.path()).await;
    for v in 1..=3 {
        commit_with_progress(
            &mut t,
            vec![],
            &[txn(Some(v - 1).filter(|&e| e > 0), v)],
            Default::default(),
        )
        .await
        .unwrap();
    }
    assert_eq!(t.txns()["loglake:g:0"], 3);
    assert_eq!(
        all_txns(&loaded(&lake).await).await.unwrap()["loglake:g:0"],
        3
    );
    // Versions 4 (this partition) and 5 (another) by another process; then a checkpoint at
    // 5, and the commits before it cleaned up, 3 and 4 included.
    let mut other = loaded(&lake).await;
    foreign_commit(&mut other, &[txn(Some(3), 4)]).await;
    let other_partition = TxnUpdate {
        app_id: "loglake:g:1".into(),
        expected: None,
        version: 1,
    };
    foreign_commit(&mut other, &[other_partition]).await;
    deltalake::checkpoints::create_checkpoint(&other, None)
        .await
        .unwrap();
    let log = dir.path().join("t/_delta_log");
    for v in 0..5 {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).unwrap();
    }
    t.refresh().await.unwrap();
    assert_eq!(t.version(), 5);
    assert_eq!((t.txns()["loglake:g:0"], t.txns()["loglake:g:1"]), (4, 1));
    let found = all_txns(&loaded(&lake).await).await.unwrap();
    assert_eq!((found["loglake:g:0"], found["loglake:g:1"]), (4, 1));
    // A stale expectation is still refused, and the right one accepted.
    let err = commit_with_progress(&mut t, vec![], &[txn(Some(3), 6)], Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LakeError::TxnConflict { .. }), "{err}");
    commit_with_progress(&mut t, vec![], &[txn(Some(4), 6)], Default::default())
        .await
        .unwrap();

    // The same place, a new table: its first commits are at lower versions with no txn.
    let old_id = t.id().to_string();
    std::fs::remove_dir_all(dir.path().join("t")).unwrap();
    let mut again = lake
        .open_or_create("t", &schema(), &["host"])
        .await
        .unwrap();
    assert!(again.txns().is_empty());
    for _ in 0..3 {
        commit_with_progress(&mut again, vec![], &[], Default::default())
            .await
            .unwrap();
    }
    // The old handle (at version 6) finds its version gone and reads the new table afresh.
    t.refresh().await.unwrap();
    assert_ne!(t.id(), old_id);
    assert!(t.txns().is_empty());
    assert_eq!(t.version(), 3);
    for _ in 0..5 {
        commit_with_progress(&mut again, vec![], &[], Default::default())
            .await
            .unwrap();
    }
    assert!(
        all_txns(&loaded(&lake).await).await.unwrap().is_empty(),
        "the old table's txns must not leak into the new one"
    );
}

/// A commit with txn actions as another process writes it: straight through delta-rs.
async fn foreign_commit(table: &mut deltalake::DeltaTable, txns: &[TxnUpdate]) {
    use deltalake::kernel::transaction::CommitBuilder;
    use deltalake::protocol::{DeltaOperation, SaveMode};
    let snapshot = table.snapshot().unwrap();
    CommitBuilder::from(loglake_lake::commit::commit_properties(
        txns,
        Default::default(),
    ))
    .build(
        Some(snapshot),
        table.log_store(),
        DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        },
    )
    .await
    .unwrap();
    table.update_incremental(None).await.unwrap();
}

/// A writer's own commit, landed after another writer's, is in its reading of the txns right
/// away, and in a fresh handle's.
#[tokio::test]
async fn txns_see_a_commit_that_landed_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, mut a) = new_table(dir.path()).await;
    let mut b = lake.open_append("t").await.unwrap().unwrap();
    let adds = write_files(&a, vec![batch(&[1])], writer_properties(None), 1 << 20)
        .await
        .unwrap();
    let other = TxnUpdate {
        app_id: "loglake:g:1".into(),
        expected: None,
        version: 7,
    };
    commit_with_progress(&mut b, adds, &[other], Default::default())
        .await
        .unwrap();
    let adds = write_files(&a, vec![batch(&[2])], writer_properties(None), 1 << 20)
        .await
        .unwrap();
    let v = commit_with_progress(&mut a, adds, &[txn(None, 5)], Default::default())
        .await
        .unwrap();
    assert_eq!(v, 2);
    let want: HashMap<String, i64> = [
        ("loglake:g:0".to_string(), 5),
        ("loglake:g:1".to_string(), 7),
    ]
    .into();
    assert_eq!(a.txns(), &want);
    assert_eq!(all_txns(&loaded(&lake).await).await.unwrap(), want);
    assert_eq!(lake.open_append("t").await.unwrap().unwrap().txns(), &want);
}

/// A reading far behind the table (more commits since than it reads one by one) is as right as
/// a near one, for a loaded table and for an append handle.
#[tokio::test]
async fn txns_far_behind_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, mut a) = new_table(dir.path()).await;
    let mut t = loaded(&lake).await;
    assert!(all_txns(&t).await.unwrap().is_empty());
    for v in 1..=70 {
        foreign_commit(&mut t, &[txn(Some(v - 1).filter(|&e| e > 0), v)]).await;
    }
    assert_eq!(all_txns(&t).await.unwrap()["loglake:g:0"], 70);
    // A commit from 70 versions behind (more than the races it may lose) reads them all and
    // lands: a slow writer on a busy table is not turned away.
    let other = TxnUpdate {
        app_id: "loglake:g:9".into(),
        expected: None,
        version: 1,
    };
    let v = commit_with_progress(&mut a, vec![], &[other], Default::default())
        .await
        .unwrap();
    assert_eq!((v, a.txns()["loglake:g:0"]), (71, 70));
    foreign_commit(&mut t, &[txn(Some(70), 71)]).await;
    assert_eq!(all_txns(&t).await.unwrap()["loglake:g:0"], 71);
    a.refresh().await.unwrap();
    assert_eq!((a.version(), a.txns()["loglake:g:0"]), (72, 71));
    // Far behind again: the refresh loads the table afresh.
    for v in 72..=140 {
        foreign_commit(&mut t, &[txn(Some(v - 1), v)]).await;
    }
    a.refresh().await.unwrap();
    assert_eq!((a.version(), a.txns()["loglake:g:0"]), (141, 140));
}

/// Rows of one host as the ingest worker hands them over: the file's columns only.
fn file_batch(xs: impl IntoIterator<Item = i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(xs))]).unwrap()
}

fn host(value: &str) -> Vec<(String, String)> {
    vec![("host".into(), value.into())]
}

#[tokio::test]
async fn partitions_are_written_from_their_values_in_bounded_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let (_lake, mut table) = new_table(dir.path()).await;
    // Two partitions of over 32 MiB of rows each (the files are closed between them), and
    // a small one in three chunks: one file each, every row in the partition it was given.
    let big = 5_000_000;
    let parts = vec![
        PartitionRows {
            values: host("a"),
            batches: vec![file_batch(0..big)],
            order: None,
        },
        PartitionRows {
            values: host("b"),
            batches: vec![file_batch(big..2 * big)],
            order: None,
        },
        PartitionRows {
            values: host("c"),
            batches: vec![file_batch(0..3), file_batch(3..5), file_batch(5..9)],
            order: None,
        },
    ];
    let adds = write_partitions(&table, parts, writer_properties(None), 1 << 30)
        .await
        .unwrap();
    let mut files: Vec<(String, i64)> = adds
        .iter()
        .map(|a| {
            let host = a.partition_values["host"].clone().unwrap();
            let stats: serde_json::Value =
                serde_json::from_str(a.stats.as_deref().unwrap()).unwrap();
            (host, stats["numRecords"].as_i64().unwrap())
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        [("a".into(), big), ("b".into(), big), ("c".into(), 9)]
    );
    // The 9-row partition is too small for zstd to pay for its contexts: Snappy.
    for add in &adds {
        let file = std::fs::File::open(dir.path().join("t").join(&add.path)).unwrap();
        let meta = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        let codec = parquet::file::reader::FileReader::metadata(&meta)
            .row_group(0)
            .column(0)
            .compression();
        let small = add.partition_values["host"].as_deref() == Some("c");
        let expected = if small {
            parquet::basic::Compression::SNAPPY
        } else {
            parquet::basic::Compression::ZSTD(parquet::basic::ZstdLevel::try_new(1).unwrap())
        };
        assert_eq!(codec, expected, "{}: {codec:?}", add.path);
    }
    assert!(adds.iter().all(|a| a.path.starts_with(&format!(
        "host={}/",
        a.partition_values["host"].as_deref().unwrap()
    ))));
    commit_with_progress(&mut table, adds, &[], Default::default())
        .await
        .unwrap();

    // Many small partitions (a topic keyed by request ids): written in rounds of open
    // files, one file each, nothing lost.
    let hosts: Vec<String> = (0..150).map(|i| format!("req-{i:03}")).collect();
    let parts = hosts
        .iter()
        .map(|h| PartitionRows {
            values: host(h),
            batches: vec![file_batch(0..2)],
            order: None,
        })
        .collect();
    let adds = write_partitions(&table, parts, writer_properties(None), 1 << 20)
        .await
        .unwrap();
    let mut written: Vec<String> = adds
        .iter()
        .map(|a| a.partition_values["host"].clone().unwrap())
        .collect();
    written.sort();
    assert_eq!(written, hosts);

    // Rows in an order of their own (two interleaved runs, over several gathered slices):
    // the file holds every row once, in that order.
    let (odd, even): (Vec<i64>, Vec<i64>) = (0..30_000).partition(|x| x % 2 == 1);
    let runs = vec![file_batch(even), file_batch(odd)];
    let order = (0..30_000usize).map(|x| (x % 2, x / 2)).collect();
    let adds = write_partitions(
        &table,
        vec![PartitionRows {
            values: host("sorted"),
            batches: runs,
            order: Some(order),
        }],
        writer_properties(None),
        1 << 30,
    )
    .await
    .unwrap();
    assert_eq!(adds.len(), 1);
    let file = std::fs::File::open(dir.path().join("t").join(&adds[0].path)).unwrap();
    let rows: Vec<i64> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .flat_map(|b| {
                let b = b.unwrap();
                let x = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                x.values().to_vec()
            })
            .collect();
    assert_eq!(rows, (0..30_000).collect::<Vec<i64>>());

    // A partition value per partition column, or a clear error.
    let wrong = vec![PartitionRows {
        values: vec![("host".into(), "a".into()), ("day".into(), "extra".into())],
        batches: vec![file_batch(0..1)],
        order: None,
    }];
    let err = write_partitions(&table, wrong, writer_properties(None), 1 << 20)
        .await
        .unwrap_err();
    let reason = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        reason.as_deref().is_some_and(|r| r.contains(
            r#"partition values for ["host", "day"], but the table is partitioned by ["host"]"#
        )),
        "{err}: {reason:?}"
    );
}
