#!/usr/bin/python3
"""End-to-end benchmark: JSON log events through the Kafka mock cluster into the real anomalyd
binary (CPU backend), scored by a trained LSTM, alerts to a Kafka topic and a real
redis-server. For each entity count it reports the events/s the daemon consumed, the windows
it scored per second, the alerts both sinks acknowledged, and the latency from the close of a
bucket to the acknowledgement of its alert by both sinks (p50, p90, p99, max), against the
800 ms detection latency of the reference platform (a constant given in the issue, not
measured here).

    bench/e2e.py [--build build-bench] [--entities 10000,100000] [--repeat N] ...

Run through `scripts/bench e2e`, which builds what it needs and prints the machine first.

The run, per entity count (docs/BENCHMARKS.md has the reasons):

1. The generator alone (bench_e2e_gen into a topic nobody reads): what the load can reach.
2. History: T buckets of normal events while the detector has no model, so every entity has a
   full window. Unscored windows cost nothing, so this phase shows ingest alone.
3. The model is published (its CURRENT written); the daemon's store watcher swaps it in.
4. Backlog: buckets produced as fast as the generator goes, with incidents. No partition may
   run further ahead of what the daemon has read of it than half of what the mock cluster
   keeps (5 MiB per partition, older data is dropped silently), so the generator gets
   credits from the daemon's /status. The daemon runs flat out: events/s and windows/s are
   its throughput, the latency is under saturation (a bucket's batch waits behind the ones
   queued before it).
5. Live: one bucket every --pace seconds (auto: twice the time a bucket took in the backlog),
   with incidents: the latency when the daemon keeps up. Here the bench also reports, from the
   outside, the time from the first event of the next bucket being produced (the earliest the
   bucket could close) to the acknowledgement.

The latency of each alert comes from the daemon itself (detect/serving.c): with --log-level
debug every alert acknowledged by its last sink is logged as "alert delivered" with latency_ms,
measured on the monotonic clock from the moment the window store began closing its bucket.
The histogram anomalyd_alert_delivery_seconds has the same figures in buckets.
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
from harness import free_port, parse_metrics  # noqa: E402  (the tests' helpers)
REFERENCE_MS = 800.0  # the Kubeflow/KServe platform's detection latency (the issue)
MOCK_RETENTION = 5 << 20  # bytes kept per partition by librdkafka 2.0.2's mock cluster
RECORD_OVERHEAD = 45  # bytes a record takes there beyond its value (measured: 195 for 153)
AHEAD_BUCKETS = 8  # of event time a partition may be produced ahead of the least read one
FEATURES = ["requests", "errors", "warnings", "latency_mean", "latency_max", "latency_min",
            "bytes", "slow"]
COUNTED = ["requests", "errors", "warnings", "bytes", "slow"]  # filled with zero
STEP_MS = 10000
MODEL = "e2e"

CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 60s
kafka:
  brokers: "{brokers}"
  group_id: bench-e2e
  properties: {{fetch.wait.max.ms: "{fetch_wait_ms}"}}
sources:
  - name: app
    kafka:
      topics: [logs]
      time: {{path: ts, format: unix_ms, max_past: 24h}}
      labels: {{service: service, instance: instance}}
      features:
        requests: count
        errors: count_if status >= 500
        warnings: count_if level == "warn"
        latency_mean: mean latency_ms
        latency_max: max latency_ms
        latency_min: min latency_ms
        bytes: sum bytes
        slow: count_if latency_ms > 500
detectors:
  - name: {model}
    keys: [service, instance]
    features: [{features}]
    step: {step_s}s
    window: {window_s}s
    allowed_lateness: 0s
    max_entities: {max_entities}
    alert: {{for: 2, resolve_for: 2, repeat_interval: 0s}}
sinks:
  kafka: {{topic: alerts}}
  redis: {{url: "redis://127.0.0.1:{redis_port}/0", queue_limit: 1000000}}
scoring:
  backend: cpu
  max_batch: {max_batch}
  cpu_threads: {cpu_threads}
model_store: {{path: {store}, poll_interval: 1s}}
"""


