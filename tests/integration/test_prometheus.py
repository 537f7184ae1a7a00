#!/usr/bin/python3
"""The Prometheus source (stream/prom_source.c) against a real Prometheus.

prom-probe runs the source and prints every sample it hands on. Prometheus serves data with
exactly known values, written as OpenMetrics text and turned into TSDB blocks by promtool, so
every sample and time the probe prints is compared with what PromQL must return for it. Then
the same run goes through faults (Prometheus down at start, a server that never answers, a
loopback server that misbehaves for its first requests before it proxies to Prometheus) and
must end with exactly the same data; basic auth, a bearer token, extra headers and TLS with a
CA and client certificates are checked against Prometheus' own web config or a recording
server.

Run by ctest with AD_BUILD_DIR and AD_SOURCE_DIR set; skips (77) without prometheus or
promtool. Standard library only. Everything listens on loopback, lives in a temporary folder,
and every process started is killed on exit.
"""

import atexit
import base64
import http.client
import http.server
import json
import math
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
import warnings

BUILD = os.environ.get("AD_BUILD_DIR", "build")
SOURCE = os.environ.get("AD_SOURCE_DIR", ".")
PROBE = os.path.join(BUILD, "tests", "tools", "prom-probe")

STEP = 10                 # seconds between samples in the data, and the grid's step
SPAN = 30 * 60            # the data covers T0 .. T0 + SPAN
LOOKBACK = 300            # Prometheus' default --query.lookback-delta
DELAY = 30                # sources[].prometheus.delay in the configs below
GAP = (90, 151)           # instance "c" has no samples strictly between these indexes
NAN_INDEX = 60            # instance "b" is NaN here

# The clock of every probe run starts at NOW and the first range ends at NOW - DELAY, so the
# runs below cover (T0 + 450, T0 + 1650]: the NaN, the gap (and how lookback fills its first
# five minutes), and the gap's end.
BACKFILL = 20 * 60

PASSWORD = "s3cret-pw"
# bcrypt of PASSWORD (cost 4), used when Python's crypt module cannot make one.
PASSWORD_BCRYPT = "$2b$04$wWdfcQdzkbdgRHKLCZu.Aujy4D3lWS5eO.AzE2qGCpQz93jU9T63y"

PROCS = []
TMP = None
ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
# urllib without proxies from the environment: everything here is on loopback.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def kill_all():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    PROCS.clear()


atexit.register(kill_all)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


# ---- the data and what PromQL must make of it ----

