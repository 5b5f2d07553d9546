"""End-to-end fixtures: the real broker and S3 server (started by scripts/stack.sh on free
ports), the real `loglake` binary, and helpers to feed, run, kill and query."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]


def loglake_bin():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/loglake/target"))
    return os.environ.get("LOGLAKE_BIN", os.path.join(target, "debug", "loglake"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def stack():
    """Tansu + moto for the whole session; their environment as a dict."""
    directory = tempfile.mkdtemp(prefix="loglake-e2e-stack-")
    out = subprocess.run([str(ROOT / "scripts" / "stack.sh"), "up", directory], check=True,
                         capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = v
    yield env
    subprocess.run([str(ROOT / "scripts" / "stack.sh"), "down", directory], check=False)


def create_topic(stack, topic, partitions):
    admin = AdminClient({"bootstrap.servers": stack["LOGLAKE_KAFKA_BROKERS"]})
    for _, f in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).items():
        f.result(15)
    for _ in range(50):
        md = admin.list_topics(topic, timeout=5)
        if topic in md.topics and len(md.topics[topic].partitions) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} did not appear")


def delete_topic(stack, topic):
    admin = AdminClient({"bootstrap.servers": stack["LOGLAKE_KAFKA_BROKERS"]})
    for _, f in admin.delete_topics([topic]).items():
        f.result(15)
    for _ in range(50):
        if topic not in admin.list_topics(timeout=5).topics:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} was not deleted")


def produce(stack, topic, records):
    """records: iterable of (partition, key bytes|None, value bytes|None)."""
    p = Producer({"bootstrap.servers": stack["LOGLAKE_KAFKA_BROKERS"], "linger.ms": 5,
                  "message.max.bytes": 8_000_000})
    n = 0
    for partition, key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=partition)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0, "broker did not acknowledge every record"
    return n


class Lake:
    """A lake (S3 prefix or local directory) with a config file for loglake."""

    def __init__(self, stack, kind, topics, tmp, group=None, ingest=None, schemas_dir=None, kafka_options=None,
                 brokers=None, kafka=None, compactor=None, serve=None):
        self.stack, self.kind, self.tmp = stack, kind, Path(tmp)
        self.id = uuid.uuid4().hex[:10]
        if kind == "s3":
            self.url = f"s3://loglake/e2e-{self.id}"
        else:
            self.dir = self.tmp / f"lake-{self.id}"
            self.url = f"file://{self.dir}"
        self.group = group or f"g-{self.id}"
        ingest = {"max_latency": "1s", "metrics_listen": "127.0.0.1:0",
                  "schemas_dir": str(schemas_dir or (self.tmp / "no-schemas")), **(ingest or {})}
        options = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500", **(kafka_options or {})}
        lines = ["[lake]", f'url = "{self.url}"']
        if kind == "s3":
            lines += ["[lake.s3]", f'endpoint = "{stack["LOGLAKE_S3_ENDPOINT"]}"', 'region = "us-east-1"',
                      'access_key_id = "testing"', 'secret_access_key = "testing"', "allow_http = true"]
        lines += ["[kafka]", f'brokers = "{brokers or stack["LOGLAKE_KAFKA_BROKERS"]}"', f'group_id = "{self.group}"',
                  "topics = [" + ", ".join(f'"{t}"' for t in topics) + "]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in (kafka or {}).items()]
        lines += ["[kafka.options]"]
        lines += [f'"{k}" = "{v}"' for k, v in options.items()]
        lines += ["[ingest]"] + [f"{k} = {json.dumps(v)}" for k, v in ingest.items()]
        if compactor:
            lines += ["[compactor]"] + [f"{k} = {json.dumps(v)}" for k, v in compactor.items()]
        if serve:
            lines += ["[serve]"] + [f"{k} = {json.dumps(v)}" for k, v in serve.items()]
        self.config = self.tmp / f"loglake-{self.id}.toml"
        self.config.write_text("\n".join(lines) + "\n")

    def env(self):
        env = dict(os.environ)
        # The config file is the only source of truth in tests: no AWS_* leakage.
        for k in list(env):
            if k.startswith("AWS_") or k.startswith("LOGLAKE_"):
                del env[k]
        return env

    def run(self, *args, check=True, timeout=120):
        r = subprocess.run([loglake_bin(), *args, "--config", str(self.config)], env=self.env(),
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"loglake {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
        return r

    def query(self, sql):
        out = self.run("query", "--format", "json", sql).stdout
        return json.loads(out)

    def scalar(self, sql):
        rows = self.query(sql)
        return list(rows[0].values())[0] if rows else None

    def count(self, table):
        try:
            return self.scalar(f"SELECT count(*) AS n FROM {table}")
        except AssertionError as e:
            if "not found" in str(e).lower() or "table" in str(e).lower() and "exist" in str(e).lower():
                return 0
            raise

    def wait_count(self, table, want, timeout=120, workers=()):
        deadline = time.time() + timeout
        have = None
        while time.time() < deadline:
            have = self.count(table)
            if have == want:
                return have
            for w in workers:
                w.assert_alive()
            time.sleep(0.5)
        logs = "\n".join(w.tail() for w in workers)
        raise AssertionError(f"{table}: {have} rows after {timeout}s, want {want}\n{logs}")

    def storage_options(self):
        return {"AWS_ENDPOINT_URL": self.stack["LOGLAKE_S3_ENDPOINT"], "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ALLOW_HTTP": "true"}

    def table_uri(self, topic):
        return f"{self.url}/{topic}"


class Process:
    """A `loglake <command>` process on the lake's config, its output in a log file."""

    def __init__(self, lake, command, name):
        self.lake = lake
        self.log_path = lake.tmp / f"{command}-{lake.id}-{name}-{time.time_ns()}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([loglake_bin(), command, "--config", str(lake.config)], env=lake.env(),
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def tail(self, n=40):
        self.log.flush()
        return f"--- {self.log_path} ---\n" + "\n".join(self.log_path.read_text().splitlines()[-n:])

    def stop(self, timeout=60):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            self.log.close()
        return code


class Worker(Process):
    """A `loglake ingest` process."""

    def __init__(self, lake, name="w"):
        super().__init__(lake, "ingest", name)

    def assert_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"ingest exited with {self.proc.returncode}\n{self.tail()}")

    def metrics_url(self):
        import re
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(r"metrics listening addr=(\S+)", self.log_path.read_text())
            if m:
                return f"http://{m.group(1)}"
            time.sleep(0.2)
        raise AssertionError("metrics address never logged\n" + self.tail())

    def metrics(self):
        text = urllib.request.urlopen(self.metrics_url() + "/metrics", timeout=5).read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture
def workers():
    started = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


class Server(Process):
    """A `loglake serve` process on a free port."""

    def __init__(self, lake, name="serve"):
        import re
        super().__init__(lake, "serve", name)
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(r"serving SQL over HTTP addr=(\S+)", self.log_path.read_text())
            if m:
                self.url = f"http://{m.group(1)}"
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("loglake serve did not start\n" + self.tail())

    def cpu_seconds(self):
        """User + system CPU time the server has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def freeze(pid):
    os.kill(pid, signal.SIGSTOP)


def thaw(pid):
    os.kill(pid, signal.SIGCONT)


def log_record(ts, host, i, **extra):
    return json.dumps({"timestamp": ts, "host": host, "level": "INFO", "message": f"event {i}", "seq": i, **extra}).encode()


def pytest_report_header(config):
    return f"loglake binary: {loglake_bin()}"


sys.path.insert(0, str(Path(__file__).parent))
