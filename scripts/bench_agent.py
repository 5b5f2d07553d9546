#!/usr/bin/env python3
"""Log-shipping benchmark: `loglake agent` against rsyslog (imfile + omkafka), side by side.

Not a test: it prints numbers and never fails on them. For each file count in BENCH_FILES,
log files of BENCH_MB MB in total are written under a temporary directory (loghub sample
lines cut or padded to ~150-250 bytes, BENCH_JSON_PCT % JSON lines), then each tool starts
from a fresh state and ships them into a fresh topic of the local broker. The clock runs from
the start of the process until the topic holds every line; CPU is the tailer's utime+stime,
peak RSS its VmHWM. Both tools write a JSON record (timestamp, host, message, file; loglake
passes JSON lines through with host and file added, rsyslog wraps them as the message), use an
idempotent producer (acks=all), linger.ms=50, no compression, and the host name as every key.
The broker shares the machine: its CPU per run and the load average are in the JSON lines.

Counting: Tansu's high watermark is the base offset of the last batch + 1, not the end of the
log (a batch of 4000 records moves it by 1), so the end is found by fetching that last batch
and taking its last offset + 1 (offsets are dense). Output: one JSON object per run, then a
table, the per-core ratios and the issue's targets.
"""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("LOGLAKE_BIN", "")
BROKERS = os.environ["LOGLAKE_KAFKA_BROKERS"]
FILES = [int(n) for n in os.environ.get("BENCH_FILES", "1,10,1000").split(",") if n]
TOOLS = [t for t in os.environ.get("BENCH_TOOLS", "loglake,rsyslog").split(",") if t]
if set(TOOLS) - {"loglake", "rsyslog"}:
    sys.exit(f"BENCH_TOOLS: unknown tool in {TOOLS} (loglake, rsyslog)")
TOTAL_MB = float(os.environ.get("BENCH_MB", "200"))
JSON_PCT = int(os.environ.get("BENCH_JSON_PCT", "20"))
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "4"))
STALL_S = float(os.environ.get("BENCH_STALL_S", "60"))      # no new record for this long: give up
TIMEOUT_S = float(os.environ.get("BENCH_TIMEOUT_S", "900"))  # one run, at most
LOGHUB = os.environ.get("LOGHUB_DIR", str(ROOT.parent / "shared" / "loghub"))
RSYSLOGD = os.environ.get("RSYSLOGD", "rsyslogd")
PRODUCER = {"linger.ms": "50", "compression.type": "none"}   # both tools (loglake's default linger), plus idempotence
KEY = socket.gethostname()   # loglake keys by host name; rsyslog gets it as its static key
CLK = os.sysconf("SC_CLK_TCK")
# Targets from the issue, printed as PASS/MISS and never asserted.
TARGET_MB_PER_CORE, TARGET_VS_RSYSLOG, TARGET_RSS_MIB, TARGET_RSS_FILES = 100.0, 2.0, 64.0, 1000
WORDS = ("connection accepted from client session opened closed timeout while reading block replica "
         "packet responder terminating served request user login failed retry backoff disk flush").split()


