"""A topic's schema file changes between two runs, as users change them: a typed column added
to `schemas/<topic>.toml` evolves the table (rows archived before read it as null; Python
`deltalake` agrees), while a column's type change or removal stops the worker at start with a
message naming the column, and the table is left as it was. Workers rolled out together with a
new column add it once."""
import uuid

from deltalake import DeltaTable

from conftest import Lake, Worker, create_topic, log_record, produce


def topic_with_schema_file(stack, tmp_path, prefix, partitions, **lake_options):
    """A new topic whose schema file has one typed column (`seq`), and an S3 lake for it."""
    topic = f"{prefix}-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, partitions)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    schema_file = schemas / f"{topic}.toml"
    schema_file.write_text('[[columns]]\nname = "seq"\ntype = "int64"\n')
    lake = Lake(stack, "s3", [topic], tmp_path, schemas_dir=schemas, **lake_options)
    return topic, topic.replace("-", "_"), schema_file, lake


def test_adding_a_typed_column_evolves_the_table_and_a_type_change_is_refused(stack, tmp_path, workers):
    topic, table, schema_file, lake = topic_with_schema_file(
        stack, tmp_path, "drift", 1, compactor={"grace": "1m", "min_files": 2})

    w = Worker(lake)
    workers.append(w)
    produce(stack, topic, [(0, b"h", log_record("2026-03-08T00:00:00Z", "h", i, status=200)) for i in range(20)])
    lake.wait_count(table, 20, workers=[w])
    assert w.stop() == 0

    # v2 adds a typed column in the middle of the list.
    schema_file.write_text('[[columns]]\nname = "status"\ntype = "int64"\n\n[[columns]]\nname = "seq"\ntype = "int64"\n')
    w2 = Worker(lake)
    workers.append(w2)
    produce(stack, topic, [(0, b"h", log_record("2026-03-08T01:00:00Z", "h", i, status=404)) for i in range(20, 30)])
    lake.wait_count(table, 30, workers=[w2])
    # Hour 00 gets a file with the new column next to the one without it.
    produce(stack, topic, [(0, b"h", log_record("2026-03-08T00:30:00Z", "h", i, status=500)) for i in range(30, 35)])
    lake.wait_count(table, 35, workers=[w2])
    assert w2.stop() == 0

    # The compactor merges the two generations of files of hour 00 into one.
    lake.run("compact", timeout=300)
    hour0 = lake.query(f"SELECT count(*) AS n, count(status) AS s, count(DISTINCT \"_kafka_offset\") AS o "
                       f"FROM {table} WHERE hour = '00'")
    assert hour0 == [{"n": 25, "s": 5, "o": 25}], hour0
    files = DeltaTable(lake.table_uri(topic), storage_options=lake.storage_options()).file_uris()
    assert len([f for f in files if "hour=00" in f]) == 1, files
    rows = lake.query(f"SELECT seq, status FROM {table} ORDER BY seq")
    assert [r["status"] for r in rows] == [None] * 20 + [404] * 10 + [500] * 5
    assert [r["seq"] for r in rows] == list(range(35))
    dt = DeltaTable(lake.table_uri(topic), storage_options=lake.storage_options())
    assert dt.schema().to_arrow().field("status").type.bit_width == 64
    got = dt.to_pyarrow_table(columns=["seq", "status"]).sort_by("seq").to_pylist()
    assert [r["status"] for r in got] == [None] * 20 + [404] * 10 + [500] * 5
    version = dt.version()

    # A type change, then a removal: refused at start, naming the column; the table untouched.
    for text, words in [
        ('[[columns]]\nname = "status"\ntype = "string"\n\n[[columns]]\nname = "seq"\ntype = "int64"\n',
         ['"status"', "Int64", "type"]),
        ('[[columns]]\nname = "seq"\ntype = "int64"\n', ['"status"', "removing"]),
    ]:
        schema_file.write_text(text)
        r = lake.run("ingest", check=False, timeout=60)
        assert r.returncode != 0
        for word in words:
            assert word in r.stderr, (word, r.stderr[-2000:])
        assert DeltaTable(lake.table_uri(topic), storage_options=lake.storage_options()).version() == version


def test_workers_started_together_with_a_new_column_add_it_once(stack, tmp_path, workers):
    """A rollout: several workers start at once with a schema file that adds a column. They
    race to add it; one commits it, the others see it and go on (no worker loads the table's
    file list to do so), and every record is archived once."""
    topic, table, schema_file, lake = topic_with_schema_file(stack, tmp_path, "rollout", 3)
    w = Worker(lake)
    workers.append(w)
    produce(stack, topic, [(i % 3, b"h", log_record("2026-03-09T00:00:00Z", "h", i, status=200)) for i in range(30)])
    lake.wait_count(table, 30, workers=[w])
    assert w.stop() == 0

    schema_file.write_text('[[columns]]\nname = "seq"\ntype = "int64"\n\n[[columns]]\nname = "status"\ntype = "int64"\n')
    crew = [Worker(lake, name) for name in ("a", "b", "c")]
    workers.extend(crew)
    produce(stack, topic, [(i % 3, b"h", log_record("2026-03-09T01:00:00Z", "h", i, status=404)) for i in range(30, 90)])
    lake.wait_count(table, 90, workers=crew)
    for c in crew:
        c.assert_alive()
    assert [c.stop() for c in crew] == [0, 0, 0]
    dt = DeltaTable(lake.table_uri(topic), storage_options=lake.storage_options())
    names = [f.name for f in dt.schema().fields]
    assert names.count("status") == 1, names
    added = [h for h in dt.history() if h.get("operation") == "ADD COLUMN"]
    assert len(added) == 1, added
    rows = lake.query(f"SELECT count(*) AS n, count(DISTINCT (_kafka_partition, _kafka_offset)) AS o, "
                      f"count(status) AS s FROM {table}")
    assert rows == [{"n": 90, "o": 90, "s": 60}], rows