class Failure(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def wait_for(what, check, timeout, interval=0.05, alive=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for p in alive:
            p.check()
        time.sleep(interval)
    raise Failure("timed out after %.0f s waiting for %s" % (timeout, what))


def percentile(sorted_values, q):
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def metric_sum(metrics, name, **labels):
    """The sum of every series of name whose labels include these."""
    total = 0.0
    want = ['%s="%s"' % kv for kv in labels.items()]
    for series, value in metrics.items():
        base = series.split("{", 1)[0]
        if base == name and all(w in series for w in want):
            total += value
    return total


class Processes:
    """Everything the benchmark starts, stopped in reverse order whatever happens."""

    def __init__(self):
        self.procs = []

    def add(self, name, proc, stop_signal=signal.SIGTERM, grace=30):
        self.procs.append((name, proc, stop_signal, grace))
        return proc

    def stop(self, proc):
        for i, (name, p, sig, grace) in enumerate(self.procs):
            if p is proc:
                del self.procs[i]
                return self._stop(name, p, sig, grace)
        return None

    @staticmethod
    def _stop(name, p, sig, grace):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log("  (%s did not stop within %d s: killed)" % (name, grace))
                p.kill()
                p.wait()
        return p.returncode

    def stop_all(self):
        while self.procs:
            name, p, sig, grace = self.procs.pop()
            self._stop(name, p, sig, grace)


class Daemon:
    def __init__(self, procs, binary, config, folder):
        self.log_path = os.path.join(folder, "anomalyd.log")
        self.log_file = open(self.log_path, "w")
        # Into a file, not a pipe: a reader that falls behind must never block the daemon's
        # writes (and so its loop).
        self.proc = procs.add("anomalyd", subprocess.Popen(
            [binary, "-c", config, "--log-format", "json", "--log-level", "debug"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log_file))
        self.address = wait_for("the daemon's admin endpoint", self._address, 30,
                                alive=[self])

    def check(self):
        if self.proc.poll() is not None:
            raise Failure("anomalyd exited with status %s; its log: %s"
                          % (self.proc.returncode, self.log_path))

    def records(self):
        with open(self.log_path) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def _address(self):
        for r in self.records():
            if r.get("msg") == "admin endpoint listening":
                return r["address"]
        return None

    def get(self, path):
        with urllib.request.urlopen("http://%s%s" % (self.address, path), timeout=30) as r:
            return r.read().decode()

    def metrics(self):
        return parse_metrics(self.get("/metrics"))

    def detector(self):
        return json.loads(self.get("/status"))["pipeline"]["detectors"][MODEL]

    def slowest_partition(self):
        """Messages read from the partition read least far."""
        parts = json.loads(self.get("/status"))["pipeline"]["sources"]["app"]["partitions"]
        return min(p["last_processed"] + 1 for p in parts) if parts else 0


class Sampler(threading.Thread):
    """Samples /metrics every interval; optionally feeds a generator its credit: how many
    events it may have produced, so that no partition runs further ahead of the daemon than
    the mock cluster keeps. The generator spreads events evenly over the partitions, so the
    partition read least far bounds them all."""

    def __init__(self, daemon, interval=0.05):
        super().__init__(daemon=True)
        self.d = daemon
        self.interval = interval
        self.samples = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        # (generator's stdin, partitions, messages a partition may run ahead, events the topic
        # held before the generator started)
        self.credit = None
        self.error = None

    def run(self):
        while not self.stopping.is_set():
            try:
                m = self.d.metrics()
            except OSError as e:
                self.error = e
                return
            now = time.monotonic()
            sample = {
                "t": now,
                "events": metric_sum(m, "anomalyd_events_total", result="accepted"),
                "scored": metric_sum(m, "anomalyd_windows_scored_total"),
                "closed": metric_sum(m, "anomalyd_windows_closed_total"),
                "paused": metric_sum(m, "anomalyd_kafka_source_paused"),
                "cpu": metric_sum(m, "process_cpu_seconds_total"),
                "metrics": m,
            }
            with self.lock:
                self.samples.append(sample)
                credit = self.credit
            if credit:
                stdin, partitions, ahead, before = credit
                try:
                    slowest = self.d.slowest_partition()
                    stdin.write("%d\n" % (partitions * (slowest + ahead) - before))
                    stdin.flush()
                except (BrokenPipeError, ValueError, OSError):
                    pass
            time.sleep(self.interval)

    def last(self):
        with self.lock:
            return self.samples[-1] if self.samples else None

    def between(self, t0, t1):
        with self.lock:
            return [s for s in self.samples if t0 <= s["t"] <= t1]


def crossing(samples, key, value):
    """The time (interpolated between samples) when samples[key] first reached value."""
    prev = None
    for s in samples:
        if s[key] >= value:
            if prev is None or s[key] == prev[key]:
                return s["t"]
            frac = (value - prev[key]) / (s[key] - prev[key])
            return prev["t"] + frac * (s["t"] - prev["t"])
        prev = s
    return None


def run_generator(procs, gen, args, sampler=None, credit=None):
    """Runs bench_e2e_gen; returns its summary and the per-bucket start times it printed."""
    proc = procs.add("bench_e2e_gen", subprocess.Popen(
        [gen, *args] + (["--credit"] if sampler else []),
        stdin=subprocess.PIPE if sampler else subprocess.DEVNULL, stdout=subprocess.PIPE,
        text=True), stop_signal=signal.SIGKILL)
    if sampler:
        with sampler.lock:
            sampler.credit = (proc.stdin, *credit)
    # Not communicate(): it would close stdin, which the generator reads as "no limit".
    out = proc.stdout.read()
    proc.wait()
    if sampler:
        with sampler.lock:
            sampler.credit = None
    procs.stop(proc)
    if proc.returncode != 0:
        raise Failure("bench_e2e_gen failed (status %d)" % proc.returncode)
    buckets, summary = {}, None
    for line in out.splitlines():
        doc = json.loads(line)
        if "bucket" in doc:
            buckets[doc["bucket"]] = doc["wall_ms"]
        else:
            summary = doc
    return summary, buckets


def model_for(cache, gen, T, hidden, per_bucket, mode):
    """A trained model version for these shapes and mode, made once and kept in the cache."""
    # The trainer's code is part of the key: a model from an older trainer may not load.
    digest = hashlib.sha256()
    for name in ("anomalyd_train.py", "stream_training.py", "safetensors_io.py"):
        with open(os.path.join(SOURCE, "train", name), "rb") as f:
            digest.update(f.read())
    key = "T%d-H%d-K%d-step%d-%s-%s" % (T, hidden, per_bucket, STEP_MS, mode,
                                        digest.hexdigest()[:12])
    folder = os.path.join(cache, key)
    version = os.path.join(folder, MODEL, "v1")
    if os.path.exists(os.path.join(version, "manifest.json")):
        return version
    log("training the model (%s, once; kept in %s)" % (key, cache))
    tmp = tempfile.mkdtemp(prefix="e2e-train-")
    try:
        csv = os.path.join(tmp, "history.csv")
        subprocess.run([gen, "--csv", csv, "--entities", "256", "--step-ms", str(STEP_MS),
                        "--t0-ms", "0", "--buckets", "0:%d" % (T + 136), "--per-bucket",
                        str(per_bucket)], check=True)
        store = os.path.join(tmp, "store")
        fill = ",".join(["carry"] + ["app.%s=zero" % f for f in COUNTED])
        r = subprocess.run(
            ["/usr/bin/python3", os.path.join(SOURCE, "train", "anomalyd_train.py"), "--csv",
             csv, "--window", str(T), "--step-ms", str(STEP_MS), "--fill", fill,
             "--features", ",".join("app." + f for f in FEATURES), "--store", store,
             "--model", MODEL, "--version", "v1", "--hidden", str(hidden), "--epochs", "4",
             "--seed", "1", "--threads", str(os.cpu_count() or 1), "--max-windows", "20000",
             "--mode", mode],
            capture_output=True, text=True)
        if r.returncode != 0:
            raise Failure("the trainer failed: " + r.stderr)
        os.makedirs(os.path.dirname(version), exist_ok=True)
        shutil.copytree(os.path.join(store, MODEL, "v1"), version + ".tmp")
        os.replace(version + ".tmp", version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return version


def stats(values):
    v = sorted(values)
    return {"n": len(v), "p50": percentile(v, 50), "p90": percentile(v, 90),
            "p99": percentile(v, 99), "max": v[-1] if v else float("nan")}


def fmt_latency(name, s):
    if not s["n"]:
        return "  %-34s no alerts" % name
    return ("  %-34s p50 %7.1f  p90 %7.1f  p99 %7.1f  max %7.1f ms  (%d alerts)  "
            "p99/800 ms = %.2f"
            % (name, s["p50"], s["p90"], s["p99"], s["max"], s["n"], s["p99"] / REFERENCE_MS))


def histogram_mean(end, name, start=None):
    """The mean of what a histogram observed between two scrapes (from the start without
    start)."""
    start = start or {}
    total = metric_sum(end, name + "_sum") - metric_sum(start, name + "_sum")
    count = metric_sum(end, name + "_count") - metric_sum(start, name + "_count")
    return total / count if count else float("nan")


def histogram_p99(end, name, start):
    """The bound of the first bucket holding the 99th percentile of what a histogram observed
    between two scrapes (an upper bound, as coarse as its buckets)."""
    bounds = []
    for series, value in end.items():
        if series.startswith(name + "_bucket{") and 'le="' in series:
            le = series.split('le="', 1)[1].split('"', 1)[0]
            bounds.append((float("inf") if le == "+Inf" else float(le),
                           value - start.get(series, 0.0)))
    bounds.sort()
    if not bounds or bounds[-1][1] <= 0:
        return float("nan")
    for le, count in bounds:
        if count >= 0.99 * bounds[-1][1]:
            return le
    return float("nan")


def phase_means(start, end):
    """Where a phase's time went, from the daemon's histograms: ms per close, per batch
    scored, per Redis reply and Kafka delivery report."""
    return {
        "close_ms": 1000 * histogram_mean(end, "anomalyd_window_close_duration_seconds", start),
        "score_ms": 1000 * histogram_mean(end, "anomalyd_scoring_duration_seconds", start),
        "batch_windows": histogram_mean(end, "anomalyd_scoring_batch_windows", start),
        "redis_ms": 1000 * histogram_mean(end, "anomalyd_redis_command_duration_seconds", start),
        "kafka_ms": 1000 * histogram_mean(end, "anomalyd_kafka_sink_delivery_duration_seconds",
                                          start),
        "redis_p99_ms": 1000 * histogram_p99(end, "anomalyd_redis_command_duration_seconds",
                                             start),
        "kafka_p99_ms": 1000 * histogram_p99(
            end, "anomalyd_kafka_sink_delivery_duration_seconds", start),
    }


class Run:
    """One entity count, start to finish."""

    def __init__(self, a, n, procs, folder):
        self.a, self.n, self.procs, self.folder = a, n, procs, folder
        self.T = a.window
        self.t0 = (int(time.time() * 1000) - 6 * 3600 * 1000) // STEP_MS * STEP_MS
        self.gen = os.path.join(a.build, "bench", "bench_e2e_gen")

    def gen_args(self, topic, first, end, share=None, pace=None):
        share = self.a.incident_share if share is None else share
        args = ["--brokers", self.bootstrap, "--topic", topic, "--partitions",
                str(self.a.partitions), "--entities", str(self.n), "--step-ms", str(STEP_MS),
                "--t0-ms", str(self.t0), "--buckets", "%d:%d" % (first, end), "--per-bucket",
                str(self.a.per_bucket), "--incident-from", str(self.T + 1), "--incident-every",
                "6", "--incident-len", "2", "--incident-share", str(share)]
        return args + (["--pace", str(pace)] if pace else [])

    def start_servers(self, version):
        mock = self.procs.add("kafka-mock", subprocess.Popen(
            [os.path.join(self.a.build, "tests", "tools", "kafka-mock"), "--brokers", "3",
             "--topic", "logs:%d" % self.a.partitions, "--topic", "gen:%d" % self.a.partitions,
             "--topic", "alerts:4"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.folder, "kafka-mock.log"), "w"), text=True))
        self.bootstrap = mock.stdout.readline().strip()
        if not self.bootstrap:
            raise Failure("kafka-mock did not start; see its log in " + self.folder)
        self.redis_port = free_port()
        self.procs.add("redis-server", subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save",
             "", "--appendonly", "no", "--dir", self.folder, "--logfile",
             os.path.join(self.folder, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for("redis-server", lambda: subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), "PING"], capture_output=True,
            text=True).stdout.strip() == "PONG", 20, interval=0.1)
        self.store = os.path.join(self.folder, "models")
        os.makedirs(os.path.join(self.store, MODEL))
        shutil.copytree(version, os.path.join(self.store, MODEL, "v1"))
        config = os.path.join(self.folder, "anomalyd.yaml")
        with open(config, "w") as f:
            f.write(CONFIG.format(
                brokers=self.bootstrap, model=MODEL, step_s=STEP_MS // 1000,
                window_s=STEP_MS // 1000 * self.T,
                features=", ".join("app." + f for f in FEATURES), max_entities=2 * self.n,
                redis_port=self.redis_port, max_batch=self.a.max_batch,
                cpu_threads=self.a.cpu_threads, store=self.store,
                fetch_wait_ms=self.a.fetch_wait_ms))
        return config

    def wait_done(self, d, sampler, events, last_bucket, timeout):
        """Until the daemon has read `events`, scored through last_bucket and has every alert
        acknowledged; returns the time the last of those happened (sampled)."""
        progress = {"events": -1, "at": time.monotonic()}

        def read_all():
            seen = (sampler.last() or {}).get("events", 0)
            if seen != progress["events"]:
                progress.update(events=seen, at=time.monotonic())
            elif time.monotonic() - progress["at"] > 60:
                lost = any("Offset out of range" in r.get("message", "") for r in d.records())
                raise Failure("the daemon read %d of %d events and then nothing for 60 s%s"
                              % (seen, events, "; the mock cluster dropped events before they "
                                 "were read (its retention)" if lost else ""))
            return seen >= events
        wait_for("the daemon to read every event", read_all, timeout, alive=[d])

        def done():
            s = d.detector()["scoring"]
            return (s.get("last_bucket_start_ms", -1) >= self.t0 + last_bucket * STEP_MS
                    and s["in_flight"] == 0 and
                    d.detector()["alerts"]["unacknowledged"] == 0)
        wait_for("bucket %d to be scored and its alerts acknowledged" % last_bucket, done,
                 timeout, interval=0.05, alive=[d])
        finished = time.monotonic()
        # The phase's figures come from the samples: one must show the end.
        wait_for("a sample of /metrics", lambda: sampler.last()["t"] > finished, 30, alive=[d])
        return finished

    def phase_rates(self, sampler, events_from, events_to, t_from, t_to, m_from, m_to):
        """A phase's rates: counts from the /metrics scrapes before it began (m_from) and after
        it ended (m_to), times from the samples in between."""
        samples = sampler.between(t_from, t_to + 1)
        start = crossing(samples, "events", events_from + 1) or t_from
        end = crossing(samples, "events", events_to) or t_to
        first, last = samples[0], samples[-1]
        scored_before = metric_sum(m_from, "anomalyd_windows_scored_total")
        scored = metric_sum(m_to, "anomalyd_windows_scored_total") - scored_before
        # From the phase's first event read to its last window scored.
        scored_to = crossing(samples, "scored", scored_before + scored) or t_to
        cpu = last["cpu"] - first["cpu"]
        paused = sum(1 for s in samples if s["paused"] > 0) / max(1, len(samples))
        return {
            "events_per_second": (events_to - events_from) / max(1e-9, end - start),
            "ingest_seconds": end - start,
            "windows_per_second": scored / max(1e-9, scored_to - start) if scored else 0.0,
            "windows": scored,
            "daemon_cpu_cores": cpu / max(1e-9, last["t"] - first["t"]),
            "paused_share": paused,
        }

    def run(self, version):
        a = self.a
        config = self.start_servers(version)
        result = {"entities": self.n}

        # 1. The generator alone, into a topic nobody reads: about 1M events (within the
        # retention) or a whole number of buckets.
        buckets = max(1, min(64, 1000000 // (self.n * a.per_bucket)))
        gen_alone, _ = run_generator(self.procs, self.gen,
                                     self.gen_args("gen", 0, buckets, share=0))
        result["generator"] = gen_alone
        log("  generator alone: %s events in %.2f s = %.0f events/s (%.0f bytes/event)"
            % (gen_alone["events"], gen_alone["seconds"], gen_alone["events_per_second"],
               gen_alone["bytes"] / gen_alone["events"]))
        # How far a partition may run ahead of the one the daemon has read least far: half of
        # what the mock keeps, and at most AHEAD_BUCKETS buckets of event time. The daemon reads
        # partitions unevenly, and a bucket closes only when the slowest has passed it: an
        # entity on a partition read 16 buckets ahead has its next events refused (too_far,
        # the store's bound on open buckets), which a backlog of unevenly read partitions does
        # in production too (docs/BENCHMARKS.md).
        record = gen_alone["bytes"] / gen_alone["events"] + RECORD_OVERHEAD
        per_bucket = self.n * a.per_bucket / a.partitions
        self.ahead = int(min(0.5 * MOCK_RETENTION / record, AHEAD_BUCKETS * per_bucket))

        d = Daemon(self.procs, os.path.join(a.build, "anomalyd"), config, self.folder)
        wait_for("the partitions to be assigned", lambda: metric_sum(
            d.metrics(), "anomalyd_kafka_assigned_partitions") == a.partitions, 60,
            interval=0.2, alive=[d])
        sampler = Sampler(d)
        sampler.start()
        try:
            self._phases(d, sampler, result)
        finally:
            sampler.stopping.set()
            sampler.join()
            code = self.procs.stop(d.proc)
        if code != 0:  # a stop that overran, a crash, a sanitizer's report
            raise Failure("anomalyd exited with status %s; its log: %s" % (code, d.log_path))
        return result

    def _phases(self, d, sampler, result):
        a, T = self.a, self.T
        S, P = a.backlog_buckets, a.live_buckets
        # 2. History without a model: every entity gets a whole window of data.
        t, start = time.monotonic(), d.metrics()
        hist, _ = run_generator(self.procs, self.gen, self.gen_args("logs", 0, T), sampler,
                                (self.a.partitions, self.ahead, 0))
        t_hist = self.wait_done(d, sampler, hist["events"], T - 2, 600)
        result["history"] = dict(self.phase_rates(sampler, 0, hist["events"], t, t_hist, start,
                                                  d.metrics()),
                                 events=hist["events"], generator=hist)
        log("  history (no model, %d buckets): %d events, %.0f events/s consumed"
            % (T, hist["events"], result["history"]["events_per_second"]))

        # 3. The model.
        with open(os.path.join(self.store, MODEL, "CURRENT.tmp"), "w") as f:
            f.write("v1\n")
        os.replace(os.path.join(self.store, MODEL, "CURRENT.tmp"),
                   os.path.join(self.store, MODEL, "CURRENT"))
        wait_for("the model to be served", lambda: metric_sum(
            d.metrics(), "anomalyd_model_info", version="v1") == 1, 60, interval=0.1,
            alive=[d])

        # 4. Backlog: buckets T .. T+S (the last one only closes T+S-1), as fast as it goes.
        consumed = hist["events"]
        t, start = time.monotonic(), d.metrics()
        back, _ = run_generator(self.procs, self.gen, self.gen_args("logs", T, T + S + 1),
                                sampler, (self.a.partitions, self.ahead, consumed))
        t_back = self.wait_done(d, sampler, consumed + back["events"], T + S - 1, 1800)
        end = d.metrics()
        rates = self.phase_rates(sampler, consumed, consumed + back["events"], t, t_back, start,
                                 end)
        result["backlog"] = dict(rates, events=back["events"], generator=back, buckets=S,
                                 metrics_end=end, means=phase_means(start, end))
        consumed += back["events"]
        log("  backlog (%d buckets): %d events, %.0f events/s consumed, %.0f windows/s scored "
            "(generator waited %.1f s for the daemon; daemon %.2f cores; paused %.0f%% of "
            "the time)" % (S, back["events"], rates["events_per_second"],
                           rates["windows_per_second"], back["credit_wait_seconds"],
                           rates["daemon_cpu_cores"], 100 * rates["paused_share"]))

        # 5. Live: one bucket every pace seconds, T+S+1 .. T+S+P+1 (the last one closes the
        # one before).
        pace = a.pace
        if pace == "auto":
            per_bucket = self.n / max(1.0, rates["windows_per_second"])
            pace = max(1.0, round(2 * per_bucket, 1))
        pace = float(pace)
        t, start = time.monotonic(), d.metrics()
        live, starts = run_generator(
            self.procs, self.gen, self.gen_args("logs", T + S + 1, T + S + P + 2, pace=pace),
            sampler, (self.a.partitions, self.ahead, consumed))
        t_live = self.wait_done(d, sampler, consumed + live["events"], T + S + P, 600)
        end = d.metrics()
        rates = self.phase_rates(sampler, consumed, consumed + live["events"], t, t_live, start,
                                 end)
        result["live"] = dict(rates, events=live["events"], generator=live, buckets=P,
                              pace=pace, bucket_starts=starts, metrics_end=end,
                              means=phase_means(start, end))
        log("  live (%d buckets, one every %.1f s): %d events, %.0f windows scored"
            % (P, pace, live["events"], rates["windows"]))
        result["latency"], delivered = self.latencies(d, result)
        m = result["live"]["metrics_end"]
        result["alerts"] = {
            "notified": metric_sum(m, "anomalyd_alert_notifications_total"),
            "redis_written": metric_sum(m, "anomalyd_redis_alerts_total", result="written"),
            "kafka_delivered": metric_sum(m, "anomalyd_kafka_sink_alerts_total",
                                          result="delivered"),
            "latency_histogram_count": metric_sum(m, "anomalyd_alert_delivery_seconds_count"),
            "latency_records": delivered,
        }
        # Where windows went: every one closed is scored here unless something was dropped.
        result["windows"] = {k: metric_sum(m, name, **labels) for k, (name, labels) in {
            "closed": ("anomalyd_windows_closed_total", {}),
            "scored": ("anomalyd_windows_scored_total", {}),
            "unscored_no_model": ("anomalyd_windows_unscored_total", {"reason": "no_model"}),
            "unscored_no_data": ("anomalyd_windows_unscored_total", {"reason": "no_data"}),
            "unscored_failed": ("anomalyd_windows_unscored_total", {"reason": "failed"}),
            "late_events": ("anomalyd_window_events_late_total", {}),
            "refused_events": ("anomalyd_window_events_refused_total", {}),
            "stream_steps": ("anomalyd_scoring_stream_windows_total", {"how": "step"}),
            "stream_warm_ups": ("anomalyd_scoring_stream_windows_total", {"how": "warm_up"}),
        }.items()}
        return result

    def latencies(self, d, result):
        T, S, P = self.T, self.a.backlog_buckets, self.a.live_buckets
        back, live, e2e = [], [], []
        starts = result["live"]["bucket_starts"]
        delivered = 0
        for r in d.records():
            if r.get("msg") != "alert delivered":
                continue
            delivered += 1
            b = (r["bucket_start_ms"] - self.t0) // STEP_MS
            if T <= b < T + S:
                back.append(r["latency_ms"])
            elif T + S <= b <= T + S + P:
                live.append(r["latency_ms"])
                if b + 1 in starts:
                    acked = datetime.datetime.strptime(
                        r["ts"], "%Y-%m-%dT%H:%M:%S.%fZ" if "." in r["ts"]
                        else "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
                    e2e.append(acked.timestamp() * 1000 - starts[b + 1])
        return ({"backlog": stats(back), "live": stats(live),
                 "live_from_next_bucket": stats(e2e)}, delivered)


def report(res):
    n = res["entities"]
    log("")
    log("entities %d, %s model (load average at the end: %.2f %.2f %.2f)"
        % (n, res.get("mode", "windowed"), *res["load_after"]))
    g = res["generator"]
    log("  generator alone             %10.0f events/s" % g["events_per_second"])
    h = res["history"]
    log("  ingest, no model            %10.0f events/s consumed (%d events)"
        % (h["events_per_second"], h["events"]))
    b = res["backlog"]
    log("  backlog, scored, both sinks %10.0f events/s consumed, %.0f windows/s scored, "
        "%d windows" % (b["events_per_second"], b["windows_per_second"], b["windows"]))
    al = res["alerts"]
    log("  alerts                      %10d notified; Redis wrote %d, Kafka delivered %d"
        % (al["notified"], al["redis_written"], al["kafka_delivered"]))
    for phase in ("backlog", "live"):
        mm = res[phase]["means"]
        log("  %-7s means: close %.1f ms, scoring %.1f ms per batch of %.0f windows, Redis "
            "reply %.1f ms (p99 <= %g), Kafka report %.1f ms (p99 <= %g)"
            % (phase, mm["close_ms"], mm["score_ms"], mm["batch_windows"], mm["redis_ms"],
               mm["redis_p99_ms"], mm["kafka_ms"], mm["kafka_p99_ms"]))
    w = res["windows"]
    if w["refused_events"] or w["late_events"] or w["unscored_no_data"] or w["unscored_failed"]:
        log("  WARNING: the daemon refused %d events and dropped %d late ones; %d windows had no "
            "data, %d failed: the figures above are not of the whole load"
            % (w["refused_events"], w["late_events"], w["unscored_no_data"],
               w["unscored_failed"]))
    lat = res["latency"]
    log("  bucket close -> acknowledged by both sinks:")
    log(fmt_latency("backlog (saturated)", lat["backlog"]))
    log(fmt_latency("live (one bucket / %.1f s)" % res["live"]["pace"], lat["live"]))
    log(fmt_latency("live, from next bucket's 1st event", lat["live_from_next_bucket"]))


def machine():
    """What scripts/bench prints, for runs without it."""
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1048576
    commit = subprocess.run(["git", "-C", SOURCE, "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    log("machine: %s; %d cores; %.0f GiB; commit %s" % (model, os.cpu_count() or 0, mem, commit))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(SOURCE, "build-bench"))
    ap.add_argument("--entities", default="10000,100000")
    ap.add_argument("--window", type=int, default=64, help="T, buckets per window")
    ap.add_argument("--hidden", type=int, default=64, help="the LSTM's hidden size")
    ap.add_argument("--per-bucket", type=int, default=2, help="events per entity and bucket")
    ap.add_argument("--partitions", type=int, default=64)
    ap.add_argument("--backlog-buckets", type=int, default=12)
    ap.add_argument("--live-buckets", type=int, default=12)
    ap.add_argument("--pace", default="auto", help="seconds between live buckets, or auto")
    ap.add_argument("--incident-share", type=float, default=0.02)
    ap.add_argument("--max-batch", type=int, default=131072)
    ap.add_argument("--cpu-threads", type=int, default=0)
    # The mock cluster holds a fetch that finds no data for all of fetch.wait.max.ms (500 ms
    # by default) even when data arrives meanwhile; a real broker answers as soon as it has
    # data. 10 ms keeps that artefact out of the live figures.
    ap.add_argument("--fetch-wait-ms", type=int, default=10,
                    help="the consumer's fetch.wait.max.ms (librdkafka's default: 500)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--modes", default="windowed,stream",
                    help="the models' modes to run, each entity count with each (docs/models.md)")
    ap.add_argument("--json", help="also write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (logs)")
    a = ap.parse_args()
    cache = os.path.join(a.build, "e2e-models")

    procs = Processes()

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    # SIGINT too: a shell starts background jobs with it ignored, and Python keeps that.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    results = []
    machine()
    try:
        modes = [m.strip() for m in a.modes.split(",") if m.strip()]
        versions = {m: model_for(cache, os.path.join(a.build, "bench", "bench_e2e_gen"),
                                 a.window, a.hidden, a.per_bucket, m) for m in modes}
        log("model: T=%d, H=%d, F=%d, step %d s; %d partitions, %d events per entity and "
            "bucket, incidents on %.0f%% of the entities" % (a.window, a.hidden, len(FEATURES),
                                                              STEP_MS // 1000, a.partitions,
                                                              a.per_bucket,
                                                              100 * a.incident_share))
        for n, i, mode in [(int(x), i, m) for x in a.entities.split(",")
                           for i in range(a.repeat) for m in modes]:
            folder = tempfile.mkdtemp(prefix="anomalyd-e2e-")
            log("")
            log("== %d entities, %s model, run %d/%d (load: %s)"
                % (n, mode, i + 1, a.repeat, os.getloadavg()))
            try:
                res = Run(a, n, procs, folder).run(versions[mode])
                res["load_after"] = os.getloadavg()
                res["mode"] = mode
            finally:
                procs.stop_all()
                if a.keep:
                    log("  kept " + folder)
                else:
                    shutil.rmtree(folder, ignore_errors=True)
            report(res)
            results.append(res)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (Failure, subprocess.CalledProcessError) as e:
        log("e2e: %s" % e)
        return 1
    finally:
        procs.stop_all()
    if a.json:
        for r in results:
            for phase in ("backlog", "live"):
                r[phase].pop("metrics_end", None)
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
