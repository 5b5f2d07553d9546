"""`loglake agent`: log files -> Kafka. Rotations (rename, copytruncate, delete and re-create),
SIGKILL and broker outages lose no line and keep each file's order; huge, multi-line, CRLF,
invalid UTF-8, JSON and unterminated lines arrive as documented; SIGTERM exits cleanly; a
corrupt checkpoint stops the agent; and the records end up in the lake through `loglake ingest`."""
import bisect
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from conftest import Lake, Worker, create_topic, freeze, loglake_bin, thaw

HOST = "agent-e2e-1"
LABELS = {"service": "api", "env": "test"}
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


# ----------------------------------------------------------------------------- helpers

def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


class AgentSetup:
    """A topic, a directory of log files, a state directory and the agent's config file."""

    def __init__(self, stack, tmp, name, partitions=1, agent=None, producer_options=None, inputs=None,
                 input_options=None, topic=None, brokers=None, kafka=None):
        self.stack = stack
        self.tmp = Path(tmp)
        self.topic = topic or f"agent-{name}-{uuid.uuid4().hex[:6]}"
        if topic is None:
            create_topic(stack, self.topic, partitions)
        self.logs = self.tmp / f"logs-{name}"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state = self.tmp / f"state-{name}"
        self.input_name = f"in-{name}"
        opts = {"state_dir": str(self.state), "metrics_listen": "127.0.0.1:0", "host": HOST,
                "poll_interval": "200ms", "rotate_wait": "2s", "checkpoint_interval": "1s", **(agent or {})}
        lines = ["[kafka]", f"brokers = {toml_value(brokers or stack['LOGLAKE_KAFKA_BROKERS'])}"]
        lines += [f"{k} = {toml_value(v)}" for k, v in (kafka or {}).items()]
        lines += ["[agent]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in opts.items()]
        lines += ["[agent.producer_options]", '"linger.ms" = "5"']
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in (producer_options or {}).items()]
        for inp in inputs or [{"paths": [str(self.logs / "*.log")], "topic": self.topic, "name": self.input_name,
                               "labels": LABELS, **(input_options or {})}]:
            lines += ["[[agent.inputs]]"] + [f"{k} = {toml_value(v)}" for k, v in inp.items()]
        self.config = self.tmp / f"agent-{name}.toml"
        self.config.write_text("\n".join(lines) + "\n")

    def path(self, name):
        return self.logs / name