def proc_cpu(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_mem_mib(pid):
    """(VmHWM, RssAnon): the peak RSS, and the anonymous memory now (no code or mapped files)."""
    kib = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM:", "RssAnon:")):
            kib[line.split(":")[0]] = int(line.split()[1])
    return kib.get("VmHWM", 0) / 1024, kib.get("RssAnon", 0) / 1024


# ---------------------------------------------------------------------------------------------
# Data


def line_pool(rng):
    """~150-250 byte lines: loghub samples (or generated text) padded or cut, and JSON lines."""
    texts = []
    if os.path.isdir(LOGHUB):
        for f in sorted(Path(LOGHUB).glob("*.log")):
            texts += [l.rstrip("\r") for l in f.read_text(errors="replace").split("\n") if l.strip()]
    if not texts:
        texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(8, 30))) for _ in range(16000)]
    plain = []
    for t in texts:
        want = rng.randrange(150, 251)
        while len(t) < want:
            t += f" {rng.choice(('req_id', 'user', 'took_ms', 'thread', 'span'))}={rng.randrange(10**6)}"
        if len(t) > want:
            cut = t.rfind(" ", 0, want)
            t = t[:cut if cut > 100 else want]
        plain.append(t)
    pool = []
    for t in plain:
        if rng.randrange(100) < JSON_PCT:
            msg = t[t.find(" ", 20) + 1:][:rng.randrange(60, 120)]
            pool.append(json.dumps({
                "ts": f"2026-02-01T{rng.randrange(24):02}:{rng.randrange(60):02}:{rng.randrange(60):02}.{rng.randrange(10**6):06}Z",
                "level": rng.choice(("INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG")),
                "logger": rng.choice(("api.http", "db.pool", "auth", "worker.queue")),
                "msg": msg, "req_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "duration_ms": rng.randrange(1, 5000)}, separators=(",", ":")))
        else:
            pool.append(t)
    rng.shuffle(pool)
    return [(l + "\n").encode() for l in pool]


def generate(root, nfiles, pool, rng):
    """nfiles files of TOTAL_MB/nfiles each (whole lines); returns (lines, bytes)."""
    root.mkdir(parents=True)
    per_file = int(TOTAL_MB * 1e6 / nfiles)
    lines = size = 0
    for i in range(nfiles):
        pos = rng.randrange(len(pool))
        chunk, n, b = [], 0, 0
        while b < per_file:
            l = pool[pos]
            chunk.append(l)
            b += len(l)
            n += 1
            pos = (pos + 1) % len(pool)
        (root / f"app-{i:04}.log").write_bytes(b"".join(chunk))
        lines, size = lines + n, size + b
    return lines, size


# ---------------------------------------------------------------------------------------------
# Broker


def create_topic(topic):
    admin = AdminClient({"bootstrap.servers": BROKERS, "log_level": 3})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)


def delete_topic(topic):
    # Memory storage: free the broker's copy. Best effort.
    try:
        admin = AdminClient({"bootstrap.servers": BROKERS, "log_level": 3})   # kept alive until the result
        admin.delete_topics([topic])[topic].result(30)
    except Exception as e:
        print(f"# could not delete topic {topic}: {e}", file=sys.stderr)


class EndProbe:
    """Records in a topic: per partition, the last offset + 1, found by fetching the batch the
    (batch-granular) high watermark points at."""

    def __init__(self, topic):
        self.topic = topic
        self.c = Consumer({"bootstrap.servers": BROKERS, "group.id": f"probe-{uuid.uuid4().hex[:8]}",
                           "enable.auto.commit": False, "fetch.wait.max.ms": 20, "log_level": 3})
        self.ends = {p: 0 for p in range(PARTITIONS)}
        self.hws = {p: -1 for p in range(PARTITIONS)}

    def count(self):
        stale = []
        for p in range(PARTITIONS):
            hw = self.c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10, cached=False)[1]
            if hw != self.hws[p] and hw > 0:
                stale.append(TopicPartition(self.topic, p, max(hw - 1, self.ends[p] - 1, 0)))
            self.hws[p] = hw
        if stale:
            self.c.assign(stale)
            while True:
                msgs = self.c.consume(100000, timeout=0.1)
                if not msgs:
                    break
                for m in msgs:
                    if not m.error():
                        self.ends[m.partition()] = max(self.ends[m.partition()], m.offset() + 1)
            self.c.unassign()
        return sum(self.ends.values())

    def sample(self):
        self.c.assign([TopicPartition(self.topic, p, 0) for p in range(PARTITIONS)])
        msgs = [m for m in self.c.consume(1, timeout=5) if not m.error()]
        self.c.unassign()
        return msgs[0].value().decode(errors="replace") if msgs else None

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


# ---------------------------------------------------------------------------------------------
# Tools


class Loglake:
    name = "loglake"

    def start(self, data, topic, work):
        self.log = work / "agent.log"
        cfg = work / "agent.toml"
        (work / "state").mkdir()
        opts = "".join(f'"{k}" = "{v}"\n' for k, v in PRODUCER.items())
        cfg.write_text(f'[kafka]\nbrokers = "{BROKERS}"\n\n[agent]\nstate_dir = "{work}/state"\n'
                       f'metrics_listen = "127.0.0.1:0"\n[agent.producer_options]\n{opts}\n'
                       f'[[agent.inputs]]\npaths = ["{data}/*.log"]\ntopic = "{topic}"\nread_from = "beginning"\n')
        # The stack's LOGLAKE_* variables would override the file (LOGLAKE_AGENT_*).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGLAKE_"))}
        return subprocess.Popen([BIN, "agent", "--config", str(cfg), "--log", "info"], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), start_new_session=True)

    def metrics(self):
        m = re.search(r"metrics listening.*?addr=\"?([0-9.:\[\]]+)", self.log.read_text(errors="replace"))
        if not m:
            return {}
        try:
            text = urllib.request.urlopen(f"http://{m.group(1)}/metrics", timeout=5).read().decode()
        except OSError as e:
            return {"metrics_error": str(e)}
        out = {}
        for line in text.splitlines():
            mm = re.match(r"(loglake_agent_\w+)(?:\{[^}]*\})?\s+(\S+)$", line)
            if mm and mm.group(1) in ("loglake_agent_lines_read_total", "loglake_agent_records_sent_total",
                                      "loglake_agent_send_errors_total", "loglake_agent_open_files"):
                out[mm.group(1)] = out.get(mm.group(1), 0) + float(mm.group(2))
        return out

    def stopped_note(self, rc):
        tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
        return {"exit_code": rc, "log_tail": tail}


