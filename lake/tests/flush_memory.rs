//! What a flush of many small files holds beyond its rows, measured by a counting allocator:
//! each file's Add action and its share of the commit's working set stay within
//! `flush_bytes_per_file`, which the ingest buffer counts against `memory_budget` for every
//! partition it opens (a topic keyed by request ids flushes ten thousand one-row files).

mod common;

use cap::Cap;
use common::{partition_rows, typed_schema};
use loglake_lake::commit::{commit_with_progress, TxnUpdate};
use loglake_lake::write::{flush_bytes_per_file, write_partitions, writer_properties};
use loglake_lake::{Lake, LakeConfig};
use loglake_schemas::{file_arrow_schema, table_arrow_schema, Mapper, PARTITION_COLUMNS};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Typed columns of a test topic: how many, and their type.
#[derive(Clone, Copy)]
struct Typed(usize, &'static str);

/// A shape measured: the typed columns, how many files, and the table's properties.
type Shape = (Typed, usize, &'static [(&'static str, &'static str)]);

/// One record of host `host` with the `typed` columns `c0`, `c1`, ... (text values longer
/// than the 32-character prefix statistics keep, numbers otherwise).
fn payload(host: &str, i: usize, typed: Typed) -> String {
    let columns: String = (0..typed.0)
        .map(|c| match typed.1 {
            "string" => format!(r#","c{c}":"{host}/{c}/{i}/{}""#, "x".repeat(40)),
            _ => format!(r#","c{c}":{}"#, i * 31 + c),
        })
        .collect();
    format!(
        r#"{{"ts":1767323045,"host":"{host}","level":"INFO","msg":"{i} dfs.DataNode$PacketResponder: Received block blk_{} of size 67108864 from /10.250.{}.{}","pid":{}{columns}}}"#,
        i * 7919,
        i % 256,
        i % 200,
        1000 + i % 50,
    )
}

/// Writes and commits `files` one-row files of a topic with `typed` columns to a table with
/// the `properties` given; returns what a buffer counts for each and the most bytes a file
/// held beyond its rows: its Add action once written, plus its share of the commit's peak
/// over the commit's start.
async fn bytes_per_file(typed: Typed, files: usize, properties: &[(&str, &str)]) -> (usize, usize) {
    let schema = typed_schema(typed.0, typed.1);
    let mapper = Mapper::new(&schema).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::connect(&LakeConfig::local(dir.path())).await.unwrap();
    let mut table = lake
        .open_or_create("t", &table_arrow_schema(&schema), &PARTITION_COLUMNS)
        .await
        .unwrap();
    if !properties.is_empty() {
        // As a user sets them (Spark's ALTER TABLE ... SET TBLPROPERTIES, say).
        let properties = properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let delta = lake.open_table("t").await.unwrap().unwrap();
        delta
            .set_tbl_properties()
            .with_properties(properties)
            .await
            .unwrap();
        table.refresh().await.unwrap();
    }
    let start = ALLOCATOR.allocated();
    // Written 500 partitions at a time, so that the writes' peak stays below the commit's.
    let mut adds = Vec::new();
    for first in (0..files).step_by(500) {
        let parts: Vec<_> = (first..first + 500)
            .map(|h| {
                let host = format!("{:032x}", h * 2_654_435_761);
                partition_rows(&mapper, [payload(&host, 0, typed)])
            })
            .collect();
        let written = write_partitions(&table, parts, writer_properties(Some(0)), 128 << 20);
        adds.extend(written.await.unwrap());
    }
    assert_eq!(adds.len(), files);
    let before_commit = ALLOCATOR.allocated();
    let txns = [TxnUpdate {
        app_id: "loglake:g:0".into(),
        expected: None,
        version: files as i64 - 1,
    }];
    commit_with_progress(&mut table, adds, &txns, serde_json::Map::new())
        .await
        .unwrap();
    // The peak since the process started: when the commit did not raise it, this is more
    // than the commit took, never less.
    let commit_peak = ALLOCATOR.max_allocated() - before_commit;
    let held = (before_commit - start + commit_peak) / files;
    eprintln!(
        "{} typed {} columns: adds {} B a file, commit peak {} B a file over its start",
        typed.0,
        typed.1,
        (before_commit - start) / files,
        commit_peak / files,
    );
    let counted = flush_bytes_per_file(&file_arrow_schema(&schema), table.configuration());
    (counted, held)
}

#[tokio::test(flavor = "current_thread")]
async fn a_flush_of_many_small_files_holds_what_the_buffer_counted_for_them() {
    // The narrow schemas first: their peaks are below the wide ones', which are then
    // measured with the process's peak raised by their own commit, not by an earlier one.
    // Ten thousand files, as a flush of a topic keyed by request ids; fewer of the widest.
    // Last, a wider one with statistics for every column, past delta-rs's default of 32, as
    // a user asks for them: 28 more text columns than the default covers.
    let shapes: [Shape; 4] = [
        (Typed(0, "int64"), 10_000, &[]),
        (Typed(10, "int64"), 10_000, &[]),
        (Typed(30, "string"), 3_000, &[]),
        (
            Typed(60, "string"),
            3_000,
            &[("delta.dataSkippingNumIndexedCols", "100")],
        ),
    ];
    for (typed, files, properties) in shapes {
        let (counted, held) = bytes_per_file(typed, files, properties).await;
        let columns = format!("7 + {} {} columns, {properties:?}", typed.0, typed.1);
        eprintln!("{columns}: {held} B a file held, {counted} counted");
        assert!(
            held <= counted,
            "a file of {columns} held {held} B until its commit was done; the buffer \
             counts {counted}"
        );
    }
}
