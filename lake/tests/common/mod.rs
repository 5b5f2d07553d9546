//! Shared by the memory tests: a topic with typed columns, and a partition's rows as the
//! ingest buffer hands them to the writer.

use loglake_lake::write::{sorted_order, PartitionRows};
use loglake_schemas::{
    file_arrow_schema, Mapper, RawRecord, RowBuilder, TopicSchema, PARTITION_COLUMNS,
};

/// A topic schema with `typed` columns `c0`, `c1`, ... of type `column_type` (`int64`,
/// `string`, ...).
pub fn typed_schema(typed: usize, column_type: &str) -> TopicSchema {
    let toml: String = (0..typed)
        .map(|c| format!("[[columns]]\nname = \"c{c}\"\ntype = \"{column_type}\"\n"))
        .collect();
    TopicSchema::from_toml("t", &toml).unwrap()
}

/// The rows that `records` (JSON of one host and hour) become, as one partition.
pub fn partition_rows(mapper: &Mapper, records: impl IntoIterator<Item = String>) -> PartitionRows {
    let schema = mapper.schema();
    let mut builder: Option<RowBuilder> = None;
    for (i, text) in records.into_iter().enumerate() {
        let raw = RawRecord::keyless(text.as_bytes(), i as i64, 1_767_323_045_000_000);
        let row = mapper.map(&raw).unwrap();
        builder
            .get_or_insert_with(|| {
                RowBuilder::new(file_arrow_schema(schema), schema, row.partition_values())
            })
            .append(&row);
    }
    let mut builder = builder.expect("a partition has rows");
    let batches = builder.finish().unwrap();
    let (host, date, hour) = builder.partition().clone();
    PartitionRows {
        values: PARTITION_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .zip([host, date, hour])
            .collect(),
        order: sorted_order(&batches, "timestamp").unwrap(),
        batches,
    }
}