class Agent:
    """A `loglake agent` process, its output in a log file."""

    def __init__(self, setup, name="a"):
        self.setup = setup
        self.log_path = setup.tmp / f"agent-{setup.topic}-{name}-{time.time_ns()}.log"
        self.log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not (k.startswith("AWS_") or k.startswith("LOGLAKE_"))}
        self.proc = subprocess.Popen([loglake_bin(), "agent", "--config", str(setup.config)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, n=60):
        return f"--- {self.log_path} ---\n" + "\n".join(self.text().splitlines()[-n:])

    def assert_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}\n{self.tail()}")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def term(self, timeout=30):
        """SIGTERM; (exit code, seconds it took)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def metrics_url(self):
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(r"metrics listening addr=(\S+)", self.text())
            if m:
                return f"http://{m.group(1)}"
            self.assert_alive()
            time.sleep(0.2)
        raise AssertionError("metrics address never logged\n" + self.tail())

    def metric(self, name):
        """The sum of every series of `name`."""
        text = urllib.request.urlopen(self.metrics_url() + "/metrics", timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                if series == name or series.startswith(name + "{"):
                    total += float(value)
        return total


@pytest.fixture
def agents():
    started = []
    yield started
    for a in started:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        a.log.close()


def start(agents, setup, name="a"):
    a = Agent(setup, name)
    agents.append(a)
    return a


class Rec:
    def __init__(self, msg):
        self.key = msg.key()
        self.raw = msg.value()
        self.offset = msg.offset()
        self.value = json.loads(self.raw)

    @property
    def message(self):
        return self.value.get("message")

    def __repr__(self):
        text = self.raw[:200].decode(errors="replace")
        return f"Rec(@{self.offset} {text}{'...' if len(self.raw) > 200 else ''})"


def read_topic(stack, topic, want=None, until=None, timeout=60, settle=2.0, agents=(), client=None):
    """Every record of `topic` from the start, until `until(records)` (default: `want` records)
    holds and then `settle` seconds more (to see duplicates or extras), or `timeout`."""
    if until is None:
        until = lambda recs: len(recs) >= want  # noqa: E731
    c = Consumer({"bootstrap.servers": stack["LOGLAKE_KAFKA_BROKERS"], "group.id": f"t-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.max.bytes": 50_000_000, "max.partition.fetch.bytes": 20_000_000,
                  "receive.message.max.bytes": 100_000_000, **(client or {})})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        records = []
        deadline = time.time() + timeout
        done_at = None
        checked = 0.0
        while time.time() < deadline:
            msg = c.poll(0.3)
            if msg is not None and not msg.error():
                records.append(Rec(msg))
            # `until` may be costly: ask when caught up with the topic, or once a second.
            if done_at is None and (msg is None or time.time() - checked > 1.0):
                checked = time.time()
                if until(records):
                    done_at = time.time()
            if done_at is not None and time.time() - done_at >= settle:
                break
            for a in agents:
                if a.proc.poll() is not None and a.proc.returncode != 0:
                    raise AssertionError(f"agent died ({a.proc.returncode})\n{a.tail()}")
        return records
    finally:
        c.close()


def parse_id(message):
    """'f{file}-{seq} g{gen} ...' -> (file, seq, gen)."""
    m = re.match(r"^f(\d+)-(\d{6}) g(\d+) ", message)
    assert m, f"unexpected message {message[:120]!r}"
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def line(fi, seq, gen, pad=40):
    return f"f{fi}-{seq:06d} g{gen} INFO payload {'x' * (seq % pad)}\n".encode()


def append(path, data):
    with open(path, "ab") as f:
        f.write(data)


def missing_and_dups(ids, expected):
    seen, dups = set(), []
    for i in ids:
        if i in seen:
            dups.append(i)
        seen.add(i)
    return sorted(expected - seen), dups, sorted(seen - expected)


def ranges(pairs):
    """[(group, seq)] -> "group:a-b, ..." for printing."""
    out = []
    for g, q in sorted(pairs):
        if out and out[-1][0] == g and q <= out[-1][2] + 1:
            out[-1][2] = q
        else:
            out.append([g, q, q])
    return ", ".join(f"{g}:{a}-{b}" if a != b else f"{g}:{a}" for g, a, b in out)


def first_occurrence_order_violations(pairs):
    """pairs: (group, seq) in arrival order. Groups whose first occurrences are not increasing."""
    seen, last, bad = set(), {}, []
    for g, s in pairs:
        if (g, s) in seen:
            continue
        seen.add((g, s))
        if g in last and s <= last[g]:
            bad.append((g, last[g], s))
        last[g] = s
    return bad


# ----------------------------------------------------------------------------- tests

def test_rotations_lose_nothing_and_keep_order(stack, tmp_path, agents):
    """Four files written at once: a.log renamed (the writer keeps writing to the renamed file
    for a moment, then opens a new a.log), b.log copytruncated (after a pause, so the documented
    loss window is empty), c.log deleted (the writer keeps writing to the deleted file for a
    moment) and created again, d.log left alone."""
    s = AgentSetup(stack, tmp_path, "rot")
    names = ["a.log", "b.log", "c.log", "d.log"]
    kinds = ["rename", "copytruncate", "recreate", None]
    n, rot_at, rate = 1500, 700, 250.0
    for name in names:
        append(s.path(name), b"")
    a = start(agents, s)
    written = {}  # (fi, seq) -> gen
    errors = []

    def writer(fi):
        try:
            path = str(s.path(names[fi]))
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            gen, seq = 0, 0
            while seq < n:
                if seq == rot_at:
                    kind = kinds[fi]
                    if kind == "rename":
                        os.rename(path, path + ".1")
                        for _ in range(150):  # the application has not reopened yet
                            os.write(fd, line(fi, seq, gen))
                            written[(fi, seq)] = gen
                            seq += 1
                            time.sleep(1 / rate)
                        os.close(fd)
                        gen += 1
                        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    elif kind == "copytruncate":
                        time.sleep(1.0)  # the agent has read everything: no loss window
                        shutil.copyfile(path, path + ".1")
                        os.truncate(path, 0)
                        gen += 1
                    elif kind == "recreate":
                        os.unlink(path)
                        for _ in range(100):  # written to the deleted file: still to be read
                            os.write(fd, line(fi, seq, gen))
                            written[(fi, seq)] = gen
                            seq += 1
                            time.sleep(1 / rate)
                        os.close(fd)
                        gen += 1
                        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, line(fi, seq, gen))
                written[(fi, seq)] = gen
                seq += 1
                time.sleep(1 / rate)
            os.close(fd)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(fi,)) for fi in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"writers done in {time.monotonic() - t0:.1f}s")
    assert not errors, errors
    assert len(written) == 4 * n
    expected = set(written)

    def have_all(recs):
        return {parse_id(r.message)[:2] for r in recs} >= expected

    recs = read_topic(stack, s.topic, until=have_all, timeout=120, settle=4.0, agents=[a])
    print(f"all read back {time.monotonic() - t0:.1f}s after the writers started")
    a.assert_alive()
    ids = [parse_id(r.message) for r in recs]
    missing, dups, extra = missing_and_dups([(fi, seq) for fi, seq, _ in ids], expected)
    assert not missing, f"{len(missing)} lines never arrived, e.g. {missing[:20]}\n{a.tail()}"
    assert not extra, f"lines nobody wrote: {extra[:20]}"
    assert not dups, f"{len(dups)} duplicates, e.g. {dups[:20]}\n{a.tail()}"
    for (fi, seq, gen) in ids:
        assert written[(fi, seq)] == gen

    # Every physical file in file order; b.log (copytruncate after a pause) and d.log as a whole.
    bad = first_occurrence_order_violations([((fi, gen), seq) for fi, seq, gen in ids])
    assert not bad, f"out of order within a file: {bad[:20]}"
    bad = first_occurrence_order_violations([(fi, seq) for fi, seq, gen in ids if fi in (1, 3)])
    assert not bad, f"out of order across the copytruncate / in d.log: {bad[:20]}"
    across = first_occurrence_order_violations([(fi, seq) for fi, seq, gen in ids if fi in (0, 2)])
    print(f"rename/recreate: lines of the old file after the new file's first line: {across[:10]}; "
          f"records of a.log.1: {sum(r.value['file'].endswith('a.log.1') for r in recs)}")

    # The "file" field and the fixed fields.
    for r, (fi, seq, gen) in zip(recs, ids):
        p = str(s.path(names[fi]))
        if fi == 0 and gen == 0:
            assert r.value["file"] in (p, p + ".1"), r
        else:
            assert r.value["file"] == p, r
        assert r.value["host"] == HOST and r.key == HOST.encode()
        assert {k: r.value[k] for k in LABELS} == LABELS
        assert r.message == line(fi, seq, gen).decode().rstrip("\n")
    a.assert_alive()
    code, took = a.term()
    assert code == 0, a.tail()


def test_sigkill_resends_a_bounded_number_and_loses_nothing(stack, tmp_path, agents):
    s = AgentSetup(stack, tmp_path, "kill")
    names = ["a.log", "b.log"]
    n, rate = 2400, 150.0
    written_at = {0: [], 1: []}  # seq -> monotonic time the line was written
    errors = []
    for name in names:
        append(s.path(name), b"")
    a = start(agents, s, "run0")
    time.sleep(1.0)

    def writer(fi):
        try:
            fd = os.open(str(s.path(names[fi])), os.O_WRONLY | os.O_APPEND)
            for seq in range(n):
                os.write(fd, line(fi, seq, 0))
                written_at[fi].append(time.monotonic())
                time.sleep(1 / rate)
            os.close(fd)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(fi,)) for fi in range(2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    kills = []
    for k, at in enumerate([4.0, 9.0]):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        a.assert_alive()
        kills.append(time.monotonic())
        a.kill()
        a = start(agents, s, f"run{k + 1}")
    for t in threads:
        t.join()
    assert not errors, errors
    expected = {(fi, seq) for fi in range(2) for seq in range(n)}

    def have_all(recs):
        return {parse_id(r.message)[:2] for r in recs} >= expected

    recs = read_topic(stack, s.topic, until=have_all, timeout=180, settle=4.0, agents=[a])
    ids = [parse_id(r.message)[:2] for r in recs]
    missing, dups, extra = missing_and_dups(ids, expected)
    assert not missing, f"{len(missing)} lines lost, e.g. {missing[:20]}\n{a.tail()}"
    assert not extra, extra[:20]
    bad = first_occurrence_order_violations(ids)
    assert not bad, f"first occurrences out of order: {bad[:20]}"

    window = 3.0
    allowed = 0
    for tk in kills:
        for fi in range(2):
            times = written_at[fi]
            allowed += bisect.bisect_right(times, tk) - bisect.bisect_left(times, tk - window)
    outside = [(fi, seq) for fi, seq in dups
               if not any(tk - window <= written_at[fi][seq] <= tk for tk in kills)]
    print(f"{len(dups)} duplicates after 2 SIGKILLs (bound {allowed}): {ranges(dups)}")
    assert len(dups) <= allowed, f"{len(dups)} duplicates > {allowed} lines written in the {window}s before the kills"
    assert not outside, (f"duplicates of lines written more than {window}s before any kill: {outside[:20]} "
                         f"(kills at {[round(k - t0, 2) for k in kills]}s; written at "
                         f"{[round(written_at[fi][seq] - t0, 2) for fi, seq in outside[:10]]}s)")
    code, _ = a.term()
    assert code == 0, a.tail()


def test_frozen_broker_delays_but_loses_and_duplicates_nothing(stack, tmp_path, agents):
    s = AgentSetup(stack, tmp_path, "freeze")
    path = s.path("app.log")
    append(path, b"".join(line(0, i, 0) for i in range(200)))
    a = start(agents, s)
    recs = read_topic(stack, s.topic, 200, timeout=60, settle=0, agents=[a])
    assert len(recs) == 200, f"{len(recs)} of 200 before the outage\n{a.tail()}"

    tansu = int(stack["TANSU_PID"])
    freeze(tansu)
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_APPEND)
        t_end = time.monotonic() + 6.0
        seq = 200
        while time.monotonic() < t_end:
            os.write(fd, line(0, seq, 0))
            seq += 1
            time.sleep(0.01)
        os.close(fd)
        a.assert_alive()
    finally:
        thaw(tansu)
    append(path, b"".join(line(0, i, 0) for i in range(seq, seq + 200)))
    total = seq + 200
    recs = read_topic(stack, s.topic, total, timeout=120, settle=4.0, agents=[a])
    seqs = [parse_id(r.message)[1] for r in recs]
    assert seqs == list(range(total)), (
        f"{len(seqs)} records for {total} lines; missing {sorted(set(range(total)) - set(seqs))[:20]}, "
        f"duplicated {len(seqs) - len(set(seqs))}\n{a.tail()}")
    a.assert_alive()
    code, _ = a.term()
    assert code == 0, a.tail()


def test_huge_lines_whole_or_truncated(stack, tmp_path, agents):
    s = AgentSetup(stack, tmp_path, "big", agent={"max_line_bytes": "8MiB"},
                   producer_options={"message.max.bytes": "10000000"})
    five = "".join(f"{i:08d}" for i in range(625_000))        # 5,000,000 bytes
    nine = "".join(f"{i:08d}" for i in range(1_125_000))      # 9,000,000 bytes
    path = s.path("big.log")
    append(path, b"before big\n")
    a = start(agents, s)
    append(path, five.encode() + b"\n" + nine.encode() + b"\nafter big\n")
    recs = read_topic(stack, s.topic, 4, timeout=120, settle=3.0, agents=[a])
    assert len(recs) == 4, f"{len(recs)} records, want 4: {recs}\n{a.tail()}"
    r0, r5, r9, r_after = recs
    assert r0.message == "before big" and "truncated" not in r0.value
    assert len(r5.message) == 5_000_000 and r5.message == five, "the 5 MB line did not arrive whole"
    assert "truncated" not in r5.value
    assert r9.value.get("truncated") is True, {k: v for k, v in r9.value.items() if k != "message"}
    assert len(r9.message) == 8 * 1024 * 1024 and r9.message == nine[:8 * 1024 * 1024]
    assert r_after.message == "after big" and "truncated" not in r_after.value
    for r in recs:
        assert r.value["file"] == str(path) and r.value["host"] == HOST
    assert a.metric("loglake_agent_truncated_lines_total") == 1
    code, _ = a.term()
    assert code == 0, a.tail()


def test_multiline_java_stack_trace_is_one_record(stack, tmp_path, agents):
    s = AgentSetup(stack, tmp_path, "multi",
                   input_options={"multiline_start": r"^\d{4}-\d{2}-\d{2}", "multiline_timeout": "1s"})
    trace = ["2026-12-01 10:00:00 ERROR boom",
             "java.lang.IllegalStateException: x",
             "\tat a.b.C.d(C.java:1)",
             "\tat a.b.C.e(C.java:2)",
             "\tat a.b.C.f(C.java:3)",
             "Caused by: java.lang.RuntimeException: y",
             "\t... 3 more"]
    path = s.path("java.log")
    a = start(agents, s)
    append(path, b"2026-12-01 09:59:59 INFO before\n")
    append(path, "".join(t + "\n" for t in trace).encode())
    append(path, b"2026-12-01 10:00:01 INFO after\n")
    recs = read_topic(stack, s.topic, 3, timeout=60, settle=3.0, agents=[a])
    assert [r.message for r in recs] == ["2026-12-01 09:59:59 INFO before", "\n".join(trace),
                                         "2026-12-01 10:00:01 INFO after"], f"{recs}\n{a.tail()}"
    for r in recs:
        assert r.value["file"] == str(path) and r.value["host"] == HOST
    code, _ = a.term()
    assert code == 0, a.tail()


def test_line_formats(stack, tmp_path, agents):
    s = AgentSetup(stack, tmp_path, "fmt", agent={"partial_line_timeout": "1s"})
    path = s.path("fmt.log")
    p = str(path)
    json_line = '{"level": "info",  "msg": "json line", "n": 1}'
    own_host = '{"host":"other","msg":"own host","env":"mine"}'
    a = start(agents, s)
    began = datetime.now(timezone.utc)
    append(path, b"bad \xff\xfe line\n" + b"crlf line\r\n" + b"before empty\n\nafter empty\n"
           + json_line.encode() + b"\n" + own_host.encode() + b"\r\n" + b"[1,2,3]\n" + b"{not json\n")
    append(path, b"no newline ")
    time.sleep(0.3)  # changed within partial_line_timeout: not sent in two pieces
    append(path, b"at end")
    recs = read_topic(stack, s.topic, 10, timeout=60, settle=3.0, agents=[a])
    ended = datetime.now(timezone.utc)
    assert len(recs) == 10, f"{len(recs)} records, want 10: {recs}\n{a.tail()}"
    for r in recs:
        assert r.key == HOST.encode(), r.key

    def text(r, message, **extra):
        v = dict(r.value)
        ts = v.pop("timestamp", None)
        assert ts and TS_RE.match(ts), f"timestamp {ts!r}"
        t = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert began.timestamp() - 2 <= t.timestamp() <= ended.timestamp() + 2, ts
        assert v == {"host": HOST, "message": message, "file": p, **LABELS, **extra}, r.raw

    text(recs[0], "bad \xff\xfe line".encode("latin-1").decode("utf-8", "replace"), invalid_utf8=True)
    assert recs[0].message == "bad \ufffd\ufffd line"
    text(recs[1], "crlf line")
    text(recs[2], "before empty")
    text(recs[3], "")
    text(recs[4], "after empty")
    assert recs[5].value == {"host": HOST, "file": p, **LABELS, **json.loads(json_line)}, recs[5].raw
    assert recs[5].raw.decode().endswith(json_line[1:]), f"original text not kept: {recs[5].raw}"
    assert recs[6].value == {"file": p, "service": "api", "host": "other", "msg": "own host", "env": "mine"}, recs[6].raw
    text(recs[7], "[1,2,3]")
    text(recs[8], "{not json")
    text(recs[9], "no newline at end")
    assert a.metric("loglake_agent_invalid_utf8_lines_total") == 1
    code, _ = a.term()
    assert code == 0, a.tail()


def test_sigterm_exits_cleanly_and_corrupt_positions_refuse_to_start(stack, tmp_path, agents):
    s = AgentSetup(stack, tmp_path, "term")
    path = s.path("app.log")
    append(path, b"".join(line(0, i, 0) for i in range(100)))
    a = start(agents, s, "first")
    recs = read_topic(stack, s.topic, 100, timeout=60, settle=0, agents=[a])
    assert len(recs) == 100, a.tail()
    time.sleep(1.5)  # idle: nothing in flight
    code, took = a.term(timeout=30)
    assert code == 0, f"SIGTERM: exit {code}\n{a.tail()}"
    assert took < 5, f"SIGTERM took {took:.1f}s with nothing to deliver"
    positions = s.state / "positions.json"
    assert positions.exists(), f"no checkpoint after SIGTERM: {list(s.state.iterdir()) if s.state.exists() else None}"
    json.loads(positions.read_text())

    # Restart after a clean stop: nothing re-sent, new lines sent.
    append(path, b"".join(line(0, i, 0) for i in range(100, 150)))
    a = start(agents, s, "second")
    recs = read_topic(stack, s.topic, 150, timeout=60, settle=4.0, agents=[a])
    seqs = [parse_id(r.message)[1] for r in recs]
    assert seqs == list(range(150)), f"after a clean restart: {len(seqs)} records\n{a.tail()}"
    code, took = a.term(timeout=30)
    assert code == 0 and took < 5, (code, took, a.tail())

    # A corrupt checkpoint: refuse to start, name the file, ship nothing.
    positions.write_bytes(b"\x00{{garbage not json")
    append(path, b"".join(line(0, i, 0) for i in range(150, 160)))
    a = start(agents, s, "corrupt")
    try:
        code = a.proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"agent kept running on a corrupt positions.json\n{a.tail()}")
    out = a.text()
    assert code != 0, f"exit 0 on a corrupt positions.json\n{a.tail()}"
    assert "positions.json" in out, f"the error does not name positions.json:\n{a.tail()}"
    recs = read_topic(stack, s.topic, 151, timeout=5, settle=0)
    assert len(recs) == 150, f"the agent shipped {len(recs) - 150} records despite the corrupt checkpoint"


def test_agent_to_lake(stack, tmp_path, agents, workers):
    s = AgentSetup(stack, tmp_path, "lake")
    lake = Lake(stack, "file", [s.topic], tmp_path)
    table = s.topic.replace("-", "_")
    path = s.path("svc.log")
    texts = [f"INFO request {i} done in {i % 97} ms" for i in range(300)]
    objs = [{"msg": f"json event {i}", "level": "warn", "user": f"u{i}"} for i in range(50)]
    append(path, "".join(t + "\n" for t in texts).encode())
    a = start(agents, s)
    w = Worker(lake)
    workers.append(w)
    append(path, "".join(json.dumps(o) + "\n" for o in objs).encode())
    total = len(texts) + len(objs)
    recs = read_topic(stack, s.topic, total, timeout=90, settle=2.0, agents=[a])
    assert len(recs) == total, f"{len(recs)} of {total} in the topic\n{a.tail()}"
    code, _ = a.term()
    assert code == 0, a.tail()
    lake.wait_count(table, total, timeout=120, workers=[w])
    assert w.stop() == 0
    rows = lake.query(f"SELECT host, message, level, attributes FROM {table}")
    assert len(rows) == total
    assert sorted(r["message"] for r in rows) == sorted(texts + [o["msg"] for o in objs])
    assert {r["host"] for r in rows} == {HOST}
    by_message = {r["message"]: r for r in rows}
    for t in texts:
        attrs = json.loads(by_message[t]["attributes"])
        assert attrs.get("file") == str(path), attrs
        assert by_message[t]["level"] == "INFO", "the level word of a wrapped text line"
        assert {k: attrs.get(k) for k in LABELS} == LABELS, attrs
    for o in objs:
        r = by_message[o["msg"]]
        attrs = json.loads(r["attributes"])
        assert attrs.get("file") == str(path) and attrs.get("user") == o["user"], attrs
        assert r["level"] == "warn"


def test_more_files_than_max_open_files_all_arrive(stack, tmp_path, agents):
    """Twelve files through three slots: idle files are closed (their positions kept) so the
    waiting ones get read, and a closed file that grows again is read on from where it was."""
    s = AgentSetup(stack, tmp_path, "slots", agent={"max_open_files": 3})
    files = [s.path(f"f{i:02d}.log") for i in range(12)]
    for fi, path in enumerate(files):
        append(path, b"".join(line(fi, seq, 0) for seq in range(100)))
    a = start(agents, s)
    expected = {(fi, seq) for fi in range(12) for seq in range(100)}
    have_first = lambda recs: {parse_id(r.message)[:2] for r in recs} >= expected  # noqa: E731
    read_topic(stack, s.topic, until=have_first, timeout=90, settle=0.5, agents=[a])
    assert a.metric("loglake_agent_open_files") <= 3
    for fi, path in enumerate(files):
        append(path, b"".join(line(fi, seq, 0) for seq in range(100, 150)))
    expected = {(fi, seq) for fi in range(12) for seq in range(150)}
    have_all = lambda recs: {parse_id(r.message)[:2] for r in recs} >= expected  # noqa: E731
    recs = read_topic(stack, s.topic, until=have_all, timeout=90, settle=2.0, agents=[a])
    ids = [parse_id(r.message)[:2] for r in recs]
    missing, dups, extra = missing_and_dups(ids, expected)
    assert not missing, f"{len(missing)} lines lost, e.g. {missing[:10]}\n{a.tail()}"
    assert not dups and not extra, (dups[:10], extra[:10])
    assert not first_occurrence_order_violations(ids)
    assert a.metric("loglake_agent_open_files") <= 3
    assert a.metric("loglake_agent_files_waiting") == 0
    code, _ = a.term()
    assert code == 0, a.tail()


def test_agent_over_tls(tmp_path, agents):
    """The agent reaches a TLS listener with the cluster's CA, as production agents do; with
    a CA that did not sign the broker's certificate it delivers nothing, says why, and keeps
    its position."""
    from kafka_tls import start_tls_broker, stop
    from test_kafka_security import client_config, create_topic_over_tls
    broker = start_tls_broker(tmp_path / "tls")
    tls_stack = {"LOGLAKE_KAFKA_BROKERS": broker["brokers"]}
    try:
        topic = f"agent-tls-{uuid.uuid4().hex[:6]}"
        create_topic_over_tls(broker, topic, 1)
        s = AgentSetup(tls_stack, tmp_path, "tls", topic=topic,
                       kafka={"security_protocol": "ssl", "ssl_ca_location": broker["ca"]})
        append(s.path("app.log"), b"".join(line(0, seq, 0) for seq in range(500)))
        a = start(agents, s)
        recs = read_topic(tls_stack, topic, 500, timeout=60, settle=1.0, agents=[a], client=client_config(broker))
        assert sorted(parse_id(r.message)[:2] for r in recs) == [(0, seq) for seq in range(500)], a.tail()
        code, _ = a.term()
        assert code == 0, a.tail()

        bad = AgentSetup(tls_stack, tmp_path, "tls-bad", topic=topic,
                         kafka={"security_protocol": "ssl", "ssl_ca_location": broker["wrong_ca"]})
        append(bad.path("app.log"), b"".join(line(1, seq, 0) for seq in range(10)))
        b = start(agents, bad)
        deadline = time.time() + 20
        while time.time() < deadline and "certificate verify failed" not in b.text().lower():
            time.sleep(0.3)
        assert "certificate verify failed" in b.text().lower(), b.tail()
        code, _ = b.term()
        assert code == 0, b.tail()
        recs = read_topic(tls_stack, topic, 500, timeout=10, settle=1.0, client=client_config(broker))
        assert len(recs) == 500, "nothing from the agent with the wrong CA"
        saved = bad.state / "positions.json"
        offsets = [f["offset"] for f in json.loads(saved.read_text())["files"]] if saved.exists() else []
        assert all(o == 0 for o in offsets), offsets
    finally:
        stop(broker)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_producer_codec_delivers(stack, tmp_path, agents, codec):
    """What operators set in agent.producer_options to save bandwidth: each codec reaches the
    broker and reads back intact."""
    s = AgentSetup(stack, tmp_path, f"codec-{codec}", producer_options={"compression.type": codec})
    append(s.path("app.log"), b"".join(line(0, seq, 0) for seq in range(300)))
    a = start(agents, s)
    recs = read_topic(stack, s.topic, 300, timeout=60, settle=0.5, agents=[a])
    assert [parse_id(r.message)[:2] for r in recs] == [(0, seq) for seq in range(300)], a.tail()
    code, _ = a.term()
    assert code == 0, a.tail()


def test_a_second_agent_on_the_same_state_directory_is_refused(stack, tmp_path, agents):
    """Two copies of the same agent would overwrite each other's positions: the second one
    stops at once, naming the state directory, and the first carries on."""
    s = AgentSetup(stack, tmp_path, "twice")
    append(s.path("app.log"), b"".join(line(0, seq, 0) for seq in range(50)))
    first = start(agents, s, "first")
    read_topic(stack, s.topic, 50, timeout=60, settle=0, agents=[first])
    second = start(agents, s, "second")
    code = second.proc.wait(30)
    assert code != 0 and "another loglake agent" in second.text(), second.tail()
    first.assert_alive()
    append(s.path("app.log"), b"".join(line(0, seq, 0) for seq in range(50, 80)))
    recs = read_topic(stack, s.topic, 80, timeout=60, settle=1.0, agents=[first])
    assert sorted(parse_id(r.message)[:2] for r in recs) == [(0, seq) for seq in range(80)]
    code, _ = first.term()
    assert code == 0, first.tail()


def test_poll_only_follows_a_renamed_file_its_writer_still_appends_to(stack, tmp_path, agents):
    """NFS-style polling (`notify = false`): after a rename rotation the application keeps
    writing to the renamed file for a moment (until it reopens its log); those lines arrive
    too, though no path leads to that file any more."""
    s = AgentSetup(stack, tmp_path, "pollrename", agent={"notify": False})
    path = s.path("app.log")
    append(path, b"".join(line(0, seq, 0) for seq in range(50)))
    a = start(agents, s)
    read_topic(stack, s.topic, 50, timeout=30, settle=0, agents=[a])
    with open(path, "ab") as old:
        os.rename(path, s.logs / "app.log.1")
        time.sleep(1.0)  # the agent notices the rename and reads the file to its end
        old.write(b"".join(line(0, seq, 0) for seq in range(50, 70)))
        old.flush()
    append(path, b"".join(line(0, seq, 0) for seq in range(70, 100)))
    recs = read_topic(stack, s.topic, 100, timeout=30, settle=1.0, agents=[a])
    ids = [parse_id(r.message)[:2] for r in recs]
    missing, dups, extra = missing_and_dups(ids, {(0, seq) for seq in range(100)})
    assert not missing and not dups and not extra, (missing, dups, extra, a.tail())
    code, _ = a.term()
    assert code == 0, a.tail()
