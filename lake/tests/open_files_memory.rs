//! What writing many files of a wide schema holds beyond their rows, measured by a counting
//! allocator: the open files' column writers, which `write_partitions` bounds in number (and
//! builds without dictionaries for small files), so a flush's working set does not grow with
//! the typed columns of a topic's schema file.

mod common;

use cap::Cap;
use common::{partition_rows, typed_schema};
use loglake_lake::write::{write_partitions, writer_properties, PartitionRows};
use loglake_lake::{Lake, LakeConfig};
use loglake_schemas::{table_arrow_schema, Mapper, PARTITION_COLUMNS};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Typed columns beside the 7 every table has.
const TYPED: usize = 30;

/// `hosts` partitions of `rows` rows each.
fn partitions(mapper: &Mapper, hosts: usize, rows: usize) -> Vec<PartitionRows> {
    (0..hosts)
        .map(|h| {
            partition_rows(
                mapper,
                (0..rows).map(|i| {
                    let typed: String = (0..TYPED)
                        .map(|c| format!(r#","c{c}":{}"#, (i * 31 + c) % 100))
                        .collect();
                    format!(
                        r#"{{"ts":{},"host":"h{h}","level":"INFO","msg":"request {i} served"{typed}}}"#,
                        1_767_323_045 + i
                    )
                }),
            )
        })
        .collect()
}

/// Writes `hosts` partitions of `rows` rows; returns the most bytes the write held beyond
/// its input (an upper bound when an earlier peak of the process was higher).
async fn write_peak(hosts: usize, rows: usize) -> usize {
    let schema = typed_schema(TYPED, "int64");
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::connect(&LakeConfig::local(dir.path())).await.unwrap();
    let table = lake
        .open_or_create("t", &table_arrow_schema(&schema), &PARTITION_COLUMNS)
        .await
        .unwrap();
    let parts = partitions(&Mapper::new(&schema).unwrap(), hosts, rows);
    // The ingest buffer keeps its chunks until the commit (for a retry): so does this, or
    // rows freed as they are written would hide what the writers hold.
    let kept: Vec<_> = parts.iter().map(|p| p.batches.clone()).collect();
    let start = ALLOCATOR.allocated();
    let adds = write_partitions(&table, parts, writer_properties(Some(0)), 128 << 20)
        .await
        .unwrap();
    assert_eq!(adds.len(), hosts);
    drop(kept);
    let peak = ALLOCATOR.max_allocated() - start;
    eprintln!(
        "{hosts} files of {rows} rows, {} columns: {:.1} MB over the input at the peak",
        TYPED + 7,
        peak as f64 / 1e6
    );
    peak
}

#[tokio::test(flavor = "current_thread")]
async fn writing_files_of_a_wide_schema_holds_a_bounded_working_set() {
    // Files of a few rows (a topic of many hosts): written without dictionaries, whose
    // writers held 39 MB for 16 open files of these columns (7.6 MB for 3).
    let small = write_peak(200, 1).await;
    assert!(small < 2_000_000, "{small} bytes to write one-row files");
    // Files of thousands of rows: dictionaries kept, fewer files open at once.
    let large = write_peak(24, 2_000).await;
    assert!(large < 16_000_000, "{large} bytes to write 2,000-row files");
}
