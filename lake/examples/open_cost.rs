//! What a table's live files cost the handles that open it. Not a test: prints numbers.
//!
//! Ages table `TABLE` (default `aged`) of the local lake at `LAKE_DIR` (default: a temporary
//! directory) by `FILES` Add actions (default 200,000; commits of 10,000, statistics like
//! ingest's, files that do not exist: nothing here reads them), checkpoints it as the
//! compactor would, then opens it both ways and prints time and resident memory of each:
//! `open_append` (what an ingest worker holds: protocol, metadata, txns) and `open_table`
//! (delta-rs's `DeltaTable`, with the live file list: what the query service and the
//! compactor hold), and the time of one append commit through the append handle.
//! A new table gets the columns ingest gives a topic without a schema file, so a worker can
//! then be started on it: `LAKE_DIR=/tmp/aged TABLE=t FILES=200000 cargo run --release
//! --example open_cost`, then `RSS_LAKE=/tmp/aged RSS_TOPIC=t scripts/rss_trace.sh`.

use std::time::Instant;

use deltalake::kernel::Add;
use loglake_lake::commit::TxnUpdate;
use loglake_lake::{Lake, LakeConfig};
use loglake_schemas::{TopicSchema, PARTITION_COLUMNS};

/// A memory figure of this process from `/proc/self/status` (`VmRSS`, `VmHWM`), MiB.
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An Add as ingest writes it: one host-hour file, with statistics of its columns.
fn add(i: usize, partition_columns: &[String]) -> Add {
    let (host, day, hour) = (
        format!("host-{:04}", i % 1000),
        format!(
            "2026-{:02}-{:02}",
            1 + (i / 24_000) % 12,
            1 + (i / 1000) % 28
        ),
        format!("{:02}", (i / 1000) % 24),
    );
    let stats = format!(
        r#"{{"numRecords":{n},"minValues":{{"timestamp":"{day}T{hour}:00:00.000000Z","level":"DEBUG","service":"api","_kafka_partition":3,"_kafka_offset":{o},"_kafka_timestamp":"{day}T{hour}:00:00.010000Z"}},"maxValues":{{"timestamp":"{day}T{hour}:59:59.999000Z","level":"WARN","service":"worker","_kafka_partition":3,"_kafka_offset":{o2},"_kafka_timestamp":"{day}T{hour}:59:59.999000Z"}},"nullCount":{{"timestamp":0,"level":0,"service":0,"message":0,"attributes":0,"_kafka_partition":0,"_kafka_offset":0,"_kafka_timestamp":0}}}}"#,
        n = 1000 + i % 500,
        o = i * 1500,
        o2 = i * 1500 + 1499
    );
    let values = [("host", host), ("date", day), ("hour", hour)];
    Add {
        path: format!(
            "{}part-{i:08}-00000000-0000-0000-0000-000000000000-c000.zstd.parquet",
            values
                .iter()
                .filter(|(k, _)| partition_columns.iter().any(|c| c == k))
                .map(|(k, v)| format!("{k}={v}/"))
                .collect::<String>()
        ),
        partition_values: partition_columns
            .iter()
            .map(|c| {
                let v = values.iter().find(|(k, _)| k == c).map(|(_, v)| v.clone());
                (c.clone(), Some(v.unwrap_or_else(|| "x".into())))
            })
            .collect(),
        size: 180_000 + (i % 1000) as i64,
        modification_time: 1_780_000_000_000 + i as i64,
        data_change: true,
        stats: Some(stats),
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: usize = env("FILES", 200_000);
    let name: String = env("TABLE", "aged".to_string());
    let temp = tempfile::tempdir()?;
    let dir = std::env::var("LAKE_DIR").map_or_else(|_| temp.path().to_path_buf(), Into::into);
    let lake = Lake::connect(&LakeConfig::local(&dir)).await?;
    let schema = loglake_schemas::table_arrow_schema(&TopicSchema::default());
    let mut table = lake
        .open_or_create(&name, &schema, &PARTITION_COLUMNS)
        .await?;
    let partition_columns = table.partition_columns().to_vec();
    let open: String = env("OPEN", "both".to_string());
    let aged = Instant::now();
    for start in (0..files).step_by(10_000) {
        let adds = (start..files.min(start + 10_000))
            .map(|i| add(i, &partition_columns))
            .collect();
        table.refresh().await?;
        table.commit(adds, &[], Default::default()).await?;
    }
    if files > 0 {
        let loaded = lake.open_table(&name).await?.expect("created above");
        deltalake::checkpoints::create_checkpoint(&loaded, None).await?;
    }
    let aged = aged.elapsed();
    let (mut open_append, mut commit_append, mut open_loaded, mut live) = Default::default();

    if open != "table" {
        let base = status_mib("VmRSS");
        let started = Instant::now();
        let mut append = lake.open_append(&name).await?.expect("created above");
        open_append = (started.elapsed(), status_mib("VmRSS") - base);
        let started = Instant::now();
        let last = append.txns().get("loglake:open_cost:0").copied();
        let txn = TxnUpdate {
            app_id: "loglake:open_cost:0".into(),
            expected: last,
            version: last.unwrap_or(0) + 1,
        };
        append.refresh().await?;
        append
            .commit(
                vec![add(files, &partition_columns)],
                &[txn],
                Default::default(),
            )
            .await?;
        commit_append = started.elapsed();
        drop(append);
    }
    if open != "append" {
        let base = status_mib("VmRSS");
        let started = Instant::now();
        let loaded = lake.open_table(&name).await?.expect("created above");
        open_loaded = (started.elapsed(), status_mib("VmRSS") - base);
        live = loaded.snapshot()?.log_data().num_files();
    }

    use std::io::Write as _;
    writeln!(
        std::io::stdout(),
        "{{\"live_files\": {live}, \"aged_s\": {:.1}, \"open_append_ms\": {:.1}, \"open_append_rss_mib\": {:.1}, \
         \"append_refresh_and_commit_ms\": {:.1}, \"open_table_ms\": {:.1}, \"open_table_rss_mib\": {:.1}, \"peak_rss_mib\": {:.1}}}",
        aged.as_secs_f64(),
        open_append.0.as_secs_f64() * 1e3,
        open_append.1,
        commit_append.as_secs_f64() * 1e3,
        open_loaded.0.as_secs_f64() * 1e3,
        open_loaded.1,
        status_mib("VmHWM"),
    )?;
    Ok(())
}