class Rsyslog:
    name = "rsyslog"

    def __init__(self, tmp):
        # Debian's rsyslog-kafka links librdkafka 2.0.2, too old for the broker: the one in
        # the confluent-kafka wheel goes first on the library path.
        import confluent_kafka
        libs = sorted((Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs").glob("librdkafka-*.so.1"))
        if not libs:
            sys.exit("no librdkafka in the confluent-kafka wheel (confluent_kafka.libs)")
        self.libdir = Path(tmp) / "rsyslog-lib"
        self.libdir.mkdir(exist_ok=True)
        (self.libdir / "librdkafka.so.1").unlink(missing_ok=True)
        (self.libdir / "librdkafka.so.1").symlink_to(libs[-1])
        self.rdkafka = libs[-1]

    def start(self, data, topic, work):
        (work / "state").mkdir(parents=True)
        self.stats = work / "impstats.json"
        self.log = work / "rsyslogd.log"
        conf = work / "rsyslog.conf"
        params = ", ".join(f'"{k}={v}"' for k, v in {"enable.idempotence": "true", "acks": "all", **PRODUCER}.items())
        conf.write_text(f"""
global(workDirectory="{work}/state" maxMessageSize="64k")
module(load="impstats" interval="1" format="json" log.syslog="off" log.file="{self.stats}")
module(load="imfile" mode="inotify")
module(load="omkafka")
template(name="bench_json" type="list" option.jsonf="on") {{
  property(outname="timestamp" name="timegenerated" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="$myhostname" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
  property(outname="file" name="$!metadata!filename" format="jsonf")
}}
ruleset(name="bench") {{
  action(type="omkafka" broker=["{BROKERS}"] topic="{topic}" template="bench_json"
         key="{KEY}" partitions.auto="on" closeTimeout="10000" confParam=[{params}])
}}
input(type="imfile" file="{data}/*.log" tag="bench" ruleset="bench"
      freshStartTail="off" readMode="0" addMetadata="on")
""")
        env = dict(os.environ, LD_LIBRARY_PATH=f"{self.libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":"))
        p = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")], env=env,
                             stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), start_new_session=True)
        self.pid = p.pid
        return p

    def metrics(self):
        out = {}
        try:
            maps = Path(f"/proc/{self.pid}/maps").read_text()
            out["librdkafka"] = sorted({l.split()[-1] for l in maps.splitlines() if "librdkafka" in l})
        except OSError:
            pass
        last = None
        if self.stats.exists():
            for line in self.stats.read_text(errors="replace").splitlines():
                if '"omkafka"' in line:
                    last = line
        if last:
            s = json.loads(last[last.index("{"):])
            # impstats' last interval (1s), not the final state; "acked" lags, so it is left out.
            out.update({f"omkafka_{k}": s[k] for k in ("submitted", "failures", "maxoutqsize") if k in s})
        return out

    def stopped_note(self, rc):
        tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
        return {"exit_code": rc, "log_tail": tail}


def run(tool, nfiles, data, lines, nbytes, tmp):
    topic = f"agent-bench-{tool.name}-{nfiles}-{uuid.uuid4().hex[:6]}"
    work = Path(tmp) / topic
    work.mkdir()
    create_topic(topic)
    probe = EndProbe(topic)
    broker = os.environ.get("TANSU_PID")
    broker_cpu0 = proc_cpu(broker) if broker else None
    load = os.getloadavg()[0]
    t0 = time.time()
    p = tool.start(data, topic, work)
    try:
        return measure(tool, p, t0, topic, probe, nfiles, lines, nbytes, broker, broker_cpu0, load)
    finally:
        if p.poll() is None:   # the benchmark itself failed: leave no tailer behind
            p.kill()
            p.wait()
        probe.close()
        delete_topic(topic)


def measure(tool, p, t0, topic, probe, nfiles, lines, nbytes, broker, broker_cpu0, load):
    count = last_count = 0
    last_progress = t0
    cpu = hwm = anon = 0.0
    outcome = "ok"
    while True:
        time.sleep(0.25)
        if p.poll() is not None:
            outcome = f"exited early (code {p.returncode})"
            break
        cpu, (hwm, a) = proc_cpu(p.pid), proc_mem_mib(p.pid)
        anon = max(anon, a)
        count = probe.count()
        now = time.time()
        if count >= lines:
            break
        if count > last_count:
            last_count, last_progress = count, now
        if now - last_progress > STALL_S:
            outcome = f"stalled: no new record for {STALL_S:.0f}s"
            break
        if now - t0 > TIMEOUT_S:
            outcome = f"timed out after {TIMEOUT_S:.0f}s"
            break
    wall = time.time() - t0
    extra = {"loadavg_1m_before": round(load, 2)}
    if broker:
        extra["broker_cpu_s"] = round(proc_cpu(broker) - broker_cpu0, 2)
    if p.poll() is None:
        cpu, (hwm, a) = proc_cpu(p.pid), proc_mem_mib(p.pid)
        anon = max(anon, a)
        extra.update(tool.metrics())
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            extra["note"] = "did not exit within 60s of SIGTERM: killed"
    extra.update(tool.stopped_note(p.returncode))
    if outcome == "ok" and tool.name == "rsyslog":
        extra.update({k: v for k, v in tool.metrics().items() if k.startswith("omkafka_")})
    time.sleep(0.5)
    final = probe.count()
    sample = probe.sample()
    mb = nbytes / 1e6
    return {
        "files": nfiles, "tool": tool.name, "outcome": outcome, "lines": lines, "delivered": count,
        "delivered_after_stop": final, "mb": round(mb, 1), "wall_s": round(wall, 2),
        "lines_per_s": round(count / wall), "mb_per_s": round(mb * count / lines / wall, 1), "cpu_s": round(cpu, 2),
        "mb_per_core": round(mb * count / lines / cpu, 1) if cpu else None, "peak_rss_mib": round(hwm, 1),
        "peak_anon_rss_mib_sampled": round(anon, 1),
        "sample_record": sample[:400] if sample else None, **extra,
    }


def num(v, spec):
    width = spec.split(".")[0].lstrip("<>^")
    return format("-", f">{width}") if v is None else format(v, spec)


def main():
    # SIGTERM unwinds like Ctrl-C: the tailer is stopped and the files removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="loglake-bench-agent-")
    tools = []
    for t in TOOLS:
        tools.append(Loglake() if t == "loglake" else Rsyslog(tmp))
    rng = random.Random(42)
    pool = line_pool(rng)
    results = []
    try:
        for n in FILES:
            data = Path(tmp) / f"data-{n}"
            t0 = time.time()
            lines, nbytes = generate(data, n, pool, rng)
            print(f"# {n} files: {lines} lines, {nbytes / 1e6:.1f} MB written in {time.time() - t0:.1f}s",
                  file=sys.stderr, flush=True)
            for tool in tools:
                results.append(run(tool, n, data, lines, nbytes, tmp))
                print(json.dumps(results[-1]), flush=True)
            subprocess.run(["rm", "-rf", str(data)], check=True)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            subprocess.run(["rm", "-rf", tmp])

    print()
    if "loglake" in TOOLS:
        print(f"loglake binary: {BIN}")
    hdr = (f"{'files':>5} {'tool':8} {'lines':>9} {'MB':>6} {'wall s':>7} {'lines/s':>9} {'MB/s':>6} "
           f"{'CPU s':>6} {'MB/s/core':>9} {'RSS MiB':>7}  outcome")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        note = r["outcome"]
        if r["delivered_after_stop"] != r["lines"]:
            note += f" (topic holds {r['delivered_after_stop']} of {r['lines']} lines)"
        print(f"{r['files']:>5} {r['tool']:8} {r['lines']:>9} {r['mb']:>6.1f} {r['wall_s']:>7.2f} {r['lines_per_s']:>9} "
              f"{r['mb_per_s']:>6.1f} {r['cpu_s']:>6.2f} {num(r['mb_per_core'], '>9.1f')} {r['peak_rss_mib']:>7.1f}  {note}")
    by = {(r["files"], r["tool"]): r for r in results}
    ok = lambda r: r is not None and r["outcome"] == "ok" and r["mb_per_core"]
    print()
    if "loglake" in TOOLS and "rsyslog" in TOOLS:
        print("loglake / rsyslog, MB/s per core:")
        for n in FILES:
            a, b = by.get((n, "loglake")), by.get((n, "rsyslog"))
            ratio = f"{a['mb_per_core'] / b['mb_per_core']:.2f}x" if ok(a) and ok(b) else "n/a"
            print(f"  {n:>5} files: {ratio}")
        print()
    if "loglake" in TOOLS:
        print("Targets (printed, not asserted):")
        mark = lambda good: "PASS" if good else "MISS"
        for n in FILES:
            a = by.get((n, "loglake"))
            v = a["mb_per_core"] if ok(a) else None
            print(f"  {n:>5} files: MB/s per core >= {TARGET_MB_PER_CORE:.0f}: {num(v, '.1f')} {mark(v is not None and v >= TARGET_MB_PER_CORE)}")
            if "rsyslog" in TOOLS:
                b = by.get((n, "rsyslog"))
                rv = a["mb_per_core"] / b["mb_per_core"] if ok(a) and ok(b) else None
                print(f"  {n:>5} files: per core >= {TARGET_VS_RSYSLOG:.0f}x rsyslog: {num(rv, '.2f')}x {mark(rv is not None and rv >= TARGET_VS_RSYSLOG)}")
        a = by.get((TARGET_RSS_FILES, "loglake"))
        if a is not None:
            print(f"  {TARGET_RSS_FILES:>5} files: peak RSS < {TARGET_RSS_MIB:.0f} MiB: {a['peak_rss_mib']:.1f} "
                  f"{mark(a['outcome'] == 'ok' and a['peak_rss_mib'] < TARGET_RSS_MIB)}")


if __name__ == "__main__":
    main()
