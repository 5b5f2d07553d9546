//! Ingest commit latency as a table ages. Not a test: prints numbers.
//!
//! Makes `COMMITS` commits (one small file each, with txn progress, as an ingest flush does)
//! to a fresh local table and prints the median commit time of the first and the last 100,
//! and the time to open the table at the end. Ingest commits run no post-commit hooks, so the
//! last 100 should cost what the first 100 did; the compactor's checkpoint then makes opening
//! the table cheap again. `COMMITS=3000 cargo run --example commit_latency -p loglake-lake`.
//! The table is written through an `AppendTable`, as ingest writes it (no file list); the
//! "refresh" figures time the refresh each flush makes before it writes. Opening is timed for
//! both kinds of handle: loaded whole (the query service, the compactor) and to append.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use loglake_lake::commit::{commit_with_progress, TxnUpdate};
use loglake_lake::write::{write_files, writer_properties};
use loglake_lake::{Lake, LakeConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let commits: usize = std::env::var("COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    // As `loglake compact` does on its schedule; 0 = never.
    let checkpoint_every: i64 = std::env::var("CHECKPOINT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let dir = tempfile::tempdir()?;
    let lake = Lake::connect(&LakeConfig::local(dir.path())).await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Int64, false),
        Field::new("host", DataType::Utf8, false),
    ]));
    let mut table = lake.open_or_create("t", &schema, &["host"]).await?;
    let mut times = Vec::with_capacity(commits);
    let mut lookups = Vec::with_capacity(commits);
    let mut last = None;
    for i in 0..commits as i64 {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![i])),
                Arc::new(StringArray::from(vec!["h"])),
            ],
        )?;
        let adds = write_files(&table, vec![batch], writer_properties(None), 1 << 20).await?;
        let txn = TxnUpdate {
            app_id: "loglake:bench:0".into(),
            expected: last,
            version: i,
        };
        // The refresh every ingest flush makes before it writes, timed on its own.
        let looked = Instant::now();
        table.refresh().await?;
        lookups.push(looked.elapsed());
        let started = Instant::now();
        commit_with_progress(&mut table, adds, &[txn], serde_json::Map::new()).await?;
        times.push(started.elapsed());
        last = Some(i);
        if checkpoint_every > 0 && (i + 1) % checkpoint_every == 0 {
            let loaded = lake.open_table("t").await?.expect("created above");
            deltalake::checkpoints::create_checkpoint(&loaded, None).await?;
        }
    }
    let first = median(times[..100.min(commits)].to_vec());
    let tail = median(times[commits.saturating_sub(100)..].to_vec());
    let lookup_first = median(lookups[..100.min(commits)].to_vec());
    let lookup_tail = median(lookups[commits.saturating_sub(100)..].to_vec());
    let opened = Instant::now();
    let loaded = lake.open_table("t").await?.expect("created above");
    let open = opened.elapsed();
    let opened = Instant::now();
    lake.open_append("t").await?;
    let open_append = opened.elapsed();
    deltalake::checkpoints::create_checkpoint(&loaded, None).await?;
    let opened = Instant::now();
    lake.open_table("t").await?;
    let open_after = opened.elapsed();
    let opened = Instant::now();
    lake.open_append("t").await?;
    let open_append_after = opened.elapsed();
    let log_entries = std::fs::read_dir(dir.path().join("t/_delta_log"))?.count();
    use std::io::Write as _;
    writeln!(
        std::io::stdout(),
        "{{\"commits\": {commits}, \"checkpoint_every\": {checkpoint_every}, \"median_commit_ms_first_100\": {:.2}, \"median_commit_ms_last_100\": {:.2}, \
         \"median_refresh_ms_first_100\": {:.2}, \"median_refresh_ms_last_100\": {:.2}, \"open_ms_no_checkpoint\": {:.1}, \"open_append_ms_no_checkpoint\": {:.1}, \
         \"open_ms_after_checkpoint\": {:.1}, \"open_append_ms_after_checkpoint\": {:.1}, \"log_entries\": {log_entries}}}",
        first.as_secs_f64() * 1e3,
        tail.as_secs_f64() * 1e3,
        lookup_first.as_secs_f64() * 1e3,
        lookup_tail.as_secs_f64() * 1e3,
        open.as_secs_f64() * 1e3,
        open_append.as_secs_f64() * 1e3,
        open_after.as_secs_f64() * 1e3,
        open_append_after.as_secs_f64() * 1e3
    )?;
    Ok(())
}
