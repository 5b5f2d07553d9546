//! Maps every line of an NDJSON file with the default schema into Arrow record batches (one
//! builder per host, as the ingest worker buffers a host's hour) and prints the rate: a
//! micro-benchmark of mapping and buffering alone (`scripts/bench.sh` measures the whole
//! worker, Kafka and Parquet included).
//!
//! `cargo run --example map_records -p loglake-schemas -- FILE`

use std::collections::HashMap;
use std::time::Instant;

use loglake_schemas::{file_arrow_schema, Mapper, RawRecord, RowBuilder, TopicSchema};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: map_records FILE.ndjson")?;
    let text = std::fs::read(&path)?;
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let topic_schema = TopicSchema::default();
    let mapper = Mapper::new(&topic_schema)?;
    let schema = file_arrow_schema(&topic_schema);
    let mut builders: HashMap<String, RowBuilder> = HashMap::new();
    let started = Instant::now();
    let (mut rows, mut bytes, mut batches) = (0usize, 0usize, 0usize);
    for (offset, line) in lines.iter().enumerate() {
        let raw = RawRecord {
            payload: Some(line),
            key: None,
            partition: 0,
            offset: offset as i64,
            kafka_timestamp_ms: Some(1_767_323_045_000),
            received_at_us: 1_767_323_045_000_000,
        };
        if let Ok(row) = mapper.map(&raw) {
            rows += 1;
            bytes += row.estimated_bytes();
            let builder = match builders.get_mut(&*row.host) {
                Some(builder) => builder,
                None => builders.entry(row.host.to_string()).or_insert_with(|| {
                    RowBuilder::new(schema.clone(), &topic_schema, row.partition_values())
                }),
            };
            builder.append(&row);
            if builder.len() == 100_000 {
                batches += builder.finish()?.len();
            }
        }
    }
    for builder in builders.values_mut() {
        batches += builder.finish()?.len();
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} records, {rows} rows in {batches} batches, {:.1} MB in {secs:.3} s: {:.2} us/record, {:.1} MB/s ({bytes} row bytes)",
        lines.len(),
        text.len() as f64 / 1e6,
        secs * 1e6 / lines.len() as f64,
        text.len() as f64 / 1e6 / secs
    );
    Ok(())
}
