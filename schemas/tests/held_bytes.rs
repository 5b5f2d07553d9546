//! What the memory budget counts of a partition's rows ([`RowBuilder::held_bytes`] while
//! they are buffered, [`held_by_batch`] once handed over as batches) against what the
//! allocator really gave out for them, measured by a counting allocator: a topic of many
//! hosts holds thousands of small partitions, and whatever each costs beyond its buffers
//! is memory outside `ingest.memory_budget`.

use cap::Cap;
use loglake_schemas::{
    file_arrow_schema, held_by_batch, Mapper, RawRecord, RowBuilder, TopicSchema,
};

/// Counts the bytes allocated and not yet freed, by every thread.
#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

fn live() -> usize {
    ALLOCATOR.allocated()
}

/// A log line of the size and shape of the loghub samples' (~300 bytes as JSON).
fn payload(host: usize, i: usize) -> String {
    format!(
        r#"{{"ts":{},"host":"host-{host:04}","level":"INFO","msg":"{i} dfs.DataNode$PacketResponder: Received block blk_{} of size 67108864 from /10.250.{}.{}","pid":{},"component":"dfs.DataNode"}}"#,
        1_767_323_045 + i,
        i * 7919,
        i % 256,
        host % 256,
        1000 + i % 50,
    )
}

/// Buffers `rows` rows in each of `hosts` partitions, as a flush of a topic of many hosts
/// holds them, and returns what the budget counts and what the allocator holds for them,
/// before and after the rows are handed over as batches.
fn measure(schema: &TopicSchema, hosts: usize, rows: usize) -> [(usize, usize); 2] {
    let mapper = Mapper::new(schema).unwrap();
    let file_schema = file_arrow_schema(schema);
    let before = live();
    let mut builders: Vec<RowBuilder> = Vec::with_capacity(hosts);
    for h in 0..hosts {
        let text = payload(h, 0);
        let row = mapper.map(&raw(text.as_bytes(), 0)).unwrap();
        builders.push(RowBuilder::new(
            file_schema.clone(),
            schema,
            row.partition_values(),
        ));
    }
    // Rows arrive interleaved across hosts, as they do from Kafka.
    for i in 0..rows {
        for (h, b) in builders.iter_mut().enumerate() {
            let text = payload(h, i);
            b.append(&mapper.map(&raw(text.as_bytes(), i as i64)).unwrap());
        }
    }
    let builders_vec = builders.capacity() * std::mem::size_of::<RowBuilder>();
    let buffered = (
        builders.iter().map(RowBuilder::held_bytes).sum::<usize>(),
        live() - before - builders_vec,
    );
    let batches: Vec<_> = builders.iter_mut().map(|b| b.finish().unwrap()).collect();
    drop(builders);
    let handed_over = (
        batches.iter().flatten().map(held_by_batch).sum::<usize>(),
        live() - before,
    );
    drop(batches);
    [buffered, handed_over]
}

fn raw(payload: &[u8], offset: i64) -> RawRecord<'_> {
    RawRecord::keyless(payload, offset, 1_800_000_000_000_000)
}

/// The counted bytes must cover what the allocator holds, within 3 %.
fn assert_counted(what: &str, (counted, live): (usize, usize)) {
    eprintln!("{what}: counted {counted} bytes, allocated {live}");
    assert!(
        counted as f64 >= live as f64 * 0.97,
        "{what}: the budget counts {counted} bytes of {live} allocated"
    );
}

#[test]
fn many_small_partitions_are_counted_as_the_allocator_holds_them() {
    let schema = TopicSchema::default();
    // Hundreds of rows in each of 1,000 hosts: the bench's 1,000-host shape.
    let [buffered, handed_over] = measure(&schema, 1_000, 300);
    assert_counted("1,000 partitions of 300 rows, buffered", buffered);
    assert_counted("1,000 partitions of 300 rows, as batches", handed_over);
    // One row in each of 10,000: a topic keyed by request ids.
    let [buffered, handed_over] = measure(&schema, 10_000, 1);
    assert_counted("10,000 partitions of 1 row, buffered", buffered);
    assert_counted("10,000 partitions of 1 row, as batches", handed_over);

    // A schema file's typed columns (a string and an integer) have builders of their own.
    let typed = TopicSchema::from_toml(
        "hdfs",
        "[[columns]]\nname = \"component\"\ntype = \"string\"\n\
         [[columns]]\nname = \"pid\"\ntype = \"int64\"\n",
    )
    .unwrap();
    let [buffered, handed_over] = measure(&typed, 1_000, 300);
    assert_counted(
        "typed columns, 1,000 partitions of 300 rows, buffered",
        buffered,
    );
    assert_counted(
        "typed columns, 1,000 partitions of 300 rows, as batches",
        handed_over,
    );
}