def fmt(v):
    """A value as the probe prints it: non-finite ones as Prometheus spells them."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


def raw_series(t0):
    """{labels (sorted tuple): [(t seconds, value)]}. Every value is a multiple of 1/4, so
    sums are exact in any order."""
    a, b, c, special = [], [], [], []
    for i in range(SPAN // STEP + 1):
        t = t0 + i * STEP
        a.append((t, i * 0.25))
        b.append((t, math.nan if i == NAN_INDEX else 100 + (i % 7) * 1.5))
        if not GAP[0] < i < GAP[1]:
            c.append((t, -i * 0.5))
        special.append((t, [math.inf, -math.inf, float(i), math.nan][i % 4]))
    gauge = (("__name__", "demo_gauge"), ("job", "demo"))
    return {
        tuple(sorted(gauge + (("instance", "a"),))): a,
        tuple(sorted(gauge + (("instance", "b"),))): b,
        tuple(sorted(gauge + (("instance", "c"),))): c,
        (("__name__", "demo_special"), ("instance", "a")): special,
    }


def write_openmetrics(path, t0):
    out = []
    by_name = {}
    for labels, samples in raw_series(t0).items():
        by_name.setdefault(dict(labels)["__name__"], []).append((labels, samples))
    for name, series in by_name.items():
        out.append("# TYPE %s gauge" % name)
        for labels, samples in series:
            text = ",".join('%s="%s"' % kv for kv in labels if kv[0] != "__name__")
            for t, v in samples:
                value = fmt(v) if isinstance(fmt(v), str) else repr(v)
                out.append("%s{%s} %s %d" % (name, text, value, t))
    out.append("# EOF")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def lookup(samples, t):
    """The sample an instant selector sees at t: the latest in [t - 5m, t]. Prometheus 2.x
    includes the left end of the lookback window (3.0 no longer does)."""
    found = None
    for ts, v in samples:
        if t - LOOKBACK <= ts <= t:
            found = v
        elif ts > t:
            break
    return found


def expected(query, t0, start_ms, end_ms, step_ms):
    """{(query, labels, t_ms): value} for every step of (start_ms, end_ms]."""
    series = raw_series(t0)
    out = {}
    t_ms = start_ms + step_ms
    while t_ms <= end_ms:
        t = t_ms / 1000
        if query in ("gauge", "special"):
            name = "demo_gauge" if query == "gauge" else "demo_special"
            for labels, samples in series.items():
                if dict(labels)["__name__"] != name:
                    continue
                v = lookup(samples, t)
                if v is not None:
                    out[(query, labels, t_ms)] = fmt(v)
        elif query == "by_job":
            values = [lookup(s, t) for l, s in series.items()
                      if dict(l)["__name__"] == "demo_gauge"]
            values = [v for v in values if v is not None]
            if values:
                out[(query, (("job", "demo"),), t_ms)] = fmt(math.fsum(values)
                                                            if not any(map(math.isnan, values))
                                                            else math.nan)
        else:
            raise ValueError(query)
        t_ms += step_ms
    return out


# ---- processes ----

def start_prometheus(blocks, web_config=None, scheme="http", ssl_context=None, auth=None,
                     port=None):
    """Prometheus on a copy of the blocks; returns (process, port)."""
    port = port or free_port()
    data = tempfile.mkdtemp(prefix="tsdb-", dir=TMP)
    shutil.rmtree(data)
    shutil.copytree(blocks, data)
    config = os.path.join(TMP, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  evaluation_interval: 1m\n")
    args = ["prometheus", "--config.file=" + config, "--storage.tsdb.path=" + data,
            "--web.listen-address=127.0.0.1:%d" % port, "--storage.tsdb.retention.time=30d",
            "--log.level=warn"]
    if web_config:
        args.append("--web.config.file=" + web_config)
    log = open(os.path.join(TMP, "prometheus-%d.log" % port), "w")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=ENV)
    log.close()
    PROCS.append(p)

    def ready():
        if p.poll() is not None:
            raise AssertionError("prometheus exited; see " + log.name)
        req = urllib.request.Request("%s://127.0.0.1:%d/-/ready" % (scheme, port))
        if auth:
            req.add_header("Authorization", auth)
        try:
            opener = OPENER
            if ssl_context:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                     urllib.request.HTTPSHandler(
                                                         context=ssl_context))
            with opener.open(req, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False
    wait_for("prometheus on port %d" % port, ready)
    return p, port


def stop(p):
    if p.poll() is None:
        p.kill()
    p.wait()


class Probe:
    """A prom-probe run: samples, final watermarks and status, metrics, stderr records."""

    def __init__(self, config_text, source=None, step="10s", backfill=BACKFILL, now_ms=None,
                 until_ms=None, timeout=30, env=None, extra=(), wait=True):
        self.dir = tempfile.mkdtemp(prefix="probe-", dir=TMP)
        self.config = os.path.join(self.dir, "probe.yaml")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.metrics_file = os.path.join(self.dir, "metrics.txt")
        args = [PROBE, "-c", self.config, "--step", step, "--backfill", "%ds" % backfill,
                "--now", str(now_ms), "--until", str(until_ms), "--timeout", str(timeout),
                "--min-backoff", "100ms", "--max-backoff", "400ms",
                "--metrics", self.metrics_file, "--log-format", "json", *extra]
        if source:
            args += ["--source", source]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**ENV, **(env or {})})
        PROCS.append(self.proc)
        self.err_lines = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()
        if wait:
            self.wait()

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self.lock:
                self.err_lines.append(line)

    def records(self):
        with self.lock:
            lines = list(self.err_lines)
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait(self):
        # stdout here, stderr in the reader thread: communicate() would race it for stderr.
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        self.rc = self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        self.proc.stderr.close()
        lines = out.splitlines()
        self.stderr = "".join(self.err_lines)
        if not lines:
            raise AssertionError("prom-probe printed nothing (status %d): %s"
                                 % (self.rc, self.stderr))
        self.final = json.loads(lines[-1])
        self.samples = {}
        for line in lines[:-1]:
            s = json.loads(line)
            key = (s["query"], tuple(sorted(s["labels"].items())), s["t"])
            if key in self.samples:
                raise AssertionError("sample handed on twice: %s" % (key,))
            self.samples[key] = s["v"]
        self.metrics = {}
        if os.path.exists(self.metrics_file):
            with open(self.metrics_file) as f:
                for line in f:
                    m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line.strip())
                    if m and not line.startswith("#"):
                        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
                        self.metrics[(m.group(1), labels)] = float(m.group(3))
        return self

    def metric_sum(self, name, **match):
        total = 0.0
        for (n, labels), v in self.metrics.items():
            d = dict(labels)
            if n == name and all(d.get(k) == val for k, val in match.items()):
                total += v
        return total

    def errors(self):
        """{reason: count} over all queries, zero counts left out."""
        out = {}
        for (n, labels), v in self.metrics.items():
            if n == "anomalyd_prometheus_errors_total" and v:
                reason = dict(labels)["reason"]
                out[reason] = out.get(reason, 0) + v
        return out


# ---- loopback servers in front of Prometheus ----

class FaultyServer(http.server.ThreadingHTTPServer):
    """Misbehaves (mode) for its first `bad` requests, then proxies to Prometheus. Records
    every request's target and headers."""

    daemon_threads = True

    def __init__(self, upstream_port, mode="proxy", bad=0):
        super().__init__(("127.0.0.1", 0), FaultyHandler)
        self.upstream_port = upstream_port
        self.mode = mode
        self.bad = bad
        self.count = 0
        self.requests = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def close(self):
        self.release.set()
        self.shutdown()
        self.server_close()


class FaultyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            n = srv.count
            srv.count += 1
            srv.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        mode = srv.mode if n < srv.bad else "proxy"
        getattr(self, "mode_" + mode)()

    def send(self, status, body, content_type="application/json", length=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def upstream(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        conn.request("GET", self.path)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, body

    def mode_proxy(self):
        status, body = self.upstream()
        self.send(status, body)

    def mode_warning(self):
        _, body = self.upstream()
        doc = json.loads(body)
        doc["warnings"] = ["injected warning"]
        self.send(200, json.dumps(doc).encode())

    def mode_garbage(self):
        self.send(200, b"this is not JSON", "text/plain")

    def mode_truncated(self):
        _, body = self.upstream()
        self.send(200, body[:len(body) // 2])

    def mode_short(self):
        # Content-Length promises the whole body; the connection ends halfway.
        _, body = self.upstream()
        self.send(200, body[:len(body) // 2], length=len(body))
        self.close_connection = True

    def mode_reset(self):
        # Half the body, then a reset (RST) instead of the rest: a network failure.
        _, body = self.upstream()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2])
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
        os.close(self.connection.detach())
        self.close_connection = True

    def mode_vector(self):
        self.send(200, b'{"status":"success","data":{"resultType":"vector","result":[]}}')

    def mode_error500(self):
        self.send(500, b'{"status":"error","errorType":"internal","error":"something broke"}')

    def mode_error200(self):
        self.send(200, b'{"status":"error","errorType":"execution","error":"query timed out"}')

    def mode_badbytes(self):
        self.wfile.write(b"\x00\x01\xfe garbage without a status line\r\n\r\n")
        self.close_connection = True

    def mode_slow(self):
        self.server.release.wait(60)
        self.close_connection = True

    def mode_huge(self):
        # No Content-Length: the body ends when the connection does, past 64 MiB.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b" " * (1 << 20)
        try:
            self.wfile.write(b'{"status":"success","data":{"resultType":"matrix","result":[')
            for _ in range(70):
                self.wfile.write(chunk)
        except OSError:
            pass
        self.close_connection = True

    def mode_huge_length(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(70 * 1000 * 1000))
        self.end_headers()
        self.close_connection = True


# ---- the tests ----

def probe_config(url, queries=None, extra="", name="prom", timeout="2s"):
    queries = queries or {"gauge": "demo_gauge", "by_job": "sum by (job) (demo_gauge)",
                          "special": "demo_special"}
    q = "".join("        %s: %s\n" % (k, json.dumps(v)) for k, v in queries.items())
    return ("sources:\n"
            "  - name: %s\n"
            "    prometheus:\n"
            "      url: %s\n"
            "      queries:\n%s"
            "      step: 10s\n"
            "      delay: %ds\n"
            "      timeout: %s\n%s") % (name, url, q, DELAY, timeout, extra)


def setUpModule():
    global TMP, T0, NOW_MS, WM0_MS, UNTIL_MS, BLOCKS, PROM, PROM_PORT
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            print("skipped: %s is not installed" % tool)
            sys.exit(77)
    if not os.access(PROBE, os.X_OK):
        raise AssertionError("build prom-probe first: " + PROBE)
    TMP = tempfile.mkdtemp(prefix="anomalyd-prom-")
    # Two hours back: inside the retention, before anything the head block would hold.
    T0 = (int(time.time()) - 2 * 3600) // 600 * 600
    NOW_MS = (T0 + 28 * 60) * 1000
    UNTIL_MS = NOW_MS - DELAY * 1000
    WM0_MS = UNTIL_MS - BACKFILL * 1000
    om = os.path.join(TMP, "data.om")
    write_openmetrics(om, T0)
    BLOCKS = os.path.join(TMP, "blocks")
    r = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, BLOCKS],
                       capture_output=True, text=True, timeout=120, env=ENV)
    if r.returncode != 0:
        raise AssertionError("promtool failed: " + r.stdout + r.stderr)
    PROM, PROM_PORT = start_prometheus(BLOCKS)


def tearDownModule():
    kill_all()
    if TMP and not os.environ.get("AD_KEEP_TMP"):
        shutil.rmtree(TMP, ignore_errors=True)


class Base(unittest.TestCase):
    def run_probe(self, url, **kw):
        extra = kw.pop("config_extra", "")
        queries = kw.pop("queries", None)
        timeout = kw.pop("request_timeout", "2s")
        kw.setdefault("now_ms", NOW_MS)
        kw.setdefault("until_ms", UNTIL_MS)
        return Probe(probe_config(url, queries, extra, timeout=timeout), **kw)

    def assert_clean_data(self, p, queries=("gauge", "by_job", "special"), step_ms=STEP * 1000,
                          wm0=None):
        """Exactly the samples PromQL gives for (wm0, final watermark] of each query."""
        self.assertEqual(p.rc, 0, p.stderr)
        wm0 = WM0_MS if wm0 is None else wm0
        want = {}
        for q in queries:
            end = p.final["watermarks"][q]
            self.assertGreaterEqual(end, UNTIL_MS)
            want.update(expected(q, T0, wm0, end, step_ms))
        self.assertEqual(len(p.samples), len(want))
        for key, v in want.items():
            self.assertIn(key, p.samples)
            self.assertEqual(p.samples[key], v, key)
        self.assertEqual(set(p.samples), set(want))


class CleanRun(Base):
    def test_values_and_times_exactly(self):
        p = self.run_probe("http://127.0.0.1:%d" % PROM_PORT)
        self.assert_clean_data(p)
        self.assertEqual(p.errors(), {})
        self.assertEqual(p.metric_sum("anomalyd_prometheus_requests_total", result="failure"), 0)
        self.assertEqual(p.metric_sum("anomalyd_prometheus_samples_total"), len(p.samples))
        for q in ("gauge", "by_job", "special"):
            st = p.final["status"]["queries"][q]
            self.assertEqual(st["consecutive_failures"], 0)
            self.assertIsNone(st["last_error"])
            self.assertFalse(st["in_flight"])
            self.assertRegex(st["watermark"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

        def at(query, instance, i):
            labels = {"gauge": (("__name__", "demo_gauge"), ("instance", instance),
                                ("job", "demo")),
                      "special": (("__name__", "demo_special"), ("instance", instance))}[query]
            return p.samples.get((query, labels, (T0 + i * STEP) * 1000))

        # Spot checks, independent of the model above.
        self.assertEqual(at("gauge", "a", 100), 25.0)
        self.assertEqual(at("gauge", "b", NAN_INDEX), "NaN")
        self.assertEqual(p.samples[("by_job", (("job", "demo"),), (T0 + NAN_INDEX * STEP) * 1000)],
                         "NaN")
        self.assertEqual(at("special", "a", 100), "+Inf")
        self.assertEqual(at("special", "a", 101), "-Inf")
        self.assertEqual(at("special", "a", 103), "NaN")
        self.assertEqual(at("special", "a", 102), 102.0)
        # The gap: lookback repeats the last sample for five minutes (its left end
        # included), then the series is absent until its samples resume.
        self.assertEqual(at("gauge", "c", GAP[0]), -GAP[0] * 0.5)
        for i in range(GAP[0] + 1, GAP[0] + LOOKBACK // STEP + 1):
            self.assertEqual(at("gauge", "c", i), -GAP[0] * 0.5, i)
        for i in range(GAP[0] + LOOKBACK // STEP + 1, GAP[1]):
            self.assertIsNone(at("gauge", "c", i), i)
        self.assertEqual(at("gauge", "c", GAP[1]), -GAP[1] * 0.5)

    def test_chunks_of_at_most_10000_points(self):
        # A 1 s step over 3 h is 10,800 points: two requests, (wm0, wm0 + 10000 s] and the
        # rest, with nothing skipped or repeated between them.
        srv = FaultyServer(PROM_PORT)
        self.addCleanup(srv.close)
        backfill = 3 * 3600
        p = self.run_probe(srv.url, queries={"gauge": "demo_gauge"}, step="1s",
                           backfill=backfill)
        wm0 = UNTIL_MS - backfill * 1000
        self.assert_clean_data(p, queries=("gauge",), step_ms=1000, wm0=wm0)
        ranges = []
        for path, _ in srv.requests:
            params = dict(kv.split("=", 1) for kv in path.split("?", 1)[1].split("&"))
            self.assertEqual(params["step"], "1")
            ranges.append((int(params["start"]), int(params["end"])))
        self.assertEqual(ranges[0], (wm0 // 1000 + 1, wm0 // 1000 + 10000))
        self.assertEqual(ranges[1][0], wm0 // 1000 + 10001)
        self.assertEqual(ranges[1][1], p.final["watermarks"]["gauge"] // 1000)
        for r in ranges:
            self.assertLessEqual(r[1] - r[0] + 1, 10000)


class Faults(Base):
    """Each fault is counted under its reason, retried, and the run ends with exactly the data
    of a clean run."""

    def through(self, mode, reason, bad=2, request_timeout="2s"):
        srv = FaultyServer(PROM_PORT, mode, bad)
        self.addCleanup(srv.close)
        p = self.run_probe(srv.url, request_timeout=request_timeout)
        self.assert_clean_data(p)
        self.assertEqual(p.errors(), {reason: bad}, p.stderr)
        self.assertEqual(p.metric_sum("anomalyd_prometheus_requests_total", result="failure"),
                         bad)
        failed = [r for r in p.records() if r.get("msg") == "range query failed"]
        self.assertTrue(failed, p.stderr)
        self.assertTrue(all(r["reason"] == reason for r in failed))
        return p, failed

    def test_garbage(self):
        _, failed = self.through("garbage", "malformed")
        self.assertIn("invalid JSON", failed[0]["error"])

    def test_truncated_json(self):
        _, failed = self.through("truncated", "malformed")
        self.assertIn("invalid JSON", failed[0]["error"])

    def test_body_shorter_than_its_length(self):
        self.through("short", "malformed")

    def test_connection_reset_mid_body(self):
        _, failed = self.through("reset", "connect")
        self.assertIn("reset", failed[0]["error"])

    def test_vector_result(self):
        p, failed = self.through("vector", "wrong_result_type")
        self.assertEqual(failed[0]["error"], 'resultType is "vector", expected "matrix"')

    def test_http_500_with_json_error(self):
        p, failed = self.through("error500", "http_status")
        self.assertEqual(failed[0]["error"], "HTTP status 500: internal: something broke")
        errs = [st["last_error"] for st in p.final["status"]["queries"].values()
                if st["last_error"]]
        self.assertTrue(errs)
        self.assertTrue(all(e == "HTTP status 500: internal: something broke" for e in errs))

    def test_error_status(self):
        _, failed = self.through("error200", "error_status")
        self.assertEqual(failed[0]["error"], "execution: query timed out")

    def test_bytes_without_a_status_line(self):
        self.through("badbytes", "malformed")

    def test_server_that_never_answers(self):
        start = time.monotonic()
        self.through("slow", "timeout", request_timeout="1s")
        self.assertGreaterEqual(time.monotonic() - start, 1.0)

    def test_body_over_64_mib(self):
        self.through("huge", "too_large", bad=1)

    def test_length_over_64_mib(self):
        self.through("huge_length", "too_large", bad=1)

    def test_prometheus_down_at_start(self):
        port = free_port()
        p = self.run_probe("http://127.0.0.1:%d" % port, wait=False)
        # The first failure is logged at once; only then does Prometheus start.
        wait_for("a connection failure",
                 lambda: any(r.get("msg") == "range query failed" and r["reason"] == "connect"
                             for r in p.records()))
        prom, _ = start_prometheus(BLOCKS, port=port)
        self.addCleanup(stop, prom)
        p.wait()
        self.assert_clean_data(p)
        errors = p.errors()
        # Prometheus listens before its TSDB is open and answers 503 until then, so a retry
        # may land in that window too.
        self.assertLessEqual(set(errors), {"connect", "http_status"})
        self.assertGreaterEqual(errors["connect"], 3)
        for r in p.records():
            if r.get("msg") == "range query failed" and r["reason"] == "http_status":
                self.assertRegex(r["error"], r"^HTTP status 503")
        for st in p.final["status"]["queries"].values():
            self.assertEqual(st["consecutive_failures"], 0)
            self.assertRegex(st["last_error"],
                             r"Couldn't connect to server|^HTTP status 503: Service Unavailable$")

    def test_warnings_are_counted_and_the_data_used(self):
        srv = FaultyServer(PROM_PORT, "warning", 2)
        self.addCleanup(srv.close)
        p = self.run_probe(srv.url)
        self.assert_clean_data(p)
        self.assertEqual(p.errors(), {})
        self.assertEqual(p.metric_sum("anomalyd_prometheus_warnings_total"), 2)
        warned = [r for r in p.records() if r.get("msg") == "range query warning"]
        self.assertTrue(warned)
        self.assertEqual(warned[0]["warning"], "injected warning")

    def test_prometheus_error_for_a_bad_query(self):
        # A real Prometheus answers a PromQL syntax error with 400 and its JSON error body.
        p = self.run_probe("http://127.0.0.1:%d" % PROM_PORT, queries={"bad": "demo_gauge["},
                           timeout=1)
        self.assertEqual(p.rc, 1)
        self.assertEqual(set(p.errors()), {"http_status"})
        # 2.42 says "1:12: parse error: missing unit character in duration".
        self.assertRegex(p.final["status"]["queries"]["bad"]["last_error"],
                         r"^HTTP status 400: bad_data: .*parse error")

    def test_gives_up_at_timeout_with_a_transfer_in_flight(self):
        # The server never answers within the probe's lifetime: destroying the source aborts
        # the transfer (ASan builds check that nothing leaks).
        srv = FaultyServer(PROM_PORT, "slow", 1000)
        self.addCleanup(srv.close)
        p = self.run_probe(srv.url, request_timeout="10s", timeout=1)
        self.assertEqual(p.rc, 1, p.stderr)
        self.assertEqual(p.samples, {})
        self.assertTrue(all(st["in_flight"] for st in p.final["status"]["queries"].values()))
        self.assertEqual(p.final["watermarks"], {q: WM0_MS for q in ("gauge", "by_job",
                                                                         "special")})


class Auth(Base):
    def test_bearer_token_and_headers(self):
        srv = FaultyServer(PROM_PORT)
        self.addCleanup(srv.close)
        token = os.path.join(TMP, "token")
        with open(token, "w") as f:
            f.write("tok-SECRET-123\n")
        extra = ("      bearer_token: {file: %s}\n"
                 "      headers:\n"
                 "        X-Scope-OrgID: tenant-7\n"
                 "        X-Api-Key: {env: PROBE_API_KEY}\n") % token
        p = self.run_probe(srv.url, config_extra=extra, env={"PROBE_API_KEY": "key-SECRET-456"},
                           extra=("--log-level", "debug"))
        self.assert_clean_data(p)
        with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
            version = re.search(r"project\(anomalyd VERSION (\S+)", f.read()).group(1)
        self.assertEqual(len(srv.requests), 3)
        for path, headers in srv.requests:
            self.assertEqual(headers["authorization"], "Bearer tok-SECRET-123")
            self.assertEqual(headers["x-scope-orgid"], "tenant-7")
            self.assertEqual(headers["x-api-key"], "key-SECRET-456")
            self.assertEqual(headers["user-agent"], "anomalyd/" + version)
            self.assertEqual(headers["accept"], "application/json")
            self.assertTrue(path.startswith("/api/v1/query_range?query="), path)
            params = dict(kv.split("=", 1) for kv in path.split("?", 1)[1].split("&"))
            self.assertEqual(params["start"], str(WM0_MS // 1000 + STEP))
            self.assertEqual(params["end"], str(UNTIL_MS // 1000))
            self.assertEqual(params["step"], "10")
        queries = sorted(urllib.request.unquote(p.split("query=", 1)[1].split("&")[0])
                         for p, _ in srv.requests)
        self.assertEqual(queries, ["demo_gauge", "demo_special", "sum by (job) (demo_gauge)"])
        # Secrets never reach the log, not even at debug level.
        self.assertTrue(p.stderr)
        self.assertNotIn("SECRET", p.stderr)
        self.assertNotIn("SECRET", json.dumps(p.final))

    def basic_auth_prometheus(self):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt
                hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
        except (ImportError, ValueError, OSError):
            hashed = None
        if not hashed or not hashed.startswith("$2"):
            hashed = PASSWORD_BCRYPT
        web = os.path.join(TMP, "web-basic.yml")
        with open(web, "w") as f:
            f.write("basic_auth_users:\n  probe: '%s'\n" % hashed)
        auth = "Basic " + base64.b64encode(("probe:" + PASSWORD).encode()).decode()
        prom, port = start_prometheus(BLOCKS, web_config=web, auth=auth)
        self.addCleanup(stop, prom)
        return port

    def test_basic_auth(self):
        port = self.basic_auth_prometheus()
        extra = "      basic_auth:\n        username: probe\n        password: {env: PROBE_PW}\n"
        p = self.run_probe("http://127.0.0.1:%d" % port, config_extra=extra,
                           env={"PROBE_PW": PASSWORD}, extra=("--log-level", "debug"))
        self.assert_clean_data(p)
        self.assertNotIn(PASSWORD, p.stderr)

        p = self.run_probe("http://127.0.0.1:%d" % port, config_extra=extra,
                           env={"PROBE_PW": "wrong-" + PASSWORD}, timeout=1.5)
        self.assertEqual(p.rc, 1)
        self.assertEqual(p.samples, {})
        self.assertEqual(set(p.errors()), {"http_status"})
        self.assertGreaterEqual(p.errors()["http_status"], 3)
        for st in p.final["status"]["queries"].values():
            self.assertRegex(st["last_error"], r"^HTTP status 401")
            self.assertGreaterEqual(st["consecutive_failures"], 1)
        self.assertNotIn(PASSWORD, p.stderr)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, env=ENV)


@unittest.skipUnless(shutil.which("openssl"), "openssl is not installed")
class TLS(Base):
    @classmethod
    def setUpClass(cls):
        d = cls.dir = tempfile.mkdtemp(prefix="tls-", dir=TMP)

        def path(name):
            return os.path.join(d, name)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=anomalyd test CA", "-keyout", path("ca.key"), "-out", path("ca.crt"))
        for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                          ("client", "extendedKeyUsage=clientAuth")):
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name,
                    "-keyout", path(name + ".key"), "-out", path(name + ".csr"))
            with open(path(name + ".ext"), "w") as f:
                f.write(ext + "\n")
            openssl("x509", "-req", "-in", path(name + ".csr"), "-CA", path("ca.crt"),
                    "-CAkey", path("ca.key"), "-CAcreateserial", "-days", "2",
                    "-extfile", path(name + ".ext"), "-out", path(name + ".crt"))
        web = path("web.yml")
        with open(web, "w") as f:
            f.write("tls_server_config:\n"
                    "  cert_file: %s\n  key_file: %s\n"
                    "  client_auth_type: RequireAndVerifyClientCert\n"
                    "  client_ca_file: %s\n" % (path("server.crt"), path("server.key"),
                                                path("ca.crt")))
        ctx = ssl.create_default_context(cafile=path("ca.crt"))
        ctx.load_cert_chain(path("client.crt"), path("client.key"))
        cls.prom, cls.port = start_prometheus(BLOCKS, web_config=web, scheme="https",
                                              ssl_context=ctx)

    @classmethod
    def tearDownClass(cls):
        stop(cls.prom)

    def path(self, name):
        return os.path.join(self.dir, name)

    def tls(self, ca=True, client=True, insecure=False):
        lines = []
        if ca:
            lines.append("        ca_file: %s\n" % self.path("ca.crt"))
        if client:
            lines.append("        cert_file: %s\n        key_file: %s\n"
                         % (self.path("client.crt"), self.path("client.key")))
        if insecure:
            lines.append("        insecure_skip_verify: true\n")
        return "      tls:\n" + "".join(lines)

    def test_with_the_ca(self):
        p = self.run_probe("https://127.0.0.1:%d" % self.port, config_extra=self.tls())
        self.assert_clean_data(p)

    def test_insecure_skip_verify(self):
        p = self.run_probe("https://127.0.0.1:%d" % self.port,
                           config_extra=self.tls(ca=False, insecure=True))
        self.assert_clean_data(p)

    def test_without_the_ca_fails(self):
        p = self.run_probe("https://127.0.0.1:%d" % self.port,
                           config_extra=self.tls(ca=False), timeout=1.5)
        self.assertEqual(p.rc, 1)
        self.assertEqual(p.samples, {})
        self.assertEqual(set(p.errors()), {"connect"})
        for st in p.final["status"]["queries"].values():
            self.assertIn("certificate", st["last_error"])

    def test_without_a_client_certificate_fails(self):
        p = self.run_probe("https://127.0.0.1:%d" % self.port,
                           config_extra=self.tls(client=False), timeout=1.5)
        self.assertEqual(p.rc, 1)
        self.assertEqual(p.samples, {})
        self.assertEqual(set(p.errors()), {"connect"}, p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
